//! vene model adapter for ResNet image classifiers in Hugging Face layout (`model_type` "resnet", e.g.
//! `microsoft/resnet-18` and `-50`), following transformers' `ResNetForImageClassification` in eval mode
//! ([`vene_nn::resnet`]).
//!
//! Sites: `embedder_output` (the stem), `block_input` / `block_output` of every residual block (numbered across
//! stages), `stage_output`, and `pooler_output`. Feature maps are `(b, c, h, w)`: unit `channel` selects channels
//! (pyvene's dim-1 behaviour on conv maps), unit `pos` selects flattened spatial positions `row * w + col`, each a
//! `(channels)` vector.

use std::path::Path;

use vene_api::{
    abi_stable::std_types::ROption, model::ModelOutput, Hooks, LoadRequest, Model, ModelAdapter, ModelCatalog,
    ModelInputs, PluginError, PluginResult,
};
use vene_checkpoint::Weights;
use vene_nn::resnet::{catalog, ResNetBody, ResNetConfig};

vene_api::export_plugin! {
    adapters: [ResNetAdapter],
    interventions: [],
}

/// Loads `resnet` checkpoints.
pub struct ResNetAdapter;

impl ModelAdapter for ResNetAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["resnet".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<ResNet, Box<dyn std::error::Error>> {
            let config: ResNetConfig = vene_checkpoint::read_config(dir)?;
            let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
            Ok(ResNet { body: ResNetBody::load(&mut weights, &config)?, catalog: catalog(&config) })
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// A loaded ResNet classifier.
pub struct ResNet {
    body: ResNetBody,
    catalog: ModelCatalog,
}

impl Model for ResNet {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let pixels = match inputs.features {
            ROption::RSome(pixels) => pixels.to_tensor(),
            ROption::RNone => return Err(PluginError::invalid_input("ResNet needs pixel values as \"inputs\"")),
        };
        let size = pixels.size();
        if size.len() != 4 || size[1] != self.body.num_channels {
            return Err(PluginError::invalid_input(format!(
                "pixel values must be (batch, {}, height, width), got {size:?}",
                self.body.num_channels
            )));
        }
        let x = pixels.to_kind(self.body.kind()).to_device(self.body.device());
        Ok(ModelOutput { output: self.body.forward(&x, hooks, false)?, present: Vec::new() })
    }
}
