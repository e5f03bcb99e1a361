//! vene model adapter for GPT-2 checkpoints in Hugging Face layout (`model_type` "gpt2").
//!
//! The forward pass follows transformers' `GPT2LMHeadModel` with eager attention ([`vene_nn::gpt2`]) and calls the
//! host at every hook site of pyvene's GPT-2 catalog; each is a flag check when nothing intervenes.

use std::path::Path;

use tch::Tensor;
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult,
};
use vene_checkpoint::Weights;
use vene_nn::{
    gpt2::{components, Gpt2Body, Gpt2Config},
    TokenBatch,
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

/// A loaded GPT-2 language model.
pub struct Gpt2 {
    body: Gpt2Body,
    lm_head: Tensor,
    catalog: ModelCatalog,
}

impl Gpt2 {
    fn load(dir: &Path, config: Gpt2Config, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        weights.strip_prefixes(&["transformer."]);
        let catalog = ModelCatalog {
            model_type: "gpt2".into(),
            num_layers: config.n_layer as u32,
            num_heads: config.n_head as u32,
            hidden_size: config.n_embd as u32,
            vocab_size: config.vocab_size as u32,
            max_positions: config.n_positions as u32,
            input: InputKind::TokenIds,
            components: components(&config, "").into(),
        };
        let (vocab, d, tied) = (config.vocab_size, config.n_embd, config.tie_word_embeddings);
        let body = Gpt2Body::load(&mut weights, config, 0)?;
        let lm_head = match weights.take_optional("lm_head.weight", &[vocab, d])? {
            Some(head) if !tied => head,
            _ => body.wte().shallow_clone(),
        };
        Ok(Self { body, lm_head, catalog })
    }
}

impl Model for Gpt2 {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let config = &self.body.config;
        let tokens = TokenBatch::from_inputs(
            inputs,
            config.vocab_size,
            config.n_positions,
            self.body.layers(),
            self.lm_head.device(),
        )?;
        hooks.set_position_offset(tokens.past_len as u32);
        let (hidden, mut present) = self.body.forward(&tokens, hooks)?;
        if !inputs.use_cache {
            present.clear();
        }
        let read = vene_nn::at_output_positions(&hidden, inputs)?;
        Ok(ModelOutput { output: read.matmul(&self.lm_head.tr()), present })
    }
}
