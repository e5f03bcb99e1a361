//! The GPT-2 transformer (transformers' `GPT2Model` with eager attention), with pyvene's GPT-2 hook sites. Used by
//! the GPT-2 adapter and, as the contextualisation network, by the Backpack adapter.

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::{RString, RVec},
    ComponentInfo, Hooks, PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;

use crate::{
    additive_causal_mask, attention_probabilities, merge_heads, split_heads, split_input, Activation, LayerNorm,
    Linear, TokenBatch, TransformerSite as Site,
};

/// The fields of a transformers `GPT2Config` the GPT-2 body reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub n_layer: i64,
    pub n_embd: i64,
    pub n_head: i64,
    #[serde(default)]
    pub n_inner: Option<i64>,
    pub n_positions: i64,
    pub vocab_size: i64,
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

fn default_epsilon() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_string()
}

fn default_true() -> bool {
    true
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// GPT-2's embeddings, blocks and final layer norm.
pub struct Gpt2Body {
    pub config: Gpt2Config,
    activation: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// Added to every site number, so the body's sites can follow an outer model's own.
    site_offset: u32,
}

impl Gpt2Body {
    /// Loads from `weights` whose names start at the body (`wte.weight`, `h.0.…`, `ln_f.…`).
    pub fn load(
        weights: &mut Weights,
        config: Gpt2Config,
        site_offset: u32,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!("activation_function '{}' is not supported ({} are)", config.activation_function, Activation::NAMES)
        })?;
        if config.n_head <= 0 || config.n_embd % config.n_head != 0 {
            return Err(format!("n_embd {} is not divisible by n_head {}", config.n_embd, config.n_head).into());
        }
        let d = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * d);
        let eps = config.layer_norm_epsilon;
        let wte = weights.take("wte.weight", &[config.vocab_size, d])?;
        let wpe = weights.take("wpe.weight", &[config.n_positions, d])?;
        let mut blocks = Vec::new();
        for layer in 0..config.n_layer {
            let p = format!("h.{layer}");
            blocks.push(Block {
                ln_1: LayerNorm::load(weights, &format!("{p}.ln_1"), d, eps)?,
                c_attn: Linear::load_conv1d(weights, &format!("{p}.attn.c_attn"), d, 3 * d)?,
                attn_proj: Linear::load_conv1d(weights, &format!("{p}.attn.c_proj"), d, d)?,
                ln_2: LayerNorm::load(weights, &format!("{p}.ln_2"), d, eps)?,
                c_fc: Linear::load_conv1d(weights, &format!("{p}.mlp.c_fc"), d, inner)?,
                mlp_proj: Linear::load_conv1d(weights, &format!("{p}.mlp.c_proj"), inner, d)?,
            });
        }
        let ln_f = LayerNorm::load(weights, "ln_f", d, eps)?;
        Ok(Self { config, activation, wte, wpe, blocks, ln_f, site_offset })
    }

    pub fn wte(&self) -> &Tensor {
        &self.wte
    }

    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    fn site(&self, hooks: &mut Hooks<'_>, site: Site, layer: u32, value: Tensor) -> PluginResult<Tensor> {
        hooks.site(self.site_offset + site as u32, layer, value)
    }

    /// The attention layer's output and, with `head_attention_output` hooked, each head's part of it apart.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: u32,
        block: &Block,
        (x, residual): (Tensor, &Tensor),
        mask: &Tensor,
        past: Option<(&Tensor, &Tensor)>,
        hooks: &mut Hooks<'_>,
        present: &mut Vec<Tensor>,
    ) -> PluginResult<(Tensor, Option<Tensor>)> {
        let heads = self.config.n_head;
        let width = self.config.n_embd;
        let parts = block.c_attn.forward(&x).split(width, -1);
        // Each of q, k and v from the heads' own copies of the residual stream when those are intervened on.
        let mut projected = |index: usize, site: Site| -> PluginResult<Tensor> {
            let norm = |t: &Tensor| block.ln_1.forward(t);
            let offset = index as i64 * width;
            let split = split_input(hooks, (self.site_offset + site as u32, layer), residual, heads, norm, |t| {
                block.c_attn.per_head_input(t, offset, width / heads)
            })?;
            Ok(split.map_or_else(|| parts[index].shallow_clone(), |heads| merge_heads(&heads)))
        };
        let q = projected(0, Site::HeadQueryInput)?;
        let k = projected(1, Site::HeadKeyInput)?;
        let v = projected(2, Site::HeadValueInput)?;
        let q = self.site(hooks, Site::QueryOutput, layer, q)?;
        let k = self.site(hooks, Site::KeyOutput, layer, k)?;
        let v = self.site(hooks, Site::ValueOutput, layer, v)?;
        let q = self.site(hooks, Site::HeadQueryOutput, layer, split_heads(&q, heads))?;
        let k = self.site(hooks, Site::HeadKeyOutput, layer, split_heads(&k, heads))?;
        let mut v = self.site(hooks, Site::HeadValueOutput, layer, split_heads(&v, heads))?;
        // GPT-2 scores the heads' queries and keys as they are: the "rotated" sites see the same tensors.
        let q = self.site(hooks, Site::HeadQueryRotated, layer, q)?;
        let mut k = self.site(hooks, Site::HeadKeyRotated, layer, k)?;
        if let Some((past_k, past_v)) = past {
            k = Tensor::cat(&[past_k, &k], 2);
            v = Tensor::cat(&[past_v, &v], 2);
        }
        let mut scale = 1.0;
        if self.config.scale_attn_weights {
            scale /= (v.size()[3] as f64).sqrt();
        }
        if self.config.scale_attn_by_inverse_layer_idx {
            scale /= layer as f64 + 1.0;
        }
        let weights = self.site(hooks, Site::AttentionWeight, layer, attention_probabilities(&q, &k, scale, mask))?;
        let context = self.site(hooks, Site::HeadAttentionValueOutput, layer, weights.matmul(&v))?;
        let merged = self.site(hooks, Site::AttentionValueOutput, layer, merge_heads(&context))?;
        present.push(k);
        present.push(v);
        let per_head = hooks
            .is_active(self.site_offset + Site::HeadAttentionOutput as u32, layer)
            .then(|| block.attn_proj.per_head(&context));
        Ok((block.attn_proj.forward(&merged), per_head))
    }

    /// The last hidden state (after `ln_f`) and, with `use_cache`, the key/value cache.
    pub fn forward(&self, tokens: &TokenBatch, hooks: &mut Hooks<'_>) -> PluginResult<(Tensor, Vec<Tensor>)> {
        let mut h = Tensor::embedding(&self.wte, &tokens.ids, -1, false, false)
            + Tensor::embedding(&self.wpe, &tokens.positions(), -1, false, false).unsqueeze(0);
        let mask = additive_causal_mask(tokens.seq, tokens.past_len, tokens.attention_mask.as_ref(), &h);
        let mut present = Vec::with_capacity(2 * self.blocks.len());
        for (index, block) in self.blocks.iter().enumerate() {
            let layer = index as u32;
            h = self.site(hooks, Site::BlockInput, layer, h)?;
            let attn_in = self.site(hooks, Site::AttentionInput, layer, block.ln_1.forward(&h))?;
            let (attn_out, per_head) =
                self.attention(layer, block, (attn_in, &h), &mask, tokens.layer_past(index), hooks, &mut present)?;
            let mut attn_out = self.site(hooks, Site::AttentionOutput, layer, attn_out)?;
            if let Some(shares) = per_head {
                let site = self.site_offset + Site::HeadAttentionOutput as u32;
                attn_out = crate::head_writes(hooks, site, layer, shares, attn_out)?;
            }
            // Out of place on purpose: tch's `+=` writes in place, and the host may hold `h` (a getter's activation).
            h = &h + attn_out;
            let mlp_in = self.site(hooks, Site::MlpInput, layer, block.ln_2.forward(&h))?;
            let act = self.activation.forward(&block.c_fc.forward(&mlp_in));
            let act = self.site(hooks, Site::MlpActivation, layer, act)?;
            let mlp_out = self.site(hooks, Site::MlpOutput, layer, block.mlp_proj.forward(&act))?;
            h = self.site(hooks, Site::BlockOutput, layer, h + mlp_out)?;
        }
        Ok((self.ln_f.forward(&h), present))
    }
}

