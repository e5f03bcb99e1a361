//! vene intervention plugin for sparse autoencoders: encode base and source, swap (or ablate) the latents the
//! subspaces name (all when none), decode.
//!
//! | type | encoder | state (pyvene's names) |
//! |---|---|---|
//! | `autoencoder` | latent = relu(W_e (x − b_d) + b_e); x̂ = W_d latent + b_d | `autoencoder.encoder.0.{weight,bias}`, `autoencoder.decoder.0.{weight,bias}` |
//! | `jumprelu_sae` | pre = x W_enc + b_enc; latent = (pre > θ) · relu(pre); x̂ = latent W_dec + b_dec | `W_enc`, `W_dec`, `threshold`, `b_enc`, `b_dec` |
//!
//! `{"type": "jumprelu_sae", "weights": "params.safetensors"}` loads SAE weights (e.g. Gemma Scope's layout);
//! `"mode": "ablate"` zeroes the selected latents instead of swapping them (no source needed). The latent width is
//! the representation's `low_rank_dimension` (or `latent_dim` in the config).

use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};
use vene_intervention_kit::{check_width, load_named, parse_config, read_safetensors, require_source, subspace_mask};

vene_api::export_plugin! {
    adapters: [],
    interventions: [SaeFactory],
}

/// Creates `autoencoder` and `jumprelu_sae` interventions.
pub struct SaeFactory;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Swap,
    Ablate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SaeConfig {
    #[serde(default)]
    latent_dim: Option<i64>,
    #[serde(default)]
    weights: Option<String>,
    #[serde(default)]
    mode: Mode,
}

enum Architecture {
    Autoencoder,
    JumpRelu,
}

struct Sae {
    architecture: Architecture,
    mode: Mode,
    width: i64,
    latent: i64,
    /// In the order of `names()`.
    tensors: Vec<Tensor>,
}

impl Sae {
    fn names(&self) -> &'static [&'static str] {
        match self.architecture {
            Architecture::Autoencoder => &[
                "autoencoder.encoder.0.weight",
                "autoencoder.encoder.0.bias",
                "autoencoder.decoder.0.weight",
                "autoencoder.decoder.0.bias",
            ],
            Architecture::JumpRelu => &["W_enc", "W_dec", "threshold", "b_enc", "b_dec"],
        }
    }

    fn new(architecture: Architecture, mode: Mode, width: i64, latent: i64, device: Device) -> Self {
        let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, device)).set_requires_grad(true);
        let tensors = match architecture {
            Architecture::Autoencoder => {
                vec![zeros(&[latent, width]), zeros(&[latent]), zeros(&[width, latent]), zeros(&[width])]
            }
            Architecture::JumpRelu => {
                vec![
                    zeros(&[width, latent]),
                    zeros(&[latent, width]),
                    zeros(&[latent]),
                    zeros(&[latent]),
                    zeros(&[width]),
                ]
            }
        };
        Self { architecture, mode, width, latent, tensors }
    }

    fn encode(&self, x: &Tensor) -> Tensor {
        let t = &self.tensors;
        match self.architecture {
            Architecture::Autoencoder => (x - &t[3]).linear(&t[0], Some(&t[1])).relu(),
            Architecture::JumpRelu => {
                let pre = x.matmul(&t[0]) + &t[3];
                let open = pre.gt_tensor(&t[2]).to_kind(pre.kind());
                open * pre.relu()
            }
        }
    }

    fn decode(&self, latent: &Tensor) -> Tensor {
        let t = &self.tensors;
        match self.architecture {
            Architecture::Autoencoder => latent.linear(&t[2], Some(&t[3])),
            Architecture::JumpRelu => latent.matmul(&t[1]) + &t[4],
        }
    }
}

impl InterventionFactory for SaeFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["autoencoder".to_string(), "jumprelu_sae".to_string()]
    }

    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        let config: SaeConfig = parse_config(type_name, config_json)?;
        let latent = config.latent_dim.or(spec.low_rank_dimension.into_option().map(i64::from)).ok_or_else(|| {
            PluginError::invalid_config(format!(
                "{type_name} needs the latent width: \"latent_dim\" or low_rank_dimension"
            ))
        })?;
        let (architecture, width) = if type_name == "autoencoder" {
            (Architecture::Autoencoder, spec.embed_dim)
        } else {
            (Architecture::JumpRelu, spec.unit_dim)
        };
        let mut sae = Sae::new(architecture, config.mode, i64::from(width), latent, spec.device.to_device());
        if let Some(file) = &config.weights {
            sae.load_state(read_safetensors(file)?)?;
        }
        Ok(Box::new(sae))
    }
}

impl Intervention for Sae {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits {
            needs_source: self.mode == Mode::Swap,
            // pyvene flattens units for the autoencoder and keeps the last dimension for JumpReLU SAEs.
            distributed: matches!(self.architecture, Architecture::Autoencoder),
            trainable: true,
            collects: false,
        }
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        let kind = base.kind();
        check_width(base, self.width, "sae")?;
        let base_latent = self.encode(&base.to_kind(Kind::Float));
        let replacement = match self.mode {
            Mode::Swap => self.encode(&require_source(source, "sae swap")?.to_kind(Kind::Float)),
            Mode::Ablate => base_latent.zeros_like(),
        };
        let latent = match subspaces {
            None => replacement,
            Some(dims) => replacement.where_self(&subspace_mask(dims, self.latent, &base_latent)?, &base_latent),
        };
        Ok(self.decode(&latent).to_kind(kind))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.names().iter().zip(&self.tensors).map(|(n, t)| (n.to_string(), t.shallow_clone())).collect())
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.names().iter().zip(&self.tensors).map(|(n, t)| (n.to_string(), t.detach().copy())).collect())
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        let names = self.names();
        let mut slots: Vec<(&str, &mut Tensor)> = names.iter().copied().zip(self.tensors.iter_mut()).collect();
        load_named("sae", &mut slots, state)
    }
}
