//! Circuits by edge attribution: every edge of the residual-stream graph ([`graph`]) scored by EAP or EAP-IG
//! ([`score`]) from a few passes, then checked exactly ([`patch`]): the top edges (and a random control) each patched
//! alone, and circuits of the top n edges run with every other edge patched from the corrupted prompts, giving a
//! faithfulness curve — the share of the clean-minus-corrupted metric each circuit recovers.

pub mod graph;
mod patch;
mod report;
mod score;

use rand::{seq::SliceRandom, SeedableRng};
use serde::Serialize;
use tch::Tensor;

pub use graph::{Graph, Heads, Node, Qkv};
pub use patch::EdgePatching;

use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    studies::attribution::{spearman, AttributionInputs, Metric},
};

#[derive(Debug, Clone)]
pub struct CircuitOptions {
    pub metric: Metric,
    /// 0: EAP (the gradient at the clean run); k: EAP-IG over k interpolation steps of the input embeddings.
    pub ig_steps: usize,
    /// Edges patched alone exactly: the top `top_k` by |score| and `random_k` drawn (seeded) from the rest.
    pub top_k: usize,
    pub random_k: usize,
    /// Patch every edge alone exactly and report the rank correlation over all of them.
    pub verify_all: bool,
    pub seed: u64,
    /// Circuit sizes (edges kept, by |score|) on the faithfulness curve; empty: a default ladder up to every edge.
    pub sizes: Vec<usize>,
    /// The circuit drawn: `keep` edges, or else the smallest on the curve recovering `faithfulness`.
    pub keep: Option<usize>,
    pub faithfulness: f64,
    /// The head-level graph: heads as senders and, through their query, key and value inputs, as receivers.
    pub per_head: bool,
}

/// One edge's score and, when patched alone exactly, its exact effect.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeScore {
    pub sender: String,
    pub receiver: String,
    /// Estimated change of the metric when the edge alone is patched from the corrupted prompts.
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
}

/// A circuit of the top `edges` edges: the metric with every other edge patched, and the share recovered.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CurvePoint {
    pub edges: usize,
    pub metric: f64,
    /// `(metric − corrupted) / (clean − corrupted)`: 0 nothing recovered, 1 all of it.
    pub faithfulness: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Circuit {
    pub metric: Metric,
    pub method: String,
    pub prompts: usize,
    pub layers: usize,
    /// A head-level graph's heads per layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads: Option<Heads>,
    pub clean: f64,
    pub corrupted: f64,
    /// Every edge, by |score| (largest first).
    pub edges: Vec<EdgeScore>,
    /// Spearman correlation of score and exact effect over the edges patched alone (and over every edge with
    /// `verify_all`).
    pub rank_correlation_verified: Option<f64>,
    pub rank_correlation_all: Option<f64>,
    pub curve: Vec<CurvePoint>,
    /// The circuit drawn: its top edges and what it recovers.
    pub circuit: CurvePoint,
    #[serde(skip)]
    pub seconds: Seconds,
}

/// Wall-clock seconds of each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seconds {
    pub scores: f64,
    pub verify: f64,
    pub curve: f64,
}

/// Sizes on the curve by default: a roughly logarithmic ladder, then every edge.
fn default_sizes(total: usize) -> Vec<usize> {
    let ladder = [0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000];
    let mut sizes: Vec<usize> = ladder.into_iter().filter(|&n| n < total).collect();
    sizes.push(total);
    sizes
}

fn check(inputs: &AttributionInputs, options: &CircuitOptions) -> Result<()> {
    crate::studies::attribution::check_inputs(inputs)?;
    if !(0.0..=1.0).contains(&options.faithfulness) {
        return Err(VeneError::Inputs(format!("faithfulness {} is not a share between 0 and 1", options.faithfulness)));
    }
    Ok(())
}

