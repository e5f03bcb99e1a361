//! `vene scrub`: causal scrubbing of a hypothesis (which heads and MLPs matter, reading only the input's class)
//! against random hypotheses of its size.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        self,
        scrubbing::{self, Node, ScrubData, ScrubExample},
    },
};

use crate::common::{advance, finish_study, load_model, model_tokenizer, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines: {"text": "...", "target": " Mary", "class": "..."} (class defaults to the target); every text
    /// the same number of tokens, every class at least twice.
    #[arg(long, value_name = "EXAMPLES.jsonl")]
    examples: PathBuf,
    /// The nodes the hypothesis keeps, comma-separated: LAYER.HEAD or LAYER.MLP (e.g. L11.H3,L13.H3,L15.MLP).
    #[arg(long, value_delimiter = ',', value_name = "NODES", required = true)]
    keep: Vec<String>,
    /// Random hypotheses of the same size to compare with.
    #[arg(long, default_value_t = 10)]
    controls: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: ScrubArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let text =
        std::fs::read_to_string(&args.examples).map_err(|e| anyhow!("cannot read {}: {e}", args.examples.display()))?;
    let shape = r#"{"text": "...", "target": "...", "class": "..."}"#;
    let examples: Vec<ScrubExample> = studies::parse_json_lines(&text, &args.examples.display().to_string(), shape)?;
    let hypothesis = args.keep.iter().map(|n| Node::parse(n)).collect::<vene_host::error::Result<Vec<_>>>()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let data = ScrubData::new(&tokenizer, &examples, args.seed, model.device())?;
    let bar = progress_bar("causal scrubbing {bar:40} {pos}/{len} hypotheses  [{elapsed} < {eta}]");
    let found = scrubbing::scrub(&model, &plugins, &data, &hypothesis, args.controls, args.seed, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&scrubbing::study_output(&found)?, &args.out)
}
