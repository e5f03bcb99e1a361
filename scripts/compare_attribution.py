#!/usr/bin/env python3
"""Attribution patching (AtP) on Gemma 3 270M written by hand with torch hooks on transformers, against vene's.

Run: scripts/realref-env.sh && vene attribute --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf \
         --prompts examples/path_patching/ioi.jsonl --top-k 0 --random-k 0 --out /tmp/atp &&
     PYTHONPATH=.deps/realref /usr/bin/time -v .deps/pyref/bin/python scripts/compare_attribution.py [--threads 2]

What it computes, as vene does: the corrupted prompts run once with every site recorded; the clean prompts run once
with every site kept in the graph (`retain_grad`), the metric (the mean over prompts of logit[target] −
logit[distractor] at each prompt's last real token) is back-propagated once, and each node's estimate is
(a_corrupted − a_clean) · ∂metric/∂a summed over the hidden width and over the prompts. Sites: each layer's output
(vene's block_output), self_attn's output (attention_output, before the post-attention norm), the MLP's output
(mlp_output, before the post-feed-forward norm), and o_proj's input split into heads (head_attention_value_output).
The estimates are compared with vene's attribution_scores.safetensors; the wall times are printed.
"""
import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402
from compare_path_patching import MODEL, REPO, load_gemma, prompt_pairs  # noqa: E402


class Sites:
    """Forward hooks on every site: in "record" mode they keep a detached copy, in "grad" mode the live tensor."""

    def __init__(self, model):
        self.mode, self.kept = None, {}
        for index, layer in enumerate(model.model.layers):
            layer.register_forward_hook(self.output_hook(("block_output", index)))
            layer.self_attn.register_forward_hook(self.output_hook(("attention_output", index)))
            layer.mlp.register_forward_hook(self.output_hook(("mlp_output", index)))
            layer.self_attn.o_proj.register_forward_pre_hook(self.input_hook(("head_attention_value_output", index)))

    def keep(self, key, tensor):
        if self.mode == "record":
            self.kept[key] = tensor.detach().clone()
        elif self.mode == "grad":
            tensor.retain_grad()
            self.kept[key] = tensor

    def output_hook(self, key):
        def hook(_module, _args, output):
            self.keep(key, output[0] if isinstance(output, tuple) else output)
        return hook

    def input_hook(self, key):
        def hook(_module, args):
            self.keep(key, args[0])
        return hook


def metric(model, batch, last, target, distractor):
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = model.lm_head(hidden[torch.arange(len(last)), last])
    rows = torch.arange(len(last))
    return (logits[rows, target] - logits[rows, distractor]).double().mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", default=str(REPO / "examples/path_patching/ioi.jsonl"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vene-scores", default="/tmp/atp/attribution_scores.safetensors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tokenizer, model = load_gemma()
    loaded = time.perf_counter()
    prompts, clean, corrupted, last, target, distractor = prompt_pairs(tokenizer, args.prompts)
    heads = model.config.num_attention_heads
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    sites = Sites(model)
    begin = time.perf_counter()
    sites.mode = "record"
    with torch.no_grad():
        metric(model, corrupted, last, target, distractor)
    corrupted_sites, sites.kept = sites.kept, {}
    sites.mode = "grad"
    # The embeddings need a gradient for the sites after them to keep theirs.
    embed = model.model.embed_tokens.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True))
    metric(model, clean, last, target, distractor).backward()
    embed.remove()
    scores = {}
    for (component, layer), live in sites.kept.items():
        product = (corrupted_sites[(component, layer)] - live.detach()) * live.grad
        if component == "head_attention_value_output":
            b, s, width = product.shape
            per_node = product.view(b, s, heads, width // heads).sum(-1).sum(0).T  # (heads, seq)
        else:
            per_node = product.sum(-1).sum(0)  # (seq,)
        scores.setdefault(component, {})[layer] = per_node.double()
    end = time.perf_counter()

    vene = load_file(args.vene_scores)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{len(prompts)} prompts, {clean['input_ids'].shape[1]} tokens padded; {MODEL.name}")
    for component, layers in scores.items():
        mine = torch.stack([layers[layer] for layer in sorted(layers)])
        theirs = vene[component].double()
        difference = (mine - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        print(f"{component:28s} {tuple(mine.shape)}  max |python - vene| {difference:.2e} (largest |estimate| "
              f"{scale:.3f})")
    print(f"\nwall: load {loaded - start:.1f} s, attribution (2 passes + backward) {end - begin:.2f} s, "
          f"total {end - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
