//! The estimates: every node site collected on the corrupted and the clean prompts, then the metric's gradient at
//! those sites, taken through an `addition` of a zero tensor (so the gradient of the metric with respect to that
//! tensor is its gradient with respect to the activation) — or, for integrated gradients, averaged over runs whose
//! input embeddings are interpolated from clean to corrupted.

use serde_json::{json, Value};
use tch::{Kind, Tensor};
use vene_api::SiteLayout;

use super::{AttributionInputs, AttributionOptions, ComponentScores, Metric};
use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    studies::bind,
    train::last_logits,
};

/// The site the IG interpolation acts on: the first block's input (the embeddings as the blocks read them).
const EMBEDDINGS: &str = "block_input";

/// One representation per component × layer, with `intervention`; heads as unit `h`, sequences as `pos`.
pub(super) fn representations(sites: &[(String, SiteLayout, usize)], intervention: &Value) -> Vec<Value> {
    sites
        .iter()
        .flat_map(|(component, layout, layers)| {
            let unit = if *layout == SiteLayout::Heads { "h" } else { "pos" };
            (0..*layers).map(move |layer| {
                json!({"layer": layer, "component": component, "unit": unit, "intervention": intervention})
            })
        })
        .collect()
}

/// The metric of a run's output on `inputs`.
fn metric_of(output: &Tensor, inputs: &ForwardInputs, batch: &AttributionInputs, metric: Metric) -> Result<Tensor> {
    let logits = last_logits(output, inputs.attention_mask.as_ref());
    metric.of(&logits, batch)
}

/// The collected sites of `inputs` and the metric there.
fn collect(
    model: LoadedModel,
    plugins: &PluginSet,
    representations: Vec<Value>,
    (inputs, batch): (&ForwardInputs, &AttributionInputs),
    metric: Metric,
) -> Result<(Vec<Tensor>, f64, LoadedModel)> {
    let _no_grad = tch::no_grad_guard();
    let mut collector = bind(model, plugins, json!({ "representations": representations }))?;
    let run = collector.run(inputs, &[], &UnitLocations::whole(), &Subspaces::None)?;
    let value = metric_of(&run.output, inputs, batch, metric)?.double_value(&[]);
    Ok((run.collected, value, collector.into_model()))
}

/// What the gradient passes found: each node's estimate, and the metric on the clean and the corrupted prompts.
pub(super) struct Estimates {
    pub scores: Vec<ComponentScores>,
    /// Each node site's corrupted-minus-clean activation (one per component × layer), in f64.
    pub differences: Vec<Tensor>,
    pub clean: f64,
    pub corrupted: f64,
}

