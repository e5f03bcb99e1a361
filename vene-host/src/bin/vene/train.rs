//! `vene train` and `vene eval`: fit interventions on counterfactual data (and, with `--train-model`, the model's own
//! weights: interchange intervention training), and measure saved ones.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    outputs, saved,
    text::TextTokenizer,
    train::{self, ModelObjective, TrainOptions},
};

use crate::common::{bind_saved, load_model, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A vene config JSON file (or a saved directory to continue from). Optional with --train-model: without it
    /// the model is trained on the task alone.
    #[arg(long, value_name = "CONFIG", required_unless_present = "train_model")]
    config: Option<PathBuf>,
    /// JSON lines: {"base": ..., "sources": [...], "unit_locations": ..., "label": ..., "base_label": ...}.
    #[arg(long, value_name = "DATA.jsonl")]
    data: PathBuf,
    /// Directory to save the trained interventions to (config.json + interventions.safetensors); optional with
    /// --train-model.
    #[arg(long, value_name = "DIR", required_unless_present = "train_model")]
    out: Option<PathBuf>,
    /// Also train the model's own weights (interchange intervention training) and save the model to DIR
    /// (model.safetensors beside copies of its config and tokenizer files).
    #[arg(long, value_name = "DIR")]
    train_model: Option<PathBuf>,
    /// With --train-model: weight of the loss of the intervened run on the counterfactual labels.
    #[arg(long, default_value_t = 1.0, requires = "train_model")]
    interchange_weight: f64,
    /// With --train-model: weight of the plain run's loss on the factual labels ("base_label").
    #[arg(long, default_value_t = 1.0, requires = "train_model")]
    task_weight: f64,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long = "lr", default_value_t = 1e-3)]
    learning_rate: f64,
    /// Fraction of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Fraction of the examples held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    eval_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Progress file: saved every --checkpoint-every steps, resumed from when it exists, removed once the
    /// trained interventions are saved. Default: OUT.checkpoint.safetensors beside OUT.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    #[command(flatten)]
    plugins: PluginArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A saved directory (vene or pyvene) or a config file.
    #[arg(long, value_name = "CONFIG")]
    config: PathBuf,
    #[arg(long, value_name = "DATA.jsonl")]
    data: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let saved_to: Vec<&PathBuf> = args.out.iter().chain(&args.train_model).collect();
    let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
        let first = saved_to[0];
        let mut name = first.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "trained".into());
        name.push(".checkpoint.safetensors");
        first.with_file_name(name)
    });
    for dir in &saved_to {
        outputs::check_replaced_dir(dir)?;
    }
    outputs::check_file(&checkpoint)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let options = TrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        warmup_fraction: args.warmup,
        eval_fraction: args.eval_fraction,
        seed: args.seed,
        checkpoint: Some(checkpoint.clone()),
        checkpoint_every: args.checkpoint_every,
        model_objective: args
            .train_model
            .as_ref()
            .map(|_| ModelObjective { interchange_weight: args.interchange_weight, task_weight: args.task_weight }),
    };
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let mut intervenable = match &args.config {
        Some(config) => bind_saved(model, &plugins, config, options.seed)?,
        None => IntervenableModel::new(model, IntervenableConfig::empty(), &plugins, options.seed)?,
    };
    let examples = train::read_dataset(&args.data)?;
    let (train_set, eval_set) = train::split(&examples, options.eval_fraction, options.seed);
    let bar = progress_bar("{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]");
    let report = train::train(&mut intervenable, &train_set, &eval_set, &options, tokenizer.as_ref(), |update| {
        bar.set_length(update.total as u64);
        bar.set_position(update.step as u64);
        bar.set_message(format!("loss {:.4}  iia {:.3}", update.loss, update.iia));
    })?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        saved::save(&intervenable, out)?;
    }
    if let Some(dir) = &args.train_model {
        train::save_model(intervenable.model(), dir)?;
    }
    std::fs::remove_file(&checkpoint).ok();
    let eval = report.eval.map_or("null".to_string(), |m| metrics_json(&m));
    println!(
        "{{\"steps\": {}, \"resumed_from\": {}, \"first_epoch_loss\": {:.4}, \"last_epoch_loss\": {:.4}, \"train\": {}, \"eval\": {eval}}}",
        report.steps, report.resumed_from, report.first_epoch_loss, report.last_epoch_loss, metrics_json(&report.train)
    );
    if let Some(out) = &args.out {
        println!("saved to {}", out.display());
    }
    if let Some(dir) = &args.train_model {
        println!("trained model saved to {}", dir.display());
    }
    Ok(())
}

/// `{"iia": …, "loss": …}`, with `"task_accuracy"` when the data gives factual labels.
fn metrics_json(metrics: &train::Metrics) -> String {
    let task = metrics.task_accuracy.map_or(String::new(), |a| format!(", \"task_accuracy\": {a:.4}"));
    format!("{{\"iia\": {:.4}, \"loss\": {:.4}{task}}}", metrics.iia, metrics.loss)
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let mut intervenable = bind_saved(model, &plugins, &args.config, 0)?;
    let examples = train::read_dataset(&args.data)?;
    let all: Vec<&train::TrainingExample> = examples.iter().collect();
    let metrics = train::evaluate(&mut intervenable, &all, args.batch_size, tokenizer.as_ref())?;
    let task = metrics.task_accuracy.map_or(String::new(), |a| format!(", \"task_accuracy\": {a:.4}"));
    println!(
        "{{\"iia\": {:.4}, \"loss\": {:.4}{task}, \"examples\": {}}}",
        metrics.iia, metrics.loss, metrics.examples
    );
    Ok(())
}
