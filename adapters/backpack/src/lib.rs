//! vene model adapter for Backpack GPT-2 (pyvene's `BackpackGPT2LMHeadModel`, checkpoints such as
//! `stanfordnlp/backpack-gpt2`), on [`vene_nn::backpack`]. Chosen by `architectures` ("BackpackGPT2LMHeadModel") or
//! `model_type` ("backpack-gpt2"), since pyvene's own saved configs say `model_type` "gpt2".
//!
//! Sites: `sense_network_output` `(b, senses, s, d)` with units `sense` and `sense.pos`, then every GPT-2 site of the
//! inner transformer.

use std::path::Path;

use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult,
};
use vene_checkpoint::Weights;
use vene_nn::{
    backpack::{components, BackpackModel, SenseConfig},
    gpt2::Gpt2Config,
};

vene_api::export_plugin! {
    adapters: [BackpackAdapter],
    interventions: [],
}

/// Loads Backpack GPT-2 checkpoints.
pub struct BackpackAdapter;

impl ModelAdapter for BackpackAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["backpack-gpt2".to_string(), "BackpackGPT2LMHeadModel".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<Backpack, Box<dyn std::error::Error>> {
            let gpt2: Gpt2Config = vene_checkpoint::read_config(dir)?;
            let senses: SenseConfig = vene_checkpoint::read_config(dir)?;
            let catalog = ModelCatalog {
                model_type: "backpack-gpt2".into(),
                num_layers: gpt2.n_layer as u32,
                num_heads: gpt2.n_head as u32,
                hidden_size: gpt2.n_embd as u32,
                vocab_size: gpt2.vocab_size as u32,
                max_positions: gpt2.n_positions as u32,
                input: InputKind::TokenIds,
                components: components(&gpt2).into(),
            };
            let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
            weights.strip_prefixes(&["backpack."]);
            Ok(Backpack { model: BackpackModel::load(weights, gpt2, senses)?, catalog })
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// A loaded Backpack language model.
pub struct Backpack {
    model: BackpackModel,
    catalog: ModelCatalog,
}

impl Model for Backpack {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let (logits, present) = self.model.forward(inputs, hooks)?;
        Ok(ModelOutput { output: logits, present: if inputs.use_cache { present } else { Vec::new() } })
    }
}
