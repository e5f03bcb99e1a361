#!/usr/bin/env python3
"""Generates the trainable (DAS-family) intervention fixtures under tests/fixtures/das from pyvene 0.1.8.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_das.py

Uses the fixture models of scripts/gen_fixtures_gpt2.py and scripts/gen_fixtures_gpt_neox.py
(tests/fixtures/gpt2/model, tests/fixtures/gpt_neox/model; read, never rewritten).

Output (deterministic, no network), for <model> in gpt2, gpt_neox:
  tests/fixtures/das/<model>/<case>/pyvene_saved/       IntervenableModel.save() output
                                                        (config.json + intkey_<key>.bin torch pickles)
  tests/fixtures/das/<model>/<case>/inputs.json         base / sources / unit_locations / subspaces
  tests/fixtures/das/<model>/<case>/expected.safetensors
      output   f32 (batch, seq, vocab): logits of IntervenableModel.load(pyvene_saved, model) on inputs.json

Every rotation is moved off its initial value before saving (seeded noise on
rotate_layer.parametrizations.weight.original, see perturb_rotation), and the script checks that a
re-computation of the effective rotation from the saved tensors equals rotate_layer.weight exactly
(same torch ops) and, independently, in float64 numpy. See tests/fixtures/das/README.md.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures_gpt2 as g2  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)
import gen_fixtures_gpt_neox as gn  # noqa: E402

from pyvene_fixtures import (  # noqa: E402
    FIXTURES,
    check_versions,
    plain_logits,
    reset_dir,
    run_pyvene,
    write_expected,
    write_json,
)

from pyvene import (  # noqa: E402
    BoundlessRotatedSpaceIntervention,
    IntervenableConfig,
    IntervenableModel,
    LowRankRotatedSpaceIntervention,
    RepresentationConfig,
    RotatedSpaceIntervention,
    SigmoidMaskIntervention,
    SigmoidMaskRotatedSpaceIntervention,
)
from pyvene.models.interventions import LocalistRepresentationIntervention  # noqa: E402

OUT = os.path.join(FIXTURES, "das")
BATCH = 2
SEQ = 7
VOCAB = 101
ORIG = "rotate_layer.parametrizations.weight.original"
BASE = "rotate_layer.parametrizations.weight.0.base"


# --------------------------------------------------------------------------- cases
def cases(ids):
    """Yields (name, representation kwargs, inputs, setup(intervention, generator))."""
    b = BATCH

    def src_base(src, base):
        return {"sources->base": [[src], [base]]}

    def one_source(locs, subspaces=None):
        d = {"base": {"input_ids": ids()}, "sources": [{"input_ids": ids()}], "unit_locations": locs}
        if subspaces is not None:
            d["subspaces"] = subspaces
        return d

    def rotation_only(iv, g):
        perturb_rotation(iv, g)

    yield "rotated_space", dict(
        layer=1, component="block_output", unit="pos", max_number_of_units=1,
        intervention_type=RotatedSpaceIntervention, subspace_partition=[[0, 8], [8, 32]],
    ), one_source(src_base([[2], [5]], [[3], [1]]), subspaces=[[[0]] * b]), rotation_only

    yield "rotated_space_two_units", dict(
        layer=1, component="mlp_output", unit="pos", max_number_of_units=2,
        intervention_type=RotatedSpaceIntervention, subspace_partition=[[0, 10], [10, 64]],
    ), one_source(src_base([[1, 3], [2, 6]], [[0, 4], [5, 2]]), subspaces=[[[0]] * b]), rotation_only

    yield "low_rank", dict(
        layer=1, component="block_output", unit="pos", max_number_of_units=1,
        intervention_type=LowRankRotatedSpaceIntervention, low_rank_dimension=2,
    ), one_source(src_base([[4], [0]], [[2], [6]])), rotation_only

    yield "low_rank_subspace", dict(
        layer=1, component="block_output", unit="pos", max_number_of_units=1,
        intervention_type=LowRankRotatedSpaceIntervention, low_rank_dimension=4,
        subspace_partition=[[0, 2], [2, 4]],
    ), one_source(src_base([[1], [3]], [[5], [2]]), subspaces=[[[1]] * b]), rotation_only

    def boundless(iv, g):
        perturb_rotation(iv, g)
        iv.set_intervention_boundaries(0.4)
        iv.set_temperature(torch.tensor(2.0))

    yield "boundless", dict(
        layer=1, component="block_output", unit="pos", max_number_of_units=1,
        intervention_type=BoundlessRotatedSpaceIntervention,
    ), one_source(src_base([[6], [2]], [[1], [4]])), boundless

    def sigmoid_mask_rotated(iv, g):
        perturb_rotation(iv, g)
        with torch.no_grad():
            iv.masks.copy_(torch.randn(iv.masks.shape, generator=g) * 3.0)
        iv.set_temperature(torch.tensor(1.5))

    yield "sigmoid_mask_rotated", dict(
        layer=1, component="attention_output", unit="pos", max_number_of_units=1,
        intervention_type=SigmoidMaskRotatedSpaceIntervention,
    ), one_source(src_base([[3], [6]], [[2], [5]])), sigmoid_mask_rotated

    def sigmoid_mask(iv, g):
        with torch.no_grad():
            iv.mask.copy_(torch.randn(iv.mask.shape, generator=g) * 0.02)
        assert iv.temperature.item() == np.float32(0.01)  # pyvene's default, kept

    yield "sigmoid_mask", dict(
        layer=1, component="mlp_output", unit="pos", max_number_of_units=1,
        intervention_type=SigmoidMaskIntervention,
    ), one_source(src_base([[0], [4]], [[3], [3]])), sigmoid_mask


# --------------------------------------------------------------------------- rotations
def perturb_rotation(iv, g):
    """Adds N(0, 0.1) noise to rotate_layer.parametrizations.weight.original.

    Square (matrix_exp): noise everywhere; only tril(original) enters, and its diagonal cancels in
    A = L - L^T, so the weight stays exactly orthogonal. Tall (householder): the diagonal of
    `original` is read as a sign through .int() (truncation), so noise there would zero or double
    columns; the diagonal is left at its -1 and only the off-diagonal entries get noise (the upper
    triangle is ignored by the map, the strict lower triangle holds the reflectors).
    """
    orig = iv.rotate_layer.parametrizations.weight.original
    n, k = orig.shape
    noise = torch.randn(orig.shape, generator=g) * 0.1
    if n != k:
        noise = noise * (1.0 - torch.eye(n, k))
    with torch.no_grad():
        orig.add_(noise)


def rotation_torch(sd):
    """Effective rotation from a saved state dict, with the ops torch's orthogonal() uses."""
    x = sd[ORIG]
    base = sd[BASE]
    n, k = x.shape
    assert n >= k
    if n == k:  # matrix_exp
        lo = x.tril()
        q = torch.matrix_exp(lo - lo.mH)
    else:  # householder
        a = x.tril(diagonal=-1)
        tau = 2.0 / (1.0 + (a * a).sum(dim=-2))
        q = torch.linalg.householder_product(a, tau)
        q = q * x.diagonal(dim1=-2, dim2=-1).int().unsqueeze(-2)
    return base @ q


