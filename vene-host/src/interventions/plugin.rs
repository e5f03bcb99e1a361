//! An intervention that lives in a plugin, driven through its ABI object.

use abi_stable::std_types::{RBox, ROption, RSlice, RVec};
use tch::Tensor;
use vene_api::{
    intervention::InterventionAbi_TO, tensor::NamedTensor, Intervention, InterventionTraits, PluginError, PluginResult,
    TensorRef,
};

use crate::error::{Result, VeneError};

pub struct PluginIntervention {
    type_name: String,
    traits: InterventionTraits,
    inner: InterventionAbi_TO<'static, RBox<()>>,
}

impl PluginIntervention {
    pub fn new(type_name: &str, inner: InterventionAbi_TO<'static, RBox<()>>) -> Result<Self> {
        let traits = inner
            .traits()
            .into_result()
            .map_err(|e| VeneError::Intervention { key: type_name.to_string(), message: e.to_string() })?;
        Ok(Self { type_name: type_name.to_string(), traits, inner })
    }
}

fn pairs(named: RVec<NamedTensor>) -> Vec<(String, Tensor)> {
    named.into_iter().map(NamedTensor::into_pair).collect()
}

impl Intervention for PluginIntervention {
    fn traits(&self) -> InterventionTraits {
        self.traits
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        let subspaces: Option<Vec<RVec<i64>>> =
            subspaces.map(|s| s.iter().map(|row| RVec::from(row.clone())).collect());
        let output = self.inner.apply(
            TensorRef::new(base),
            source.map(TensorRef::new).into(),
            match &subspaces {
                Some(rows) => ROption::RSome(RSlice::from_slice(rows)),
                None => ROption::RNone,
            },
        );
        output
            .into_result()
            .map(|t| t.into_tensor())
            .map_err(|e| PluginError::new(e.kind, format!("{} (plugin type '{}')", e.message, self.type_name)))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        self.inner.parameters().into_result().map(pairs)
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        self.inner.state().into_result().map(pairs)
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        let named = state.into_iter().map(|(name, tensor)| NamedTensor::new(name, tensor)).collect();
        self.inner.load_state(named).into_result()
    }

    fn set_training(&mut self, training: bool) {
        // A plugin that fails to switch modes keeps its previous mode; nothing else depends on it.
        let _ = self.inner.set_training(training);
    }

    fn auxiliary_loss(&self) -> PluginResult<Option<Tensor>> {
        self.inner.auxiliary_loss().into_result().map(|loss| loss.into_option().map(|t| t.into_tensor()))
    }

    fn set_progress(&mut self, fraction: f64) {
        // As above: a failed schedule update leaves the previous value in place.
        let _ = self.inner.set_progress(fraction);
    }
}
