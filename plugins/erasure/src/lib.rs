//! vene intervention plugin for concept erasure (amnesic probing, Elazar et al. 2021; LEACE, Belrose et al. 2023).
//! Both act on each selected unit's vector `b` and need no source:
//!
//! | type | config | math |
//! |---|---|---|
//! | `leace` | `eraser` (n × n, E = W⁺PW), `mean` (n) | out = b − (b − μ)Eᵀ |
//! | `nullspace_projection` | `directions` (r × n: the probes' weight rows) | out = b − bQQᵀ, Q an orthonormal basis of the directions |
//!
//! Either may come from a safetensors `file` instead (`eraser` + `mean`, or `directions`). vene fits them from
//! collected activations and labels (`vene_host::erasure`, `vene.LeaceIntervention.fit` in Python).

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};
use vene_intervention_kit::{check_width, matrix, parse_config, read_safetensors};

vene_api::export_plugin! {
    adapters: [],
    interventions: [ErasureFactory],
}

/// Creates `leace` and `nullspace_projection` interventions.
pub struct ErasureFactory;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureConfig {
    #[serde(default)]
    eraser: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    mean: Option<Vec<f32>>,
    #[serde(default)]
    directions: Option<Vec<Vec<f32>>>,
    /// A safetensors file holding the tensors named as the fields above.
    #[serde(default)]
    file: Option<String>,
}

fn invalid(type_name: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_config(format!("{type_name}: {message}"))
}

/// The named tensors the config gives, inline or from its file.
fn tensors(type_name: &str, config: &ErasureConfig) -> PluginResult<Vec<(String, Tensor)>> {
    if let Some(file) = &config.file {
        if config.eraser.is_some() || config.mean.is_some() || config.directions.is_some() {
            return Err(invalid(type_name, "give the tensors inline or in \"file\", not both"));
        }
        return read_safetensors(file);
    }
    let mut found = Vec::new();
    if let Some(rows) = &config.eraser {
        found.push(("eraser".to_string(), matrix(&format!("{type_name}: eraser"), rows)?));
    }
    if let Some(mean) = &config.mean {
        found.push(("mean".to_string(), Tensor::from_slice(mean)));
    }
    if let Some(rows) = &config.directions {
        found.push(("directions".to_string(), matrix(&format!("{type_name}: directions"), rows)?));
    }
    Ok(found)
}

fn take(type_name: &str, found: &mut Vec<(String, Tensor)>, name: &str) -> PluginResult<Tensor> {
    let index =
        found.iter().position(|(n, _)| n == name).ok_or_else(|| invalid(type_name, format!("needs \"{name}\"")))?;
    Ok(found.remove(index).1.to_kind(Kind::Float))
}

impl InterventionFactory for ErasureFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["leace".to_string(), "nullspace_projection".to_string()]
    }

    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        let config: ErasureConfig = parse_config(type_name, config_json)?;
        let mut found = tensors(type_name, &config)?;
        let n = i64::from(spec.unit_dim);
        let device = spec.device.to_device();
        let (eraser, mean) = match type_name {
            "leace" => {
                let eraser = take(type_name, &mut found, "eraser")?;
                let mean = take(type_name, &mut found, "mean")?.reshape([-1]);
                if eraser.size() != [n, n] || mean.size() != [n] {
                    return Err(invalid(
                        type_name,
                        format!(
                            "eraser {:?} and mean {:?} must be {n} × {n} and {n} (the site's width)",
                            eraser.size(),
                            mean.size()
                        ),
                    ));
                }
                (eraser, Some(mean))
            }
            _ => {
                let directions = take(type_name, &mut found, "directions")?;
                let size = directions.size();
                if size.len() != 2 || size[1] != n || size[0] < 1 || size[0] > n {
                    return Err(invalid(type_name, format!("directions {size:?} must be r × {n} with 1 ≤ r ≤ {n}")));
                }
                // An orthonormal basis of the directions' span; the eraser projects onto it.
                let (q, _) = Tensor::f_linalg_qr(&directions.to_kind(Kind::Double).tr(), "reduced")
                    .map_err(|e| invalid(type_name, format!("cannot orthonormalise the directions: {e}")))?;
                (q.matmul(&q.tr()).to_kind(Kind::Float), None)
            }
        };
        if let Some((extra, _)) = found.first() {
            return Err(invalid(type_name, format!("does not take \"{extra}\"")));
        }
        Ok(Box::new(Erasure {
            name: type_name.to_string(),
            eraser: eraser.to_device(device),
            mean: mean.map(|m| m.to_device(device)),
            n,
        }))
    }
}

/// out = b − (b − μ)Eᵀ (μ = 0 for the nullspace projection, whose E projects onto the probes' span).
struct Erasure {
    name: String,
    eraser: Tensor,
    mean: Option<Tensor>,
    n: i64,
}

impl Intervention for Erasure {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, &self.name)?;
        if subspaces.is_some() {
            return Err(PluginError::invalid_input(format!(
                "{} erases from the whole vector: give no subspaces",
                self.name
            )));
        }
        let eraser = self.eraser.to_kind(base.kind());
        let centred = match &self.mean {
            Some(mean) => base - mean.to_kind(base.kind()),
            None => base.shallow_clone(),
        };
        Ok(base - centred.matmul(&eraser.tr()))
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        let mut state = vec![("eraser".to_string(), self.eraser.shallow_clone())];
        state.extend(self.mean.as_ref().map(|m| ("mean".to_string(), m.shallow_clone())));
        Ok(state)
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        for (name, tensor) in state {
            let tensor = tensor.to_kind(Kind::Float).to_device(self.eraser.device());
            match (name.as_str(), &mut self.mean) {
                ("eraser", _) if tensor.size() == [self.n, self.n] => self.eraser = tensor,
                ("mean", Some(mean)) if tensor.numel() as i64 == self.n => *mean = tensor.reshape([-1]),
                _ => {
                    return Err(invalid(&self.name, format!("cannot take saved '{name}' of shape {:?}", tensor.size())))
                }
            }
        }
        Ok(())
    }
}
