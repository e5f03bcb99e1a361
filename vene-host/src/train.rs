//! Training and evaluating interventions on counterfactual data (Distributed Alignment Search).
//!
//! Data is JSON lines, one example each: `{"base": X, "sources": [X, …], "unit_locations": …, "subspaces": …,
//! "label": L}` with X as in `vene run` inputs (one example: `input_ids` `[[…]]`, or `text` `["…"]`) and L the
//! counterfactual target: a token id / class index, or a text whose first token is the target. The loss is cross
//! entropy at the last (unpadded) position; accuracy there is the interchange intervention accuracy (IIA). The model
//! is frozen: only the interventions' parameters are optimised (Adam, linear warm-up then linear decay), with the
//! interventions' auxiliary losses (such as boundless DAS's boundary penalty) added to the objective.
//!
//! With a checkpoint file, the parameters, the optimiser's moments and the progress are saved (atomically) every few
//! steps; a run started again with the same options and data resumes from there and ends with the same result as an
//! uninterrupted one.

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::Deserialize;
use serde_json::Value;
use tch::{Kind, Tensor};

use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    inputs::ExampleJson,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    optim::Adam,
    text::TextTokenizer,
};

/// The counterfactual target of one example.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Label {
    Id(i64),
    Text(String),
}

/// One counterfactual example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingExample {
    pub base: ExampleJson,
    #[serde(default)]
    pub sources: Vec<Option<ExampleJson>>,
    #[serde(default)]
    pub unit_locations: Option<Value>,
    #[serde(default)]
    pub subspaces: Option<Value>,
    pub label: Label,
}

/// Reads a JSON-lines dataset; errors name the line.
pub fn read_dataset(path: &Path) -> Result<Vec<TrainingExample>> {
    let text = std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?;
    parse_dataset(&text, &path.display().to_string())
}

/// Parses JSON-lines examples; errors name `origin` and the line.
pub fn parse_dataset(text: &str, origin: &str) -> Result<Vec<TrainingExample>> {
    let examples = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str(line)
                .map_err(|e| VeneError::Inputs(format!("{origin} line {}: not a training example: {e}", number + 1)))
        })
        .collect::<Result<Vec<TrainingExample>>>()?;
    if examples.is_empty() {
        return Err(VeneError::Inputs(format!("{origin} holds no examples")));
    }
    Ok(examples)
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Fraction of the steps spent warming the learning rate up from 0.
    pub warmup_fraction: f64,
    /// Fraction of the examples held out for evaluation.
    pub eval_fraction: f64,
    pub seed: u64,
    /// Where to save and resume progress; none: no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 16,
            learning_rate: 1e-3,
            warmup_fraction: 0.1,
            eval_fraction: 0.2,
            seed: 0,
            checkpoint: None,
            checkpoint_every: 50,
        }
    }
}

/// Where a checkpointed run stands.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Steps done.
    step: usize,
    /// Summed loss × examples of the epoch in progress.
    epoch_loss: f64,
    first_epoch_loss: f64,
    last_epoch_loss: f64,
}

impl Progress {
    /// Closes epoch `epoch` of `examples` examples: its mean loss becomes the last (and, first time, the first).
    fn end_epoch(&mut self, epoch: usize, examples: usize) {
        let epoch_loss = self.epoch_loss / examples as f64;
        if epoch == 0 {
            self.first_epoch_loss = epoch_loss;
        }
        self.last_epoch_loss = epoch_loss;
        self.epoch_loss = 0.0;
    }
}

/// What must match for a checkpoint to be resumed: the options that shape the run and the data's size.
fn run_identity(options: &TrainOptions, examples: usize, parameters: &[(String, Tensor)]) -> String {
    let shapes: Vec<String> = parameters.iter().map(|(name, p)| format!("{name}{:?}", p.size())).collect();
    format!(
        "epochs {} batch {} lr {} warmup {} eval {} seed {} examples {examples} parameters {}",
        options.epochs,
        options.batch_size,
        options.learning_rate,
        options.warmup_fraction,
        options.eval_fraction,
        options.seed,
        shapes.join(" ")
    )
}

fn save_checkpoint(
    path: &Path,
    identity: &str,
    progress: &Progress,
    adam: &Adam,
    parameters: &[(String, Tensor)],
) -> Result<()> {
    let mut tensors = vec![
        ("run".to_string(), Tensor::from_slice(&identity.bytes().map(i64::from).collect::<Vec<_>>())),
        ("progress.step".to_string(), Tensor::from(progress.step as i64)),
        (
            "progress.losses".to_string(),
            Tensor::from_slice(&[progress.epoch_loss, progress.first_epoch_loss, progress.last_epoch_loss]),
        ),
    ];
    tensors.extend(parameters.iter().map(|(name, p)| (format!("parameter.{name}"), p.detach())));
    tensors.extend(adam.state());
    Ok(vene_checkpoint::save_safetensors(path, &tensors)?)
}

