#!/usr/bin/env python3
"""`vene trace` against pyvene's causal-tracing tutorial loop on the real model, Gemma 3 270M: one fact, three
sweeps (block output; MLP output and attention output in windows of 4 layers), every layer x position.

Run: scripts/pyref-env.sh && scripts/realref-env.sh && cargo build --workspace --release &&
     PYTHONPATH=.deps/realref .deps/pyref/bin/python scripts/compare_trace.py [--samples 10 --pyvene-samples 1]

pyvene's side is its tutorial's loop: one IntervenableModel per sweep x layer (noise on the subject's embeddings,
vanilla restorations from the clean run at the layer or its window), and one forward per position and noise sample,
each with its source pass. It costs the same for every sample, so it is timed for --pyvene-samples and scaled to
--samples; vene runs all --samples. Both sides run transformers' / vene's reading of the same GGUF in f32 on the CPU.
"""
import argparse
import json
import math
import os
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
from compare_gemma3 import MODEL, REPO  # noqa: E402  (importing it also registers Gemma 3 with pyvene)

PROMPT, SUBJECT, TARGET = "The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"
WINDOW, NOISE = 4, 3.0


class Noise(pv.ConstantSourceIntervention, pv.LocalistRepresentationIntervention):
    """The tutorial's noise: a fixed Gaussian draw times the level, added to the subject's embeddings."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.noise = None
        self.level = 0.0

    def forward(self, base, source=None, subspaces=None):
        return base + self.noise.to(base.dtype) * self.level


def pyvene_trace(model, ids, subject, target, samples, level):
    layers = model.config.num_hidden_layers
    base = {"input_ids": torch.tensor([ids])}
    seq = len(ids)
    cells = 0
    start = time.perf_counter()
    for stream, windowed in (("block_output", False), ("mlp_output", True), ("attention_output", True)):
        for layer in range(layers):
            first, last = (max(0, layer - WINDOW // 2), min(layers, layer - (-WINDOW // 2))) if windowed else (layer, layer + 1)
            representations = [pv.RepresentationConfig(0, "block_input", "pos", len(subject), intervention_type=Noise)]
            representations += [pv.RepresentationConfig(i, stream, "pos", 1, intervention_type=pv.VanillaIntervention)
                                for i in range(first, last)]
            intervenable = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model)
            noise = next(iter(intervenable.interventions.values()))
            noise = noise[0] if isinstance(noise, tuple) else noise
            for sample in range(samples):
                generator = torch.Generator().manual_seed(sample)
                noise.noise = torch.randn(1, len(subject), model.config.hidden_size, generator=generator)
                noise.level = level
                for position in range(seq):
                    sources = [None] + [base] * (last - first)
                    locations = {"sources->base": ([None] + [[[position]]] * (last - first),
                                                   [[subject]] + [[[position]]] * (last - first))}
                    with torch.no_grad():
                        _, output = intervenable(base, sources, locations)
                    torch.softmax(output.logits[0, -1], -1)[target].item()
                    cells += 1
    return time.perf_counter() - start, cells


def vene_trace(samples):
    with tempfile.TemporaryDirectory() as out:
        command = [str(REPO / "target/release/vene"), "trace", "--model", str(MODEL), "--prompt", PROMPT,
                   "--subject", SUBJECT, "--target", TARGET, "--samples", str(samples), "--window", str(WINDOW),
                   "--out", out]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True,
                       env={**os.environ, "LD_LIBRARY_PATH": str(REPO / ".deps/libtorch-py/torch/lib")})
        seconds = time.perf_counter() - start
        trace = json.loads(Path(out, "trace.json").read_text())
    return seconds, trace


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--pyvene-samples", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    vene_seconds, trace = vene_trace(args.samples)
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL.parent, gguf_file=MODEL.name,
                                                              dtype=torch.float32, attn_implementation="eager").eval()
    ids, target = trace["tokens"], trace["target"]
    subject = list(range(trace["subject"][0], trace["subject"][1]))
    embeddings = model.get_input_embeddings().weight * math.sqrt(model.config.hidden_size)
    level = NOISE * embeddings.std().item()
    seconds, cells = pyvene_trace(model, ids, subject, target, args.pyvene_samples, level)
    pyvene_seconds = seconds * args.samples / args.pyvene_samples
    print(f"{PROMPT!r} -> {TARGET!r}: {len(ids)} tokens, 18 layers, three sweeps (windows of {WINDOW}), "
          f"{args.samples} noise samples")
    print(f"vene trace (one process: load, tokenizer, clean run, {args.samples} samples): {vene_seconds:.1f} s; "
          f"clean p {trace['clean']:.4f}, corrupted {trace['corrupted']:.4f}")
    print(f"pyvene tutorial loop: {cells} forwards for {args.pyvene_samples} sample(s) in {seconds:.1f} s "
          f"({seconds / cells * 1e3:.1f} ms each), {pyvene_seconds:.1f} s for {args.samples} (model already loaded)")
    print(f"speed-up: {pyvene_seconds / vene_seconds:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
