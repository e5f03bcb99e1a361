#!/usr/bin/env python3
"""Generates the Llama-family reference fixtures under tests/fixtures/llama/<family>.

Run: scripts/pyref-env.sh && .deps/pyref/bin/python scripts/gen_fixtures_llama.py

One seeded random checkpoint per family, saved by transformers 4.57.1 in Hugging Face layout, each built to use
what sets its family apart (see FAMILIES): grouped- or multi-query attention, head_dim != hidden / heads,
biases, q/k norms, Llama 3 rope scaling, sliding windows shorter than the inputs, Gemma 2 soft-capping,
Gemma 3's local/global rope, tied and untied heads.

  tests/fixtures/llama/<family>/model/            config.json + model.safetensors
  tests/fixtures/llama/<family>/cases/<name>/     config.json, inputs.json, expected.safetensors
                                                  (or pyvene_saved/ for the low-rank DAS import)

Expected outputs come from pyvene 0.1.8, except three cases whose reference is a torch forward hook:
`post_norm_zero` (Gemma 2/3's post-attention norm output, a site pyvene has no name for), `head_value_zero` and
`query_vanilla`: pyvene acts on only the first hidden_size / num_attention_heads features of a key/value head and
the first hidden_size of q_proj's output (the widths it declares), which is wrong wherever head_dim differs from
hidden_size / num_attention_heads; the script prints by how much pyvene is off. pyvene has no card for Qwen 3 or
Gemma 3; their module names are Llama's and Gemma 2's, so those mappings are registered for them.
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
    write_case,
    write_expected,
    write_json,
)
from gen_fixtures_das import perturb_rotation  # noqa: E402

import pyvene.models.intervenable_modelcard as cards  # noqa: E402
import transformers  # noqa: E402
from pyvene import IntervenableConfig, IntervenableModel, LowRankRotatedSpaceIntervention, RepresentationConfig  # noqa: E402
from pyvene.models.gemma2.modelings_intervenable_gemma2 import (  # noqa: E402
    gemma2_lm_type_to_dimension_mapping,
    gemma2_lm_type_to_module_mapping,
)
from pyvene.models.llama.modelings_intervenable_llama import (  # noqa: E402
    llama_lm_type_to_dimension_mapping,
    llama_lm_type_to_module_mapping,
)

OUT = os.path.join(FIXTURES, "llama")
VOCAB = 101
HIDDEN = 32
BATCH = 2
SEQ = 7

cards.type_to_module_mapping[transformers.Qwen3ForCausalLM] = llama_lm_type_to_module_mapping
cards.type_to_dimension_mapping[transformers.Qwen3ForCausalLM] = llama_lm_type_to_dimension_mapping
cards.type_to_module_mapping[transformers.Gemma3ForCausalLM] = gemma2_lm_type_to_module_mapping
cards.type_to_dimension_mapping[transformers.Gemma3ForCausalLM] = gemma2_lm_type_to_dimension_mapping

COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=48, max_position_embeddings=64,
              attention_dropout=0.0, rms_norm_eps=1e-6)

# family -> (config class, model class, config kwargs)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12, attention_bias=True,
        rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=4,
        tie_word_embeddings=False)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, use_sliding_window=True,
        sliding_window=4, max_window_layers=1, tie_word_embeddings=True)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=False)),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        hidden_act="gelu_pytorch_tanh")),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, dict(
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
        query_pre_attn_scalar=12, attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, dict(
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
        query_pre_attn_scalar=16, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
}


# --------------------------------------------------------------------------- models
def build_model(family, seed):
    config_class, model_class, kwargs = FAMILIES[family]
    config = config_class(**COMMON, **kwargs, attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_class(config)
    g = torch.Generator().manual_seed(seed)
    gemma = family.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if gemma else 0.5))
            elif "norm" in name:
                # Gemma applies (1 + w): keep w near 0 there, near 1 elsewhere.
                p.copy_((0.0 if gemma else 1.0) + torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    model.eval()
    return model


def load_model(path, family):
    model_class = FAMILIES[family][1]
    model = model_class.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    # pyvene 0.1.8's Gemma card reads head_value_output's width from a misspelt "hhead_dim".
    model.config.hhead_dim = model.config.head_dim
    return model


# --------------------------------------------------------------------------- cases
def cases(family, ids, model):
    """Yields (name, vene config, inputs, reference) with reference 'pyvene' or 'hooks'."""
    kv = model.config.num_key_value_heads
    yield "plain", {"mode": "parallel", "representations": []}, {"base": {"input_ids": ids()}}, "pyvene"

    # Head-level interchange on the query heads (GQA: several share a key/value head).
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
    }, "pyvene"

    # The key/value heads: as many as num_key_value_heads, each head_dim wide. pyvene 0.1.8 zeroes only the first
    # hidden_size / num_attention_heads features of each (its declared width), so the reference is a torch hook.
    yield "head_value_zero", {
        "mode": "parallel",
        "representations": [rep(0, "head_value_output", "zero", unit="h.pos")],
    }, {
        "base": {"input_ids": ids()},
        "unit_locations": {"base": [[[[kv - 1], [0]], [[3], [5]]]]},
    }, "hooks"

    # pyvene swaps only the first hidden_size features of q_proj's output (its declared width), which is wrong
    # wherever num_attention_heads * head_dim differs: the reference is a torch hook.
    yield "query_vanilla", {
        "mode": "parallel",
        "representations": [rep(1, "query_output", "vanilla")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[1], [3]]], [[[4], [6]]]]},
    }, "hooks"

    yield "addition_mlp_activation", {
        "mode": "parallel",
        "representations": [rep(0, "mlp_activation", "addition")],
    }, {
        "base": {"input_ids": ids()},
        "sources": [{"input_ids": ids()}],
        "unit_locations": {"sources->base": [[[[2], [5]]], [[[1], [3]]]]},
    }, "pyvene"

    if family in ("gemma2", "gemma3_text"):
        yield "post_norm_zero", {
            "mode": "parallel",
            "representations": [rep(1, "attention_post_norm_output", "zero", n=2)],
        }, {
            "base": {"input_ids": ids()},
            "unit_locations": {"base": [[[1, 4], [2, 6]]]},
        }, "hooks"


def query_swap_by_hooks(model, vcfg, inputs):
    """Vanilla interchange of whole q_proj outputs at positions, by torch forward hooks."""
    (r,) = vcfg["representations"]
    ((source_positions,), (base_positions,)) = inputs["unit_locations"]["sources->base"]
    q_proj = model.model.layers[r["layer"]].self_attn.q_proj
    seen = {}
    handle = q_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("q", out.clone()))
    with torch.no_grad():
        model(**to_tensors(inputs["sources"][0]))
    handle.remove()

    def swap(module, args, out):
        out = out.clone()
        for b in range(len(base_positions)):
            out[b, base_positions[b]] = seen["q"][b, source_positions[b]]
        return out

    handle = q_proj.register_forward_hook(swap)
    try:
        with torch.no_grad():
            return model(**to_tensors(inputs["base"])).logits
    finally:
        handle.remove()


def by_hooks(model, vcfg, inputs):
    if vcfg["representations"][0]["component"] == "query_output":
        return query_swap_by_hooks(model, vcfg, inputs)
    return zero_by_hooks(model, vcfg, inputs)


def zero_by_hooks(model, vcfg, inputs):
    """Zero by a torch forward hook: whole key/value heads of v_proj's output (head_value_output, unit h.pos), or
    positions of post_attention_layernorm's output (attention_post_norm_output)."""
    (r,) = vcfg["representations"]
    (locations,) = inputs["unit_locations"]["base"]
    layer = model.model.layers[r["layer"]]
    width = model.config.head_dim

    def zero(module, args, out):
        out = out.clone()
        if r["component"] == "head_value_output":
            heads, positions = locations
            for b in range(len(heads)):
                for h in heads[b]:
                    out[b, positions[b], h * width:(h + 1) * width] = 0.0
        else:
            for b, ps in enumerate(locations):
                out[b, ps] = 0.0
        return out

    module = layer.self_attn.v_proj if r["component"] == "head_value_output" else layer.post_attention_layernorm
    handle = module.register_forward_hook(zero)
    try:
        with torch.no_grad():
            return model(**to_tensors(inputs["base"])).logits
    finally:
        handle.remove()


