//! A plugin that claims to be built against another libtorch, for vene's handshake test. It writes its root module
//! by hand (instead of `export_plugin!`) to report a foreign build.

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    std_types::{RBox, RResult, RVec},
};
use vene_api::{
    handshake::BuildInfo,
    intervention::InterventionFactoryAbi_TO,
    model::AdapterAbi_TO,
    plugin::{PluginRoot, PluginRootRef},
    PluginError,
};

extern "C" fn build_info() -> BuildInfo {
    let mut info = BuildInfo::current(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    info.libtorch = "1.13.1+cpu".into();
    info
}

extern "C" fn adapters() -> RResult<RVec<AdapterAbi_TO<'static, RBox<()>>>, PluginError> {
    RResult::ROk(RVec::new())
}

extern "C" fn interventions() -> RResult<RVec<InterventionFactoryAbi_TO<'static, RBox<()>>>, PluginError> {
    RResult::ROk(RVec::new())
}

#[export_root_module]
pub fn vene_plugin_root() -> PluginRootRef {
    PluginRoot { build_info, adapters, interventions }.leak_into_prefix()
}
