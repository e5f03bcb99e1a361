//! The paper's studies as library functions behind `vene` subcommands; each result becomes a
//! [`output::StudyOutput`] (PNG + SVG figures and a JSON of its numbers) written by one writer.

pub mod amnesic;
pub mod attribution;
pub mod channels;
pub mod circuit;
pub mod circuit_plot;
pub mod cnn_tracing;
pub mod facts;
pub mod image_das;
pub mod interchange;
pub mod interchange_search;
pub mod ocr_steps;
pub mod output;
pub mod path_patching;
pub mod picture;
pub mod plot;
pub mod probe;
pub mod prompt_trace;
pub mod scrubbing;
pub mod senses;
pub mod sentiment;
pub mod steering;
pub mod timesteps;
pub mod tracing;
pub mod vad_state;

use std::path::Path;

use tch::{Kind, Tensor};

use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One `T` per non-empty line of `text`; a bad line is an error naming `origin`, the line's number and `shape`
/// (what a line looks like), and a text with no lines is an error too.
pub fn parse_json_lines<T: serde::de::DeserializeOwned>(text: &str, origin: &str, shape: &str) -> Result<Vec<T>> {
    Ok(parse_numbered_json_lines(text, origin, shape)?.into_iter().map(|(_, item)| item).collect())
}

/// [`parse_json_lines`] with each item's line number (from 1), for checks that name the line.
pub fn parse_numbered_json_lines<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    shape: &str,
) -> Result<Vec<(usize, T)>> {
    let items = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str::<T>(line)
                .map(|item| (index + 1, item))
                .map_err(|e| VeneError::Inputs(format!("{origin} line {}: {e} (each line is {shape})", index + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    if items.is_empty() {
        return Err(VeneError::Inputs(format!("{origin} holds no lines (each line is {shape})")));
    }
    Ok(items)
}

/// A sweep's items computed in this process, in order, threading the model through `compute`; `progress(done,
/// total)` after each. The sharded and cached runs compute the same items one at a time through
/// [`crate::sharding`].
pub fn run_items<I, R>(
    items: &[(String, I)],
    model: LoadedModel,
    mut compute: impl FnMut(LoadedModel, &I) -> Result<(R, LoadedModel)>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<R>, LoadedModel)> {
    let mut model = model;
    let mut results = Vec::with_capacity(items.len());
    for (done, (_, item)) in items.iter().enumerate() {
        let (result, returned) = compute(model, item)?;
        model = returned;
        results.push(result);
        progress(done + 1, items.len());
    }
    Ok((results, model))
}

/// A study's options that decide its items' results, by the name a person knows them by, for a sweep's identity.
pub type SweepOptions = Vec<(&'static str, serde_json::Value)>;

/// Writes `value` as pretty JSON to `dir/name`, atomically.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).map_err(|e| VeneError::Config(e.to_string()))?;
    vene_checkpoint::write_atomic(&path, text.as_bytes()).map_err(|source| VeneError::Io { path, source })
}

/// Top-5 next words with probabilities.
pub type TopWords = Vec<(String, f64)>;

pub(crate) fn ids(tokenizer: &TextTokenizer, text: &str, device: tch::Device) -> Result<ForwardInputs> {
    let tokens = tokenizer.encode(text)?;
    Ok(ForwardInputs::from_ids(Tensor::from_slice(&tokens).view([1, -1]).to_device(device)))
}

/// The five most likely next words after the last position.
pub fn top_words(tokenizer: &TextTokenizer, logits: &Tensor) -> Result<TopWords> {
    top_named(&logits.select(1, -1).select(0, 0), 5, |i| tokenizer.decode(&[i]))
}

/// The `k` most likely entries of one row of `logits`, named by `name` (a word, a class), with their probabilities.
pub fn top_named(logits: &Tensor, k: i64, name: impl Fn(i64) -> String) -> Result<TopWords> {
    let probabilities = logits.to_kind(Kind::Float).softmax(-1, Kind::Float);
    let (values, indices) = probabilities.topk(k, -1, true, true);
    let values = Vec::<f64>::try_from(&values.to_kind(Kind::Double))?;
    let indices = Vec::<i64>::try_from(&indices)?;
    Ok(indices.iter().zip(values).map(|(&i, p)| (name(i), p)).collect())
}

/// Binds a config given as JSON.
pub(crate) fn bind(model: LoadedModel, plugins: &PluginSet, config: serde_json::Value) -> Result<IntervenableModel> {
    let config: crate::config::IntervenableConfig =
        serde_json::from_value(config).map_err(|e| VeneError::Config(e.to_string()))?;
    IntervenableModel::new(model, config, plugins, 0)
}

/// Each word's first token (the class targets of the probing studies); an empty word is refused by name.
pub fn first_tokens<'a>(tokenizer: &TextTokenizer, words: impl Iterator<Item = &'a str>) -> Result<Vec<i64>> {
    words
        .map(|word| {
            tokenizer
                .encode_plain(word)?
                .first()
                .copied()
                .ok_or_else(|| crate::error::VeneError::Inputs(format!("{word:?} is empty")))
        })
        .collect()
}
