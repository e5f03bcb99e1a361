//! Attribution patching (Nanda 2023; AtP, Kramár et al. 2024): every node's patching effect estimated at once as
//! `(a_corrupted − a_clean) · ∂metric/∂a` at the clean run, from one corrupted pass, one clean pass and one backward;
//! with `ig_steps = k`, the integrated-gradients form (the gradient averaged over k runs whose input embeddings are
//! interpolated from clean to corrupted, as EAP-IG does). The top nodes by |estimate|, and a random sample as a
//! control, are then patched exactly through the engine, so the estimate is checked where it matters.
//!
//! Nodes: for each component asked (`block_output`, `attention_output`, `mlp_output`, each head's
//! `head_attention_value_output`, `mlp_activation`, …) every layer × position (× head). The metric is read at each
//! prompt's last position and averaged over the prompts.

pub mod chunks;
mod estimate;
mod exact;
mod grad_drop;
mod qk;
mod report;

use std::cell::OnceCell;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use vene_api::SiteLayout;

pub(crate) use estimate::gradient_of;
pub use exact::spearman;
pub use report::{scores_tensors, write_scores};

use crate::{
    error::{Result, VeneError},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    studies::path_patching::{PathBatch, PathPrompt},
    text::TextTokenizer,
    train::last_logits,
};

/// The components attributed to by default, where the model has them.
pub const DEFAULT_COMPONENTS: [&str; 4] =
    ["block_output", "attention_output", "mlp_output", "head_attention_value_output"];

/// The components AtP*'s query/key fix scores.
pub const QK_COMPONENTS: [&str; 2] = ["head_query_output", "head_key_output"];

/// [`DEFAULT_COMPONENTS`] that `model` has.
pub fn default_components(model: &LoadedModel) -> Vec<String> {
    let has = |name: &str| model.catalog().components.iter().any(|c| c.name.as_str() == name);
    DEFAULT_COMPONENTS.iter().filter(|c| has(c)).map(|c| c.to_string()).collect()
}

/// `components` with the query and key nodes added when `qk_fix` asks for them.
pub fn with_qk(mut components: Vec<String>, qk_fix: bool) -> Vec<String> {
    if qk_fix {
        components.extend(
            QK_COMPONENTS
                .iter()
                .filter(|c| !components.contains(&c.to_string()))
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        );
    }
    components
}

/// Prompt pairs (as path patching takes them) tokenized into inputs, with the first clean prompt's tokens as labels.
pub fn prompt_inputs(
    tokenizer: &TextTokenizer,
    prompts: &[PathPrompt],
    device: tch::Device,
) -> Result<(AttributionInputs, Vec<String>)> {
    let batch = PathBatch::new(tokenizer, prompts, device)?;
    let tokens = tokenizer.encode(&prompts[0].clean)?.iter().map(|&t| tokenizer.decode(&[t])).collect();
    Ok((batch.into_attribution_inputs(), tokens))
}

/// What the attribution measures at the last position, averaged over prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// logit(target) − logit(distractor).
    LogitDiff,
    /// p(target).
    Prob,
    /// log p(target).
    Logprob,
    /// KL(p_clean ‖ p) of the next-token distribution from the clean run's. Zero at the clean run, as is its
    /// gradient: only the integrated-gradients form (and the exact checks) can use it.
    Kl,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::LogitDiff => "logit-diff",
            Metric::Prob => "prob",
            Metric::Logprob => "logprob",
            Metric::Kl => "kl",
        })
    }
}

