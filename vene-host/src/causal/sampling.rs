//! Sampling inputs of a causal model, and the factual and counterfactual examples built from them
//! (pyvene's `generate_factual_dataset` and `generate_counterfactual_dataset`).

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value as Json};

use super::{CausalModel, Domain, Mechanism, Value};
use crate::error::{Result, VeneError};

/// Which interventions counterfactual examples make: sets of aligned variables, one drawn uniformly per example.
#[derive(Debug, Clone)]
pub struct Interventions {
    /// The aligned variables; source `i` of every example feeds variable `i`.
    pub variables: Vec<usize>,
    /// Each a set of indices into `variables`.
    pub sets: Vec<Vec<usize>>,
}

impl Interventions {
    /// `sets` as names (`[["WX"], ["YZ"], ["WX", "YZ"]]`); empty: every non-empty subset of `variables`.
    pub fn new(model: &CausalModel, variables: &[String], sets: &[Vec<String>]) -> Result<Self> {
        if variables.is_empty() {
            return Err(VeneError::Config("name at least one variable to intervene on".to_string()));
        }
        let indices = variables.iter().map(|name| model.index(name)).collect::<Result<Vec<_>>>()?;
        let sets = if sets.is_empty() {
            (1..1usize << variables.len())
                .map(|mask| (0..variables.len()).filter(|bit| mask & (1 << bit) != 0).collect())
                .collect()
        } else {
            sets.iter()
                .map(|set| {
                    set.iter()
                        .map(|name| {
                            variables.iter().position(|v| v == name).ok_or_else(|| {
                                VeneError::Config(format!(
                                    "the intervention on '{name}' names a variable that is not aligned (aligned: {})",
                                    variables.join(", ")
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Self { variables: indices, sets })
    }
}

/// One counterfactual example, before encoding.
#[derive(Debug, Clone)]
pub struct Counterfactual {
    pub base: Vec<Value>,
    /// One per aligned variable: its source, or the base itself where the variable is not intervened on (an
    /// interchange from the base into the base changes nothing).
    pub sources: Vec<Vec<Value>>,
    pub intervened: Vec<usize>,
    pub output: Value,
    pub base_output: Value,
}

impl CausalModel {
    /// Input values: uniform and independent, or from a pattern drawn uniformly (equal letters share a value,
    /// different letters take distinct ones).
    pub fn sample_inputs(&self, rng: &mut StdRng) -> Result<Vec<Value>> {
        let domains: Vec<&Domain> = self
            .inputs
            .iter()
            .filter_map(|&i| match &self.variables[i].mechanism {
                Mechanism::Input(domain) => Some(domain),
                Mechanism::Function { .. } => None,
            })
            .collect();
        let Some(pattern) = self.patterns.choose(rng) else {
            return Ok(domains.iter().map(|d| d.sample(rng)).collect());
        };
        let mut chosen: Vec<(&str, Value)> = Vec::new();
        let mut values = Vec::with_capacity(domains.len());
        for (letter, domain) in pattern.iter().zip(&domains) {
            if let Some((_, value)) = chosen.iter().find(|(l, _)| *l == letter) {
                values.push(value.clone());
                continue;
            }
            let distinct = (0..domain.size())
                .map(|_| domain.sample(rng))
                .find(|v| chosen.iter().all(|(_, taken)| taken != v))
                .ok_or_else(|| {
                    VeneError::Config(format!(
                        "the pattern {pattern:?} needs more distinct values than the inputs' domain of {} gives",
                        domain.size()
                    ))
                })?;
            chosen.push((letter, distinct.clone()));
            values.push(distinct);
        }
        Ok(values)
    }

    /// `count` factual lines `{"base": …, "label": …, "base_label": …}` from seeded samples.
    pub fn factual_lines(&self, count: usize, seed: u64) -> Result<Vec<Json>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let inputs = self.sample_inputs(&mut rng)?;
                let label = self.label(&self.run(&inputs, &[])?[self.output])?;
                Ok(json!({"base": self.encode(&inputs), "label": label, "base_label": label}))
            })
            .collect()
    }

    /// One counterfactual example with an intervention set drawn from `interventions`.
    pub fn sample_counterfactual(&self, interventions: &Interventions, rng: &mut StdRng) -> Result<Counterfactual> {
        let set = interventions.sets[rng.gen_range(0..interventions.sets.len())].clone();
        let base = self.sample_inputs(rng)?;
        let mut sources = Vec::with_capacity(interventions.variables.len());
        for slot in 0..interventions.variables.len() {
            sources.push(if set.contains(&slot) { self.sample_inputs(rng)? } else { base.clone() });
        }
        let fixed: Vec<(usize, Vec<Value>)> =
            set.iter().map(|&slot| (interventions.variables[slot], sources[slot].clone())).collect();
        let output = self.interchange(&base, &fixed)?[self.output].clone();
        let base_output = self.run(&base, &[])?[self.output].clone();
        Ok(Counterfactual { base, sources, intervened: set, output, base_output })
    }

    /// `count` counterfactual lines `{"base", "sources", "label", "base_label"}`; with `subspaces`, source `i` acts
    /// on subspace `i` of representation `i` (`"subspaces": [[[0]], [[1]], …]`).
    pub fn counterfactual_lines(
        &self,
        interventions: &Interventions,
        count: usize,
        seed: u64,
        subspaces: bool,
    ) -> Result<Vec<Json>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let example = self.sample_counterfactual(interventions, &mut rng)?;
                let mut line = json!({
                    "base": self.encode(&example.base),
                    "sources": example.sources.iter().map(|s| self.encode(s)).collect::<Vec<_>>(),
                    "label": self.label(&example.output)?,
                    "base_label": self.label(&example.base_output)?,
                });
                if subspaces {
                    let ids: Vec<Json> = (0..interventions.variables.len()).map(|i| json!([[i]])).collect();
                    line["subspaces"] = Json::Array(ids);
                }
                Ok(line)
            })
            .collect()
    }

    /// How often each output value occurs over `count` seeded samples, most frequent first.
    pub fn output_distribution(&self, count: usize, seed: u64) -> Result<Vec<(Value, usize)>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts: Vec<(Value, usize)> = Vec::new();
        for _ in 0..count {
            let output = self.run(&self.sample_inputs(&mut rng)?, &[])?[self.output].clone();
            match counts.iter_mut().find(|(v, _)| *v == output) {
                Some((_, n)) => *n += 1,
                None => counts.push((output, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }
}
