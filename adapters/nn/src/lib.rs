//! Building blocks and model bodies shared by vene's model adapters. Every operation is out of place: tensors handed to hook sites
//! may be held by the host, so nothing here writes into its inputs.

pub mod backpack;
pub mod conv;
pub mod decoder;
pub mod gpt2;
pub mod gru;
pub mod lstm;
pub mod resnet;

use tch::{Kind, Tensor};
use vene_api::{model::Hooks, ModelInputs, PluginError, PluginResult};
use vene_checkpoint::{Result, Weights};

/// The hook sites of the transformers (GPT-2, GPT-NeoX, the Llama family), in catalog order: pyvene's components,
/// q/k/v and per-head q/k/v, the per-head query and key as the attention scores read them (after any q/k norm and
/// rotary embedding; GPT-2 and the Llama family), then Gemma 2/3's post-norm outputs (listed only by models that
/// have them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum TransformerSite {
    BlockInput,
    BlockOutput,
    MlpInput,
    MlpOutput,
    MlpActivation,
    AttentionInput,
    AttentionOutput,
    AttentionValueOutput,
    HeadAttentionValueOutput,
    AttentionWeight,
    QueryOutput,
    KeyOutput,
    ValueOutput,
    HeadQueryOutput,
    HeadKeyOutput,
    HeadValueOutput,
    HeadQueryRotated,
    HeadKeyRotated,
    /// What each head writes into the residual stream, `(b, heads, s, d)`: see [`head_writes`].
    HeadAttentionOutput,
    /// The residual stream as each head's query (key, value) reads it, before the attention's input norm:
    /// `(b, heads, s, d)`, one copy per head (see [`split_input`]).
    HeadQueryInput,
    HeadKeyInput,
    HeadValueInput,
    AttentionPostNormOutput,
    MlpPostNormOutput,
}

/// A dense layer. The weight is kept as the checkpoint stores it: `(out, in)` for torch's `nn.Linear`, `(in, out)`
/// for transformers' `Conv1D`; keeping the stored tensor itself lets the weights be trained in place.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `Conv1D` layout: `x @ weight + bias`.
    transposed: bool,
}

impl Linear {
    /// `prefix.weight` `(out, in)` and, with `bias`, `prefix.bias` `(out)`.
    pub fn load(weights: &mut Weights, prefix: &str, fan_in: i64, fan_out: i64, bias: bool) -> Result<Self> {
        let weight = weights.take(&format!("{prefix}.weight"), &[fan_out, fan_in])?;
        let bias = if bias { Some(weights.take(&format!("{prefix}.bias"), &[fan_out])?) } else { None };
        Ok(Self { weight, bias, transposed: false })
    }

    /// transformers' `Conv1D` (GPT-2), whose weight is stored `(in, out)`.
    pub fn load_conv1d(weights: &mut Weights, prefix: &str, fan_in: i64, fan_out: i64) -> Result<Self> {
        let weight = weights.take(&format!("{prefix}.weight"), &[fan_in, fan_out])?;
        let bias = Some(weights.take(&format!("{prefix}.bias"), &[fan_out])?);
        Ok(Self { weight, bias, transposed: true })
    }

    /// A torch-layout layer from its tensors.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias, transposed: false }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.transposed {
            let y = x.matmul(&self.weight);
            match &self.bias {
                Some(bias) => y + bias,
                None => y,
            }
        } else {
            x.linear(&self.weight, self.bias.as_ref())
        }
    }

    /// `x` `(b, heads, s, head_dim)` through each head's block of this output projection's input columns, apart:
    /// `(b, heads, s, out)` without the bias. Their sum over heads, plus the bias, is `forward` of the merged heads.
    pub fn per_head(&self, x: &Tensor) -> Tensor {
        let (heads, head_dim) = (x.size()[1], x.size()[3]);
        x.matmul(&self.in_out().reshape([heads, head_dim, -1]).unsqueeze(0))
    }

    /// `x` `(b, heads, s, in)`, each head's own input, through that head's block of `head_dim` output features
    /// counted from `offset`: `(b, heads, s, head_dim)`, with the bias.
    pub fn per_head_input(&self, x: &Tensor, offset: i64, head_dim: i64) -> Tensor {
        let heads = x.size()[1];
        let blocks =
            self.in_out().narrow(1, offset, heads * head_dim).reshape([-1, heads, head_dim]).permute([1, 0, 2]);
        let y = x.matmul(&blocks.unsqueeze(0));
        match &self.bias {
            Some(bias) => y + bias.narrow(0, offset, heads * head_dim).view([heads, 1, head_dim]),
            None => y,
        }
    }

    /// The weight as `(in, out)`, whichever way it is stored.
    fn in_out(&self) -> Tensor {
        if self.transposed {
            self.weight.shallow_clone()
        } else {
            self.weight.tr()
        }
    }

    /// The weight as stored (`(out, in)`, or `(in, out)` for `Conv1D`).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

