//! `vene train` and `vene eval`: fit interventions on counterfactual data, and measure saved ones.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vene_host::{
    outputs, saved,
    text::TextTokenizer,
    train::{self, TrainOptions},
};

use crate::common::{bind_saved, load_model, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A vene config JSON file (or a saved directory to continue from).
    #[arg(long, value_name = "CONFIG")]
    config: PathBuf,
    /// JSON lines: {"base": ..., "sources": [...], "unit_locations": ..., "label": ...}.
    #[arg(long, value_name = "DATA.jsonl")]
    data: PathBuf,
    /// Directory to save the trained interventions to (config.json + interventions.safetensors).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
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
    let checkpoint = args.checkpoint.clone().unwrap_or_else(|| {
        let mut name = args.out.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "trained".into());
        name.push(".checkpoint.safetensors");
        args.out.with_file_name(name)
    });
    outputs::check_replaced_dir(&args.out)?;
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
    };
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let mut intervenable = bind_saved(model, &plugins, &args.config, options.seed)?;
    let examples = train::read_dataset(&args.data)?;
    let (train_set, eval_set) = train::split(&examples, options.eval_fraction, options.seed);
    let bar = progress_bar("{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]");
    let report = train::train(&mut intervenable, &train_set, &eval_set, &options, tokenizer.as_ref(), |update| {
        bar.set_length(update.total as u64);
        bar.set_position(update.step as u64);
        bar.set_message(format!("loss {:.4}  iia {:.3}", update.loss, update.iia));
    })?;
    bar.finish_and_clear();
    saved::save(&intervenable, &args.out)?;
    std::fs::remove_file(&checkpoint).ok();
    let eval =
        report.eval.map_or("null".to_string(), |m| format!("{{\"iia\": {:.4}, \"loss\": {:.4}}}", m.iia, m.loss));
    println!(
        "{{\"steps\": {}, \"resumed_from\": {}, \"first_epoch_loss\": {:.4}, \"last_epoch_loss\": {:.4}, \"train\": {{\"iia\": {:.4}, \"loss\": {:.4}}}, \"eval\": {eval}}}",
        report.steps, report.resumed_from, report.first_epoch_loss, report.last_epoch_loss, report.train.iia, report.train.loss
    );
    println!("saved to {}", args.out.display());
    Ok(())
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let mut intervenable = bind_saved(model, &plugins, &args.config, 0)?;
    let examples = train::read_dataset(&args.data)?;
    let all: Vec<&train::TrainingExample> = examples.iter().collect();
    let metrics = train::evaluate(&mut intervenable, &all, args.batch_size, tokenizer.as_ref())?;
    println!("{{\"iia\": {:.4}, \"loss\": {:.4}, \"examples\": {}}}", metrics.iia, metrics.loss, metrics.examples);
    Ok(())
}
