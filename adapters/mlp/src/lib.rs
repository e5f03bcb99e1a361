//! vene model adapter for pyvene's MLP models (`model_type` "mlp": `MLPModel`, `MLPForClassification`).
//!
//! Each block is `act(ff1(h))` with no residual. Inputs are token ids (with `include_emb`) or float features
//! `(b, s, h_dim)`; pyvene's own examples use `(b, 1, h_dim)`, where unit `pos` has the single position 0.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{component, Activation, Linear};

vene_api::export_plugin! {
    adapters: [MlpAdapter],
    interventions: [],
}

/// Loads pyvene `mlp` checkpoints.
pub struct MlpAdapter;

impl ModelAdapter for MlpAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["mlp".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let config: MlpConfig = vene_checkpoint::read_config(dir).map_err(|e| PluginError::load(e.to_string()))?;
        let model = Mlp::load(dir, config, request).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(model))
    }
}

/// The fields of pyvene's `MLPConfig` this adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub struct MlpConfig {
    pub h_dim: i64,
    pub n_layer: i64,
    #[serde(default)]
    pub num_classes: i64,
    #[serde(default)]
    pub include_emb: bool,
    #[serde(default = "default_true")]
    pub include_bias: bool,
    #[serde(default = "default_true")]
    pub squeeze_output: bool,
    #[serde(default)]
    pub vocab_size: i64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
}

fn default_true() -> bool {
    true
}

fn default_activation() -> String {
    "gelu".to_string()
}

/// The MLP's hook sites, in catalog order.
#[repr(u32)]
pub enum Site {
    BlockInput,
    BlockOutput,
    MlpActivation,
}

/// A loaded pyvene MLP.
pub struct Mlp {
    config: MlpConfig,
    activation: Activation,
    wte: Option<Tensor>,
    blocks: Vec<Linear>,
    score: Option<Linear>,
    catalog: ModelCatalog,
    parameters: Vec<(String, Tensor)>,
}

impl Mlp {
    fn load(dir: &Path, config: MlpConfig, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!("activation_function '{}' is not supported ({} are)", config.activation_function, Activation::NAMES)
        })?;
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        let classifier = vene_nn::architecture(dir).as_deref() == Some("MLPForClassification");
        if classifier {
            weights.strip_prefixes(&["mlp."]);
        }
        let d = config.h_dim;
        let wte = if config.include_emb { Some(weights.take("wte.weight", &[config.vocab_size, d])?) } else { None };
        let blocks = (0..config.n_layer)
            .map(|l| Linear::load(&mut weights, &format!("h.{l}.ff1"), d, d, config.include_bias))
            .collect::<Result<Vec<_>, _>>()?;
        let score = if classifier {
            Some(Linear::load(&mut weights, "score", d, config.num_classes, config.include_bias)?)
        } else {
            None
        };
        let layers = config.n_layer as u32;
        let catalog = ModelCatalog {
            model_type: "mlp".into(),
            num_layers: layers,
            num_heads: 0,
            hidden_size: d as u32,
            vocab_size: 0,
            max_positions: 0,
            input: if config.include_emb { InputKind::TokenIds } else { InputKind::Features },
            components: vec![
                component("block_input", SiteLayout::Sequence, d as u32, layers, None, &["h[{layer}].input"]),
                component(
                    "block_output",
                    SiteLayout::Sequence,
                    d as u32,
                    layers,
                    Some("block_input"),
                    &["h[{layer}].output"],
                ),
                component("mlp_activation", SiteLayout::Sequence, d as u32, layers, None, &["h[{layer}].act.output"]),
            ]
            .into(),
        };
        Ok(Self { config, activation, wte, blocks, score, catalog, parameters: weights.taken() })
    }
}

impl Model for Mlp {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let device = self.blocks.first().map_or(tch::Device::Cpu, |b| b.weight().device());
        let mut h = match (&self.wte, inputs.input_ids.into_option(), inputs.features.into_option()) {
            (Some(wte), Some(ids), _) => Tensor::embedding(wte, &ids.to_tensor().to_device(device), -1, false, false),
            (_, _, Some(features)) => features.to_tensor().to_device(device),
            _ => {
                return Err(PluginError::invalid_input(
                    "this MLP needs float \"inputs\" (or input_ids with include_emb)",
                ))
            }
        };
        let d = self.config.h_dim;
        if h.size().last() != Some(&d) || h.dim() < 2 {
            return Err(PluginError::invalid_input(format!(
                "inputs must end in h_dim = {d}, got shape {:?}",
                h.size()
            )));
        }
        if let Some(first) = self.blocks.first() {
            h = h.to_kind(first.weight().kind());
        }
        for (index, block) in self.blocks.iter().enumerate() {
            let layer = index as u32;
            h = hooks.site(Site::BlockInput as u32, layer, h)?;
            let act = hooks.site(Site::MlpActivation as u32, layer, self.activation.forward(&block.forward(&h)))?;
            h = hooks.site(Site::BlockOutput as u32, layer, act)?;
        }
        let output = match &self.score {
            Some(score) if self.config.squeeze_output && h.dim() == 3 && h.size()[1] == 1 => {
                score.forward(&h).squeeze_dim(1)
            }
            Some(score) => score.forward(&h),
            None => h,
        };
        Ok(ModelOutput { output, present: Vec::new() })
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.parameters.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect())
    }
}