def write_low_rank_case(case_dir, model, ids, seed):
    """A trained-looking rank-2 rotation on block_output, saved by pyvene, with the logits after loading it back."""
    os.makedirs(case_dir)
    torch.manual_seed(seed)
    config = IntervenableConfig(representations=[RepresentationConfig(
        layer=1, component="block_output", unit="pos", max_number_of_units=1,
        intervention_type=LowRankRotatedSpaceIntervention, low_rank_dimension=2)])
    ivm = IntervenableModel(config, model)
    (_, iv), = ivm.interventions.items()
    perturb_rotation(iv, torch.Generator().manual_seed(seed))
    inputs = {"base": {"input_ids": ids()}, "sources": [{"input_ids": ids()}],
              "unit_locations": {"sources->base": [[[[4], [0]]], [[[2], [6]]]]}}
    before, _ = run_pyvene(ivm, inputs)
    saved = os.path.join(case_dir, "pyvene_saved")
    ivm.save(saved)
    torch.manual_seed(0)
    logits, _ = run_pyvene(IntervenableModel.load(saved, model), inputs)
    assert torch.equal(logits, before)
    write_json(os.path.join(case_dir, "inputs.json"), inputs)
    write_expected(case_dir, logits, [])
    return (logits - plain_logits(model, inputs)).abs().max().item()