def expm64(a):
    """exp(a) in float64: scaling and squaring with a 30-term Taylor series."""
    norm = np.abs(a).sum(axis=0).max()
    s = max(0, int(np.ceil(np.log2(norm / 0.25))) if norm > 0 else 0)
    a = a / (2.0 ** s)
    out = np.eye(a.shape[0])
    term = np.eye(a.shape[0])
    for i in range(1, 31):
        term = term @ a / i
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def rotation_numpy(sd):
    """Independent float64 re-computation (what a Rust port would do)."""
    x = sd[ORIG].double().numpy()
    base = sd[BASE].double().numpy()
    n, k = x.shape
    if n == k:
        lo = np.tril(x)
        q = expm64(lo - lo.T)
    else:
        a = np.tril(x, -1)
        q = np.eye(n)[:, :k]
        for i in reversed(range(k)):  # Q = H_0 H_1 ... H_{k-1} I[:, :k]
            v = np.zeros(n)
            v[i] = 1.0
            v[i + 1:] = a[i + 1:, i]
            tau = 2.0 / (1.0 + (a[:, i] ** 2).sum())
            q = q - tau * np.outer(v, v @ q)
        q = q * np.trunc(np.diag(x))[None, :]
    return base @ q


# --------------------------------------------------------------------------- main
def describe_state_dict(sd):
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]


