//! The other model adapters against their Python references (f32, tolerance 1e-4).

use crate::common::*;

const TOLERANCE: f64 = 1e-4;

fn each_case(plugin: &str, family: &str, model: &str, cases: &str) {
    let root = fixtures().join(family);
    let mut names: Vec<_> = std::fs::read_dir(root.join(cases))
        .unwrap_or_else(|e| panic!("{}: {e}", root.join(cases).display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no cases under {}", root.join(cases).display());
    for case in names {
        run_reference_case(&[plugin], &root.join(model), &case, TOLERANCE);
    }
}

#[test]
fn gpt_neox_parallel_residual_matches_pyvene_and_transformers() {
    each_case("vene_gpt_neox", "gpt_neox", "model", "cases");
}

#[test]
fn gpt_neox_sequential_residual_matches_transformers() {
    each_case("vene_gpt_neox", "gpt_neox", "model_sequential", "cases_sequential");
}

#[test]
fn resnet_matches_transformers_with_hooks() {
    each_case("vene_resnet", "resnet", "model", "cases");
}

#[test]
fn mlp_matches_pyvene() {
    each_case("vene_mlp", "mlp", "model", "cases");
}

/// Timestep interventions: plain logits from pyvene's GRU; interventions against a step-by-step reference with
/// vene's semantics (act at the selected steps only).
#[test]
fn gru_matches_the_step_by_step_reference() {
    each_case("vene_gru", "gru", "model", "cases");
}

/// Backpack's config says model_type "gpt2": the architecture picks the Backpack adapter even with GPT-2 loaded.
#[test]
fn backpack_matches_pyvene() {
    let root = fixtures().join("backpack");
    let mut names: Vec<_> = std::fs::read_dir(root.join("cases")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for case in names {
        run_reference_case(&["vene_gpt2", "vene_backpack"], &root.join("model"), &case, TOLERANCE);
    }
}

/// Every adapter runs in bf16 and f16 and stays close to its f32 output (half precision: 5 % of the output scale).
#[test]
fn every_adapter_runs_in_half_precision() {
    use vene_api::{DTypeSpec, DeviceSpec};
    use vene_host::{inputs::RunInputs, model::LoadedModel};
    let cases = [
        ("vene_gpt2", "gpt2"),
        ("vene_gpt_neox", "gpt_neox"),
        ("vene_backpack", "backpack"),
        ("vene_gru", "gru"),
        ("vene_mlp", "mlp"),
        ("vene_resnet", "resnet"),
        ("vene_llama", "llama/llama"),
        ("vene_llama", "llama/qwen3"),
        ("vene_llama", "llama/gemma2"),
        ("vene_llama", "llama/gemma3_text"),
    ];
    for (plugin, family) in cases {
        let plugins = plugins(&[plugin]);
        let dir = fixtures().join(family).join("model");
        let inputs =
            RunInputs::from_file(&fixtures().join(family).join("cases/plain/inputs.json"), tch::Device::Cpu, None)
                .unwrap();
        let reference = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32)
            .unwrap()
            .forward_plain(&inputs.base)
            .unwrap()
            .output;
        let scale = reference.abs().max().double_value(&[]);
        for dtype in [DTypeSpec::BF16, DTypeSpec::F16] {
            let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, dtype).unwrap();
            let output = model.forward_plain(&inputs.base).unwrap_or_else(|e| panic!("{family} {dtype:?}: {e}")).output;
            assert_eq!(output.kind(), dtype.to_kind(), "{family}: output dtype");
            let diff = max_abs_diff(&output, &reference);
            assert!(diff < 0.05 * scale, "{family} {dtype:?}: max |difference| {diff} vs output scale {scale}");
        }
    }
}

/// pyvene module paths name GRU sites too (`gru.cells.1.update_act.output` is update_gate_output at layer 1).
#[test]
fn gru_sites_answer_to_pyvene_module_paths() {
    use vene_host::{config::Representation, engine::resolve_component};
    let plugins = plugins(&["vene_gru"]);
    let model = vene_host::model::LoadedModel::load(
        &plugins,
        &fixtures().join("gru/model"),
        vene_api::DeviceSpec::CPU,
        vene_api::DTypeSpec::F32,
    )
    .unwrap();
    let representation: Representation = serde_json::from_value(
        serde_json::json!({"component": "gru.cells.1.update_act.output", "intervention": {"type": "zero"}}),
    )
    .unwrap();
    let (component, layer) = resolve_component(model.catalog(), &representation).unwrap();
    assert_eq!(model.catalog().components[component as usize].name.as_str(), "update_gate_output");
    assert_eq!(layer, 1);
}

/// Asked for one output position per example, the language-model adapters compute their head there only and give
/// the same logits as the full output at those positions; positions outside the pass are refused by name.
#[test]
fn output_positions_give_the_full_outputs_rows() {
    use tch::Tensor;
    use vene_host::model::{ForwardInputs, LoadedModel};
    let cases = [
        ("vene_gpt2", gpt2_dir()),
        ("vene_gpt_neox", fixtures().join("gpt_neox/model")),
        ("vene_backpack", fixtures().join("backpack/model")),
        ("vene_llama", fixtures().join("llama/gemma3_text/model")),
        ("vene_llama", fixtures().join("llama/mistral/model")),
    ];
    let _no_grad = tch::no_grad_guard();
    for (plugin, dir) in cases {
        let plugins = plugins(&[plugin]);
        let model = LoadedModel::load(&plugins, &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32).unwrap();
        let ids = Tensor::from_slice(&[5i64, 9, 2, 7, 3, 8, 1, 4]).view([2, 4]);
        let full = model.forward_plain(&ForwardInputs::from_ids(ids.shallow_clone())).unwrap().output;
        let mut inputs = ForwardInputs::from_ids(ids.shallow_clone());
        inputs.output_positions = Some(Tensor::from_slice(&[3i64, 1]));
        let read = model.forward_plain(&inputs).unwrap().output;
        assert_eq!(read.size(), [2, 1, full.size()[2]], "{plugin}");
        let expected = Tensor::stack(&[full.get(0).get(3), full.get(1).get(1)], 0).unsqueeze(1);
        assert!(max_abs_diff(&read, &expected) < 1e-5, "{plugin}: {}", max_abs_diff(&read, &expected));
        let last = model.forward_plain(&ForwardInputs::from_ids(ids.shallow_clone()).reading_last_position());
        assert!(max_abs_diff(&last.unwrap().output.squeeze_dim(1), &full.select(1, 3)) < 1e-5, "{plugin}");
        inputs.output_positions = Some(Tensor::from_slice(&[4i64, 0]));
        let error = model.forward_plain(&inputs).err().expect("position 4 of 4 is refused").to_string();
        assert!(error.contains("output positions run from 0 to 4, outside the 4 positions of this pass"), "{error}");
    }
}
