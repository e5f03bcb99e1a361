//! Records which libtorch this crate was compiled against, for the plugin handshake.
//! The PyPI wheel carries `version.py`; the official zips carry `build-version`.
use std::{fs, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let version = std::env::var("LIBTORCH")
        .ok()
        .and_then(|dir| libtorch_version(Path::new(&dir)))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VENE_LIBTORCH_VERSION={version}");
}

fn libtorch_version(dir: &Path) -> Option<String> {
    // Only files that exist: cargo reruns a build script whose rerun-if-changed path is missing on every build, and
    // with it everything that depends on this crate.
    for candidate in [dir.join("version.py"), dir.join("build-version")] {
        if candidate.exists() {
            println!("cargo:rerun-if-changed={}", candidate.display());
        }
    }
    if let Ok(text) = fs::read_to_string(dir.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = fs::read_to_string(dir.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('\'').nth(1)?.to_string())
}
