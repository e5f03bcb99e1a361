//! `vene demo`: builds the embedded default models once (cached under the user's cache dir, seeded, guarded by a
//! file lock so concurrent runs end with one good copy), then runs the studies on them and writes an HTML report.

pub mod cached;
pub mod circuits;
pub mod cnn_rnn;
pub mod corpus;
pub mod language_model;
pub mod plan;
pub mod real_model;
pub mod report;

use std::path::{Path, PathBuf};

use crate::error::{Result, VeneError};

/// Bumped whenever the demo recipe changes, so stale caches are rebuilt.
pub const DEMO_VERSION: &str = "2";

/// The seed the demo models are trained with unless `vene demo --seed` says otherwise.
pub const DEFAULT_SEED: u64 = 7;

/// The cache name of demo model `name` trained with `seed`: the bare name for the default seed.
pub fn model_name(name: &str, seed: u64) -> String {
    if seed == DEFAULT_SEED {
        name.to_string()
    } else {
        format!("{name}-seed{seed}")
    }
}

/// `$XDG_CACHE_HOME/vene/demo/v{DEMO_VERSION}` (or `~/.cache/...`).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("vene").join("demo").join(format!("v{DEMO_VERSION}"))
}

/// The model directory `name` under `root`, built by `build` into a staging directory and renamed into place if it
/// is missing. A lock file serialises builders; one that finds the model already built just returns it.
pub fn ensure_built(root: &Path, name: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VeneError::Io { path: path.clone(), source }
    };
    let target = root.join(name);
    let done = |dir: &Path| dir.join("config.json").exists() && dir.join("model.safetensors").exists();
    if done(&target) {
        return Ok(target);
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let lock_path = root.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let mut lock = fd_lock::RwLock::new(file);
    let _guard = lock.write().map_err(io(&lock_path))?;
    if done(&target) {
        return Ok(target);
    }
    let staging = root.join(format!(".{name}.building-{}", std::process::id()));
    std::fs::remove_dir_all(&staging).ok();
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    build(&staging)?;
    std::fs::remove_dir_all(&target).ok();
    std::fs::rename(&staging, &target).map_err(io(&target))?;
    Ok(target)
}
