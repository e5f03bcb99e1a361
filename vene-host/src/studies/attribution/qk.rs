//! AtP*'s fix for queries and keys (Kramár et al. 2024): a query or key node changes the output only through its
//! head's attention pattern, and linearising the softmax misses large changes — a saturated pattern has almost no
//! gradient, yet moving its key can move all of its weight. So the pattern each such patch gives is computed exactly
//! and only what follows is linearised: the estimate is `Σ (A_patched − A_clean) · ∂metric/∂A`.
//!
//! A query patch at position i changes row i to `softmax(scale · q'_i · K)`; a key patch at position j shifts column
//! j of every row by `δ_ij = scale · q_i · (k'_j − k_j)`, which has a closed form per row. The queries and keys are
//! read as the scores read them (`head_query_rotated`, `head_key_rotated`: after any q/k norm and rotary
//! embedding), and the scale is fitted from the clean pattern itself (least squares of the log-probabilities on the
//! scores within each row), so models that scale differently (GPT-2 by layer, Gemma by `query_pre_attn_scalar`)
//! need no configuration; a pattern the fit does not explain (soft-capped scores) is refused.

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use super::{AttributionInputs, Metric};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    studies::bind,
    train::last_logits,
};

const QUERY: &str = "head_query_rotated";
const KEY: &str = "head_key_rotated";
const PATTERN: &str = "attention_weight";

/// Per layer: query nodes `[head][position]` and key nodes `[kv head][position]`.
pub(super) struct QkEstimates {
    pub queries: Vec<Vec<Vec<f64>>>,
    pub keys: Vec<Vec<Vec<f64>>>,
}

fn rep(component: &str, layer: usize, intervention: Value) -> Value {
    json!({"layer": layer, "component": component, "unit": "h", "intervention": intervention})
}

/// Refuses models without the sites the fix reads.
fn check_sites(model: &LoadedModel) -> Result<usize> {
    let catalog = model.catalog();
    let find = |name: &str| catalog.components.iter().find(|c| c.name.as_str() == name);
    match (find(QUERY), find(KEY), find(PATTERN)) {
        (Some(query), Some(_), Some(_)) => Ok(query.layers as usize),
        _ => Err(VeneError::Inputs(format!(
            "AtP*'s query/key fix reads {QUERY}, {KEY} and {PATTERN}, which this {} model does not expose",
            catalog.model_type.as_str()
        ))),
    }
}

/// The rotated queries and keys of every layer on `inputs` (no gradient): `(queries, keys)`.
fn queries_and_keys(
    model: LoadedModel,
    plugins: &PluginSet,
    layers: usize,
    inputs: &crate::model::ForwardInputs,
) -> Result<(Vec<Tensor>, Vec<Tensor>, LoadedModel)> {
    let _no_grad = tch::no_grad_guard();
    let collect = json!({"type": "collect"});
    let reps: Vec<Value> =
        (0..layers).flat_map(|l| [rep(QUERY, l, collect.clone()), rep(KEY, l, collect.clone())]).collect();
    let mut collector = bind(model, plugins, json!({ "representations": reps }))?;
    let run = collector.run(inputs, &[], &UnitLocations::whole(), &Subspaces::None)?;
    let (queries, keys) = run.collected.chunks(2).map(|p| (p[0].shallow_clone(), p[1].shallow_clone())).unzip();
    Ok((queries, keys, collector.into_model()))
}

/// What one tapped pass over the clean prompts gives, per layer: the rotated queries and keys, the attention
/// patterns (in f64) and the metric's gradient with respect to the patterns.
struct CleanPass {
    queries: Vec<Tensor>,
    keys: Vec<Tensor>,
    patterns: Vec<Tensor>,
    gradients: Vec<Tensor>,
}

/// The clean pass: a zero tensor added to every layer's pattern (`heads` query heads) taps its gradient, and the
/// queries, keys and patterns are collected on the way.
fn clean_pass(
    model: LoadedModel,
    plugins: &PluginSet,
    (layers, heads): (usize, i64),
    inputs: &AttributionInputs,
    metric: Metric,
) -> Result<(CleanPass, LoadedModel)> {
    let collect = json!({"type": "collect"});
    let mut reps: Vec<Value> = (0..layers).map(|l| rep(PATTERN, l, json!({"type": "addition"}))).collect();
    for layer in 0..layers {
        reps.extend([QUERY, KEY, PATTERN].map(|site| rep(site, layer, collect.clone())));
    }
    let mut tap = bind(model, plugins, json!({ "representations": reps }))?;
    let size = inputs.clean.input_ids.as_ref().or(inputs.clean.features.as_ref()).map(Tensor::size);
    let (batch, length) = match size.as_deref() {
        Some([batch, length, ..]) => (*batch, *length),
        _ => return Err(VeneError::Inputs("the query/key fix needs token inputs".to_string())),
    };
    let options = (tap.model().kind(), tap.model().device());
    let zeros: Vec<Tensor> =
        (0..layers).map(|_| Tensor::zeros([batch, heads, length, length], options).set_requires_grad(true)).collect();
    let mut sources: Vec<Option<Tensor>> = zeros.iter().map(|z| Some(z.shallow_clone())).collect();
    sources.resize_with(reps.len(), || None);
    let run = tap.run_with_activations(&inputs.clean, sources, &UnitLocations::whole(), &Subspaces::None)?;
    let logits = last_logits(&run.output, inputs.clean.attention_mask.as_ref());
    metric.of(&logits, inputs)?.backward();
    let mut pass = CleanPass { queries: Vec::new(), keys: Vec::new(), patterns: Vec::new(), gradients: Vec::new() };
    for (layer, collected) in run.collected.chunks(3).enumerate() {
        pass.queries.push(collected[0].detach());
        pass.keys.push(collected[1].detach());
        pass.patterns.push(collected[2].detach().to_kind(Kind::Double));
        pass.gradients.push(super::estimate::gradient_of(&zeros[layer]));
    }
    Ok((pass, tap.into_model()))
}

