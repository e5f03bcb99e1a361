//! The built-in interventions: vanilla (interchange), addition, subtraction, zero, collect, skip, noise and scale.
//!
//! All are localist (they keep `(batch, units, dim)`); with `subspaces` they act only on the listed dimensions of the
//! last axis, per example. A constant `source_representation` in the representation is handed to them as the source.

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use vene_api::{Intervention, InterventionSpec, InterventionTraits, PluginError, PluginResult};

use super::{BuiltinConfig, BuiltinType};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Replace,
    Add,
    Subtract,
    Zero,
    Collect,
}

/// The swap-style interventions, one struct for all of them.
struct Swap {
    op: Op,
}

/// `(batch, 1, …, dim)` mask that is true at `dims[i]` for example `i`.
fn subspace_mask(base: &Tensor, dims: &[Vec<i64>]) -> PluginResult<Tensor> {
    let size = base.size();
    let (batch, dim) = (size[0], size[size.len() - 1]);
    if dims.len() as i64 != batch {
        return Err(PluginError::invalid_input(format!(
            "subspaces are given for {} examples, the batch has {batch}",
            dims.len()
        )));
    }
    let mut mask = vec![false; (batch * dim) as usize];
    for (example, selected) in dims.iter().enumerate() {
        for &d in selected {
            mask[example * dim as usize + d as usize] = true;
        }
    }
    let mut view = vec![1i64; size.len()];
    view[0] = batch;
    view[size.len() - 1] = dim;
    Ok(Tensor::from_slice(&mask).view(view.as_slice()).to_device(base.device()))
}

fn broadcast_source(base: &Tensor, source: &Tensor) -> PluginResult<Tensor> {
    if source.size() == base.size() {
        return Ok(source.to_kind(base.kind()));
    }
    source.to_kind(base.kind()).f_expand_as(base).map_err(|_| {
        PluginError::invalid_input(format!(
            "source with shape {:?} cannot be broadcast into base with shape {:?}",
            source.size(),
            base.size()
        ))
    })
}

/// `base[..., dims[i]]` per example; every example must select the same number of dimensions.
fn select_dims(base: &Tensor, dims: &[Vec<i64>]) -> PluginResult<Tensor> {
    let width = dims.first().map_or(0, Vec::len);
    if dims.iter().any(|d| d.len() != width) {
        return Err(PluginError::invalid_input("collect needs the same number of subspace dimensions per example"));
    }
    let flat: Vec<i64> = dims.iter().flatten().copied().collect();
    let size = base.size();
    let mut view = vec![1i64; size.len()];
    view[0] = dims.len() as i64;
    view[size.len() - 1] = width as i64;
    let mut target = size.clone();
    target[size.len() - 1] = width as i64;
    let index =
        Tensor::from_slice(&flat).view(view.as_slice()).to_device(base.device()).expand(target.as_slice(), false);
    Ok(base.gather(-1, &index, false))
}

impl Intervention for Swap {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits {
            needs_source: matches!(self.op, Op::Replace | Op::Add | Op::Subtract),
            collects: self.op == Op::Collect,
            ..Default::default()
        }
    }

    fn apply(
        &mut self,
        base: &Tensor,
        source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        if self.op == Op::Collect {
            return match subspaces {
                None => Ok(base.shallow_clone()),
                Some(dims) => select_dims(base, dims),
            };
        }
        let source = match (self.op, source) {
            (Op::Zero, _) => base.zeros_like(),
            (_, Some(source)) => broadcast_source(base, source)?,
            (_, None) => return Err(PluginError::invalid_input("this intervention needs a source")),
        };
        let combined = match self.op {
            Op::Add => base + &source,
            Op::Subtract => base - &source,
            _ => source,
        };
        match subspaces {
            None => Ok(combined),
            Some(dims) => Ok(combined.where_self(&subspace_mask(base, dims)?, base)),
        }
    }
}

/// Replaces the base units with the source units (interchange intervention).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vanilla {}

/// Adds the source to the base.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addition {}

/// Subtracts the source from the base.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subtraction {}

/// Sets the base units to zero.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zero {}

/// Returns the base units as collected activations and leaves the run unchanged.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collect {}

/// Replaces the site's output with its input (skips the module), at the selected units.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skip {}

/// Adds Gaussian noise `level · ε` from a seeded generator, fresh for each call; or, with `pyvene_table`, the fixed
/// table pyvene 0.1.8's `NoiseIntervention` adds (what a directory saved by pyvene means by "noise").
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// pyvene's default: three times GPT-2-XL's embedding standard deviation.
    #[serde(default = "default_noise_level")]
    pub level: f64,
    #[serde(default)]
    pub seed: u64,
    /// Add pyvene's table instead of fresh samples: `numpy.random.RandomState(1).randn(1, 4, embed_dim)`, the same
    /// for every call and example, so it needs exactly 4 units of one component's width.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pyvene_table: bool,
}

fn default_noise_level() -> f64 {
    0.13462981581687927
}

macro_rules! swap_type {
    ($ty:ident, $name:literal, $op:expr, $summary:literal) => {
        #[typetag::serde(name = $name)]
        impl BuiltinConfig for $ty {
            fn build(&self, _spec: &InterventionSpec) -> Result<Box<dyn Intervention>> {
                Ok(Box::new(Swap { op: $op }))
            }
        }

        inventory::submit! { BuiltinType { name: $name, summary: $summary } }
    };
}

swap_type!(Vanilla, "vanilla", Op::Replace, "base[S] <- source[S] (interchange)");
swap_type!(Addition, "addition", Op::Add, "base[S] += source[S]");
swap_type!(Subtraction, "subtraction", Op::Subtract, "base[S] -= source[S]");
swap_type!(Zero, "zero", Op::Zero, "base[S] <- 0");
swap_type!(Collect, "collect", Op::Collect, "returns base[S]; the run is unchanged");
swap_type!(Skip, "skip", Op::Replace, "the site's input replaces its output");

