//! Causal scrubbing: a hypothesis that keeps every node, resampled from inputs identical to the base, recovers the
//! whole loss; one that keeps none recovers nothing; random controls match the hypothesis's size; bad examples and
//! nodes are refused by name.

use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    model::LoadedModel,
    studies::scrubbing::{self, Node, ScrubData, ScrubExample},
    text::TextTokenizer,
};

use crate::common::*;

fn example(text: &str, target: &str) -> ScrubExample {
    ScrubExample { text: text.into(), target: target.into(), class: None }
}

/// Each text twice (so an example's same-class partner is its own copy), four classes.
fn doubled() -> Vec<ScrubExample> {
    let texts = [("w5 w9 w12", "w5"), ("w7 w3 w30", "w7"), ("w40 w41 w42", "w40"), ("w1 w2 w3", "w1")];
    texts.iter().flat_map(|(t, target)| [example(t, target), example(t, target)]).collect()
}

fn setup(name: &str) -> (std::path::PathBuf, vene_host::plugins::PluginSet, LoadedModel, TextTokenizer) {
    let dir = scratch(name);
    gpt2_with_word_tokenizer(&dir);
    let plugins = plugins(&["vene_gpt2"]);
    let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let tokenizer = TextTokenizer::for_model(&dir, "gpt2").unwrap().unwrap();
    (dir, plugins, model, tokenizer)
}

#[test]
fn keeping_everything_recovers_all_and_nothing_recovers_nothing() {
    let (_dir, plugins, model, tokenizer) = setup("scrub-bounds");
    let data = ScrubData::new(&tokenizer, &doubled(), 0, tch::Device::Cpu).unwrap();
    let every = scrubbing::all_nodes(&model);
    assert_eq!(every.len(), 3 * 5, "3 layers × (4 heads + the MLP)");
    let found = scrubbing::scrub(&model, &plugins, &data, &every, 3, 1, |_, _| {}).unwrap();
    assert!((found.hypothesis.loss - found.clean_loss).abs() < 1e-5, "{found:?}");
    assert!((found.hypothesis.recovered - 1.0).abs() < 1e-4, "{found:?}");
    assert!(found.scrubbed_loss > found.clean_loss + 0.01, "resampling everything costs loss: {found:?}");
    let none = scrubbing::scrub(&model, &plugins, &data, &[], 0, 1, |_, _| {}).unwrap();
    assert!(none.hypothesis.recovered.abs() < 1e-9, "{none:?}");

    let hypothesis = [Node::Head(1, 2), Node::Head(2, 0), Node::Mlp(0)];
    let controls = scrubbing::random_hypotheses(&model, &hypothesis, 4, 9);
    assert_eq!(controls.len(), 4);
    for control in &controls {
        let mlps = control.iter().filter(|n| matches!(n, Node::Mlp(_))).count();
        assert_eq!((control.len(), mlps), (3, 1), "{control:?}");
    }
    let partial = scrubbing::scrub(&model, &plugins, &data, &hypothesis, 2, 9, |_, _| {}).unwrap();
    assert_eq!(partial.hypothesis.nodes, vec!["L1.H2", "L2.H0", "L0.MLP"]);
    assert_eq!(partial.controls.len(), 2);
}

#[test]
fn bad_scrubbing_inputs_are_refused_by_name() {
    let (_dir, plugins, model, tokenizer) = setup("scrub-errors");
    let error = |examples: Vec<ScrubExample>| {
        ScrubData::new(&tokenizer, &examples, 0, tch::Device::Cpu).err().expect("refused").to_string()
    };
    let mut uneven = doubled();
    uneven[3].text = "w7 w3".into();
    assert!(error(uneven).contains("example 4: 2 tokens where example 1 has 3; resampled activations must line up"));
    let mut lonely = doubled();
    lonely[7].target = "w9".into();
    assert!(error(lonely).contains("example 7 is the only one of class \"w1\""));
    assert!(error(vec![example("w1", "w2")]).contains("give at least two"));
    let parse = |text: &str| Node::parse(text).expect_err("refused").to_string();
    assert!(parse("L3").contains("node \"L3\" is not LAYER.HEAD or LAYER.MLP (e.g. L11.H3, L13.MLP)"));
    assert_eq!(Node::parse("L2.mlp").unwrap(), Node::Mlp(2));
    assert_eq!(Node::parse("11.3").unwrap(), Node::Head(11, 3));
    let data = ScrubData::new(&tokenizer, &doubled(), 0, tch::Device::Cpu).unwrap();
    let message = scrubbing::scrubbed_loss(&model, &plugins, &data, &[Node::Head(1, 4)]).err().unwrap().to_string();
    assert!(message.contains("node L1.H4 is not in the model (3 layers × 4 heads)"), "{message}");
}
