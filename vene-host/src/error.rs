//! The host's error type: every message is one line naming what was wrong and what would be valid.

use std::path::PathBuf;

use vene_api::PluginError;

#[derive(Debug, thiserror::Error)]
pub enum VeneError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("unknown intervention type '{name}'; known types: {}", known.join(", "))]
    UnknownInterventionType { name: String, known: Vec<String> },
    #[error("unknown component '{component}' for {model_type}; the model's components: {}", known.join(", "))]
    UnknownComponent { component: String, model_type: String, known: Vec<String> },
    #[error("layer {layer} is out of range for {component}: it exists at layers 0..{num_layers}")]
    LayerOutOfRange { layer: u32, component: String, num_layers: u32 },
    #[error("invalid unit_locations: {0}")]
    Locations(String),
    #[error("invalid subspaces: {0}")]
    Subspaces(String),
    #[error("invalid inputs: {0}")]
    Inputs(String),
    #[error("wrong number of sources: {0}")]
    Sources(String),
    #[error("plugin {path}: {message}")]
    Plugin { path: PathBuf, message: String },
    #[error("{context}: {error}")]
    Model { context: String, error: PluginError },
    #[error("intervention '{key}' failed: {message}")]
    Intervention { key: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path} is not valid JSON for {what}: {source}")]
    Json { path: PathBuf, what: &'static str, source: serde_json::Error },
    #[error("model '{repo}' is not in the Hugging Face cache at {cache}: {message}")]
    Hub { repo: String, cache: PathBuf, message: String },
    #[error("{0}")]
    Checkpoint(#[from] vene_checkpoint::CheckpointError),
    #[error("sharded sweep: {0}")]
    Sharding(String),
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for VeneError {
    fn from(error: tch::TchError) -> Self {
        let text = error.to_string();
        VeneError::Torch(text.lines().next().unwrap_or_default().to_string())
    }
}

pub type Result<T> = std::result::Result<T, VeneError>;
