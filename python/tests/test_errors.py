"""Bad input raises a clear exception (vene.VeneError, a ValueError, with the CLI's message); nothing aborts."""

import pytest
import torch

import vene
from conftest import FIXTURES, REPO


def raises(match: str):
    return pytest.raises(vene.VeneError, match=match)


def test_vene_errors_are_value_errors():
    assert issubclass(vene.VeneError, ValueError)


def test_unknown_component_names_the_valid_ones(gpt2):
    with raises(r"unknown component 'mlp_out' for gpt2; the model's components: block_input, block_output"):
        vene.IntervenableModel([{"layer": 0, "component": "mlp_out"}], gpt2)


def test_layer_out_of_range(gpt2):
    with raises(r"layer 7 is out of range for block_output: it exists at layers 0..3"):
        vene.IntervenableModel([{"layer": 7, "component": "block_output"}], gpt2)


def test_unknown_intervention_type_lists_the_known_ones(gpt2):
    with raises(r"unknown intervention type 'vanila'; known types: .*vanilla"):
        vene.IntervenableModel([{"layer": 0, "component": "block_output", "intervention_type": "vanila"}], gpt2)


def test_wrong_number_of_sources(gpt2):
    config = [{"layer": 0, "component": "block_output"}, {"layer": 1, "component": "block_output"}]
    intervenable = vene.IntervenableModel(config, gpt2)
    ids = torch.tensor([[1, 2, 3]])
    with raises(r"wrong number of sources: the config has 2 group\(s\).*got 3"):
        intervenable(ids, [ids, ids, ids], unit_locations={"sources->base": 1})


def test_a_source_is_needed(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 0, "component": "block_output"}], gpt2)
    with raises(r"needs a source run, but no sources were given"):
        intervenable(torch.tensor([[1, 2, 3]]), unit_locations={"sources->base": 1})


def test_unit_location_out_of_range(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 0, "component": "block_output"}], gpt2)
    ids = torch.tensor([[1, 2, 3]])
    with raises(r"unit location 9 is out of range \(sequence length 3 on axis 1 of shape \[1, 3, 32\]\)"):
        intervenable(ids, [ids], unit_locations={"sources->base": 9})


def test_malformed_unit_locations(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 0, "component": "block_output"}], gpt2)
    ids = torch.tensor([[1, 2, 3]])
    with raises(r"invalid unit_locations"):
        intervenable(ids, [ids], unit_locations={"sources->base": "middle"})


def test_inputs_that_are_not_tensors_or_mappings(gpt2):
    intervenable = vene.IntervenableModel([{"layer": 0, "component": "block_output"}], gpt2)
    with pytest.raises(TypeError, match=r"base must be a tensor or a mapping"):
        intervenable("The cat", ["The dog"])


def test_unknown_input_keys_name_the_valid_ones(gpt2):
    with raises(r"invalid inputs: the inputs has 'token_type_ids'; valid keys: input_ids, attention_mask"):
        gpt2({"input_ids": torch.tensor([[1]]), "token_type_ids": torch.tensor([[0]])})


def test_ids_beyond_the_vocabulary_are_an_error_not_an_abort(gpt2):
    with pytest.raises(vene.VeneError):
        gpt2(torch.tensor([[5, 100000]]))


def test_bad_model_path_device_and_dtype(tmp_path):
    with raises(r"cannot read .*config.json"):
        vene.load(tmp_path)
    with raises(r"unknown device 'gpu': use cpu, cuda or cuda:N"):
        vene.load(FIXTURES / "gpt2" / "model", device="gpu")
    with raises(r"unknown dtype 'f8': use f32, f16, bf16 or f64"):
        vene.load(FIXTURES / "gpt2" / "model", dtype="f8")


def test_cuda_on_a_machine_without_one_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with raises(r"device cuda:0 was asked for, but this libtorch sees 0 CUDA device"):
        vene.load(FIXTURES / "gpt2" / "model", device="cuda")


def test_a_model_type_without_a_plugin_names_the_loaded_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
    with raises(r"no loaded plugin provides model type 'mamba' \(loaded: .*gpt2"):
        vene.load(tmp_path)


def test_a_faulty_plugin_stays_an_exception(tmp_path):
    """The fixture plugin whose intervention panics: the panic is caught inside the plugin and reported."""
    faulty = REPO / "target" / "release" / "libfixture_faulty.so"
    assert faulty.is_file(), "build the workspace first (cargo build --release --workspace)"
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "libvene_faulty.so").symlink_to(faulty)
    model = vene.load(FIXTURES / "gpt2" / "model", plugin_dirs=[plugin_dir])
    ids = torch.tensor([[1, 2, 3]])
    for kind, message in [
        ("fixture_panic", r"intervention panicked: fixture_panic always panics"),
        ("fixture_wrong_shape", r"returned shape \[1, 1, 1\], expected \[1, 1, 32\]"),
    ]:
        config = [{"layer": 0, "component": "block_output", "intervention_type": kind}]
        intervenable = vene.IntervenableModel(config, model)
        with pytest.raises(vene.VeneError, match=message):
            intervenable(ids, [ids], unit_locations={"sources->base": 1})
    # The interpreter and vene go on working.
    assert gpt2_logits_shape(model) == (1, 3, 101)


def gpt2_logits_shape(model):
    return tuple(model(torch.tensor([[1, 2, 3]])).logits.shape)


def test_intervention_declarations_of_the_wrong_kind():
    with pytest.raises(TypeError, match=r"an intervention type is a vene intervention class"):
        vene.IntervenableConfig([{"layer": 0, "component": "block_output", "intervention_type": 3}]).to_json()
    with pytest.raises(TypeError, match=r"unknown field\(s\) componnt"):
        vene.IntervenableConfig([{"layer": 0, "componnt": "block_output"}])
