#!/usr/bin/env python3
"""Times pyvene 0.1.8 (+ transformers) on the workloads of vene's `engine` criterion bench, on the same model files and
input shapes, then runs that bench and prints both side by side. Causal tracing is timed as pyvene's tutorial runs it:
one IntervenableModel and one call per restoration.

Run: scripts/pyref-env.sh && cargo build --workspace --release && .deps/pyref/bin/python scripts/compare_pyvene.py
     (VENE_BENCH_SHAPE=tiny for a quick run; --repeats N for more pyvene samples; --rounds N alternations.)

The bench writes the model (seeded random weights, Hugging Face layout) to $TMPDIR/vene-bench-<shape>; this script
loads that very directory with transformers, so both sides run identical weights. The two sides alternate: each of
--rounds rounds runs the criterion bench (its median; the first also writes the model), then pyvene (median of
--repeats runs after one warm-up); the table gives each side's median over the rounds, so drift of the shared machine
between rounds hits both sides alike. "plain forward" is transformers' own forward on the pyvene side and vene's
engine with no intervention.
"""
import argparse
import json
import logging
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
logging.disable(logging.WARNING)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import GPT2LMHeadModel  # noqa: E402

import pyvene as pv  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"tiny": dict(layers=4, vocab=1000), "gpt2-small": dict(layers=12, vocab=50257)}
BATCH, TOKENS = 8, 64


def median_seconds(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def intervenable(model, representations):
    return pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model)


