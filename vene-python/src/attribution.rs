//! `vene.attribute`: attribution patching (`vene attribute`) as a function over the same library code; with `out`
//! it writes what the command writes (figures, attribution.json, attribution_scores.safetensors).

use std::path::PathBuf;

use pyo3::prelude::*;
use vene_host::studies::{
    attribution::Metric,
    attribution::{attribute as attribute_nodes, default_components, prompt_inputs, write_scores, AttributionOptions},
    path_patching::PathPrompt,
};

use crate::{
    errors::OrRaise,
    model::Model,
    studies::{finish, run_study},
};

/// Every node's estimated patching effect on `metric` for the prompt pairs (JSON lines of
/// `{"clean", "corrupted", "target", "distractor"}`), the top `top_k` and `random_k` others patched exactly.
#[pyfunction]
#[pyo3(signature = (model, prompts_jsonl, metric="logit-diff", components=None, ig_steps=0, top_k=20, random_k=10,
                    verify_all=false, seed=0, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn attribute(
    py: Python<'_>,
    model: &Model,
    prompts_jsonl: &str,
    metric: &str,
    components: Option<Vec<String>>,
    ig_steps: usize,
    top_k: usize,
    random_k: usize,
    verify_all: bool,
    seed: u64,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let shape = "{\"clean\": …, \"corrupted\": …, \"target\": …, \"distractor\": …}";
    let prompts: Vec<PathPrompt> =
        vene_host::studies::parse_json_lines(prompts_jsonl, "the prompts", shape).or_raise()?;
    let metric = Metric::parse(metric).or_raise()?;
    let result = run_study(py, model, "attribution", progress, |(model, plugins, tokenizer), _| {
        let (inputs, tokens) = prompt_inputs(tokenizer, &prompts, model.device())?;
        let components = components.clone().unwrap_or_else(|| default_components(&model));
        let options = AttributionOptions { components, metric, ig_steps, top_k, random_k, verify_all, seed };
        attribute_nodes(model, plugins, &inputs, &options, tokens)
    })?;
    let written = finish(result.output("attribution.json"), None, out.clone())?;
    if let Some(dir) = out {
        write_scores(&result, &dir).or_raise()?;
    }
    Ok(written)
}