/// Restores a checkpoint into the parameters and the optimiser; errors if it belongs to another run.
fn resume(path: &Path, identity: &str, adam: &mut Adam, parameters: &[(String, Tensor)]) -> Result<Progress> {
    let mut saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| {
            VeneError::Config(format!("the checkpoint {} is not a valid safetensors file: {e}", path.display()))
        })?
        .into_iter()
        .collect();
    let run: Vec<u8> = match saved.get("run") {
        Some(codes) => Vec::<i64>::try_from(codes)?.into_iter().map(|c| c as u8).collect(),
        None => Vec::new(),
    };
    if run != identity.as_bytes() {
        return Err(VeneError::Config(format!(
            "the checkpoint {} belongs to another run ({}); this run is {identity}. Remove it to start afresh",
            path.display(),
            String::from_utf8_lossy(&run)
        )));
    }
    let missing = |name: &str| VeneError::Config(format!("the checkpoint {} has no {name}", path.display()));
    let _no_grad = tch::no_grad_guard();
    for (name, parameter) in parameters {
        let value = saved.remove(&format!("parameter.{name}")).ok_or_else(|| missing(name))?;
        parameter.shallow_clone().copy_(&value);
    }
    adam.load_state(|name| saved.get(name).map(Tensor::shallow_clone))?;
    let step = saved.get("progress.step").ok_or_else(|| missing("progress.step"))?.int64_value(&[]) as usize;
    let losses = Vec::<f64>::try_from(saved.get("progress.losses").ok_or_else(|| missing("progress.losses"))?)?;
    let [epoch_loss, first_epoch_loss, last_epoch_loss] = losses[..] else {
        return Err(missing("three progress.losses"));
    };
    Ok(Progress { step, epoch_loss, first_epoch_loss, last_epoch_loss })
}

/// Loss and accuracy over a set of examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub loss: f64,
    /// Interchange intervention accuracy.
    pub iia: f64,
    pub examples: usize,
}

/// What training did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub steps: usize,
    /// Steps a checkpoint had already done when this run started (0 for a fresh run).
    pub resumed_from: usize,
    /// Mean loss of the first and of the last epoch.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    pub train: Metrics,
    pub eval: Option<Metrics>,
}

/// One optimisation step's numbers, for progress display.
pub struct StepUpdate {
    pub step: usize,
    pub total: usize,
    pub loss: f64,
    pub iia: f64,
}

/// A batch of examples, ready for [`IntervenableModel::run`].
pub struct Batch {
    pub base: ForwardInputs,
    pub sources: Vec<Option<ForwardInputs>>,
    pub locations: UnitLocations,
    pub subspaces: Subspaces,
    pub labels: Tensor,
}

/// Right-pads and stacks single examples' inputs into one batch (with an attention mask when lengths differ).
fn stack_inputs(parts: Vec<ForwardInputs>, what: &str) -> Result<ForwardInputs> {
    if let Some(features) = parts.iter().map(|p| p.features.as_ref()).collect::<Option<Vec<_>>>() {
        let shapes: Vec<_> = features.iter().map(|f| f.size()[1..].to_vec()).collect();
        if shapes.iter().any(|s| *s != shapes[0]) {
            return Err(VeneError::Inputs(format!("{what}: float inputs of one batch must share a shape")));
        }
        let stacked = Tensor::cat(&features, 0);
        return Ok(ForwardInputs {
            input_ids: None,
            features: Some(stacked),
            attention_mask: None,
            past: Vec::new(),
            use_cache: false,
            output_positions: None,
        });
    }
    let ids: Vec<&Tensor> = parts
        .iter()
        .map(|p| p.input_ids.as_ref())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| VeneError::Inputs(format!("{what}: mixes token ids and float inputs")))?;
    let longest = ids.iter().map(|t| t.size()[1]).max().unwrap_or(0);
    let mut padded = Vec::new();
    let mut masks = Vec::new();
    for (part, ids) in parts.iter().zip(&ids) {
        let length = ids.size()[1];
        let mask = part.attention_mask.as_ref().map_or_else(|| ids.ones_like(), Tensor::shallow_clone);
        padded.push(ids.constant_pad_nd([0, longest - length]));
        masks.push(mask.constant_pad_nd([0, longest - length]));
    }
    let mask = Tensor::cat(&masks, 0);
    let needs_mask = mask.min().int64_value(&[]) == 0;
    let mut inputs = ForwardInputs::from_ids(Tensor::cat(&padded, 0));
    inputs.attention_mask = needs_mask.then_some(mask);
    Ok(inputs)
}

