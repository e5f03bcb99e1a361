//! Generation with interventions: incremental decoding equals recomputation, and interventions act on the passes asked for.

use serde_json::json;
use tch::Tensor;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    generate::{generate, InterveneOn, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

use crate::common::*;

const PROMPT: [i64; 4] = [12, 40, 7, 88];

fn intervenable(plugins: &PluginSet, dir: &std::path::Path, representations: serde_json::Value) -> IntervenableModel {
    let model = LoadedModel::load(plugins, dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32).unwrap();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations})).unwrap();
    IntervenableModel::new(model, config, plugins, 0).unwrap()
}

fn greedy(steps: usize) -> Sampling {
    Sampling { max_new_tokens: steps, ..Sampling::default() }
}

/// Greedy decoding with the key/value cache picks the same tokens as recomputing the whole sequence each step.
#[test]
fn cached_decoding_equals_recomputation() {
    for (plugin, dir) in [
        ("vene_gpt2", gpt2_dir()),
        ("vene_gpt_neox", fixtures().join("gpt_neox/model")),
        ("vene_backpack", fixtures().join("backpack/model")),
    ]
    .into_iter()
    // Sliding windows of 4 (Mistral, Qwen 2, Gemma 2/3) are passed within the 12 tokens.
    .chain(crate::llama::FAMILIES.map(|family| ("vene_llama", crate::llama::family_dir(family).join("model"))))
    {
        let plugins = plugins(&[plugin]);
        let mut model = intervenable(&plugins, &dir, json!([]));
        let cached =
            generate(&mut model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &greedy(8), |_| {}).unwrap();
        let mut sequence = PROMPT.to_vec();
        for _ in 0..8 {
            let inputs = ForwardInputs::from_ids(Tensor::from_slice(&sequence).view([1, -1]));
            let logits = model.model().forward_plain(&inputs).unwrap().output;
            sequence.push(logits.select(1, -1).argmax(-1, false).int64_value(&[0]));
        }
        assert_eq!(cached, sequence[PROMPT.len()..].to_vec(), "{plugin}");
    }
}

fn steering() -> serde_json::Value {
    let vector: Vec<f32> = (0..32).map(|i| if i % 3 == 0 { 2.0 } else { -1.0 }).collect();
    json!((0..3)
        .map(|layer| json!({"layer": layer, "component": "mlp_output",
        "intervention": {"type": "steering", "coefficient": 1.5, "vector": vector}}))
        .collect::<Vec<_>>())
}

/// Steering on the prompt only, on the steps only, or on both: each changes exactly the passes it names.
#[test]
fn interventions_act_on_the_prompt_the_steps_or_both() {
    let plugins = plugins(&["vene_gpt2", "vene_steering"]);
    let run = |on: InterveneOn| {
        let mut model = intervenable(&plugins, &gpt2_dir(), steering());
        let sampling = Sampling { intervene_on: on, ..greedy(6) };
        generate(&mut model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {}).unwrap()
    };
    let mut plain_model = intervenable(&plugins, &gpt2_dir(), json!([]));
    let plain = generate(&mut plain_model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &greedy(6), |_| {})
        .unwrap();
    let (prompt, steps, both) = (run(InterveneOn::Prompt), run(InterveneOn::Steps), run(InterveneOn::Both));
    // The first token comes from the prompt pass: steered for prompt/both, plain for steps.
    let mut steered_prompt = intervenable(&plugins, &gpt2_dir(), steering());
    let inputs = ForwardInputs::from_ids(Tensor::from_slice(&PROMPT).view([1, -1]));
    let first = steered_prompt
        .run(&inputs, &[], &UnitLocations::whole(), &Subspaces::None)
        .unwrap()
        .output
        .select(1, -1)
        .argmax(-1, false)
        .int64_value(&[0]);
    assert_eq!(prompt[0], first);
    assert_eq!(both[0], first);
    assert_eq!(steps[0], plain[0]);
    assert_ne!(steps, plain, "steering the steps changed nothing");
    assert_ne!(both, plain);
}

/// Sampling is reproducible per seed; top-k 1 is greedy.
#[test]
fn sampling_is_seeded() {
    let plugins = plugins(&["vene_gpt2"]);
    let mut model = intervenable(&plugins, &gpt2_dir(), json!([]));
    let mut sample = |seed: u64, top_k: Option<usize>| {
        let sampling = Sampling { temperature: 1.0, top_k, top_p: Some(0.95), seed, ..greedy(12) };
        generate(&mut model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {}).unwrap()
    };
    let (a, b, c) = (sample(1, None), sample(1, None), sample(2, None));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let top_one = sample(3, Some(1));
    let greedy_tokens =
        generate(&mut model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &greedy(12), |_| {}).unwrap();
    assert_eq!(top_one, greedy_tokens);
}

#[test]
fn generate_streams_text_from_the_command_line() {
    let dir = scratch("generate");
    gpt2_with_word_tokenizer(&dir);
    let output = std::process::Command::new(vene_binary())
        .args(["generate", "--plugin", "gpt2", "--model", dir.to_str().unwrap(), "--prompt", "w12 w40 w7 w88"])
        .args(["--max-new-tokens", "5"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("w12 w40 w7 w88"), "{stdout}");
    let plugins = gpt2_plugins();
    let mut model = intervenable(&plugins, &dir, json!([]));
    let tokens =
        generate(&mut model, &PROMPT, &[], &UnitLocations::whole(), &Subspaces::None, &greedy(5), |_| {}).unwrap();
    let words: Vec<String> = tokens.iter().map(|t| format!("w{t}")).collect();
    assert!(stdout.trim_end().ends_with(&words.join(" ")), "{stdout} vs {words:?}");
    std::fs::remove_dir_all(dir).ok();
}
