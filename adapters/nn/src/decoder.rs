//! The Llama-family decoder (transformers' `LlamaModel` and the models built like it: Mistral, Qwen 2/3, Gemma
//! 1/2/3) with eager attention and pyvene's hook sites. A [`DecoderSpec`] says which of the family's variations a
//! checkpoint uses; the model adapters turn each family's config into one.

use tch::{Kind, Tensor};
use vene_api::{ComponentInfo, Hooks, PluginResult, SiteLayout};
use vene_checkpoint::Weights;

use crate::{merge_heads, split_heads, split_input, Activation, Linear, Rotary, TokenBatch, TransformerSite as S};

/// Which layers attend to a sliding window of recent tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    Full,
    Sliding,
}

/// How the rotary frequencies are rescaled (transformers' `rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's per-frequency interpolation.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
    /// Per-frequency divisors as llama.cpp stores them (`rope_freqs.weight`).
    Divisors(Vec<f32>),
}

/// Everything that varies between the Llama-family checkpoints vene runs.
#[derive(Debug, Clone)]
pub struct DecoderSpec {
    pub model_type: String,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub head_dim: i64,
    pub vocab_size: i64,
    pub max_positions: i64,
    pub rms_norm_eps: f64,
    pub activation: Activation,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Gemma 3: the rope base of sliding-window layers (unscaled).
    pub local_rope_theta: Option<f64>,
    /// Per layer.
    pub layer_types: Vec<AttentionKind>,
    pub sliding_window: Option<i64>,
    /// Biases on q/k/v, and on the output projection.
    pub qkv_bias: bool,
    pub output_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm weights apply as `1 + w` (Gemma).
    pub offset_norms: bool,
    /// Embeddings multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    /// Per-head RMSNorm of q and k before rotary (Qwen 3, Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP, before each residual add (Gemma 2/3).
    pub post_norms: bool,
    /// Attention scores are multiplied by this (`head_dim^-0.5`, or `query_pre_attn_scalar^-0.5`).
    pub attention_scale: f64,
    pub attention_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    pub tie_word_embeddings: bool,
}

/// Root-mean-square normalisation over the last axis, computed in f32 as transformers does.
pub struct RmsNorm {
    /// The checkpoint's weight; for Gemma, `1 + w` in f32, computed once at load.
    gain: Tensor,
    eps: f64,
    offset: bool,
}

impl RmsNorm {
    pub fn load(weights: &mut Weights, name: &str, dim: i64, eps: f64, offset: bool) -> vene_checkpoint::Result<Self> {
        let weight = weights.take(&format!("{name}.weight"), &[dim])?;
        let gain = if offset { weight.to_kind(Kind::Float) + 1.0 } else { weight };
        Ok(Self { gain, eps, offset })
    }

    /// What multiplies `x` here per position and dimension (`gain / rms(x)`), to hold fixed: parts of `x` each
    /// scaled by it add up to the normalised `x`.
    pub fn frozen_scale(&self, x: &Tensor) -> Tensor {
        let (_, inverse_rms) = self.widened(x);
        (inverse_rms * &self.gain).to_kind(x.kind())
    }

    /// `x` in at least f32 (half precision is normalised in f32), and `1 / rms(x)` over the last axis.
    fn widened(&self, x: &Tensor) -> (Tensor, Tensor) {
        let wide = match x.kind() {
            Kind::Half | Kind::BFloat16 => x.to_kind(Kind::Float),
            _ => x.shallow_clone(),
        };
        let inverse_rms = (wide.square().mean_dim(-1, true, wide.kind()) + self.eps).rsqrt();
        (wide, inverse_rms)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (wide, inverse_rms) = self.widened(x);
        let normed = wide * inverse_rms;
        if self.offset {
            // Gemma: (x̂ · (1 + w)) in f32, then cast.
            (normed * &self.gain).to_kind(x.kind())
        } else {
            // Llama: w · cast(x̂).
            &self.gain * normed.to_kind(x.kind())
        }
    }
}

/// An attention layer's output, and with the `head_attention_output` site hooked each head's part of it apart.
struct AttentionResult {
    output: Tensor,
    per_head: Option<Tensor>,
}

struct Layer {
    input_norm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attention_norm: Option<RmsNorm>,
    mlp_norm: RmsNorm,
    post_mlp_norm: Option<RmsNorm>,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    kind: AttentionKind,
}

