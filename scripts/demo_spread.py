#!/usr/bin/env python3
"""How much the demo's trained-toy effects vary between training runs a user can get (the GRU, Backpack and CNN
studies; the real model's have no training seed).

Run: scripts/demo_spread.py [--seeds 7,1,2,3] [--bin target/release/vene] [--out DIR]

Each seed trains the demo models afresh (`vene demo --seed S`), once with this CPU's own kernels and once with
ATen's portable kernels and MKL's compatible code path (ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE), which
stands in for a machine of another CPU. For every effect the demo test asserts, it prints the value per run and the
worst case, so the test's margins can be set from the spread rather than from one machine's run.
Only the Python standard library is needed.
"""
import argparse
import json
import os
import subprocess
import sys

KERNELS = {
    "native": {},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
}


def load(path):
    with open(path) as f:
        return json.load(f)


def gru_command_top(binary, cache, seed):
    """The top word of `vene timesteps` swapping japan's step into "the capital of france is" (the demo test's)."""
    name = "gru-facts" if seed == "7" else f"gru-facts-seed{seed}"
    out = os.path.join(cache, f"timesteps-{seed}")
    subprocess.run([binary, "timesteps", "--model", os.path.join(cache, name), "--plugin", "gru", "--base",
                    "the capital of france is", "--source", "the capital of japan is", "--step", "3",
                    "--to-step", "4", "--out", out], check=True, stdout=subprocess.DEVNULL)
    return load(os.path.join(out, "timesteps.json"))["interventions"][1]["top"][0][0]


def effects(out):
    """The quantities tests/vene/studies.rs asserts on, from one demo run's files."""
    results = load(os.path.join(out, "results.json"))
    found = {}
    gru = results["gru"]["interventions"]
    for intervention, step in zip(gru, (3, 3, 4)):
        effect = intervention["effect"]
        found[f"gru text {intervention['name']}: max effect before step"] = max(map(abs, effect[:step]))
        found[f"gru text {intervention['name']}: min effect from step"] = min(effect[step:])
    found["gru text: plain top-1 is madrid"] = float(results["gru"]["plain"][0][0] == "madrid")
    found["gru text: swap top-1 is rome"] = float(gru[1]["top"][0][0] == "rome")
    images = results.get("gru_images")
    if images:
        found["gru images: accuracy"] = images["accuracy"]
        study = images["study"]
        found["gru images: base image classified right"] = float(study["plain"][0][0] == images["base_label"])
        for intervention, step in zip(study["interventions"], (7, 7, 8)):
            effect = intervention["effect"]
            found[f"gru images {intervention['name']}: max effect before step"] = max(map(abs, effect[:step]))
            found[f"gru images {intervention['name']}: min effect from step"] = min(effect[step:])

        def base_probability(top):
            return next((p for w, p in top if w == images["base_label"]), 0.0)

        found["gru images: p(base class) drop when zeroed"] = base_probability(study["plain"]) - base_probability(
            study["interventions"][0]["top"]
        )
    backpack = results["backpack"]
    found["backpack: p(madrid)"] = backpack["baseline"]
    found["backpack: biggest drop from one amplified sense"] = max(
        backpack["baseline"] - p for p in backpack["probabilities"][1]
    )
    found["backpack: biggest drop from one scaled sense"] = max(
        backpack["baseline"] - p for row in backpack["probabilities"] for p in row
    )
    cnn = results.get("cnn")
    if cnn:
        found["cnn: accuracy"] = cnn["accuracy"]
        found["cnn: biggest drop from one zeroed channel"] = max(cnn["baseline"] - p for p in cnn["zeroed"])
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="7,1,2,3")
    parser.add_argument("--kernels", default="native,portable")
    parser.add_argument("--bin", default="target/release/vene")
    parser.add_argument("--out", default="target/demo-spread")
    args = parser.parse_args()
    runs = {}
    for kernels in args.kernels.split(","):
        for seed in args.seeds.split(","):
            name = f"seed {seed}, {kernels}"
            out = os.path.join(args.out, f"{kernels}-seed{seed}")
            env = dict(os.environ, **KERNELS[kernels])
            if not os.path.exists(os.path.join(out, "results.json")):
                print(f"== {name}", file=sys.stderr, flush=True)
                command = [args.bin, "demo", "--small", "--seed", seed, "--out", out, "--cache",
                           os.path.join(args.out, f"cache-{kernels}")]
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            runs[name] = effects(out)
            cache = os.path.join(args.out, f"cache-{kernels}")
            top = gru_command_top(args.bin, cache, seed)
            runs[name]["gru command: swap top-1 is tokyo"] = float(top == "tokyo")
    names = list(runs)
    print("effect".ljust(58) + "".join(n.rjust(20) for n in names) + "min".rjust(10) + "max".rjust(10))
    for effect in runs[names[0]]:
        values = [runs[n].get(effect, float("nan")) for n in names]
        row = effect.ljust(58) + "".join(f"{v:20.4f}" for v in values)
        print(row + f"{min(values):10.4f}{max(values):10.4f}")


if __name__ == "__main__":
    main()
