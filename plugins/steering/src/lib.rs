//! vene intervention plugin for inference-time steering (ITI, Li et al. 2023): adds `coefficient × vector` to the
//! selected units (on the dimensions the subspaces name, or all).
//!
//! ```json
//! {"type": "steering", "coefficient": 0.3, "vector": [0.1, …]}
//! {"type": "steering", "coefficient": 4.0, "vector_file": "happy.safetensors", "key": "vector"}
//! ```
//! `vene vector` writes such files from a token's embedding or from the difference of mean activations over two
//! prompt sets.

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};
use vene_intervention_kit::{check_width, parse_config, read_safetensors, subspace_mask};

vene_api::export_plugin! {
    adapters: [],
    interventions: [SteeringFactory],
}

/// Creates `steering` interventions.
pub struct SteeringFactory;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SteeringConfig {
    #[serde(default = "one")]
    coefficient: f64,
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    vector_file: Option<String>,
    /// The tensor's name in `vector_file` (default: its only tensor).
    #[serde(default)]
    key: Option<String>,
}

fn one() -> f64 {
    1.0
}

struct Steering {
    coefficient: f64,
    vector: Tensor,
}

impl InterventionFactory for SteeringFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["steering".to_string()]
    }

    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        let config: SteeringConfig = parse_config(type_name, config_json)?;
        let vector = match (&config.vector, &config.vector_file) {
            (Some(values), None) => Tensor::from_slice(values),
            (None, Some(file)) => {
                let tensors = read_safetensors(file)?;
                let chosen = match &config.key {
                    Some(key) => tensors
                        .into_iter()
                        .find(|(name, _)| name == key)
                        .ok_or_else(|| PluginError::invalid_config(format!("{file} has no tensor '{key}'")))?,
                    None if tensors.len() == 1 => tensors.into_iter().next().expect("one tensor"),
                    None => {
                        let names: Vec<String> = tensors.into_iter().map(|(n, _)| n).collect();
                        return Err(PluginError::invalid_config(format!(
                            "{file} holds several tensors ({}); name one with \"key\"",
                            names.join(", ")
                        )));
                    }
                };
                chosen.1.flatten(0, -1)
            }
            _ => {
                return Err(PluginError::invalid_config("steering needs exactly one of \"vector\" and \"vector_file\""))
            }
        };
        let width = vector.size()[0];
        let (unit, embed) = (i64::from(spec.unit_dim), i64::from(spec.embed_dim));
        if width != unit && width != embed {
            return Err(PluginError::invalid_config(format!(
                "the steering vector has {width} values; this site needs {unit} (or {embed} across its units)"
            )));
        }
        let vector = vector.to_kind(Kind::Float).to_device(spec.device.to_device());
        Ok(Box::new(Steering { coefficient: config.coefficient, vector }))
    }
}

impl Intervention for Steering {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        let width = self.vector.size()[0];
        check_width(base, width, "steering")?;
        let steered = base + self.vector.to_kind(base.kind()) * self.coefficient;
        match subspaces {
            None => Ok(steered),
            Some(dims) => Ok(steered.where_self(&subspace_mask(dims, width, base)?, base)),
        }
    }
}
