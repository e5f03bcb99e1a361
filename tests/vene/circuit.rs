//! Edge attribution and circuits: edge scores add up to the node scores of attribution patching, circuit runs span
//! the corrupted and the clean run exactly, patching all of a sender's edges is patching the sender, integrated
//! gradients of the input edges add up to the whole change, and bad input is refused by name.

use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    studies::{
        attribution::{attribute, AttributionInputs, AttributionOptions, Metric},
        circuit::{find_circuit, CircuitOptions, EdgePatching, Graph, Node, Qkv},
    },
};

use crate::common::*;

fn prompt_pairs(length: i64) -> AttributionInputs {
    let ids =
        |values: &[i64]| ForwardInputs::from_ids(Tensor::from_slice(&values[..2 * length as usize]).view([2, length]));
    AttributionInputs::new(
        ids(&[3, 14, 15, 92, 65, 35, 89, 79, 32, 38]),
        ids(&[27, 18, 28, 1, 8, 46, 26, 43, 38, 32]),
        Tensor::from_slice(&[42i64, 7]),
        Tensor::from_slice(&[11i64, 19]),
    )
}

fn options() -> CircuitOptions {
    CircuitOptions {
        metric: Metric::LogitDiff,
        ig_steps: 0,
        top_k: 5,
        random_k: 3,
        verify_all: false,
        seed: 0,
        sizes: Vec::new(),
        keep: None,
        faithfulness: 0.8,
        per_head: false,
    }
}

/// What a case cuts (a predicate on sender and receiver indices), named, with the metric node patching gives.
type Cut<'a> = (&'a str, &'a dyn Fn(usize, usize) -> bool, f64);

fn gpt2_f64() -> (vene_host::plugins::PluginSet, LoadedModel) {
    let plugins = plugins(&["vene_gpt2"]);
    let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F64).unwrap();
    (plugins, model)
}

/// Each sender's edges add up to its node's attribution (its output summed over positions: the gradient at a
/// residual-stream write is the sum of every later reader's), the empty circuit is the corrupted run and the full
/// one the clean run, and what a search writes is on disk.
#[test]
fn edge_scores_add_up_to_node_scores_and_circuits_span_corrupted_to_clean() {
    let (plugins, model) = gpt2_f64();
    let inputs = prompt_pairs(5);
    let graph = Graph::of(&model, false).unwrap();
    let total = graph.edges().len();
    let options = CircuitOptions { sizes: vec![0, 3, total], ..options() };
    let (circuit, model) = find_circuit(model, &plugins, &inputs, &options).unwrap();
    assert_eq!(circuit.edges.len(), total);
    assert!((circuit.curve[0].metric - circuit.corrupted).abs() < 1e-9, "{:?}", circuit.curve[0]);
    assert!((circuit.curve[2].metric - circuit.clean).abs() < 1e-9, "{:?}", circuit.curve[2]);
    assert!((circuit.curve[2].faithfulness - 1.0).abs() < 1e-9);
    assert_eq!(circuit.edges.iter().filter(|e| e.exact.is_some()).count(), 8);

    let node_options = AttributionOptions {
        components: ["block_input", "attention_output", "mlp_output"].map(String::from).to_vec(),
        metric: Metric::LogitDiff,
        ig_steps: 0,
        qk_fix: false,
        grad_drop: false,
        top_k: 0,
        random_k: 0,
        verify_all: false,
        seed: 0,
    };
    let (nodes, _) = attribute(model, &plugins, &inputs, &node_options, vec![]).unwrap();
    let node_total = |component: usize, layer: usize| nodes.components[component].scores[layer][0].iter().sum::<f64>();
    let mut senders = vec![("input".to_string(), node_total(0, 0))];
    for layer in 0..graph.layers {
        senders.push((format!("a{layer}"), node_total(1, layer)));
        senders.push((format!("m{layer}"), node_total(2, layer)));
    }
    for (sender, node) in senders {
        let edges: f64 = circuit.edges.iter().filter(|e| e.sender == sender).map(|e| e.score).sum();
        assert!(node.abs() > 1e-6, "{sender} has an effect to split");
        assert!((edges - node).abs() < 1e-9 * (1.0 + node.abs()), "{sender}: edges {edges} vs node {node}");
    }

    let dir = scratch("circuit-output");
    circuit.output("circuit.json").unwrap().write(&dir).unwrap();
    circuit.write_scores(&dir).unwrap();
    for file in ["circuit.json", "circuit.svg", "circuit.png", "circuit_faithfulness.png", "circuit_verified.svg"] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    let svg = std::fs::read_to_string(dir.join("circuit.svg")).unwrap();
    assert!(svg.contains("logits") && svg.contains("layer 1"), "the graph figure names its nodes");
    let scores = read_safetensors(&dir.join("circuit_scores.safetensors"));
    let side = graph.sender_count() as i64;
    assert_eq!(scores[0].1.size(), [side, side]);
}

