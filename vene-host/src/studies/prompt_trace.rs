//! Causal tracing of one prompt given as text: the subject found among its tokens, the target's first token
//! scored, and the sweeps labelled token by token for the figures (`vene trace --prompt`, `vene.studies.trace`).

use std::path::Path;

use serde::Serialize;

use super::{
    output::StudyOutput,
    tracing::{self, Trace, TraceOptions, TracePrompt},
};
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    text::TextTokenizer,
};

/// A traced prompt with its tokens' labels (the subject's marked `*`) and the target's text.
#[derive(Debug, Clone, Serialize)]
pub struct PromptTrace {
    #[serde(flatten)]
    pub trace: Trace,
    pub labels: Vec<String>,
    pub target_text: String,
}

/// Traces `prompt` for `subject` (a token span of it, with or without a leading space) and `target`.
#[allow(clippy::too_many_arguments)]
pub fn trace_text(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    prompt: &str,
    subject: &str,
    target: &str,
    options: &TraceOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(PromptTrace, LoadedModel)> {
    let prepared = TracePrompt::from_text(tokenizer, prompt, subject, target)?.map_err(VeneError::Inputs)?;
    let level = tracing::noise_level(&model, options)?;
    let (trace, model) = tracing::trace_at_level(model, plugins, &prepared, level, options, progress)?;
    let (tokens, span) = (&prepared.tokens, prepared.subject);
    let labels = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let marker = if (span.0..span.1).contains(&i) { "*" } else { "" };
            format!("{}{marker}", tokenizer.decode(&[t]).trim())
        })
        .collect();
    Ok((PromptTrace { trace, labels, target_text: target.trim().to_string() }, model))
}

/// The three heatmaps, trace.json and the summary of a traced prompt written to `out`.
pub fn study_output(found: &PromptTrace, out: &Path) -> Result<StudyOutput> {
    let target = &found.target_text;
    let title = |name: &str| format!("restored p({target}) — {name}");
    let figures = tracing::heatmaps(found.trace.sweeps(), &found.labels, title, found.trace.clean.max(1e-9));
    let summary = format!(
        "p({target}) clean {:.4}, corrupted {:.4}; wrote trace.json and block_output / mlp_output / attention_output \
         .png/.svg to {}",
        found.trace.clean,
        found.trace.corrupted,
        out.display()
    );
    StudyOutput::new("trace.json", &found.trace, figures, summary)
}
