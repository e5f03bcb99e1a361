#!/usr/bin/env python3
"""vene called from Python against pyvene 0.1.8 and against vene's own CLI: one intervened forward at batch 8 on the
GPT-2-small shape and on the real Gemma 3 270M, and causal tracing from Python.

Run: scripts/pyref-env.sh && ./scripts/python.sh &&
     .deps/pyref/bin/python -m pip install --no-deps --force-reinstall target/wheels/vene-*.whl &&
     .deps/pyref/bin/python scripts/compare_python.py [--repeats 20] [--pyvene-trace]

pyvene and vene run in one process on one torch (2.13.0): vene's tensors are torch's. The workload is the engine
bench's "vanilla interchange with a source pass": every position of the middle layer's block output swapped from a
source batch, batch 8 (64 tokens on the GPT-2-small shape, 32 on Gemma), f32, no gradients. Each side's figure is
the median of --repeats calls after one warm-up; the three sides are timed in turn, --rounds times, and the medians
of the rounds are reported. The CLI's in-process forward is `vene run --repeat N` on the same config and inputs
(its `forward_ms_median`: the engine's run, no Python), so "Python overhead" is what the Python call adds to it.
Causal tracing: `vene.studies.trace` (10 samples, windows of 4 layers, the model loaded) against pyvene's tutorial
loop from scripts/compare_trace.py, which costs the same per sample and is timed for one sample with --pyvene-trace
(about 9 minutes on 2 cores); without it the earlier measurement in BENCHMARKS.md is used and said so.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyvene as pv  # noqa: E402
import transformers  # noqa: E402

import vene  # noqa: E402
from compare_gemma3 import MODEL, REPO  # noqa: E402  (importing it also registers Gemma 3 with pyvene)
from compare_pyvene import median_seconds  # noqa: E402

BATCH = 8
EARLIER_PYVENE_TRACE_SECONDS_PER_SAMPLE = 547.1  # BENCHMARKS.md, scripts/compare_trace.py on this machine type


def gpt2_small(directory):
    """A GPT-2-small-shaped model with seeded random weights in Hugging Face layout (both sides load these files)."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def workload(vocab, tokens, layers):
    generator = torch.Generator().manual_seed(1)
    base = torch.randint(vocab, (BATCH, tokens), generator=generator)
    source = torch.randint(vocab, (BATCH, tokens), generator=generator)
    every = [[list(range(tokens))] * BATCH]
    return base, source, every, layers // 2


def cli_forward_seconds(model_path, config, base, source, every, repeats):
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "config.json").write_text(json.dumps(config))
        inputs = {"base": {"input_ids": base.tolist()}, "sources": [{"input_ids": source.tolist()}],
                  "unit_locations": {"sources->base": [every, every]}}
        (scratch / "inputs.json").write_text(json.dumps(inputs))
        done = subprocess.run([str(REPO / "target/release/vene"), "run", "--model", str(model_path), "--config",
                               str(scratch / "config.json"), "--inputs", str(scratch / "inputs.json"), "--out",
                               str(scratch / "out.safetensors"), "--repeat", str(repeats)],
                              check=True, capture_output=True, text=True)
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    return timing["forward_ms_median"] / 1e3


