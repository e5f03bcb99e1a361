#!/usr/bin/env python3
"""Generates directories saved by pyvene 0.1.8's IntervenableModel.save for source-less interventions.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_pyvene_saved.py

pyvene marks zero, collect and noise (its ConstantSourceIntervention types) with
`intervention_constant_sources: true` but writes no intkey_*.bin for them; its own loader skips the file for
zero and crashes for collect and noise. vene must load such directories. Each case, on the existing fixture
models (run the other gen_fixtures_* scripts first), is
  tests/fixtures/<model>/cases/<name>/pyvene_saved/         what IntervenableModel.save wrote
  tests/fixtures/<model>/cases/<name>/inputs.json           base / unit_locations
  tests/fixtures/<model>/cases/<name>/expected.safetensors  output (+ collected.i in pyvene's shape)
with expectations from the saved pyvene model's own run, except on the GRU: vene intervenes on a timestep only
at the listed steps (pyvene 0.1.8 at every step), so that case's expectation comes from the step loop in
gen_fixtures_pyvene_models.py.
"""
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyvene_fixtures as fixtures  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)
import gen_fixtures_gpt2 as g2  # noqa: E402
import gen_fixtures_gpt_neox as neox  # noqa: E402
import gen_fixtures_pyvene_models as toys  # noqa: E402

from pyvene import (  # noqa: E402
    CollectIntervention,
    IntervenableConfig,
    IntervenableModel,
    NoiseIntervention,
    RepresentationConfig,
    ZeroIntervention,
)

TYPES = {"zero": ZeroIntervention, "collect": CollectIntervention, "noise": NoiseIntervention}


def intervenable(model, reps, source=None):
    """(layer, component, type, unit, max_number_of_units) tuples -> a pyvene model; with `source`, each gets that
    constant source_representation, which makes pyvene save its state (for noise: the table) in an intkey file."""
    representations = [
        RepresentationConfig(layer=layer, component=component, unit=unit, max_number_of_units=units,
                             intervention_type=TYPES[kind], source_representation=source)
        for layer, component, kind, unit, units in reps
    ]
    return IntervenableModel(IntervenableConfig(representations=representations), model)


def save_case(fixture, name, ivm, inputs, run, expected=None, with_state=False):
    """Runs pyvene (unless `run` is None), saves `ivm` as pyvene does, and writes the case; `expected` stands in
    for pyvene's logits."""
    case_dir = os.path.join(fixtures.FIXTURES, fixture, "cases", name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    logits, collected = run(ivm, inputs) if run else (expected, [])
    ivm.save(os.path.join(case_dir, "pyvene_saved"))
    saved = sorted(os.listdir(os.path.join(case_dir, "pyvene_saved")))
    assert saved[0] == "config.json" and len(saved) == (2 if with_state else 1), f"{name}: pyvene wrote {saved}"
    fixtures.write_json(os.path.join(case_dir, "inputs.json"), inputs)
    fixtures.write_expected(case_dir, logits if expected is None else expected, collected)
    print(f"{fixture}/{name:24s} output {tuple(logits.shape)}  collected {[tuple(c.shape) for c in collected]}")


def gpt2_cases():
    model = g2.load_model()
    ids = g2.ids()
    save_case("gpt2", "saved_zero", intervenable(model, [(1, "block_output", "zero", "pos", 1)]),
              {"base": {"input_ids": ids}, "unit_locations": {"base": [[[2], [5]]]}}, fixtures.run_pyvene)
    save_case("gpt2", "saved_collect", intervenable(model, [(2, "mlp_output", "collect", "pos", 2)]),
              {"base": {"input_ids": ids}, "unit_locations": {"base": [[[1, 4], [0, 6]]]}}, fixtures.run_pyvene)
    # The causal-tracing tutorial's noise: four subject positions at the embeddings.
    noise_inputs = {"base": {"input_ids": ids}, "unit_locations": {"base": [[[0, 1, 2, 3], [1, 2, 3, 4]]]}}
    save_case("gpt2", "saved_noise", intervenable(model, [(0, "block_input", "noise", "pos", 1)]), noise_inputs,
              fixtures.run_pyvene)
    # Given a (for noise, unused) constant source, pyvene also saves the noise's state: table, level and widths.
    source = torch.zeros(g2.N_EMBD)
    save_case("gpt2", "saved_noise_with_state", intervenable(model, [(0, "block_input", "noise", "pos", 1)], source),
              noise_inputs, fixtures.run_pyvene, with_state=True)


def neox_cases():
    model = neox.load_model(neox.MODEL_DIR)
    reps = [(1, "attention_output", "zero", "pos", 2), (0, "head_attention_value_output", "collect", "h.pos", 2),
            (1, "attention_input", "collect", "pos", 3)]
    inputs = {
        "base": {"input_ids": neox.ids()},
        "unit_locations": {"base": [
            [[1, 3], [0, 5]],
            [[[0, 2], [1, 3]], [[2, 3], [0, 6]]],
            [[0, 2, 4], [1, 5, 6]],
        ]},
    }
    save_case("gpt_neox", "saved_zero_and_collect", intervenable(model, reps), inputs, fixtures.run_pyvene)


def gru_cases():
    model = toys.load_gru(os.path.join(toys.GRU_OUT, "model"))
    vcfg = {"mode": "parallel", "representations": [fixtures.rep(0, "cell_output", "zero", unit="t")]}
    inputs = {
        "base": {"input_ids": np.random.RandomState(31).randint(0, toys.GRU_VOCAB, (toys.BATCH, toys.GRU_SEQ)).tolist()},
        "unit_locations": {"base": [[[2], [3]]]},
    }
    expected = toys.gru_vene_reference(model, vcfg, inputs)
    assert (expected - fixtures.plain_logits(model, inputs)).abs().max().item() > 1e-3, "zeroing changed nothing"
    # pyvene 0.1.8 cannot run this GRU setup with a batch of two (see tests/fixtures/gru/README.md); it saves it.
    save_case("gru", "saved_zero_step", intervenable(model, [(0, "cell_output", "zero", "t", 1)]), inputs,
              None, expected=expected)


def main():
    gpt2_cases()
    neox_cases()
    gru_cases()


if __name__ == "__main__":
    sys.exit(main())