impl Metric {
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .map_err(|_| VeneError::Inputs(format!("metric {text:?} is not one of logit-diff, prob, logprob, kl")))
    }

    /// The metric of last-position logits `(b, vocab)` for `inputs`' prompts, averaged over the batch.
    pub fn of(self, logits: &Tensor, inputs: &AttributionInputs) -> Result<Tensor> {
        let logits = logits.to_kind(Kind::Double);
        let pick = |values: &Tensor, tokens: &Tensor| values.gather(1, &tokens.unsqueeze(1), false).squeeze_dim(1);
        let per_prompt = match self {
            Metric::LogitDiff => pick(&logits, &inputs.target) - pick(&logits, &inputs.distractor),
            Metric::Prob => pick(&logits.softmax(-1, Kind::Double), &inputs.target),
            Metric::Logprob => pick(&logits.log_softmax(-1, Kind::Double), &inputs.target),
            Metric::Kl => {
                let clean = inputs.clean_log_probs.get().ok_or_else(|| {
                    VeneError::Inputs(
                        "the KL metric needs the clean run's distribution: prepare the inputs for it first".to_string(),
                    )
                })?;
                let log_probs = logits.log_softmax(-1, Kind::Double);
                (clean.exp() * (clean - log_probs)).sum_dim_intlist(-1, false, Kind::Double)
            }
        };
        Ok(per_prompt.mean(Kind::Double))
    }

    /// Refuses an estimate that linearises `self` at the clean run (`what`) where its gradient there is zero.
    pub(crate) fn check_gradient_at_clean(self, what: &str) -> Result<()> {
        if self == Metric::Kl {
            return Err(VeneError::Inputs(format!(
                "{what} takes the metric's gradient at the clean run, where the KL divergence to the clean run is at \
                 its minimum (0) and its gradient is zero, so every estimate would be 0; use integrated gradients \
                 (ig_steps ≥ 1, e.g. --ig-steps 5) with kl, or another metric"
            )));
        }
        Ok(())
    }
}

/// Clean and corrupted inputs of the same shape (positions line up), with the metric's tokens per prompt.
pub struct AttributionInputs {
    pub clean: ForwardInputs,
    pub corrupted: ForwardInputs,
    pub target: Tensor,
    pub distractor: Tensor,
    /// The clean run's last-position log-probabilities `(b, vocab)` in f64, which the KL metric compares with; set
    /// by [`AttributionInputs::prepare`].
    pub clean_log_probs: OnceCell<Tensor>,
}

impl AttributionInputs {
    pub fn new(clean: ForwardInputs, corrupted: ForwardInputs, target: Tensor, distractor: Tensor) -> Self {
        Self { clean, corrupted, target, distractor, clean_log_probs: OnceCell::new() }
    }

    /// Computes what `metric` reads besides a run's logits, once: for KL, the clean run's distribution.
    pub fn prepare(&self, model: &LoadedModel, metric: Metric) -> Result<()> {
        if metric != Metric::Kl || self.clean_log_probs.get().is_some() {
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        let output = model.forward_plain(&self.clean)?.output;
        let logits = last_logits(&output, self.clean.attention_mask.as_ref());
        self.clean_log_probs.get_or_init(|| logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double));
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct AttributionOptions {
    pub components: Vec<String>,
    pub metric: Metric,
    /// 0: AtP (the gradient at the clean run); k: integrated gradients over k interpolation steps.
    pub ig_steps: usize,
    /// AtP*'s query/key fix: `head_query_output` and `head_key_output` nodes scored with their attention patterns
    /// recomputed exactly instead of through the softmax's gradient.
    pub qk_fix: bool,
    /// AtP*'s GradDrop: each node also scored by the mean |estimate| with the gradient through one layer's residual
    /// writes stopped, over the layers; the exact check then takes the top nodes by that score.
    pub grad_drop: bool,
    /// Nodes re-patched exactly: the top `top_k` by |estimate| and `random_k` drawn (seeded) from the rest.
    pub top_k: usize,
    pub random_k: usize,
    /// Patch every node exactly and report the rank correlation over the whole grid.
    pub verify_all: bool,
    pub seed: u64,
}

/// One component's estimates: `[layer][head][position]` (one head for components without heads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentScores {
    pub component: String,
    /// Whether the component has a node per head (`[layer][head][position]`) or one per position.
    pub per_head: bool,
    pub heads: usize,
    pub positions: usize,
    pub scores: Vec<Vec<Vec<f64>>>,
    /// With `verify_all`: every node's exact effect, laid out as `scores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<Vec<Vec<Vec<f64>>>>,
    /// With `grad_drop`: every node's GradDrop score (a magnitude), laid out as `scores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_drop: Option<Vec<Vec<Vec<f64>>>>,
}

/// A node patched exactly beside its estimate.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub component: String,
    pub layer: usize,
    pub head: Option<usize>,
    pub position: usize,
    pub estimate: f64,
    pub exact: f64,
    /// "top" or "random" (the control).
    pub chosen: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    pub metric: Metric,
    pub method: String,
    pub prompts: usize,
    /// The metric on the clean and on the corrupted prompts.
    pub clean: f64,
    pub corrupted: f64,
    /// Token labels of the first clean prompt, one per position.
    pub tokens: Vec<String>,
    pub components: Vec<ComponentScores>,
    pub verified: Vec<Verified>,
    /// Spearman correlation of estimate and exact effect over the verified nodes, and over every node with
    /// `verify_all`.
    pub rank_correlation_verified: Option<f64>,
    pub rank_correlation_all: Option<f64>,
    /// Seconds spent (not written: they differ run to run).
    #[serde(skip)]
    pub seconds: Seconds,
}

