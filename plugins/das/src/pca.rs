//! `pca_rotated_space`: pyvene's `PCARotatedSpaceIntervention`. Base and source are standardised with the PCA's
//! mean and standard deviation and projected on its `k` principal components (`C`, k × n); the selected components
//! are swapped; the result is projected back and un-standardised:
//!
//! rb = ((b − μ)/σ) Cᵀ, rs = ((s − μ)/σ) Cᵀ; rb[S] ← rs[S]; out = (rb C)·σ + μ.
//!
//! As in pyvene, with `k < n` the output lies in the PCA's span: the base's part outside it is dropped. Not
//! trainable. The components come from the config (`components`, `mean`, `std`), a safetensors `file` with
//! `pca_components`, `pca_mean` and `pca_std` (pyvene's parameter names), or saved state.

use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use vene_api::{Intervention, InterventionSpec, InterventionTraits, PluginError, PluginResult};
use vene_intervention_kit::{check_width, matrix, read_safetensors, require_source, subspace_mask};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PcaConfig {
    /// The principal components as rows (k × n).
    #[serde(default)]
    components: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    mean: Option<Vec<f32>>,
    #[serde(default)]
    std: Option<Vec<f32>>,
    /// A safetensors file holding `pca_components`, `pca_mean` and `pca_std`.
    #[serde(default)]
    file: Option<String>,
    /// Without subspaces: swap only the first `interchange_dim` components (default: all).
    #[serde(default)]
    interchange_dim: Option<i64>,
}

/// The PCA basis; `None` until given by the config or loaded.
struct Basis {
    components: Tensor,
    mean: Tensor,
    std: Tensor,
}

pub struct PcaRotatedSpace {
    basis: Option<Basis>,
    interchange: Option<i64>,
    n: i64,
    device: Device,
}

const NAME: &str = "pca_rotated_space";

fn invalid(message: String) -> PluginError {
    PluginError::invalid_config(format!("{NAME}: {message}"))
}

/// The basis from named tensors, checked against the width `n`.
fn basis_from(state: Vec<(String, Tensor)>, n: i64, device: Device) -> PluginResult<Basis> {
    let mut components = None;
    let mut mean = None;
    let mut std = None;
    for (name, tensor) in state {
        let tensor = tensor.to_kind(Kind::Float).to_device(device);
        match name.as_str() {
            "pca_components" => components = Some(tensor),
            "pca_mean" => mean = Some(tensor.reshape([-1])),
            "pca_std" => std = Some(tensor.reshape([-1])),
            "embed_dim" | "interchange_dim" => {}
            other => {
                return Err(invalid(format!("no state entry '{other}' (it has: pca_components, pca_mean, pca_std)")))
            }
        }
    }
    let (Some(components), Some(mean), Some(std)) = (components, mean, std) else {
        return Err(invalid("needs all of pca_components, pca_mean and pca_std".to_string()));
    };
    let shape = components.size();
    if shape.len() != 2 || shape[1] != n || shape[0] < 1 || shape[0] > n {
        return Err(invalid(format!("pca_components has shape {shape:?}; it must be k × {n} with 1 ≤ k ≤ {n}")));
    }
    for (what, tensor) in [("pca_mean", &mean), ("pca_std", &std)] {
        if tensor.size() != [n] {
            return Err(invalid(format!("{what} has {} values; the representation is {n} wide", tensor.numel())));
        }
    }
    if std.le(0.0).any().int64_value(&[]) != 0 {
        return Err(invalid("pca_std has a value ≤ 0; standard deviations must be positive".to_string()));
    }
    Ok(Basis { components, mean, std })
}

pub fn create(config_json: &str, spec: &InterventionSpec) -> PluginResult<Box<dyn Intervention>> {
    let config: PcaConfig = vene_intervention_kit::parse_config(NAME, config_json)?;
    let n = i64::from(spec.embed_dim);
    let device = spec.device.to_device();
    let state = match (&config.components, &config.mean, &config.std, &config.file) {
        (Some(components), Some(mean), Some(std), None) => Some(vec![
            ("pca_components".to_string(), matrix("pca_rotated_space: components", components)?),
            ("pca_mean".to_string(), Tensor::from_slice(mean)),
            ("pca_std".to_string(), Tensor::from_slice(std)),
        ]),
        (None, None, None, Some(file)) => Some(read_safetensors(file)?),
        (None, None, None, None) => None,
        _ => {
            return Err(invalid(
                "give \"components\", \"mean\" and \"std\" together, or \"file\", or neither (saved state)".to_string(),
            ))
        }
    };
    let basis = state.map(|state| basis_from(state, n, device)).transpose()?;
    if let Some(dim) = config.interchange_dim.filter(|&d| d < 1) {
        return Err(invalid(format!("interchange_dim {dim} must be 1 or more")));
    }
    Ok(Box::new(PcaRotatedSpace { basis, interchange: config.interchange_dim, n, device }))
}

impl Intervention for PcaRotatedSpace {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits { needs_source: true, distributed: true, trainable: false, collects: false }
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, NAME)?;
        let basis = self.basis.as_ref().ok_or_else(|| {
            invalid("has no principal components: give \"components\", \"mean\" and \"std\" or \"file\"".to_string())
        })?;
        let kind = base.kind();
        let (components, mean, std) =
            (basis.components.to_kind(kind), basis.mean.to_kind(kind), basis.std.to_kind(kind));
        let k = components.size()[0];
        let project = |x: &Tensor| ((x - &mean) / &std).matmul(&components.tr());
        let rotated_base = project(base);
        let rotated_source = project(require_source(source, NAME)?);
        let mixed = match subspaces {
            Some(dims) => rotated_source.where_self(&subspace_mask(dims, k, base)?, &rotated_base),
            None => match self.interchange.filter(|&d| d < k) {
                Some(d) => Tensor::cat(&[rotated_source.narrow(-1, 0, d), rotated_base.narrow(-1, d, k - d)], -1),
                None => rotated_source,
            },
        };
        Ok(mixed.matmul(&components) * &std + &mean)
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.basis.as_ref().map_or_else(Vec::new, |b| {
            vec![
                ("pca_components".to_string(), b.components.shallow_clone()),
                ("pca_mean".to_string(), b.mean.shallow_clone()),
                ("pca_std".to_string(), b.std.shallow_clone()),
            ]
        }))
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        self.basis = Some(basis_from(state, self.n, self.device)?);
        Ok(())
    }
}