/// Layer normalisation over the last axis.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    epsilon: f64,
}

impl LayerNorm {
    pub fn load(weights: &mut Weights, prefix: &str, dim: i64, epsilon: f64) -> Result<Self> {
        Ok(Self {
            weight: weights.take(&format!("{prefix}.weight"), &[dim])?,
            bias: weights.take(&format!("{prefix}.bias"), &[dim])?,
            epsilon,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.weight.size()[0]], Some(&self.weight), Some(&self.bias), self.epsilon, false)
    }
}

/// An activation function by its transformers name (`hidden_act` / `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Gelu,
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "linear" | "identity" => Activation::Linear,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "linear, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu";

    pub fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Linear => x.shallow_clone(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// `hidden` `(batch, seq, d)` at `inputs.output_positions` as `(batch, 1, d)`, or all of it when none are given.
pub fn at_output_positions(hidden: &Tensor, inputs: &ModelInputs<'_>) -> PluginResult<Tensor> {
    let Some(positions) = inputs.output_positions.as_ref().into_option() else {
        return Ok(hidden.shallow_clone());
    };
    let positions = positions.to_tensor();
    let (batch, seq, width) = hidden.size3().map_err(|e| PluginError::invalid_input(e.to_string()))?;
    if positions.size() != [batch] || positions.kind() != tch::Kind::Int64 {
        return Err(PluginError::invalid_input(format!(
            "output positions must be {batch} int64 values (one per example), got {:?} {:?}",
            positions.kind(),
            positions.size()
        )));
    }
    let (low, high) = (positions.min().int64_value(&[]), positions.max().int64_value(&[]));
    if low < 0 || high >= seq {
        return Err(PluginError::invalid_input(format!(
            "output positions run from {low} to {high}, outside the {seq} positions of this pass"
        )));
    }
    let index = positions.to_device(hidden.device()).view([batch, 1, 1]).expand([batch, 1, width], false);
    Ok(hidden.gather(1, &index, false))
}

/// `(b, s, h·d)` → `(b, h, s, d)`.
pub fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let size = x.size();
    x.view([size[0], size[1], heads, -1]).permute([0, 2, 1, 3])
}

/// `(b, h, s, d)` → `(b, s, h·d)`.
pub fn merge_heads(x: &Tensor) -> Tensor {
    let size = x.size();
    x.permute([0, 2, 1, 3]).contiguous().view([size[0], size[2], -1])
}

/// The `head_attention_output` site (`component`): `shares` `(b, heads, s, d)`, what each head writes into the
/// residual stream, offered to the hooks; the attention's residual `write` is rebuilt from what they hand back when
/// an intervention changed it, keeping the part no head owns (`write − Σ shares`: the output projection's bias).
pub fn head_writes(
    hooks: &mut Hooks<'_>,
    component: u32,
    layer: u32,
    shares: Tensor,
    write: Tensor,
) -> PluginResult<Tensor> {
    let after = hooks.site(component, layer, shares.shallow_clone())?;
    if untouched(&after, &shares) {
        return Ok(write);
    }
    let kind = write.kind();
    Ok(write - shares.sum_dim_intlist(1, false, kind) + after.sum_dim_intlist(1, false, kind))
}

/// A split-input site (`component`: `head_query_input`, …): the `residual` stream `(b, s, d)` offered to the hooks as
/// one copy per head `(b, heads, s, d)`. When an intervention changed the copies, each head's projection is computed
/// from its own: `project(norm(copies))`, `(b, heads, s, head_dim)`; `None` when the site is not hooked or the
/// copies came back untouched (the usual computation then stands, bit for bit).
pub fn split_input(
    hooks: &mut Hooks<'_>,
    (component, layer): (u32, u32),
    residual: &Tensor,
    heads: i64,
    norm: impl Fn(&Tensor) -> Tensor,
    project: impl Fn(&Tensor) -> Tensor,
) -> PluginResult<Option<Tensor>> {
    if !hooks.is_active(component, layer) {
        return Ok(None);
    }
    let size = residual.size();
    let copies = residual.unsqueeze(1).expand([size[0], heads, size[1], size[2]], false);
    let after = hooks.site(component, layer, copies.shallow_clone())?;
    if untouched(&after, &copies) {
        return Ok(None);
    }
    Ok(Some(project(&norm(&after))))
}