/// Wall-clock seconds of each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seconds {
    pub estimate: f64,
    pub verify: f64,
    pub verify_all: Option<f64>,
}

/// Checks the components against the model: each must exist with a sequence or per-head layout.
fn check_components(model: &LoadedModel, components: &[String]) -> Result<Vec<(String, SiteLayout, usize)>> {
    let catalog = model.catalog();
    let usable: Vec<&vene_api::ComponentInfo> =
        catalog.components.iter().filter(|c| matches!(c.layout, SiteLayout::Sequence | SiteLayout::Heads)).collect();
    if components.is_empty() {
        return Err(VeneError::Inputs("no components to attribute to".to_string()));
    }
    components
        .iter()
        .map(|name| {
            usable
                .iter()
                .find(|c| c.name.as_str() == name)
                .map(|c| (name.clone(), c.layout, c.layers as usize))
                .ok_or_else(|| {
                    VeneError::Inputs(format!(
                        "the model has no component {name:?} to attribute to (valid: {})",
                        usable.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })
        })
        .collect()
}

/// Clean and corrupted inputs must line up position by position, with one target and distractor per prompt.
pub(crate) fn check_inputs(inputs: &AttributionInputs) -> Result<()> {
    let (clean, corrupted) = (inputs.clean.batch_size(), inputs.corrupted.batch_size());
    let shape = |i: &ForwardInputs| i.input_ids.as_ref().or(i.features.as_ref()).map(Tensor::size);
    if clean != corrupted || shape(&inputs.clean) != shape(&inputs.corrupted) {
        return Err(VeneError::Inputs(format!(
            "the clean inputs are {:?} and the corrupted {:?}; attribution needs them the same shape, position by \
             position",
            shape(&inputs.clean),
            shape(&inputs.corrupted)
        )));
    }
    if inputs.target.size() != [clean] || inputs.distractor.size() != [clean] {
        return Err(VeneError::Inputs(format!("one target and one distractor token per prompt ({clean}) are needed")));
    }
    Ok(())
}

/// The estimate's name: AtP, AtP* or integrated gradients.
pub fn method(options: &AttributionOptions) -> String {
    let mut method = match (options.ig_steps, options.qk_fix) {
        (0, false) => "AtP".to_string(),
        (0, true) => "AtP* (query/key fix)".to_string(),
        (k, false) => format!("integrated gradients ({k} steps)"),
        (k, true) => format!("integrated gradients ({k} steps), query/key fix"),
    };
    if options.grad_drop {
        method.push_str(", GradDrop");
    }
    method
}

/// Replaces the query and key nodes' estimates by AtP*'s: their attention patterns recomputed exactly.
fn fix_queries_and_keys(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    options: &AttributionOptions,
    components: &mut [ComponentScores],
) -> Result<LoadedModel> {
    if !components.iter().any(|c| QK_COMPONENTS.contains(&c.component.as_str())) {
        return Err(VeneError::Inputs(format!(
            "the query/key fix scores {} nodes; none of them is among the components ({})",
            QK_COMPONENTS.join(" and "),
            components.iter().map(|c| c.component.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let (fixed, model) = qk::estimates(model, plugins, inputs, options.metric)?;
    for component in components.iter_mut() {
        match component.component.as_str() {
            "head_query_output" => component.scores = fixed.queries.clone(),
            "head_key_output" => component.scores = fixed.keys.clone(),
            _ => {}
        }
    }
    Ok(model)
}

/// Sets every component's GradDrop scores.
fn add_grad_drop(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    (sites, differences): (&[(String, SiteLayout, usize)], &[Tensor]),
    metric: Metric,
    components: &mut [ComponentScores],
) -> Result<LoadedModel> {
    let (scores, model) = grad_drop::scores(model, plugins, inputs, sites, differences, metric)?;
    let mut per_site = scores.iter();
    for component in components.iter_mut() {
        let mut layers = Vec::new();
        for _ in 0..component.scores.len() {
            let score = per_site.next().map(Tensor::shallow_clone).unwrap_or_default();
            let score = if component.per_head { score } else { score.unsqueeze(0) };
            layers.push(Vec::<Vec<f64>>::try_from(&score)?);
        }
        component.grad_drop = Some(layers);
    }
    Ok(model)
}

/// Every node's estimate, before any exact check, with the metric on the clean and the corrupted prompts.
pub(crate) struct NodeEstimates {
    pub components: Vec<ComponentScores>,
    pub clean: f64,
    pub corrupted: f64,
}

/// Checks the inputs and components, then estimates every node (with AtP*'s query/key fix and GradDrop when asked).
fn estimate_nodes(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    options: &AttributionOptions,
) -> Result<(NodeEstimates, LoadedModel)> {
    check_inputs(inputs)?;
    let sites = check_components(&model, &options.components)?;
    if options.ig_steps == 0 {
        options.metric.check_gradient_at_clean("AtP")?;
    }
    if options.qk_fix {
        options.metric.check_gradient_at_clean("the query/key fix")?;
    }
    if options.grad_drop {
        options.metric.check_gradient_at_clean("GradDrop")?;
    }
    inputs.prepare(&model, options.metric)?;
    let (estimate::Estimates { scores: mut components, differences, clean, corrupted }, model) =
        estimate::estimates(model, plugins, inputs, &sites, options)?;
    let model =
        if options.qk_fix { fix_queries_and_keys(model, plugins, inputs, options, &mut components)? } else { model };
    let model = if options.grad_drop {
        add_grad_drop(model, plugins, inputs, (&sites, &differences), options.metric, &mut components)?
    } else {
        model
    };
    Ok((NodeEstimates { components, clean, corrupted }, model))
}

/// Estimates every node's effect, patches the chosen ones exactly, and compares.
pub fn attribute(
    model: LoadedModel,
    plugins: &PluginSet,
    inputs: &AttributionInputs,
    options: &AttributionOptions,
    tokens: Vec<String>,
) -> Result<(Attribution, LoadedModel)> {
    let started = std::time::Instant::now();
    let (NodeEstimates { mut components, clean, corrupted }, model) = estimate_nodes(model, plugins, inputs, options)?;
    let mut seconds = Seconds { estimate: started.elapsed().as_secs_f64(), ..Seconds::default() };
    let started = std::time::Instant::now();
    let chosen = exact::choose(&components, options);
    let (verified, model) = exact::verify(model, plugins, inputs, &components, &chosen, options.metric, clean)?;
    seconds.verify = started.elapsed().as_secs_f64();
    let pairs = |v: &[Verified]| v.iter().map(|n| (n.estimate, n.exact)).collect::<Vec<_>>();
    let rank_correlation_verified = spearman(&pairs(&verified));
    let (rank_correlation_all, model) = if options.verify_all {
        let started = std::time::Instant::now();
        let every = exact::every_node(&components);
        let (all, model) = exact::verify(model, plugins, inputs, &components, &every, options.metric, clean)?;
        seconds.verify_all = Some(started.elapsed().as_secs_f64());
        exact::fill_exact(&mut components, &all);
        (spearman(&pairs(&all)), model)
    } else {
        (None, model)
    };
    let result = Attribution {
        metric: options.metric,
        method: method(options),
        prompts: inputs.clean.batch_size() as usize,
        clean,
        corrupted,
        tokens,
        components,
        verified,
        rank_correlation_verified,
        rank_correlation_all,
        seconds,
    };
    Ok((result, model))
}