/// Every node's estimate, per component.
pub(super) fn estimates(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    sites: &[(String, SiteLayout, usize)],
    options: &AttributionOptions,
) -> Result<(Estimates, LoadedModel)> {
    let mut reps = representations(sites, &json!({"type": "collect"}));
    let interpolate = options.ig_steps > 0;
    if interpolate {
        if !model.catalog().components.iter().any(|c| c.name.as_str() == EMBEDDINGS) {
            return Err(VeneError::Inputs(format!(
                "integrated gradients interpolate the input embeddings at {EMBEDDINGS} 0, which this model does not \
                 have; use AtP (ig_steps 0)"
            )));
        }
        reps.push(json!({"layer": 0, "component": EMBEDDINGS, "intervention": {"type": "collect"}}));
    }
    let metric = options.metric;
    let (mut corrupted, corrupted_metric, model) =
        collect(model, plugins, reps.clone(), (&inputs.corrupted, inputs), metric)?;
    let mut taps = representations(sites, &json!({"type": "addition"}));
    let (gradients, clean, clean_metric, tap) = if interpolate {
        let corrupted_embeddings = corrupted.pop().unwrap_or_default();
        let (mut clean, clean_metric, model) = collect(model, plugins, reps, (&inputs.clean, inputs), metric)?;
        let clean_embeddings = clean.pop().unwrap_or_default();
        taps.push(json!({"layer": 0, "component": EMBEDDINGS, "intervention": {"type": "vanilla"}}));
        let mut tap = bind(model, plugins, json!({ "representations": taps }))?;
        let steps = options.ig_steps;
        let mut sum: Option<Vec<Tensor>> = None;
        for step in 0..steps {
            // Midpoints of k equal steps from clean (0) to corrupted (1).
            let alpha = (step as f64 + 0.5) / steps as f64;
            let between = &clean_embeddings + (&corrupted_embeddings - &clean_embeddings) * alpha;
            let (grads, _, _) = gradients_at(&mut tap, inputs, &corrupted, vec![between], metric)?;
            sum = Some(match sum {
                None => grads,
                Some(total) => total.iter().zip(&grads).map(|(a, b)| a + b).collect(),
            });
        }
        let gradients = sum.unwrap_or_default().into_iter().map(|g| g / steps as f64).collect();
        (gradients, clean, clean_metric, tap)
    } else {
        // One clean pass both taps the gradient and collects the clean activations (the zero added changes nothing).
        taps.extend(representations(sites, &json!({"type": "collect"})));
        let mut tap = bind(model, plugins, json!({ "representations": taps }))?;
        let (gradients, clean, clean_metric) = gradients_at(&mut tap, inputs, &corrupted, Vec::new(), metric)?;
        (gradients, clean, clean_metric, tap)
    };
    let model = tap.into_model();
    let differences: Vec<Tensor> = corrupted.iter().zip(&clean).map(|(c, k)| (c - k).to_kind(Kind::Double)).collect();
    let mut scores = Vec::new();
    let mut index = 0;
    for (component, layout, layers) in sites {
        let mut per_layer = Vec::new();
        for _ in 0..*layers {
            let score = node_scores(&differences[index], &gradients[index]);
            let score = if *layout == SiteLayout::Heads { score } else { score.unsqueeze(0) };
            per_layer.push(Vec::<Vec<f64>>::try_from(&score)?);
            index += 1;
        }
        let heads = per_layer.first().map_or(1, Vec::len);
        let positions = per_layer.first().and_then(|h| h.first()).map_or(0, Vec::len);
        scores.push(ComponentScores {
            component: component.clone(),
            per_head: *layout == SiteLayout::Heads,
            heads,
            positions,
            scores: per_layer,
            exact: None,
            grad_drop: None,
        });
    }
    Ok((Estimates { scores, differences, clean: clean_metric, corrupted: corrupted_metric }, model))
}

/// A leaf's gradient after a backward, in f64; zeros where the metric does not depend on it (no gradient at all).
pub(crate) fn gradient_of(leaf: &Tensor) -> Tensor {
    let grad = leaf.grad();
    if grad.defined() { grad } else { leaf.zeros_like() }.to_kind(Kind::Double)
}

/// `(b, seq, d)` → `(seq)`; `(b, heads, seq, d)` → `(heads, seq)`: each node's difference dotted with its gradient,
/// summed over prompts, as the metric is their mean (each prompt's gradient already carries its 1/b).
pub(super) fn node_scores(difference: &Tensor, gradient: &Tensor) -> Tensor {
    (difference * gradient).sum_dim_intlist(-1, false, Kind::Double).sum_dim_intlist(0, false, Kind::Double)
}

/// ∂metric/∂activation at every tapped site on the clean prompts, shaped `like` the sites' activations, with
/// `sources` for the representations after the taps (the interpolated embeddings, GradDrop's detached writes); the
/// activations any collecting representations of `tap` took, detached; the metric.
pub(super) fn gradients_at(
    tap: &mut IntervenableModel,
    inputs: &AttributionInputs,
    like: &[Tensor],
    sources: Vec<Tensor>,
    metric: Metric,
) -> Result<(Vec<Tensor>, Vec<Tensor>, f64)> {
    let zeros: Vec<Tensor> = like.iter().map(|a| a.zeros_like().set_requires_grad(true)).collect();
    let mut activations: Vec<Option<Tensor>> = zeros.iter().map(|z| Some(z.shallow_clone())).collect();
    activations.extend(sources.into_iter().map(Some));
    // Collecting representations read no source.
    activations.resize_with(tap.config().representations.len(), || None);
    let run = tap.run_with_activations(&inputs.clean, activations, &UnitLocations::whole(), &Subspaces::None)?;
    let value = metric_of(&run.output, &inputs.clean, inputs, metric)?;
    value.backward();
    // A site the metric does not depend on gets no gradient at all: its estimates are zero.
    let gradients = zeros.iter().map(gradient_of).collect();
    let collected = run.collected.iter().map(Tensor::detach).collect();
    Ok((gradients, collected, value.double_value(&[])))
}
