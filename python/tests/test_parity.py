"""Every reference case of the Rust suite (tests/fixtures/**/expected.safetensors: pyvene 0.1.8 and transformers
outputs on seeded random models of every adapter family) run through the Python API, with the same tolerance."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vene
from conftest import FIXTURES, load_model

CASES = sorted(path.parent for path in FIXTURES.rglob("expected.safetensors"))
TOLERANCE = 1e-4


def model_dir(case: Path) -> Path:
    """The model a case runs on: DAS cases use their family's model; `cases_sequential` the sequential one."""
    parts = case.relative_to(FIXTURES).parts
    if parts[0] == "das":
        return FIXTURES / parts[1] / "model"
    return case.parent.parent / ("model_sequential" if case.parent.name == "cases_sequential" else "model")


def example(spec: dict) -> dict:
    """inputs.json's example as tensors, the way a Python user holds them."""
    found = {}
    if "input_ids" in spec:
        found["input_ids"] = torch.tensor(spec["input_ids"], dtype=torch.int64)
    if "attention_mask" in spec:
        found["attention_mask"] = torch.tensor(spec["attention_mask"], dtype=torch.int64)
    for key in ("inputs", "inputs_embeds"):
        if key in spec:
            found["inputs_embeds"] = torch.tensor(spec[key], dtype=torch.float32)
    return found


def test_every_reference_case_is_found():
    assert len(CASES) >= 100, f"only {len(CASES)} reference cases under {FIXTURES}"


@pytest.mark.parametrize("case", CASES, ids=[str(c.relative_to(FIXTURES)) for c in CASES])
def test_reference_case(case: Path):
    model = load_model(str(model_dir(case)))
    saved = case / "pyvene_saved"
    if saved.is_dir():
        intervenable = vene.IntervenableModel.load(saved, model)
    else:
        intervenable = vene.IntervenableModel(json.loads((case / "config.json").read_text()), model)
    inputs = json.loads((case / "inputs.json").read_text())
    sources = [example(s) if s is not None else None for s in inputs.get("sources") or []]
    with torch.no_grad():
        result = intervenable(
            example(inputs["base"]),
            sources,
            unit_locations=inputs.get("unit_locations"),
            subspaces=inputs.get("subspaces"),
            return_dict=True,
        )
    expected = load_file(case / "expected.safetensors")
    output = result.intervened_outputs.logits
    assert output.shape == expected["output"].shape
    assert (output - expected["output"]).abs().max().item() <= TOLERANCE
    collected = result.collected_activations or []
    expected_collected = sorted(k for k in expected if k.startswith("collected."))
    assert len(collected) == len(expected_collected)
    for key in expected_collected:
        got = collected[int(key.split(".")[1])]
        assert got.shape == expected[key].shape, key
        assert (got - expected[key]).abs().max().item() <= TOLERANCE, key


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_small_ggufs_give_transformers_logits_and_tokens(arch: str):
    reference = json.loads((FIXTURES / "gguf" / f"{arch}.json").read_text())
    model = load_model(str(FIXTURES / "gguf" / f"{arch}.gguf"))
    with torch.no_grad():
        logits = model(torch.tensor(reference["ids"])).logits
    assert (logits - torch.tensor(reference["logits"])).abs().max().item() <= TOLERANCE
    for case in reference["tokenization"]:
        assert model.encode(case["text"]) == case["ids"], case["text"]


def test_pytorch_model_bin_loads_as_the_safetensors_do(gpt2):
    from_bin = load_model(str(FIXTURES / "checkpoints" / "gpt2_bin"))
    ids = torch.tensor([[1, 50], [7, 99]])
    with torch.no_grad():
        assert torch.equal(from_bin(ids).logits, gpt2(ids).logits)
