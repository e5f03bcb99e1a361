//! vene model adapter for CRNN text recognisers (`model_type` "crnn"): EasyOCR's generation-2 recogniser
//! (`english_g2.pth`), a VGG-style CNN whose feature map is averaged over its height into one vector per width
//! column, two bidirectional LSTMs each followed by a linear layer, and a per-column CTC classifier.
//!
//! Sites:
//! - `conv_block_output` (7 layers): each convolution after its ReLU and pooling, `(b, c, h, w)`; units `channel`
//!   and `pos` (`row * w + col`).
//! - `visual_features`: the averaged columns `(b, T, 256)`, unit `pos` = the column (the LSTMs' time step).
//! - the LSTM sites of [`vene_nn::lstm`] for the two BiLSTMs (layers 0 and 1), unit `t` = column, both directions.
//! - `sequence_output` (2 layers): each BiLSTM's linear output `(b, T, hidden)`, unit `pos`.
//!
//! The output is the CTC logits `(b, T, classes)`; class 0 is the blank and class `i` the `i`-th character of
//! `characters` in config.json, which the host uses for greedy decoding.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::ROption, model::ModelOutput, ComponentInfo, Hooks, InputKind, LoadRequest, Model,
    ModelAdapter, ModelCatalog, ModelInputs, PluginError, PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    component,
    conv::{BatchNorm, Conv, Padding},
    lstm::{self, Lstm},
    Linear,
};

vene_api::export_plugin! {
    adapters: [CrnnAdapter],
    interventions: [],
}

/// The fields of a CRNN's config.json (EasyOCR's `network_params` plus its character set).
#[derive(Debug, Clone, Deserialize)]
pub struct CrnnConfig {
    #[serde(default = "default_input_channel")]
    pub input_channel: i64,
    pub output_channel: i64,
    pub hidden_size: i64,
    /// The characters of classes 1…; class 0 is the CTC blank.
    pub characters: String,
}

fn default_input_channel() -> i64 {
    1
}

const BATCH_NORM_EPSILON: f64 = 1e-5;
const CONV_BLOCKS: usize = 7;
const SEQUENCE_LAYERS: usize = 2;

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Site {
    ConvBlockOutput,
    VisualFeatures,
    /// The first LSTM site; [`lstm::site_count`] of them follow.
    Lstm,
}

/// The catalog index of `sequence_output`, after the LSTM sites.
fn sequence_output_site() -> u32 {
    Site::Lstm as u32 + lstm::site_count(2)
}

/// Loads `crnn` checkpoints.
pub struct CrnnAdapter;

