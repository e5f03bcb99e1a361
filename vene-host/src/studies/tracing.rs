//! Causal tracing (Meng et al. 2022, as reproduced in pyvene): corrupt the subject's token embeddings with Gaussian
//! noise, then restore one site at a time from the clean run and measure how much of the target's probability comes
//! back. Three sweeps over every layer × position: the block output (one layer), the MLP output and the attention
//! output (a window of layers around each layer).
//!
//! All restorations of a sweep run as one batch: example `b` restores position `start + b % span` around layer
//! `b / span`, where `start` is the subject's first position and `span` the positions from there to the end; a
//! representation per layer swaps for the examples whose window contains it and, through an empty subspace, for no
//! others. The clean run is one example that serves the whole batch. Positions before the subject are not run:
//! their clean and corrupted states are the same (causal attention), so restoring them leaves the corrupted
//! probability, which is what their rows report. The noise is drawn afresh for every example and pass and the sweeps
//! are averaged over `samples` passes.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use super::output::Figure;
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// How to trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Noise passes averaged per sweep.
    pub samples: usize,
    /// Noise standard deviation in units of the embeddings' standard deviation (3 in the paper).
    pub noise_scale: f64,
    /// Layers restored together for the MLP and attention sweeps (10 in the paper).
    pub window: usize,
    pub seed: u64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self { samples: 10, noise_scale: 3.0, window: 10, seed: 0 }
    }
}

/// The results, probabilities of the target token after the prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    pub tokens: Vec<i64>,
    /// Subject token positions `[start, end)`.
    pub subject: (usize, usize),
    pub target: i64,
    pub clean: f64,
    pub corrupted: f64,
    /// `[position][layer]` restored probability, per sweep.
    pub block_output: Vec<Vec<f64>>,
    pub mlp_output: Vec<Vec<f64>>,
    pub attention_output: Vec<Vec<f64>>,
}

/// Traces of several prompts with one layout (same length, same subject positions), averaged cell by cell, as Meng
/// et al. average their figures over many facts.
#[derive(Debug, Clone, Serialize)]
pub struct MeanTrace {
    pub prompts: Vec<Vec<i64>>,
    pub targets: Vec<i64>,
    /// Subject token positions `[start, end)`, shared by every prompt.
    pub subject: (usize, usize),
    pub clean: f64,
    pub corrupted: f64,
    pub block_output: Vec<Vec<f64>>,
    pub mlp_output: Vec<Vec<f64>>,
    pub attention_output: Vec<Vec<f64>>,
}

/// The mean of `traces`, which must share their prompt length and subject positions.
pub fn average(traces: &[Trace]) -> Result<MeanTrace> {
    let first = traces.first().ok_or_else(|| VeneError::Inputs("no traces to average".to_string()))?;
    if let Some(other) = traces.iter().find(|t| t.tokens.len() != first.tokens.len() || t.subject != first.subject) {
        return Err(VeneError::Inputs(format!(
            "traces averaged together need one layout: {} tokens with the subject at {:?}, but one has {} tokens with \
             the subject at {:?}",
            first.tokens.len(),
            first.subject,
            other.tokens.len(),
            other.subject
        )));
    }
    let count = traces.len() as f64;
    let mean_of = |value: fn(&Trace) -> f64| traces.iter().map(value).sum::<f64>() / count;
    let grid_mean = |grid: fn(&Trace) -> &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        let mut sum = grid(first).clone();
        for trace in &traces[1..] {
            for (row, other) in sum.iter_mut().zip(grid(trace)) {
                row.iter_mut().zip(other).for_each(|(cell, value)| *cell += value);
            }
        }
        sum.iter_mut().flatten().for_each(|cell| *cell /= count);
        sum
    };
    Ok(MeanTrace {
        prompts: traces.iter().map(|t| t.tokens.clone()).collect(),
        targets: traces.iter().map(|t| t.target).collect(),
        subject: first.subject,
        clean: mean_of(|t| t.clean),
        corrupted: mean_of(|t| t.corrupted),
        block_output: grid_mean(|t| &t.block_output),
        mlp_output: grid_mean(|t| &t.mlp_output),
        attention_output: grid_mean(|t| &t.attention_output),
    })
}

