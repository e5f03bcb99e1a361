//! The plugin root module, the export macro, and the wrappers that make plain Rust implementations ABI-safe.
//!
//! Every call into a plugin goes through [`guard`]: a panic becomes a [`PluginError`] of kind
//! [`ErrorKind::Panic`](crate::ErrorKind::Panic) instead of unwinding across `extern "C"` (which aborts).

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_trait::TD_Opaque,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::{
    catalog::ModelCatalog,
    error::{ErrorKind, PluginError, PluginResult},
    handshake::BuildInfo,
    intervention::{
        Intervention, InterventionAbi, InterventionAbi_TO, InterventionFactory, InterventionFactoryAbi,
        InterventionFactoryAbi_TO, InterventionSpec, InterventionTraits,
    },
    model::{
        AdapterAbi, AdapterAbi_TO, Hooks, LoadRequest, Model, ModelAbi, ModelAbi_TO, ModelAdapter, ModelInputs,
        ModelOutputAbi,
    },
    tensor::{NamedTensor, OwnedTensor, TensorRef},
};

/// What every vene plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRootRef)))]
#[sabi(missing_field(panic))]
pub struct PluginRoot {
    pub build_info: extern "C" fn() -> BuildInfo,
    pub adapters: extern "C" fn() -> RResult<RVec<AdapterAbi_TO<'static, RBox<()>>>, PluginError>,
    #[sabi(last_prefix_field)]
    pub interventions: extern "C" fn() -> RResult<RVec<InterventionFactoryAbi_TO<'static, RBox<()>>>, PluginError>,
}

impl RootModule for PluginRootRef {
    declare_root_module_statics! {PluginRootRef}
    const BASE_NAME: &'static str = "vene_plugin";
    const NAME: &'static str = "vene_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Runs `body`, turning a panic into an error that names `what`.
pub fn guard<T>(what: &str, body: impl FnOnce() -> PluginResult<T>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            RResult::RErr(PluginError::new(ErrorKind::Panic, format!("{what} panicked: {message}")))
        }
    }
}

/// Wraps a [`ModelAdapter`] as an [`AdapterAbi`] object.
pub fn adapter_object(adapter: impl ModelAdapter) -> AdapterAbi_TO<'static, RBox<()>> {
    AdapterAbi_TO::from_value(GuardedAdapter(adapter), TD_Opaque)
}

/// Wraps an [`InterventionFactory`] as an [`InterventionFactoryAbi`] object.
pub fn factory_object(factory: impl InterventionFactory) -> InterventionFactoryAbi_TO<'static, RBox<()>> {
    InterventionFactoryAbi_TO::from_value(GuardedFactory(factory), TD_Opaque)
}

struct GuardedAdapter<A>(A);

impl<A: ModelAdapter> AdapterAbi for GuardedAdapter<A> {
    fn model_types(&self) -> RResult<RVec<RString>, PluginError> {
        guard("model_types", || Ok(self.0.model_types().into_iter().map(RString::from).collect()))
    }

    fn load(&self, request: LoadRequest<'_>) -> RResult<ModelAbi_TO<'static, RBox<()>>, PluginError> {
        guard("model loading", || {
            let model = self.0.load(&request)?;
            Ok(ModelAbi_TO::from_value(GuardedModel(model), TD_Opaque))
        })
    }
}

struct GuardedModel(Box<dyn Model>);

impl ModelAbi for GuardedModel {
    fn catalog(&self) -> RResult<ModelCatalog, PluginError> {
        guard("catalog", || Ok(self.0.catalog()))
    }

    fn forward(&self, inputs: ModelInputs<'_>, mut hooks: Hooks<'_>) -> RResult<ModelOutputAbi, PluginError> {
        guard("forward", || {
            let output = self.0.forward(&inputs, &mut hooks)?;
            Ok(ModelOutputAbi {
                output: OwnedTensor::new(output.output),
                present: output.present.into_iter().map(OwnedTensor::new).collect(),
            })
        })
    }

    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard("model parameters", || Ok(named(self.0.parameters()?)))
    }
}

struct GuardedFactory<F>(F);

impl<F: InterventionFactory> InterventionFactoryAbi for GuardedFactory<F> {
    fn type_names(&self) -> RResult<RVec<RString>, PluginError> {
        guard("type_names", || Ok(self.0.type_names().into_iter().map(RString::from).collect()))
    }