/// Scores every edge, patches the chosen ones exactly, and runs the circuits of the faithfulness curve.
pub fn find_circuit(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    options: &CircuitOptions,
) -> Result<(Circuit, LoadedModel)> {
    check(inputs, options)?;
    if options.ig_steps == 0 {
        options.metric.check_gradient_at_clean("EAP")?;
    }
    let graph = Graph::of(&model, options.per_head)?;
    inputs.prepare(&model, options.metric)?;
    let started = std::time::Instant::now();
    let (Scored { scores, clean, corrupted, corrupted_outputs }, model) =
        edge_scores(model, plugins, &graph, inputs, options)?;
    if (clean - corrupted).abs() < 1e-9 {
        return Err(VeneError::Inputs(format!(
            "the clean and the corrupted prompts give the same {} ({clean:.6}): there is nothing for a circuit to \
             recover",
            options.metric
        )));
    }
    let edge_list = graph.edges();
    let mut edges: Vec<(usize, EdgeScore)> = edge_list
        .iter()
        .enumerate()
        .map(|(index, &(s, r))| {
            let score = scores.double_value(&[s as i64, r as i64]);
            let (sender, receiver) = (graph.sender(s).name(), graph.receiver(r).name());
            (index, EdgeScore { sender, receiver, score, exact: None, chosen: None })
        })
        .collect();
    edges.sort_by(|a, b| b.1.score.abs().total_cmp(&a.1.score.abs()));
    let mut seconds = Seconds { scores: started.elapsed().as_secs_f64(), ..Seconds::default() };

    let mut runner = EdgePatching::with_corrupted(model, plugins, &graph, corrupted_outputs)?;
    let started = std::time::Instant::now();
    let chosen = choose(edges.len(), options);
    for &(position, why) in &chosen {
        let mut kept = vec![true; edge_list.len()];
        kept[edges[position].0] = false;
        let exact = runner.metric(inputs, &kept, options.metric)? - clean;
        edges[position].1.exact = Some(exact);
        edges[position].1.chosen = Some(why.to_string());
    }
    seconds.verify = started.elapsed().as_secs_f64();
    let pairs = |chosen: &[&str]| {
        let pairs: Vec<(f64, f64)> = edges
            .iter()
            .filter(|(_, e)| e.chosen.as_deref().is_some_and(|why| chosen.contains(&why)))
            .filter_map(|(_, e)| e.exact.map(|exact| (e.score, exact)))
            .collect();
        spearman(&pairs)
    };
    let rank_correlation_verified = pairs(&["top", "random"]);
    let rank_correlation_all = if options.verify_all { pairs(&["top", "all"]) } else { None };

    let started = std::time::Instant::now();
    let sizes = if options.sizes.is_empty() { default_sizes(edges.len()) } else { options.sizes.clone() };
    let mut curve = Vec::new();
    for &size in &sizes {
        curve.push(curve_point(&mut runner, inputs, &edges, size, (clean, corrupted), options.metric)?);
    }
    let circuit = match options.keep {
        Some(keep) => curve_point(&mut runner, inputs, &edges, keep, (clean, corrupted), options.metric)?,
        None => curve
            .iter()
            .find(|p| p.faithfulness >= options.faithfulness && p.edges > 0)
            .or(curve.last())
            .copied()
            .ok_or_else(|| VeneError::Inputs("no circuit sizes to evaluate".to_string()))?,
    };
    seconds.curve = started.elapsed().as_secs_f64();
    let method = match options.ig_steps {
        0 => "EAP".to_string(),
        k => format!("EAP-IG ({k} steps)"),
    };
    let result = Circuit {
        metric: options.metric,
        method,
        prompts: inputs.clean.batch_size() as usize,
        layers: graph.layers,
        heads: graph.heads,
        clean,
        corrupted,
        edges: edges.into_iter().map(|(_, e)| e).collect(),
        rank_correlation_verified,
        rank_correlation_all,
        curve,
        circuit,
        seconds,
    };
    Ok((result, runner.into_model()))
}

/// Positions (into the edges sorted by |score|) patched alone: the top `top_k`, `random_k` of the rest (seeded),
/// or every edge with `verify_all`.
fn choose(count: usize, options: &CircuitOptions) -> Vec<(usize, &'static str)> {
    if options.verify_all {
        let top = options.top_k.min(count);
        return (0..count).map(|i| (i, if i < top { "top" } else { "all" })).collect();
    }
    let mut chosen: Vec<(usize, &'static str)> = (0..options.top_k.min(count)).map(|i| (i, "top")).collect();
    let mut rest: Vec<usize> = (chosen.len()..count).collect();
    rest.shuffle(&mut rand::rngs::StdRng::seed_from_u64(options.seed));
    chosen.extend(rest.into_iter().take(options.random_k).map(|i| (i, "random")));
    chosen
}

/// The circuit of the top `size` edges.
fn curve_point(
    runner: &mut EdgePatching,
    inputs: &AttributionInputs,
    edges: &[(usize, EdgeScore)],
    size: usize,
    (clean, corrupted): (f64, f64),
    metric: Metric,
) -> Result<CurvePoint> {
    if size > edges.len() {
        return Err(VeneError::Inputs(format!("a circuit of {size} edges: the graph has {}", edges.len())));
    }
    let mut kept = vec![false; edges.len()];
    edges.iter().take(size).for_each(|(index, _)| kept[*index] = true);
    let value = runner.metric(inputs, &kept, metric)?;
    Ok(CurvePoint { edges: size, metric: value, faithfulness: (value - corrupted) / (clean - corrupted) })
}

/// What the scoring passes found.
struct Scored {
    /// `(senders, receivers)`, zero where the pair is not an edge.
    scores: Tensor,
    clean: f64,
    corrupted: f64,
    /// Each sender's output on the corrupted prompts, for the exact runs.
    corrupted_outputs: Vec<Tensor>,
}

/// Every (sender, receiver) score and the metric on the clean and the corrupted prompts.
fn edge_scores(
    model: LoadedModel,
    plugins: &PluginSet,
    graph: &Graph,
    inputs: &AttributionInputs,
    options: &CircuitOptions,
) -> Result<(Scored, LoadedModel)> {
    let metric = options.metric;
    let (clean_outputs, clean, model) = score::sender_outputs(model, plugins, graph, (&inputs.clean, inputs), metric)?;
    let (corrupted_outputs, corrupted, model) =
        score::sender_outputs(model, plugins, graph, (&inputs.corrupted, inputs), metric)?;
    let interpolate = options.ig_steps > 0;
    let mut tap = score::bind_taps(model, plugins, graph, interpolate)?;
    let like = &clean_outputs[0];
    let gradients = if interpolate {
        let steps = options.ig_steps;
        let mut sum: Option<Vec<Tensor>> = None;
        for step in 0..steps {
            // Midpoints of k equal steps from the clean (0) to the corrupted (1) embeddings.
            let alpha = (step as f64 + 0.5) / steps as f64;
            let between = &clean_outputs[0] + (&corrupted_outputs[0] - &clean_outputs[0]) * alpha;
            let grads = score::receiver_gradients(&mut tap, graph, inputs, like, Some(&between), metric)?;
            sum = Some(match sum {
                None => grads,
                Some(total) => total.iter().zip(&grads).map(|(a, b)| a + b).collect(),
            });
        }
        sum.unwrap_or_default().into_iter().map(|g| g / steps as f64).collect()
    } else {
        score::receiver_gradients(&mut tap, graph, inputs, like, None, metric)?
    };
    let scores = score::edge_scores(graph, &clean_outputs, &corrupted_outputs, &gradients);
    Ok((Scored { scores, clean, corrupted, corrupted_outputs }, tap.into_model()))
}
