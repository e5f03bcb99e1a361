//! What makes two shards parts of one sweep: the command, its options, vene's version and the model file's hash
//! (the [`SweepIdentity`]), plus the shard count and the item list (the [`Manifest`]). Every item file carries the
//! identity it was computed under, so a merge can name what differs in a file that came from another sweep.

use std::{collections::BTreeMap, io::Read, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, VeneError};

/// Everything that decides an item's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepIdentity {
    /// The vene subcommand, e.g. `trace`.
    pub command: String,
    pub vene_version: String,
    /// sha256 of the model's files (see [`model_sha256`]).
    pub model_sha256: String,
    /// What else changes results, by the name a person knows it by (`--samples`, `the facts' sha256`).
    pub options: BTreeMap<String, serde_json::Value>,
}

impl SweepIdentity {
    /// The identity of `command` run by this build of vene on the model with `model_sha256`.
    pub fn new(command: &str, model_sha256: String, options: BTreeMap<String, serde_json::Value>) -> Self {
        Self {
            command: command.to_string(),
            vene_version: env!("CARGO_PKG_VERSION").to_string(),
            model_sha256,
            options,
        }
    }

    /// Each field in which `other` differs from `self`, as `what: SELF here, OTHER there`.
    pub fn differences(&self, other: &Self, here: &str, there: &str) -> Vec<String> {
        let mut differences = Vec::new();
        let mut compare = |what: String, mine: String, theirs: String| {
            if mine != theirs {
                differences.push(format!("{what}: {mine} {here}, {theirs} {there}"));
            }
        };
        compare("the command".to_string(), self.command.clone(), other.command.clone());
        compare("vene's version".to_string(), self.vene_version.clone(), other.vene_version.clone());
        compare("the model's sha256".to_string(), self.model_sha256.clone(), other.model_sha256.clone());
        let names: std::collections::BTreeSet<&String> = self.options.keys().chain(other.options.keys()).collect();
        for name in names {
            let show = |options: &BTreeMap<String, serde_json::Value>| {
                options.get(name).map_or_else(|| "unset".to_string(), |value| value.to_string())
            };
            compare(name.clone(), show(&self.options), show(&other.options));
        }
        differences
    }
}

/// The sweep's plan, written by the first shard that starts and checked by every later one and by the merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub identity: SweepIdentity,
    /// The model as the first shard named it (for people; shards compare the hash).
    pub model: String,
    /// How many shards the items are dealt to.
    pub shards: usize,
    /// The items' ids in the sweep's order.
    pub items: Vec<String>,
    /// What the merge needs besides the items' results (e.g. a grid's labels), derived from the identity.
    #[serde(default)]
    pub context: serde_json::Value,
}

impl Manifest {
    /// Why a shard run with `other` cannot join the sweep this manifest describes; `None` if it can.
    pub fn conflict(&self, other: &Manifest) -> Option<String> {
        let mut reasons = self.identity.differences(&other.identity, "in the manifest", "in this run");
        if self.shards != other.shards {
            reasons.push(format!("the shard count: {} in the manifest, {} in this run", self.shards, other.shards));
        }
        if self.items != other.items {
            reasons.push(format!(
                "the item list: {} items in the manifest, {} in this run{}",
                self.items.len(),
                other.items.len(),
                first_difference(&self.items, &other.items)
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// The shard that computes item number `position`.
    pub fn shard_of(&self, position: usize) -> usize {
        super::spec::shard_of(position, self.shards)
    }
}

fn first_difference(mine: &[String], theirs: &[String]) -> String {
    match mine.iter().zip(theirs).position(|(a, b)| a != b) {
        Some(at) => format!(" (item {at} is {} there, {} here)", mine[at], theirs[at]),
        None => String::new(),
    }
}

/// sha256 of a model: of the file itself, or, for a directory, of each regular file's name and bytes in name order
/// (config, tokenizer and weights; subdirectories are not part of a model's layout).
pub fn model_sha256(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|file| file.is_file() && !is_hidden(file))
            .collect();
        files.sort();
        for file in files {
            hasher.update(file.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            hash_file(&mut hasher, &file)?;
        }
    } else {
        hash_file(&mut hasher, path)?;
    }
    Ok(hex(&hasher.finalize()))
}

/// sha256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of `value`'s JSON, for naming a sweep's inputs in its identity.
pub fn json_sha256(value: &impl Serialize) -> Result<String> {
    serde_json::to_vec(value).map(|bytes| sha256_hex(&bytes)).map_err(|e| VeneError::Config(e.to_string()))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<()> {
    let io = |source| VeneError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
