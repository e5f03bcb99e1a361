//! Training and evaluating interventions on counterfactual data (Distributed Alignment Search).
//!
//! Data is JSON lines, one example each: `{"base": X, "sources": [X, …], "unit_locations": …, "subspaces": …,
//! "label": L}` with X as in `vene run` inputs (one example: `input_ids` `[[…]]`, or `text` `["…"]`) and L the
//! counterfactual target: a token id / class index, or a text whose first token is the target. The loss is cross
//! entropy at the last (unpadded) position; accuracy there is the interchange intervention accuracy (IIA). The model
//! is frozen: only the interventions' parameters are optimised (Adam, linear warm-up then linear decay), with the
//! interventions' auxiliary losses (such as boundless DAS's boundary penalty) added to the objective.
//!
//! With a [`ModelObjective`], the model's own weights are trained too (interchange intervention training, Geiger et
//! al. 2022): the interchange loss on the counterfactual labels plus a task loss on the bases' factual labels
//! (`"base_label"`), each weighted; interventions are then usually plain interchanges (`vanilla`) at the slice that
//! should come to hold a variable. With a zero interchange weight it is ordinary task training.
//!
//! With a checkpoint file, the parameters, the optimiser's moments and the progress are saved (atomically) every few
//! steps; a run started again with the same options and data resumes from there and ends with the same result as an
//! uninterrupted one.

mod batch;
mod checkpoint;
mod model_weights;

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::Deserialize;
use serde_json::Value;
use tch::{Kind, Tensor};

pub(crate) use batch::last_logits;
pub use batch::{Batch, PreparedExample};
use checkpoint::{resume, run_identity, save_checkpoint, Progress};
pub use model_weights::{save_model, ModelObjective};

use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    inputs::ExampleJson,
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
    /// The base's factual target, for the task loss of model training and the task accuracy.
    #[serde(default)]
    pub base_label: Option<Label>,
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
    /// Train the model's own weights too, with this objective.
    pub model_objective: Option<ModelObjective>,
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
            model_objective: None,
        }
    }
}

/// Loss and accuracy over a set of examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub loss: f64,
    /// Interchange intervention accuracy.
    pub iia: f64,
    /// Accuracy of the plain model on the bases' factual labels, when the examples give them.
    pub task_accuracy: Option<f64>,
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

/// Linear warm-up over the first `warmup` steps, then linear decay to zero at `total`.
fn learning_rate_at(step: usize, total: usize, warmup: usize, base: f64) -> f64 {
    if step < warmup {
        base * (step + 1) as f64 / warmup as f64
    } else {
        base * (total - step) as f64 / (total - warmup).max(1) as f64
    }
}

/// One optimizer step on `batch` (the intervention's auxiliary loss, if any, added to the objective; with a model
/// objective, its weighted sum); returns the batch's loss and how many examples it got right.
fn optimize_step(
    model: &mut IntervenableModel,
    optimizer: &mut Adam,
    batch: &Batch,
    model_objective: Option<&ModelObjective>,
) -> Result<(f64, i64)> {
    optimizer.zero_grad();
    let (loss, correct) = batch_loss(model, batch)?;
    let objective = match model_objective {
        Some(weights) => model_weights::objective(model.model(), batch, weights, &loss)?,
        None => loss.shallow_clone(),
    };
    let objective = match model.auxiliary_loss()? {
        Some(auxiliary) => objective + auxiliary,
        None => objective,
    };
    objective.backward();
    optimizer.step();
    let reported = if model_objective.is_some() { &objective } else { &loss };
    Ok((reported.double_value(&[]), correct))
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
    let mut task_correct = Some(0i64);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = Batch::new(chunk, tokenizer, model.model().device())?;
        let (loss, right) = batch_loss(model, &batch)?;
        loss_sum += loss.double_value(&[]) * chunk.len() as f64;
        correct += right;
        let task = model_weights::task_loss(model.model(), &batch)?;
        task_correct = task_correct.zip(task).map(|(sum, (_, right))| sum + right);
    }
    let count = examples.len().max(1);
    Ok(Metrics {
        loss: loss_sum / count as f64,
        iia: correct as f64 / count as f64,
        task_accuracy: task_correct.map(|right| right as f64 / count as f64),
        examples: examples.len(),
    })
}

/// Trains the interventions of `model` (and, with a model objective, the model's weights) on `train`, evaluating on
/// `eval` at the end.
pub fn train(
    model: &mut IntervenableModel,
    train: &[&TrainingExample],
    eval: &[&TrainingExample],
    options: &TrainOptions,
    tokenizer: Option<&TextTokenizer>,
    mut progress: impl FnMut(StepUpdate),
) -> Result<TrainReport> {
    let mut parameters = model.parameters()?;
    let model_objective = options.model_objective.as_ref();
    if model_objective.is_some() {
        parameters.extend(model_weights::trainable_weights(model.model())?);
    } else if parameters.is_empty() {
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
    let device = model.model().device();
    let prepared = PreparedExample::all(train, tokenizer, device)?;
    let mut order: Vec<&PreparedExample> = prepared.iter().collect();
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
            let batch = Batch::stack(chunk, device)?;
            let (value, correct) = optimize_step(model, &mut optimizer, &batch, model_objective)?;
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
    if model_objective.is_some() {
        model_weights::freeze(model.model())?;
    }
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