/// The sweeps: component and window width.
pub const SWEEPS: [(&str, bool); 3] = [("block_output", false), ("mlp_output", true), ("attention_output", true)];

fn probability(logits: &Tensor, target: i64) -> Tensor {
    logits.select(1, -1).to_kind(Kind::Float).softmax(-1, Kind::Float).select(1, target)
}

/// Standard deviation of what the first block receives from the embedding (where the noise is added): the input
/// embedding's values, times √hidden for Gemma, which scales its embeddings before the first block.
pub fn embedding_std(model: &LoadedModel) -> Result<f64> {
    let embedding = crate::vectors::input_embedding(model)?;
    let catalog = model.catalog();
    let scale = if catalog.model_type.starts_with("gemma") { f64::from(catalog.hidden_size).sqrt() } else { 1.0 };
    Ok(embedding.std(true).double_value(&[]) * scale)
}

/// One prompt to trace: its tokens, the subject's positions `[start, end)` and the target token.
#[derive(Debug, Clone)]
pub struct TracePrompt {
    pub tokens: Vec<i64>,
    pub subject: (usize, usize),
    pub target: i64,
}

impl TracePrompt {
    /// `prompt` tokenized, with `subject` found among its tokens (with or without a leading space) and the first
    /// token of `target`; or why it cannot be traced.
    pub fn from_text(
        tokenizer: &TextTokenizer,
        prompt: &str,
        subject: &str,
        target: &str,
    ) -> Result<std::result::Result<Self, String>> {
        let tokens = tokenizer.encode(prompt)?;
        let candidates = [tokenizer.encode_plain(subject)?, tokenizer.encode_plain(&format!(" {subject}"))?];
        let Some(subject) = locate_subject(&tokens, &candidates) else {
            return Ok(Err(format!("the subject {subject:?} is not a token span of the prompt {prompt:?}")));
        };
        let Some(&target) = tokenizer.encode_plain(target)?.first() else {
            return Ok(Err(format!("the target {target:?} has no token to score")));
        };
        Ok(Ok(Self { tokens, subject, target }))
    }
}

/// Traces `tokens` (one prompt) whose subject occupies `subject`, for `target`.
pub fn trace(
    model: LoadedModel,
    plugins: &PluginSet,
    tokens: &[i64],
    subject: (usize, usize),
    target: i64,
    options: &TraceOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(Trace, LoadedModel)> {
    let level = noise_level(&model, options)?;
    let prompt = TracePrompt { tokens: tokens.to_vec(), subject, target };
    trace_at_level(model, plugins, &prompt, level, options, progress)
}

/// The noise's standard deviation for `options`: its scale times [`embedding_std`].
pub fn noise_level(model: &LoadedModel, options: &TraceOptions) -> Result<f64> {
    Ok(options.noise_scale * embedding_std(model)?)
}

/// [`trace`] with the noise's standard deviation `level` given.
pub fn trace_at_level(
    model: LoadedModel,
    plugins: &PluginSet,
    traced: &TracePrompt,
    level: f64,
    options: &TraceOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Trace, LoadedModel)> {
    let TracePrompt { tokens, subject, target } = traced;
    let seq = tokens.len();
    if subject.0 >= subject.1 || subject.1 > seq {
        return Err(VeneError::Inputs(format!("subject positions {subject:?} are outside the {seq}-token prompt")));
    }
    let tracer = Tracer {
        plugins,
        traced,
        level,
        options,
        samples: options.samples.max(1),
        layers: model.catalog().num_layers as usize,
        device: model.device(),
        subject_positions: (subject.0 as i64..subject.1 as i64).collect(),
    };
    let _no_grad = tch::no_grad_guard();
    let clean = probability(&model.forward_plain(&tracer.prompt(1))?.output, *target).double_value(&[0]);
    let total = tracer.samples * (1 + SWEEPS.len());
    let mut done = 0;
    let mut step = || {
        done += 1;
        progress(done, total);
    };
    let (corrupted, mut model) = tracer.corrupted(model, &mut step)?;
    let mut sweeps: Vec<Vec<Vec<f64>>> = Vec::new();
    for (sweep, &(component, windowed)) in SWEEPS.iter().enumerate() {
        let (grid, back) = tracer.sweep(model, sweep, component, windowed, corrupted, &mut step)?;
        sweeps.push(grid);
        model = back;
    }
    let attention_output = sweeps.pop().unwrap_or_default();
    let mlp_output = sweeps.pop().unwrap_or_default();
    let block_output = sweeps.pop().unwrap_or_default();
    let trace = Trace {
        tokens: tokens.to_vec(),
        subject: *subject,
        target: *target,
        clean,
        corrupted,
        block_output,
        mlp_output,
        attention_output,
    };
    Ok((trace, model))
}

/// One prompt's tracing: the corrupted run and each sweep's batched restorations.
struct Tracer<'a> {
    plugins: &'a PluginSet,
    traced: &'a TracePrompt,
    level: f64,
    options: &'a TraceOptions,
    samples: usize,
    layers: usize,
    device: tch::Device,
    subject_positions: Vec<i64>,
}