def main():
    check_versions()
    reset_dir(OUT)
    report = []
    for index, family in enumerate(FAMILIES):
        root = os.path.join(OUT, family)
        model_dir, cases_dir = os.path.join(root, "model"), os.path.join(root, "cases")
        os.makedirs(cases_dir)
        build_model(family, seed=10 + index).save_pretrained(model_dir, safe_serialization=True)
        model = load_model(model_dir, family)
        rng = np.random.RandomState(500 + index)

        def ids():
            return rng.randint(0, VOCAB, size=(BATCH, SEQ)).tolist()

        for name, vcfg, inputs, reference in cases(family, ids, model):
            if reference == "pyvene":
                logits, collected = run_pyvene(intervenable_for(model, vcfg), inputs)
            else:
                logits, collected = by_hooks(model, vcfg, inputs), []
                if name != "post_norm_zero":
                    pyvene_logits, _ = run_pyvene(intervenable_for(model, vcfg), inputs)
                    gap = (pyvene_logits - logits).abs().max().item()
                    print(f"{family}: pyvene's {name} is off by {gap:.4g} (head_dim {model.config.head_dim}, "
                          f"{model.config.num_attention_heads} heads, hidden {model.config.hidden_size})")
            diff = (logits - plain_logits(model, inputs)).abs().max().item()
            assert (diff == 0.0) == (name == "plain"), f"{family}/{name}: max |intervened - plain| = {diff}"
            write_case(cases_dir, name, vcfg, inputs, logits, collected)
            report.append((family, name, reference, diff))
        diff = write_low_rank_case(os.path.join(cases_dir, "low_rank_das"), model, ids, seed=77 + index)
        assert diff > 1e-3, f"{family}: the low-rank rotation changed nothing ({diff})"
        report.append((family, "low_rank_das", "pyvene", diff))

    print(f"{'family':12s} {'case':26s} {'reference':9s} max|intervened - plain|")
    for family, name, reference, diff in report:
        print(f"{family:12s} {name:26s} {reference:9s} {diff:12.6g}")


if __name__ == "__main__":
    sys.exit(main())
