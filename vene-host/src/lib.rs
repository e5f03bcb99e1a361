//! vene-host: the engine that runs interventions on models held by plugins, the plugin loader, and the pieces of
//! the `vene` CLI that are useful as a library.
//!
//! ```no_run
//! use vene_host::{config::IntervenableConfig, engine::IntervenableModel, model::LoadedModel, plugins::*};
//! # fn main() -> vene_host::error::Result<()> {
//! let plugins = PluginSet::load(&PluginSearch::standard(&[], &[]))?;
//! let model = LoadedModel::load(&plugins, "gpt2-dir".as_ref(), vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
//! let config = IntervenableConfig::from_file("config.json".as_ref())?;
//! let mut intervenable = IntervenableModel::new(model, config, &plugins, 0)?;
//! # Ok(()) }
//! ```

pub mod audio;
pub mod causal;
pub mod config;
pub mod datasets;
pub mod demo;
pub mod engine;
pub mod erasure;
pub mod error;
pub mod generate;
pub mod hub;
pub mod inputs;
pub mod interventions;
pub mod locations;
pub mod model;
pub mod optim;
pub mod outputs;
pub mod plugins;
pub mod pyvene_import;
pub mod real_model;
pub mod runtime;
pub mod saved;
pub mod sharding;
pub mod studies;
pub mod text;
pub mod toy;
pub mod train;
pub mod units;
pub mod vectors;
pub mod vision;
