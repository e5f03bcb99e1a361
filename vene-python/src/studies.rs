//! The study commands as functions: each runs the library code its `vene` command runs and returns the numbers
//! as JSON text with the summary, writing the command's figures and JSON file when given a directory.

use std::path::PathBuf;

use pyo3::prelude::*;
use vene_host::{
    model::LoadedModel,
    outputs,
    plugins::PluginSet,
    studies::{
        facts,
        interchange_search::{self as search_study, SearchSetup, Wording},
        output::StudyOutput,
        path_patching::{self, PathBatch, PathOptions, PathPrompt, Receivers},
        probe::{self, DasBudget, ProbeSetup},
        prompt_trace,
        sentiment::{self, SentimentSetup},
        tracing::TraceOptions,
    },
    text::TextTokenizer,
};

use crate::{
    errors::{raise, released, OrRaise},
    model::Model,
};

/// A Python `progress(done, total)` callable as the library's progress callback, called with the GIL taken back;
/// its first error is kept.
struct Progress {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl Progress {
    fn new(callback: Option<Bound<'_, PyAny>>) -> Self {
        Self { callback: callback.filter(|c| !c.is_none()).map(Bound::unbind), error: None }
    }

    fn call(&mut self) -> impl FnMut(usize, usize) + '_ {
        move |done, total| {
            if let (Some(callback), None) = (&self.callback, &self.error) {
                if let Err(error) = Python::with_gil(|py| callback.call1(py, (done, total))) {
                    self.error = Some(error);
                }
            }
        }
    }

    fn finish(self) -> PyResult<()> {
        self.error.map_or(Ok(()), Err)
    }
}

/// Runs `study` on the model's clone, plugins and tokenizer with the GIL released and `progress` wired in.
pub(crate) fn run_study<R>(
    py: Python<'_>,
    model: &Model,
    what: &str,
    progress: Option<Bound<'_, PyAny>>,
    study: impl FnOnce(StudyModel<'_>, &mut dyn FnMut(usize, usize)) -> vene_host::error::Result<(R, LoadedModel)>,
) -> PyResult<R> {
    let tokenizer = model.tokenizer()?;
    let mut progress = Progress::new(progress);
    let (result, _) = released(py, what, || {
        study((model.model.clone(), &model.plugins, tokenizer), &mut progress.call()).or_raise()
    })?;
    progress.finish()?;
    Ok(result)
}

/// What a study runs on: the model, the plugins, the tokenizer.
type StudyModel<'a> = (LoadedModel, &'a PluginSet, &'a TextTokenizer);

/// `(numbers as JSON text, summary)`, after writing the figures and the JSON file into `out` if given. The numbers
/// are what the study's JSON file holds, unless `numbers` gives more.
pub(crate) fn finish(
    output: vene_host::error::Result<StudyOutput>,
    numbers: Option<serde_json::Value>,
    out: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let output = output.or_raise()?;
    if let Some(out) = out {
        outputs::prepare_dir(&out).or_raise()?;
        output.write(&out).or_raise()?;
    }
    Ok((numbers.as_ref().unwrap_or(&output.json).to_string(), output.summary))
}

/// Causal tracing of one prompt (`vene trace --prompt`).
#[pyfunction]
#[pyo3(signature = (model, prompt, subject, target, samples=10, noise=3.0, window=10, seed=0, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn trace(
    py: Python<'_>,
    model: &Model,
    prompt: &str,
    subject: &str,
    target: &str,
    samples: usize,
    noise: f64,
    window: usize,
    seed: u64,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let options = TraceOptions { samples, noise_scale: noise, window, seed };
    let found = run_study(py, model, "causal tracing", progress, |(model, plugins, tokenizer), progress| {
        prompt_trace::trace_text(model, plugins, tokenizer, prompt, subject, target, &options, progress)
    })?;
    // The labels and the target's text come back too: trace.json holds the trace alone, as the CLI writes it.
    let numbers = serde_json::to_value(&found).or_raise()?;
    finish(prompt_trace::study_output(&found, &out.clone().unwrap_or_default()), Some(numbers), out)
}

/// Causal tracing of every known fact of a JSON-lines text, averaged by position class (`vene trace --facts`).
#[pyfunction]
#[pyo3(signature = (model, facts_jsonl, samples=10, noise=3.0, window=10, seed=0, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn trace_facts(
    py: Python<'_>,
    model: &Model,
    facts_jsonl: &str,
    samples: usize,
    noise: f64,
    window: usize,
    seed: u64,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let options = TraceOptions { samples, noise_scale: noise, window, seed };
    let facts = facts::parse_facts(facts_jsonl, "the facts").or_raise()?;
    let result = run_study(py, model, "tracing the facts", progress, |(model, plugins, tokenizer), progress| {
        facts::trace_facts(model, plugins, tokenizer, &facts, &options, progress)
    })?;
    finish(facts::study_output(&result, &out.clone().unwrap_or_default()), None, out)
}

