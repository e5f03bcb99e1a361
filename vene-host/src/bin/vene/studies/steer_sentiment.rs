//! `vene steer-sentiment`: story openings steered towards words (e.g. " happy", " sad") at every layer and every
//! step, side by side with the unsteered continuations, a coefficient sweep, and the summed probability of a positive
//! and a negative word list along each continuation (the demo's study, on any model); sharded over its
//! continuations with --shard.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde_json::json;
use vene_host::{
    outputs,
    sharding::{self, ShardSpec, ShardStore},
    studies::sentiment::{
        assemble, sentiment_steering, steer_once, steering_inputs, steering_runs, study_output, Continuation,
        SentimentSetup, SteeringRun,
    },
};

use crate::common::{
    advance, finish_study, load_model, model_tokenizer, progress_bar, sweep_manifest, ModelArgs, PluginArgs, ShardRun,
};

#[derive(Args)]
pub struct SteerSentimentArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Story openings, one per line (e.g. examples/steering/story_openings.txt).
    #[arg(long, value_name = "FILE")]
    openings: PathBuf,
    /// Positive words, one per line (a leading space is added: their first tokens are summed).
    #[arg(long, value_name = "FILE")]
    positive: PathBuf,
    #[arg(long, value_name = "FILE")]
    negative: PathBuf,
    /// Steering words (repeatable).
    #[arg(long = "word", default_values_t = [" happy".to_string(), " sad".to_string()])]
    words: Vec<String>,
    /// The side-by-side continuations' coefficient.
    #[arg(long, default_value_t = 0.3)]
    coefficient: f64,
    /// Coefficients tried on the first opening, e.g. 0.3,3,10,30.
    #[arg(long, value_delimiter = ',', default_value = "0.3,1,3,10")]
    sweep: Vec<f64>,
    /// Where the vector is added at every layer (Gemma 2/3: mlp_post_norm_output, after the post-feed-forward norm).
    #[arg(long, default_value = "mlp_output")]
    component: String,
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Compute only shard I of N of the continuations (`auto/N` reads I from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), each stored under OUT/shards/ as it finishes; `vene merge OUT` writes the result.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

fn lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    if lines.is_empty() {
        return Err(anyhow!("{} has no lines", path.display()));
    }
    Ok(lines)
}

pub fn run(args: SteerSentimentArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let spaced = |path: &Path| -> Result<Vec<String>> { Ok(lines(path)?.iter().map(|w| format!(" {w}")).collect()) };
    let setup = SentimentSetup {
        openings: lines(&args.openings)?,
        words: args.words,
        coefficient: args.coefficient,
        sweep: args.sweep,
        positive: spaced(&args.positive)?,
        negative: spaced(&args.negative)?,
        component: args.component,
        max_new_tokens: args.max_new_tokens,
    };
    let spec = args.shard.as_deref().map(ShardSpec::parse).transpose()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    if let Some(spec) = spec {
        let items = steering_runs(&setup);
        let options = setup.sweep_options()?;
        let manifest = sweep_manifest("steer-sentiment", &args.model, &options, &items, spec.count, json!(setup))?;
        let run = ShardRun::open(&args.out, manifest, spec)?;
        let inputs = steering_inputs(&model, &tokenizer, &setup)?;
        let compute = |model, item: &SteeringRun| steer_once(model, &plugins, &tokenizer, (&setup, &inputs), *item);
        return run.compute(
            &items,
            model,
            compute,
            "{bar:40} {pos}/{len} continuations of this shard  [{elapsed} < {eta}]",
        );
    }
    let bar = progress_bar("{bar:40} {pos}/{len} continuations  [{elapsed} < {eta}]");
    let (found, _) = sentiment_steering(model, &plugins, &tokenizer, &setup, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&study_output(&found)?, &args.out)
}

/// Writes steer_sentiment.json, the figures and the summary from a finished sharded study.
pub fn merge(out: &Path) -> Result<()> {
    let (manifest, continuations) = sharding::collect::<SteeringRun, Continuation>(&ShardStore::new(out))?;
    let setup: SentimentSetup = serde_json::from_value(manifest.context)?;
    let found = assemble(&setup, continuations.into_iter().map(|(_, c)| c).collect());
    finish_study(&study_output(&found)?, out)
}
