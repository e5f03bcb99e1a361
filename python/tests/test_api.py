"""pyvene's API shape: config forms, outputs, generation, saving and loading, training, constant sources."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import vene
from conftest import FIXTURES, vene_binary

BASE = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
SOURCE = torch.tensor([[60, 61, 62, 63], [70, 71, 72, 73]])


def counterfactual(intervenable, **kwargs):
    with torch.no_grad():
        return intervenable(BASE, [SOURCE], unit_locations={"sources->base": 2}, **kwargs)[1].logits


def test_every_way_of_naming_a_type_builds_the_same_config(gpt2):
    forms = [
        vene.IntervenableConfig([vene.RepresentationConfig(1, "block_output", intervention_type=vene.VanillaIntervention)]),
        vene.IntervenableConfig({"layer": 1, "component": "block_output"}),  # vanilla by default
        vene.IntervenableConfig([{"layer": 1, "component": "block_output"}], intervention_types=vene.VanillaIntervention),
        [{"layer": 1, "component": "block_output", "intervention_type": "vanilla"}],
        {"mode": "parallel", "representations": [{"layer": 1, "component": "block_output",
                                                  "intervention": {"type": "vanilla"}}]},
        [(1, "block_output", "pos", 1, None, vene.VanillaIntervention())],
    ]
    outputs = [counterfactual(vene.IntervenableModel(form, gpt2)) for form in forms]
    for output in outputs[1:]:
        assert torch.equal(output, outputs[0])
    plain = gpt2(BASE).logits
    assert (outputs[0] - plain).abs().max() > 1e-4  # the swap changed the base run


def test_the_swap_is_an_interchange(gpt2):
    """Swapping every position of the last block's output gives the source's own logits."""
    config = [{"layer": 2, "component": "block_output"}]
    with torch.no_grad():
        _, out = vene.IntervenableModel(config, gpt2)(BASE, [SOURCE])
    assert torch.allclose(out.logits, gpt2(SOURCE).logits, atol=1e-5)


def test_outputs_follow_pyvene(gpt2):
    config = [{"layer": 1, "component": "block_output"},
              {"layer": 1, "component": "mlp_output", "intervention_type": vene.CollectIntervention}]
    intervenable = vene.IntervenableModel(config, gpt2)
    with torch.no_grad():
        (original, collected), out = intervenable(BASE, [SOURCE, None], unit_locations={"sources->base": 2})
        assert original is None and collected[0].shape == (2, 1, 32)
        (original, _), _ = intervenable(BASE, [SOURCE, None], unit_locations={"sources->base": 2},
                                        output_original_output=True)
        assert torch.equal(original.logits, gpt2(BASE).logits)
        result = intervenable(BASE, [SOURCE, None], unit_locations={"sources->base": 2}, return_dict=True)
    assert torch.equal(result.intervened_outputs.logits, out.logits)
    assert torch.equal(result.collected_activations[0], collected[0])
    assert out[0] is out.logits and out["logits"] is out.logits
    assert intervenable.sorted_keys == ["layer_1_comp_block_output_unit_pos_nunit_1#0",
                                        "layer_1_comp_mlp_output_unit_pos_nunit_1#0"]


def test_constant_sources_and_steering_vectors_as_tensors(gpt2):
    vector = torch.linspace(-1, 1, 32)
    constant = vene.IntervenableModel(
        [{"layer": 1, "component": "block_output", "intervention_type": vene.AdditionIntervention,
          "source_representation": vector}], gpt2)
    steering = vene.IntervenableModel(
        [{"layer": 1, "component": "block_output",
          "intervention_type": vene.SteeringIntervention(vector=vector, coefficient=1.0)}], gpt2)
    with torch.no_grad():
        _, added = constant(BASE, unit_locations={"base": 2})
        _, steered = steering(BASE, unit_locations={"base": 2})
    assert torch.allclose(added.logits, steered.logits, atol=1e-6)
    assert (added.logits - gpt2(BASE).logits).abs().max() > 1e-3


def test_save_and_load_round_trip(gpt2, tmp_path):
    config = [{"layer": 1, "component": "block_output",
               "intervention_type": vene.LowRankRotatedSpaceIntervention, "low_rank_dimension": 3}]
    trained = vene.IntervenableModel(config, gpt2, seed=3)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    trained.save(tmp_path / "saved")
    again = vene.IntervenableModel.load(tmp_path / "saved", gpt2)
    assert torch.equal(counterfactual(again), counterfactual(trained))
    state = trained.state_dict()
    assert state.keys() == again.state_dict().keys() and state
    fresh = vene.IntervenableModel(config, gpt2, seed=4)
    assert not torch.equal(counterfactual(fresh), counterfactual(trained))
    fresh.load_state_dict(state)
    assert torch.equal(counterfactual(fresh), counterfactual(trained))


def test_pyvene_saved_directories_load(gpt2):
    saved = FIXTURES / "das" / "gpt2" / "low_rank" / "pyvene_saved"
    intervenable = vene.IntervenableModel.load(saved, gpt2)
    assert intervenable.parameters()


def greedy(model, ids, steps):
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def test_generate_without_interventions_is_greedy_decoding(gpt2):
    plain = vene.IntervenableModel({"representations": []}, gpt2)
    prompts = {"input_ids": torch.tensor([[3, 4, 5, 0], [7, 8, 9, 10]]),
               "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])}
    _, generated = plain.generate(prompts, max_new_tokens=5)
    assert generated[0].tolist() == greedy(gpt2, [3, 4, 5], 5) + [-1]
    assert generated[1].tolist() == greedy(gpt2, [7, 8, 9, 10], 5)


def test_generate_with_steering_changes_the_continuation(gpt2):
    vector = torch.linspace(-8.0, 8.0, 32)  # not constant: a layer norm would remove a constant shift
    steer = vene.IntervenableModel(
        [{"layer": 1, "component": "block_output",
          "intervention_type": vene.SteeringIntervention(vector=vector, coefficient=1.0)}], gpt2)
    original, steered = steer.generate(torch.tensor([[3, 4, 5]]), unit_locations={"base": 0}, max_new_tokens=6,
                                       intervene_on="steps", output_original_output=True)
    assert original[0].tolist() == greedy(gpt2, [3, 4, 5], 6)
    assert steered[0].tolist()[:3] == [3, 4, 5] and steered.tolist() != original.tolist()


def das_examples(model, count=48):
    """Counterfactual pairs on the fixture GPT-2: the label is the source's own next token, which a DAS swap at the
    last position of the last block can carry over."""
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(count):
        base, source = (torch.randint(1, 100, (4,), generator=generator) for _ in range(2))
        label = int(model(source[None]).logits[0, -1].argmax())
        examples.append({"base": {"input_ids": [base.tolist()]}, "sources": [{"input_ids": [source.tolist()]}],
                         "unit_locations": {"sources->base": 3}, "label": label})
    return examples


def test_train_learns_and_matches_vene_train(gpt2, tmp_path):
    config = {"representations": [{"layer": 2, "component": "block_output",
                                   "intervention": {"type": "low_rank_rotated_space"}, "low_rank_dimension": 4}]}
    examples = das_examples(gpt2)
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(e) for e in examples))
    (tmp_path / "config.json").write_text(json.dumps(config))
    options = dict(epochs=4, batch_size=8, learning_rate=0.02, seed=1)

    intervenable = vene.IntervenableModel(config, gpt2, seed=1)  # `vene train --seed` seeds both
    before = intervenable.evaluate(examples)
    steps = []
    report = intervenable.train(examples, progress=lambda *update: steps.append(update), **options)
    after = intervenable.evaluate(examples)
    assert report["steps"] == len(steps) == 4 * 5  # 39 training examples (20% held out) in batches of 8
    assert report["last_epoch_loss"] < report["first_epoch_loss"]
    assert after["iia"] > before["iia"] and after["loss"] < before["loss"]

    binary = vene_binary()
    done = subprocess.run([str(binary), "train", "--model", str(FIXTURES / "gpt2" / "model"), "--config",
                           str(tmp_path / "config.json"), "--data", str(tmp_path / "data.jsonl"), "--out",
                           str(tmp_path / "cli"), "--epochs", "4", "--batch-size", "8", "--lr", "0.02", "--seed", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cli_state = load_file(tmp_path / "cli" / "interventions.safetensors")
    python_state = intervenable.state_dict()
    assert cli_state.keys() == python_state.keys()
    for name, tensor in cli_state.items():
        assert torch.allclose(python_state[name], tensor, atol=1e-6), name


def test_train_mode_switches_like_a_torch_module(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 1, "component": "block_output"}], gpt2)
    assert intervenable.train() is intervenable and intervenable.eval() is intervenable


def test_training_without_trainable_interventions_is_refused(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 1, "component": "block_output"}], gpt2)
    with pytest.raises(vene.VeneError, match=r"the config has no trainable intervention"):
        intervenable.train(das_examples(gpt2, 4))


def test_serial_mode(gpt2):
    config = vene.IntervenableConfig(
        [{"layer": 0, "component": "block_output", "group_key": 0},
         {"layer": 2, "component": "block_output", "group_key": 1}], mode="serial")
    intervenable = vene.IntervenableModel(config, gpt2)
    other = torch.tensor([[11, 12, 13, 14], [15, 16, 17, 18]])
    locations = {"source_0->source_1": ([[[1]] * 2], [[[1]] * 2]), "source_1->base": ([[[3]] * 2], [[[3]] * 2])}
    with torch.no_grad():
        _, out = intervenable(BASE, [SOURCE, other], unit_locations=locations)
    assert out.logits.shape == (2, 4, 101)


def test_models_describe_their_sites(gpt2):
    catalog = gpt2.catalog
    assert catalog["model_type"] == "gpt2" and catalog["num_layers"] == 3
    heads = next(c for c in catalog["components"] if c["name"] == "head_attention_value_output")
    assert heads["units"] == ["h", "h.pos"]
    assert "block_output" in gpt2.components()
    found = vene.plugins()
    assert "vanilla" in found["builtin_types"]
    assert any("gpt2" in p["model_types"] for p in found["plugins"])


def test_pca_fitted_from_collected_activations_gives_pyvenes_numbers(gpt2):
    """The fixture case's PCA was fitted with numpy on layer 1's block outputs of 64 seeded prompts and run by
    pyvene; the same PCA fitted here from activations vene collects gives pyvene's logits."""
    import numpy as np

    prompts = torch.from_numpy(np.random.RandomState(7).randint(0, 101, size=(64, 7)))
    collect = vene.IntervenableModel([{"layer": 1, "component": "block_output", "max_number_of_units": 7,
                                       "intervention_type": vene.CollectIntervention}], gpt2)
    with torch.no_grad():
        (_, states), _ = collect(prompts, unit_locations={"base": [[list(range(7))] * 64]})
    pca = vene.PCARotatedSpaceIntervention.fit(states[0], n_components=8)
    intervenable = vene.IntervenableModel(
        [{"layer": 1, "component": "block_output", "subspace_partition": [[0, 3], [3, 8]],
          "intervention_type": pca}], gpt2)
    case = FIXTURES / "das" / "gpt2" / "pca_rotated_space"
    inputs = json.loads((case / "inputs.json").read_text())
    with torch.no_grad():
        _, out = intervenable(torch.tensor(inputs["base"]["input_ids"]),
                              [torch.tensor(inputs["sources"][0]["input_ids"])],
                              unit_locations=inputs["unit_locations"], subspaces=inputs["subspaces"])
    expected = load_file(case / "expected.safetensors")["output"]
    assert (out.logits - expected).abs().max() <= 1e-4
    with pytest.raises(ValueError, match=r"n_components must be in 1..=32"):
        vene.PCARotatedSpaceIntervention.fit(states[0], n_components=40)