def run_model(model_name, model, ids_seed, case_seed0):
    rng = np.random.RandomState(ids_seed)

    def ids():
        return rng.randint(0, VOCAB, size=(BATCH, SEQ)).tolist()

    out_dir = os.path.join(OUT, model_name)
    report = []
    for ci, (name, rep_kwargs, inputs, setup) in enumerate(cases(ids)):
        case_dir = os.path.join(out_dir, name)
        saved_dir = os.path.join(case_dir, "pyvene_saved")
        os.makedirs(case_dir)
        torch.manual_seed(case_seed0 + ci)  # RotateLayer init / orthogonal completion use the global RNG
        ivm = IntervenableModel(IntervenableConfig(representations=[RepresentationConfig(**rep_kwargs)]), model)
        (key, iv), = ivm.interventions.items()
        setup(iv, torch.Generator().manual_seed(1000 * case_seed0 + ci))

        shapes = []
        hook = iv.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
        logits_before, _ = run_pyvene(ivm, inputs)
        hook.remove()
        ivm.save(saved_dir)

        torch.manual_seed(0)
        loaded = IntervenableModel.load(saved_dir, model)
        logits, _ = run_pyvene(loaded, inputs)
        assert torch.equal(logits, logits_before), f"{model_name}/{name}: loaded model differs"
        diff = (logits - plain_logits(model, inputs)).abs().max().item()
        assert diff > 1e-3, f"{model_name}/{name}: intervention did not change the output ({diff})"
        write_json(os.path.join(case_dir, "inputs.json"), inputs)
        write_expected(case_dir, logits, [])

        sd = torch.load(os.path.join(saved_dir, f"intkey_{key}.bin"), weights_only=True)
        liv = loaded.interventions[key]
        rot_exact = rot_np = orth = None
        if ORIG in sd:
            w = liv.rotate_layer.weight.detach()
            mine = rotation_torch(sd)
            rot_exact = (mine - w).abs().max().item()
            assert rot_exact == 0.0, f"{model_name}/{name}: rotation re-computation differs ({rot_exact})"
            rot_np = np.abs(rotation_numpy(sd) - w.double().numpy()).max()
            assert rot_np < 1e-5, (model_name, name, rot_np)
            orth = (w.T @ w - torch.eye(w.shape[1])).abs().max().item()
            assert orth < 1e-5, (model_name, name, orth)
            init_gap = (sd[BASE][:, : w.shape[1]] - w).abs().max().item()
            assert init_gap > 0.05, f"{model_name}/{name}: rotation still at its initial value"
        flattened = not (isinstance(liv, LocalistRepresentationIntervention) or liv.keep_last_dim)
        report.append(dict(
            case=name, key=key, type=type(liv).__name__, diff=diff, flattened=flattened,
            seen=shapes[0], rot_exact=rot_exact, rot_np=rot_np, orth=orth,
            state=describe_state_dict(sd),
        ))
    return report


def main():
    check_versions()
    models = {
        "gpt2": lambda: g2.load_model(),
        "gpt_neox": lambda: gn.load_model(gn.MODEL_DIR),
    }
    reset_dir(*(os.path.join(OUT, name) for name in models))
    reports = {}
    for mi, (model_name, load) in enumerate(models.items()):
        reports[model_name] = run_model(model_name, load(), ids_seed=2024 + mi, case_seed0=100 * (mi + 1))

    for model_name, report in reports.items():
        print(f"\n== {model_name}")
        print(f"{'case':24s} {'max|intervened-plain|':>22s} {'flattened':>9s} {'input seen':>12s} "
              f"{'|rot-w| torch':>13s} {'|rot-w| f64':>11s} {'|WtW-I|':>9s}")
        for r in report:
            fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
            print(f"{r['case']:24s} {r['diff']:22.6g} {str(r['flattened']):>9s} {str(r['seen']):>12s} "
                  f"{fmt(r['rot_exact']):>13s} {fmt(r['rot_np']):>11s} {fmt(r['orth']):>9s}")
    print("\nstate dicts (gpt2; gpt_neox identical):")
    for r in reports["gpt2"]:
        print(f"  {r['case']} ({r['type']}): intkey_{r['key']}.bin")
        for k, shape, dtype in r["state"]:
            print(f"      {k:48s} {str(shape):10s} {dtype}")
    for a, b in zip(reports["gpt2"], reports["gpt_neox"]):
        assert [(k, s, d) for k, s, d in a["state"]] == [(k, s, d) for k, s, d in b["state"]], a["case"]
    # config.json of one case, to show the representation layout
    with open(os.path.join(OUT, "gpt2", "low_rank_subspace", "pyvene_saved", "config.json")) as f:
        print("\nlow_rank_subspace config.json:\n" + json.dumps(json.load(f), indent=1))


if __name__ == "__main__":
    sys.exit(main())
