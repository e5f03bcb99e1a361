//! The paper's studies as library functions behind `vene` subcommands; each writes PNG + SVG figures and a JSON of
//! its numbers.

pub mod plot;
pub mod tracing;

use std::path::Path;

use crate::error::{Result, VeneError};

/// Writes `value` as pretty JSON to `dir/name`, atomically.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| VeneError::Config(e.to_string()))?;
    vene_checkpoint::write_atomic(&path, text.as_bytes()).map_err(|source| VeneError::Io { path, source })
}
