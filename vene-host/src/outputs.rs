//! Checks on where results will go, made before any model is loaded, so a long run never ends in "cannot write".

use std::path::Path;

use crate::error::{Result, VeneError};

fn refuse(path: &Path, reason: impl Into<String>) -> VeneError {
    VeneError::Write { path: path.to_path_buf(), reason: reason.into() }
}

/// Creates and removes a hidden file in `dir`: proof that files can be written there.
fn probe(dir: &Path, target: &Path) -> Result<()> {
    let probe = dir.join(format!(".vene-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|error| refuse(target, error.to_string()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// `path` can become a file: it is not a directory, and its directory exists and takes new files.
pub fn check_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(refuse(path, "it is a directory (valid: a file path, e.g. out.safetensors)"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(refuse(path, format!("the directory {} does not exist", parent.display())));
    }
    probe(parent, path)
}

/// `path` is, or now is, a directory that takes new files.
pub fn prepare_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(refuse(path, "it is a file (valid: a directory to write into)"));
    }
    std::fs::create_dir_all(path).map_err(|error| refuse(path, error.to_string()))?;
    probe(path, path)
}

/// `path` can become a directory that replaces any old one atomically: its parent exists or can be created, and
/// takes new entries; an existing `path` must be a directory.
pub fn check_replaced_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(refuse(path, "it is a file (valid: a directory to save into)"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|error| refuse(path, error.to_string()))?;
    probe(parent, path)
}

/// Fills a staging directory beside `dir` with `fill`, then puts it in place of `dir` (an old `dir` is replaced
/// only once the new one is complete).
pub fn write_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VeneError::Io { path: path.clone(), source }
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("saved");
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(".{name}.saving-{}", std::process::id()));
    std::fs::remove_dir_all(&staging).ok();
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    if let Err(error) = fill(&staging) {
        std::fs::remove_dir_all(&staging).ok();
        return Err(error);
    }
    let retired = parent.join(format!(".{name}.replaced-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &retired).map_err(io(dir))?;
    }
    std::fs::rename(&staging, dir).map_err(io(dir))?;
    std::fs::remove_dir_all(&retired).ok();
    Ok(())
}
