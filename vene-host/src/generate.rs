//! Text generation with interventions: incremental decoding with the adapter's key/value cache, greedy or sampled
//! (temperature, top-k, top-p, seeded), with the interventions acting on the prompt pass, on every decoding step, or
//! both (pyvene's `intervene_on_prompt`). Unit locations are relative to each pass's tokens: on a decoding step
//! position 0 is the new token; with no `unit_locations` every position of the pass is intervened on.

use rand::{rngs::StdRng, Rng, SeedableRng};
use tch::{Kind, Tensor};

use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
};

/// Which passes the interventions act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterveneOn {
    /// The prompt pass only (pyvene's `intervene_on_prompt=True` with unit locations).
    Prompt,
    /// Every decoding step but not the prompt (pyvene's `intervene_on_prompt=False`).
    Steps,
    /// The prompt and every step (pyvene without unit locations).
    #[default]
    Both,
}

impl std::str::FromStr for InterveneOn {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "prompt" => Ok(InterveneOn::Prompt),
            "steps" => Ok(InterveneOn::Steps),
            "both" => Ok(InterveneOn::Both),
            other => Err(format!("'{other}' is not one of prompt, steps, both")),
        }
    }
}

/// How to pick tokens.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// Stop after generating this token.
    pub stop_token: Option<i64>,
    pub intervene_on: InterveneOn,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_token: None,
            intervene_on: InterveneOn::Both,
        }
    }
}

/// Picks the next token from one row of logits.
fn pick(logits: &Tensor, sampling: &Sampling, rng: &mut StdRng) -> Result<i64> {
    let logits = logits.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    if sampling.temperature <= 0.0 {
        return Ok(logits.argmax(-1, false).int64_value(&[]));
    }
    let probabilities = (logits / sampling.temperature).softmax(-1, Kind::Double);
    let values: Vec<f64> = Vec::<f64>::try_from(&probabilities)?;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut keep = sampling.top_k.map_or(order.len(), |k| k.clamp(1, order.len()));
    if let Some(p) = sampling.top_p {
        let mut total = 0.0;
        let nucleus = order.iter().take_while(|&&i| {
            let inside = total < p;
            total += values[i];
            inside
        });
        keep = keep.min(nucleus.count().max(1));
    }
    let kept = &order[..keep];
    let mass: f64 = kept.iter().map(|&i| values[i]).sum();
    let mut draw = rng.gen::<f64>() * mass;
    for &i in kept {
        draw -= values[i];
        if draw <= 0.0 {
            return Ok(i as i64);
        }
    }
    Ok(kept[kept.len() - 1] as i64)
}

/// Generates up to `max_new_tokens` after `prompt` (one sequence), calling `on_token` as each is chosen.
pub fn generate(
    model: &mut IntervenableModel,
    prompt: &[i64],
    sources: &[Option<ForwardInputs>],
    locations: &UnitLocations,
    subspaces: &Subspaces,
    sampling: &Sampling,
    mut on_token: impl FnMut(i64),
) -> Result<Vec<i64>> {
    if prompt.is_empty() {
        return Err(VeneError::Inputs("the prompt is empty".to_string()));
    }
    let device = model.model().device();
    let limit = model.model().catalog().max_positions as usize;
    if limit > 0 && prompt.len() >= limit {
        return Err(VeneError::Inputs(format!(
            "the prompt has {} tokens; the model takes at most {limit} positions",
            prompt.len()
        )));
    }
    // Stop at the model's context length rather than fail on the step past it.
    let max_new_tokens =
        if limit > 0 { sampling.max_new_tokens.min(limit - prompt.len()) } else { sampling.max_new_tokens };
    let prepared = model.prepare(1, sources, locations, subspaces)?;
    let _no_grad = tch::no_grad_guard();
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let mut inputs =
        ForwardInputs::from_ids(Tensor::from_slice(prompt).view([1, -1]).to_device(device)).reading_last_position();
    inputs.use_cache = true;
    let mut generated = Vec::new();
    for step in 0..max_new_tokens {
        let intervene = match sampling.intervene_on {
            InterveneOn::Both => true,
            InterveneOn::Prompt => step == 0,
            InterveneOn::Steps => step > 0,
        };
        let (logits, present) = if intervene {
            let output = model.run_prepared(&inputs, &prepared, subspaces)?;
            (output.output, output.present)
        } else {
            let output = model.model().forward_plain(&inputs)?;
            (output.output, output.present)
        };
        if present.is_empty() {
            return Err(VeneError::Config(format!(
                "the {} adapter returned no key/value cache, so it cannot generate incrementally",
                model.model().catalog().model_type
            )));
        }
        let token = pick(&logits.select(1, -1).select(0, 0), sampling, &mut rng)?;
        generated.push(token);
        on_token(token);
        if sampling.stop_token == Some(token) {
            break;
        }
        inputs = ForwardInputs::from_ids(Tensor::from_slice(&[token]).view([1, 1]).to_device(device));
        inputs.past = present;
        inputs.use_cache = true;
    }
    Ok(generated)
}
