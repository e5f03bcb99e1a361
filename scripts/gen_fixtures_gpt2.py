#!/usr/bin/env python3
"""Generates the GPT-2 reference fixtures under tests/fixtures/gpt2 from pyvene 0.1.8.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_gpt2.py

Output (deterministic, no network):
  tests/fixtures/gpt2/model/                  seeded random GPT-2 (config.json + model.safetensors)
  tests/fixtures/gpt2/cases/<name>/config.json       vene intervention config
  tests/fixtures/gpt2/cases/<name>/inputs.json       base / sources / unit_locations / subspaces
  tests/fixtures/gpt2/cases/<name>/expected.safetensors
      output       intervened logits, f32 (batch, seq, vocab)
      collected.i  i-th collected activation (config order) as pyvene returns it
  tests/fixtures/gpt2/cases/pyvene_saved/pyvene_saved/   IntervenableModel.save() output
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
    write_expected,
    write_json,
)

from pyvene import IntervenableModel  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

OUT = os.path.join(FIXTURES, "gpt2")
MODEL_DIR = os.path.join(OUT, "model")
CASES_DIR = os.path.join(OUT, "cases")

VOCAB = 101
N_EMBD = 32
BATCH = 2
SEQ = 7


# --------------------------------------------------------------------------- model
def build_model():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=3,
        n_embd=N_EMBD,
        n_head=4,
        n_positions=64,
        vocab_size=VOCAB,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head.weight is listed once (as wte)
            leaf = name.split(".")[-1]
            if name.endswith("wte.weight") or name.endswith("wpe.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif ".ln_" in name:
                if leaf == "weight":
                    p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif leaf == "weight":
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            else:
                raise RuntimeError(f"unexpected parameter {name}")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    model.eval()
    return model


def load_model():
    model = GPT2LMHeadModel.from_pretrained(MODEL_DIR, attn_implementation="eager", torch_dtype=torch.float32)
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model


# --------------------------------------------------------------------------- inputs
RNG = np.random.RandomState(1234)


def ids(batch=BATCH, seq=SEQ):
    return RNG.randint(0, VOCAB, size=(batch, seq)).tolist()


def const_vec(seed, n=N_EMBD):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float32)




# --------------------------------------------------------------------------- pyvene




# --------------------------------------------------------------------------- writing



# --------------------------------------------------------------------------- cases
def cases():
    """Yields (name, vene_config, inputs, changes_output)."""
    b = BATCH

    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"input_ids": ids()}}, False

    yield "collect", {
        "mode": "parallel",
        "representations": [rep(1, "block_output", "collect", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[0, 3], [1, 4]]]},
    }, False

    yield "vanilla_pair", {
        "mode": "parallel",
        "representations": [rep(1, "block_output", "vanilla")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": (1, 2)},
    }, True

    yield "batch_multi_unit", {
        "mode": "parallel",
        "representations": [rep(0, "mlp_output", "vanilla", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": ([[[0, 1], [2, 3]]], [[[1, 2], [3, 4]]])},
    }, True

    # h.pos: per intervention a pair (heads per example, positions per example)
    yield "head_pos", {
        "mode": "parallel",
        "representations": [rep(1, "head_attention_value_output", "vanilla", unit="h.pos", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": (
            [[[[0, 2], [1, 3]], [[1, 2], [3, 4]]]],
            [[[[0, 2], [1, 3]], [[2, 5], [4, 6]]]],
        )},
    }, True

    # Spec asked for {"sources->base": [[[2],[3]], [[2],[3]]]}; pyvene reads that as
    # (sources=[[2],[3]], base=[[2],[3]]), i.e. intervention 0 gets the 1-D list [2] and
    # torch.gather fails. The per-example meaning is expressed with one more nesting level.
    yield "addition_mlp_activation", {
        "mode": "parallel",
        "representations": [rep(0, "mlp_activation", "addition")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": ([[[2], [3]]], [[[2], [3]]])},
    }, True

    yield "qkv_subspace", {
        "mode": "parallel",
        "representations": [
            rep(1, "value_output", "vanilla", subspace_partition=[[0, 8], [8, 32]]),
            rep(2, "query_output", "vanilla", subspace_partition=[[0, 8], [8, 32]]),
        ],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}, {"input_ids": ids()}],
        "unit_locations": {"sources->base": (
            [[[1], [2]], [[3], [0]]],
            [[[2], [4]], [[5], [1]]],
        )},
        "subspaces": [[[1]] * b, [[0]] * b],
    }, True

    yield "parallel_two_sources", {
        "mode": "parallel",
        "representations": [
            rep(0, "block_output", "vanilla", group_key=0),
            rep(2, "block_output", "vanilla", group_key=1),
        ],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}, {"input_ids": ids()}],
        "unit_locations": {"sources->base": (
            [[[1], [2]], [[3], [4]]],
            [[[2], [3]], [[4], [1]]],
        )},
    }, True

    # serial: each key holds (source locations, target locations) per intervention *within
    # the group* (indexed by position in the group, not by global intervention index).
    yield "serial", {
        "mode": "serial",
        "representations": [
            rep(0, "block_output", "vanilla", group_key=0),
            rep(2, "block_output", "vanilla", group_key=1),
        ],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}, {"input_ids": ids()}],
        "unit_locations": {
            "source_0->source_1": ([[[1], [2]]], [[[3], [3]]]),
            "source_1->base": ([[[3], [4]]], [[[4], [2]]]),
        },
    }, True

    # No group keys -> two groups -> two sources (the zero intervention ignores its source,
    # but pyvene still runs the getter on it, so the source locations must be valid).
    yield "zero_and_subtraction", {
        "mode": "parallel",
        "representations": [
            rep(0, "attention_output", "zero"),
            rep(1, "mlp_output", "subtraction"),
        ],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}, {"input_ids": ids()}],
        "unit_locations": {"sources->base": (
            [[[1], [3]], [[1], [2]]],
            [[[1], [3]], [[2], [4]]],
        )},
    }, True

    yield "constant_source", {
        "mode": "parallel",
        "representations": [
            rep(1, "block_output", "addition",
                source_representation=[float(x) for x in const_vec(11)]),
        ],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": 3},
    }, True

    yield "collect_attention_weight", {
        "mode": "parallel",
        "representations": [rep(0, "attention_weight", "collect", unit="h", n=2)],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[0, 2], [1, 3]]]},
    }, False


def saved_case():
    vcfg = {
        "mode": "parallel",
        "representations": [
            rep(1, "block_output", "vanilla"),
            rep(2, "mlp_output", "addition", source_representation=[float(x) for x in const_vec(12)]),
        ],
    }
    inputs = {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}, {"input_ids": ids()}],
        "unit_locations": {"sources->base": (
            [[[1], [2]], [[0], [0]]],
            [[[2], [3]], [[4], [1]]],
        )},
    }
    return vcfg, inputs


# --------------------------------------------------------------------------- main
def main():
    check_versions()
    reset_dir(MODEL_DIR, CASES_DIR)
    os.makedirs(CASES_DIR)

    build_model().save_pretrained(MODEL_DIR, safe_serialization=True)
    model = load_model()

    report = []
    for name, vcfg, inputs, changes in cases():
        case_dir = os.path.join(CASES_DIR, name)
        os.makedirs(case_dir)
        ivm = intervenable_for(model, vcfg)  # fresh per case: pyvene's use_fast flag is sticky
        logits, collected = run_pyvene(ivm, inputs)
        plain = plain_logits(model, inputs)
        diff = (logits - plain).abs().max().item()
        if changes:
            assert diff > 1e-3, f"{name}: intervention did not change the output ({diff})"
        else:
            assert diff == 0.0, f"{name}: output changed ({diff})"
        n_collect = sum(r["intervention"]["type"] == "collect" for r in vcfg["representations"])
        assert len(collected) == n_collect, (name, len(collected))
        write_json(os.path.join(case_dir, "config.json"), vcfg)
        write_json(os.path.join(case_dir, "inputs.json"), inputs)
        write_expected(case_dir, logits, collected)
        report.append((name, diff, [tuple(c.shape) for c in collected]))

    # pyvene_saved: build, save, load, run the loaded model
    name = "pyvene_saved"
    vcfg, inputs = saved_case()
    case_dir = os.path.join(CASES_DIR, name)
    saved_dir = os.path.join(case_dir, "pyvene_saved")
    os.makedirs(case_dir)
    ivm = intervenable_for(model, vcfg)
    logits_before, _ = run_pyvene(ivm, inputs)
    ivm.save(saved_dir)
    loaded = IntervenableModel.load(saved_dir, model)
    logits, collected = run_pyvene(loaded, inputs)
    assert torch.equal(logits, logits_before), "loaded model differs from the saved one"
    plain = plain_logits(model, inputs)
    diff = (logits - plain).abs().max().item()
    assert diff > 1e-3
    write_json(os.path.join(case_dir, "inputs.json"), inputs)
    write_expected(case_dir, logits, collected)
    report.append((name, diff, []))

    print(f"{'case':28s} max|intervened - plain|   collected shapes")
    for name, diff, shapes in report:
        print(f"{name:28s} {diff:12.6g}           {shapes}")


if __name__ == "__main__":
    sys.exit(main())