/// The metric with `component` of `layer` taken from the corrupted prompts at every position (node patching).
fn node_patched(model: LoadedModel, inputs: &AttributionInputs, component: &str, layer: usize) -> (f64, LoadedModel) {
    let plugins = plugins(&["vene_gpt2", "vene_llama"]);
    let unit = if component.starts_with("head_") { "h" } else { "pos" };
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
        {"layer": layer, "component": component, "unit": unit, "intervention": {"type": "vanilla"}}]}))
    .unwrap();
    let mut patched = IntervenableModel::new(model, config, &plugins, 0).unwrap();
    let sources = [Some(inputs.corrupted.shallow_clone())];
    let output = patched.run(&inputs.clean, &sources, &UnitLocations::whole(), &Subspaces::None).unwrap().output;
    let value = Metric::LogitDiff.of(&output.select(1, -1), inputs).unwrap().double_value(&[]);
    (value, patched.into_model())
}

/// Patching every edge out of a sender is patching the sender's output (on GPT-2, and on Gemma 3 where the outputs
/// pass a post-norm first); patching every edge out of the input, or into the logits, is the corrupted run.
#[test]
fn patching_all_of_a_senders_edges_is_patching_the_sender() {
    for (plugin, dir) in [("vene_gpt2", gpt2_dir()), ("vene_llama", fixtures().join("llama/gemma3_text/model"))] {
        let plugins = plugins(&[plugin]);
        let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F64).unwrap();
        let inputs = prompt_pairs(5);
        let graph = Graph::of(&model, false).unwrap();
        let (corrupted, model) = node_patched(model, &inputs, "block_input", 0);
        let (attention, model) = node_patched(model, &inputs, &graph.attention_site, 1);
        let (mlp, model) = node_patched(model, &inputs, &graph.mlp_site, 0);
        let mut patching = EdgePatching::new(model, &plugins, &inputs, Metric::LogitDiff, false).unwrap();
        let (senders, receivers) = vene_host::studies::circuit::graph::nodes(graph.layers, None);
        let without = |patching: &mut EdgePatching, cut: &dyn Fn(usize, usize) -> bool| {
            let kept: Vec<bool> = patching.edges().iter().map(|&(s, r)| !cut(s, r)).collect();
            patching.metric(&inputs, &kept, Metric::LogitDiff).unwrap()
        };
        let name = |s: usize| senders[s].name();
        let cases: [Cut<'_>; 4] = [
            ("every edge out of the input", &|s, _| name(s) == "input", corrupted),
            ("every edge into the logits", &|_, r| receivers[r].name() == "logits", corrupted),
            ("every edge out of a1", &|s, _| name(s) == "a1", attention),
            ("every edge out of m0", &|s, _| name(s) == "m0", mlp),
        ];
        for (what, cut, expected) in cases {
            let value = without(&mut patching, cut);
            assert!((value - expected).abs() < 1e-9, "{plugin}, {what}: {value} vs node patching {expected}");
        }
        let clean = without(&mut patching, &|_, _| false);
        assert!((clean - corrupted).abs() > 1e-3, "{plugin}: the corruption changes the metric");
    }
}