def test_pyvene_saved_pca_takes_its_basis_after_loading(gpt2):
    saved = vene.IntervenableModel.load(FIXTURES / "das" / "pca_saved_by_pyvene", gpt2)
    base = torch.tensor([[1, 2, 3]])
    with pytest.raises(vene.VeneError, match=r"pca_rotated_space: has no principal components"):
        saved(base, [base], unit_locations={"sources->base": 1})
    basis = json.loads((FIXTURES / "das/gpt2/pca_rotated_space/config.json").read_text())
    basis = basis["representations"][0]["intervention"]
    key = saved.sorted_keys[0]
    saved.load_state_dict({f"{key}/pca_components": torch.tensor(basis["components"]),
                           f"{key}/pca_mean": torch.tensor(basis["mean"]), f"{key}/pca_std": torch.tensor(basis["std"])})
    with torch.no_grad():
        _, out = saved(base, [base], unit_locations={"sources->base": 1}, subspaces=[[[1]]])
    # With 8 of 32 components the output keeps only the PCA's span (pyvene's semantics): even a source equal to the
    # base changes the run.
    assert torch.isfinite(out.logits).all() and (out.logits - gpt2(base).logits).abs().max() > 1e-3


def test_leace_fitted_on_collected_activations_erases_the_label(gpt2):
    """Whether a position holds an even token, erased from layer 1's residual stream: LEACE fitted on activations
    vene collects, applied through the `leace` type; the erased states (read at layer 2's input) have the same mean
    for both classes, which they did not before."""
    prompts = torch.randint(0, 101, (48, 6), generator=torch.Generator().manual_seed(5))
    every = [[list(range(6))] * 48]

    def states(config):
        intervenable = vene.IntervenableModel(config + [{"layer": 2, "component": "block_input",
                                                         "max_number_of_units": 6,
                                                         "intervention_type": vene.CollectIntervention}], gpt2)
        locations = {"base": every} if len(config) == 0 else {"base": every * 2}
        with torch.no_grad():
            (_, collected), _ = intervenable(prompts, unit_locations=locations)
        return collected[0].reshape(-1, 32)

    labels = (prompts % 2).reshape(-1)
    before = states([])
    leace = vene.LeaceIntervention.fit(before, labels)
    after = states([{"layer": 1, "component": "block_output", "max_number_of_units": 6, "intervention_type": leace}])

    def gap(x):
        return (x[labels == 1].mean(0) - x[labels == 0].mean(0)).abs().max().item()

    assert gap(before) > 0.05
    assert gap(after) < 1e-4
    with pytest.raises(vene.VeneError, match=r"at least two classes present"):
        vene.LeaceIntervention.fit(before, torch.zeros(len(before), dtype=torch.long))


def test_inlp_fitted_in_python_removes_what_probes_read():
    """INLP on seeded activations whose class shifts them along two directions: the first probe reads the class,
    later ones are near chance, and the fitted type projects the directions out through the engine's contract."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 2, (400,), generator=generator)
    directions = torch.randn(2, 8, generator=generator)
    x = torch.randn(400, 8, generator=generator) + labels[:, None].float() * (2 * directions[0] + directions[1])
    fitted = vene.NullspaceProjectionIntervention.fit(x, labels, iterations=4)
    assert fitted.accuracies[0] > 0.9 and fitted.accuracies[-1] < 0.65, fitted.accuracies
    found = fitted.options["directions"]
    assert found.shape == (4, 8)
    assert torch.allclose(found @ found.T, torch.eye(4), atol=1e-5)
    assert fitted.to_json()["type"] == "nullspace_projection"
    with pytest.raises(vene.VeneError, match=r"INLP needs at least one iteration"):
        vene.NullspaceProjectionIntervention.fit(x, labels, iterations=0)
