//! `vene das-probe`: rank-1 DAS versus a linear probe at every layer × position, in one process or as a sharded
//! sweep of the grid's cells.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    model::LoadedModel,
    outputs,
    plugins::PluginSet,
    sharding::{self, ShardSpec, ShardStore},
    studies::probe::{self, das_vs_probe, CellResult, DasBudget, ProbeCell, ProbePlan, ProbeSetup},
    text::TextTokenizer,
};

use crate::common::{
    advance, finish_study, load_model, model_tokenizer, progress_bar, sweep_manifest, ModelArgs, PluginArgs, ShardRun,
};

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
    /// Compute only shard I of N of the layer × position cells (`auto/N` reads I from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), each stored under OUT/shards/ as it finishes; `vene merge OUT` writes the result.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
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
    let spec = args.shard.as_deref().map(ShardSpec::parse).transpose()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let budget = DasBudget { positions: args.positions.clone(), pairs: args.pairs, epochs: args.epochs };
    let setup = ProbeSetup { template: args.template.clone(), classes, budget };
    if let Some(spec) = spec {
        return run_shard(&args, &setup, (&plugins, model, &tokenizer), spec);
    }
    let bar = progress_bar("DAS and probe {bar:40} {pos}/{len} sites  [{elapsed} < {eta}]");
    let (result, _) = das_vs_probe(model, &plugins, &tokenizer, &setup, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&probe::study_output(&result)?, &args.out)
}

fn run_shard(
    args: &DasProbeArgs,
    setup: &ProbeSetup,
    (plugins, model, tokenizer): (&PluginSet, LoadedModel, &TextTokenizer),
    spec: ShardSpec,
) -> Result<()> {
    let plan = probe::plan(tokenizer, setup, model.catalog().num_layers as usize)?;
    let items = plan.sweep_items();
    let context = serde_json::to_value(&plan)?;
    let manifest = sweep_manifest("das-probe", &args.model, &setup.sweep_options()?, &items, spec.count, context)?;
    let run = ShardRun::open(&args.out, manifest, spec)?;
    let compute = |model, cell: &ProbeCell| probe::measure_cell(model, plugins, tokenizer, setup, &plan, *cell);
    run.compute(&items, model, compute, "DAS and probe {bar:40} {pos}/{len} sites of this shard  [{elapsed} < {eta}]")
}

/// Writes das_probe.json and the two heatmaps from a finished sharded sweep's cells.
pub fn merge(out: &Path) -> Result<()> {
    let (manifest, cells) = sharding::collect::<ProbeCell, CellResult>(&ShardStore::new(out))?;
    let plan: ProbePlan = serde_json::from_value(manifest.context)?;
    let results: Vec<CellResult> = cells.into_iter().map(|(_, result)| result).collect();
    finish_study(&probe::study_output(&plan.assemble(&results)?)?, out)
}