/// `q · kᵀ` per head, `(b, heads, s, s)`, with the key heads shared by their query groups.
fn dot(queries: &Tensor, keys: &Tensor) -> Tensor {
    let groups = queries.size()[1] / keys.size()[1];
    let keys = if groups > 1 { keys.repeat_interleave_self_int(groups, 1, None) } else { keys.shallow_clone() };
    queries.matmul(&keys.transpose(-1, -2))
}

/// The scale relating `pattern = softmax(scale · dots + mask)`: least squares of each row's log-probabilities on
/// its dot products (both centred within the row, over the entries the mask lets through).
fn fitted_scale(pattern: &Tensor, dots: &Tensor, layer: usize) -> Result<f64> {
    let visible = pattern.gt(1e-6);
    let weight = visible.to_kind(Kind::Double);
    let count = weight.sum_dim_intlist(-1, true, Kind::Double).clamp_min(1.0);
    let centred = |values: &Tensor| {
        let values = values.where_self(&visible, &values.zeros_like());
        let mean = values.sum_dim_intlist(-1, true, Kind::Double) / &count;
        (values - mean) * &weight
    };
    let (y, x) = (centred(&pattern.clamp_min(1e-300).log()), centred(dots));
    let scale =
        (&x * &y).sum(Kind::Double).double_value(&[]) / (&x * &x).sum(Kind::Double).double_value(&[]).max(1e-300);
    let residual = (&y - &x * scale).square().sum(Kind::Double).double_value(&[]);
    let total = y.square().sum(Kind::Double).double_value(&[]).max(1e-300);
    if !scale.is_finite() || residual > 1e-6 * total {
        return Err(VeneError::Inputs(format!(
            "layer {layer}'s attention pattern is not softmax(scale · q·k) (fit left {:.2e} of its variance): AtP*'s \
             query/key fix does not apply to soft-capped or otherwise transformed scores",
            residual / total
        )));
    }
    Ok(scale)
}

/// Which scores the softmax saw, and every visible entry's log-probability. A probability of exactly zero is
/// either masked or underflowed: causal order and padding are known; otherwise a zero the fitted scores predict to
/// be below `exp(-80)` underflowed (a pattern held in f32 cannot show it) and stays visible, with its log-probability
/// from the scores, so a patch can still raise it.
struct Visible {
    mask: Tensor,
    log_pattern: Tensor,
}

fn visible(pattern: &Tensor, scores: &Tensor, padding: Option<&Tensor>) -> Visible {
    let size = pattern.size();
    let (rows, columns) = (size[2], size[3]);
    let causal = Tensor::ones([rows, columns], (Kind::Bool, pattern.device())).tril(columns - rows);
    let mut allowed = causal.view([1, 1, rows, columns]).expand_as(pattern);
    if let Some(padding) = padding {
        allowed = allowed.logical_and(&padding.ne(0).view([size[0], 1, 1, columns]));
    }
    let seen = pattern.gt(0.0);
    // Each row's log normaliser from its clearly visible entries: log A = s − LSE.
    let clear = pattern.gt(1e-6).to_kind(Kind::Double);
    let offsets = (scores - pattern.clamp_min(1e-300).log()) * &clear;
    let normaliser =
        offsets.sum_dim_intlist(-1, true, Kind::Double) / clear.sum_dim_intlist(-1, true, Kind::Double).clamp_min(1.0);
    let predicted = scores - normaliser;
    let underflowed = seen.logical_not().logical_and(&predicted.lt(-80.0));
    let mask = allowed.logical_and(&seen.logical_or(&underflowed));
    let log_pattern = pattern.clamp_min(1e-300).log().where_self(&seen, &predicted);
    Visible { mask, log_pattern }
}

