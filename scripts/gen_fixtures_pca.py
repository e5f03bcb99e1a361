#!/usr/bin/env python3
"""Generates the PCA rotated-space fixture (pyvene 0.1.8's PCARotatedSpaceIntervention) on the fixture GPT-2.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_pca.py

The PCA (8 of 32 components, so the base's part outside the span is dropped, as pyvene does) is fitted on the
layer-1 block outputs of 64 seeded random prompts, standardised as pyvene's PCA tutorial does (mean, population
std). pyvene's own loader cannot rebuild this type (its constructor needs the fitted PCA object), so the expected
logits come from the in-memory model that was saved.

pyvene's save writes no state for this type (the basis is lost; its own loader cannot rebuild the intervention), so
the case's config is vene's, with the basis inline, and pyvene's saved directory is kept apart for the import test.

Output: tests/fixtures/das/gpt2/pca_rotated_space/{config.json, inputs.json, expected.safetensors}
        tests/fixtures/das/pca_saved_by_pyvene/ (IntervenableModel.save() of the same model: config.json only)
"""
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures_gpt2 as g2  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)

from pyvene_fixtures import FIXTURES, check_versions, plain_logits, reset_dir, run_pyvene, write_expected, write_json  # noqa: E402
from pyvene import IntervenableConfig, IntervenableModel, RepresentationConfig  # noqa: E402
from pyvene.models.interventions import PCARotatedSpaceIntervention  # noqa: E402

CASE = os.path.join(FIXTURES, "das", "gpt2", "pca_rotated_space")
SAVED = os.path.join(FIXTURES, "das", "pca_saved_by_pyvene")
VOCAB, SEQ, BATCH, COMPONENTS = 101, 7, 2, 8


def fitted_pca(model):
    prompts = torch.from_numpy(np.random.RandomState(7).randint(0, VOCAB, size=(64, SEQ)))
    with torch.no_grad():
        states = model(input_ids=prompts, output_hidden_states=True).hidden_states[2]  # block 1's output
    x = states.reshape(-1, states.shape[-1]).double().numpy()
    mean = x.mean(axis=0, keepdims=True)
    std = x.var(axis=0) ** 0.5
    z = (x - mean) / std
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    return vt[:COMPONENTS].astype(np.float32), mean.astype(np.float32), std.astype(np.float32)


def main():
    check_versions()
    model = g2.load_model()
    components, mean, std = fitted_pca(model)
    reset_dir(CASE, SAVED)
    os.makedirs(CASE)
    intervention = PCARotatedSpaceIntervention(embed_dim=32, pca=SimpleNamespace(components_=components),
                                               pca_mean=mean, pca_std=std, subspace_partition=[[0, 3], [3, 8]])
    config = IntervenableConfig(representations=[RepresentationConfig(
        layer=1, component="block_output", unit="pos", max_number_of_units=1, intervention=intervention,
        subspace_partition=[[0, 3], [3, 8]])])
    ivm = IntervenableModel(config, model)
    rng = np.random.RandomState(2031)
    ids = lambda: rng.randint(0, VOCAB, size=(BATCH, SEQ)).tolist()  # noqa: E731
    inputs = {"base": {"input_ids": ids()}, "sources": [{"input_ids": ids()}],
              "unit_locations": {"sources->base": [[[[2], [5]]], [[[3], [1]]]]}, "subspaces": [[[1], [1]]]}  # pyvene needs one subspace width per batch
    logits, _ = run_pyvene(ivm, inputs)
    diff = (logits - plain_logits(model, inputs)).abs().max().item()
    assert diff > 1e-3, f"the intervention did not change the output ({diff})"
    ivm.save(SAVED)
    vene_config = {"mode": "parallel", "representations": [{
        "layer": 1, "component": "block_output", "unit": "pos", "max_number_of_units": 1,
        "subspace_partition": [[0, 3], [3, 8]],
        "intervention": {"type": "pca_rotated_space", "components": components.tolist(),
                         "mean": mean.reshape(-1).tolist(), "std": std.tolist()}}]}
    write_json(os.path.join(CASE, "config.json"), vene_config)
    write_json(os.path.join(CASE, "inputs.json"), inputs)
    write_expected(CASE, logits, [])
    print(f"wrote {CASE}: max |intervened - plain| {diff:.4g}; pyvene saved {sorted(os.listdir(SAVED))}")


if __name__ == "__main__":
    sys.exit(main())
