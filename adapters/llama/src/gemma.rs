//! Gemma 1/2/3: embeddings scaled by √hidden, RMSNorm weights applied as `1 + w`, GeGLU.
//! Gemma 2 adds norms after attention and after the MLP, soft-capped attention scores and logits,
//! `query_pre_attn_scalar` and alternating sliding-window layers; Gemma 3 adds per-head q/k norms, a local rope base
//! for its sliding-window layers and one global layer in six.

use vene_nn::decoder::{AttentionKind, DecoderSpec};

use crate::config::{ConfigResult, Defaults, RawConfig};

pub fn spec(raw: &RawConfig, model_type: &str) -> ConfigResult<DecoderSpec> {
    let gemma3 = model_type == "gemma3_text";
    let defaults = Defaults {
        head_dim: Some(256),
        rope_theta: if gemma3 { 1_000_000.0 } else { 10000.0 },
        tie_word_embeddings: true,
        activation: "gelu_pytorch_tanh",
        activation_field: if model_type == "gemma" { "hidden_act" } else { "hidden_activation" },
    };
    let mut spec = raw.common(model_type, &defaults)?;
    spec.offset_norms = true;
    spec.scale_embeddings = true;
    if model_type == "gemma" {
        return Ok(spec);
    }
    spec.post_norms = true;
    spec.attention_scale = raw.float("query_pre_attn_scalar")?.unwrap_or(256.0).powf(-0.5);
    spec.sliding_window = Some(raw.int("sliding_window")?.unwrap_or(4096));
    // An absent soft cap takes the family default; an explicit null turns it off.
    let cap = |name: &str, default: Option<f64>| -> ConfigResult<Option<f64>> {
        Ok(raw.float_or_null(name)?.unwrap_or(default))
    };
    if gemma3 {
        spec.qk_norm = true;
        spec.local_rope_theta = Some(raw.float("rope_local_base_freq")?.unwrap_or(10000.0));
        spec.attention_softcap = cap("attn_logit_softcapping", None)?;
        spec.final_softcap = cap("final_logit_softcapping", None)?;
        let period = raw.int("sliding_window_pattern")?.unwrap_or(6).max(1);
        spec.layer_types = raw.layer_types(spec.layers, |i| alternate(i, period))?;
    } else {
        spec.attention_softcap = cap("attn_logit_softcapping", Some(50.0))?;
        spec.final_softcap = cap("final_logit_softcapping", Some(30.0))?;
        spec.layer_types = raw.layer_types(spec.layers, |i| alternate(i, 2))?;
    }
    Ok(spec)
}

/// Every `period`-th layer global, the others sliding.
fn alternate(layer: i64, period: i64) -> AttentionKind {
    if (layer + 1) % period == 0 {
        AttentionKind::Full
    } else {
        AttentionKind::Sliding
    }
}
