//! Qwen 2 (biases on q/k/v, none on the output projection) and Qwen 3 (per-head RMSNorm of q and k, head_dim
//! 128 by default). Both may use a sliding window on the layers from `max_window_layers` on.

use vene_nn::decoder::{AttentionKind, DecoderSpec};

use crate::config::{ConfigResult, Defaults, RawConfig};

pub fn spec(raw: &RawConfig, model_type: &str) -> ConfigResult<DecoderSpec> {
    let qwen3 = model_type == "qwen3";
    let defaults = Defaults {
        head_dim: qwen3.then_some(128),
        rope_theta: 10000.0,
        tie_word_embeddings: false,
        activation: "silu",
        activation_field: "hidden_act",
    };
    let mut spec = raw.common(model_type, &defaults)?;
    if qwen3 {
        spec.qk_norm = true;
    } else {
        spec.qkv_bias = true;
        spec.output_bias = false;
    }
    let use_window = raw.bool("use_sliding_window")?.unwrap_or(false);
    let window = if use_window { raw.int("sliding_window")?.or(Some(4096)) } else { None };
    let from_layer = raw.int("max_window_layers")?.unwrap_or(28);
    let fallback = |layer| match window {
        Some(_) if layer >= from_layer => AttentionKind::Sliding,
        _ => AttentionKind::Full,
    };
    spec.layer_types = raw.layer_types(spec.layers, fallback)?;
    if window.is_none() {
        // transformers only builds a sliding mask when the window is on.
        spec.layer_types = vec![AttentionKind::Full; spec.layers as usize];
    }
    spec.sliding_window = window;
    Ok(spec)
}
