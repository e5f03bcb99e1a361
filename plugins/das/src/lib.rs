//! vene intervention plugin for Distributed Alignment Search: interventions that swap a learned subspace of the
//! base representation for the source's.
//!
//! | type | math (b base, s source, R orthogonal) |
//! |---|---|
//! | `rotated_space` | rb = bR, rs = sR; rb[S] ← rs[S]; out = rb Rᵀ |
//! | `low_rank_rotated_space` | W n×k orthonormal; out = b + ((s − b)W)[S] W[S]ᵀ |
//! | `boundless_rotated_space` | m_i = σ(i/T)·σ((β·n − i)/T), β = clamp(boundary, 1e-3, 1); out = ((1−m)⊙bR + m⊙sR)Rᵀ |
//! | `sigmoid_mask_rotated_space` | m = σ(masks/T), mixed in the rotated space as above |
//! | `sigmoid_mask` | m = σ(mask/T); out = (1−m)⊙b + m⊙s |
//! | `pca_rotated_space` | rb = ((b − μ)/σ)Cᵀ, rs likewise; rb[S] ← rs[S]; out = (rb C)·σ + μ (C: k principal components) |
//!
//! Rotations use torch's orthogonal parametrisation (`base @ Q(original)`: matrix exponential for square matrices, a
//! Householder product for tall ones), so they stay orthogonal while training and pyvene's saved state
//! (`rotate_layer.parametrizations.weight.original` / `.0.base`) loads unchanged. Temperatures follow
//! `{"start": …, "end": …}` linearly over training (`set_progress`).

mod orthogonal;
mod pca;

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginError, PluginResult};

use orthogonal::Orthogonal;
use vene_intervention_kit::{check_width, load_named, parse_config, require_source, subspace_mask};

vene_api::export_plugin! {
    adapters: [],
    interventions: [DasFactory],
}

/// Creates the DAS interventions.
pub struct DasFactory;

const TYPES: [&str; 6] = [
    "rotated_space",
    "low_rank_rotated_space",
    "boundless_rotated_space",
    "sigmoid_mask_rotated_space",
    "sigmoid_mask",
    "pca_rotated_space",
];

/// A temperature: fixed, or annealed linearly from `start` to `end` over training.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Temperature {
    Fixed(f64),
    Schedule { start: f64, end: f64 },
}

impl Temperature {
    fn at(self, fraction: f64) -> f64 {
        match self {
            Temperature::Fixed(t) => t,
            Temperature::Schedule { start, end } => start + (end - start) * fraction.clamp(0.0, 1.0),
        }
    }
}

/// Constructor arguments; unknown fields are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DasConfig {
    /// `rotated_space` without subspaces: swap only the first `interchange_dim` rotated dimensions.
    #[serde(default)]
    interchange_dim: Option<i64>,
    #[serde(default)]
    temperature: Option<Temperature>,
    /// `boundless_rotated_space`: the initial boundary as a fraction of the dimension.
    #[serde(default)]
    boundary: Option<f64>,
    /// `boundless_rotated_space`: weight of the boundary-width penalty added to the training loss (pyvene's
    /// tutorials use 1).
    #[serde(default)]
    boundary_loss: Option<f64>,
    /// pyvene's `keep_last_dim`: act on each selected unit's own vector with one rotation shared by all units,
    /// instead of on the units flattened into one vector (e.g. one channel direction at every pixel of a map).
    #[serde(default)]
    keep_last_dim: bool,
}

impl InterventionFactory for DasFactory {
    fn type_names(&self) -> Vec<String> {
        TYPES.iter().map(|t| t.to_string()).collect()
    }

