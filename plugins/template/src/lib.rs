//! The smallest complete vene intervention plugin: `scale`, which multiplies the selected units by a factor.
//!
//! ```json
//! {"layer": 1, "component": "mlp_output", "intervention": {"type": "scale", "factor": 0.5}}
//! ```

use serde::Deserialize;
use tch::Tensor;
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};

// Exports the plugin's root module: its versions for the handshake and its factories.
vene_api::export_plugin! {
    adapters: [],
    interventions: [ScaleFactory],
}

/// Creates the plugin's intervention types.
pub struct ScaleFactory;

/// The config object of a `scale` intervention (the `"type"` key is vene's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleConfig {
    #[serde(rename = "type")]
    _type: String,
    factor: f64,
}

struct Scale {
    factor: f64,
}

impl InterventionFactory for ScaleFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["scale".to_string()]
    }

    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        _spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        let config: ScaleConfig =
            serde_json::from_str(config_json).map_err(|e| PluginError::invalid_config(format!("{type_name}: {e}")))?;
        Ok(Box::new(Scale { factor: config.factor }))
    }
}

impl Intervention for Scale {
    /// No source, not distributed, nothing to train: the defaults.
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    /// `base` holds the selected units `(batch, units, dim)`; return the same shape.
    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        _subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        Ok(base * self.factor)
    }
}
