//! Which libtorch this process actually loaded, checked against the one vene was compiled with. libtorch's C++
//! layouts change between releases, so a binary run against another release reads tensors wrongly ("incoherent
//! element sizes", or worse, silently wrong numbers); the loader cannot tell, because the symbols still resolve.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use vene_api::handshake::LIBTORCH_VERSION;

use crate::error::{Result, VeneError};

/// The directory of the `libtorch_cpu` library mapped into a process, from the text of its `/proc/<pid>/maps`.
pub fn loaded_libtorch_dir(maps: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path).file_name().is_some_and(|name| name.to_string_lossy().starts_with("libtorch_cpu."))
        })
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

/// The version of the libtorch whose libraries are in `lib_dir`: the PyPI wheel's `torch/version.py` or the
/// official archive's `build-version`, one level up. `None` when neither is there.
pub fn libtorch_version_at(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    line.split(['\'', '"']).nth(1).map(str::to_string)
}

/// What is wrong when `loaded` (found in `lib_dir`) is another release than `compiled`; the local build tag after
/// `+` (cpu, cu130) does not matter. Unknown versions pass: there is nothing to compare.
fn mismatch(compiled: &str, loaded: &str, lib_dir: &Path) -> Option<String> {
    let release = |version: &str| version.split('+').next().unwrap_or_default().to_string();
    if compiled == "unknown" || release(compiled) == release(loaded) {
        return None;
    }
    Some(format!(
        "vene was built against libtorch {compiled}, but this process loaded libtorch {loaded} from {}; their C++ \
         layouts differ and tensors would be read wrongly: put libtorch {} first on LD_LIBRARY_PATH \
         (scripts/setup.sh installs it into .deps/libtorch-py), or rebuild vene against {loaded}",
        lib_dir.display(),
        release(compiled)
    ))
}

/// An error naming both releases and the fix when `loaded` is another release than `compiled` (see [`mismatch`]).
pub fn compare_libtorch(compiled: &str, loaded: &str, lib_dir: &Path) -> Result<()> {
    mismatch(compiled, loaded, lib_dir).map_or(Ok(()), |message| Err(VeneError::Torch(message)))
}

/// Checks, once per process, that the loaded libtorch is the release vene was compiled with (Linux; elsewhere, or
/// when the loaded library carries no version file, nothing is checked).
pub fn check_loaded_libtorch() -> Result<()> {
    static MISMATCH: OnceLock<Option<String>> = OnceLock::new();
    let found = MISMATCH.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let lib_dir = loaded_libtorch_dir(&maps)?;
        let loaded = libtorch_version_at(&lib_dir)?;
        mismatch(LIBTORCH_VERSION, &loaded, &lib_dir)
    });
    found.clone().map_or(Ok(()), |message| Err(VeneError::Torch(message)))
}
