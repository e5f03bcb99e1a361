//! `vene senses`: scale each sense vector of a word in a Backpack model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        output::StudyOutput,
        senses::{sense_study, SenseSetup},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct SensesArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    word: String,
    #[arg(long)]
    target: String,
    /// The model's number of senses per word.
    #[arg(long)]
    senses: i64,
    /// Factors to scale each sense by (repeatable).
    #[arg(long = "factor", default_values_t = [0.0, 3.0])]
    factors: Vec<f64>,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: SensesArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let setup = SenseSetup {
        prompt: args.prompt,
        word: args.word,
        target: args.target,
        senses: args.senses,
        factors: args.factors,
    };
    let (study, _) = sense_study(model, &plugins, &tokenizer, &setup)?;
    let title = format!("p({}) with one sense of '{}' scaled", study.target, study.word);
    let figures = vec![study.lines("senses", &title)];
    let summary = format!(
        "p({}) {:.4} without intervention; per factor and sense: {:?}",
        study.target, study.baseline, study.probabilities
    );
    finish_study(&StudyOutput::new("senses.json", &study, figures, summary)?, &args.out)
}
