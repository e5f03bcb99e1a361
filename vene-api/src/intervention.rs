//! Interventions: functions of a base activation (and optionally a source activation) at a hook site.
//!
//! The host gathers the selected units, calls [`Intervention::apply`], and scatters the result back. For a
//! distributed intervention the host flattens `(batch, units, dim)` into `(batch, units * dim)` first, as pyvene does.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use tch::Tensor;

use crate::{
    error::{PluginError, PluginResult},
    model::{DTypeSpec, DeviceSpec},
    tensor::{NamedTensor, OwnedTensor, TensorRef},
};

/// What the host knows about the site an intervention is created for.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct InterventionSpec {
    /// Component dimension × `max_number_of_units` (pyvene's `embed_dim`).
    pub embed_dim: u32,
    /// The component dimension (size of the site's last axis).
    pub unit_dim: u32,
    pub max_units: u32,
    pub low_rank_dimension: ROption<u32>,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
    /// Seed for anything random in the intervention (initialisation, noise).
    pub seed: u64,
}

/// How the host must drive an intervention.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterventionTraits {
    /// Reads a source activation (from a source run or a constant).
    pub needs_source: bool,
    /// Sees units flattened to `(batch, units * dim)`.
    pub distributed: bool,
    /// Has parameters to train.
    pub trainable: bool,
    /// Returns collected activations and leaves the base unchanged.
    pub collects: bool,
}

/// An intervention instance, as its implementer writes it.
pub trait Intervention: Send + 'static {
    fn traits(&self) -> InterventionTraits;

    /// `subspaces[i]` lists the dimensions of the last axis to act on for batch example `i` (all when `None`).
    fn apply(&mut self, base: &Tensor, source: Option<&Tensor>, subspaces: Option<&[Vec<i64>]>)
        -> PluginResult<Tensor>;

    /// Trainable parameters (shallow handles that share storage with the intervention's own).
    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Everything needed to restore this instance besides its config.
    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        self.parameters()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        match state.first() {
            None => Ok(()),
            Some((name, _)) => {
                Err(PluginError::invalid_config(format!("this intervention has no state entry '{name}'")))
            }
        }
    }

    fn set_training(&mut self, _training: bool) {}

    /// Training progress in `[0, 1]`, for schedules such as a boundless mask's temperature annealing.
    fn set_progress(&mut self, _fraction: f64) {}

    /// A term added to the training loss (e.g. boundless DAS's penalty on its boundary width).
    fn auxiliary_loss(&self) -> PluginResult<Option<Tensor>> {
        Ok(None)
    }
}

/// Creates interventions of the types it names, as its implementer writes it.
pub trait InterventionFactory: Send + Sync + 'static {
    /// Type names as they appear in configs' `"type"`, e.g. `"rotated_space"`.
    fn type_names(&self) -> Vec<String>;

    /// `config_json` is the whole `"type"`-tagged object from the config.
    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>>;
}

/// An intervention across the boundary.
#[sabi_trait]
pub trait InterventionAbi: Send {
    fn traits(&self) -> RResult<InterventionTraits, PluginError>;
    fn apply(
        &mut self,
        base: TensorRef<'_>,
        source: ROption<TensorRef<'_>>,
        subspaces: ROption<RSlice<'_, RVec<i64>>>,
    ) -> RResult<OwnedTensor, PluginError>;
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError>;
    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError>;
    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError>;
    fn set_training(&mut self, training: bool) -> RResult<(), PluginError>;
    fn set_progress(&mut self, fraction: f64) -> RResult<(), PluginError>;
    fn auxiliary_loss(&self) -> RResult<ROption<OwnedTensor>, PluginError>;
}

/// An intervention factory across the boundary.
#[sabi_trait]
pub trait InterventionFactoryAbi: Send + Sync {
    fn type_names(&self) -> RResult<RVec<RString>, PluginError>;
    fn create(
        &self,
        type_name: RStr<'_>,
        config_json: RStr<'_>,
        spec: InterventionSpec,
    ) -> RResult<InterventionAbi_TO<'static, RBox<()>>, PluginError>;
}