/// The loaded decoder: embeddings, layers, final norm and output head.
pub struct Decoder {
    pub spec: DecoderSpec,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor,
    global_rotary: Rotary,
    local_rotary: Rotary,
}

impl Decoder {
    /// Loads from weights named as transformers names them (`model.layers.0.self_attn.q_proj.weight`).
    pub fn load(
        weights: &mut Weights,
        spec: DecoderSpec,
        device: tch::Device,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let s = &spec;
        let (d, eps, offset) = (s.hidden_size, s.rms_norm_eps, s.offset_norms);
        let (q_width, kv_width) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let embed_tokens = weights.take("model.embed_tokens.weight", &[s.vocab_size, d])?;
        let mut layers = Vec::with_capacity(s.layers as usize);
        for (index, &kind) in s.layer_types.iter().enumerate() {
            let p = format!("model.layers.{index}");
            let norm = |w: &mut Weights, name: &str, dim| RmsNorm::load(w, &format!("{p}.{name}"), dim, eps, offset);
            let linear = |w: &mut Weights, name: &str, fan_in, fan_out, bias| {
                Linear::load(w, &format!("{p}.{name}"), fan_in, fan_out, bias)
            };
            let post_norms = s.post_norms;
            layers.push(Layer {
                input_norm: norm(weights, "input_layernorm", d)?,
                q_proj: linear(weights, "self_attn.q_proj", d, q_width, s.qkv_bias)?,
                k_proj: linear(weights, "self_attn.k_proj", d, kv_width, s.qkv_bias)?,
                v_proj: linear(weights, "self_attn.v_proj", d, kv_width, s.qkv_bias)?,
                o_proj: linear(weights, "self_attn.o_proj", q_width, d, s.output_bias)?,
                q_norm: s.qk_norm.then(|| norm(weights, "self_attn.q_norm", s.head_dim)).transpose()?,
                k_norm: s.qk_norm.then(|| norm(weights, "self_attn.k_norm", s.head_dim)).transpose()?,
                post_attention_norm: post_norms.then(|| norm(weights, "post_attention_layernorm", d)).transpose()?,
                mlp_norm: if post_norms {
                    norm(weights, "pre_feedforward_layernorm", d)?
                } else {
                    norm(weights, "post_attention_layernorm", d)?
                },
                post_mlp_norm: post_norms.then(|| norm(weights, "post_feedforward_layernorm", d)).transpose()?,
                gate_proj: linear(weights, "mlp.gate_proj", d, s.intermediate_size, s.mlp_bias)?,
                up_proj: linear(weights, "mlp.up_proj", d, s.intermediate_size, s.mlp_bias)?,
                down_proj: linear(weights, "mlp.down_proj", s.intermediate_size, d, s.mlp_bias)?,
                kind,
            });
        }
        let norm = RmsNorm::load(weights, "model.norm", d, eps, offset)?;
        let lm_head = match weights.take_optional("lm_head.weight", &[s.vocab_size, d])? {
            Some(head) if !s.tie_word_embeddings => head,
            _ => embed_tokens.shallow_clone(),
        };
        let global_rotary = rotary(s.head_dim, s.rope_theta, &s.rope_scaling, device);
        let local_rotary = match s.local_rope_theta {
            Some(theta) => rotary(s.head_dim, theta, &RopeScaling::None, device),
            None => rotary(s.head_dim, s.rope_theta, &s.rope_scaling, device),
        };
        Ok(Self { spec, embed_tokens, layers, norm, lm_head, global_rotary, local_rotary })
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    pub fn device(&self) -> tch::Device {
        self.embed_tokens.device()
    }

    fn attention(
        &self,
        layer: u32,
        weights: &Layer,
        (x, residual): (&Tensor, &Tensor),
        context: &PassContext<'_>,
        hooks: &mut Hooks<'_>,
        present: &mut Vec<Tensor>,
    ) -> PluginResult<AttentionResult> {
        let s = &self.spec;
        // Each of q, k and v from the heads' own copies of the residual stream when those are intervened on.
        let mut projected = |site: S, heads: i64, proj: &Linear| -> PluginResult<Tensor> {
            let norm = |t: &Tensor| weights.input_norm.forward(t);
            let split = split_input(hooks, (site as u32, layer), residual, heads, norm, |t| {
                proj.per_head_input(t, 0, s.head_dim)
            })?;
            Ok(split.map_or_else(|| proj.forward(x), |heads| merge_heads(&heads)))
        };
        let q = projected(S::HeadQueryInput, s.heads, &weights.q_proj)?;
        let k = projected(S::HeadKeyInput, s.kv_heads, &weights.k_proj)?;
        let v = projected(S::HeadValueInput, s.kv_heads, &weights.v_proj)?;
        let q = hooks.site(S::QueryOutput as u32, layer, q)?;
        let k = hooks.site(S::KeyOutput as u32, layer, k)?;
        let v = hooks.site(S::ValueOutput as u32, layer, v)?;
        let mut q = hooks.site(S::HeadQueryOutput as u32, layer, split_heads(&q, s.heads))?;
        let mut k = hooks.site(S::HeadKeyOutput as u32, layer, split_heads(&k, s.kv_heads))?;
        let mut v = hooks.site(S::HeadValueOutput as u32, layer, split_heads(&v, s.kv_heads))?;
        if let (Some(q_norm), Some(k_norm)) = (&weights.q_norm, &weights.k_norm) {
            q = q_norm.forward(&q);
            k = k_norm.forward(&k);
        }
        let rotary = if weights.kind == AttentionKind::Sliding { &self.local_rotary } else { &self.global_rotary };
        let q = hooks.site(S::HeadQueryRotated as u32, layer, rotary.apply(&q, context.positions))?;
        k = hooks.site(S::HeadKeyRotated as u32, layer, rotary.apply(&k, context.positions))?;
        if let Some((past_k, past_v)) = context.tokens.layer_past(layer as usize) {
            k = Tensor::cat(&[past_k, &k], 2);
            v = Tensor::cat(&[past_v, &v], 2);
        }
        let groups = s.heads / s.kv_heads;
        let (k_all, v_all) = if groups > 1 {
            (k.repeat_interleave_self_int(groups, 1, None), v.repeat_interleave_self_int(groups, 1, None))
        } else {
            (k.shallow_clone(), v.shallow_clone())
        };
        let mask = if weights.kind == AttentionKind::Sliding { context.sliding_mask } else { context.full_mask };
        let probabilities = self.attention_probabilities(&q, &k_all, mask);
        let probabilities = hooks.site(S::AttentionWeight as u32, layer, probabilities)?;
        let heads_out = hooks.site(S::HeadAttentionValueOutput as u32, layer, probabilities.matmul(&v_all))?;
        let merged = hooks.site(S::AttentionValueOutput as u32, layer, merge_heads(&heads_out))?;
        present.push(k);
        present.push(v);
        let per_head =
            hooks.is_active(S::HeadAttentionOutput as u32, layer).then(|| weights.o_proj.per_head(&heads_out));
        Ok(AttentionResult { output: weights.o_proj.forward(&merged), per_head })
    }

    /// Softmax of the scaled (and, for Gemma 2, soft-capped) scores, normalised in f32 for half precision.
    fn attention_probabilities(&self, q: &Tensor, k: &Tensor, mask: &Tensor) -> Tensor {
        let mut scores = q.matmul(&k.transpose(-1, -2)) * self.spec.attention_scale;
        if let Some(cap) = self.spec.attention_softcap {
            scores = (scores / cap).tanh() * cap;
        }
        let softmax_kind = match q.kind() {
            Kind::Half | Kind::BFloat16 => Kind::Float,
            other => other,
        };
        (scores + mask).softmax(-1, softmax_kind).to_kind(q.kind())
    }

    fn mlp(&self, layer: u32, weights: &Layer, x: &Tensor, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let mlp_in = hooks.site(S::MlpInput as u32, layer, weights.mlp_norm.forward(x))?;
        let act = self.spec.activation.forward(&weights.gate_proj.forward(&mlp_in));
        let act = hooks.site(S::MlpActivation as u32, layer, act)?;
        let hidden = act * weights.up_proj.forward(&mlp_in);
        hooks.site(S::MlpOutput as u32, layer, weights.down_proj.forward(&hidden))
    }

    /// The last hidden state (before the final norm) and the key/value cache.
    pub fn forward(&self, tokens: &TokenBatch, hooks: &mut Hooks<'_>) -> PluginResult<(Tensor, Vec<Tensor>)> {
        let mut h = Tensor::embedding(&self.embed_tokens, &tokens.ids, -1, false, false);
        if self.spec.scale_embeddings {
            let scale =
                Tensor::from((self.spec.hidden_size as f64).sqrt() as f32).to_kind(h.kind()).to_device(h.device());
            h *= scale;
        }
        let positions = tokens.positions();
        let full_mask = decoder_mask(tokens, None, &h);
        let sliding_mask = match self.spec.sliding_window {
            Some(window) if self.layers.iter().any(|l| l.kind == AttentionKind::Sliding) => {
                decoder_mask(tokens, Some(window), &h)
            }
            _ => full_mask.shallow_clone(),
        };
        let context = PassContext { tokens, positions: &positions, full_mask: &full_mask, sliding_mask: &sliding_mask };
        let mut present = Vec::with_capacity(2 * self.layers.len());
        for (index, weights) in self.layers.iter().enumerate() {
            let layer = index as u32;
            h = hooks.site(S::BlockInput as u32, layer, h)?;
            let attn_in = hooks.site(S::AttentionInput as u32, layer, weights.input_norm.forward(&h))?;
            let attention = self.attention(layer, weights, (&attn_in, &h), &context, hooks, &mut present)?;
            let attn_out = hooks.site(S::AttentionOutput as u32, layer, attention.output)?;
            let mut write = attn_out.shallow_clone();
            if let Some(norm) = &weights.post_attention_norm {
                write = hooks.site(S::AttentionPostNormOutput as u32, layer, norm.forward(&attn_out))?;
            }
            if let Some(shares) = attention.per_head {
                // Gemma 2/3: each head's share of the normalised write, the norm's scale taken from the whole output.
                let shares = match &weights.post_attention_norm {
                    Some(norm) => shares * norm.frozen_scale(&attn_out).unsqueeze(1),
                    None => shares,
                };
                write = crate::head_writes(hooks, S::HeadAttentionOutput as u32, layer, shares, write)?;
            }
            let mid = &h + write;
            let mut mlp_out = self.mlp(layer, weights, &mid, hooks)?;
            if let Some(norm) = &weights.post_mlp_norm {
                mlp_out = hooks.site(S::MlpPostNormOutput as u32, layer, norm.forward(&mlp_out))?;
            }
            h = hooks.site(S::BlockOutput as u32, layer, mid + mlp_out)?;
        }
        Ok((h, present))
    }

    /// Logits of hidden states `(b, s, d)` (already read at the output positions).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let logits = self.norm.forward(hidden).matmul(&self.lm_head.tr());
        match self.spec.final_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// The catalog entries, in [`TransformerSite`](crate::TransformerSite) order, with the true per-site dimensions.
    pub fn components(&self) -> Vec<ComponentInfo> {
        components(&self.spec)
    }
}

struct PassContext<'a> {
    tokens: &'a TokenBatch,
    positions: &'a Tensor,
    full_mask: &'a Tensor,
    sliding_mask: &'a Tensor,
}

