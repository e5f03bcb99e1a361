//! Path patching: with every later component frozen, a sender's effect on the logits is its own output change
//! carried by the residual stream alone (checked against that sum computed from the weights), receivers see only
//! what reaches them, and bad prompts are refused by name.

use serde_json::json;
use tch::Tensor;
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    studies::path_patching::{self, Baseline, PathBatch, PathOptions, PathPrompt, Receivers},
    text::TextTokenizer,
};

use crate::common::*;

fn prompts() -> Vec<PathPrompt> {
    let pair = |clean: &str, corrupted: &str, target: &str, distractor: &str| PathPrompt {
        clean: clean.into(),
        corrupted: corrupted.into(),
        target: target.into(),
        distractor: distractor.into(),
    };
    vec![
        pair("w5 w9 w12 w5 w40", "w7 w9 w30 w8 w40", " w5", " w12"),
        pair("w3 w3 w61 w17", "w2 w44 w61 w90", "w17", "w3"),
        pair("w70 w11 w11 w2 w6", "w71 w12 w13 w2 w6", "w11", "w2"),
    ]
}

struct Fixture {
    _dir: std::path::PathBuf,
    plugins: vene_host::plugins::PluginSet,
    model: LoadedModel,
    tokenizer: TextTokenizer,
}

fn fixture(name: &str) -> Fixture {
    let dir = scratch(name);
    gpt2_with_word_tokenizer(&dir);
    let plugins = plugins(&["vene_gpt2"]);
    let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let tokenizer = TextTokenizer::for_model(&dir, "gpt2").unwrap().unwrap();
    Fixture { _dir: dir, plugins, model, tokenizer }
}

/// Collects `(component, layer)` activations (whole tensors) of a plain run on `ids`.
fn collect(fixture: &Fixture, ids: &Tensor, sites: &[(&str, u32)]) -> Vec<Tensor> {
    let representations: Vec<_> = sites
        .iter()
        .map(|(component, layer)| {
            let unit = if component.starts_with("head_") { "h" } else { "pos" };
            json!({"layer": layer, "component": component, "unit": unit, "intervention": {"type": "collect"}})
        })
        .collect();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations})).unwrap();
    let mut model = IntervenableModel::new(fixture.model.clone(), config, &fixture.plugins, 0).unwrap();
    let inputs = vene_host::model::ForwardInputs::from_ids(ids.shallow_clone());
    model.run(&inputs, &[], &UnitLocations::whole(), &Subspaces::None).unwrap().collected
}

fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    x.layer_norm([32], Some(weight), Some(bias), 1e-5, false)
}

