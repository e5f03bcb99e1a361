//! Model locations: a local directory, or a Hugging Face hub repo id resolved through the standard cache
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), downloading with hf-hub when online.
//! With `HF_HUB_OFFLINE=1` only the cache is used.

use std::path::{Path, PathBuf};

use hf_hub::{api::sync::ApiBuilder, Cache, Repo};

use crate::error::{Result, VeneError};

/// Weight files in the order they are preferred; the first one present in a repo is used.
const WEIGHT_FILES: [&str; 4] =
    ["model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"];

/// Optional files fetched beside the weights when present.
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"];

/// The hub cache directory, as the Python `huggingface_hub` library resolves it.
pub fn cache_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env("HF_HUB_CACHE")
        .or_else(|| from_env("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| from_env("HF_HOME").map(|home| home.join("hub")))
        .unwrap_or_else(|| Cache::default().path().clone())
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// `gpt2`, `EleutherAI/pythia-70m`: one or two path segments of name characters.
fn is_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Where the model is: `spec` itself if it is a directory or a GGUF file, else the cached (or downloaded) snapshot
/// of the hub repo `spec`.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() || vene_checkpoint::gguf::is_gguf(path) {
        return Ok(path.to_path_buf());
    }
    if let Some(installed) = crate::real_model::installed(spec) {
        return installed;
    }
    if path.is_file() {
        return Err(VeneError::Config(format!(
            "model '{spec}' is a file but not a GGUF (.gguf) file: give a .gguf file, a model directory or a hub repo id"
        )));
    }
    if !is_repo_id(spec) {
        return Err(VeneError::Config(format!(
            "model '{spec}' is neither a directory, a .gguf file nor a hub repo id such as gpt2 or EleutherAI/pythia-70m"
        )));
    }
    let cache_path = cache_dir();
    let cache = Cache::new(cache_path.clone());
    if let Some(dir) = cached_snapshot(&cache, spec) {
        return Ok(dir);
    }
    let missing = |why: String| VeneError::Hub { repo: spec.to_string(), cache: cache_path.clone(), message: why };
    if offline() {
        return Err(missing("HF_HUB_OFFLINE is set, so nothing is downloaded".to_string()));
    }
    download(&cache, spec).map_err(|e| missing(format!("downloading failed: {e}")))
}

/// A directory of saved interventions: `spec` itself if it exists, else the cached (or downloaded) snapshot of the hub
/// repo `spec` (vene's `config.json` + `interventions.safetensors`, or pyvene's `config.json` + `intkey_*.bin`).
pub fn resolve_interventions(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() || !is_repo_id(spec) {
        return Ok(path.to_path_buf());
    }
    let cache_path = cache_dir();
    let cache = Cache::new(cache_path.clone());
    if let Some(config) = cache.repo(Repo::model(spec.to_string())).get("config.json") {
        if let Some(dir) = config.parent() {
            return Ok(dir.to_path_buf());
        }
    }
    let missing = |why: String| VeneError::Hub { repo: spec.to_string(), cache: cache_path.clone(), message: why };
    if offline() {
        return Err(missing("HF_HUB_OFFLINE is set, so nothing is downloaded".to_string()));
    }
    download_interventions(&cache, spec).map_err(|e| missing(format!("downloading failed: {e}")))
}

fn download_interventions(cache: &Cache, repo: &str) -> std::result::Result<PathBuf, Box<dyn std::error::Error>> {
    let api = ApiBuilder::from_cache(cache.clone()).with_progress(true).build()?;
    let remote = api.model(repo.to_string());
    let info = remote.info()?;
    let config = remote.get("config.json")?;
    for file in info.siblings.iter().map(|s| s.rfilename.as_str()) {
        if file == "interventions.safetensors" || (file.starts_with("intkey_") && file.ends_with(".bin")) {
            remote.get(file)?;
        }
    }
    Ok(config.parent().ok_or("the cache returned a file without a directory")?.to_path_buf())
}

/// The snapshot directory of `repo` if the cache holds its config and weights.
fn cached_snapshot(cache: &Cache, repo: &str) -> Option<PathBuf> {
    let cached = cache.repo(Repo::model(repo.to_string()));
    let config = cached.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    WEIGHT_FILES.iter().any(|f| cached.get(f).is_some()).then_some(dir)
}

fn download(cache: &Cache, repo: &str) -> std::result::Result<PathBuf, Box<dyn std::error::Error>> {
    let api = ApiBuilder::from_cache(cache.clone()).with_progress(true).build()?;
    let remote = api.model(repo.to_string());
    let info = remote.info()?;
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let config = remote.get("config.json")?;
    let weights = WEIGHT_FILES
        .iter()
        .find(|f| files.contains(f))
        .ok_or_else(|| format!("the repo has none of {}", WEIGHT_FILES.join(", ")))?;
    let index = remote.get(weights)?;
    if weights.ends_with(".index.json") {
        let text = std::fs::read_to_string(&index)?;
        let parsed: serde_json::Value = serde_json::from_str(&text)?;
        let mut shards: Vec<String> = parsed["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            remote.get(&shard)?;
        }
    }
    for optional in TOKENIZER_FILES.iter().filter(|f| files.contains(f)) {
        remote.get(optional)?;
    }
    Ok(config.parent().ok_or("the cache returned a file without a directory")?.to_path_buf())
}
