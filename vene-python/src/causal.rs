//! Causal models from Python (`vene_host::causal`): a JSON declaration in, `vene train` data lines out.

use pyo3::prelude::*;
use vene_host::causal::{CausalModel, Interventions};

use crate::errors::OrRaise;

/// Checks a causal model's JSON; errors name what is wrong.
#[pyfunction]
pub fn causal_check(spec: &str) -> PyResult<()> {
    CausalModel::from_json(spec, "the causal model").or_raise().map(|_| ())
}

/// `count` factual lines (JSON text, one per line) sampled with `seed`.
#[pyfunction]
pub fn causal_factual(spec: &str, count: usize, seed: u64) -> PyResult<String> {
    let model = CausalModel::from_json(spec, "the causal model").or_raise()?;
    let lines = model.factual_lines(count, seed).or_raise()?;
    Ok(lines.iter().map(|line| format!("{line}\n")).collect())
}

/// `count` counterfactual lines over the aligned `variables`, each drawing one of `interventions` (every non-empty
/// subset when empty).
#[pyfunction]
#[pyo3(signature = (spec, variables, interventions, count, seed, subspaces))]
pub fn causal_counterfactual(
    spec: &str,
    variables: Vec<String>,
    interventions: Vec<Vec<String>>,
    count: usize,
    seed: u64,
    subspaces: bool,
) -> PyResult<String> {
    let model = CausalModel::from_json(spec, "the causal model").or_raise()?;
    let interventions = Interventions::new(&model, &variables, &interventions).or_raise()?;
    let lines = model.counterfactual_lines(&interventions, count, seed, subspaces).or_raise()?;
    Ok(lines.iter().map(|line| format!("{line}\n")).collect())
}
