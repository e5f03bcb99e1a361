//! `vene steer`: steering during generation (ITI) with a word's embedding.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        output::StudyOutput,
        steering::{steering, SteeringSetup},
    },
    vectors,
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct SteerArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    word: String,
    #[arg(long, default_value_t = 0.3)]
    coefficient: f64,
    #[arg(long, default_value = "mlp_output")]
    component: String,
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: SteerArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let vector = vectors::token_embedding(&model, &tokenizer, &args.word)?;
    let setup = SteeringSetup {
        prompt: args.prompt,
        word: args.word,
        coefficient: args.coefficient,
        component: args.component,
        max_new_tokens: args.max_new_tokens,
    };
    let (result, _) = steering(model, &plugins, &tokenizer, &vector, &setup)?;
    let (prompt, unsteered, steered) = (&result.prompt, result.unsteered.trim_start(), result.steered.trim_start());
    let summary = format!("unsteered: {prompt} {unsteered}\nsteered:   {prompt} {steered}");
    let figures = vec![result.lines("steer")];
    finish_study(&StudyOutput::new("steer.json", &result, figures, summary)?, &args.out)
}
