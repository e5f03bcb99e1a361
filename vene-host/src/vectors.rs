//! Steering vectors for the `steering` intervention: a token's input embedding, or the difference of mean
//! activations at the last token between two prompt sets.

use serde_json::json;
use tch::{Kind, Tensor};

use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// Checkpoint names of input embedding matrices across model families.
const EMBEDDING_NAMES: [&str; 4] = ["wte.weight", "embed_in.weight", "embed_tokens.weight", "word_embeddings.weight"];

/// The model's input embedding matrix `(vocab, hidden)` in f32 on the CPU, read from its checkpoint: a GGUF's
/// `token_embd`, or the Hugging Face weight whose name ends in one of [`EMBEDDING_NAMES`].
pub fn input_embedding(model: &LoadedModel) -> Result<Tensor> {
    let path = model.dir();
    if vene_checkpoint::gguf::is_gguf(path) {
        let file = vene_checkpoint::gguf::GgufFile::open(path)?;
        return Ok(file.dequantize("token_embd.weight", Kind::Float, tch::Device::Cpu)?);
    }
    let mut weights = vene_checkpoint::Weights::load(path, tch::Device::Cpu, Kind::Float)?;
    let name = weights
        .names()
        .find(|name| EMBEDDING_NAMES.iter().any(|suffix| name.ends_with(suffix)))
        .map(str::to_string)
        .ok_or_else(|| {
            VeneError::Config(format!(
                "{} has no input embedding (looked for names ending in {})",
                path.display(),
                EMBEDDING_NAMES.join(", ")
            ))
        })?;
    Ok(weights.take_any(&name)?)
}

/// The mean input embedding of the tokens of `text` (without the BOS a tokenizer adds to whole texts).
pub fn token_embedding(model: &LoadedModel, tokenizer: &TextTokenizer, text: &str) -> Result<Tensor> {
    Ok(token_embeddings(model, tokenizer, &[text.to_string()])?.remove(0))
}

/// [`token_embedding`] of each of `texts`, reading the embedding matrix once.
pub fn token_embeddings(model: &LoadedModel, tokenizer: &TextTokenizer, texts: &[String]) -> Result<Vec<Tensor>> {
    let matrix = input_embedding(model)?;
    let vocab = matrix.size()[0];
    texts
        .iter()
        .map(|text| {
            let ids = tokenizer.encode_plain(text)?;
            if ids.is_empty() {
                return Err(VeneError::Inputs(format!("{text:?} tokenizes to nothing")));
            }
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab) {
                return Err(VeneError::Inputs(format!(
                    "token id {bad} of {text:?} is outside the embedding's {vocab} rows"
                )));
            }
            Ok(matrix.index_select(0, &Tensor::from_slice(&ids)).mean_dim(0, false, Kind::Float))
        })
        .collect()
}

/// Mean activation of `component` at `layer` over the last token of each prompt.
fn mean_activation(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    prompts: &[String],
    layer: u32,
    component: &str,
) -> Result<(Tensor, LoadedModel)> {
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
        {"layer": layer, "component": component, "intervention": {"type": "collect"}}]}))
    .map_err(|e| VeneError::Config(e.to_string()))?;
    let mut collector = IntervenableModel::new(model, config, plugins, 0)?;
    let (ids, mask) = tokenizer.encode_batch(prompts)?;
    let last: Vec<i64> = Vec::<i64>::try_from(&(mask.sum_dim_intlist(-1, false, Kind::Int64) - 1))?;
    let locations = UnitLocations::parse(Some(&json!({"base": [last.iter().map(|&p| vec![p]).collect::<Vec<_>>()]})))?;
    let mut inputs = ForwardInputs::from_ids(ids.to_device(collector.model().device()));
    inputs.attention_mask = Some(mask.to_device(collector.model().device()));
    let _no_grad = tch::no_grad_guard();
    let collected = collector.run(&inputs, &[], &locations, &Subspaces::None)?.collected;
    let mean = collected[0].to_kind(Kind::Float).mean_dim(&[0i64, 1][..], false, Kind::Float);
    Ok((mean, collector.into_model()))
}

/// `mean(positive) − mean(negative)` of `component` at `layer`, at each prompt's last token.
pub fn mean_difference(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    positive: &[String],
    negative: &[String],
    layer: u32,
    component: &str,
) -> Result<Tensor> {
    if positive.is_empty() || negative.is_empty() {
        return Err(VeneError::Inputs("both prompt sets need at least one prompt".to_string()));
    }
    let (positive_mean, model) = mean_activation(model, plugins, tokenizer, positive, layer, component)?;
    let (negative_mean, _) = mean_activation(model, plugins, tokenizer, negative, layer, component)?;
    Ok(positive_mean - negative_mean)
}