/// The head-level graph: each head's share at `head_attention_output` (collecting it leaves the run bit for bit)
/// adds up to its layer's attention write less a constant (the output projection's bias), patching every head's
/// share is patching the write, the head-level edge scores add up to the layer-level ones (over the sender's heads
/// and the receiver's query, key and value inputs), and cutting every edge out of a layer's heads, or into them, is
/// cutting its attention's — on GPT-2 and on Gemma 3 (post-attention norm, grouped-query attention).
#[test]
fn head_level_edges_split_their_layers_attention() {
    for (plugin, dir) in [("vene_gpt2", gpt2_dir()), ("vene_llama", fixtures().join("llama/gemma3_text/model"))] {
        let plugins = plugins(&[plugin]);
        let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F64).unwrap();
        let inputs = prompt_pairs(5);
        let graph = Graph::of(&model, true).unwrap();
        let heads = graph.heads.unwrap();
        assert_eq!(heads.query, model.catalog().num_heads as usize);
        let plain = model.forward_plain(&inputs.clean).unwrap().output;
        let config = json!({"representations": [
            {"layer": 1, "component": "head_attention_output", "unit": "h", "intervention": {"type": "collect"}},
            {"layer": 1, "component": graph.attention_site, "unit": "pos", "intervention": {"type": "collect"}}]});
        let mut collector =
            IntervenableModel::new(model, serde_json::from_value(config).unwrap(), &plugins, 0).unwrap();
        let run = collector.run(&inputs.clean, &[], &UnitLocations::whole(), &Subspaces::None).unwrap();
        assert_eq!((&run.output - &plain).abs().max().double_value(&[]), 0.0, "{plugin}: collecting changes nothing");
        assert_eq!(run.collected[0].size()[1], heads.query as i64);
        let rest = &run.collected[1] - run.collected[0].sum_dim_intlist(1, false, Kind::Double);
        let spread = (&rest - rest.select(1, 0).unsqueeze(1)).abs().max().double_value(&[]);
        assert!(spread < 1e-12, "{plugin}: what no head writes differs by position ({spread})");
        let (by_write, model) = node_patched(collector.into_model(), &inputs, &graph.attention_site, 1);
        let (by_heads, model) = node_patched(model, &inputs, "head_attention_output", 1);
        assert!((by_write - by_heads).abs() < 1e-9, "{plugin}: heads {by_heads} vs write {by_write}");

        let options = CircuitOptions { top_k: 0, random_k: 0, sizes: vec![0], ..options() };
        let (layer_level, model) = find_circuit(model, &plugins, &inputs, &options).unwrap();
        let per_head = CircuitOptions { per_head: true, ..options };
        let (head_level, model) = find_circuit(model, &plugins, &inputs, &per_head).unwrap();
        assert_eq!(head_level.heads, Some(heads));
        assert_eq!(head_level.edges.len(), graph.edges().len());
        let part_of = |part: &str, whole: &str| part == whole || part.starts_with(&format!("{whole}.h"));
        let inputs_per_layer = heads.query + 2 * heads.key_value;
        for edge in &layer_level.edges {
            let parts: Vec<f64> = head_level
                .edges
                .iter()
                .filter(|e| part_of(&e.sender, &edge.sender) && part_of(&e.receiver, &edge.receiver))
                .map(|e| e.score)
                .collect();
            let senders = if edge.sender.starts_with('a') { heads.query } else { 1 };
            let receivers = if edge.receiver.starts_with('a') { inputs_per_layer } else { 1 };
            assert_eq!(parts.len(), senders * receivers, "{edge:?}");
            let sum: f64 = parts.iter().sum();
            assert!((sum - edge.score).abs() < 1e-9 * (1.0 + edge.score.abs()), "{plugin} {edge:?}: heads sum {sum}");
        }

        let layer_graph = Graph::of(&model, false).unwrap();
        let mut by_layer = EdgePatching::new(model.clone(), &plugins, &inputs, Metric::LogitDiff, false).unwrap();
        let mut by_head = EdgePatching::new(model, &plugins, &inputs, Metric::LogitDiff, true).unwrap();
        let kept = |patching: &EdgePatching, keep: &dyn Fn(usize, usize) -> bool| -> Vec<bool> {
            patching.edges().iter().map(|&(s, r)| keep(s, r)).collect()
        };
        let into_layer = kept(&by_layer, &|_, r| layer_graph.receiver(r) != Node::Attention(1));
        let into_heads = kept(&by_head, &|_, r| !matches!(graph.receiver(r), Node::HeadInput(1, ..)));
        let layer_cut = by_layer.metric(&inputs, &into_layer, Metric::LogitDiff).unwrap();
        let heads_cut = by_head.metric(&inputs, &into_heads, Metric::LogitDiff).unwrap();
        assert!((layer_cut - heads_cut).abs() < 1e-9, "{plugin}: into the heads {heads_cut} vs the layer {layer_cut}");
        let one_input = kept(&by_head, &|_, r| graph.receiver(r) != Node::HeadInput(1, 0, Qkv::Query));
        let one = by_head.metric(&inputs, &one_input, Metric::LogitDiff).unwrap();
        assert!((one - layer_cut).abs() > 1e-6, "{plugin}: one head's query is not the whole layer's input");
        let cut_layer = kept(&by_layer, &|s, _| layer_graph.sender(s) != Node::Attention(1));
        let cut_heads = kept(&by_head, &|s, _| !matches!(graph.sender(s), Node::Head(1, _)));
        let layer_cut = by_layer.metric(&inputs, &cut_layer, Metric::LogitDiff).unwrap();
        let heads_cut = by_head.metric(&inputs, &cut_heads, Metric::LogitDiff).unwrap();
        assert!((layer_cut - heads_cut).abs() < 1e-9, "{plugin}: heads cut {heads_cut} vs layer cut {layer_cut}");
        assert!((heads_cut - by_write).abs() < 1e-9, "{plugin}: heads cut {heads_cut} vs patching {by_write}");
        let clean = by_head.metric(&inputs, &vec![true; cut_heads.len()], Metric::LogitDiff).unwrap();
        let one_head = kept(&by_head, &|s, _| graph.sender(s) != Node::Head(1, 0));
        let one = by_head.metric(&inputs, &one_head, Metric::LogitDiff).unwrap();
        assert!((one - clean).abs() > 1e-6 && (one - heads_cut).abs() > 1e-6, "{plugin}: one head is part of it");
        let corrupted = by_head.metric(&inputs, &vec![false; cut_heads.len()], Metric::LogitDiff).unwrap();
        assert!((corrupted - head_level.corrupted).abs() < 1e-9, "{plugin}: nothing kept is the corrupted run");
    }
}

