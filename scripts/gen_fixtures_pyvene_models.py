#!/usr/bin/env python3
"""Generates reference fixtures for pyvene's own small models: MLP, GRU and Backpack GPT-2.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_pyvene_models.py

Same layout and formats as scripts/gen_fixtures_gpt2.py (whose helpers this imports):
  tests/fixtures/<model>/model/                  seeded random model (config.json + model.safetensors)
  tests/fixtures/<model>/cases/<name>/config.json       vene intervention config
  tests/fixtures/<model>/cases/<name>/inputs.json       base / sources / unit_locations / subspaces
  tests/fixtures/<model>/cases/<name>/expected.safetensors
      output       the model's logits, f32
      collected.i  i-th collected activation (config order) as pyvene returns it
for <model> in mlp (pyvene MLPForClassification), gru (pyvene GRUForClassification) and backpack
(pyvene BackpackGPT2LMHeadModel).

MLP and Backpack expectations come from pyvene 0.1.8. The GRU intervention cases do NOT: vene intervenes
on a recurrent site only at the selected timesteps (pyvene 0.1.8 touches every step), so they are
computed by a hand-written step loop that re-uses the model's own cell modules (checked to reproduce
the model bit for bit when nothing is edited). pyvene's own numbers for the same GRU setups are printed
and recorded in tests/fixtures/gru/README.md (between the pyvene-demo markers).
"""
import decimal
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyvene_fixtures import (  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)
    FIXTURES,
    check_versions,
    intervenable_for,
    logits_of,
    plain_logits,
    rep,
    reset_dir,
    run_pyvene,
    to_tensors,
    write_case,
)

from safetensors import safe_open  # noqa: E402
from pyvene.models.backpack_gpt2.modelings_backpack_gpt2 import (  # noqa: E402
    BackpackGPT2Config,
    BackpackGPT2LMHeadModel,
)
from pyvene.models.gru.modelings_gru import GRUConfig, GRUForClassification  # noqa: E402
from pyvene.models.mlp.modelings_mlp import MLPConfig, MLPForClassification  # noqa: E402

BATCH = 2