    fn create(
        &self,
        type_name: &str,
        config_json: &str,
        spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        if type_name == "pca_rotated_space" {
            return pca::create(config_json, spec);
        }
        let config: DasConfig = parse_config(type_name, config_json)?;
        let n = i64::from(if config.keep_last_dim { spec.unit_dim } else { spec.embed_dim });
        let device = spec.device.to_device();
        // Parameters stay in f32 (or f64) even for half-precision models, as optimisers expect.
        let kind = if spec.dtype == vene_api::DTypeSpec::F64 { Kind::Double } else { Kind::Float };
        let rotation = |k: i64| Orthogonal::new(n, k, spec.seed, kind, device);
        let temperature = |default: f64| config.temperature.unwrap_or(Temperature::Fixed(default));
        let intervention: Box<dyn Intervention> = match type_name {
            "rotated_space" => {
                let interchange = config.interchange_dim.unwrap_or(n);
                if !(1..=n).contains(&interchange) {
                    return Err(PluginError::invalid_config(format!(
                        "rotated_space: interchange_dim {interchange} must be in 1..={n}"
                    )));
                }
                Box::new(RotatedSpace { rotation: rotation(n)?, interchange, n })
            }
            "low_rank_rotated_space" => {
                let k = spec.low_rank_dimension.into_option().map(i64::from).ok_or_else(|| {
                    PluginError::invalid_config(
                        "low_rank_rotated_space needs \"low_rank_dimension\" in the representation",
                    )
                })?;
                if !(1..=n).contains(&k) {
                    return Err(PluginError::invalid_config(format!(
                        "low_rank_dimension {k} must be in 1..={n} (the representation's dimension)"
                    )));
                }
                Box::new(LowRank { rotation: rotation(k)?, n })
            }
            "boundless_rotated_space" => {
                let boundary = config.boundary.unwrap_or(0.5);
                let schedule = temperature(50.0);
                Box::new(Boundless {
                    rotation: rotation(n)?,
                    boundary: Tensor::from_slice(&[boundary]).to_kind(kind).to_device(device).set_requires_grad(true),
                    schedule,
                    temperature: schedule.at(0.0),
                    population: Tensor::arange(n, (Kind::Int64, device)),
                    boundary_loss: config.boundary_loss.unwrap_or(1.0),
                    n,
                })
            }
            "sigmoid_mask_rotated_space" => {
                let schedule = temperature(50.0);
                Box::new(SigmoidMaskRotated {
                    rotation: rotation(n)?,
                    masks: Tensor::full([n], 100.0, (kind, device)).set_requires_grad(true),
                    schedule,
                    temperature: schedule.at(0.0),
                    n,
                })
            }
            "sigmoid_mask" => {
                let schedule = temperature(0.01);
                Box::new(SigmoidMask {
                    mask: Tensor::zeros([n], (kind, device)).set_requires_grad(true),
                    schedule,
                    temperature: schedule.at(0.0),
                    n,
                })
            }
            other => return Err(PluginError::invalid_config(format!("unknown DAS type '{other}'"))),
        };
        Ok(if config.keep_last_dim { Box::new(PerUnit(intervention)) } else { intervention })
    }
}

/// A DAS intervention with `keep_last_dim`: the same math, given `(batch, units, dim)` unflattened.
struct PerUnit(Box<dyn Intervention>);

impl Intervention for PerUnit {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits { distributed: false, ..self.0.traits() }
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        self.0.apply(base, source, subspaces)
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        self.0.parameters()
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        self.0.state()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        self.0.load_state(state)
    }

    fn set_training(&mut self, training: bool) {
        self.0.set_training(training)
    }

    fn set_progress(&mut self, fraction: f64) {
        self.0.set_progress(fraction)
    }

    fn auxiliary_loss(&self) -> PluginResult<Option<Tensor>> {
        self.0.auxiliary_loss()
    }
}

fn distributed() -> InterventionTraits {
    InterventionTraits { needs_source: true, distributed: true, trainable: true, collects: false }
}

struct RotatedSpace {
    rotation: Orthogonal,
    interchange: i64,
    n: i64,
}

impl Intervention for RotatedSpace {
    fn traits(&self) -> InterventionTraits {
        distributed()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, "rotated_space")?;
        let weight = self.rotation.weight().to_kind(base.kind());
        let rotated_base = base.matmul(&weight);
        let rotated_source = require_source(source, "rotated_space")?.matmul(&weight);
        let mixed = match subspaces {
            Some(dims) => rotated_source.where_self(&subspace_mask(dims, self.n, base)?, &rotated_base),
            None if self.interchange == self.n => rotated_source,
            None => Tensor::cat(
                &[
                    rotated_source.narrow(-1, 0, self.interchange),
                    rotated_base.narrow(-1, self.interchange, self.n - self.interchange),
                ],
                -1,
            ),
        };
        Ok(mixed.matmul(&weight.tr()))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.rotation.parameters())
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.rotation.state())
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        self.rotation.load_state("rotated_space", state, &mut [])
    }
}

struct LowRank {
    rotation: Orthogonal,
    n: i64,
}

impl Intervention for LowRank {
    fn traits(&self) -> InterventionTraits {
        distributed()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, "low_rank_rotated_space")?;
        let weight = self.rotation.weight().to_kind(base.kind());
        let k = weight.size()[1];
        let difference = (require_source(source, "low_rank_rotated_space")? - base).matmul(&weight);
        let difference = match subspaces {
            Some(dims) => difference.where_self(&subspace_mask(dims, k, base)?, &difference.zeros_like()),
            None => difference,
        };
        Ok(base + difference.matmul(&weight.tr()))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.rotation.parameters())
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.rotation.state())
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        self.rotation.load_state("low_rank_rotated_space", state, &mut [])
    }
}

/// Mixes `rotated_base` and `rotated_source` with `mask` and rotates back.
fn mix_rotated(rotation: &Orthogonal, base: &Tensor, source: &Tensor, mask: &Tensor) -> Tensor {
    let weight = rotation.weight().to_kind(base.kind());
    let mask = mask.to_kind(base.kind());
    let mixed = (mask.neg() + 1.0) * base.matmul(&weight) + &mask * source.matmul(&weight);
    mixed.matmul(&weight.tr())
}

