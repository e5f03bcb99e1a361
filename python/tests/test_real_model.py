"""The real Gemma 3 270M (installed by the set-up) through the Python API: the numbers transformers 5 gives on the
same GGUF (tests/fixtures/gemma3_270m/reference.json), and an interchange whose effect is measured."""

import json

import torch

import vene
from conftest import FIXTURES

REFERENCE = json.loads((FIXTURES / "gemma3_270m" / "reference.json").read_text())


def test_tokenization_matches_transformers(gemma3):
    for case in REFERENCE["tokenization"]:
        assert gemma3.encode(case["text"]) == case["ids"], case["text"]
        assert gemma3.decode(case["ids"][1:]) == case["decoded"], case["text"]


def test_last_position_logits_match_transformers(gemma3):
    with torch.no_grad():
        for case in REFERENCE["prompts"]:
            inputs = gemma3.tokenize(case["prompt"])
            assert inputs["input_ids"][0].tolist() == case["ids"]
            logits = gemma3(inputs).logits[0, -1]
            top = logits[torch.tensor(case["top_ids"])]
            assert (top - torch.tensor(case["top_logits"])).abs().max() <= 1e-3, case["prompt"]
            assert abs(logits.logsumexp(-1).item() - case["logsumexp"]) <= 1e-3
            assert abs(logits.softmax(-1)[case["target_id"]].item() - case["p_target"]) <= 1e-3


def test_greedy_continuations_match_transformers(gemma3):
    plain = vene.IntervenableModel({"representations": []}, gemma3)
    for case in REFERENCE["greedy"]:
        _, generated = plain.generate(torch.tensor([case["ids"]]), max_new_tokens=len(case["new_ids"]))
        assert generated[0].tolist() == case["ids"] + case["new_ids"], case["prompt"]


def test_the_city_moves_with_the_late_residual_stream(gemma3):
    """The Colosseum's last-token state swapped into the Eiffel Tower prompt: from an early layer Paris stays the
    answer; from a late layer the answer becomes Rome."""
    base = gemma3.tokenize("The Eiffel Tower is located in the city of")
    source = gemma3.tokenize("The Colosseum is located in the city of")
    paris, rome = gemma3.encode(" Paris", False)[0], gemma3.encode(" Rome", False)[0]
    last_base, last_source = base["input_ids"].shape[1] - 1, source["input_ids"].shape[1] - 1

    def answer(layer):
        config = [{"layer": layer, "component": "block_output"}]
        with torch.no_grad():
            _, out = vene.IntervenableModel(config, gemma3)(base, [source], unit_locations={
                "sources->base": (last_source, last_base)})
        p = out.logits[0, -1].softmax(-1)
        return p[paris].item(), p[rome].item()

    with torch.no_grad():
        p = gemma3(base).logits[0, -1].softmax(-1)
    assert p[paris] > 10 * p[rome]
    early_paris, early_rome = answer(2)
    late_paris, late_rome = answer(14)
    assert early_paris > 10 * early_rome
    assert late_rome > 10 * late_paris