/// `Σ_j (A'_ij − A_ij) G_ij` per query position when row i is recomputed with the corrupted query.
fn query_effects(pattern: &Tensor, gradient: &Tensor, corrupted_scores: &Tensor, visible: &Visible) -> Tensor {
    let scores = corrupted_scores.masked_fill(&visible.mask.logical_not(), f64::NEG_INFINITY);
    let patched = scores.softmax(-1, Kind::Double);
    ((patched - pattern) * gradient).sum_dim_intlist(-1, false, Kind::Double)
}

/// `(b, heads, i, j)`: the change of `Σ_j' A_ij' G_ij'` when column j of row i shifts by `delta` (zero where
/// masked). All in log space, so a saturated row (one entry 1, the others underflowed) still moves: the new row is
/// `exp(log A_ij' − N_ij)` with `N_ij = log(Σ_{j'≠j} A_ij' + A_ij·exp(δ_ij))`. The sum without entry j is taken
/// directly for each row's largest entry, where subtracting it from the total would cancel.
fn key_effects(pattern: &Tensor, gradient: &Tensor, delta: &Tensor, visible: &Visible) -> Tensor {
    let hidden = visible.mask.logical_not();
    let log_p = visible.log_pattern.masked_fill(&hidden, f64::NEG_INFINITY);
    let total = log_p.logsumexp([-1].as_slice(), true);
    let largest = log_p.argmax(-1, true);
    let is_largest = Tensor::zeros_like(&log_p).scatter_value(-1, &largest, 1.0).gt(0.0);
    let share = (&log_p - &total).exp().clamp_max(0.5);
    let rest_of_small = &total + (-share).log1p();
    let rest_of_largest = log_p.masked_fill(&is_largest, f64::NEG_INFINITY).logsumexp([-1].as_slice(), true);
    let log_rest = rest_of_small.where_self(&is_largest.logical_not(), &rest_of_largest.expand_as(&log_p));
    let shifted = &log_p + delta;
    let normaliser = log_rest.logaddexp(&shifted);
    let old = (pattern * gradient).sum_dim_intlist(-1, true, Kind::Double);
    // Σ_{j'≠j} exp(log A_ij' − N_ij) G_ij': by scaling the rest of the row for small j, directly for the largest.
    let without_small = (&total - &normaliser).exp() * (&old - pattern * gradient);
    let normaliser_at_largest = normaliser.gather(-1, &largest, false);
    let without_largest = ((&log_p - &normaliser_at_largest).exp().masked_fill(&is_largest, 0.0) * gradient)
        .sum_dim_intlist(-1, true, Kind::Double);
    let others = without_small.where_self(&is_largest.logical_not(), &without_largest.expand_as(&log_p));
    let moved = (&shifted - &normaliser).exp() * gradient;
    let effect = others + moved - old;
    effect.where_self(&visible.mask, &effect.zeros_like())
}

/// Every query and key node's AtP* estimate, summed over prompts.
pub(super) fn estimates(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    metric: Metric,
) -> Result<(QkEstimates, LoadedModel)> {
    let layers = check_sites(&model)?;
    let (corrupted_queries, corrupted_keys, model) = queries_and_keys(model, plugins, layers, &inputs.corrupted)?;
    let heads = corrupted_queries.first().map_or(0, |q| q.size()[1]);
    let (CleanPass { queries, keys, patterns, gradients }, model) =
        clean_pass(model, plugins, (layers, heads), inputs, metric)?;
    let mut found = QkEstimates { queries: Vec::new(), keys: Vec::new() };
    let padding = inputs.clean.attention_mask.as_ref();
    for layer in 0..layers {
        let double = |t: &Tensor| t.to_kind(Kind::Double);
        let (q, k) = (double(&queries[layer]), double(&keys[layer]));
        let (q_corrupted, k_corrupted) = (double(&corrupted_queries[layer]), double(&corrupted_keys[layer]));
        let (pattern, gradient) = (&patterns[layer], &gradients[layer]);
        let dots = dot(&q, &k);
        let scale = fitted_scale(pattern, &dots, layer)?;
        let visible = visible(pattern, &(dots * scale), padding);
        let corrupted_scores = dot(&q_corrupted, &k) * scale;
        let by_query =
            query_effects(pattern, gradient, &corrupted_scores, &visible).sum_dim_intlist(0, false, Kind::Double);
        let delta = dot(&q, &(&k_corrupted - &k)) * scale;
        // Summed over prompts and rows, then over the query heads sharing each key head.
        let per_head =
            key_effects(pattern, gradient, &delta, &visible).sum_dim_intlist([0, 2].as_slice(), false, Kind::Double);
        let (heads, kv_heads) = (q.size()[1], k.size()[1]);
        let by_key = per_head.view([kv_heads, heads / kv_heads, -1]).sum_dim_intlist(1, false, Kind::Double);
        found.queries.push(Vec::<Vec<f64>>::try_from(&by_query)?);
        found.keys.push(Vec::<Vec<f64>>::try_from(&by_key)?);
    }
    Ok((found, model))
}