impl ModelAdapter for CrnnAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["crnn".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<Crnn, Box<dyn std::error::Error>> {
            let config: CrnnConfig = vene_checkpoint::read_config(dir)?;
            let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
            weights.strip_prefixes(&["module."]);
            Crnn::load(&mut weights, config)
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// One convolution of the VGG feature extractor, with what follows it up to the next convolution.
struct ConvBlock {
    conv: Conv,
    norm: Option<BatchNorm>,
    /// Max-pooling kernel (= stride) after the ReLU.
    pool: Option<[i64; 2]>,
}

/// A loaded CRNN.
pub struct Crnn {
    blocks: Vec<ConvBlock>,
    sequence: Vec<(Lstm, Linear)>,
    prediction: Linear,
    catalog: ModelCatalog,
    input_channel: i64,
    parameters: Vec<(String, Tensor)>,
}

impl Crnn {
    fn load(weights: &mut Weights, config: CrnnConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let c = config.output_channel;
        let channels = [c / 8, c / 4, c / 2, c / 2, c, c, c];
        // EasyOCR's `ConvNet` Sequential: the index of each convolution, whether a batch norm follows, the pooling.
        let layout: [(usize, bool, Option<[i64; 2]>); CONV_BLOCKS] = [
            (0, false, Some([2, 2])),
            (3, false, Some([2, 2])),
            (6, false, None),
            (8, false, Some([2, 1])),
            (11, true, None),
            (14, true, Some([2, 1])),
            (18, false, None),
        ];
        let mut input = config.input_channel;
        let mut blocks = Vec::new();
        for (&(index, norm, pool), &out) in layout.iter().zip(&channels) {
            let (kernel, padding) = if index == 18 { (2, 0) } else { (3, 1) };
            let prefix = format!("FeatureExtraction.ConvNet.{index}");
            let shape = [out, input, kernel, kernel];
            let conv = Conv::load(weights, &prefix, &shape, !norm, 1, Padding::Symmetric(padding), 1)?;
            let norm = if norm {
                Some(BatchNorm::load(
                    weights,
                    &format!("FeatureExtraction.ConvNet.{}", index + 1),
                    out,
                    BATCH_NORM_EPSILON,
                )?)
            } else {
                None
            };
            blocks.push(ConvBlock { conv, norm, pool });
            input = out;
        }
        let hidden = config.hidden_size;
        let sequence = (0..SEQUENCE_LAYERS)
            .map(|l| {
                let layer_input = if l == 0 { c } else { hidden };
                let prefix = format!("SequenceModeling.{l}");
                let lstm = Lstm::load(weights, &format!("{prefix}.rnn"), layer_input, hidden, 1, 2)?;
                let linear = Linear::load(weights, &format!("{prefix}.linear"), 2 * hidden, hidden, true)?;
                Ok((lstm, linear))
            })
            .collect::<vene_checkpoint::Result<Vec<_>>>()?;
        let classes = config.characters.chars().count() as i64 + 1;
        let prediction = Linear::load(weights, "Prediction", hidden, classes, true)?;
        let catalog = catalog(&config, &channels);
        Ok(Self {
            blocks,
            sequence,
            prediction,
            catalog,
            input_channel: config.input_channel,
            parameters: weights.taken(),
        })
    }

    fn forward_pixels(&self, pixels: &Tensor, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let mut x = pixels.shallow_clone();
        for (index, block) in self.blocks.iter().enumerate() {
            x = block.conv.forward(&x);
            if let Some(norm) = &block.norm {
                x = norm.forward(&x);
            }
            x = x.relu();
            if let Some(pool) = block.pool {
                x = x.max_pool2d(pool, pool, [0, 0], [1, 1], false);
            }
            x = hooks.site(Site::ConvBlockOutput as u32, index as u32, x)?;
        }
        // (b, c, h, w) → one c-vector per width column, averaged over the height.
        let columns = x.mean_dim(2, false, x.kind()).transpose(1, 2);
        let mut x = hooks.site(Site::VisualFeatures as u32, 0, columns)?;
        for (l, (lstm, linear)) in self.sequence.iter().enumerate() {
            let recurrent = lstm.forward(&x, hooks, Site::Lstm as u32, l as u32)?;
            x = hooks.site(sequence_output_site(), l as u32, linear.forward(&recurrent))?;
        }
        Ok(self.prediction.forward(&x))
    }
}

fn catalog(config: &CrnnConfig, channels: &[i64; CONV_BLOCKS]) -> ModelCatalog {
    let (c, hidden) = (config.output_channel, config.hidden_size);
    let mut conv = component("conv_block_output", SiteLayout::FeatureMap, c as u32, CONV_BLOCKS as u32, None, &[]);
    conv.layer_dims = channels.iter().map(|&d| d as u32).collect();
    let mut components: Vec<ComponentInfo> =
        vec![conv, component("visual_features", SiteLayout::Sequence, c as u32, 1, None, &[])];
    components.extend(lstm::components(hidden, &[c, hidden], 2));
    components.push(component(
        "sequence_output",
        SiteLayout::Sequence,
        hidden as u32,
        SEQUENCE_LAYERS as u32,
        None,
        &[],
    ));
    ModelCatalog {
        model_type: "crnn".into(),
        num_layers: SEQUENCE_LAYERS as u32,
        num_heads: 0,
        hidden_size: hidden as u32,
        vocab_size: config.characters.chars().count() as u32 + 1,
        max_positions: 0,
        input: InputKind::Features,
        components: components.into(),
    }
}

impl Model for Crnn {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let pixels = match inputs.features {
            ROption::RSome(pixels) => pixels.to_tensor(),
            ROption::RNone => return Err(PluginError::invalid_input("a CRNN needs a text image as \"inputs\"")),
        };
        let size = pixels.size();
        if size.len() != 4 || size[1] != self.input_channel || size[2] < 32 || size[3] < 8 {
            return Err(PluginError::invalid_input(format!(
                "a CRNN takes images (batch, {}, height ≥ 32, width ≥ 8), normalised to [-1, 1]; got {size:?}",
                self.input_channel
            )));
        }
        let weight = self.prediction.weight();
        let pixels = pixels.to_kind(weight.kind()).to_device(weight.device());
        Ok(ModelOutput { output: self.forward_pixels(&pixels, hooks)?, present: Vec::new() })
    }

    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(self.parameters.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect())
    }
}
