//! The files of a sharded sweep under `OUT/shards/`: `manifest.json`, one `items/ID.json` per finished item and
//! `failed/I.txt` for a shard whose last run stopped on an error. Every file is written to a temporary sibling and
//! renamed into place, so a task killed at any moment leaves whole files or none; the manifest is created only if
//! absent (a hard link of a finished file), so shards starting together agree on one.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{Manifest, SweepIdentity};
use crate::error::{Result, VeneError};

/// One finished item as it is stored: the sweep it belongs to, the item, and its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord<I, R> {
    pub identity: SweepIdentity,
    pub id: String,
    /// The shard that computed it, `I/N`.
    pub shard: String,
    pub input: I,
    pub result: R,
}

/// `OUT/shards/` of one `--out OUT`.
#[derive(Debug, Clone)]
pub struct ShardStore {
    root: PathBuf,
}

impl ShardStore {
    pub fn new(out: &Path) -> Self {
        Self { root: out.join("shards") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    pub fn item_path(&self, id: &str) -> PathBuf {
        self.root.join("items").join(format!("{id}.json"))
    }

    fn failure_path(&self, shard: usize) -> PathBuf {
        self.root.join("failed").join(format!("{shard}.txt"))
    }

    /// The manifest, if a shard has written one.
    pub fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.manifest_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = read(&path)?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            VeneError::Sharding(format!("{} is not a sweep manifest ({e}); it is damaged", path.display()))
        })
    }

    /// Joins the sweep `manifest` describes: writes it if no shard has, or checks that the one there agrees.
    pub fn open(&self, manifest: &Manifest) -> Result<()> {
        for dir in ["items", "failed"] {
            let path = self.root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| VeneError::Write { path, reason: e.to_string() })?;
        }
        let path = self.manifest_path();
        if !path.exists() {
            let text = serde_json::to_string_pretty(manifest).map_err(|e| VeneError::Config(e.to_string()))?;
            let temporary = self.root.join(format!(".manifest.json.tmp-{}", std::process::id()));
            let write = |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).and_then(|_| sync(path));
            write(&temporary, text.as_bytes())
                .map_err(|e| VeneError::Write { path: temporary.clone(), reason: e.to_string() })?;
            // A link fails if another shard created the manifest first; its manifest is then the one to agree with.
            let _ = std::fs::hard_link(&temporary, &path);
            let _ = std::fs::remove_file(&temporary);
        }
        let existing =
            self.read_manifest()?.ok_or_else(|| VeneError::Sharding(format!("{} vanished", path.display())))?;
        match existing.conflict(manifest) {
            None => Ok(()),
            Some(reasons) => Err(VeneError::Sharding(format!(
                "{} describes another sweep than this run ({reasons}); run with the manifest's options, or give \
                 another --out",
                path.display()
            ))),
        }
    }

    /// The stored record of item `id` of `manifest`'s sweep, or `None` if it is not finished. A damaged file, or one
    /// computed under another identity, is an error naming the file and what differs.
    pub fn read_item<I: DeserializeOwned, R: DeserializeOwned>(
        &self,
        manifest: &Manifest,
        id: &str,
    ) -> Result<Option<ItemRecord<I, R>>> {
        let path = self.item_path(id);
        if !path.exists() {
            return Ok(None);
        }
        let text = read(&path)?;
        let record: ItemRecord<I, R> = serde_json::from_str(&text).map_err(|e| {
            VeneError::Sharding(format!(
                "{} is truncated or damaged ({e}); vene writes whole files only, so it was changed afterwards: \
                 delete it and rerun its shard to compute it again (the other items are kept)",
                path.display()
            ))
        })?;
        let differences = manifest.identity.differences(&record.identity, "in the manifest", "in this item");
        if !differences.is_empty() || record.id != id {
            let mut reasons = differences;
            if record.id != id {
                reasons.push(format!("it holds item {} instead", record.id));
            }
            return Err(VeneError::Sharding(format!(
                "{} (computed as shard {}) belongs to another sweep: {}; delete it and rerun its shard, or merge it \
                 with the sweep it came from",
                path.display(),
                record.shard,
                reasons.join("; ")
            )));
        }
        Ok(Some(record))
    }

    /// Stores a finished item atomically.
    pub fn write_item<I: Serialize, R: Serialize>(&self, record: &ItemRecord<I, R>) -> Result<()> {
        let path = self.item_path(&record.id);
        let text = serde_json::to_string(record).map_err(|e| VeneError::Config(e.to_string()))?;
        vene_checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|e| VeneError::Write { path: path.clone(), reason: e.to_string() })
    }

    /// Removes what a killed run of this shard may have left half-written: temporary files of `ids`, which no
    /// other shard writes.
    pub fn remove_temporaries(&self, ids: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.root.join("items")) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.starts_with(&format!(".{id}.json.tmp-"))) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Files in `items/` that are neither finished items nor hidden temporaries (none, in a healthy sweep).
    pub fn strays(&self, manifest: &Manifest) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.root.join("items")) else { return Vec::new() };
        let known: std::collections::HashSet<String> = manifest.items.iter().map(|id| format!("{id}.json")).collect();
        entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                !name.starts_with('.') && !known.contains(&name)
            })
            .collect()
    }

    /// Notes that shard `shard`'s run stopped on `message`.
    pub fn record_failure(&self, shard: usize, message: &str) {
        let _ = vene_checkpoint::write_atomic(&self.failure_path(shard), message.as_bytes());
    }

    pub fn clear_failure(&self, shard: usize) {
        let _ = std::fs::remove_file(self.failure_path(shard));
    }

    /// The error shard `shard`'s last run stopped on, if it did.
    pub fn failure(&self, shard: usize) -> Option<String> {
        std::fs::read_to_string(self.failure_path(shard)).ok()
    }

    /// Whether item `id` has a file (finished, unless the file was damaged afterwards).
    pub fn has_item(&self, id: &str) -> bool {
        self.item_path(id).exists()
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })
}

fn sync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}
