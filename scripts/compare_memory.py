#!/usr/bin/env python3
"""Peak resident memory of one run, vene against pyvene 0.1.8, on the model directory and input shapes of the
`engine` bench: a vanilla interchange at the middle layer with its source pass (batch 8 x 64, all positions), and one
rank-1 DAS training step at the last position. Each side runs in a process of its own under /usr/bin/time (Debian
package `time`), whose maximum resident set size is the number reported: loading the model counts on both sides.

vene runs the `vene run` and `vene train` commands (which also write their results: the 8 x 64 x 50257 logits for
`run`, the trained rotation and an evaluation pass for `train`); pyvene runs the same workloads in a Python process
with transformers.

Run (after compare_pyvene.py or the bench has written the model):
    .deps/pyref/bin/python scripts/compare_memory.py
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH, TOKENS = 8, 64


def peak_kib(command, env=None):
    """Runs `command` under /usr/bin/time and returns its maximum resident set size in KiB."""
    result = subprocess.run(["/usr/bin/time", "-f", "peak %M"] + command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-2000:]}")
    return int(result.stderr.strip().splitlines()[-1].split()[1])


def inputs(vocab):
    import torch

    generator = torch.Generator().manual_seed(1)
    base = torch.randint(vocab, (BATCH, TOKENS), generator=generator).tolist()
    source = torch.randint(vocab, (BATCH, TOKENS), generator=generator).tolist()
    return base, source


PYVENE = """
import sys, torch
sys.path.insert(0, {scripts!r})
import compare_pyvene as c
from transformers import GPT2LMHeadModel
model = GPT2LMHeadModel.from_pretrained({model!r}).eval()
layers = model.config.n_layer
base = {{"input_ids": torch.tensor({base})}}
source = {{"input_ids": torch.tensor({source})}}
if {workload!r} == "interchange":
    vanilla = c.intervenable(model, [c.pv.RepresentationConfig(layer=layers // 2, component="block_output", unit="pos",
                                     max_number_of_units={tokens}, intervention_type=c.pv.VanillaIntervention)])
    every = [[list(range({tokens}))] * {batch}]
    with torch.no_grad():
        vanilla(base, [source], unit_locations={{"sources->base": (every, every)}})
else:
    last = [[[{tokens} - 1]] * {batch}]
    c.das_training_step(model, model.config.n_layer // 2, model.config.vocab_size, base, source, last)()
"""


def main():
    model = Path(tempfile.gettempdir()) / "vene-bench-gpt2-small"
    if not (model / "model.safetensors").exists():
        sys.exit(f"{model} is missing: run `cargo bench --bench engine` or scripts/compare_pyvene.py first")
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    base, source = inputs(vocab)
    vene = str(REPO / "target" / "release" / "vene")
    plugins = ["--plugin-dir", str(REPO / "target" / "release"), "--plugin", "gpt2", "--plugin", "das"]
    work = Path(tempfile.mkdtemp(prefix="vene-memory-"))
    layer = json.loads((model / "config.json").read_text())["n_layer"] // 2
    (work / "vanilla.json").write_text(json.dumps({"representations": [
        {"layer": layer, "component": "block_output", "intervention": {"type": "vanilla"}}]}))
    every = [list(range(TOKENS))] * BATCH
    (work / "inputs.json").write_text(json.dumps({
        "base": {"input_ids": base}, "sources": [{"input_ids": source}],
        "unit_locations": {"sources->base": [[every], [every]]}}))
    (work / "das.json").write_text(json.dumps({"representations": [
        {"layer": layer, "component": "block_output", "low_rank_dimension": 1,
         "intervention": {"type": "low_rank_rotated_space"}}]}))
    with open(work / "data.jsonl", "w") as data:
        for row in range(BATCH):
            data.write(json.dumps({"base": {"input_ids": [base[row]]}, "sources": [{"input_ids": [source[row]]}],
                                   "unit_locations": {"sources->base": [TOKENS - 1, TOKENS - 1]},
                                   "label": base[row][0]}) + "\n")
    vene_runs = {
        "interchange": [vene, "run", *plugins, "--model", str(model), "--config", str(work / "vanilla.json"),
                        "--inputs", str(work / "inputs.json"), "--out", str(work / "out.safetensors")],
        "das_step": [vene, "train", *plugins, "--model", str(model), "--config", str(work / "das.json"),
                     "--data", str(work / "data.jsonl"), "--out", str(work / "trained"), "--epochs", "1",
                     "--batch-size", str(BATCH), "--eval-fraction", "0"],
    }
    print("| workload | pyvene 0.1.8 peak (MiB) | vene peak (MiB) | vene / pyvene |")
    print("|---|---:|---:|---:|")
    for workload, command in vene_runs.items():
        ours = peak_kib(command)
        code = PYVENE.format(scripts=str(REPO / "scripts"), model=str(model), base=base, source=source,
                             workload="interchange" if workload == "interchange" else "das_step",
                             tokens=TOKENS, batch=BATCH)
        theirs = peak_kib([sys.executable, "-c", code], env=dict(os.environ, HF_HUB_OFFLINE="1"))
        print(f"| {workload} | {theirs / 1024:.0f} | {ours / 1024:.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
