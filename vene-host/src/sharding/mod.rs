//! Sweeps split over many processes: a sweep-shaped command lists its work as items with stable ids, a shard
//! (`--shard I/N`) computes only its items and stores each as it finishes (so a rerun resumes), and a merge reads
//! them back in the sweep's order to produce exactly what one process would have (item results are stored as JSON,
//! which round-trips every f64 exactly, and each item's randomness is seeded by the item, not by the process).

mod cache;
mod manifest;
mod spec;
mod status;
mod store;

pub use cache::{Cached, ItemCache};
pub use manifest::{json_sha256, model_sha256, sha256_hex, Manifest, SweepIdentity};
pub use spec::{ShardSpec, INDEX_VARIABLES};
pub use status::{shard_states, ShardState};
pub use store::{ItemRecord, ShardStore};

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Result, VeneError};

/// What one shard run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardReport {
    /// Items of this shard computed by this run.
    pub computed: usize,
    /// Items of this shard already stored by an earlier run, skipped.
    pub skipped: usize,
    /// Items of the whole sweep stored now, and the sweep's size.
    pub sweep_done: usize,
    pub sweep_total: usize,
}

/// Computes shard `spec`'s items of `items` (`(id, input)` in the sweep's order) that are not stored yet, storing
/// each as it finishes. `compute` threads `state` (the model) through the items; `progress(done, total)` counts this
/// shard's items. An error is recorded for `vene slurm status` and returned; the items finished before it are kept.
pub fn run_shard<I, R, S>(
    store: &ShardStore,
    manifest: &Manifest,
    spec: ShardSpec,
    items: &[(String, I)],
    state: S,
    mut compute: impl FnMut(S, &I) -> Result<(R, S)>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(ShardReport, S)>
where
    I: Serialize + DeserializeOwned + Clone,
    R: Serialize + DeserializeOwned,
{
    let mine: Vec<&(String, I)> = spec.positions(items.len()).into_iter().map(|p| &items[p]).collect();
    store.remove_temporaries(&mine.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
    let mut report = ShardReport { computed: 0, skipped: 0, sweep_done: 0, sweep_total: items.len() };
    let mut stored = |state: S| -> Result<S> {
        let mut state = state;
        for (done, (id, input)) in mine.iter().enumerate() {
            if store.read_item::<I, R>(manifest, id)?.is_some() {
                report.skipped += 1;
            } else {
                let (result, back) = compute(state, input)?;
                state = back;
                let record = ItemRecord {
                    identity: manifest.identity.clone(),
                    id: id.clone(),
                    shard: spec.to_string(),
                    input: input.clone(),
                    result,
                };
                store.write_item(&record)?;
                report.computed += 1;
            }
            progress(done + 1, mine.len());
        }
        Ok(state)
    };
    let state = match stored(state) {
        Ok(state) => state,
        Err(error) => {
            store.record_failure(spec.index, &error.to_string());
            return Err(error);
        }
    };
    store.clear_failure(spec.index);
    report.sweep_done = manifest.items.iter().filter(|id| store.has_item(id)).count();
    Ok((report, state))
}

/// Every item of the sweep stored under `store`, in the sweep's order, with the manifest. Missing items are an error
/// naming them and their shards; so is any damaged item file or one from another sweep.
pub fn collect<I: DeserializeOwned, R: DeserializeOwned>(store: &ShardStore) -> Result<(Manifest, Vec<(I, R)>)> {
    let manifest = store.read_manifest()?.ok_or_else(|| {
        VeneError::Sharding(format!(
            "{} does not exist: no shard of a sweep has run with this --out",
            store.manifest_path().display()
        ))
    })?;
    if let Some(stray) = store.strays(&manifest).first() {
        return Err(VeneError::Sharding(format!(
            "{} is not one of the manifest's {} items; it belongs to another sweep (remove it)",
            stray.display(),
            manifest.items.len()
        )));
    }
    let mut results = Vec::with_capacity(manifest.items.len());
    let mut missing: Vec<(usize, &str)> = Vec::new();
    for (position, id) in manifest.items.iter().enumerate() {
        match store.read_item::<I, R>(&manifest, id)? {
            Some(record) => results.push((record.input, record.result)),
            None => missing.push((manifest.shard_of(position), id)),
        }
    }
    if !missing.is_empty() {
        return Err(VeneError::Sharding(missing_items(&manifest, &missing)));
    }
    Ok((manifest, results))
}

fn missing_items(manifest: &Manifest, missing: &[(usize, &str)]) -> String {
    let mut shards: Vec<usize> = missing.iter().map(|(shard, _)| *shard).collect();
    shards.sort_unstable();
    shards.dedup();
    let per_shard: Vec<String> = shards
        .iter()
        .map(|shard| {
            let ids: Vec<&str> = missing.iter().filter(|(s, _)| s == shard).map(|(_, id)| *id).collect();
            format!("shard {shard}/{} ({})", manifest.shards, ids.join(", "))
        })
        .collect();
    format!(
        "{} of the sweep's {} items are not finished: {}; run those shards (--shard I/{}) or `vene slurm` again, \
         which submits only what is missing",
        missing.len(),
        manifest.items.len(),
        per_shard.join(", "),
        manifest.shards
    )
}
