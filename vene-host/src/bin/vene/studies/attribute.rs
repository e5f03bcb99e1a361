//! `vene attribute`: attribution patching (AtP, AtP*'s query/key fix, or the integrated-gradients form) of every
//! node — component × layer × position (× head) — for clean / corrupted prompt pairs, with the top nodes and a
//! random control re-patched exactly; or, sharded over prompt chunks, the estimates alone.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use vene_host::{
    outputs,
    sharding::{self, ShardSpec, ShardStore},
    studies::{
        self,
        attribution::{
            attribute,
            chunks::{chunk_items, estimate_chunk, merge_chunks, ChunkEstimates},
            default_components, method, prompt_inputs, with_qk, write_scores, AttributionOptions, Metric,
        },
        path_patching::PathPrompt,
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, sweep_manifest, ModelArgs, PluginArgs, ShardRun};

/// What `vene attribute` and `vene circuit` share: the prompt pairs, the metric, the estimate and its exact check.
#[derive(Args)]
pub struct PairArgs {
    /// JSON lines {"clean": …, "corrupted": …, "target": …, "distractor": …}; each pair the same number of tokens.
    #[arg(long, value_name = "FILE")]
    pub prompts: PathBuf,
    /// logit-diff (target − distractor), prob or logprob (of the target), or kl (KL divergence from the clean run's
    /// next-token distribution; needs --ig-steps ≥ 1, as its gradient at the clean run is zero), at the last position.
    #[arg(long, default_value = "logit-diff")]
    pub metric: String,
    /// Integrated-gradients steps between clean and corrupted input embeddings (0: the gradient at the clean run).
    #[arg(long, default_value_t = 0)]
    pub ig_steps: usize,
    /// Nodes (edges) patched exactly: the top K by |estimate| ...
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// ... and this many others drawn at random as a control.
    #[arg(long, default_value_t = 10)]
    pub random_k: usize,
    /// Patch every node (edge) exactly too and report the rank correlation over all of them (a pass each).
    #[arg(long)]
    pub verify_all: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct AttributeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pairs: PairArgs,
    /// Components to score, comma-separated (default: block_output, attention_output, mlp_output and
    /// head_attention_value_output, those the model has; mlp_activation scores every neuron's position).
    #[arg(long, value_delimiter = ',')]
    components: Option<Vec<String>>,
    /// AtP*'s query/key fix: score head_query_output and head_key_output nodes (added to the default components)
    /// with their attention patterns recomputed exactly instead of through the softmax's gradient.
    #[arg(long)]
    qk_fix: bool,
    /// AtP*'s GradDrop: also score every node by its mean |estimate| with the gradient through one layer's residual
    /// writes stopped (one more backward per layer); the top nodes for the exact check are chosen by that score.
    #[arg(long)]
    grad_drop: bool,
    /// Compute only shard I of N of the prompt chunks (`auto/N` reads I from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), each chunk's estimates stored under OUT/shards/ as it finishes; `vene merge OUT`
    /// writes the estimates of every prompt (the exact re-patching needs one process with every prompt).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Prompts per chunk (one item of a sharded run).
    #[arg(long, default_value_t = 8)]
    chunk: usize,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// What a sharded sweep's merge needs besides the chunks' estimates.
#[derive(Serialize, Deserialize)]
struct SweepContext {
    metric: Metric,
    method: String,
    tokens: Vec<String>,
}

/// The clean / corrupted prompt pairs of a JSON-lines file.
pub fn read_prompt_pairs(path: &Path) -> Result<Vec<PathPrompt>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let shape = r#"{"clean": "...", "corrupted": "...", "target": "...", "distractor": "..."}"#;
    Ok(studies::parse_json_lines(&text, &path.display().to_string(), shape)?)
}

pub fn run(args: AttributeArgs) -> Result<()> {
    outputs::prepare_dir(&args.pairs.out)?;
    let metric = Metric::parse(&args.pairs.metric)?;
    let prompts = read_prompt_pairs(&args.pairs.prompts)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let (inputs, tokens) = prompt_inputs(&tokenizer, &prompts, model.device())?;
    let components = args.components.clone().unwrap_or_else(|| with_qk(default_components(&model), args.qk_fix));
    let options = AttributionOptions {
        components,
        metric,
        ig_steps: args.pairs.ig_steps,
        qk_fix: args.qk_fix,
        grad_drop: args.grad_drop,
        top_k: args.pairs.top_k,
        random_k: args.pairs.random_k,
        verify_all: args.pairs.verify_all,
        seed: args.pairs.seed,
    };
    if let Some(spec) = args.shard.as_deref().map(ShardSpec::parse).transpose()? {
        let items = chunk_items(&prompts, args.chunk)?;
        let context = serde_json::to_value(SweepContext { metric, method: method(&options), tokens })?;
        let sweep_options = [
            ("prompts", serde_json::to_value(&prompts)?),
            ("components", serde_json::json!(options.components)),
            ("metric", serde_json::to_value(metric)?),
            ("ig_steps", serde_json::json!(options.ig_steps)),
            ("qk_fix", serde_json::json!(options.qk_fix)),
            ("grad_drop", serde_json::json!(options.grad_drop)),
            ("chunk", serde_json::json!(args.chunk)),
        ];
        let manifest = sweep_manifest("attribute", &args.model, &sweep_options, &items, spec.count, context)?;
        let run = ShardRun::open(&args.pairs.out, manifest, spec)?;
        let compute = |model, chunk: &Vec<PathPrompt>| estimate_chunk(model, &plugins, &tokenizer, chunk, &options);
        return run.compute(&items, model, compute, "attribution {bar:40} {pos}/{len} prompt chunks of this shard");
    }
    let (result, _) = attribute(model, &plugins, &inputs, &options, tokens)?;
    let seconds = result.seconds;
    eprintln!(
        "seconds: estimate {:.2}, exact re-patching of {} nodes {:.2}{}",
        seconds.estimate,
        result.verified.len(),
        seconds.verify,
        seconds.verify_all.map_or(String::new(), |s| format!(", every node exactly {s:.2}"))
    );
    finish_study(&result.output("attribution.json")?, &args.pairs.out)?;
    Ok(write_scores(&result, &args.pairs.out)?)
}

/// Writes attribution.json, the heatmaps and the scores from a finished sharded sweep's chunks.
pub fn merge(out: &Path) -> Result<()> {
    let (manifest, chunks) = sharding::collect::<Vec<PathPrompt>, ChunkEstimates>(&ShardStore::new(out))?;
    let context: SweepContext = serde_json::from_value(manifest.context)?;
    let chunks: Vec<ChunkEstimates> = chunks.into_iter().map(|(_, estimates)| estimates).collect();
    let result = merge_chunks(&chunks, context.metric, context.method, context.tokens)?;
    finish_study(&result.output("attribution.json")?, out)?;
    Ok(write_scores(&result, out)?)
}