/// Whether a site handed back the very tensor it was given (no intervention changed it), so the usual computation
/// can stand bit for bit.
fn untouched(after: &Tensor, given: &Tensor) -> bool {
    after.data_ptr() == given.data_ptr() && after.size() == given.size() && after.stride() == given.stride()
}

/// Additive attention mask `(1 or b, 1, seq, past + seq)`: causal, plus padding from a `(b, past + seq)` mask of
/// ones and zeros. Masked entries hold the dtype's lowest value, as transformers does.
pub fn additive_causal_mask(seq: i64, past: i64, padding: Option<&Tensor>, like: &Tensor) -> Tensor {
    let device = like.device();
    let total = past + seq;
    let causal = Tensor::ones([seq, total], (Kind::Bool, device)).tril(past);
    let mut allowed = causal.view([1, 1, seq, total]);
    if let Some(mask) = padding {
        let mask = mask.to_kind(Kind::Bool).to_device(device);
        let batch = mask.size()[0];
        allowed = allowed.logical_and(&mask.view([batch, 1, 1, total]));
    }
    Tensor::zeros([1], (like.kind(), device)).masked_fill(&allowed.logical_not(), lowest_value(like.kind()))
}

/// The lowest finite value of a float dtype: what masked attention scores are set to, as transformers does.
pub fn lowest_value(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895313892515355e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// Scaled dot-product attention probabilities, returned in `q`'s dtype. Half-precision scores are normalised in
/// f32 (as transformers' upcasting option does); f32 and f64 stay in their own precision.
pub fn attention_probabilities(q: &Tensor, k: &Tensor, scale: f64, mask: &Tensor) -> Tensor {
    let scores = q.matmul(&k.transpose(-1, -2)) * scale + mask;
    let softmax_kind = match q.kind() {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        other => other,
    };
    scores.softmax(-1, softmax_kind).to_kind(q.kind())
}

/// Rotary position embeddings (GPT-NeoX style, on the first `dims` features of each head).
pub struct Rotary {
    inv_freq: Tensor,
    dims: i64,
}

impl Rotary {
    pub fn new(dims: i64, base: f64, device: tch::Device) -> Self {
        let exponents = Tensor::arange_start_step(0, dims, 2, (Kind::Float, device)) / dims as f64;
        let inv_freq = Tensor::from(base as f32).to_device(device).pow(&exponents).reciprocal();
        Self { inv_freq, dims }
    }

    /// Rotary embeddings with precomputed inverse frequencies (rescaled ones), on `2 · len` features.
    pub fn from_inv_freq(inv_freq: Tensor) -> Self {
        let dims = 2 * inv_freq.size()[0];
        Self { inv_freq: inv_freq.to_kind(Kind::Float), dims }
    }

    /// The inverse frequency of each rotated pair.
    pub fn inv_freq(&self) -> Tensor {
        self.inv_freq.shallow_clone()
    }

    /// Rotates the first `dims` features of `x` `(b, h, s, d)` for absolute positions `positions` `(s)`.
    pub fn apply(&self, x: &Tensor, positions: &Tensor) -> Tensor {
        if self.dims == 0 {
            return x.shallow_clone();
        }
        let freqs = positions.to_kind(Kind::Float).outer(&self.inv_freq);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        let (cos, sin) = (emb.cos().to_kind(x.kind()), emb.sin().to_kind(x.kind()));
        let head_dim = x.size()[3];
        let rotated = x.narrow(-1, 0, self.dims);
        let half = self.dims / 2;
        let rotate_half = Tensor::cat(&[&(-rotated.narrow(-1, half, half)), &rotated.narrow(-1, 0, half)], -1);
        let embedded = &rotated * &cos + rotate_half * &sin;
        if self.dims == head_dim {
            embedded
        } else {
            Tensor::cat(&[&embedded, &x.narrow(-1, self.dims, head_dim - self.dims)], -1)
        }
    }
}

/// The validated token inputs of a causal language model's forward pass.
pub struct TokenBatch {
    pub ids: Tensor,
    pub batch: i64,
    pub seq: i64,
    /// Key/value cache from the previous call: key and value per layer.
    pub past: Vec<Tensor>,
    /// Model-specific cache tensors after the key/value pairs (see [`TokenBatch::from_inputs_with_extra`]).
    pub extra: Vec<Tensor>,
    pub past_len: i64,
    pub attention_mask: Option<Tensor>,
}

impl TokenBatch {
    /// Checks `inputs` against the model's vocabulary, context length and layer count.
    pub fn from_inputs(
        inputs: &vene_api::ModelInputs<'_>,
        vocab_size: i64,
        max_positions: i64,
        layers: usize,
        device: tch::Device,
    ) -> vene_api::PluginResult<Self> {
        Self::from_inputs_with_extra(inputs, vocab_size, max_positions, layers, 0, device)
    }

    /// Like [`TokenBatch::from_inputs`] for a cache that holds `extra` more tensors after the key/value pairs.
    pub fn from_inputs_with_extra(
        inputs: &vene_api::ModelInputs<'_>,
        vocab_size: i64,
        max_positions: i64,
        layers: usize,
        extra: usize,
        device: tch::Device,
    ) -> vene_api::PluginResult<Self> {
        use vene_api::PluginError;
        let ids = inputs
            .input_ids
            .into_option()
            .ok_or_else(|| PluginError::invalid_input("this model needs input_ids"))?
            .to_tensor();
        let (batch, seq) = ids
            .size2()
            .map_err(|_| PluginError::invalid_input(format!("input_ids must be (batch, seq), got {:?}", ids.size())))?;
        let mut past: Vec<Tensor> = inputs.past.iter().map(|t| t.to_tensor()).collect();
        if !past.is_empty() && past.len() != 2 * layers + extra {
            return Err(PluginError::invalid_input(format!(
                "the key/value cache has {} tensors, expected {} (key and value per layer{})",
                past.len(),
                2 * layers + extra,
                if extra > 0 { format!(", then {extra} more") } else { String::new() }
            )));
        }
        let extra = if past.is_empty() { Vec::new() } else { past.split_off(2 * layers) };
        let past_len = past.first().map_or(0, |k| k.size()[2]);
        if past_len + seq > max_positions {
            return Err(PluginError::invalid_input(format!(
                "sequence of {} tokens exceeds the model's {max_positions} positions",
                past_len + seq
            )));
        }
        if batch > 0 && seq > 0 {
            let (low, high) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            if low < 0 || high >= vocab_size {
                return Err(PluginError::invalid_input(format!(
                    "token id {} is outside the vocabulary [0, {vocab_size})",
                    if low < 0 { low } else { high }
                )));
            }
        }
        let attention_mask = inputs.attention_mask.into_option().map(|m| m.to_tensor());
        if let Some(mask) = &attention_mask {
            if mask.size() != [batch, past_len + seq] {
                return Err(PluginError::invalid_input(format!(
                    "attention_mask has shape {:?}, expected [{batch}, {}]",
                    mask.size(),
                    past_len + seq
                )));
            }
        }
        Ok(Self { ids: ids.to_device(device), batch, seq, past, extra, past_len, attention_mask })
    }

    /// Absolute positions of this call's tokens.
    pub fn positions(&self) -> Tensor {
        Tensor::arange_start(self.past_len, self.past_len + self.seq, (Kind::Int64, self.ids.device()))
    }

    /// This layer's cached key and value.
    pub fn layer_past(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        (!self.past.is_empty()).then(|| (&self.past[2 * layer], &self.past[2 * layer + 1]))
    }
}

/// Reads `architectures[0]` from a model directory's config.json (which head a checkpoint carries).
pub fn architecture(dir: &std::path::Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Architectures {
        #[serde(default)]
        architectures: Vec<String>,
    }
    vene_checkpoint::read_config::<Architectures>(dir).ok()?.architectures.into_iter().next()
}

/// The catalog entry of a component that exists at every one of `layers` layers.
pub fn component(
    name: &str,
    layout: vene_api::SiteLayout,
    dim: u32,
    layers: u32,
    skip_input: Option<&str>,
    module_paths: &[&str],
) -> vene_api::ComponentInfo {
    use vene_api::abi_stable::std_types::{RString, RVec};
    vene_api::ComponentInfo {
        name: name.into(),
        layout,
        dim,
        layers,
        layer_dims: RVec::new(),
        skip_input: skip_input.map(RString::from).into(),
        module_paths: module_paths.iter().map(|p| RString::from(*p)).collect(),
    }
}