fn rotary(head_dim: i64, theta: f64, scaling: &RopeScaling, device: tch::Device) -> Rotary {
    let plain = Rotary::new(head_dim, theta, device);
    let inv_freq = plain.inv_freq();
    let scaled = match scaling {
        RopeScaling::None => return plain,
        RopeScaling::Linear { factor } => inv_freq / *factor,
        RopeScaling::Divisors(divisors) => inv_freq / Tensor::from_slice(divisors).to_device(device),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
            let wavelength = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            let low_freq_wavelength = original_max_positions / low_freq_factor;
            let high_freq_wavelength = original_max_positions / high_freq_factor;
            let long = wavelength.gt(low_freq_wavelength);
            let divided = (&inv_freq / *factor).where_self(&long, &inv_freq);
            let smooth = (wavelength.reciprocal() * *original_max_positions - *low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed = (smooth.ones_like() - &smooth) * &divided / *factor + &smooth * &divided;
            let medium = wavelength.lt(high_freq_wavelength).logical_not().logical_and(&long.logical_not());
            smoothed.where_self(&medium, &divided)
        }
    };
    Rotary::from_inv_freq(scaled)
}

/// The additive mask of one pass: causal, limited to the last `window` positions for sliding-window layers,
/// and padding from the attention mask.
fn decoder_mask(tokens: &TokenBatch, window: Option<i64>, like: &Tensor) -> Tensor {
    let mask = crate::additive_causal_mask(tokens.seq, tokens.past_len, tokens.attention_mask.as_ref(), like);
    let Some(window) = window else { return mask };
    let total = tokens.past_len + tokens.seq;
    let recent = Tensor::ones([tokens.seq, total], (Kind::Bool, like.device())).triu(tokens.past_len - window + 1);
    mask.masked_fill(&recent.logical_not().view([1, 1, tokens.seq, total]), crate::lowest_value(like.kind()))
}