# --------------------------------------------------------------------------- shared helpers
def init_weights(model, seed, weight_std=0.3, bias_std=0.1, emb_std=0.5):
    """Re-initialises every parameter (named_parameters lists a tied/shared tensor once)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            is_ln = isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.LayerNorm)
            if is_ln:
                std, mean = (0.1, 1.0) if leaf == "weight" else (0.05, 0.0)
            elif re.search(r"(wte|wpe)\.weight$", name):
                std, mean = emb_std, 0.0
            elif leaf == "bias":
                std, mean = bias_std, 0.0
            elif leaf == "weight":
                std, mean = weight_std, 0.0
            else:
                raise RuntimeError(f"unexpected parameter {name}")
            p.copy_(mean + torch.randn(p.shape, generator=g) * std)
    model.eval()
    return model






def f32_decimal_safe(x):
    """True if decimal->f64->f32 gives the correctly rounded f32 of the decimal string."""
    s = repr(x)
    v = np.float32(x)
    exact = decimal.Decimal(s)
    err = abs(decimal.Decimal(float(v)) - exact)
    for nb in (np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))):
        if abs(decimal.Decimal(float(nb)) - exact) <= err:
            return False
    return True


def rounded_floats(rng, shape, std=1.0):
    vals = np.round(rng.randn(*shape) * std, 4)
    flat = [float(x) for x in vals.reshape(-1)]
    assert all(f32_decimal_safe(x) for x in flat), "a value is ambiguous when parsed as f32"
    return np.array(flat).reshape(shape).tolist()



def safetensors_keys(path):
    with safe_open(path, "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}



def run_pyvene_cases(model, cases_dir, cases):
    report = []
    for name, vcfg, inputs, changes in cases:
        ivm = intervenable_for(model, vcfg)  # fresh per case: pyvene's use_fast flag is sticky
        logits, collected = run_pyvene(ivm, inputs)
        diff = (logits - plain_logits(model, inputs)).abs().max().item()
        if changes:
            assert diff > 1e-3, f"{name}: intervention did not change the output ({diff})"
        else:
            assert diff == 0.0, f"{name}: output changed ({diff})"
        n_collect = sum(r["intervention"]["type"] == "collect" for r in vcfg["representations"])
        assert len(collected) == n_collect, (name, len(collected))
        write_case(cases_dir, name, vcfg, inputs, logits, collected)
        report.append((name, diff, tuple(logits.shape), [tuple(c.shape) for c in collected]))
    return report


def print_report(title, report):
    print(f"\n== {title}")
    print(f"{'case':24s} max|intervened - plain|  output shape   collected shapes")
    for name, diff, shape, shapes in report:
        print(f"{name:24s} {diff:14.6g}          {str(shape):14s} {shapes}")


# =========================================================================== MLP
MLP_OUT = os.path.join(FIXTURES, "mlp")
MLP_H = 16


def build_mlp():
    torch.manual_seed(0)
    config = MLPConfig(
        include_emb=False,
        n_layer=2,
        h_dim=MLP_H,
        num_classes=3,
        activation_function="gelu",
        pdrop=0.0,
        include_bias=True,
        squeeze_output=True,
    )
    return init_weights(MLPForClassification(config), seed=0)


def load_mlp(path):
    # pyvene's MLP classes set no config_class, so from_pretrained needs the config passed in
    model = MLPForClassification.from_pretrained(path, config=MLPConfig.from_pretrained(path))
    model.eval()
    return model


def mlp_cases():
    rng = np.random.RandomState(2024)

    def embeds():
        # (batch, 1, h_dim): pyvene's MLP treats dim 1 as a length-1 "pos" axis
        return rounded_floats(rng, (BATCH, 1, MLP_H))

    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"inputs_embeds": embeds()}}, False

    yield "vanilla_block_output", {
        "mode": "parallel",
        "representations": [rep(0, "block_output", "vanilla")],
    }, {
        "base": {"inputs_embeds": embeds()},
        "sources": [{"inputs_embeds": embeds()}],
        # the only valid "pos" index is 0 (the singleton axis); [intervention][batch][units]
        "unit_locations": {"sources->base": [[[[0], [0]]], [[[0], [0]]]]},
    }, True

    yield "zero_mlp_activation", {
        "mode": "parallel",
        "representations": [rep(1, "mlp_activation", "zero", subspace_partition=[[0, 4], [4, MLP_H]])],
    }, {
        "base": {"inputs_embeds": embeds()},
        "unit_locations": {"base": [[[0], [0]]]},
        "subspaces": [[[0], [0]]],
    }, True


def mlp_shape_probe(model):
    """What pyvene's MLP hooks see: (b, 1, d) for 3-D inputs; for 2-D inputs "pos" indexes features."""
    info = {}
    x3 = torch.randn(BATCH, 1, MLP_H, generator=torch.Generator().manual_seed(5))
    shapes = {}
    def shape_hook(key):
        def hook(module, args, output):
            shapes[key] = tuple(output.shape)  # returns None: output unchanged
        return hook
    hooks = [model.mlp.h[0].register_forward_hook(shape_hook("h[0] out")),
             model.mlp.h[0].act.register_forward_hook(shape_hook("h[0].act out"))]
    with torch.no_grad():
        logits = logits_of(model(inputs_embeds=x3))
    for h in hooks:
        h.remove()
    info["3-D input hooked shapes"] = shapes
    info["3-D input logits shape"] = tuple(logits.shape)
    # block_output == mlp_activation (dropout is the identity; no residual in MLPBlock)
    # 2-D inputs: collect "pos" [[3]] from block_output selects feature 3, not a position
    ivm = intervenable_for(model, {"mode": "parallel", "representations": [rep(0, "block_output", "collect")]})
    x2 = x3[:, 0, :]
    with torch.no_grad():
        (_, coll), _ = ivm({"inputs_embeds": x2}, unit_locations={"base": [[[3], [3]]]})
        ref = model.mlp.h[0](x2)
    info["2-D input: collect pos [[3]] shape"] = tuple(coll[0].shape)
    info["2-D input: it equals feature 3"] = bool(torch.equal(coll[0], ref[:, 3:4]))
    return info


