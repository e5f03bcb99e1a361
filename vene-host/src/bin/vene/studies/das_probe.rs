//! `vene das-probe`: rank-1 DAS versus a linear probe at every layer × position.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        output::StudyOutput,
        probe::{das_vs_probe, DasBudget, ProbeSetup},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct DasProbeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// e.g. "{name} walked because".
    #[arg(long)]
    template: String,
    /// "TARGET=name,name,…" (two or more): names of a class and the word the class predicts.
    #[arg(long = "class", value_name = "TARGET=NAMES", required = true)]
    classes: Vec<String>,
    /// Token positions to study, e.g. 1,3 (default: every position).
    #[arg(long, value_delimiter = ',')]
    positions: Option<Vec<usize>>,
    /// Counterfactual pairs to draw (seeded) from all cross-class pairs (default: all of them).
    #[arg(long)]
    pairs: Option<usize>,
    /// DAS training epochs per layer × position.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// `TARGET=name,name` → (target, names).
fn parse_class(class: &str) -> Result<(String, Vec<String>)> {
    let (target, names) = class.split_once('=').ok_or_else(|| anyhow!("--class {class:?} is not TARGET=NAMES"))?;
    let names = names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    Ok((target.to_string(), names))
}

pub fn run(args: DasProbeArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let classes = args.classes.iter().map(|c| parse_class(c)).collect::<Result<Vec<_>>>()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let budget = DasBudget { positions: args.positions, pairs: args.pairs, epochs: args.epochs };
    let setup = ProbeSetup { template: args.template, classes, budget };
    let bar = progress_bar("DAS and probe {bar:40} {pos}/{len} sites  [{elapsed} < {eta}]");
    let (result, _) = das_vs_probe(model, &plugins, &tokenizer, &setup, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let figures = result.heatmaps("rank-1 DAS held-out IIA", "linear probe held-out accuracy");
    let summary = format!("DAS IIA {:?}\nprobe accuracy {:?}", result.das_iia, result.probe_accuracy);
    finish_study(&StudyOutput::new("das_probe.json", &result, figures, summary)?, &args.out)
}
