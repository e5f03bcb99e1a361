//! `vene path-patch`: path patching of attention heads (Wang et al.'s IOI method) from clean / corrupted prompt
//! pairs, to the logits or to later heads' query, key or value inputs, in one process or as a sharded sweep of the
//! senders.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use vene_host::{
    outputs,
    sharding::{self, ShardSpec, ShardStore},
    studies::{
        self,
        path_patching::{self, Baseline, PathBatch, PathOptions, PathPrompt, Receivers, SenderEffects, Shape},
    },
};

use crate::common::{
    advance, finish_study, load_model, model_tokenizer, progress_bar, sweep_manifest, ModelArgs, PluginArgs, ShardRun,
};

#[derive(Clone, Copy, ValueEnum)]
enum ReceiverArg {
    Logits,
    Query,
    Key,
    Value,
}

#[derive(Args)]
pub struct PathPatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines: {"clean": "...", "corrupted": "...", "target": " Mary", "distractor": " John"}; each pair the
    /// same number of tokens, target and distractor one token each.
    #[arg(long, value_name = "PROMPTS.jsonl")]
    prompts: PathBuf,
    /// Where the senders' effect is measured: the logits (direct path) or every later head's input.
    #[arg(long, value_enum, default_value = "logits")]
    receivers: ReceiverArg,
    /// Sender heads as LAYER.HEAD, comma-separated (default: every head).
    #[arg(long, value_delimiter = ',', value_name = "L.H")]
    senders: Option<Vec<String>>,
    /// Freeze the MLPs as well, so only the residual stream carries a sender's effect (default: the path runs
    /// through the MLPs, as in Wang et al.).
    #[arg(long)]
    freeze_mlps: bool,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Compute only shard I of N of the senders (`auto/N` reads I from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX),
    /// each stored under OUT/shards/ as it finishes; `vene merge OUT` writes the result.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// What a sharded sweep's merge needs besides the senders' effects.
#[derive(Serialize, Deserialize)]
struct SweepContext {
    shape: Shape,
    options: PathOptions,
    baseline: Baseline,
}

fn parse_head(text: &str) -> Result<(u32, u32)> {
    let parsed = text
        .trim()
        .trim_start_matches('L')
        .split_once('.')
        .and_then(|(l, h)| Some((l.parse().ok()?, h.trim_start_matches('H').parse().ok()?)));
    parsed.ok_or_else(|| anyhow!("sender {text:?} is not LAYER.HEAD (e.g. 9.1 or L9.H1)"))
}

pub fn run(args: PathPatchArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let text =
        std::fs::read_to_string(&args.prompts).map_err(|e| anyhow!("cannot read {}: {e}", args.prompts.display()))?;
    let shape = r#"{"clean": "...", "corrupted": "...", "target": "...", "distractor": "..."}"#;
    let prompts: Vec<PathPrompt> = studies::parse_json_lines(&text, &args.prompts.display().to_string(), shape)?;
    let senders = args.senders.as_ref().map(|list| list.iter().map(|s| parse_head(s)).collect()).transpose()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let batch = PathBatch::new(&tokenizer, &prompts, model.device())?;
    let receivers = match args.receivers {
        ReceiverArg::Logits => Receivers::Logits,
        ReceiverArg::Query => Receivers::Query,
        ReceiverArg::Key => Receivers::Key,
        ReceiverArg::Value => Receivers::Value,
    };
    let options = PathOptions { receivers, freeze_mlps: args.freeze_mlps };
    let senders = senders.unwrap_or_else(|| path_patching::all_heads(&model));
    if let Some(spec) = args.shard.as_deref().map(ShardSpec::parse).transpose()? {
        let baseline = Baseline::measure(&model, &batch)?;
        let items = path_patching::items(&senders);
        let context = serde_json::to_value(SweepContext { shape: Shape::of(&model, &batch), options, baseline })?;
        let sweep_options = path_patching::sweep_options(&batch, &options)?;
        let manifest = sweep_manifest("path-patch", &args.model, &sweep_options, &items, spec.count, context)?;
        let run = ShardRun::open(&args.out, manifest, spec)?;
        let compute = |model, sender: &(u32, u32)| {
            let effects = path_patching::sender_effects(&model, &plugins, &batch, &baseline, *sender, &options)?;
            Ok((effects, model))
        };
        return run.compute(&items, model, compute, "path patching {bar:40} {pos}/{len} senders of this shard");
    }
    let bar = progress_bar("path patching {bar:40} {pos}/{len} senders  [{elapsed} < {eta}]");
    let found = path_patching::run(&model, &plugins, &batch, &senders, &options, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&path_patching::study_output(&found, &args.out)?, &args.out)
}

/// Writes path_patching.json and the heatmap from a finished sharded sweep's senders.
pub fn merge(out: &Path) -> Result<()> {
    let (manifest, senders) = sharding::collect::<(u32, u32), SenderEffects>(&ShardStore::new(out))?;
    let context: SweepContext = serde_json::from_value(manifest.context)?;
    let effects = senders.into_iter().map(|(_, effects)| effects).collect();
    let found = path_patching::assemble(context.shape, &context.options, context.baseline, effects);
    finish_study(&path_patching::study_output(&found, out)?, out)
}