def gen_mlp():
    model_dir, cases_dir = os.path.join(MLP_OUT, "model"), os.path.join(MLP_OUT, "cases")
    reset_dir(model_dir, cases_dir)
    os.makedirs(cases_dir)
    build_mlp().save_pretrained(model_dir, safe_serialization=True)
    model = load_mlp(model_dir)
    print("\nMLP weights:", safetensors_keys(os.path.join(model_dir, "model.safetensors")))
    for k, v in mlp_shape_probe(model).items():
        print(f"  {k}: {v}")
    print_report("mlp", run_pyvene_cases(model, cases_dir, list(mlp_cases())))


# =========================================================================== GRU
GRU_OUT = os.path.join(FIXTURES, "gru")
GRU_H = 16
GRU_VOCAB = 50
GRU_SEQ = 5

# Every (b, d) site vene exposes per GRU cell and timestep, in evaluation order.
GRU_SITES = (
    "cell_input", "x2h_output", "h2h_output",
    "reset_x2h_output", "update_x2h_output", "new_x2h_output",
    "reset_h2h_output", "update_h2h_output", "new_h2h_output",
    "reset_gate_input", "reset_gate_output", "update_gate_input", "update_gate_output",
    "new_gate_input", "new_gate_output", "cell_output",
)


def build_gru():
    torch.manual_seed(0)
    config = GRUConfig(
        include_emb=True,
        vocab_size=GRU_VOCAB,
        max_position_embeddings=8,
        n_layer=2,
        h_dim=GRU_H,
        n_labels=3,
        include_bias=True,
        pdrop=0.0,
    )
    return init_weights(GRUForClassification(config), seed=0)


def load_gru(path):
    model = GRUForClassification.from_pretrained(path, config=GRUConfig.from_pretrained(path))
    model.eval()
    return model


def gru_manual(model, input_ids, site=None):
    """GRUForClassification.forward as an explicit step loop.

    site(layer, t, name, value) -> value is called for every GRU_SITES entry (values are (b, d) or
    (b, 3d)); what it returns is used from then on (value semantics: no aliasing between sites).
    """
    gru = model.gru
    emb = gru.wte(input_ids)  # no position_ids -> wpe unused
    b, s = input_ids.shape
    hidden = [torch.zeros(b, gru.h_dim) for _ in range(gru.n_layer)]
    tops = []
    fn = site if site is not None else (lambda layer, t, name, v: v)
    for t in range(s):
        for layer in range(gru.n_layer):
            cell = gru.cells[layer]

            def at(name, v):
                return fn(layer, t, name, v)

            x = at("cell_input", emb[:, t, :] if layer == 0 else hidden[layer - 1])
            h = hidden[layer]
            x_t = at("x2h_output", cell.x2h(x))
            h_t = at("h2h_output", cell.h2h(h))
            x_reset, x_upd, x_new = x_t.chunk(3, 1)
            h_reset, h_upd, h_new = h_t.chunk(3, 1)
            x_reset, x_upd, x_new = (at(f"{k}_x2h_output", v) for k, v in
                                     zip(("reset", "update", "new"), (x_reset, x_upd, x_new)))
            h_reset, h_upd, h_new = (at(f"{k}_h2h_output", v) for k, v in
                                     zip(("reset", "update", "new"), (h_reset, h_upd, h_new)))
            reset_gate = at("reset_gate_output", cell.reset_act(at("reset_gate_input", x_reset + h_reset)))
            update_gate = at("update_gate_output", cell.update_act(at("update_gate_input", x_upd + h_upd)))
            new_gate = at("new_gate_output", cell.new_act(at("new_gate_input", x_new + (reset_gate * h_new))))
            hy = update_gate * h + (1 - update_gate) * new_gate
            hidden[layer] = at("cell_output", hy)
        tops.append(hidden[-1])
    all_hidden = torch.stack(tops, dim=1)
    pooled = all_hidden[torch.arange(b), torch.full((b,), s - 1, dtype=torch.long)]
    return model.score(pooled)