impl Tracer<'_> {
    /// `copies` copies of the prompt, read at the last position only.
    fn prompt(&self, copies: usize) -> ForwardInputs {
        let tokens = &self.traced.tokens;
        let ids: Vec<i64> = (0..copies).flat_map(|_| tokens.iter().copied()).collect();
        ForwardInputs::from_ids(
            Tensor::from_slice(&ids).view([copies as i64, tokens.len() as i64]).to_device(self.device),
        )
        .reading_last_position()
    }

    /// The noise on the subject's embeddings.
    fn noise(&self, seed: u64) -> serde_json::Value {
        json!({"layer": 0, "component": "block_input", "max_number_of_units": self.subject_positions.len(),
               "intervention": {"type": "noise", "level": self.level, "seed": seed}})
    }

    fn bind(&self, model: LoadedModel, representations: Vec<serde_json::Value>) -> Result<IntervenableModel> {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
            .map_err(|e| VeneError::Config(e.to_string()))?;
        IntervenableModel::new(model, config, self.plugins, self.options.seed)
    }

    /// The mean target probability with the subject corrupted and nothing restored.
    fn corrupted(&self, model: LoadedModel, step: &mut dyn FnMut()) -> Result<(f64, LoadedModel)> {
        let mut corrupted_model = self.bind(model, vec![self.noise(self.options.seed)])?;
        let locations = UnitLocations::parse(Some(&json!({"base": [[self.subject_positions.clone()]]})))?;
        let mut corrupted = 0.0;
        for _ in 0..self.samples {
            let output = corrupted_model.run(&self.prompt(1), &[], &locations, &Subspaces::None)?.output;
            corrupted += probability(&output, self.traced.target).double_value(&[0]) / self.samples as f64;
            step();
        }
        Ok((corrupted, corrupted_model.into_model()))
    }

    /// One sweep as `[position][layer]`: every layer × position from the subject on restored from the clean run in
    /// one batched pass per noise sample (`component` at the layer, or the window of layers around it); positions
    /// before the subject cannot change anything and read the corrupted probability.
    fn sweep(
        &self,
        model: LoadedModel,
        sweep: usize,
        component: &str,
        windowed: bool,
        corrupted: f64,
        step: &mut dyn FnMut(),
    ) -> Result<(Vec<Vec<f64>>, LoadedModel)> {
        let catalog = model.catalog();
        let width = catalog.component_index(component).map(|i| catalog.components[i].dim as i64).ok_or_else(|| {
            VeneError::Config(format!("{} has no {component} site, which causal tracing needs", catalog.model_type))
        })?;
        let (layers, seq, start) = (self.layers, self.traced.tokens.len(), self.traced.subject.0);
        let (span, options) = (seq - start, self.options);
        let batch = layers * span;
        let half = if windowed { options.window / 2 } else { 0 };
        let window = |center: usize| {
            let end = if windowed { (center + options.window - half).min(layers) } else { center + 1 };
            center.saturating_sub(half)..end
        };
        let mut representations = vec![self.noise(options.seed + 1 + sweep as u64)];
        representations.extend(
            (0..layers)
                .map(|layer| json!({"layer": layer, "component": component, "intervention": {"type": "vanilla"}})),
        );
        // Example b restores position start + b % span in the window around layer b / span.
        let positions: Vec<Vec<i64>> = (0..batch).map(|b| vec![(start + b % span) as i64]).collect();
        let mut source_side = vec![serde_json::Value::Null];
        let mut base_side = vec![json!(vec![self.subject_positions.clone(); batch])];
        let mut subspaces = vec![serde_json::Value::Null];
        let every: Vec<i64> = (0..width).collect();
        for layer in 0..layers {
            source_side.push(json!(positions));
            base_side.push(json!(positions));
            let dims: Vec<Vec<i64>> = (0..batch)
                .map(|b| if window(b / span).contains(&layer) { every.clone() } else { Vec::new() })
                .collect();
            subspaces.push(json!(dims));
        }
        let locations = UnitLocations::parse(Some(&json!({"sources->base": [source_side, base_side]})))?;
        let subspaces = Subspaces::parse(Some(&json!(subspaces)))?;
        let mut tracer = self.bind(model, representations)?;
        let prepared = tracer.prepare(batch as i64, &[Some(self.prompt(1))], &locations, &subspaces)?;
        let mut restored = Tensor::zeros([batch as i64], (Kind::Double, tch::Device::Cpu));
        for _ in 0..self.samples {
            let output = tracer.run_prepared(&self.prompt(batch), &prepared, &subspaces)?.output;
            let probability = probability(&output, self.traced.target).to_kind(Kind::Double);
            restored += probability.to_device(tch::Device::Cpu) / self.samples as f64;
            step();
        }
        let by_layer: Vec<f64> = Vec::<f64>::try_from(&restored)?;
        let grid = (0..seq)
            .map(|position| match position.checked_sub(start) {
                Some(offset) => (0..layers).map(|layer| by_layer[layer * span + offset]).collect(),
                None => vec![corrupted; layers],
            })
            .collect();
        Ok((grid, tracer.into_model()))
    }
}

