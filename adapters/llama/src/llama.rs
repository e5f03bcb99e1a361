//! Llama 2/3 and Mistral: the plain decoder. Llama 3.1 scales its rope with `rope_scaling` of type `llama3`;
//! Mistral attends to a sliding window on every layer when `sliding_window` is set.

use vene_nn::decoder::{AttentionKind, DecoderSpec};

use crate::config::{ConfigResult, Defaults, RawConfig};

const DEFAULTS: Defaults = Defaults {
    head_dim: None,
    rope_theta: 10000.0,
    tie_word_embeddings: false,
    activation: "silu",
    activation_field: "hidden_act",
};

pub fn spec(raw: &RawConfig, model_type: &str) -> ConfigResult<DecoderSpec> {
    let mut spec = raw.common(model_type, &DEFAULTS)?;
    if model_type == "mistral" {
        // MistralConfig's default window is 4096; an explicit null turns it off.
        let window = if raw.has("sliding_window") { raw.int("sliding_window")? } else { Some(4096) };
        if let Some(window) = window {
            spec.sliding_window = Some(window);
            spec.layer_types = vec![AttentionKind::Sliding; spec.layers as usize];
        }
    }
    Ok(spec)
}
