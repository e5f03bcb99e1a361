//! Exact re-patching of chosen nodes: the clean prompts run with one node's activation taken from the corrupted
//! prompts (every prompt at once; each site's corrupted activations collected once), and the metric's change set
//! beside the estimate.

use rand::{seq::SliceRandom, SeedableRng};
use serde_json::json;
use tch::Tensor;

use super::{AttributionInputs, AttributionOptions, ComponentScores, Metric, Verified};
use crate::{
    error::Result,
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    studies::bind,
    train::last_logits,
};

/// A node by index: component (into the scores), layer, head, position; and why it was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Chosen {
    component: usize,
    layer: usize,
    head: usize,
    position: usize,
    estimate: f64,
    /// What the top nodes are chosen by: the GradDrop score where there is one, else |estimate|.
    rank: f64,
    why: &'static str,
}

fn all_nodes(components: &[ComponentScores], why: &'static str) -> Vec<Chosen> {
    let mut nodes = Vec::new();
    for (component, scores) in components.iter().enumerate() {
        for (layer, heads) in scores.scores.iter().enumerate() {
            for (head, positions) in heads.iter().enumerate() {
                for (position, &estimate) in positions.iter().enumerate() {
                    let grad_drop = scores.grad_drop.as_ref().map(|g| g[layer][head][position]);
                    let rank = grad_drop.unwrap_or(estimate.abs());
                    nodes.push(Chosen { component, layer, head, position, estimate, rank, why });
                }
            }
        }
    }
    nodes
}

/// The top `top_k` nodes by |estimate| (by GradDrop score with `grad_drop`), then `random_k` of the others (seeded).
pub(super) fn choose(components: &[ComponentScores], options: &AttributionOptions) -> Vec<Chosen> {
    let mut nodes = all_nodes(components, "top");
    nodes.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    let mut rest = nodes.split_off(options.top_k.min(nodes.len()));
    rest.shuffle(&mut rand::rngs::StdRng::seed_from_u64(options.seed));
    nodes.extend(rest.into_iter().take(options.random_k).map(|node| Chosen { why: "random", ..node }));
    nodes
}

/// Every node, for `verify_all`.
pub(super) fn every_node(components: &[ComponentScores]) -> Vec<Chosen> {
    all_nodes(components, "all")
}

/// Every site's activations on the corrupted prompts, in one pass: each site in `sites` (nodes grouped by site).
fn corrupted_sites(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    components: &[ComponentScores],
    sites: &[&[(usize, &Chosen)]],
) -> Result<(Vec<Tensor>, LoadedModel)> {
    if sites.is_empty() {
        return Ok((Vec::new(), model));
    }
    let reps: Vec<_> = sites
        .iter()
        .map(|site| {
            let scores = &components[site[0].1.component];
            let unit = if scores.per_head { "h" } else { "pos" };
            json!({"layer": site[0].1.layer, "component": scores.component, "unit": unit,
                   "intervention": {"type": "collect"}})
        })
        .collect();
    let mut collector = bind(model, plugins, json!({ "representations": reps }))?;
    let _no_grad = tch::no_grad_guard();
    let collected = collector.run(&inputs.corrupted, &[], &UnitLocations::whole(), &Subspaces::None)?.collected;
    Ok((collected, collector.into_model()))
}

/// Patches each chosen node exactly from its site's corrupted activations (collected once for every node); nodes of
/// one site share one bound model.
pub(super) fn verify(
    mut model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    components: &[ComponentScores],
    chosen: &[Chosen],
    metric: Metric,
    clean: f64,
) -> Result<(Vec<Verified>, LoadedModel)> {
    let batch = inputs.clean.batch_size() as usize;
    let mut order: Vec<(usize, &Chosen)> = chosen.iter().enumerate().collect();
    order.sort_by_key(|(_, n)| (n.component, n.layer));
    let mut verified = Vec::new();
    let sites: Vec<&[(usize, &Chosen)]> =
        order.chunk_by(|(_, a), (_, b)| (a.component, a.layer) == (b.component, b.layer)).collect();
    let (collected, returned) = corrupted_sites(model, plugins, inputs, components, &sites)?;
    model = returned;
    let mut corrupted = collected.into_iter();
    for site in sites {
        let scores = &components[site[0].1.component];
        let heads = scores.per_head;
        let unit = if heads { "h.pos" } else { "pos" };
        let config = json!({"representations": [{"layer": site[0].1.layer, "component": scores.component,
                                                 "unit": unit, "intervention": {"type": "vanilla"}}]});
        let mut patcher = bind(model, plugins, config)?;
        let corrupted = corrupted.next().unwrap_or_default();
        for &(index, node) in site {
            let side = if heads {
                json!([[vec![vec![node.head]; batch], vec![vec![node.position]; batch]]])
            } else {
                json!([vec![vec![node.position]; batch]])
            };
            let locations = UnitLocations::parse(Some(&json!({"sources->base": [side, side]})))?;
            // The node's own corrupted activation, shaped as a collect at its unit gives it.
            let source = if heads {
                corrupted.narrow(1, node.head as i64, 1).narrow(2, node.position as i64, 1)
            } else {
                corrupted.narrow(1, node.position as i64, 1)
            };
            let effect = {
                let _no_grad = tch::no_grad_guard();
                let run =
                    patcher.run_with_activations(&inputs.clean, vec![Some(source)], &locations, &Subspaces::None)?;
                let logits = last_logits(&run.output, inputs.clean.attention_mask.as_ref());
                metric.of(&logits, inputs)?.double_value(&[]) - clean
            };
            verified.push((
                index,
                Verified {
                    component: scores.component.clone(),
                    layer: node.layer,
                    head: heads.then_some(node.head),
                    position: node.position,
                    estimate: node.estimate,
                    exact: effect,
                    chosen: node.why.to_string(),
                },
            ));
        }
        model = patcher.into_model();
    }
    // Back in the order chosen: the top nodes first, by |estimate|.
    verified.sort_by_key(|(index, _)| *index);
    Ok((verified.into_iter().map(|(_, v)| v).collect(), model))
}

/// Each component's grid of exact effects from `verified` (every node).
pub(super) fn fill_exact(components: &mut [ComponentScores], verified: &[Verified]) {
    for scores in components.iter_mut() {
        let mut grid: Vec<Vec<Vec<f64>>> =
            scores.scores.iter().map(|heads| heads.iter().map(|row| vec![0.0; row.len()]).collect()).collect();
        for node in verified.iter().filter(|v| v.component == scores.component) {
            grid[node.layer][node.head.unwrap_or(0)][node.position] = node.exact;
        }
        scores.exact = Some(grid);
    }
}

/// Spearman's rank correlation of `(x, y)` pairs (ties get their mean rank); `None` under three pairs or when one
/// side is constant.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let ranks = |values: Vec<f64>| -> Vec<f64> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut ranks = vec![0.0; values.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            while end + 1 < order.len() && values[order[end + 1]] == values[order[start]] {
                end += 1;
            }
            for &index in &order[start..=end] {
                ranks[index] = (start + end) as f64 / 2.0;
            }
            start = end + 1;
        }
        ranks
    };
    let x = ranks(pairs.iter().map(|p| p.0).collect());
    let y = ranks(pairs.iter().map(|p| p.1).collect());
    let mean = (pairs.len() - 1) as f64 / 2.0;
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(&y) {
        xy += (a - mean) * (b - mean);
        xx += (a - mean).powi(2);
        yy += (b - mean).powi(2);
    }
    (xx > 0.0 && yy > 0.0).then(|| xy / (xx * yy).sqrt())
}
