//! vene model adapter for pyvene's GRU models (`model_type` "gru": `GRUModel`, `GRUForClassification`,
//! `GRULMHeadModel`), on the GRU body of [`vene_nn::gru`].
//!
//! Every site is called once per timestep with the step number, so unit `t` selects steps: an intervention at step
//! `t` acts at step `t` only, and a source step can be moved into a different base step. (pyvene 0.1.8 intervenes at
//! every step for unit `t`; vene does not.)

use std::path::Path;

use tch::{Kind, Tensor};
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult,
};
use vene_checkpoint::Weights;
use vene_nn::{
    gru::{components, GruBody, GruConfig},
    Linear,
};

vene_api::export_plugin! {
    adapters: [GruAdapter],
    interventions: [],
}

/// Loads pyvene `gru` checkpoints.
pub struct GruAdapter;

impl ModelAdapter for GruAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["gru".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let config: GruConfig = vene_checkpoint::read_config(dir).map_err(|e| PluginError::load(e.to_string()))?;
        let model = Gru::load(dir, config, request).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(model))
    }
}

enum Head {
    /// `GRUModel`: the last layer's hidden state at every step.
    None,
    /// `GRUForClassification`: scores of the last (unpadded) step.
    Classifier(Linear),
    /// `GRULMHeadModel`: next-token logits at every step.
    LanguageModel(Linear),
}

/// A loaded pyvene GRU.
pub struct Gru {
    body: GruBody,
    head: Head,
    catalog: ModelCatalog,
    parameters: Vec<(String, Tensor)>,
}

impl Gru {
    fn load(dir: &Path, config: GruConfig, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        let architecture = vene_nn::architecture(dir).unwrap_or_default();
        weights.strip_prefixes(&["gru."]);
        let (d, vocab, labels) = (config.h_dim, config.vocab_size, config.n_labels);
        let catalog_components = components(&config);
        let include_emb = config.include_emb;
        let body = GruBody::load(&mut weights, config)?;
        let head = match architecture.as_str() {
            "GRUForClassification" => Head::Classifier(Linear::load(&mut weights, "score", d, labels, false)?),
            "GRULMHeadModel" => {
                let weight = match weights.take_optional("lm_head.weight", &[vocab, d])? {
                    Some(weight) => weight,
                    None => body.wte().ok_or("GRULMHeadModel without lm_head.weight or wte.weight")?.shallow_clone(),
                };
                Head::LanguageModel(Linear::from_parts(weight, None))
            }
            _ => Head::None,
        };
        let catalog = ModelCatalog {
            model_type: "gru".into(),
            num_layers: body.config.n_layer as u32,
            num_heads: 0,
            hidden_size: d as u32,
            vocab_size: if matches!(head, Head::LanguageModel(_)) { vocab as u32 } else { 0 },
            max_positions: 0,
            input: if include_emb { InputKind::TokenIds } else { InputKind::Features },
            components: catalog_components.into(),
        };
        Ok(Self { body, head, catalog, parameters: weights.taken() })
    }
}

impl Model for Gru {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let states = self.body.forward(inputs, hooks)?;
        let (batch, steps, device) = (states.size()[0], states.size()[1], states.device());
        let output = match &self.head {
            Head::None => states,
            Head::LanguageModel(head) => head.forward(&states),
            Head::Classifier(score) => {
                let last = match inputs.attention_mask.into_option() {
                    Some(mask) => mask.to_tensor().to_device(device).sum_dim_intlist(-1, false, Kind::Int64) - 1,
                    None => Tensor::full([batch], steps - 1, (Kind::Int64, device)),
                };
                let pooled = states.index_select(0, &Tensor::arange(batch, (Kind::Int64, device)));
                let pooled = pooled.gather(
                    1,
                    &last.view([batch, 1, 1]).expand([batch, 1, self.body.config.h_dim], false),
                    false,
                );
                score.forward(&pooled.squeeze_dim(1))
            }
        };
        Ok(ModelOutput { output, present: Vec::new() })
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.parameters.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect())
    }
}