/// Finds the token positions of `subject` in `tokens` (tried with and without a leading space).
pub fn locate_subject(tokens: &[i64], candidates: &[Vec<i64>]) -> Option<(usize, usize)> {
    candidates.iter().filter(|c| !c.is_empty()).find_map(|candidate| {
        tokens
            .windows(candidate.len())
            .position(|w| w == candidate.as_slice())
            .map(|start| (start, start + candidate.len()))
    })
}

/// The three sweeps' names and grids, in the order they are plotted.
pub type Sweeps<'a> = [(&'static str, &'a [Vec<f64>]); 3];

impl Trace {
    pub fn sweeps(&self) -> Sweeps<'_> {
        [
            ("block_output", &self.block_output),
            ("mlp_output", &self.mlp_output),
            ("attention_output", &self.attention_output),
        ]
    }
}

impl MeanTrace {
    pub fn sweeps(&self) -> Sweeps<'_> {
        [
            ("block_output", &self.block_output),
            ("mlp_output", &self.mlp_output),
            ("attention_output", &self.attention_output),
        ]
    }
}

/// One heatmap per sweep (named after it), rows labelled by `labels`, titled by `title(sweep)`, scaled to `max`.
pub fn heatmaps(sweeps: Sweeps<'_>, labels: &[String], title: impl Fn(&str) -> String, max: f64) -> Vec<Figure> {
    sweeps
        .iter()
        .map(|(name, values)| Figure::Heatmap {
            name: name.to_string(),
            title: title(name),
            row_labels: labels.to_vec(),
            column_label: "layer".to_string(),
            scale_label: "restored p(target)".to_string(),
            values: values.to_vec(),
            max,
        })
        .collect()
}
