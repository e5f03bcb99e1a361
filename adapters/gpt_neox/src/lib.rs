//! vene model adapter for GPT-NeoX / Pythia checkpoints in Hugging Face layout (`model_type` "gpt_neox").
//!
//! The forward pass follows transformers' `GPTNeoXForCausalLM` with eager attention: rotary embeddings on the first
//! `rotary_pct` of each head, parallel or sequential residual. Besides pyvene's GPT-NeoX sites it exposes the
//! query/key/value parts of `attention.query_key_value` (before rotary), whole and per head.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    additive_causal_mask, attention_probabilities, merge_heads, Activation, LayerNorm, Linear, Rotary, TokenBatch,
    TransformerSite as Site,
};

vene_api::export_plugin! {
    adapters: [GptNeoxAdapter],
    interventions: [],
}

/// Loads `gpt_neox` checkpoints (Pythia, GPT-NeoX-20B layout).
pub struct GptNeoxAdapter;

impl ModelAdapter for GptNeoxAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["gpt_neox".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let config: NeoxConfig = vene_checkpoint::read_config(dir).map_err(|e| PluginError::load(e.to_string()))?;
        let model = GptNeox::load(dir, config, request).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(model))
    }
}

/// The fields of a transformers `GPTNeoXConfig` this adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub struct NeoxConfig {
    pub hidden_size: i64,
    pub num_attention_heads: i64,
    pub num_hidden_layers: i64,
    pub intermediate_size: i64,
    pub vocab_size: i64,
    pub max_position_embeddings: i64,
    /// Older configs say `rotary_pct`, newer ones `partial_rotary_factor` (default 0.25).
    #[serde(default)]
    pub rotary_pct: Option<f64>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Older configs say `rotary_emb_base`, newer ones `rope_theta` (default 10000).
    #[serde(default)]
    pub rotary_emb_base: Option<f64>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default = "default_epsilon")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_activation")]
    pub hidden_act: String,
    #[serde(default = "default_true")]
    pub use_parallel_residual: bool,
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_epsilon() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu".to_string()
}

fn default_true() -> bool {
    true
}

struct Layer {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    query_key_value: Linear,
    dense: Linear,
    dense_h_to_4h: Linear,
    dense_4h_to_h: Linear,
}

/// A loaded GPT-NeoX language model.
pub struct GptNeox {
    config: NeoxConfig,
    activation: Activation,
    rotary: Rotary,
    embed_in: Tensor,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    embed_out: Tensor,
    catalog: ModelCatalog,
}