def gru_vene_reference(model, vcfg, inputs, pyvene_every_step=False):
    """vene's timestep semantics: edit a site only at the listed base steps (parallel mode only).

    pyvene_every_step=True emulates pyvene 0.1.8 instead: at every other step the intervention still
    runs, with an all-zero source (so vanilla and zero both write zeros into the selected dims).
    """
    reps = vcfg["representations"]
    assert vcfg["mode"] == "parallel" and all(r["unit"] == "t" for r in reps)
    locs = inputs.get("unit_locations", {})
    if "sources->base" in locs:
        src_locs, base_locs = locs["sources->base"]
    else:
        src_locs, base_locs = None, locs["base"]
    subspaces = inputs.get("subspaces")
    sources = [to_tensors(s)["input_ids"] for s in inputs.get("sources", [])]
    src_of = list(range(len(reps)))  # one group per intervention (no group keys in these cases)

    def cols(i, b):
        r = reps[i]
        if subspaces is None or subspaces[i] is None:
            return slice(None)
        part = r.get("subspace_partition")
        idx = []
        for sid in subspaces[i][b]:
            idx.extend(range(*part[sid]) if part else [sid])
        return idx

    # 1. record each intervention's site in its (unmodified) source run
    recorded = [dict() for _ in reps]
    for i, r in enumerate(reps):
        if r["intervention"]["type"] != "vanilla":
            continue

        def rec(layer, t, name, v, i=i, r=r):
            if layer == r["layer"] and name == r["component"]:
                recorded[i][t] = v.clone()
            return v
        with torch.no_grad():
            gru_manual(model, sources[src_of[i]], rec)

    # 2. run the base, editing the listed steps only
    def edit(layer, t, name, v):
        for i, r in enumerate(reps):
            if layer != r["layer"] or name != r["component"]:
                continue
            kind = r["intervention"]["type"]
            if kind not in ("zero", "vanilla"):
                raise NotImplementedError(kind)
            for b, steps in enumerate(base_locs[i]):
                c = cols(i, b)
                if pyvene_every_step and t not in steps:
                    v = v.clone()
                    v[b, c] = 0.0
                for k, step in enumerate(steps):
                    if step != t:
                        continue
                    v = v.clone()
                    if kind == "zero":
                        v[b, c] = 0.0
                    else:
                        v[b, c] = recorded[i][src_locs[i][b][k]][b, c]
        return v
    with torch.no_grad():
        return gru_manual(model, to_tensors(inputs["base"])["input_ids"], edit)


def gru_cases():
    rng = np.random.RandomState(77)

    def ids():
        return rng.randint(0, GRU_VOCAB, size=(BATCH, GRU_SEQ)).tolist()

    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"input_ids": ids()}}, False

    yield "zero_step", {
        "mode": "parallel",
        "representations": [rep(0, "cell_output", "zero", unit="t")],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[2], [2]]]},
    }, True

    yield "cross_time_swap", {
        "mode": "parallel",
        "representations": [rep(1, "cell_output", "vanilla", unit="t")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[1], [1]]], [[[3], [3]]]]},
    }, True

    yield "gate_swap", {
        "mode": "parallel",
        "representations": [rep(0, "update_gate_output", "vanilla", unit="t",
                                subspace_partition=[[0, 8], [8, GRU_H]])],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[2], [2]]], [[[2], [2]]]]},
        "subspaces": [[[1], [1]]],
    }, True


def gru_self_checks(model):
    """The manual loop reproduces the model; site shapes; a single-step edit changes only later steps."""
    ids = torch.tensor(np.random.RandomState(3).randint(0, GRU_VOCAB, size=(BATCH, GRU_SEQ)))
    with torch.no_grad():
        ref = logits_of(model(input_ids=ids))
        assert torch.equal(gru_manual(model, ids), ref), "manual GRU loop differs from the model"
        shapes = {}
        gru_manual(model, ids, lambda layer, t, name, v: shapes.setdefault(name, tuple(v.shape)) and v)
    assert list(shapes) == list(GRU_SITES)
    return shapes


def example_slice(inputs, b):
    """inputs.json restricted to example b (batch size 1)."""
    out = {"base": {k: [v[b]] for k, v in inputs["base"].items()}}
    if "sources" in inputs:
        out["sources"] = [{k: [v[b]] for k, v in s.items()} for s in inputs["sources"]]
    if "unit_locations" in inputs:
        out["unit_locations"] = {
            key: [None if per is None else [[loc[b]] for loc in per] for per in val] if key == "sources->base"
            else [[loc[b]] for loc in val]
            for key, val in inputs["unit_locations"].items()}
    if "subspaces" in inputs:
        out["subspaces"] = [[s[b]] for s in inputs["subspaces"]]
    return out


