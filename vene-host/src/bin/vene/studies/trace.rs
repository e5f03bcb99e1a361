//! `vene trace`: causal tracing (Meng et al.) of one prompt, or of every fact in a facts file that the model knows,
//! averaged by position class as in Meng et al.'s Figure 2.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    outputs,
    sharding::{self, ShardSpec, ShardStore},
    studies::{
        facts::{self, Fact, FactOutcome},
        prompt_trace,
        tracing::{self, TraceOptions},
    },
};

use crate::common::{
    advance, finish_study, load_model, model_tokenizer, progress_bar, sweep_manifest, ModelArgs, PluginArgs, ShardRun,
};

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The factual prompt, e.g. "The Eiffel Tower is in the city of".
    #[arg(long, required_unless_present = "facts", requires_all = ["subject", "target"])]
    prompt: Option<String>,
    /// The subject's text within the prompt, e.g. "The Eiffel Tower".
    #[arg(long)]
    subject: Option<String>,
    /// The target continuation (its first token is scored), e.g. " Paris".
    #[arg(long)]
    target: Option<String>,
    /// A JSON-lines file of facts, one `{"prompt": …, "subject": …, "target": …}` per line: every fact the model
    /// knows (its top-1 next token is the target) is traced, and the sweeps are averaged by position class.
    #[arg(long, value_name = "FACTS.jsonl", conflicts_with_all = ["prompt", "subject", "target"])]
    facts: Option<PathBuf>,
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
    /// With --facts: compute only shard I of N (`auto/N` reads I from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), each fact stored under OUT/shards/ as it finishes; `vene merge OUT` writes the
    /// result once every shard is done.
    #[arg(long, value_name = "I/N", requires = "facts")]
    shard: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: TraceArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let options = TraceOptions { samples: args.samples, noise_scale: args.noise, window: args.window, seed: args.seed };
    match (&args.facts, &args.prompt, &args.subject, &args.target) {
        (Some(facts), ..) => match &args.shard {
            Some(shard) => run_shard(&args, facts, &options, ShardSpec::parse(shard)?),
            None => run_facts(&args, facts, &options),
        },
        (None, Some(prompt), Some(subject), Some(target)) => run_single(&args, prompt, subject, target, &options),
        _ => Err(anyhow!("give --facts FILE, or --prompt with --subject and --target")),
    }
}

fn run_single(args: &TraceArgs, prompt: &str, subject: &str, target: &str, options: &TraceOptions) -> Result<()> {
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let bar = progress_bar("{bar:40} {pos}/{len} passes  [{elapsed} < {eta}]");
    let (found, _) =
        prompt_trace::trace_text(model, &plugins, &tokenizer, prompt, subject, target, options, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&prompt_trace::study_output(&found, &args.out)?, &args.out)
}

fn run_facts(args: &TraceArgs, path: &Path, options: &TraceOptions) -> Result<()> {
    let facts = facts::read_facts(path)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let bar = progress_bar("{bar:40} {pos}/{len} facts  [{elapsed} < {eta}]");
    let (result, _) = facts::trace_facts(model, &plugins, &tokenizer, &facts, options, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&facts::study_output(&result, &args.out)?, &args.out)
}

fn run_shard(args: &TraceArgs, path: &Path, options: &TraceOptions, spec: ShardSpec) -> Result<()> {
    let facts = facts::read_facts(path)?;
    let items = facts::sweep_items(&facts);
    let options_named = facts::sweep_options(&facts, options)?;
    let manifest = sweep_manifest("trace", &args.model, &options_named, &items, spec.count, serde_json::Value::Null)?;
    let run = ShardRun::open(&args.out, manifest, spec)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let level = tracing::noise_level(&model, options)?;
    let compute = |model, fact: &Fact| facts::trace_fact(model, &plugins, &tokenizer, fact, level, options);
    run.compute(&items, model, compute, "{bar:40} {pos}/{len} facts of this shard  [{elapsed} < {eta}]")
}

/// Writes trace.json, the figures and the summary from a finished sharded sweep's items.
pub fn merge(out: &Path) -> Result<()> {
    let (_, outcomes) = sharding::collect::<Fact, FactOutcome>(&ShardStore::new(out))?;
    let result = facts::assemble(outcomes)?;
    finish_study(&facts::study_output(&result, out)?, out)
}
