//! Resolving a representation's `"type"`-tagged intervention declaration into an instance.
//!
//! Built-in types are typetag impls of [`BuiltinConfig`] and announce themselves through `inventory`
//! ([`BuiltinType`]); plugin types come from the [`PluginSet`] the host loaded. A name known to neither is an error
//! that lists every known type.

pub mod builtin;
mod plugin;

use abi_stable::std_types::RStr;
use serde_json::Value;
use vene_api::{Intervention, InterventionSpec};

pub use plugin::PluginIntervention;

use crate::{
    error::{Result, VeneError},
    plugins::PluginSet,
};

/// A built-in intervention type's declaration, deserialised from its config object by typetag.
#[typetag::serde(tag = "type")]
pub trait BuiltinConfig: std::fmt::Debug {
    fn build(&self, spec: &InterventionSpec) -> Result<Box<dyn Intervention>>;
}

/// A built-in intervention type, for listings and error messages.
pub struct BuiltinType {
    pub name: &'static str,
    pub summary: &'static str,
}

inventory::collect!(BuiltinType);

/// Every built-in type, sorted by name.
pub fn builtin_types() -> Vec<&'static BuiltinType> {
    let mut types: Vec<_> = inventory::iter::<BuiltinType>.into_iter().collect();
    types.sort_by_key(|t| t.name);
    types
}

/// Every type name the host can create: built-ins then plugin types.
pub fn known_types(plugins: &PluginSet) -> Vec<String> {
    let mut names: Vec<String> = builtin_types().iter().map(|t| t.name.to_string()).collect();
    names.extend(plugins.intervention_types());
    names
}

/// Creates the intervention `declaration` describes.
pub fn create(declaration: &Value, spec: &InterventionSpec, plugins: &PluginSet) -> Result<Box<dyn Intervention>> {
    let name = declaration
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| VeneError::Config(format!("intervention declaration needs a \"type\": {declaration}")))?;
    if let Some((factory, path)) = plugins.factory(name) {
        let created = factory.create(RStr::from(name), RStr::from(declaration.to_string().as_str()), spec.clone());
        let instance = created.into_result().map_err(|error| VeneError::Plugin {
            path: path.to_path_buf(),
            message: format!("creating '{name}' failed: {error}"),
        })?;
        return Ok(Box::new(PluginIntervention::new(name, instance)?));
    }
    if builtin_types().iter().any(|t| t.name == name) {
        let config: Box<dyn BuiltinConfig> = serde_json::from_value(declaration.clone())
            .map_err(|e| VeneError::Config(format!("intervention '{name}': {e}")))?;
        return config.build(spec);
    }
    Err(VeneError::UnknownInterventionType { name: name.to_string(), known: known_types(plugins) })
}
