//! vene model adapter for GPT-2 checkpoints in Hugging Face layout (`model_type` "gpt2").
//!
//! The forward pass follows transformers' `GPT2LMHeadModel` with eager attention and calls the host at every hook
//! site of pyvene's GPT-2 catalog. Sites are numbered by [`Site`]; each is a flag check when nothing intervenes.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::{RString, RVec},
    model::ModelOutput,
    ComponentInfo, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    additive_causal_mask, attention_probabilities, merge_heads, split_heads, Activation, LayerNorm, Linear, TokenBatch,
};

vene_api::export_plugin! {
    adapters: [Gpt2Adapter],
    interventions: [],
}

/// Loads `gpt2` checkpoints.
pub struct Gpt2Adapter;

impl ModelAdapter for Gpt2Adapter {
    fn model_types(&self) -> Vec<String> {
        vec!["gpt2".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let config: Gpt2Config = vene_checkpoint::read_config(dir).map_err(|e| PluginError::load(e.to_string()))?;
        let model = Gpt2::load(dir, config, request).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(model))
    }
}

/// The fields of a transformers `GPT2Config` this adapter reads.
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

/// GPT-2's hook sites, in catalog order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Site {
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
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A loaded GPT-2 language model.
pub struct Gpt2 {
    config: Gpt2Config,
    activation: Activation,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Tensor,
    catalog: ModelCatalog,
}

impl Gpt2 {
    fn load(dir: &Path, config: Gpt2Config, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!("activation_function '{}' is not supported ({} are)", config.activation_function, Activation::NAMES)
        })?;
        if config.n_head <= 0 || config.n_embd % config.n_head != 0 {
            return Err(format!("n_embd {} is not divisible by n_head {}", config.n_embd, config.n_head).into());
        }
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        weights.strip_prefixes(&["transformer."]);
        let d = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * d);
        let eps = config.layer_norm_epsilon;
        let wte = weights.take("wte.weight", &[config.vocab_size, d])?;
        let wpe = weights.take("wpe.weight", &[config.n_positions, d])?;
        let mut blocks = Vec::new();
        for layer in 0..config.n_layer {
            let p = format!("h.{layer}");
            blocks.push(Block {
                ln_1: LayerNorm::load(&mut weights, &format!("{p}.ln_1"), d, eps)?,
                c_attn: Linear::load_conv1d(&mut weights, &format!("{p}.attn.c_attn"), d, 3 * d)?,
                attn_proj: Linear::load_conv1d(&mut weights, &format!("{p}.attn.c_proj"), d, d)?,
                ln_2: LayerNorm::load(&mut weights, &format!("{p}.ln_2"), d, eps)?,
                c_fc: Linear::load_conv1d(&mut weights, &format!("{p}.mlp.c_fc"), d, inner)?,
                mlp_proj: Linear::load_conv1d(&mut weights, &format!("{p}.mlp.c_proj"), inner, d)?,
            });
        }
        let ln_f = LayerNorm::load(&mut weights, "ln_f", d, eps)?;
        let lm_head = match weights.take_optional("lm_head.weight", &[config.vocab_size, d])? {
            Some(head) if !config.tie_word_embeddings => head,
            _ => wte.shallow_clone(),
        };
        let catalog = catalog(&config);
        Ok(Self { config, activation, wte, wpe, blocks, ln_f, lm_head, catalog })
    }

    fn attention(
        &self,
        layer: u32,
        block: &Block,
        x: Tensor,
        mask: &Tensor,
        past: Option<(&Tensor, &Tensor)>,
        hooks: &mut Hooks<'_>,
        present: &mut Vec<Tensor>,
    ) -> PluginResult<Tensor> {
        let heads = self.config.n_head;
        let parts = block.c_attn.forward(&x).split(self.config.n_embd, -1);
        let q = hooks.site(Site::QueryOutput as u32, layer, parts[0].shallow_clone())?;
        let k = hooks.site(Site::KeyOutput as u32, layer, parts[1].shallow_clone())?;
        let v = hooks.site(Site::ValueOutput as u32, layer, parts[2].shallow_clone())?;
        let q = hooks.site(Site::HeadQueryOutput as u32, layer, split_heads(&q, heads))?;
        let mut k = hooks.site(Site::HeadKeyOutput as u32, layer, split_heads(&k, heads))?;
        let mut v = hooks.site(Site::HeadValueOutput as u32, layer, split_heads(&v, heads))?;
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
        let weights = hooks.site(Site::AttentionWeight as u32, layer, attention_probabilities(&q, &k, scale, mask))?;
        let context = hooks.site(Site::HeadAttentionValueOutput as u32, layer, weights.matmul(&v))?;
        let merged = hooks.site(Site::AttentionValueOutput as u32, layer, merge_heads(&context))?;
        present.push(k);
        present.push(v);
        Ok(block.attn_proj.forward(&merged))
    }
}

impl Model for Gpt2 {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let tokens = TokenBatch::from_inputs(
            inputs,
            self.config.vocab_size,
            self.config.n_positions,
            self.blocks.len(),
            self.wte.device(),
        )?;
        hooks.set_position_offset(tokens.past_len as u32);
        let mut h = Tensor::embedding(&self.wte, &tokens.ids, -1, false, false)
            + Tensor::embedding(&self.wpe, &tokens.positions(), -1, false, false).unsqueeze(0);
        let mask = additive_causal_mask(tokens.seq, tokens.past_len, tokens.attention_mask.as_ref(), &h);
        let mut present = Vec::with_capacity(2 * self.blocks.len());
        for (index, block) in self.blocks.iter().enumerate() {
            let layer = index as u32;
            h = hooks.site(Site::BlockInput as u32, layer, h)?;
            let attn_in = hooks.site(Site::AttentionInput as u32, layer, block.ln_1.forward(&h))?;
            let attn_out =
                self.attention(layer, block, attn_in, &mask, tokens.layer_past(index), hooks, &mut present)?;
            let attn_out = hooks.site(Site::AttentionOutput as u32, layer, attn_out)?;
            // Out of place on purpose: tch's `+=` writes in place, and the host may hold `h` (a getter's activation).
            h = &h + attn_out;
            let mlp_in = hooks.site(Site::MlpInput as u32, layer, block.ln_2.forward(&h))?;
            let act =
                hooks.site(Site::MlpActivation as u32, layer, self.activation.forward(&block.c_fc.forward(&mlp_in)))?;
            let mlp_out = hooks.site(Site::MlpOutput as u32, layer, block.mlp_proj.forward(&act))?;
            h = hooks.site(Site::BlockOutput as u32, layer, h + mlp_out)?;
        }
        let logits = self.ln_f.forward(&h).matmul(&self.lm_head.tr());
        if !inputs.use_cache {
            present.clear();
        }
        Ok(ModelOutput { output: logits, present })
    }
}

fn catalog(config: &Gpt2Config) -> ModelCatalog {
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
        module_paths: paths.iter().map(|p| RString::from(*p)).collect::<RVec<_>>(),
    };
    use SiteLayout::{AttentionWeights, Heads, Sequence};
    let components = vec![
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
    ];
    ModelCatalog {
        model_type: "gpt2".into(),
        num_layers: config.n_layer as u32,
        num_heads: config.n_head as u32,
        hidden_size: d,
        vocab_size: config.vocab_size as u32,
        input: InputKind::TokenIds,
        components: components.into(),
    }
}