/// Sender L1.H2 with the MLPs and layer 2 frozen: the final residual is the clean one plus the sender's change
/// through its rows of c_proj, so the logits follow from ln_f and the tied embedding.
#[test]
fn frozen_paths_carry_only_the_senders_own_change() {
    let fixture = fixture("path-direct");
    let prompts = prompts();
    let batch = PathBatch::new(&fixture.tokenizer, &prompts, tch::Device::Cpu).unwrap();
    let baseline = Baseline::measure(&fixture.model, &batch).unwrap();
    let options = PathOptions { receivers: Receivers::Logits, freeze_mlps: true };
    let found =
        path_patching::sender_effects(&fixture.model, &fixture.plugins, &batch, &baseline, (1, 2), &options).unwrap();

    let weights: std::collections::HashMap<String, Tensor> =
        read_safetensors(&gpt2_dir().join("model.safetensors")).into_iter().collect();
    let w = |name: &str| weights[&format!("transformer.{name}")].shallow_clone();
    let mut expected = Vec::new();
    let mut clean_differences = Vec::new();
    for prompt in &prompts {
        let ids = |text: &str| Tensor::from_slice(&fixture.tokenizer.encode(text).unwrap()).unsqueeze(0);
        let clean = collect(&fixture, &ids(&prompt.clean), &[("head_attention_value_output", 1), ("block_output", 2)]);
        let corrupted = collect(&fixture, &ids(&prompt.corrupted), &[("head_attention_value_output", 1)]);
        let change =
            (corrupted[0].select(1, 2) - clean[0].select(1, 2)).matmul(&w("h.1.attn.c_proj.weight").narrow(0, 16, 8));
        let logits = |residual: &Tensor| {
            layer_norm(residual, &w("ln_f.weight"), &w("ln_f.bias")).matmul(&w("wte.weight").tr()).select(1, -1)
        };
        let token = |word: &str| fixture.tokenizer.encode_plain(word).unwrap()[0];
        let difference = |logits: &Tensor| {
            logits.double_value(&[0, token(&prompt.target)]) - logits.double_value(&[0, token(&prompt.distractor)])
        };
        expected.push(difference(&logits(&(&clean[1] + change))));
        clean_differences.push(difference(&logits(&clean[1])));
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    assert!((mean(&clean_differences) - baseline.clean).abs() < 1e-4, "{clean_differences:?} vs {baseline:?}");
    let expected_effect = (mean(&expected) - baseline.clean) / (baseline.clean - baseline.corrupted);
    let effect = found.to_logits.unwrap();
    assert!((effect - expected_effect).abs() < 1e-4, "vene {effect}, from the weights {expected_effect}");
    assert!(effect.abs() > 1e-3, "the sender changes the logits: {effect}");
}

/// Receivers only exist after the sender; a receiver head whose query the sender cannot reach (the sender patched
/// into a prompt's own values) gives no effect; the last layer's heads send nothing but to the logits.
#[test]
fn receivers_see_what_reaches_them() {
    let fixture = fixture("path-receivers");
    let batch = PathBatch::new(&fixture.tokenizer, &prompts(), tch::Device::Cpu).unwrap();
    let baseline = Baseline::measure(&fixture.model, &batch).unwrap();
    let options = PathOptions { receivers: Receivers::Query, freeze_mlps: false };
    let first =
        path_patching::sender_effects(&fixture.model, &fixture.plugins, &batch, &baseline, (0, 1), &options).unwrap();
    let layers: Vec<u32> = first.to_receivers.iter().map(|(l, _, _)| *l).collect();
    assert_eq!(layers, vec![1, 1, 1, 1, 2, 2, 2, 2]);
    assert!(first.to_logits.is_none());
    assert!(first.to_receivers.iter().any(|(_, _, e)| e.abs() > 1e-3), "{:?}", first.to_receivers);
    let last =
        path_patching::sender_effects(&fixture.model, &fixture.plugins, &batch, &baseline, (2, 0), &options).unwrap();
    assert!(last.to_receivers.is_empty());

    // With the corrupted prompts equal to the clean ones at the sender's positions' inputs, nothing moves.
    let same: Vec<PathPrompt> = prompts().into_iter().map(|p| PathPrompt { corrupted: p.clean.clone(), ..p }).collect();
    let same_batch = PathBatch::new(&fixture.tokenizer, &same, tch::Device::Cpu).unwrap();
    let effects =
        path_patching::sender_effects(&fixture.model, &fixture.plugins, &same_batch, &baseline, (0, 1), &options)
            .unwrap();
    let largest = effects.to_receivers.iter().map(|(_, _, e)| e.abs()).fold(0.0, f64::max);
    assert!(largest < 1e-6, "patching a head with its own clean output changes nothing: {largest}");
}

#[test]
fn bad_path_patching_inputs_are_refused_by_name() {
    let fixture = fixture("path-errors");
    let error = |prompts: Vec<PathPrompt>| {
        PathBatch::new(&fixture.tokenizer, &prompts, tch::Device::Cpu).err().expect("refused").to_string()
    };
    let mut uneven = prompts();
    uneven[1].corrupted = "w2 w44 w61".into();
    assert!(error(uneven).contains(
        "prompt 2: the clean prompt has 4 tokens, the corrupted one 3; patching needs them to line up position by \
         position"
    ));
    let mut split = prompts();
    split[0].target = "w5 w6".into();
    assert!(error(split).contains("prompt 1: \"w5 w6\" is 2 tokens (\"w5\" \"w6\"); the metric compares single tokens"));
    assert!(error(Vec::new()).contains("no prompts: give at least one clean / corrupted pair"));

    let same: Vec<PathPrompt> = prompts().into_iter().map(|p| PathPrompt { corrupted: p.clean.clone(), ..p }).collect();
    let batch = PathBatch::new(&fixture.tokenizer, &same, tch::Device::Cpu).unwrap();
    let message = Baseline::measure(&fixture.model, &batch).err().unwrap().to_string();
    assert!(message.contains("the clean and corrupted prompts give the same logit difference"), "{message}");

    let batch = PathBatch::new(&fixture.tokenizer, &prompts(), tch::Device::Cpu).unwrap();
    let baseline = Baseline::measure(&fixture.model, &batch).unwrap();
    let options = PathOptions { receivers: Receivers::Logits, freeze_mlps: false };
    let message = path_patching::sender_effects(&fixture.model, &fixture.plugins, &batch, &baseline, (3, 0), &options)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("sender L3.H0 is not a head of the model (3 layers × 4 heads)"), "{message}");
}
