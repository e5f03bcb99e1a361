#!/usr/bin/env python3
"""Generates the GPT-NeoX reference fixtures under tests/fixtures/gpt_neox.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_gpt_neox.py

Same layout and formats as scripts/gen_fixtures_gpt2.py (whose helpers this imports):
  tests/fixtures/gpt_neox/model/              seeded random GPTNeoXForCausalLM: parallel residual,
                                              rotary_pct 0.25, 2 layers
  tests/fixtures/gpt_neox/model_sequential/   sequential residual, rotary_pct 1.0, 3 layers
  tests/fixtures/gpt_neox/cases/<name>/             config.json, inputs.json, expected.safetensors
  tests/fixtures/gpt_neox/cases_sequential/plain/   plain logits of model_sequential

Expected outputs come from pyvene 0.1.8, except the q/k/v cases: pyvene has no q/k/v sites for
GPT-NeoX, so those come from plain torch forward hooks on `attention.query_key_value` (vene's definition:
the fused output viewed as (b, s, heads, 3*head_dim), q/k/v = thirds of the last axis, before rotary),
cross-checked against an independent patch of the q/k/v the attention kernel receives.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyvene_fixtures import (  # noqa: E402  (offline mode, deterministic algorithms, 1 thread)
    FIXTURES,
    check_versions,
    intervenable_for,
    plain_logits,
    rep,
    reset_dir,
    run_pyvene,
    to_tensors,
    write_expected,
    write_json,
)

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402
from transformers.models.gpt_neox import modeling_gpt_neox  # noqa: E402

OUT = os.path.join(FIXTURES, "gpt_neox")
MODEL_DIR = os.path.join(OUT, "model")
SEQ_MODEL_DIR = os.path.join(OUT, "model_sequential")
CASES_DIR = os.path.join(OUT, "cases")
SEQ_CASES_DIR = os.path.join(OUT, "cases_sequential")

VOCAB = 101
HIDDEN = 32
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
BATCH = 2
SEQ = 7


# --------------------------------------------------------------------------- model
def neox_config(parallel):
    return GPTNeoXConfig(
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_hidden_layers=2 if parallel else 3,
        intermediate_size=64,
        rotary_pct=0.25 if parallel else 1.0,
        max_position_embeddings=64,
        vocab_size=VOCAB,
        use_parallel_residual=parallel,
        attn_implementation="eager",
        hidden_act="gelu",
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def build_model(parallel, seed):
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(neox_config(parallel))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if name.endswith("embed_in.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "layernorm" in name or "layer_norm" in name:
                if leaf == "weight":
                    p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif leaf == "weight":  # attention/mlp linears and embed_out
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            else:
                raise RuntimeError(f"unexpected parameter {name}")
    assert model.embed_out.weight.data_ptr() != model.gpt_neox.embed_in.weight.data_ptr()
    model.eval()
    return model


def load_model(path):
    model = GPTNeoXForCausalLM.from_pretrained(path, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager"
    return model


# --------------------------------------------------------------------------- inputs
RNG = np.random.RandomState(4321)


def ids(batch=BATCH, seq=SEQ):
    return RNG.randint(0, VOCAB, size=(batch, seq)).tolist()


# --------------------------------------------------------------------------- q/k/v reference (no pyvene)
QKV = {"query": 0, "key": 1, "value": 2}


def qkv_part(component):
    """'head_key_output' -> ('key', True); 'value_output' -> ('value', False)."""
    head = component.startswith("head_")
    part = component[len("head_"):] if head else component
    assert part.endswith("_output")
    return part[: -len("_output")], head


def qkv_slots(rep_cfg, locs):
    """Yields (example, position, heads or None, part index) for every selected unit of one side."""
    part, head = qkv_part(rep_cfg["component"])
    if rep_cfg["unit"] == "h.pos":
        assert head
        heads, positions = locs
        for b in range(len(heads)):
            for h in heads[b]:
                for s in positions[b]:
                    yield b, s, [h], QKV[part]
    else:
        assert rep_cfg["unit"] == "pos" and not head
        for b in range(len(locs)):
            for s in locs[b]:
                yield b, s, None, QKV[part]


def slot_index(b, s, heads, part):
    h = slice(None) if heads is None else heads
    return (b, s, h, slice(part * HEAD_DIM, (part + 1) * HEAD_DIM))


def qkv_by_hooks(model, vcfg, inputs):
    """Reference for zero/vanilla on q/k/v sites, via forward hooks on attention.query_key_value.

    Locations are read from the full form only: {"base": [...]} (zero) or
    {"sources->base": [[src per intervention], [base per intervention]]} with one source per intervention.
    """
    reps = vcfg["representations"]
    locs = inputs["unit_locations"]
    layers = model.gpt_neox.layers

    def fused(out):
        return out.view(*out.shape[:-1], HEADS, 3 * HEAD_DIM)

    # source runs: collect the selected source units
    source_values = {}
    if "sources->base" in locs:
        src_locs, _ = locs["sources->base"]
        for i, r in enumerate(reps):
            assert r["intervention"]["type"] == "vanilla"
            store = []

            def collect(module, args, out, r=r, i=i, store=store):
                f = fused(out)
                for slot in qkv_slots(r, src_locs[i]):
                    store.append(f[slot_index(*slot)].clone())

            handle = layers[r["layer"]].attention.query_key_value.register_forward_hook(collect)
            with torch.no_grad():
                model(**to_tensors(inputs["sources"][i]))
            handle.remove()
            source_values[i] = store
        base_locs = locs["sources->base"][1]
    else:
        base_locs = locs["base"]

    handles = []
    for i, r in enumerate(reps):
        def setter(module, args, out, r=r, i=i):
            out = out.clone()
            f = fused(out)
            for k, slot in enumerate(qkv_slots(r, base_locs[i])):
                if r["intervention"]["type"] == "zero":
                    f[slot_index(*slot)] = 0.0
                else:
                    f[slot_index(*slot)] = source_values[i][k]
            return out

        handles.append(layers[r["layer"]].attention.query_key_value.register_forward_hook(setter))
    try:
        with torch.no_grad():
            return model(**to_tensors(inputs["base"])).logits
    finally:
        for h in handles:
            h.remove()


def qkv_by_kernel_patch(model, vcfg, inputs, source_stage):
    """Independent check: patch the (b, heads, s, head_dim) q/k/v handed to eager attention (after rotary).

    Zero after rotary equals zero before it. For vanilla, source_stage "pre" takes the source units
    before rotary (from the fused qkv output) and rotates them for the *base* position, which must
    reproduce the hook reference; "post" swaps the already rotated units, which must differ from it
    when source and base positions differ (so the case tells the two definitions apart).
    """
    reps = vcfg["representations"]
    locs = inputs["unit_locations"]
    layers = model.gpt_neox.layers
    orig = modeling_gpt_neox.eager_attention_forward
    source_values = {}

    def select(b, s, heads):  # index into (b, heads, s, d)
        return (b, slice(None) if heads is None else heads, s)

    if "sources->base" in locs:
        src_locs, base_locs = locs["sources->base"]
        for i, r in enumerate(reps):
            part, _ = qkv_part(r["component"])
            store = []

            def grab_post(module, query, key, value, *a, r=r, i=i, part=part, store=store, **kw):
                if module.layer_idx == r["layer"]:
                    t = {"query": query, "key": key, "value": value}[part]
                    for b, s, heads, _ in qkv_slots(r, src_locs[i]):
                        store.append(t[select(b, s, heads)].clone())  # (heads, d)
                return orig(module, query, key, value, *a, **kw)

            def grab_pre(module, args, out, r=r, i=i, store=store):
                f = out.view(*out.shape[:-1], HEADS, 3 * HEAD_DIM)
                for b, s, heads, p in qkv_slots(r, src_locs[i]):
                    store.append(f[slot_index(b, s, heads, p)].clone())  # (heads, d)

            if source_stage == "post":
                modeling_gpt_neox.eager_attention_forward = grab_post
                handle = None
            else:
                handle = layers[r["layer"]].attention.query_key_value.register_forward_hook(grab_pre)
            try:
                with torch.no_grad():
                    model(**to_tensors(inputs["sources"][i]))
            finally:
                modeling_gpt_neox.eager_attention_forward = orig
                if handle is not None:
                    handle.remove()
            source_values[i] = store
    else:
        base_locs = locs["base"]

    def rotate(v, part, pos):
        """Rotary of HF for one position: v (heads, d) -> (heads, d)."""
        if part == "value":
            return v
        x = v[None, :, None, :]  # (1, heads, 1, d)
        cos, sin = model.gpt_neox.rotary_emb(x, torch.tensor([[pos]]))
        q, _ = modeling_gpt_neox.apply_rotary_pos_emb(x, x, cos, sin)
        return q[0, :, 0, :]

    def patched(module, query, key, value, *a, **kw):
        query, key, value = query.clone(), key.clone(), value.clone()
        tensors = {"query": query, "key": key, "value": value}
        for i, r in enumerate(reps):
            if module.layer_idx != r["layer"]:
                continue
            part, _ = qkv_part(r["component"])
            t = tensors[part]
            for k, (b, s, heads, _) in enumerate(qkv_slots(r, base_locs[i])):
                if r["intervention"]["type"] == "zero":
                    t[select(b, s, heads)] = 0.0
                elif source_stage == "post":
                    t[select(b, s, heads)] = source_values[i][k]
                else:
                    t[select(b, s, heads)] = rotate(source_values[i][k], part, s)
        return orig(module, query, key, value, *a, **kw)

    modeling_gpt_neox.eager_attention_forward = patched
    try:
        with torch.no_grad():
            return model(**to_tensors(inputs["base"])).logits
    finally:
        modeling_gpt_neox.eager_attention_forward = orig


# --------------------------------------------------------------------------- cases
def cases():
    """Yields (name, vene_config, inputs, changes_output, reference) with reference 'pyvene' or 'hooks'."""
    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"input_ids": ids()}}, False, "pyvene"

    yield "vanilla_pair", {
        "mode": "parallel",
        "representations": [rep(1, "block_output", "vanilla")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [1, 2]},
    }, True, "pyvene"

    # h.pos full form: per intervention [heads per example, positions per example]
    yield "head_pos", {
        "mode": "parallel",
        "representations": [rep(1, "head_attention_value_output", "vanilla", unit="h.pos", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [
            [[[[1, 3], [0, 2]], [[2, 4], [1, 6]]]],
            [[[[0, 3], [2, 1]], [[3, 5], [0, 6]]]],
        ]},
    }, True, "pyvene"

    yield "addition_mlp_activation", {
        "mode": "parallel",
        "representations": [rep(0, "mlp_activation", "addition")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[2], [5]]], [[[1], [3]]]]},
    }, True, "pyvene"

    yield "attention_output_zero", {
        "mode": "parallel",
        "representations": [rep(0, "attention_output", "zero", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[1, 4], [2, 5]]]},
    }, True, "pyvene"

    # vene-only sites (pyvene has none for GPT-NeoX): reference from qkv forward hooks
    yield "qkv_zero", {
        "mode": "parallel",
        "representations": [
            rep(1, "head_key_output", "zero", unit="h.pos"),
            rep(0, "value_output", "zero"),
        ],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [
            [[[1], [2]], [[3], [5]]],
            [[2], [4]],
        ]},
    }, True, "hooks"

    # extra (not in the brief): a swap across positions, so "before rotary" is actually tested
    yield "qkv_vanilla_query", {
        "mode": "parallel",
        "representations": [rep(1, "query_output", "vanilla")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[1], [3]]], [[[4], [6]]]]},
    }, True, "hooks"


# --------------------------------------------------------------------------- checks of the hook sites
def check_sites(model):
    """Confirms what pyvene's GPT-NeoX components read, by collecting them and comparing with torch hooks."""
    base = {"input_ids": [[5, 17, 33, 2, 90, 41, 7], [60, 3, 8, 99, 14, 27, 51]]}
    layer = 1
    a = model.gpt_neox.layers[layer]
    expected = {}
    hooks = [
        a.register_forward_pre_hook(lambda m, args: expected.__setitem__("block_input", args[0].clone())),
        a.register_forward_hook(lambda m, args, out: expected.__setitem__("block_output", out[0].clone())),
        a.mlp.act.register_forward_hook(lambda m, args, out: expected.__setitem__("mlp_activation", out.clone())),
        a.mlp.register_forward_pre_hook(lambda m, args: expected.__setitem__("mlp_input", args[0].clone())),
        a.mlp.register_forward_hook(lambda m, args, out: expected.__setitem__("mlp_output", out.clone())),
        a.attention.register_forward_pre_hook(
            lambda m, args: expected.__setitem__("attention_input", args[0].clone())),
        a.attention.register_forward_hook(
            lambda m, args, out: expected.__setitem__("attention_output", out[0].clone())),
        a.attention.dense.register_forward_pre_hook(
            lambda m, args: expected.__setitem__("attention_value_output", args[0].clone())),
    ]
    with torch.no_grad():
        model(**to_tensors(base))
    for h in hooks:
        h.remove()
    expected["head_attention_value_output"] = expected["attention_value_output"].view(
        BATCH, SEQ, HEADS, HEAD_DIM).permute(0, 2, 1, 3)
    dims = {}
    for comp, want in expected.items():
        unit = "h.pos" if comp.startswith("head_") else "pos"
        vcfg = {"mode": "parallel", "representations": [rep(layer, comp, "collect", unit=unit, n=SEQ)]}
        all_pos = [list(range(SEQ))] * BATCH
        if unit == "h.pos":
            locs = {"base": [[[list(range(HEADS))] * BATCH, all_pos]]}
        else:
            locs = {"base": [all_pos]}
        ivm = intervenable_for(model, vcfg)
        _, collected = run_pyvene(ivm, {"base": base, "unit_locations": locs})
        got = collected[0]
        assert got.shape == want.shape and torch.equal(got, want), (comp, got.shape, want.shape)
        dims[comp] = tuple(got.shape)
    return dims


