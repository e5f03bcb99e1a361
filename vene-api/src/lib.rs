//! The stable ABI contract between the vene host and its plugins.
//!
//! A plugin is a `cdylib` that exports one [`plugin::PluginRoot`] (through [`export_plugin!`]). The root hands the
//! host ABI-stable trait objects for the model adapters ([`model::AdapterAbi`]) and intervention factories
//! ([`intervention::InterventionFactoryAbi`]) it provides. Plugin authors implement the plain Rust traits
//! ([`model::ModelAdapter`], [`model::Model`], [`intervention::InterventionFactory`], [`intervention::Intervention`]);
//! the wrappers in [`plugin`] turn them into the ABI objects and turn every panic into a [`PluginError`].
//!
//! Tensors cross the boundary as raw libtorch handles ([`TensorRef`] borrowed, [`OwnedTensor`] owned), so both
//! sides share one libtorch, its autograd graph, devices and dtypes. The [`handshake`] makes sure of that.

// `#[sabi_trait]` expands to impls inside a const block, which current rustc flags.
#![allow(non_local_definitions)]

pub mod catalog;
pub mod error;
pub mod handshake;
pub mod intervention;
pub mod model;
pub mod plugin;
pub mod tensor;

pub use abi_stable;
pub use catalog::{ComponentInfo, InputKind, ModelCatalog, SiteLayout};
pub use error::{ErrorKind, PluginError, PluginResult};
pub use handshake::BuildInfo;
pub use intervention::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits};
pub use model::{DTypeSpec, DeviceSpec, Hooks, LoadRequest, Model, ModelAdapter, ModelInputs, SiteCall};
pub use tch;
pub use tensor::{OwnedTensor, TensorRef};
