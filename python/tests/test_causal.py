"""Causal models and interchange intervention training from Python: the same data as `vene causal-model`, a model
trained by IIT whose saved checkpoint torch reads back to vene's outputs, and clear errors."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import vene
from conftest import REPO, vene_binary

SPEC = REPO / "examples" / "causal" / "hierarchical_equality.json"


def cli(*args):
    done = subprocess.run([str(vene_binary()), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_datasets_match_the_cli(tmp_path):
    model = vene.CausalModel.from_file(SPEC)
    out = tmp_path / "cf.jsonl"
    cli("causal-model", "counterfactual", SPEC, "--variables", "WX,YZ", "--intervene", "WX", "--intervene", "WX,YZ",
        "--subspaces", "--count", 50, "--seed", 3, "--out", out)
    from_cli = [json.loads(line) for line in out.read_text().splitlines()]
    ours = model.counterfactual(["WX", "YZ"], 50, seed=3, interventions=[["WX"], ["WX", "YZ"]], subspaces=True)
    assert ours == from_cli
    assert all(line["subspaces"] == [[[0]], [[1]]] for line in ours)
    out = tmp_path / "factual.jsonl"
    cli("causal-model", "factual", SPEC, "--count", 20, "--seed", 4, "--out", out)
    assert model.factual(20, seed=4) == [json.loads(line) for line in out.read_text().splitlines()]


def test_bad_declarations_raise_with_the_reason():
    spec = {"variables": [{"name": "A", "values": {"range": [0, 3]}}, {"name": "O", "function": "A ** 2"}],
            "output": "O", "encoding": {"text": "{A}"}}
    with pytest.raises(vene.VeneError, match=r"the function of 'O' \(A \*\* 2\): expected a value, found '\*'"):
        vene.CausalModel(spec)
    with pytest.raises(vene.VeneError, match=r"'ZZ' is not a variable of the causal model \(W, X, Y, Z, WX, YZ, O\)"):
        vene.CausalModel.from_file(SPEC).counterfactual(["ZZ"], 1)


def mlp_forward(weights, x, layers):
    h = x
    for layer in range(layers):
        h = torch.relu(h @ weights[f"mlp.h.{layer}.ff1.weight"].T + weights[f"mlp.h.{layer}.ff1.bias"])
    return h @ weights["score.weight"].T + weights["score.bias"]


def test_iit_trains_the_model_and_torch_reads_the_checkpoint(tmp_path):
    fresh = tmp_path / "fresh"
    cli("new-model", "mlp", "--h-dim", 16, "--layers", 3, "--classes", 2, "--seed", 3, "--out", fresh)
    spec = vene.CausalModel.from_file(SPEC)
    data = spec.counterfactual(["WX", "YZ"], 30000, seed=5, subspaces=True)
    representation = {"layer": 0, "component": "block_output", "subspace_partition": [[0, 8], [8, 16]]}
    config = vene.IntervenableConfig([representation, representation], intervention_types=vene.VanillaIntervention)
    intervenable = vene.IntervenableModel(config, vene.load(fresh))
    before = intervenable.evaluate(data)
    report = intervenable.train(data, epochs=8, batch_size=128, learning_rate=2e-3, warmup_fraction=0.0, train_model=True, eval_fraction=0.2)
    assert report["last_epoch_loss"] < report["first_epoch_loss"]
    assert report["eval"]["task_accuracy"] is not None
    after = intervenable.evaluate(data)
    assert after["iia"] > before["iia"] + 0.1, (before, after)

    saved = tmp_path / "trained"
    intervenable.save_model(saved)
    weights = load_file(saved / "model.safetensors")
    x = torch.tensor([line["base"]["inputs"][0][0] for line in data[:64]])
    reloaded = vene.load(saved)
    assert torch.allclose(reloaded(x.unsqueeze(1)).logits, mlp_forward(weights, x, 3), atol=1e-5)
    assert json.loads((saved / "config.json").read_text()) == json.loads((fresh / "config.json").read_text())
