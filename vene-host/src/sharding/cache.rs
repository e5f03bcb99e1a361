//! Results kept between runs of the same work: a sweep's items stored as a one-shard sweep under a directory named
//! by the digest of its manifest, so a second run with the same model, options and items reads them back instead
//! of computing them (the demo's second run), and a run with anything different gets a directory of its own.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::{collect, run_shard, sha256_hex, Manifest, ShardSpec, ShardStore, SweepIdentity};
use crate::error::{Result, VeneError};

/// Item results cached for one model under `root`.
#[derive(Debug, Clone)]
pub struct ItemCache {
    root: PathBuf,
    model_sha256: String,
}

/// The results of a cached sweep, in its items' order, and how many were read back rather than computed.
#[derive(Debug, Clone)]
pub struct Cached<R> {
    pub results: Vec<R>,
    pub reused: usize,
}

impl ItemCache {
    /// A cache under `root` for the model whose files hash to `model_sha256`.
    pub fn new(root: &Path, model_sha256: String) -> Self {
        Self { root: root.to_path_buf(), model_sha256 }
    }

    /// `items` of the work `name` with `options` (libtorch's thread count is added: it changes the last bits),
    /// computed by `compute` unless stored by an earlier run; `progress(done, total)` after each item.
    pub fn run<I, R, S>(
        &self,
        name: &str,
        options: &[(&str, serde_json::Value)],
        items: &[(String, I)],
        state: S,
        compute: impl FnMut(S, &I) -> Result<(R, S)>,
        progress: impl FnMut(usize, usize),
    ) -> Result<(Cached<R>, S)>
    where
        I: Serialize + DeserializeOwned + Clone,
        R: Serialize + DeserializeOwned,
    {
        let mut options: std::collections::BTreeMap<String, serde_json::Value> =
            options.iter().map(|(name, value)| (name.to_string(), value.clone())).collect();
        options.insert("libtorch's threads".to_string(), serde_json::json!(tch::get_num_threads()));
        let manifest = Manifest {
            identity: SweepIdentity::new(name, self.model_sha256.clone(), options),
            model: String::new(),
            shards: 1,
            items: items.iter().map(|(id, _)| id.clone()).collect(),
            context: serde_json::Value::Null,
        };
        let text = serde_json::to_vec(&manifest).map_err(|e| VeneError::Config(e.to_string()))?;
        let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let store = ShardStore::new(&self.root.join(format!("{slug}-{}", &sha256_hex(&text)[..16])));
        store.open(&manifest)?;
        let whole = ShardSpec { index: 0, count: 1 };
        let (report, state) = run_shard(&store, &manifest, whole, items, state, compute, progress)?;
        let (_, stored) = collect::<I, R>(&store)?;
        Ok((Cached { results: stored.into_iter().map(|(_, result)| result).collect(), reused: report.skipped }, state))
    }
}
