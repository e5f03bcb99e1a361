//! `vene interchange-search`: the multi-source interchange over several wordings, at every layer in parallel and
//! every later layer in series, with every combination's top 5 recorded (the demo's study, on any model); sharded
//! over its wording × layer items with --shard.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use vene_host::{
    outputs,
    sharding::{self, ShardSpec, ShardStore},
    studies::{
        self,
        interchange_search::{
            assemble, search, search_items, study_output, try_item, ItemAttempts, SearchItem, SearchSetup, Wording,
        },
    },
};

use crate::common::{
    advance, finish_study, load_model, model_tokenizer, progress_bar, sweep_manifest, ModelArgs, PluginArgs, ShardRun,
};

#[derive(Args)]
pub struct InterchangeSearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines, one wording each: {"base": …, "attribute_source": …, "entity_source": …}, each source differing
    /// from the base in one token (e.g. "The capital of Spain is" / "The language of Spain is" / "The capital of
    /// Italy is").
    #[arg(long, value_name = "WORDINGS.jsonl")]
    wordings: PathBuf,
    /// The token the mix should produce, e.g. " Italian".
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "block_output")]
    component: String,
    /// Serial chains try every this-many-th later layer for the second hop.
    #[arg(long, default_value_t = 1)]
    serial_stride: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Compute only shard I of N of the wording × layer items (`auto/N` reads I from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), each stored under OUT/shards/ as it finishes; `vene merge OUT` writes the result.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    #[command(flatten)]
    plugins: PluginArgs,
}

fn read_wordings(path: &PathBuf) -> Result<Vec<Wording>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shape = "{\"base\": …, \"attribute_source\": …, \"entity_source\": …}";
    Ok(studies::parse_json_lines(&text, &path.display().to_string(), shape)?)
}

pub fn run(args: InterchangeSearchArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let wordings = read_wordings(&args.wordings)?;
    let spec = args.shard.as_deref().map(ShardSpec::parse).transpose()?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let setup = SearchSetup {
        wordings: &wordings,
        target: &args.target,
        component: &args.component,
        serial_stride: args.serial_stride,
    };
    if let Some(spec) = spec {
        let items = search_items(wordings.len(), model.catalog().num_layers as usize);
        let options = setup.sweep_options()?;
        let context = json!({"wordings": wordings, "target": args.target, "component": args.component,
                             "serial_stride": args.serial_stride});
        let manifest = sweep_manifest("interchange-search", &args.model, &options, &items, spec.count, context)?;
        let run = ShardRun::open(&args.out, manifest, spec)?;
        let compute = |model, item: &SearchItem| try_item(model, &plugins, &tokenizer, &setup, *item);
        return run.compute(
            &items,
            model,
            compute,
            "{bar:40} {pos}/{len} wordings × layers of this shard  [{elapsed} < {eta}]",
        );
    }
    let bar = progress_bar("{bar:40} {pos}/{len} wordings × layers  [{elapsed} < {eta}]");
    let (found, _) = search(model, &plugins, &tokenizer, &setup, advance(&bar))?;
    bar.finish_and_clear();
    finish_study(&study_output(&found)?, &args.out)
}

/// Writes interchange_search.json and the summary from a finished sharded search.
pub fn merge(out: &Path) -> Result<()> {
    let (manifest, items) = sharding::collect::<SearchItem, ItemAttempts>(&ShardStore::new(out))?;
    let context = &manifest.context;
    let wordings: Vec<Wording> = serde_json::from_value(context["wordings"].clone())?;
    let text = |key: &str| context[key].as_str().unwrap_or_default().to_string();
    let (target, component) = (text("target"), text("component"));
    let serial_stride = context["serial_stride"].as_u64().unwrap_or(1) as usize;
    let setup = SearchSetup { wordings: &wordings, target: &target, component: &component, serial_stride };
    let found = assemble(&setup, items.into_iter().map(|(_, attempts)| attempts).collect());
    finish_study(&study_output(&found)?, out)
}