def pyvene_times(model_dir, shape, repeats):
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    layers, width = model.config.n_layer, model.config.n_embd
    generator = torch.Generator().manual_seed(1)
    base = {"input_ids": torch.randint(shape["vocab"], (BATCH, TOKENS), generator=generator)}
    source = {"input_ids": torch.randint(shape["vocab"], (BATCH, TOKENS), generator=generator)}
    vector = torch.tensor([(i % 7) * 0.01 for i in range(width)])
    every = [[list(range(TOKENS))] * BATCH]
    last = [[[TOKENS - 1]] * BATCH]

    def addition(layer):
        return pv.RepresentationConfig(layer=layer, component="block_output", unit="pos",
                                       max_number_of_units=TOKENS, intervention_type=pv.AdditionIntervention,
                                       source_representation=vector)

    one_site = intervenable(model, [addition(layers // 2)])
    every_layer = intervenable(model, [addition(layer) for layer in range(layers)])
    vanilla = intervenable(model, [pv.RepresentationConfig(layer=layers // 2, component="block_output", unit="pos",
                                                           max_number_of_units=TOKENS,
                                                           intervention_type=pv.VanillaIntervention)])
    das = intervenable(model, [pv.RepresentationConfig(layer=layers // 2, component="block_output", unit="pos",
                                                       max_number_of_units=1, low_rank_dimension=1,
                                                       intervention_type=pv.LowRankRotatedSpaceIntervention)])
    head = intervenable(model, [pv.RepresentationConfig(layer=layers // 2, component="head_attention_value_output",
                                                        unit="h.pos", max_number_of_units=1,
                                                        intervention_type=pv.ZeroIntervention)])
    head_locations = [[[[0]] * BATCH, [[TOKENS - 1]] * BATCH]]
    workloads = {
        "engine_no_intervention": lambda: model(**base),
        "addition_one_site": lambda: one_site(base, unit_locations={"base": every}),
        "addition_every_layer": lambda: every_layer(base, unit_locations={"base": every * layers}),
        "vanilla_interchange_with_source_pass": lambda: vanilla(base, [source],
                                                                unit_locations={"sources->base": (every, every)}),
        "das_rank1_last_position_with_source_pass": lambda: das(base, [source],
                                                                unit_locations={"sources->base": (last, last)}),
        "zero_one_head_one_site": lambda: head(base, unit_locations={"base": head_locations}),
    }
    with torch.no_grad():
        times = {name: timed(name, fn, repeats) for name, fn in workloads.items()}
    step = das_training_step(model, layers // 2, shape["vocab"], base, source, last)
    times["das_rank1_step"] = timed("das_rank1_step", step, repeats)
    with torch.no_grad():
        times["greedy_32_tokens_steered_every_layer"] = timed(
            "greedy_32_tokens_steered_every_layer", steered_generation(model, layers, width, shape["vocab"]), repeats)
    return times


def timed(name, fn, repeats):
    """The median, or None (printed as n/a) when pyvene cannot run the workload."""
    try:
        return median_seconds(fn, repeats)
    except Exception as error:  # a pyvene limitation is a result to report, not a crash
        print(f"pyvene could not run {name}: {error}", file=sys.stderr)
        return None


def das_training_step(model, layer, vocab, base, source, last):
    """One rank-1 DAS step as the bench runs it at `layer`'s block output: source and base passes, cross-entropy of
    the last token's logits, backward into the rotation, one Adam step."""
    das = intervenable(model, [pv.RepresentationConfig(layer=layer, component="block_output", unit="pos",
                                                       max_number_of_units=1, low_rank_dimension=1,
                                                       intervention_type=pv.LowRankRotatedSpaceIntervention)])
    das.disable_model_gradients()
    optimizer = torch.optim.Adam(das.get_trainable_parameters(), lr=1e-3)
    labels = torch.randint(vocab, (BATCH,), generator=torch.Generator().manual_seed(3))

    def step():
        optimizer.zero_grad()
        _, output = das(base, [source], unit_locations={"sources->base": (last, last)})
        loss = torch.nn.functional.cross_entropy(output.logits[:, -1], labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def steered_generation(model, layers, width, vocab):
    """Greedy decoding of 32 tokens after an 8-token prompt, a vector added to every layer's MLP output on the prompt
    and every step (pyvene without unit locations)."""
    vector = torch.tensor([(i % 5) * 0.01 for i in range(width)])
    steer = intervenable(model, [pv.RepresentationConfig(layer=layer, component="mlp_output",
                                                         intervention_type=pv.AdditionIntervention,
                                                         source_representation=vector) for layer in range(layers)])
    prompt = {"input_ids": torch.tensor([[(i * 131 + 7) % vocab for i in range(8)]])}
    return lambda: steer.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                  intervene_on_prompt=True, pad_token_id=0)


def pyvene_trace_time():
    """The tracing bench runs on the tiny model only (a GPT-2-small trace takes minutes)."""
    model = GPT2LMHeadModel.from_pretrained(Path(tempfile.gettempdir()) / "vene-bench-tiny").eval()
    with torch.no_grad():
        return median_seconds(lambda: pyvene_trace(model, SHAPES["tiny"]["vocab"]), 3)


TRACE_TOKENS, TRACE_SUBJECT, TRACE_WINDOW, TRACE_TARGET = 10, (1, 5), 10, 42


def pyvene_trace(model, vocab):
    """pyvene's causal-tracing tutorial loop: one IntervenableModel and one call per (sweep, layer, position), the
    subject noised with pyvene's NoiseIntervention, the clean prompt as the source of every restored layer."""
    layers = model.config.n_layer
    tokens = [(i * 37 + 11) % vocab for i in range(TRACE_TOKENS)]
    base = {"input_ids": torch.tensor([tokens])}
    subject = list(range(*TRACE_SUBJECT))
    half = TRACE_WINDOW // 2
    restored = []
    for component, windowed in [("block_output", False), ("mlp_output", True), ("attention_output", True)]:
        for layer in range(layers):
            span = range(max(0, layer - half), min(layers, layer + TRACE_WINDOW - half)) if windowed else [layer]
            for position in range(TRACE_TOKENS):
                representations = [pv.RepresentationConfig(0, "block_input", "pos",
                                                           intervention_type=pv.NoiseIntervention)]
                representations += [pv.RepresentationConfig(l, component, "pos", 1,
                                                            intervention_type=pv.VanillaIntervention) for l in span]
                traced = intervenable(model, representations)
                sources = [None] + [base] * len(span)
                locations = {"sources->base": ([None] + [[[position]]] * len(span),
                                               [[subject]] + [[[position]]] * len(span))}
                _, output = traced(base, sources, locations)
                restored.append(output.logits[0, -1].softmax(-1)[TRACE_TARGET].item())
    return restored


def vene_times(shape_name):
    env = dict(os.environ, VENE_BENCH_SHAPE=shape_name)
    subprocess.run(["cargo", "bench", "--bench", "engine", "--", "--warm-up-time", "2", "--measurement-time", "10",
                    f"forward/{shape_name}/|training/{shape_name}/|generation/{shape_name}/|tracing/"],
                   cwd=REPO, env=env, check=True)
    times = {}
    groups = [(f"{kind}_{shape_name}", "") for kind in ("forward", "training", "generation")]
    for group, prefix in groups + [("tracing_tiny", "tiny_tracing_")]:
        for bench in (REPO / "target" / "criterion" / group).iterdir():
            estimates = bench / "new" / "estimates.json"
            if estimates.exists():
                times[prefix + bench.name] = json.loads(estimates.read_text())["median"]["point_estimate"] / 1e9
    return times


def median_of_rounds(rounds):
    """Per workload, the median over rounds (None where a side could not run it)."""
    names = {name for times in rounds for name in times}
    medians = {}
    for name in sorted(names, key=lambda n: list(rounds[0]).index(n) if n in rounds[0] else len(names)):
        values = [times[name] for times in rounds if times.get(name) is not None]
        medians[name] = statistics.median(values) if values else None
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape_name = os.environ.get("VENE_BENCH_SHAPE", "gpt2-small")
    model_dir = Path(tempfile.gettempdir()) / f"vene-bench-{shape_name}"
    vene_rounds, pyvene_rounds = [], []
    for _ in range(max(1, args.rounds)):
        vene_rounds.append(vene_times(shape_name))
        times = pyvene_times(model_dir, SHAPES[shape_name], args.repeats)
        times["tiny_tracing_three_sweeps"] = pyvene_trace_time()
        pyvene_rounds.append(times)
    vene, pyvene = median_of_rounds(vene_rounds), median_of_rounds(pyvene_rounds)
    print(f"\n{shape_name}, batch {BATCH} x {TOKENS} tokens, CPU, {torch.get_num_threads()} torch threads, "
          f"median of {len(vene_rounds)} alternating rounds")
    print("| workload | pyvene 0.1.8 (ms) | vene (ms) | pyvene / vene |")
    print("|---|---:|---:|---:|")
    for name, seconds in pyvene.items():
        ours = vene.get(name)
        ratio = f"{seconds / ours:.2f}" if ours and seconds else "n/a"
        ours_ms = f"{ours * 1e3:.1f}" if ours else "n/a"
        theirs_ms = f"{seconds * 1e3:.1f}" if seconds else "n/a"
        print(f"| {name} | {theirs_ms} | {ours_ms} | {ratio} |")
    if "engine_no_intervention" in vene and "direct_tch" in vene:
        overhead = vene["engine_no_intervention"] / vene["direct_tch"] - 1
        print(f"\nvene engine with no intervention vs vene's direct tch forward: {overhead * 100:+.1f} %")


if __name__ == "__main__":
    sys.exit(main())