# --------------------------------------------------------------------------- main
def write_case(case_dir, vcfg, inputs, logits, collected):
    os.makedirs(case_dir)
    write_json(os.path.join(case_dir, "config.json"), vcfg)
    write_json(os.path.join(case_dir, "inputs.json"), inputs)
    write_expected(case_dir, logits, collected)


def main():
    check_versions()
    reset_dir(MODEL_DIR, SEQ_MODEL_DIR, CASES_DIR, SEQ_CASES_DIR)
    os.makedirs(CASES_DIR)
    os.makedirs(SEQ_CASES_DIR)

    build_model(parallel=True, seed=0).save_pretrained(MODEL_DIR, safe_serialization=True)
    build_model(parallel=False, seed=1).save_pretrained(SEQ_MODEL_DIR, safe_serialization=True)
    model = load_model(MODEL_DIR)
    seq_model = load_model(SEQ_MODEL_DIR)

    dims = check_sites(model)
    print("pyvene GPT-NeoX sites (layer 1, all positions), collected shapes:")
    for comp, shape in dims.items():
        print(f"  {comp:28s} {shape}")

    report = []
    for name, vcfg, inputs, changes, reference in cases():
        if reference == "pyvene":
            ivm = intervenable_for(model, vcfg)  # fresh per case: pyvene's use_fast flag is sticky
            logits, collected = run_pyvene(ivm, inputs)
        else:
            logits, collected = qkv_by_hooks(model, vcfg, inputs), []
            pre = qkv_by_kernel_patch(model, vcfg, inputs, "pre")
            gap = (pre - logits).abs().max().item()
            assert gap < 1e-5, f"{name}: kernel patch disagrees with the qkv hooks ({gap})"
            if "sources" in inputs:
                post = qkv_by_kernel_patch(model, vcfg, inputs, "post")
                rot_gap = (post - logits).abs().max().item()
                assert rot_gap > 1e-4, f"{name}: pre/post-rotary swaps indistinguishable ({rot_gap})"
                print(f"  {name}: kernel-patch check {gap:.3g}; a post-rotary swap would differ by {rot_gap:.4g}")
            else:
                print(f"  {name}: kernel-patch check {gap:.3g}")
        plain = plain_logits(model, inputs)
        diff = (logits - plain).abs().max().item()
        if changes:
            assert diff > 1e-3, f"{name}: intervention did not change the output ({diff})"
        else:
            assert diff == 0.0, f"{name}: output changed ({diff})"
        write_case(os.path.join(CASES_DIR, name), vcfg, inputs, logits, collected)
        report.append((name, reference, diff))

    # sequential-residual model: plain logits only
    vcfg = {"mode": "parallel", "representations": []}
    inputs = {"base": {"input_ids": ids()}}
    logits, _ = run_pyvene(intervenable_for(seq_model, vcfg), inputs)
    assert torch.equal(logits, plain_logits(seq_model, inputs))
    write_case(os.path.join(SEQ_CASES_DIR, "plain"), vcfg, inputs, logits, [])
    report.append(("sequential/plain", "pyvene", 0.0))

    print(f"{'case':28s} {'reference':9s} max|intervened - plain|")
    for name, reference, diff in report:
        print(f"{name:28s} {reference:9s} {diff:12.6g}")


if __name__ == "__main__":
    sys.exit(main())
