//! The error every ABI call can return.

use abi_stable::{std_types::RString, StableAbi};

/// What kind of failure a [`PluginError`] reports, so the host can phrase it.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration value is invalid (unknown option, wrong dimension, ...).
    InvalidConfig,
    /// An input tensor or location is invalid for this model or intervention.
    InvalidInput,
    /// Loading weights or a model directory failed.
    Load,
    /// The request is valid but this plugin does not support it (device, dtype, option).
    Unsupported,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// libtorch raised an error.
    Torch,
    /// The host's hook callback failed; the host holds the details.
    Host,
    /// Not a failure: the host has every activation it wants from this pass (a source run past its last read site)
    /// and asks the model to stop. Adapters return it from `forward` as they return any hook error (`?`).
    Stop,
}

/// An error that crossed (or may cross) the plugin boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: RString::from(message.into()) }
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn load(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Load, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
}

impl From<tch::TchError> for PluginError {
    fn from(error: tch::TchError) -> Self {
        let text = error.to_string();
        // libtorch appends a C++ backtrace; the first line carries the message.
        let first = text.lines().next().unwrap_or_default();
        Self::new(ErrorKind::Torch, format!("libtorch: {first}"))
    }
}

pub type PluginResult<T> = Result<T, PluginError>;