def gru_pyvene_demo(model, vcfg, inputs, vene_logits):
    """pyvene 0.1.8's own result for the same setup (documents its every-step behaviour)."""
    lines = []
    try:
        run_pyvene(intervenable_for(model, vcfg), inputs)
        lines.append("batch 2 ran")
    except Exception as e:  # noqa: BLE001
        msg = str(e).split("\n")[0]
        lines.append(f"with batch 2 pyvene raises `{type(e).__name__}: {msg}`")
    # batch size 1 works: run each example alone and stack
    logits = torch.cat([run_pyvene(intervenable_for(model, vcfg), example_slice(inputs, b))[0]
                        for b in range(BATCH)], dim=0)
    emulated = gru_vene_reference(model, vcfg, inputs, pyvene_every_step=True)
    assert torch.allclose(logits, emulated, atol=1e-6, rtol=0), "pyvene GRU behaviour not understood"
    plain = plain_logits(model, inputs)
    lines.append(
        "run one example at a time, max|pyvene - vene| = %.6g (max|pyvene - plain| = %.6g, "
        "max|vene - plain| = %.6g); pyvene matches the zeros-at-every-other-step emulation to %.2g"
        % ((logits - vene_logits).abs().max().item(), (logits - plain).abs().max().item(),
           (vene_logits - plain).abs().max().item(), (logits - emulated).abs().max().item()))
    return "; ".join(lines)


def gen_gru():
    model_dir, cases_dir = os.path.join(GRU_OUT, "model"), os.path.join(GRU_OUT, "cases")
    reset_dir(model_dir, cases_dir)
    os.makedirs(cases_dir)
    build_gru().save_pretrained(model_dir, safe_serialization=True)
    model = load_gru(model_dir)
    print("\nGRU weights:", safetensors_keys(os.path.join(model_dir, "model.safetensors")))
    print("GRU per-step site shapes:", gru_self_checks(model))

    report, demo = [], []
    for name, vcfg, inputs, changes in gru_cases():
        plain = plain_logits(model, inputs)
        if not vcfg["representations"]:
            ivm = intervenable_for(model, vcfg)
            logits, _ = run_pyvene(ivm, inputs)
            assert torch.equal(logits, plain), "pyvene's plain GRU output differs from the model's"
            assert torch.equal(gru_manual(model, to_tensors(inputs["base"])["input_ids"]), plain)
        else:
            logits = gru_vene_reference(model, vcfg, inputs)
            demo.append((name, gru_pyvene_demo(model, vcfg, inputs, logits)))
        diff = (logits - plain).abs().max().item()
        assert (diff > 1e-3) if changes else (diff == 0.0), (name, diff)
        write_case(cases_dir, name, vcfg, inputs, logits, [])
        report.append((name, diff, tuple(logits.shape), []))
    print_report("gru (vene timestep semantics, hand-computed)", report)
    print("pyvene 0.1.8 on the same setups:")
    for name, line in demo:
        print(f"  {name}: {line}")
    update_readme_demo(os.path.join(GRU_OUT, "README.md"), demo)


DEMO_BEGIN = "<!-- pyvene-demo:begin (written by scripts/gen_fixtures_pyvene_models.py) -->"
DEMO_END = "<!-- pyvene-demo:end -->"


def update_readme_demo(path, demo):
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    if DEMO_BEGIN not in text:
        return
    body = "\n".join(f"- `{name}`: {line}" for name, line in demo)
    head, rest = text.split(DEMO_BEGIN, 1)
    _, tail = rest.split(DEMO_END, 1)
    with open(path, "w") as f:
        f.write(f"{head}{DEMO_BEGIN}\n{body}\n{DEMO_END}{tail}")


# =========================================================================== Backpack GPT-2
BP_OUT = os.path.join(FIXTURES, "backpack")
BP_VOCAB = 101
BP_SEQ = 7