/// GPT-2's catalog entries, in [`Site`] order; `prefix` is prepended to module paths (`gpt2_model.` for Backpack).
pub fn components(config: &Gpt2Config, prefix: &str) -> Vec<ComponentInfo> {
    let d = config.n_embd as u32;
    let head_dim = (config.n_embd / config.n_head) as u32;
    let inner = config.n_inner.unwrap_or(4 * config.n_embd) as u32;
    let positions = config.n_positions as u32;
    let component = |name: &str, layout, dim, skip_input: Option<&str>, paths: &[&str]| ComponentInfo {
        name: name.into(),
        layout,
        dim,
        layers: config.n_layer as u32,
        layer_dims: RVec::new(),
        skip_input: skip_input.map(RString::from).into(),
        module_paths: paths.iter().map(|p| RString::from(format!("{prefix}{p}"))).collect::<RVec<_>>(),
    };
    use SiteLayout::{AttentionWeights, Heads, Sequence};
    vec![
        component("block_input", Sequence, d, None, &["h[{layer}].input"]),
        component("block_output", Sequence, d, Some("block_input"), &["h[{layer}].output"]),
        component("mlp_input", Sequence, d, None, &["h[{layer}].mlp.input", "h[{layer}].ln_2.output"]),
        component(
            "mlp_output",
            Sequence,
            d,
            Some("mlp_input"),
            &["h[{layer}].mlp.output", "h[{layer}].mlp.dropout.output"],
        ),
        component(
            "mlp_activation",
            Sequence,
            inner,
            None,
            &["h[{layer}].mlp.act.output", "h[{layer}].mlp.c_proj.input"],
        ),
        component("attention_input", Sequence, d, None, &["h[{layer}].attn.input", "h[{layer}].ln_1.output"]),
        component(
            "attention_output",
            Sequence,
            d,
            Some("attention_input"),
            &["h[{layer}].attn.output", "h[{layer}].attn.resid_dropout.output", "h[{layer}].attn.c_proj.output"],
        ),
        component("attention_value_output", Sequence, d, None, &["h[{layer}].attn.c_proj.input"]),
        component("head_attention_value_output", Heads, head_dim, None, &[]),
        component(
            "attention_weight",
            AttentionWeights,
            positions,
            None,
            &["h[{layer}].attn.attn_dropout.input", "h[{layer}].attn.attn_dropout.output"],
        ),
        component("query_output", Sequence, d, None, &[]),
        component("key_output", Sequence, d, None, &[]),
        component("value_output", Sequence, d, None, &[]),
        component("head_query_output", Heads, head_dim, None, &[]),
        component("head_key_output", Heads, head_dim, None, &[]),
        component("head_value_output", Heads, head_dim, None, &[]),
        component("head_query_rotated", Heads, head_dim, None, &[]),
        component("head_key_rotated", Heads, head_dim, None, &[]),
        component("head_attention_output", Heads, d, None, &[]),
        component("head_query_input", Heads, d, None, &[]),
        component("head_key_input", Heads, d, None, &[]),
        component("head_value_input", Heads, d, None, &[]),
    ]
}