def compare_forward(name, model_path, hf_model, vocab, tokens, layers, repeats, rounds):
    base, source, every, middle = workload(vocab, tokens, layers)
    config = {"representations": [{"layer": middle, "component": "block_output", "max_number_of_units": tokens,
                                   "intervention": {"type": "vanilla"}}]}
    model = vene.load(model_path)
    ours = vene.IntervenableModel(config, model)
    theirs = pv.IntervenableModel(pv.IntervenableConfig(representations=[pv.RepresentationConfig(
        layer=middle, component="block_output", unit="pos", max_number_of_units=tokens,
        intervention_type=pv.VanillaIntervention)]), hf_model)
    with torch.no_grad():
        _, a = ours({"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": (every, every)})
        _, b = theirs({"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": (every, every)})
    agreement = (a.logits - b.logits).abs().max().item()
    results = {"vene (Python)": [], "vene (CLI, in-process)": [], "pyvene": []}
    for _ in range(rounds):
        with torch.no_grad():
            results["vene (Python)"].append(median_seconds(lambda: ours(
                {"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": (every, every)}),
                repeats))
            results["pyvene"].append(median_seconds(lambda: theirs(
                {"input_ids": base}, [{"input_ids": source}], unit_locations={"sources->base": (every, every)}),
                repeats))
        results["vene (CLI, in-process)"].append(cli_forward_seconds(model_path, config, base, source, every, repeats))
    medians = {side: statistics.median(times) for side, times in results.items()}
    python, cli, pyvene = medians["vene (Python)"], medians["vene (CLI, in-process)"], medians["pyvene"]
    print(f"\n{name}: vanilla interchange with a source pass, batch {BATCH} x {tokens} tokens, layer {middle} "
          f"(max |vene - pyvene| logits {agreement:.1e})")
    for side, seconds in medians.items():
        print(f"  {side:<24} {seconds * 1e3:9.3f} ms   rounds: {', '.join(f'{t * 1e3:.3f}' for t in results[side])}")
    print(f"  speed-up over pyvene from Python: {pyvene / python:.2f}x; Python call over the CLI's forward: "
          f"{python / cli - 1:+.1%}")


def compare_trace(model_path, pyvene_trace):
    import compare_trace as tracing

    model = vene.load(model_path)
    start = time.perf_counter()
    found = vene.studies.trace(model, tracing.PROMPT, tracing.SUBJECT, tracing.TARGET, samples=10,
                               window=tracing.WINDOW)
    seconds = time.perf_counter() - start
    print(f"\ncausal tracing of {tracing.PROMPT!r} from Python (10 samples, windows of {tracing.WINDOW}): "
          f"{seconds:.1f} s; clean p {found['clean']:.4f}, corrupted {found['corrupted']:.4f}")
    if pyvene_trace:
        import math

        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            MODEL.parent, gguf_file=MODEL.name, dtype=torch.float32, attn_implementation="eager").eval()
        subject = list(range(found["subject"][0], found["subject"][1]))
        embeddings = hf_model.get_input_embeddings().weight * math.sqrt(hf_model.config.hidden_size)
        level = tracing.NOISE * embeddings.std().item()
        one, cells = tracing.pyvene_trace(hf_model, found["tokens"], subject, found["target"], 1, level)
        print(f"pyvene's tutorial loop: {cells} forwards for one sample in {one:.1f} s (measured now)")
    else:
        one = EARLIER_PYVENE_TRACE_SECONDS_PER_SAMPLE
        print(f"pyvene's tutorial loop: {one:.1f} s per sample (the earlier measurement in BENCHMARKS.md; "
              f"--pyvene-trace measures it again)")
    print(f"  speed-up: {one * 10 / seconds:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pyvene-trace", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"vene {vene.__version__}, pyvene 0.1.8, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    fixture = REPO / "tests" / "fixtures" / "gpt2" / "model"
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(fixture).eval()
    compare_forward("the fixture GPT-2 (3 layers, 32 wide): what a call costs besides the model", fixture, hf_model,
                    101, 8, 3, args.repeats * 20, args.rounds)
    with tempfile.TemporaryDirectory() as scratch:
        directory = gpt2_small(Path(scratch) / "gpt2-small")
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
        compare_forward("GPT-2-small shape (seeded random weights)", directory, hf_model, 50257, 64, 12,
                        args.repeats, args.rounds)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        MODEL.parent, gguf_file=MODEL.name, dtype=torch.float32, attn_implementation="eager").eval()
    compare_forward("Gemma 3 270M (the real GGUF, f32)", MODEL, hf_model, 262144, 32, 18, args.repeats, args.rounds)
    del hf_model
    compare_trace(MODEL, args.pyvene_trace)


if __name__ == "__main__":
    sys.exit(main())
