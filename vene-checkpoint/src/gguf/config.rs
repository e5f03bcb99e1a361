//! A GGUF file's metadata as the Hugging Face `config.json` of the same model, so adapters read one config format.
//!
//! Where llama.cpp's converter dropped a field, the value is the one llama.cpp itself runs the model with (Gemma 3's
//! local rope base 10000 and every sixth layer global; Gemma 2/3 attention scaled by the key length), which is also
//! transformers' default for the released sizes.

use serde_json::{json, Map, Value};

use super::GgufFile;
use crate::Result;

/// llama.cpp architectures vene reads, and the Hugging Face `model_type` each stands for.
pub const ARCHITECTURES: [(&str, &str); 6] = [
    ("llama", "llama"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen3"),
    ("gemma", "gemma"),
    ("gemma2", "gemma2"),
    ("gemma3", "gemma3_text"),
];

/// The Hugging Face `model_type` of a GGUF file, or an error naming the architectures vene reads.
pub fn model_type(file: &GgufFile) -> Result<&'static str> {
    let architecture = file.architecture()?;
    ARCHITECTURES.iter().find(|(a, _)| *a == architecture).map(|(_, m)| *m).ok_or_else(|| {
        let known: Vec<&str> = ARCHITECTURES.iter().map(|(a, _)| *a).collect();
        super::invalid(
            file.path(),
            format!("has architecture '{architecture}', which vene does not run (it reads {})", known.join(", ")),
        )
    })
}

/// The `config.json` fields of the model in `file`.
pub fn hf_config(file: &GgufFile) -> Result<Value> {
    let model_type = model_type(file)?;
    let arch = file.architecture()?.to_string();
    let key = |name: &str| format!("{arch}.{name}");
    let required = |name: &str| -> Result<i64> {
        file.integer(&key(name))?.ok_or_else(|| super::invalid(file.path(), format!("has no metadata '{}'", key(name))))
    };
    let hidden = required("embedding_length")?;
    let heads = required("attention.head_count")?;
    let layers = required("block_count")?;
    if heads <= 0 || layers <= 0 || hidden <= 0 {
        return Err(super::invalid(file.path(), "declares a model with no layers, heads or width"));
    }
    let blocks = blocks_with_tensors(file);
    if layers > blocks {
        return Err(super::invalid(
            file.path(),
            format!("declares {} = {layers} but its tensors hold {blocks} blocks (blk.0 … blk.N)", key("block_count")),
        ));
    }
    let head_dim = match file.integer(&key("attention.key_length"))? {
        Some(length) => length,
        None => file.integer(&key("rope.dimension_count"))?.unwrap_or(hidden / heads),
    };
    let vocab = file
        .shape("token_embd.weight")
        .and_then(|s| s.first().copied())
        .ok_or_else(|| super::invalid(file.path(), "has no tensor 'token_embd.weight'"))?;
    let mut config = Map::new();
    let mut set = |name: &str, value: Value| {
        config.insert(name.to_string(), value);
    };
    set("model_type", json!(model_type));
    set("hidden_size", json!(hidden));
    set("intermediate_size", json!(required("feed_forward_length")?));
    set("num_hidden_layers", json!(layers));
    set("num_attention_heads", json!(heads));
    set("num_key_value_heads", json!(file.integer(&key("attention.head_count_kv"))?.unwrap_or(heads)));
    set("head_dim", json!(head_dim));
    set("vocab_size", json!(vocab));
    set("max_position_embeddings", json!(file.integer(&key("context_length"))?.unwrap_or(4096)));
    set("tie_word_embeddings", json!(!file.has_tensor("output.weight")));
    if let Some(eps) = file.float(&key("attention.layer_norm_rms_epsilon"))? {
        set("rms_norm_eps", json!(eps));
    }
    if let Some(theta) = file.float(&key("rope.freq_base"))? {
        set("rope_theta", json!(theta));
    }
    if let (Some("linear"), Some(factor)) =
        (file.string(&key("rope.scaling.type"))?, file.float(&key("rope.scaling.factor"))?)
    {
        set("rope_scaling", json!({"rope_type": "linear", "factor": factor}));
    }
    let window = file.integer(&key("attention.sliding_window"))?;
    set("sliding_window", json!(window));
    if model_type == "qwen2" || model_type == "qwen3" {
        set("use_sliding_window", json!(false));
    }
    if model_type == "qwen2" {
        set("attention_bias", json!(file.has_tensor("blk.0.attn_q.bias")));
    }
    if model_type.starts_with("gemma") {
        set("hidden_activation", json!("gelu_pytorch_tanh"));
        set("query_pre_attn_scalar", json!(head_dim));
    }
    if model_type == "gemma2" {
        set("attn_logit_softcapping", json!(file.float(&key("attn_logit_softcapping"))?));
        set("final_logit_softcapping", json!(file.float(&key("final_logit_softcapping"))?));
        set("layer_types", json!(alternating(layers, 2)));
    }
    if model_type == "gemma3_text" {
        set("rope_local_base_freq", json!(10000.0));
        set("layer_types", json!(alternating(layers, 6)));
    }
    Ok(Value::Object(config))
}

/// One more than the highest `N` in the file's `blk.N.*` tensor names: the blocks whose weights the file holds.
fn blocks_with_tensors(file: &GgufFile) -> i64 {
    file.tensor_names()
        .filter_map(|name| name.strip_prefix("blk.")?.split('.').next()?.parse::<i64>().ok())
        .map(|block| block + 1)
        .max()
        .unwrap_or(0)
}

/// Sliding-window layers with every `period`-th layer global, as Gemma 2 (2) and Gemma 3 (6) are built.
fn alternating(layers: i64, period: i64) -> Vec<&'static str> {
    (0..layers).map(|i| if (i + 1) % period == 0 { "full_attention" } else { "sliding_attention" }).collect()
}