def build_backpack():
    torch.manual_seed(0)
    config = BackpackGPT2Config(
        vocab_size=BP_VOCAB,
        num_senses=4,
        sense_intermediate_scale=2,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = init_weights(BackpackGPT2LMHeadModel(config), seed=0, weight_std=0.2, bias_std=0.1)
    assert model.lm_head.weight.data_ptr() == model.backpack.gpt2_model.wte.weight.data_ptr()
    # word_embeddings / position_embeddings are the GPT-2 wte / wpe modules and lm_head is tied to wte:
    # declare the aliases so save_pretrained (safetensors) stores each tensor once, under gpt2_model.*
    model._dynamic_tied_weights_keys = [
        r"^lm_head\.weight$",
        r"^backpack\.word_embeddings\.weight$",
        r"^backpack\.position_embeddings\.weight$",
    ]
    return model


def load_backpack(path):
    model = BackpackGPT2LMHeadModel.from_pretrained(path, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert model.lm_head.weight.data_ptr() == model.backpack.gpt2_model.wte.weight.data_ptr()
    assert model.backpack.word_embeddings is model.backpack.gpt2_model.wte
    return model


def backpack_cases():
    rng = np.random.RandomState(4321)

    def ids():
        return rng.randint(0, BP_VOCAB, size=(BATCH, BP_SEQ)).tolist()

    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"input_ids": ids()}}, False

    # sense.pos: per intervention a pair (senses per example, positions per example)
    yield "sense_swap", {
        "mode": "parallel",
        "representations": [rep(0, "sense_network_output", "vanilla", unit="sense.pos")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [
            [[[[1], [1]], [[2], [2]]]],
            [[[[1], [1]], [[2], [2]]]],
        ]},
    }, True

    yield "sense_zero_scale", {
        "mode": "parallel",
        "representations": [rep(0, "sense_network_output", "zero", unit="sense.pos")],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[[0], [0]], [[3], [4]]]]},
    }, True

    # two senses x two positions per example: the selected sites are the cross product
    yield "sense_multi_unit", {
        "mode": "parallel",
        "representations": [rep(0, "sense_network_output", "vanilla", unit="sense.pos", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [
            [[[[0, 2], [1, 3]], [[1, 4], [0, 5]]]],
            [[[[0, 2], [1, 3]], [[2, 6], [3, 1]]]],
        ]},
    }, True

    yield "sense_collect", {
        "mode": "parallel",
        "representations": [rep(0, "sense_network_output", "collect", unit="sense.pos", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[[0, 3], [2, 1]], [[1, 5], [4, 6]]]]},
    }, False


def backpack_self_checks(model):
    """Shapes at pyvene's only Backpack site, and a from-scratch forward equal to the model's."""
    ids = torch.tensor(np.random.RandomState(9).randint(0, BP_VOCAB, size=(BATCH, BP_SEQ)))
    seen = {}
    def hook(module, args, output):
        seen["out"] = output  # returns None: output unchanged
    hk = model.backpack.sense_network.register_forward_hook(hook)
    with torch.no_grad():
        out = model(ids)
    hk.remove()
    bp = model.backpack
    with torch.no_grad():
        senses = bp.sense_network(bp.word_embeddings(ids))
        ctx = bp.gpt2_model(ids).last_hidden_state
        w = bp.sense_weight_net(ctx)
        logits = model.lm_head(torch.sum(w @ senses, dim=1))
    assert torch.equal(logits, out.logits)
    return {"sense_network_output": tuple(seen["out"].shape),
            "contextualization": tuple(out.contextualization.shape),
            "logits": tuple(out.logits.shape)}


def gen_backpack():
    model_dir, cases_dir = os.path.join(BP_OUT, "model"), os.path.join(BP_OUT, "cases")
    reset_dir(model_dir, cases_dir)
    os.makedirs(cases_dir)
    built = build_backpack()
    built.save_pretrained(model_dir, safe_serialization=True)
    model = load_backpack(model_dir)
    ids = torch.tensor(np.random.RandomState(1).randint(0, BP_VOCAB, size=(BATCH, BP_SEQ)))
    with torch.no_grad():
        assert torch.equal(built(ids).logits, model(ids).logits), "reloaded Backpack differs"
    print("\nBackpack weights:", safetensors_keys(os.path.join(model_dir, "model.safetensors")))
    print("Backpack shapes:", backpack_self_checks(model))
    print_report("backpack", run_pyvene_cases(model, cases_dir, list(backpack_cases())))


# --------------------------------------------------------------------------- main
def main():
    check_versions()
    gen_mlp()
    gen_gru()
    gen_backpack()


if __name__ == "__main__":
    sys.exit(main())