/// The catalog of a decoder with `spec`.
pub fn components(spec: &DecoderSpec) -> Vec<ComponentInfo> {
    let d = spec.hidden_size as u32;
    let head_dim = spec.head_dim as u32;
    let q_width = (spec.heads * spec.head_dim) as u32;
    let kv_width = (spec.kv_heads * spec.head_dim) as u32;
    let layers = spec.layers as u32;
    let component = |name: &str, layout, dim, skip_input: Option<&str>, paths: &[&str]| {
        crate::component(name, layout, dim, layers, skip_input, paths)
    };
    // Llama's MLP-input norm is `post_attention_layernorm`; Gemma 2/3 call it `pre_feedforward_layernorm`.
    let mlp_norm = if spec.post_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
    let mlp_norm_path = format!("layers[{{layer}}].{mlp_norm}.output");
    use SiteLayout::{AttentionWeights, Heads, Sequence};
    let mut list = vec![
        component("block_input", Sequence, d, None, &["layers[{layer}].input"]),
        component("block_output", Sequence, d, Some("block_input"), &["layers[{layer}].output"]),
        component("mlp_input", Sequence, d, None, &["layers[{layer}].mlp.input", mlp_norm_path.as_str()]),
        component(
            "mlp_output",
            Sequence,
            d,
            Some("mlp_input"),
            &["layers[{layer}].mlp.output", "layers[{layer}].mlp.down_proj.output"],
        ),
        component(
            "mlp_activation",
            Sequence,
            spec.intermediate_size as u32,
            None,
            &["layers[{layer}].mlp.act_fn.output"],
        ),
        component(
            "attention_input",
            Sequence,
            d,
            None,
            &["layers[{layer}].self_attn.input", "layers[{layer}].input_layernorm.output"],
        ),
        component(
            "attention_output",
            Sequence,
            d,
            Some("attention_input"),
            &["layers[{layer}].self_attn.output", "layers[{layer}].self_attn.o_proj.output"],
        ),
        component("attention_value_output", Sequence, q_width, None, &["layers[{layer}].self_attn.o_proj.input"]),
        component("head_attention_value_output", Heads, head_dim, None, &[]),
        component("attention_weight", AttentionWeights, spec.max_positions as u32, None, &[]),
        component("query_output", Sequence, q_width, None, &["layers[{layer}].self_attn.q_proj.output"]),
        component("key_output", Sequence, kv_width, None, &["layers[{layer}].self_attn.k_proj.output"]),
        component("value_output", Sequence, kv_width, None, &["layers[{layer}].self_attn.v_proj.output"]),
        component("head_query_output", Heads, head_dim, None, &[]),
        component("head_key_output", Heads, head_dim, None, &[]),
        component("head_value_output", Heads, head_dim, None, &[]),
        component("head_query_rotated", Heads, head_dim, None, &[]),
        component("head_key_rotated", Heads, head_dim, None, &[]),
        component("head_attention_output", Heads, d, None, &[]),
        component("head_query_input", Heads, d, None, &[]),
        component("head_key_input", Heads, d, None, &[]),
        component("head_value_input", Heads, d, None, &[]),
    ];
    if spec.post_norms {
        list.push(component(
            "attention_post_norm_output",
            Sequence,
            d,
            None,
            &["layers[{layer}].post_attention_layernorm.output"],
        ));
        list.push(component(
            "mlp_post_norm_output",
            Sequence,
            d,
            None,
            &["layers[{layer}].post_feedforward_layernorm.output"],
        ));
    }
    list
}
