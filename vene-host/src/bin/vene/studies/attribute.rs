//! `vene attribute`: attribution patching (AtP, or its integrated-gradients form) of every node — component ×
//! layer × position (× head) — for clean / corrupted prompt pairs, with the top nodes and a random control
//! re-patched exactly.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        self,
        attribution::{attribute, default_components, prompt_inputs, write_scores, AttributionOptions, Metric},
        path_patching::PathPrompt,
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct AttributeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines {"clean": …, "corrupted": …, "target": …, "distractor": …}; each pair the same number of tokens.
    #[arg(long, value_name = "FILE")]
    prompts: PathBuf,
    /// logit-diff (target − distractor), prob or logprob (of the target), at the last position.
    #[arg(long, default_value = "logit-diff")]
    metric: String,
    /// Components to score, comma-separated (default: block_output, attention_output, mlp_output and
    /// head_attention_value_output, those the model has; mlp_activation scores every neuron's position).
    #[arg(long, value_delimiter = ',')]
    components: Option<Vec<String>>,
    /// Integrated-gradients steps between clean and corrupted input embeddings (0: AtP, the clean gradient).
    #[arg(long, default_value_t = 0)]
    ig_steps: usize,
    /// Nodes re-patched exactly: the top K by |estimate| ...
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// ... and this many others drawn at random as a control.
    #[arg(long, default_value_t = 10)]
    random_k: usize,
    /// Patch every node exactly too and report the rank correlation over the whole grid (one pass per node).
    #[arg(long)]
    verify_all: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: AttributeArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let metric = Metric::parse(&args.metric)?;
    let text =
        std::fs::read_to_string(&args.prompts).map_err(|e| anyhow!("cannot read {}: {e}", args.prompts.display()))?;
    let shape = r#"{"clean": "...", "corrupted": "...", "target": "...", "distractor": "..."}"#;
    let prompts: Vec<PathPrompt> = studies::parse_json_lines(&text, &args.prompts.display().to_string(), shape)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let (inputs, tokens) = prompt_inputs(&tokenizer, &prompts, model.device())?;
    let components = args.components.clone().unwrap_or_else(|| default_components(&model));
    let options = AttributionOptions {
        components,
        metric,
        ig_steps: args.ig_steps,
        top_k: args.top_k,
        random_k: args.random_k,
        verify_all: args.verify_all,
        seed: args.seed,
    };
    let (result, _) = attribute(model, &plugins, &inputs, &options, tokens)?;
    let seconds = result.seconds;
    eprintln!(
        "seconds: estimate {:.2}, exact re-patching of {} nodes {:.2}{}",
        seconds.estimate,
        result.verified.len(),
        seconds.verify,
        seconds.verify_all.map_or(String::new(), |s| format!(", every node exactly {s:.2}"))
    );
    finish_study(&result.output("attribution.json")?, &args.out)?;
    Ok(write_scores(&result, &args.out)?)
}
