//! `vene trace`: causal tracing (Meng et al.) of one prompt.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        output::StudyOutput,
        tracing::{self, TraceOptions},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The factual prompt, e.g. "The Eiffel Tower is in the city of".
    #[arg(long)]
    prompt: String,
    /// The subject's text within the prompt, e.g. "The Eiffel Tower".
    #[arg(long)]
    subject: String,
    /// The target continuation (its first token is scored), e.g. " Paris".
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Noise standard deviation in units of the embeddings' standard deviation.
    #[arg(long, default_value_t = 3.0)]
    noise: f64,
    #[arg(long, default_value_t = 10)]
    window: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for trace.json and the heatmaps (PNG + SVG).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: TraceArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let tokens = tokenizer.encode(&args.prompt)?;
    let candidates = [tokenizer.encode(&args.subject)?, tokenizer.encode(&format!(" {}", args.subject))?];
    let span = tracing::locate_subject(&tokens, &candidates)
        .ok_or_else(|| anyhow!("the subject {:?} is not a token span of the prompt {:?}", args.subject, args.prompt))?;
    let target_id = *tokenizer.encode(&args.target)?.first().ok_or_else(|| anyhow!("the target is empty"))?;
    let options = TraceOptions { samples: args.samples, noise_scale: args.noise, window: args.window, seed: args.seed };
    let bar = progress_bar("{bar:40} {pos}/{len} passes  [{elapsed} < {eta}]");
    let (trace, _) = tracing::trace(model, &plugins, &tokens, span, target_id, &options, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let labels: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let marker = if (span.0..span.1).contains(&i) { "*" } else { "" };
            format!("{}{marker}", tokenizer.decode(&[t]).trim())
        })
        .collect();
    let target = args.target.trim();
    let title = |name: &str| format!("restored p({target}) — {name}");
    let figures = tracing::heatmaps(trace.sweeps(), &labels, title, trace.clean.max(1e-9));
    let summary = format!(
        "p({target}) clean {:.4}, corrupted {:.4}; wrote trace.json and block_output / mlp_output / attention_output \
         .png/.svg to {}",
        trace.clean,
        trace.corrupted,
        args.out.display()
    );
    finish_study(&StudyOutput::new("trace.json", &trace, figures, summary)?, &args.out)
}