impl GptNeox {
    fn load(dir: &Path, config: NeoxConfig, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.hidden_act).ok_or_else(|| {
            format!("hidden_act '{}' is not supported ({} are)", config.hidden_act, Activation::NAMES)
        })?;
        if config.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("rope_scaling is not supported by this adapter".into());
        }
        let (d, heads) = (config.hidden_size, config.num_attention_heads);
        if heads <= 0 || d % heads != 0 {
            return Err(format!("hidden_size {d} is not divisible by num_attention_heads {heads}").into());
        }
        let device = request.device.to_device();
        let mut weights = Weights::load(dir, device, request.dtype.to_kind())?;
        weights.strip_prefixes(&["gpt_neox."]);
        let eps = config.layer_norm_eps;
        let bias = config.attention_bias;
        let embed_in = weights.take("embed_in.weight", &[config.vocab_size, d])?;
        let mut layers = Vec::new();
        for layer in 0..config.num_hidden_layers {
            let p = format!("layers.{layer}");
            layers.push(Layer {
                input_layernorm: LayerNorm::load(&mut weights, &format!("{p}.input_layernorm"), d, eps)?,
                post_attention_layernorm: LayerNorm::load(
                    &mut weights,
                    &format!("{p}.post_attention_layernorm"),
                    d,
                    eps,
                )?,
                query_key_value: Linear::load(&mut weights, &format!("{p}.attention.query_key_value"), d, 3 * d, bias)?,
                dense: Linear::load(&mut weights, &format!("{p}.attention.dense"), d, d, bias)?,
                dense_h_to_4h: Linear::load(
                    &mut weights,
                    &format!("{p}.mlp.dense_h_to_4h"),
                    d,
                    config.intermediate_size,
                    true,
                )?,
                dense_4h_to_h: Linear::load(
                    &mut weights,
                    &format!("{p}.mlp.dense_4h_to_h"),
                    config.intermediate_size,
                    d,
                    true,
                )?,
            });
        }
        let final_layer_norm = LayerNorm::load(&mut weights, "final_layer_norm", d, eps)?;
        let embed_out = match weights.take_optional("embed_out.weight", &[config.vocab_size, d])? {
            Some(head) if !config.tie_word_embeddings => head,
            _ => embed_in.shallow_clone(),
        };
        let head_dim = d / heads;
        let fraction = config.partial_rotary_factor.or(config.rotary_pct).unwrap_or(0.25);
        let base = config.rope_theta.or(config.rotary_emb_base).unwrap_or(10000.0);
        let rotary = Rotary::new((head_dim as f64 * fraction) as i64, base, device);
        let catalog = catalog(&config);
        Ok(Self { config, activation, rotary, embed_in, layers, final_layer_norm, embed_out, catalog })
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: u32,
        weights: &Layer,
        x: &Tensor,
        mask: &Tensor,
        positions: &Tensor,
        past: Option<(&Tensor, &Tensor)>,
        hooks: &mut Hooks<'_>,
        present: &mut Vec<Tensor>,
    ) -> PluginResult<Tensor> {
        let heads = self.config.num_attention_heads;
        let (batch, seq) = (x.size()[0], x.size()[1]);
        // The fused projection is laid out per head: (b, s, heads, 3 · head_dim).
        let fused = weights.query_key_value.forward(x).view([batch, seq, heads, -1]);
        let head_dim = fused.size()[3] / 3;
        let part = |i: i64| fused.narrow(-1, i * head_dim, head_dim).reshape([batch, seq, -1]);
        let q = hooks.site(Site::QueryOutput as u32, layer, part(0))?;
        let k = hooks.site(Site::KeyOutput as u32, layer, part(1))?;
        let v = hooks.site(Site::ValueOutput as u32, layer, part(2))?;
        let q = hooks.site(Site::HeadQueryOutput as u32, layer, vene_nn::split_heads(&q, heads))?;
        let k = hooks.site(Site::HeadKeyOutput as u32, layer, vene_nn::split_heads(&k, heads))?;
        let mut v = hooks.site(Site::HeadValueOutput as u32, layer, vene_nn::split_heads(&v, heads))?;
        let q = self.rotary.apply(&q, positions);
        let mut k = self.rotary.apply(&k, positions);
        if let Some((past_k, past_v)) = past {
            k = Tensor::cat(&[past_k, &k], 2);
            v = Tensor::cat(&[past_v, &v], 2);
        }
        let scale = (head_dim as f64).powf(-0.5);
        let probabilities =
            hooks.site(Site::AttentionWeight as u32, layer, attention_probabilities(&q, &k, scale, mask))?;
        let context = hooks.site(Site::HeadAttentionValueOutput as u32, layer, probabilities.matmul(&v))?;
        let merged = hooks.site(Site::AttentionValueOutput as u32, layer, merge_heads(&context))?;
        present.push(k);
        present.push(v);
        Ok(weights.dense.forward(&merged))
    }

    fn mlp(&self, layer: u32, weights: &Layer, x: &Tensor, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let mlp_in = hooks.site(Site::MlpInput as u32, layer, weights.post_attention_layernorm.forward(x))?;
        let act = self.activation.forward(&weights.dense_h_to_4h.forward(&mlp_in));
        let act = hooks.site(Site::MlpActivation as u32, layer, act)?;
        hooks.site(Site::MlpOutput as u32, layer, weights.dense_4h_to_h.forward(&act))
    }
}

