//! The real pretrained models these machines reach, installed by the set-up step (`scripts/setup.sh`) into the
//! user's cache: Gemma 3 270M (`google/gemma-3-270m`, llama.cpp's GGUF, Q4_K_M; `scripts/real-model.sh`), under the
//! Gemma Terms of Use, which vene fetches for the user and never redistributes; and, from `scripts/real-assets.sh`,
//! EasyOCR's English CRNN, EfficientNet-Lite0, Silero VAD and scikit-image's photographs.

use std::path::PathBuf;

use crate::error::{Result, VeneError};

/// The environment variable that points at a copy of the model elsewhere.
pub const GEMMA3_270M_VARIABLE: &str = "VENE_GEMMA3_270M";
/// Whose terms apply, for the first run that uses the model to say.
pub const GEMMA_TERMS: &str =
    "Gemma 3 270M is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms)";

/// vene's cache: `$XDG_CACHE_HOME/vene` (or `~/.cache/vene`).
pub fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("vene")
}

/// Where the set-up step puts the model: `$XDG_CACHE_HOME/vene/models/` (or `~/.cache/vene/models/`).
pub fn default_gemma3_270m_path() -> PathBuf {
    cache_dir().join("models").join("gemma-3-270m-q4_k_m.gguf")
}

/// A file or directory `scripts/real-assets.sh` installs under the cache (`models/efficientnet-lite0`,
/// `photos/chelsea.png`, …); an error naming the set-up step if it is absent.
pub fn real_asset(relative: &str) -> Result<PathBuf> {
    let path = cache_dir().join(relative);
    if path.exists() {
        return Ok(path);
    }
    Err(VeneError::Config(format!(
        "{} is not installed: run scripts/setup.sh (or scripts/real-assets.sh), which fetches the real CNN and \
         recurrent models and the photographs from PyPI into {}",
        path.display(),
        cache_dir().display()
    )))
}

/// A photograph given as a file, or by the name of one the set-up installs (`chelsea.png`, `coffee.png`,
/// `astronaut.png`, `rocket.jpg`, `motorcycle_left.png`, `horse.png`).
pub fn photo(name_or_path: &str) -> Result<PathBuf> {
    let path = PathBuf::from(name_or_path);
    if path.is_file() {
        return Ok(path);
    }
    real_asset(&format!("photos/{name_or_path}"))
}

/// EasyOCR's English recogniser (CRNN) as a model directory.
pub fn easyocr_english() -> Result<PathBuf> {
    real_asset("models/easyocr-english-g2/config.json").map(|_| cache_dir().join("models/easyocr-english-g2"))
}

/// EfficientNet-Lite0 (ImageNet-1k) as a model directory.
pub fn efficientnet_lite0() -> Result<PathBuf> {
    real_asset("models/efficientnet-lite0/config.json").map(|_| cache_dir().join("models/efficientnet-lite0"))
}

/// The installed model file: `$VENE_GEMMA3_270M`, else the cache path; an error naming the set-up step if absent.
pub fn gemma3_270m() -> Result<PathBuf> {
    let path = std::env::var_os(GEMMA3_270M_VARIABLE)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_gemma3_270m_path);
    if path.is_file() {
        return Ok(path);
    }
    Err(VeneError::Config(format!(
        "the real model (Gemma 3 270M GGUF) is not at {}: install it with scripts/setup.sh (or scripts/real-model.sh), \
         or set {GEMMA3_270M_VARIABLE} to a copy of gemma-3-270m-q4_k_m.gguf",
        path.display()
    )))
}

/// The first time the installed real model is used, the note of whose terms apply (on stderr); later runs stay
/// quiet. `path` is the model a command was given; anything other than the installed real model says nothing.
pub fn note_terms_on_first_use(path: &std::path::Path) {
    let Ok(installed) = gemma3_270m() else { return };
    let same = |a: &std::path::Path, b: &std::path::Path| a.canonicalize().ok() == b.canonicalize().ok();
    if !same(path, &installed) {
        return;
    }
    let marker = installed.with_extension("terms-noted");
    if marker.exists() {
        return;
    }
    eprintln!("note: {GEMMA_TERMS}; vene fetched it for you and never redistributes it.");
    // Best effort: a read-only cache only means the note is shown again next time.
    let _ = std::fs::write(&marker, GEMMA_TERMS);
}

/// Silero VAD 16 kHz as a model directory.
pub fn silero_vad() -> Result<PathBuf> {
    real_asset("models/silero-vad/config.json").map(|_| cache_dir().join("models/silero-vad"))
}

/// The real models the set-up step installs, by the short names the commands take for `--model`.
pub const INSTALLED_NAMES: [&str; 4] = ["gemma-3-270m", "easyocr-english-g2", "efficientnet-lite0", "silero-vad"];

/// `Some(path)` when `name` is one of [`INSTALLED_NAMES`] (an error if that model is not installed), else `None`.
pub fn installed(name: &str) -> Option<Result<PathBuf>> {
    Some(match name {
        "gemma-3-270m" => gemma3_270m(),
        "easyocr-english-g2" => easyocr_english(),
        "efficientnet-lite0" => efficientnet_lite0(),
        "silero-vad" => silero_vad(),
        _ => return None,
    })
}
