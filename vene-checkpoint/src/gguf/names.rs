//! llama.cpp's tensor names as Hugging Face's, with what llama.cpp's converter changed undone:
//! - `llama` (Llama, Mistral): q and k rows were permuted from rotate-half to interleaved rotary order; the inverse
//!   permutation is applied (as transformers' GGUF loader does).
//! - Gemma 1/2/3: every RMSNorm weight (q/k norms included) was stored as `1 + w`; 1 is subtracted.
//! - llama.cpp's `rope_freqs.weight` (Llama 3.1's rope scaling as per-frequency divisors) keeps its name.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::GgufFile;
use crate::{Result, Weights};

/// Every tensor of `file` dequantized to `kind` on `device`, under the Hugging Face name of a `model_type` model.
pub fn hf_weights(file: &GgufFile, model_type: &str, kind: Kind, device: Device) -> Result<Weights> {
    let gemma = model_type.starts_with("gemma");
    let post_norms = model_type == "gemma2" || model_type == "gemma3_text";
    let heads = integer(file, "attention.head_count")?;
    let kv_heads = integer(file, "attention.head_count_kv")?.or(heads);
    let mut tensors = HashMap::new();
    for name in file.tensor_names() {
        let mut tensor = file.dequantize(name, kind, device)?;
        let hf_name = hf_name(name, post_norms);
        if gemma && name.ends_with("norm.weight") {
            tensor -= 1.0;
        }
        if model_type == "llama" {
            if name.contains(".attn_q.") {
                tensor = unpermute_rotary(&tensor, heads.unwrap_or(1));
            } else if name.contains(".attn_k.") {
                tensor = unpermute_rotary(&tensor, kv_heads.unwrap_or(1));
            }
        }
        tensors.insert(hf_name, tensor);
    }
    Ok(Weights::from_tensors(file.path(), tensors))
}

fn integer(file: &GgufFile, name: &str) -> Result<Option<i64>> {
    let key = format!("{}.{name}", file.architecture()?);
    file.integer(&key)
}

/// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`; names with no counterpart are kept.
fn hf_name(name: &str, post_norms: bool) -> String {
    let globals = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, hf)) = globals.iter().find(|(g, _)| *g == name) {
        return hf.to_string();
    }
    let Some(rest) = name.strip_prefix("blk.") else { return name.to_string() };
    let Some((layer, rest)) = rest.split_once('.') else { return name.to_string() };
    let Some((part, suffix)) = rest.split_once('.') else { return name.to_string() };
    let module = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" if post_norms => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return name.to_string(),
    };
    format!("model.layers.{layer}.{module}.{suffix}")
}

/// Undoes llama.cpp's q/k permutation: rows of each head were reordered from `[first half, second half]` of the
/// rotary pairs to interleaved pairs.
fn unpermute_rotary(tensor: &Tensor, heads: i64) -> Tensor {
    let size = tensor.size();
    let rows = size[0];
    if heads <= 0 || rows % (2 * heads) != 0 {
        return tensor.shallow_clone();
    }
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&size[1..]);
    tensor.reshape(&split).transpose(1, 2).contiguous().reshape(&size)
}
