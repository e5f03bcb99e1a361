//! `vene.attribute` and `vene.circuit`: attribution patching (`vene attribute`) and edge attribution with circuit
//! evaluation (`vene circuit`) as functions over the same library code; with `out` each writes what its command
//! writes (figures, the JSON, the scores as safetensors).

use std::path::PathBuf;

use pyo3::prelude::*;
use vene_host::studies::{
    attribution::Metric,
    attribution::{
        attribute as attribute_nodes, default_components, prompt_inputs, with_qk, write_scores, AttributionOptions,
    },
    circuit::{find_circuit, CircuitOptions},
    path_patching::PathPrompt,
};

use crate::{
    errors::OrRaise,
    model::Model,
    studies::{finish, run_study},
};

/// The clean / corrupted prompt pairs of JSON lines.
fn prompt_pairs(prompts_jsonl: &str) -> PyResult<Vec<PathPrompt>> {
    let shape = "{\"clean\": …, \"corrupted\": …, \"target\": …, \"distractor\": …}";
    vene_host::studies::parse_json_lines(prompts_jsonl, "the prompts", shape).or_raise()
}

/// Every node's estimated patching effect on `metric` for the prompt pairs (JSON lines of
/// `{"clean", "corrupted", "target", "distractor"}`), the top `top_k` and `random_k` others patched exactly.
#[pyfunction]
#[pyo3(signature = (model, prompts_jsonl, metric="logit-diff", components=None, ig_steps=0, qk_fix=false, grad_drop=false,
                    top_k=20, random_k=10, verify_all=false, seed=0, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn attribute(
    py: Python<'_>,
    model: &Model,
    prompts_jsonl: &str,
    metric: &str,
    components: Option<Vec<String>>,
    ig_steps: usize,
    qk_fix: bool,
    grad_drop: bool,
    top_k: usize,
    random_k: usize,
    verify_all: bool,
    seed: u64,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let prompts = prompt_pairs(prompts_jsonl)?;
    let metric = Metric::parse(metric).or_raise()?;
    let result = run_study(py, model, "attribution", progress, |(model, plugins, tokenizer), _| {
        let (inputs, tokens) = prompt_inputs(tokenizer, &prompts, model.device())?;
        let components = components.clone().unwrap_or_else(|| with_qk(default_components(&model), qk_fix));
        let options =
            AttributionOptions { components, metric, ig_steps, qk_fix, grad_drop, top_k, random_k, verify_all, seed };
        attribute_nodes(model, plugins, &inputs, &options, tokens)
    })?;
    let written = finish(result.output("attribution.json"), None, out.clone())?;
    if let Some(dir) = out {
        write_scores(&result, &dir).or_raise()?;
    }
    Ok(written)
}

/// Every edge of the residual-stream graph scored by EAP (EAP-IG with `ig_steps`), the top `top_k` and `random_k`
/// others patched alone exactly, and circuits of the top n edges run with every other edge patched.
#[pyfunction]
#[pyo3(signature = (model, prompts_jsonl, metric="logit-diff", ig_steps=0, top_k=20, random_k=10, verify_all=false,
                    sizes=None, keep=None, faithfulness=0.8, per_head=false, seed=0, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn circuit(
    py: Python<'_>,
    model: &Model,
    prompts_jsonl: &str,
    metric: &str,
    ig_steps: usize,
    top_k: usize,
    random_k: usize,
    verify_all: bool,
    sizes: Option<Vec<usize>>,
    keep: Option<usize>,
    faithfulness: f64,
    per_head: bool,
    seed: u64,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let prompts = prompt_pairs(prompts_jsonl)?;
    let metric = Metric::parse(metric).or_raise()?;
    let sizes = sizes.unwrap_or_default();
    let options =
        CircuitOptions { metric, ig_steps, top_k, random_k, verify_all, seed, sizes, keep, faithfulness, per_head };
    let result = run_study(py, model, "circuit", progress, |(model, plugins, tokenizer), _| {
        let (inputs, _) = prompt_inputs(tokenizer, &prompts, model.device())?;
        find_circuit(model, plugins, &inputs, &options)
    })?;
    let written = finish(result.output("circuit.json"), None, out.clone())?;
    if let Some(dir) = out {
        result.write_scores(&dir).or_raise()?;
    }
    Ok(written)
}
