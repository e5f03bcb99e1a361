//! The smallest complete vene intervention plugin: `clamp`, which limits the selected units to `[-limit, limit]`.
//!
//! ```json
//! {"layer": 1, "component": "mlp_output", "intervention": {"type": "clamp", "limit": 0.5}}
//! ```

use serde::Deserialize;
use tch::Tensor;
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};

// Exports the plugin's root module: its versions for the handshake and its factories.
vene_api::export_plugin! {
    adapters: [],
    interventions: [ClampFactory],
}

/// Creates the plugin's intervention types.
pub struct ClampFactory;

/// The config object of a `clamp` intervention (the `"type"` key is vene's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClampConfig {
    #[serde(rename = "type")]
    _type: String,
    limit: f64,
}

struct Clamp {
    limit: f64,
}

impl InterventionFactory for ClampFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["clamp".to_string()]
    }

    fn create(&self, type_name: &str, config_json: &str, _spec: &InterventionSpec) -> PluginResult<Box<dyn Intervention>> {
        let config: ClampConfig =
            serde_json::from_str(config_json).map_err(|e| PluginError::invalid_config(format!("{type_name}: {e}")))?;
        if config.limit < 0.0 {
            return Err(PluginError::invalid_config(format!("clamp: limit {} must not be negative", config.limit)));
        }
        Ok(Box::new(Clamp { limit: config.limit }))
    }
}

impl Intervention for Clamp {
    /// No source, not distributed, nothing to train: the defaults.
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    /// `base` holds the selected units `(batch, units, dim)`; return the same shape.
    fn apply(&mut self, base: &Tensor, _source: Option<&Tensor>, _subspaces: Option<&[Vec<i64>]>) -> PluginResult<Tensor> {
        Ok(base.clamp(-self.limit, self.limit))
    }
}