struct Boundless {
    rotation: Orthogonal,
    boundary: Tensor,
    schedule: Temperature,
    temperature: f64,
    population: Tensor,
    boundary_loss: f64,
    n: i64,
}

impl Intervention for Boundless {
    fn traits(&self) -> InterventionTraits {
        distributed()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        _subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, "boundless_rotated_space")?;
        let boundary = self.boundary.clamp(1e-3, 1.0) * self.n as f64;
        let population = self.population.to_kind(Kind::Float);
        let mask = (&population / self.temperature).sigmoid() * ((boundary - &population) / self.temperature).sigmoid();
        Ok(mix_rotated(&self.rotation, base, require_source(source, "boundless_rotated_space")?, &mask))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        let mut parameters = self.rotation.parameters();
        parameters.push(("intervention_boundaries".to_string(), self.boundary.shallow_clone()));
        Ok(parameters)
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        let mut state = self.rotation.state();
        state.push(("intervention_boundaries".to_string(), self.boundary.detach().copy()));
        state.push(("temperature".to_string(), Tensor::from(self.temperature as f32)));
        state.push(("intervention_population".to_string(), self.population.copy()));
        Ok(state)
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        let (temperature, rest) = take_temperature(state);
        if let Some(t) = temperature {
            self.temperature = t;
        }
        self.rotation.load_state(
            "boundless_rotated_space",
            rest,
            &mut [("intervention_boundaries", &mut self.boundary), ("intervention_population", &mut self.population)],
        )
    }

    fn set_progress(&mut self, fraction: f64) {
        self.temperature = self.schedule.at(fraction);
    }

    fn auxiliary_loss(&self) -> PluginResult<Option<Tensor>> {
        Ok(Some(self.boundary.sum(self.boundary.kind()) * self.boundary_loss))
    }
}

/// Splits a saved `temperature` scalar from the rest of a state dict.
fn take_temperature(state: Vec<(String, Tensor)>) -> (Option<f64>, Vec<(String, Tensor)>) {
    let mut temperature = None;
    let rest = state
        .into_iter()
        .filter(|(name, value)| {
            if name == "temperature" {
                temperature = Some(value.double_value(&[]));
                false
            } else {
                true
            }
        })
        .collect();
    (temperature, rest)
}

struct SigmoidMaskRotated {
    rotation: Orthogonal,
    masks: Tensor,
    schedule: Temperature,
    temperature: f64,
    n: i64,
}

impl Intervention for SigmoidMaskRotated {
    fn traits(&self) -> InterventionTraits {
        distributed()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        _subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, "sigmoid_mask_rotated_space")?;
        let mask = (&self.masks / self.temperature).sigmoid();
        Ok(mix_rotated(&self.rotation, base, require_source(source, "sigmoid_mask_rotated_space")?, &mask))
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        let mut parameters = self.rotation.parameters();
        parameters.push(("masks".to_string(), self.masks.shallow_clone()));
        Ok(parameters)
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        let mut state = self.rotation.state();
        state.push(("masks".to_string(), self.masks.detach().copy()));
        state.push(("temperature".to_string(), Tensor::from(self.temperature as f32)));
        Ok(state)
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        let (temperature, rest) = take_temperature(state);
        if let Some(t) = temperature {
            self.temperature = t;
        }
        self.rotation.load_state("sigmoid_mask_rotated_space", rest, &mut [("masks", &mut self.masks)])
    }

    fn set_progress(&mut self, fraction: f64) {
        self.temperature = self.schedule.at(fraction);
    }
}

struct SigmoidMask {
    mask: Tensor,
    schedule: Temperature,
    temperature: f64,
    n: i64,
}

impl Intervention for SigmoidMask {
    fn traits(&self) -> InterventionTraits {
        distributed()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        _subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        check_width(base, self.n, "sigmoid_mask")?;
        let mask = (&self.mask / self.temperature).sigmoid().to_kind(base.kind());
        Ok((mask.neg() + 1.0) * base + &mask * require_source(source, "sigmoid_mask")?)
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(vec![("mask".to_string(), self.mask.shallow_clone())])
    }

    fn state(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(vec![
            ("mask".to_string(), self.mask.detach().copy()),
            ("temperature".to_string(), Tensor::from(self.temperature as f32)),
        ])
    }

    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        let (temperature, rest) = take_temperature(state);
        if let Some(t) = temperature {
            self.temperature = t;
        }
        load_named("sigmoid_mask", &mut [("mask", &mut self.mask)], rest)
    }

    fn set_progress(&mut self, fraction: f64) {
        self.temperature = self.schedule.at(fraction);
    }
}
