#!/usr/bin/env python3
"""vene against pyvene 0.1.8 + transformers on the real model, Gemma 3 270M, in one run: loading, and the engine
bench's workloads at batch 8 x 32 tokens, f32, CPU.

Run: scripts/pyref-env.sh && cargo build --workspace --release && .deps/pyref/bin/python scripts/compare_gemma3.py
     (--repeats N pyvene samples per workload; the model comes from scripts/real-model.sh or VENE_GEMMA3_270M)

Both sides run the same dequantized weights: transformers 4.57.1 loads the GGUF itself (gguf-py's dequantization,
f32, eager attention) and vene loads it through its Llama-family adapter (candle's block decoders). pyvene 0.1.8
has no Gemma 3 card, so its Gemma 2 module mapping (the same module names) is registered for Gemma3ForCausalLM.
vene's side is `VENE_BENCH_SHAPE=gemma3-270m cargo bench --bench engine` (criterion medians); its load's wall time
and peak RSS come from running `vene sites` on the file (load + catalog, no tokenizer) under getrusage.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import pyvene as pv  # noqa: E402
import pyvene.models.intervenable_modelcard as cards  # noqa: E402
import transformers  # noqa: E402
from compare_pyvene import das_training_step, intervenable, median_seconds, steered_generation  # noqa: E402
from pyvene.models.gemma2.modelings_intervenable_gemma2 import (  # noqa: E402
    gemma2_lm_type_to_dimension_mapping,
    gemma2_lm_type_to_module_mapping,
)

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
MODEL = Path(os.environ.get("VENE_GEMMA3_270M", CACHE / "vene" / "models" / "gemma-3-270m-q4_k_m.gguf"))
BATCH, TOKENS, VOCAB, LAYERS, WIDTH = 8, 32, 262144, 18, 640

cards.type_to_module_mapping[transformers.Gemma3ForCausalLM] = gemma2_lm_type_to_module_mapping
cards.type_to_dimension_mapping[transformers.Gemma3ForCausalLM] = gemma2_lm_type_to_dimension_mapping


def pyvene_times(model, repeats):
    generator = torch.Generator().manual_seed(1)
    base = {"input_ids": torch.randint(VOCAB, (BATCH, TOKENS), generator=generator)}
    source = {"input_ids": torch.randint(VOCAB, (BATCH, TOKENS), generator=generator)}
    every = [[list(range(TOKENS))] * BATCH]
    last = [[[TOKENS - 1]] * BATCH]
    middle = LAYERS // 2
    vanilla = intervenable(model, [pv.RepresentationConfig(layer=middle, component="block_output", unit="pos",
                                                           max_number_of_units=TOKENS,
                                                           intervention_type=pv.VanillaIntervention)])
    times = {}
    with torch.no_grad():
        times["adapter_forward"] = median_seconds(lambda: model(**base), repeats)
        times["vanilla_interchange_with_source_pass"] = median_seconds(
            lambda: vanilla(base, [source], unit_locations={"sources->base": (every, every)}), repeats)
        times["greedy_32_tokens_steered_every_layer"] = median_seconds(
            steered_generation(model, LAYERS, WIDTH, VOCAB), repeats)
    times["das_rank1_step"] = median_seconds(das_training_step(model, middle, VOCAB, base, source, last), repeats)
    return times


def vene_load():
    """Wall time and peak RSS of `vene sites` on the GGUF: a process that loads the model and prints its catalog."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([REPO / "target" / "release" / "vene", "sites", "--model", MODEL], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) * 1024


def vene_times(rerun):
    env = dict(os.environ, VENE_BENCH_SHAPE="gemma3-270m")
    if rerun:
        subprocess.run(["cargo", "bench", "--bench", "engine", "--", "--warm-up-time", "2", "--measurement-time", "10",
                        "forward/gemma3-270m/(adapter_forward|engine_no_intervention|vanilla_interchange_with_source_pass)"
                        "|training/gemma3-270m/|generation/gemma3-270m/|loading/"],
                       cwd=REPO, env=env, check=True)
    times = {}
    for group in ("forward_gemma3-270m", "training_gemma3-270m", "generation_gemma3-270m", "loading_gemma3-270m"):
        for bench in (REPO / "target" / "criterion" / group).iterdir():
            estimates = bench / "new" / "estimates.json"
            if estimates.exists():
                times[bench.name] = json.loads(estimates.read_text())["median"]["point_estimate"] / 1e9
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reuse-vene", action="store_true", help="read the last criterion results instead of rerunning")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"pyvene {pv.__version__ if hasattr(pv, '__version__') else '0.1.8'}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {MODEL}")
    f32_bytes = 4 * sum(int(np.prod(t.shape)) for t in gguf.GGUFReader(MODEL).tensors)
    load_seconds, load_rss = vene_load()
    vene = vene_times(rerun=not args.reuse_vene)
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL.parent, gguf_file=MODEL.name,
                                                              dtype=torch.float32, attn_implementation="eager").eval()
    transformers_load = time.perf_counter() - start
    pyvene = pyvene_times(model, args.repeats)
    print(f"\nloading the GGUF to f32: vene {vene.get('gguf_to_f32', float('nan')):.2f} s (criterion median; "
          f"`vene sites` process {load_seconds:.2f} s, peak RSS {load_rss / 2**30:.2f} GiB = "
          f"{load_rss / f32_bytes:.2f} x the {f32_bytes / 2**30:.2f} GiB of f32 weights), transformers {transformers_load:.1f} s")
    print(f"vene engine with no intervention vs the adapter's own forward: "
          f"{vene['engine_no_intervention'] / vene['adapter_forward'] - 1:+.1%}")
    print(f"\n{'workload (batch 8 x 32, f32)':44s} {'vene':>10s} {'pyvene':>10s} {'speed-up':>9s}")
    for name in ("adapter_forward", "vanilla_interchange_with_source_pass", "greedy_32_tokens_steered_every_layer",
                 "das_rank1_step"):
        mine, theirs = vene[name], pyvene[name]
        print(f"{name:44s} {mine * 1e3:8.1f}ms {theirs * 1e3:8.1f}ms {theirs / mine:8.2f}x")


if __name__ == "__main__":
    sys.exit(main())
