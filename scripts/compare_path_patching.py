#!/usr/bin/env python3
"""Path patching to the logits on Gemma 3 270M, written by hand with torch hooks on transformers, against vene's.

Run: scripts/realref-env.sh && vene path-patch --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf \
         --prompts examples/path_patching/ioi.jsonl --out /tmp/pp-logits &&
     PYTHONPATH=.deps/realref .deps/pyref/bin/python scripts/compare_path_patching.py [--senders 0.0,9.3] [--threads 2]

What it measures: for each sender head (layer l, head h), the clean prompts run with (a) the head's attention output
z (its 256-wide slice of o_proj's input) taken from the corrupted run at every position, and (b) every later layer's
whole o_proj input frozen at its clean value; the MLPs are not frozen. The metric is the mean over prompts of
logit[target] - logit[distractor] at each prompt's last real token (right padding, an attention mask, the
tokenizer's BOS); effect = (patched - clean) / (clean - corrupted). The clean and corrupted o_proj inputs are cached
once, then each sender costs one forward of the clean batch (logits only at the last real tokens, as vene reads them).
The effects are printed beside those in vene's path_patching.json, with the largest difference and the wall times.

Both sides read the same GGUF: transformers 5 dequantizes it itself (f32, eager attention) and builds its tokenizer;
compare_gemma3.py documents how close vene's forward is to transformers' on this file.
"""
import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
MODEL = Path(os.environ.get("VENE_GEMMA3_270M", CACHE / "vene" / "models" / "gemma-3-270m-q4_k_m.gguf"))


class PathPatcher:
    """Pre-hooks on every layer's o_proj: record its input (z), or replace one head's slice / the whole of it."""

    def __init__(self, model):
        self.model, self.mode, self.record = model, None, {}
        self.head_dim = model.config.head_dim
        self.layers = model.model.layers
        for index, layer in enumerate(self.layers):
            layer.self_attn.o_proj.register_forward_pre_hook(self.hook(index))

    def hook(self, index):
        def pre_hook(_module, args):
            z = args[0]
            if self.mode == "record":
                self.record[index] = z.detach().clone()
            elif isinstance(self.mode, tuple):
                (layer, head), corrupted, clean = self.mode
                if index == layer:
                    z = z.clone()
                    span = slice(head * self.head_dim, (head + 1) * self.head_dim)
                    z[..., span] = corrupted[layer][..., span]
                    return (z,)
                if index > layer:
                    return (clean[index],)
            return None
        return pre_hook

    def logit_difference(self, batch, last, target, distractor):
        """The mean over prompts of logit[target] - logit[distractor] at each prompt's last real token."""
        hidden = self.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = self.model.lm_head(hidden[torch.arange(len(last)), last])
        cap = self.model.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        rows = torch.arange(len(last))
        return (logits[rows, target] - logits[rows, distractor]).double().mean().item()

    def run(self, mode, *args):
        self.mode = mode
        try:
            return self.logit_difference(*args)
        finally:
            self.mode = None


def single_token(tokenizer, word):
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is {len(ids)} tokens"
    return ids[0]


def load_gemma():
    """transformers' tokenizer (right padding) and model (f32, eager attention) for the GGUF vene reads."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL.parent, gguf_file=MODEL.name, padding_side="right")
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL.parent, gguf_file=MODEL.name,
                                                              dtype=torch.float32, attn_implementation="eager").eval()
    return tokenizer, model


def prompt_pairs(tokenizer, path):
    """The prompt pairs of the JSON-lines file `path`, tokenized as batches, each prompt's last real position, and the
    target and distractor token of each."""
    prompts = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    clean = tokenizer([p["clean"] for p in prompts], padding=True, return_tensors="pt")
    corrupted = tokenizer([p["corrupted"] for p in prompts], padding=True, return_tensors="pt")
    last = clean["attention_mask"].sum(-1) - 1
    assert torch.equal(last, corrupted["attention_mask"].sum(-1) - 1), "a pair's prompts differ in length"
    assert clean["input_ids"][0, 0].item() == tokenizer.bos_token_id, "no BOS"
    target = torch.tensor([single_token(tokenizer, p["target"]) for p in prompts])
    distractor = torch.tensor([single_token(tokenizer, p["distractor"]) for p in prompts])
    return prompts, clean, corrupted, last, target, distractor


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", default=str(REPO / "examples/path_patching/ioi.jsonl"))
    parser.add_argument("--senders", default="all", help="'all' or LAYER.HEAD,... (e.g. 9.3,10.0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vene-json", default="/tmp/pp-logits/path_patching.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tokenizer, model = load_gemma()
    loaded = time.perf_counter()
    config = model.config
    prompts, clean, corrupted, last, target, distractor = prompt_pairs(tokenizer, args.prompts)
    if args.senders == "all":
        senders = [(layer, head) for layer in range(config.num_hidden_layers) for head in range(config.num_attention_heads)]
    else:
        senders = [tuple(int(x) for x in s.split(".")) for s in args.senders.split(",")]

    patcher = PathPatcher(model)
    with torch.no_grad():
        base_start = time.perf_counter()
        clean_diff = patcher.run("record", clean, last, target, distractor)
        clean_z, patcher.record = patcher.record, {}
        corrupted_diff = patcher.run("record", corrupted, last, target, distractor)
        corrupted_z, patcher.record = patcher.record, {}
        sweep_start = time.perf_counter()
        effects = {}
        for sender in senders:
            patched = patcher.run((sender, corrupted_z, clean_z), clean, last, target, distractor)
            effects[sender] = (patched - clean_diff) / (clean_diff - corrupted_diff)
        end = time.perf_counter()

    vene = json.loads(Path(args.vene_json).read_text())
    theirs = {(s["layer"], s["head"]): s["to_logits"] for s in vene["senders"]}
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{len(prompts)} prompts, {clean['input_ids'].shape[1]} tokens padded; {MODEL.name}")
    print(f"baseline logit diff   clean {clean_diff:.4f} (vene {vene['baseline']['clean']:.4f})   "
          f"corrupted {corrupted_diff:.4f} (vene {vene['baseline']['corrupted']:.4f})")
    print(f"\n{'sender':>7s} {'python':>9s} {'vene':>9s} {'diff':>9s}")
    for sender in senders:
        mine, other = effects[sender], theirs.get(sender, float("nan"))
        print(f"L{sender[0]:>2d}.H{sender[1]} {mine:9.4f} {other:9.4f} {mine - other:+9.4f}")
    shared = [s for s in senders if s in theirs]
    worst = max(shared, key=lambda s: abs(effects[s] - theirs[s]), default=None)
    if worst is not None:
        print(f"\nmax |effect difference| {abs(effects[worst] - theirs[worst]):.2e} at L{worst[0]}.H{worst[1]} "
              f"over {len(shared)} senders")
    for name, table in (("python", effects), ("vene", {s: theirs[s] for s in shared})):
        top = sorted(table, key=lambda s: -abs(table[s]))[:5]
        print(f"top 5 |effect| {name:6s}: " + ", ".join(f"L{l}.H{h} {table[(l, h)]:+.3f}" for l, h in top))
    print(f"\nwall: load {loaded - start:.1f} s, baselines + caches {sweep_start - base_start:.2f} s, "
          f"{len(senders)} senders {end - sweep_start:.1f} s ({(end - sweep_start) / len(senders) * 1e3:.0f} ms each); "
          f"total {end - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