/// Where noise comes from: fresh samples per call, or pyvene's fixed table `(4 units, embed_dim)`.
enum NoiseSource {
    Sampled(Box<StdRng>),
    PyveneTable { table: Vec<f64>, width: i64 },
}

struct NoiseIntervention {
    level: f64,
    source: NoiseSource,
}

/// `numpy.random.RandomState(seed).randn(count)`: MT19937 seeded as numpy seeds an integer, 53-bit doubles, and
/// numpy's legacy polar Box-Muller (the second value of each pair first).
fn numpy_legacy_randn(seed: u32, count: usize) -> Vec<f64> {
    let mut twister = rand_mt::Mt::new(seed);
    let mut uniform = || {
        let (a, b) = (twister.next_u32() >> 5, twister.next_u32() >> 6);
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    };
    let mut values = Vec::with_capacity(count + 1);
    while values.len() < count {
        let (x1, x2, r2) = loop {
            let (x1, x2) = (2.0 * uniform() - 1.0, 2.0 * uniform() - 1.0);
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                break (x1, x2, r2);
            }
        };
        let f = (-2.0 * r2.ln() / r2).sqrt();
        values.extend([f * x2, f * x1]);
    }
    values.truncate(count);
    values
}

impl NoiseIntervention {
    fn noise(&mut self, base: &Tensor) -> PluginResult<Tensor> {
        let size = base.size();
        match &mut self.source {
            NoiseSource::Sampled(rng) => {
                let samples: Vec<f32> = (0..base.numel()).map(|_| StandardNormal.sample(rng)).collect();
                Ok(Tensor::from_slice(&samples).view(size.as_slice()))
            }
            NoiseSource::PyveneTable { table, width } => {
                // pyvene adds its (1, 4, embed_dim) table to (batch, units, dim): that broadcasts only for 4 units
                // of width embed_dim (one unit per location), and pyvene fails on anything else.
                let (units, dim) = (size.get(1).copied().unwrap_or(0), size.last().copied().unwrap_or(0));
                if size.len() != 3 || units != 4 || dim != *width {
                    return Err(PluginError::invalid_input(format!(
                        "pyvene's noise table has 4 units of {width} values, the selected units have shape {size:?} \
                         (valid: 4 locations per example, max_number_of_units 1)"
                    )));
                }
                Ok(Tensor::from_slice(table).view([1, 4, *width]))
            }
        }
    }
}

impl Intervention for NoiseIntervention {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    /// pyvene's saved `noise` table and `noise_level`, for the table form only.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> PluginResult<()> {
        for (name, tensor) in state {
            match (name.as_str(), &mut self.source) {
                ("noise", NoiseSource::PyveneTable { table, width }) => {
                    if tensor.size() != [1, 4, *width] {
                        return Err(PluginError::invalid_config(format!(
                            "the saved noise table has shape {:?} (valid: [1, 4, {width}])",
                            tensor.size()
                        )));
                    }
                    *table = Vec::<f64>::try_from(&tensor.to_kind(tch::Kind::Double).flatten(0, -1))
                        .map_err(|e| PluginError::invalid_config(e.to_string()))?;
                }
                ("noise_level", NoiseSource::PyveneTable { .. }) => self.level = tensor.double_value(&[]),
                _ => {
                    return Err(PluginError::invalid_config(format!(
                        "this noise intervention has no state entry '{name}' (pyvene's table form has noise and \
                         noise_level)"
                    )))
                }
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        let noise = self.noise(base)?.to_device(base.device());
        let noisy = match self.source {
            NoiseSource::Sampled(_) => base + noise.to_kind(base.kind()) * self.level,
            // As pyvene computes it: the float64 table times its float32 level, added in float64, rounded once.
            NoiseSource::PyveneTable { .. } => {
                let level = f64::from(self.level as f32);
                (base.to_kind(tch::Kind::Double) + noise * level).to_kind(base.kind())
            }
        };
        match subspaces {
            None => Ok(noisy),
            Some(dims) => Ok(noisy.where_self(&subspace_mask(base, dims)?, base)),
        }
    }
}

#[typetag::serde(name = "noise")]
impl BuiltinConfig for Noise {
    fn build(&self, spec: &InterventionSpec) -> Result<Box<dyn Intervention>> {
        let source = if self.pyvene_table {
            let width = i64::from(spec.embed_dim);
            NoiseSource::PyveneTable { table: numpy_legacy_randn(1, 4 * width as usize), width }
        } else {
            NoiseSource::Sampled(Box::new(StdRng::seed_from_u64(self.seed)))
        };
        Ok(Box::new(NoiseIntervention { level: self.level, source }))
    }
}

inventory::submit! { BuiltinType { name: "noise", summary: "base[S] += level * N(0, 1), seeded" } }

/// Multiplies the base units by `factor` (e.g. 0 ablates, 2 doubles a Backpack sense vector).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub factor: f64,
}

struct ScaleIntervention {
    factor: f64,
}

impl Intervention for ScaleIntervention {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        let scaled = base * self.factor;
        match subspaces {
            None => Ok(scaled),
            Some(dims) => Ok(scaled.where_self(&subspace_mask(base, dims)?, base)),
        }
    }
}

#[typetag::serde(name = "scale")]
impl BuiltinConfig for Scale {
    fn build(&self, _spec: &InterventionSpec) -> Result<Box<dyn Intervention>> {
        Ok(Box::new(ScaleIntervention { factor: self.factor }))
    }
}

inventory::submit! { BuiltinType { name: "scale", summary: "base[S] *= factor" } }
