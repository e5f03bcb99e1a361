//! vene model adapter for the Llama family: Llama 2/3, Mistral, Qwen 2/3 and Gemma 1/2/3 (text), from a Hugging Face
//! directory or a llama.cpp GGUF file.
//!
//! Each family's config becomes a [`vene_nn::decoder::DecoderSpec`] in its own module; the decoder body is shared.
//! A GGUF's metadata is read as the config it stands for and its tensors are dequantized under transformers' names
//! ([`vene_checkpoint::gguf`]), so both sources load through the same code.

mod config;
mod gemma;
mod llama;
mod qwen;

use std::path::Path;

use tch::{Device, Kind};
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult,
};
use vene_checkpoint::{gguf, Weights};
use vene_nn::{
    decoder::{Decoder, DecoderSpec, RopeScaling},
    TokenBatch,
};

use crate::config::RawConfig;

vene_api::export_plugin! {
    adapters: [LlamaAdapter],
    interventions: [],
}

/// The `model_type`s this adapter loads (`gemma3` is the multimodal config; its text model is loaded).
pub const MODEL_TYPES: [&str; 8] = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3"];

/// Loads Llama-family checkpoints.
pub struct LlamaAdapter;

impl ModelAdapter for LlamaAdapter {
    fn model_types(&self) -> Vec<String> {
        MODEL_TYPES.iter().map(|t| t.to_string()).collect()
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let path = Path::new(request.dir.as_str());
        let (device, kind) = (request.device.to_device(), request.dtype.to_kind());
        let loaded = if gguf::is_gguf(path) { from_gguf(path, kind, device) } else { from_dir(path, kind, device) };
        let (spec, mut weights) = loaded.map_err(PluginError::load)?;
        let decoder = Decoder::load(&mut weights, spec, device).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(LlamaFamily::new(decoder)))
    }
}

/// The spec of a `model_type` model from its config.
fn family_spec(raw: &RawConfig, model_type: &str) -> Result<DecoderSpec, String> {
    match model_type {
        "llama" | "mistral" => llama::spec(raw, model_type),
        "qwen2" | "qwen3" => qwen::spec(raw, model_type),
        "gemma" | "gemma2" | "gemma3_text" => gemma::spec(raw, model_type),
        other => Err(format!("model_type '{other}' is not one of {}", MODEL_TYPES.join(", "))),
    }
}

fn from_dir(dir: &Path, kind: Kind, device: Device) -> Result<(DecoderSpec, Weights), String> {
    let value: serde_json::Value = vene_checkpoint::read_config(dir).map_err(|e| e.to_string())?;
    let mut raw = RawConfig::new(value)?;
    let mut model_type = raw.string("model_type")?.unwrap_or_default().to_string();
    if model_type == "gemma3" {
        raw = raw.text_config().ok_or("a gemma3 config needs a 'text_config' object")?;
        model_type = "gemma3_text".to_string();
    }
    let spec = family_spec(&raw, &model_type).map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
    let mut weights = Weights::load(dir, device, kind).map_err(|e| e.to_string())?;
    // A multimodal Gemma 3 keeps its text model under `model.language_model.` (or `language_model.` before
    // transformers 4.52).
    weights.rename_prefixes(&[("model.language_model.", "model."), ("language_model.", "")]);
    Ok((spec, weights))
}

fn from_gguf(path: &Path, kind: Kind, device: Device) -> Result<(DecoderSpec, Weights), String> {
    let file = gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    let model_type = gguf::model_type(&file).map_err(|e| e.to_string())?;
    let raw = RawConfig::new(gguf::hf_config(&file).map_err(|e| e.to_string())?)?;
    let mut spec = family_spec(&raw, model_type).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut weights = gguf::hf_weights(&file, model_type, kind, device).map_err(|e| e.to_string())?;
    if let Some(divisors) =
        weights.take_optional("rope_freqs.weight", &[spec.head_dim / 2]).map_err(|e| e.to_string())?
    {
        spec.rope_scaling =
            RopeScaling::Divisors(Vec::<f32>::try_from(divisors.to_kind(Kind::Float)).map_err(|e| e.to_string())?);
    }
    Ok((spec, weights))
}

/// A loaded Llama-family language model.
pub struct LlamaFamily {
    decoder: Decoder,
    catalog: ModelCatalog,
}

impl LlamaFamily {
    fn new(decoder: Decoder) -> Self {
        let spec = &decoder.spec;
        let catalog = ModelCatalog {
            model_type: spec.model_type.clone().into(),
            num_layers: spec.layers as u32,
            num_heads: spec.heads as u32,
            hidden_size: spec.hidden_size as u32,
            vocab_size: spec.vocab_size as u32,
            max_positions: spec.max_positions as u32,
            input: InputKind::TokenIds,
            components: decoder.components().into(),
        };
        Self { decoder, catalog }
    }
}

impl Model for LlamaFamily {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let spec = &self.decoder.spec;
        let tokens = TokenBatch::from_inputs(
            inputs,
            spec.vocab_size,
            spec.max_positions,
            self.decoder.layers(),
            self.decoder.device(),
        )?;
        hooks.set_position_offset(tokens.past_len as u32);
        let (hidden, mut present) = self.decoder.forward(&tokens, hooks)?;
        if !inputs.use_cache {
            present.clear();
        }
        let read = vene_nn::at_output_positions(&hidden, inputs)?;
        Ok(ModelOutput { output: self.decoder.logits(&read), present })
    }
}