    fn create(
        &self,
        type_name: RStr<'_>,
        config_json: RStr<'_>,
        spec: InterventionSpec,
    ) -> RResult<InterventionAbi_TO<'static, RBox<()>>, PluginError> {
        guard("intervention creation", || {
            let intervention = self.0.create(type_name.as_str(), config_json.as_str(), &spec)?;
            Ok(InterventionAbi_TO::from_value(GuardedIntervention(intervention), TD_Opaque))
        })
    }
}

struct GuardedIntervention(Box<dyn Intervention>);

fn named(pairs: Vec<(String, tch::Tensor)>) -> RVec<NamedTensor> {
    pairs.into_iter().map(|(name, tensor)| NamedTensor::new(name, tensor)).collect()
}

impl InterventionAbi for GuardedIntervention {
    fn traits(&self) -> RResult<InterventionTraits, PluginError> {
        guard("traits", || Ok(self.0.traits()))
    }

    fn apply(
        &mut self,
        base: TensorRef<'_>,
        source: ROption<TensorRef<'_>>,
        subspaces: ROption<RSlice<'_, RVec<i64>>>,
    ) -> RResult<OwnedTensor, PluginError> {
        guard("intervention", || {
            let base = base.to_tensor();
            let source = source.into_option().map(TensorRef::to_tensor);
            let subspaces: Option<Vec<Vec<i64>>> =
                subspaces.into_option().map(|s| s.iter().map(|row| row.to_vec()).collect());
            let output = self.0.apply(&base, source.as_ref(), subspaces.as_deref())?;
            Ok(OwnedTensor::new(output))
        })
    }

    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard("parameters", || Ok(named(self.0.parameters()?)))
    }

    fn state(&self) -> RResult<RVec<NamedTensor>, PluginError> {
        guard("state", || Ok(named(self.0.state()?)))
    }

    fn load_state(&mut self, state: RVec<NamedTensor>) -> RResult<(), PluginError> {
        guard("load_state", || self.0.load_state(state.into_iter().map(NamedTensor::into_pair).collect()))
    }

    fn set_training(&mut self, training: bool) -> RResult<(), PluginError> {
        guard("set_training", || {
            self.0.set_training(training);
            Ok(())
        })
    }

    fn set_progress(&mut self, fraction: f64) -> RResult<(), PluginError> {
        guard("set_progress", || {
            self.0.set_progress(fraction);
            Ok(())
        })
    }

    fn auxiliary_loss(&self) -> RResult<ROption<OwnedTensor>, PluginError> {
        guard("auxiliary_loss", || Ok(self.0.auxiliary_loss()?.map(OwnedTensor::new).into()))
    }
}

/// Exports a plugin's root module. Use once per plugin crate:
///
/// ```ignore
/// vene_api::export_plugin! {
///     adapters: [MyAdapter],
///     interventions: [MyFactory],
/// }
/// ```
/// The plugin crate must also depend on `abi_stable` (the export attribute expands to paths in it).
#[macro_export]
macro_rules! export_plugin {
    (adapters: [$($adapter:expr),* $(,)?], interventions: [$($factory:expr),* $(,)?] $(,)?) => {
        #[::abi_stable::export_root_module]
        pub fn vene_plugin_root() -> $crate::plugin::PluginRootRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn build_info() -> $crate::handshake::BuildInfo {
                $crate::handshake::BuildInfo::current(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            }
            extern "C" fn adapters() -> ::abi_stable::std_types::RResult<
                ::abi_stable::std_types::RVec<$crate::model::AdapterAbi_TO<'static, ::abi_stable::std_types::RBox<()>>>,
                $crate::PluginError,
            > {
                $crate::plugin::guard("adapters", || Ok(vec![$($crate::plugin::adapter_object($adapter)),*].into()))
            }
            extern "C" fn interventions() -> ::abi_stable::std_types::RResult<
                ::abi_stable::std_types::RVec<
                    $crate::intervention::InterventionFactoryAbi_TO<'static, ::abi_stable::std_types::RBox<()>>,
                >,
                $crate::PluginError,
            > {
                $crate::plugin::guard("interventions", || Ok(vec![$($crate::plugin::factory_object($factory)),*].into()))
            }
            $crate::plugin::PluginRoot { build_info, adapters, interventions }.leak_into_prefix()
        }
    };
}