fn label_id(label: &Label, tokenizer: Option<&TextTokenizer>) -> Result<i64> {
    match label {
        Label::Id(id) => Ok(*id),
        Label::Text(text) => {
            let tokenizer = tokenizer.ok_or_else(|| {
                VeneError::Inputs(format!("label {text:?} is text, but the model has no tokenizer; give a token id"))
            })?;
            tokenizer
                .encode(text)?
                .first()
                .copied()
                .ok_or_else(|| VeneError::Inputs(format!("label {text:?} is empty")))
        }
    }
}

impl Batch {
    pub fn new(examples: &[&TrainingExample], tokenizer: Option<&TextTokenizer>, device: tch::Device) -> Result<Self> {
        let convert = |json: &ExampleJson, what: &str| json.to_inputs(what, device, tokenizer);
        let mut bases = Vec::new();
        let mut locations = Vec::new();
        let mut subspaces = Vec::new();
        let mut labels = Vec::new();
        let groups = examples.iter().map(|e| e.sources.len()).max().unwrap_or(0);
        let mut sources: Vec<Vec<Option<ForwardInputs>>> = (0..groups).map(|_| Vec::new()).collect();
        for example in examples {
            let base = convert(&example.base, "base")?;
            let batch = base.batch_size() as usize;
            if batch != 1 {
                return Err(VeneError::Inputs(format!("each training example holds one base, found {batch}")));
            }
            if example.sources.len() != groups {
                return Err(VeneError::Inputs("examples of one dataset must give the same number of sources".into()));
            }
            for (group, source) in example.sources.iter().enumerate() {
                sources[group].push(source.as_ref().map(|s| convert(s, "sources")).transpose()?);
            }
            bases.push(base);
            locations.push((UnitLocations::parse(example.unit_locations.as_ref())?, 1));
            subspaces.push((Subspaces::parse(example.subspaces.as_ref())?, 1));
            labels.push(label_id(&example.label, tokenizer)?);
        }
        let sources = sources
            .into_iter()
            .map(|group| match group.iter().all(Option::is_some) {
                true => stack_inputs(group.into_iter().flatten().collect(), "sources").map(Some),
                false if group.iter().all(Option::is_none) => Ok(None),
                false => {
                    Err(VeneError::Inputs("a source is null in some examples of a batch and not in others".into()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            base: stack_inputs(bases, "base")?.reading_last_position(),
            sources,
            locations: UnitLocations::stack(locations),
            subspaces: Subspaces::Stacked(subspaces),
            labels: Tensor::from_slice(&labels).to_device(device),
        })
    }
}

/// The logits at each example's last real position: `(batch, classes)`.
fn last_logits(output: &Tensor, mask: Option<&Tensor>) -> Tensor {
    if output.dim() == 2 {
        return output.shallow_clone();
    }
    // The adapter computed the read position only (the base asked for it).
    if output.size()[1] == 1 {
        return output.squeeze_dim(1);
    }
    let (batch, seq, classes) = (output.size()[0], output.size()[1], output.size()[2]);
    let last = match mask {
        Some(mask) => mask.sum_dim_intlist(-1, false, Kind::Int64) - 1,
        None => Tensor::full([batch], seq - 1, (Kind::Int64, output.device())),
    };
    let index = last.to_device(output.device()).view([batch, 1, 1]).expand([batch, 1, classes], false);
    output.gather(1, &index, false).squeeze_dim(1)
}

/// Linear warm-up over the first `warmup` steps, then linear decay to zero at `total`.
fn learning_rate_at(step: usize, total: usize, warmup: usize, base: f64) -> f64 {
    if step < warmup {
        base * (step + 1) as f64 / warmup as f64
    } else {
        base * (total - step) as f64 / (total - warmup).max(1) as f64
    }
}

/// One optimizer step on `batch` (the intervention's auxiliary loss, if any, added to the objective); returns the
/// batch's loss and how many examples it got right.
fn optimize_step(model: &mut IntervenableModel, optimizer: &mut Adam, batch: &Batch) -> Result<(f64, i64)> {
    optimizer.zero_grad();
    let (loss, correct) = batch_loss(model, batch)?;
    let objective = match model.auxiliary_loss()? {
        Some(auxiliary) => &loss + auxiliary,
        None => loss.shallow_clone(),
    };
    objective.backward();
    optimizer.step();
    Ok((loss.double_value(&[]), correct))
}

/// Loss (mean cross entropy) and number of correct predictions for one batch.
fn batch_loss(model: &mut IntervenableModel, batch: &Batch) -> Result<(Tensor, i64)> {
    let output = model.run(&batch.base, &batch.sources, &batch.locations, &batch.subspaces)?.output;
    let logits = last_logits(&output, batch.base.attention_mask.as_ref()).to_kind(Kind::Float);
    let classes = logits.size()[1];
    if let Some(bad) = Vec::<i64>::try_from(&batch.labels)?.into_iter().find(|&l| l < 0 || l >= classes) {
        return Err(VeneError::Inputs(format!("label {bad} is outside the model's {classes} outputs")));
    }
    let loss = logits.cross_entropy_for_logits(&batch.labels);
    let correct = logits.argmax(-1, false).eq_tensor(&batch.labels).sum(Kind::Int64).int64_value(&[]);
    Ok((loss, correct))
}

/// Splits `examples` (seeded shuffle) into training and held-out parts.
pub fn split(
    examples: &[TrainingExample],
    eval_fraction: f64,
    seed: u64,
) -> (Vec<&TrainingExample>, Vec<&TrainingExample>) {
    let mut order: Vec<&TrainingExample> = examples.iter().collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let held_out = ((examples.len() as f64) * eval_fraction.clamp(0.0, 0.9)).round() as usize;
    let train = order.split_off(held_out);
    (train, order)
}

/// Loss and IIA of `model` on `examples`, without gradients.
pub fn evaluate(
    model: &mut IntervenableModel,
    examples: &[&TrainingExample],
    batch_size: usize,
    tokenizer: Option<&TextTokenizer>,
) -> Result<Metrics> {
    let _no_grad = tch::no_grad_guard();
    model.set_training(false);
    let (mut loss_sum, mut correct) = (0.0, 0i64);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = Batch::new(chunk, tokenizer, model.model().device())?;
        let (loss, right) = batch_loss(model, &batch)?;
        loss_sum += loss.double_value(&[]) * chunk.len() as f64;
        correct += right;
    }
    let count = examples.len().max(1);
    Ok(Metrics { loss: loss_sum / count as f64, iia: correct as f64 / count as f64, examples: examples.len() })
}

/// Trains the interventions of `model` on `train`, evaluating on `eval` at the end.
pub fn train(
    model: &mut IntervenableModel,
    train: &[&TrainingExample],
    eval: &[&TrainingExample],
    options: &TrainOptions,
    tokenizer: Option<&TextTokenizer>,
    mut progress: impl FnMut(StepUpdate),
) -> Result<TrainReport> {
    let parameters = model.parameters()?;
    if parameters.is_empty() {
        return Err(VeneError::Config("the config has no trainable intervention (use a DAS type, for example)".into()));
    }
    if train.is_empty() {
        return Err(VeneError::Inputs("no training examples are left after holding out the evaluation split".into()));
    }
    let identity = run_identity(options, train.len(), &parameters);
    let mut optimizer = Adam::new(
        parameters.iter().map(|(name, p)| (name.clone(), p.shallow_clone())).collect(),
        options.learning_rate,
        (0.9, 0.999),
        1e-8,
    );
    let mut progress_so_far = match &options.checkpoint {
        Some(path) if path.exists() => resume(path, &identity, &mut optimizer, &parameters)?,
        _ => Progress::default(),
    };
    let batch_size = options.batch_size.max(1);
    let steps_per_epoch = train.len().div_ceil(batch_size);
    let total = steps_per_epoch * options.epochs.max(1);
    let warmup = ((total as f64) * options.warmup_fraction).round() as usize;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<&TrainingExample> = train.to_vec();
    let resumed_at = progress_so_far.step;
    let mut step = 0;
    for epoch in 0..options.epochs.max(1) {
        // Every epoch shuffles, resumed or not, so the order matches an uninterrupted run.
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch_size) {
            if step < resumed_at {
                step += 1;
                continue;
            }
            model.set_training(true);
            model.set_progress(step as f64 / total.max(1) as f64);
            optimizer.set_learning_rate(learning_rate_at(step, total, warmup, options.learning_rate));
            let batch = Batch::new(chunk, tokenizer, model.model().device())?;
            let (value, correct) = optimize_step(model, &mut optimizer, &batch)?;
            step += 1;
            progress_so_far.epoch_loss += value * chunk.len() as f64;
            progress_so_far.step = step;
            if step % steps_per_epoch == 0 {
                progress_so_far.end_epoch(epoch, train.len());
            }
            if let Some(path) = &options.checkpoint {
                if step % options.checkpoint_every.max(1) == 0 || step == total {
                    save_checkpoint(path, &identity, &progress_so_far, &optimizer, &parameters)?;
                }
            }
            progress(StepUpdate { step, total, loss: value, iia: correct as f64 / chunk.len() as f64 });
        }
    }
    let Progress { first_epoch_loss, last_epoch_loss, .. } = progress_so_far;
    model.set_progress(1.0);
    let train_metrics = evaluate(model, train, batch_size, tokenizer)?;
    let eval_metrics = if eval.is_empty() { None } else { Some(evaluate(model, eval, batch_size, tokenizer)?) };
    Ok(TrainReport {
        steps: step,
        resumed_from: resumed_at,
        first_epoch_loss,
        last_epoch_loss,
        train: train_metrics,
        eval: eval_metrics,
    })
}