/// Integrated gradients: the input's edges add up to the whole change of the metric (completeness), which the
/// gradient at the clean run alone does not give.
#[test]
fn integrated_gradients_of_the_input_edges_add_up_to_the_whole_change() {
    let (plugins, model) = gpt2_f64();
    let inputs = prompt_pairs(5);
    let input_total = |circuit: &vene_host::studies::circuit::Circuit| -> f64 {
        circuit.edges.iter().filter(|e| e.sender == "input").map(|e| e.score).sum()
    };
    let options = CircuitOptions { top_k: 0, random_k: 0, sizes: vec![0], ..options() };
    let (eap, model) = find_circuit(model, &plugins, &inputs, &options).unwrap();
    let ig_options = CircuitOptions { ig_steps: 64, ..options.clone() };
    let (ig, model) = find_circuit(model, &plugins, &inputs, &ig_options).unwrap();
    let change = ig.corrupted - ig.clean;
    assert_eq!(ig.method, "EAP-IG (64 steps)");
    assert!((input_total(&ig) - change).abs() < 1e-3 * change.abs(), "IG {} vs {change}", input_total(&ig));
    assert!((input_total(&eap) - change).abs() > 1e-2 * change.abs(), "EAP {} vs {change}", input_total(&eap));

    // KL to the clean run: its gradient there is zero, so EAP is refused, and EAP-IG's input edges add up to it.
    let eap_kl = CircuitOptions { metric: Metric::Kl, ..options };
    let message = find_circuit(model.clone(), &plugins, &inputs, &eap_kl).err().expect("refused").to_string();
    assert!(message.contains("EAP takes the metric's gradient at the clean run"), "{message}");
    let (kl, _) = find_circuit(model, &plugins, &inputs, &CircuitOptions { metric: Metric::Kl, ..ig_options }).unwrap();
    assert!(kl.clean.abs() < 1e-12 && kl.corrupted > 1e-2, "{} {}", kl.clean, kl.corrupted);
    assert!((kl.curve[0].metric - kl.corrupted).abs() < 1e-9, "the empty circuit is the corrupted run");
    assert!(
        (input_total(&kl) - kl.corrupted).abs() < 1e-3 * kl.corrupted,
        "IG {} vs {}",
        input_total(&kl),
        kl.corrupted
    );
}

#[test]
fn bad_circuit_inputs_are_named() {
    let (plugins, model) = gpt2_f64();
    let inputs = prompt_pairs(5);
    let error = |model, options: &CircuitOptions, inputs: &AttributionInputs| {
        find_circuit(model, &plugins, inputs, options).err().expect("refused").to_string()
    };
    let bad = CircuitOptions { faithfulness: 1.5, ..options() };
    let message = error(model.clone(), &bad, &inputs);
    assert!(message.contains("faithfulness 1.5 is not a share between 0 and 1"), "{message}");
    let bad = CircuitOptions { keep: Some(10_000), ..options() };
    let message = error(model.clone(), &bad, &inputs);
    assert!(message.contains("a circuit of 10000 edges") && message.contains("the graph has"), "{message}");
    let same = AttributionInputs { corrupted: inputs.clean.shallow_clone(), ..prompt_pairs(5) };
    let message = error(model.clone(), &options(), &same);
    assert!(message.contains("nothing for a circuit to recover"), "{message}");
    let short = AttributionInputs { corrupted: prompt_pairs(4).corrupted, ..prompt_pairs(5) };
    let message = error(model.clone(), &options(), &short);
    assert!(message.contains("the same shape"), "{message}");
    let mut patching = EdgePatching::new(model, &plugins, &inputs, Metric::LogitDiff, false).unwrap();
    let message = patching.metric(&inputs, &[true; 3], Metric::LogitDiff).expect_err("refused").to_string();
    assert!(message.contains("3 kept flags for a graph of"), "{message}");

    let neox = crate::common::plugins(&["vene_gpt_neox"]);
    let model = LoadedModel::load(&neox, &fixtures().join("gpt_neox/model"), DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let message = find_circuit(model, &neox, &inputs, &options()).err().expect("refused").to_string();
    assert!(message.contains("in parallel"), "{message}");
}
