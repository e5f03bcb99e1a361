//! `vene merge OUT`: the result of a sharded sweep, written from its shards' items once all are finished — the
//! same JSON, figures and summary as the command run in one process.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vene_host::sharding::ShardStore;

use crate::studies::{attribute, das_probe, interchange_search, path_patch, steer_sentiment, trace};

#[derive(Args)]
pub struct MergeArgs {
    /// The --out directory the shards wrote into (holding shards/manifest.json).
    #[arg(value_name = "OUT")]
    out: PathBuf,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let store = ShardStore::new(&args.out);
    let Some(manifest) = store.read_manifest()? else {
        bail!(
            "{} does not exist: no shard of a sweep has run with --out {} (start one with --shard I/N)",
            store.manifest_path().display(),
            args.out.display()
        );
    };
    match manifest.identity.command.as_str() {
        "trace" => trace::merge(&args.out),
        "das-probe" => das_probe::merge(&args.out),
        "interchange-search" => interchange_search::merge(&args.out),
        "steer-sentiment" => steer_sentiment::merge(&args.out),
        "path-patch" => path_patch::merge(&args.out),
        "attribute" => attribute::merge(&args.out),
        other => bail!(
            "{} is for `vene {other}`, which this vene cannot merge (it merges: trace, das-probe, interchange-search, steer-sentiment, path-patch, attribute)",
            store.manifest_path().display()
        ),
    }
}