/// Rank-1 DAS against a linear probe at every layer × position (`vene das-probe`); `classes` maps each target
/// word to its names.
#[pyfunction]
#[pyo3(signature = (model, template, classes, positions=None, pairs=None, epochs=8, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn das_probe(
    py: Python<'_>,
    model: &Model,
    template: &str,
    classes: Vec<(String, Vec<String>)>,
    positions: Option<Vec<usize>>,
    pairs: Option<usize>,
    epochs: usize,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let setup = ProbeSetup { template: template.to_string(), classes, budget: DasBudget { positions, pairs, epochs } };
    let result = run_study(py, model, "DAS against the probe", progress, |(model, plugins, tokenizer), progress| {
        probe::das_vs_probe(model, plugins, tokenizer, &setup, progress)
    })?;
    finish(probe::study_output(&result), None, out)
}

/// The multi-source interchange over wordings (`vene interchange-search`); `wordings` is JSON-lines text of
/// `{"base", "attribute_source", "entity_source"}`.
#[pyfunction]
#[pyo3(signature = (model, wordings_jsonl, target, component="block_output", serial_stride=1, out=None,
                    progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn interchange_search(
    py: Python<'_>,
    model: &Model,
    wordings_jsonl: &str,
    target: &str,
    component: &str,
    serial_stride: usize,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let shape = "{\"base\": …, \"attribute_source\": …, \"entity_source\": …}";
    let wordings: Vec<Wording> =
        vene_host::studies::parse_json_lines(wordings_jsonl, "the wordings", shape).or_raise()?;
    if serial_stride == 0 {
        return Err(raise("invalid serial_stride: 0 (valid: 1 or more layers between serial swaps)"));
    }
    let setup = SearchSetup { wordings: &wordings, target, component, serial_stride };
    let found = run_study(py, model, "the interchange search", progress, |(model, plugins, tokenizer), progress| {
        search_study::search(model, plugins, tokenizer, &setup, progress)
    })?;
    finish(search_study::study_output(&found), None, out)
}

/// Story openings steered towards words, side by side with unsteered ones, with a coefficient sweep
/// (`vene steer-sentiment`); `positive` / `negative` are the word lists whose probability is summed.
#[pyfunction]
#[pyo3(signature = (model, openings, positive, negative, words, coefficient=0.3, sweep=vec![0.3, 1.0, 3.0, 10.0],
                    component="mlp_output", max_new_tokens=20, out=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn steer_sentiment(
    py: Python<'_>,
    model: &Model,
    openings: Vec<String>,
    positive: Vec<String>,
    negative: Vec<String>,
    words: Vec<String>,
    coefficient: f64,
    sweep: Vec<f64>,
    component: &str,
    max_new_tokens: usize,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    for (name, list) in [("openings", &openings), ("positive", &positive), ("negative", &negative), ("words", &words)] {
        if list.is_empty() {
            return Err(raise(format!("invalid inputs: {name} is empty (give at least one)")));
        }
    }
    let spaced = |words: Vec<String>| words.into_iter().map(|w| format!(" {}", w.trim())).collect();
    let setup = SentimentSetup {
        openings,
        words,
        coefficient,
        sweep,
        positive: spaced(positive),
        negative: spaced(negative),
        component: component.to_string(),
        max_new_tokens,
    };
    let found = run_study(py, model, "sentiment steering", progress, |(model, plugins, tokenizer), progress| {
        sentiment::sentiment_steering(model, plugins, tokenizer, &setup, progress)
    })?;
    finish(sentiment::study_output(&found), None, out)
}

/// Path patching of attention heads (`vene path-patch`); `prompts_jsonl` is JSON-lines text of
/// `{"clean", "corrupted", "target", "distractor"}`, `receivers` one of logits, query, key, value.
#[pyfunction]
#[pyo3(signature = (model, prompts_jsonl, receivers="logits", senders=None, freeze_mlps=false, out=None,
                    progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn path_patch(
    py: Python<'_>,
    model: &Model,
    prompts_jsonl: &str,
    receivers: &str,
    senders: Option<Vec<(u32, u32)>>,
    freeze_mlps: bool,
    out: Option<PathBuf>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, String)> {
    let shape = "{\"clean\": …, \"corrupted\": …, \"target\": …, \"distractor\": …}";
    let prompts: Vec<PathPrompt> =
        vene_host::studies::parse_json_lines(prompts_jsonl, "the prompts", shape).or_raise()?;
    let receivers: Receivers = serde_json::from_value(serde_json::json!(receivers))
        .map_err(|_| raise(format!("invalid receivers: {receivers:?} (valid: logits, query, key, value)")))?;
    let options = PathOptions { receivers, freeze_mlps };
    let found = run_study(py, model, "path patching", progress, |(model, plugins, tokenizer), progress| {
        let batch = PathBatch::new(tokenizer, &prompts, model.device())?;
        let senders = senders.unwrap_or_else(|| path_patching::all_heads(&model));
        let found = path_patching::run(&model, plugins, &batch, &senders, &options, progress)?;
        Ok((found, model))
    })?;
    finish(path_patching::study_output(&found, &out.clone().unwrap_or_default()), None, out)
}
