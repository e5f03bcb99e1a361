//! GradDrop (AtP*, Kramár et al. 2024): a node whose effects along different paths cancel gets a small AtP estimate
//! although patching it matters. So the estimate is taken again L times, each time with the gradient through one
//! layer's residual writes (its attention's and its MLP's output) stopped — the writes keep their values, detached —
//! and a node's GradDrop score is the mean of those estimates' magnitudes over L − 1 layers. It ranks nodes (for
//! the exact check); it has no sign.

use serde_json::json;
use tch::Tensor;
use vene_api::SiteLayout;

use super::{estimate, AttributionInputs, Metric};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    studies::bind,
};

/// The sites holding each layer's attention and MLP writes into the residual stream, and the layer count.
fn residual_writes(model: &LoadedModel) -> Result<(String, String, usize)> {
    let catalog = model.catalog();
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            catalog
                .components
                .iter()
                .find(|c| c.name.as_str() == *name && c.layout == SiteLayout::Sequence)
                .map(|c| (name.to_string(), c.layers as usize))
        })
    };
    match (find(&["attention_post_norm_output", "attention_output"]), find(&["mlp_post_norm_output", "mlp_output"])) {
        (Some((attention, layers)), Some((mlp, _))) if layers > 1 => Ok((attention, mlp, layers)),
        _ => Err(VeneError::Inputs(format!(
            "GradDrop stops the gradient through each layer's attention_output and mlp_output, which this {} model \
             does not have (or it has one layer)",
            catalog.model_type.as_str()
        ))),
    }
}

/// Each layer's attention and MLP writes on the clean prompts, detached: `[attention 0, mlp 0, attention 1, …]`.
fn clean_writes(
    model: LoadedModel,
    plugins: &PluginSet,
    (attention, mlp, layers): (&str, &str, usize),
    inputs: &AttributionInputs,
) -> Result<(Vec<Tensor>, LoadedModel)> {
    let _no_grad = tch::no_grad_guard();
    let rep = |component: &str, layer: usize| json!({"layer": layer, "component": component, "unit": "pos", "intervention": {"type": "collect"}});
    let reps: Vec<_> = (0..layers).flat_map(|l| [rep(attention, l), rep(mlp, l)]).collect();
    let mut collector = bind(model, plugins, json!({ "representations": reps }))?;
    let run = collector.run(&inputs.clean, &[], &UnitLocations::whole(), &Subspaces::None)?;
    Ok((run.collected.iter().map(Tensor::detach).collect(), collector.into_model()))
}

/// Every node's GradDrop score, one tensor per node site (in the order of `sites` × layers), shaped as its scores.
pub(super) fn scores(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    sites: &[(String, SiteLayout, usize)],
    differences: &[Tensor],
    metric: Metric,
) -> Result<(Vec<Tensor>, LoadedModel)> {
    let (attention, mlp, layers) = residual_writes(&model)?;
    let (writes, mut model) = clean_writes(model, plugins, (&attention, &mlp, layers), inputs)?;
    let like: Vec<Tensor> = differences.iter().map(|d| d.to_kind(model.kind())).collect();
    let mut totals: Option<Vec<Tensor>> = None;
    for layer in 0..layers {
        let mut reps = estimate::representations(sites, &json!({"type": "addition"}));
        for component in [&attention, &mlp] {
            reps.push(
                json!({"layer": layer, "component": component, "unit": "pos", "intervention": {"type": "vanilla"}}),
            );
        }
        let mut tap = bind(model, plugins, json!({ "representations": reps }))?;
        let stopped = vec![writes[2 * layer].shallow_clone(), writes[2 * layer + 1].shallow_clone()];
        let (gradients, _, _) = estimate::gradients_at(&mut tap, inputs, &like, stopped, metric)?;
        model = tap.into_model();
        let magnitudes: Vec<Tensor> =
            differences.iter().zip(&gradients).map(|(d, g)| estimate::node_scores(d, g).abs()).collect();
        totals = Some(match totals {
            None => magnitudes,
            Some(sum) => sum.iter().zip(&magnitudes).map(|(a, b)| a + b).collect(),
        });
    }
    let scale = 1.0 / (layers - 1) as f64;
    Ok((totals.unwrap_or_default().into_iter().map(|t| t * scale).collect(), model))
}