impl Model for GptNeox {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let tokens = TokenBatch::from_inputs(
            inputs,
            self.config.vocab_size,
            self.config.max_position_embeddings,
            self.layers.len(),
            self.embed_in.device(),
        )?;
        hooks.set_position_offset(tokens.past_len as u32);
        let positions = tokens.positions();
        let mut h = Tensor::embedding(&self.embed_in, &tokens.ids, -1, false, false);
        let mask = additive_causal_mask(tokens.seq, tokens.past_len, tokens.attention_mask.as_ref(), &h);
        let mut present = Vec::with_capacity(2 * self.layers.len());
        for (index, weights) in self.layers.iter().enumerate() {
            let layer = index as u32;
            h = hooks.site(Site::BlockInput as u32, layer, h)?;
            let attn_in = hooks.site(Site::AttentionInput as u32, layer, weights.input_layernorm.forward(&h))?;
            let attn_out = self.attention(
                layer,
                weights,
                &attn_in,
                &mask,
                &positions,
                tokens.layer_past(index),
                hooks,
                &mut present,
            )?;
            let attn_out = hooks.site(Site::AttentionOutput as u32, layer, attn_out)?;
            let out = if self.config.use_parallel_residual {
                let mlp_out = self.mlp(layer, weights, &h, hooks)?;
                &h + attn_out + mlp_out
            } else {
                let mid = &h + attn_out;
                let mlp_out = self.mlp(layer, weights, &mid, hooks)?;
                mid + mlp_out
            };
            h = hooks.site(Site::BlockOutput as u32, layer, out)?;
        }
        let read = vene_nn::at_output_positions(&h, inputs)?;
        let logits = self.final_layer_norm.forward(&read).matmul(&self.embed_out.tr());
        if !inputs.use_cache {
            present.clear();
        }
        Ok(ModelOutput { output: logits, present })
    }
}

fn catalog(config: &NeoxConfig) -> ModelCatalog {
    let d = config.hidden_size as u32;
    let head_dim = (config.hidden_size / config.num_attention_heads) as u32;
    let layers = config.num_hidden_layers as u32;
    let component = |name: &str, layout, dim, skip_input: Option<&str>, paths: &[&str]| {
        vene_nn::component(name, layout, dim, layers, skip_input, paths)
    };
    use SiteLayout::{AttentionWeights, Heads, Sequence};
    let components = vec![
        component("block_input", Sequence, d, None, &["layers[{layer}].input"]),
        component("block_output", Sequence, d, Some("block_input"), &["layers[{layer}].output"]),
        component("mlp_input", Sequence, d, None, &["layers[{layer}].mlp.input"]),
        component("mlp_output", Sequence, d, Some("mlp_input"), &["layers[{layer}].mlp.output"]),
        component(
            "mlp_activation",
            Sequence,
            config.intermediate_size as u32,
            None,
            &["layers[{layer}].mlp.act.output", "layers[{layer}].mlp.dense_4h_to_h.input"],
        ),
        component("attention_input", Sequence, d, None, &["layers[{layer}].attention.input"]),
        component(
            "attention_output",
            Sequence,
            d,
            Some("attention_input"),
            &["layers[{layer}].attention.output", "layers[{layer}].attention.dense.output"],
        ),
        component("attention_value_output", Sequence, d, None, &["layers[{layer}].attention.dense.input"]),
        component("head_attention_value_output", Heads, head_dim, None, &[]),
        component(
            "attention_weight",
            AttentionWeights,
            config.max_position_embeddings as u32,
            None,
            &["layers[{layer}].attention.attention_dropout.input"],
        ),
        component("query_output", Sequence, d, None, &[]),
        component("key_output", Sequence, d, None, &[]),
        component("value_output", Sequence, d, None, &[]),
        component("head_query_output", Heads, head_dim, None, &[]),
        component("head_key_output", Heads, head_dim, None, &[]),
        component("head_value_output", Heads, head_dim, None, &[]),
    ];
    ModelCatalog {
        model_type: "gpt_neox".into(),
        num_layers: layers,
        num_heads: config.num_attention_heads as u32,
        hidden_size: d,
        vocab_size: config.vocab_size as u32,
        max_positions: config.max_position_embeddings as u32,
        input: InputKind::TokenIds,
        components: components.into(),
    }
}
