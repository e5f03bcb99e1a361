//! vene model adapter for EfficientNet-Lite image classifiers (`model_type` "efficientnet_lite") in
//! efficientnet_pytorch's state-dict layout (`_conv_stem`, `_blocks.N._expand_conv`, …, `_fc`): a stem
//! convolution, MBConv blocks (1×1 expansion, depthwise k×k, 1×1 projection, a residual where shapes allow; Lite has
//! no squeeze-excitation and uses ReLU6), a 1×1 head convolution, average pooling and a linear classifier.
//!
//! Sites, all `(b, c, h, w)` feature maps with units `channel` and `pos` (`row * w + col`) except `pooled`:
//! `stem_output`; per block `expand_output` (the block's input where it does not expand), `depthwise_output`,
//! `block_output`; `head_output`; `pooled` `(b, 1280)`. The output is the ImageNet logits.

use std::path::Path;

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::ROption, model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter,
    ModelCatalog, ModelInputs, PluginError, PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{
    component,
    conv::{BatchNorm, Conv, Padding},
    Linear,
};

vene_api::export_plugin! {
    adapters: [EfficientNetAdapter],
    interventions: [],
}

/// One stage of MBConv blocks (efficientnet_pytorch's `BlockArgs`).
#[derive(Debug, Clone, Deserialize)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: i64,
    pub stride: i64,
    pub expand_ratio: i64,
    pub out: i64,
}

/// The fields of an EfficientNet-Lite config.json.
#[derive(Debug, Clone, Deserialize)]
pub struct EfficientNetConfig {
    pub stem_channels: i64,
    pub head_channels: i64,
    pub stages: Vec<Stage>,
    pub num_labels: i64,
    #[serde(default = "default_epsilon")]
    pub batch_norm_eps: f64,
    /// "same" (TensorFlow's, as the Lite checkpoints were trained) or "symmetric" (torch's `k // 2`).
    #[serde(default = "default_padding")]
    pub padding: String,
}

fn default_epsilon() -> f64 {
    1e-3
}

fn default_padding() -> String {
    "same".into()
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Site {
    StemOutput,
    ExpandOutput,
    DepthwiseOutput,
    BlockOutput,
    HeadOutput,
    Pooled,
}

/// Loads `efficientnet_lite` checkpoints.
pub struct EfficientNetAdapter;

impl ModelAdapter for EfficientNetAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["efficientnet_lite".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let load = || -> Result<EfficientNet, Box<dyn std::error::Error>> {
            let config: EfficientNetConfig = vene_checkpoint::read_config(dir)?;
            let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
            EfficientNet::load(&mut weights, &config)
        };
        Ok(Box::new(load().map_err(|e| PluginError::load(e.to_string()))?))
    }
}

/// A convolution followed by its batch norm.
struct ConvNorm {
    conv: Conv,
    norm: BatchNorm,
}

impl ConvNorm {
    #[allow(clippy::too_many_arguments)]
    fn load(
        weights: &mut Weights,
        conv: &str,
        norm: &str,
        shape: &[i64],
        stride: i64,
        groups: i64,
        padding: Padding,
        epsilon: f64,
    ) -> vene_checkpoint::Result<Self> {
        Ok(Self {
            conv: Conv::load(weights, conv, shape, false, stride, padding, groups)?,
            norm: BatchNorm::load(weights, norm, shape[0], epsilon)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.norm.forward(&self.conv.forward(x))
    }
}

struct Block {
    expand: Option<ConvNorm>,
    depthwise: ConvNorm,
    project: ConvNorm,
    residual: bool,
}

/// A loaded EfficientNet-Lite.
pub struct EfficientNet {
    stem: ConvNorm,
    blocks: Vec<Block>,
    head: ConvNorm,
    classifier: Linear,
    catalog: ModelCatalog,
}

impl EfficientNet {
    fn load(weights: &mut Weights, config: &EfficientNetConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let same = match config.padding.as_str() {
            "same" => true,
            "symmetric" => false,
            other => return Err(format!("padding '{other}' is not supported (same, symmetric are)").into()),
        };
        let eps = config.batch_norm_eps;
        let pad = |kernel: i64| if same { Padding::Same } else { Padding::Symmetric(kernel / 2) };
        let stem_shape = [config.stem_channels, 3, 3, 3];
        let stem = ConvNorm::load(weights, "_conv_stem", "_bn0", &stem_shape, 2, 1, pad(3), eps)?;
        let mut blocks = Vec::new();
        let mut input = config.stem_channels;
        for stage in &config.stages {
            for repeat in 0..stage.repeats {
                let p = format!("_blocks.{}", blocks.len());
                let stride = if repeat == 0 { stage.stride } else { 1 };
                let wide = input * stage.expand_ratio;
                let expand = if stage.expand_ratio != 1 {
                    let (conv, norm) = (format!("{p}._expand_conv"), format!("{p}._bn0"));
                    Some(ConvNorm::load(weights, &conv, &norm, &[wide, input, 1, 1], 1, 1, pad(1), eps)?)
                } else {
                    None
                };
                let (conv, norm) = (format!("{p}._depthwise_conv"), format!("{p}._bn1"));
                let k = stage.kernel;
                let depthwise = ConvNorm::load(weights, &conv, &norm, &[wide, 1, k, k], stride, wide, pad(k), eps)?;
                let (conv, norm) = (format!("{p}._project_conv"), format!("{p}._bn2"));
                let project = ConvNorm::load(weights, &conv, &norm, &[stage.out, wide, 1, 1], 1, 1, pad(1), eps)?;
                blocks.push(Block { expand, depthwise, project, residual: stride == 1 && input == stage.out });
                input = stage.out;
            }
        }
        let head_shape = [config.head_channels, input, 1, 1];
        let head = ConvNorm::load(weights, "_conv_head", "_bn1", &head_shape, 1, 1, pad(1), eps)?;
        let classifier = Linear::load(weights, "_fc", config.head_channels, config.num_labels, true)?;
        Ok(Self { stem, blocks, head, classifier, catalog: catalog(config) })
    }

    fn forward_pixels(&self, x: &Tensor, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let mut x = hooks.site(Site::StemOutput as u32, 0, self.stem.forward(x).relu6())?;
        for (index, block) in self.blocks.iter().enumerate() {
            let layer = index as u32;
            let expanded = match &block.expand {
                Some(expand) => expand.forward(&x).relu6(),
                None => x.shallow_clone(),
            };
            let expanded = hooks.site(Site::ExpandOutput as u32, layer, expanded)?;
            let depthwise =
                hooks.site(Site::DepthwiseOutput as u32, layer, block.depthwise.forward(&expanded).relu6())?;
            let projected = block.project.forward(&depthwise);
            let output = if block.residual { projected + &x } else { projected };
            x = hooks.site(Site::BlockOutput as u32, layer, output)?;
        }
        let head = hooks.site(Site::HeadOutput as u32, 0, self.head.forward(&x).relu6())?;
        let pooled = hooks.site(Site::Pooled as u32, 0, head.mean_dim([2, 3].as_slice(), false, head.kind()))?;
        Ok(self.classifier.forward(&pooled))
    }
}

fn catalog(config: &EfficientNetConfig) -> ModelCatalog {
    let (mut wide, mut out) = (Vec::new(), Vec::new());
    let mut input = config.stem_channels;
    for stage in &config.stages {
        for _ in 0..stage.repeats {
            wide.push((input * stage.expand_ratio) as u32);
            out.push(stage.out as u32);
            input = stage.out;
        }
    }
    let per_block = |name: &str, dims: &[u32]| {
        let mut info = component(name, SiteLayout::FeatureMap, 0, dims.len() as u32, None, &[]);
        info.dim = dims.iter().copied().max().unwrap_or(0);
        info.layer_dims = dims.to_vec().into();
        info
    };
    let head = config.head_channels as u32;
    let components = vec![
        component("stem_output", SiteLayout::FeatureMap, config.stem_channels as u32, 1, None, &[]),
        per_block("expand_output", &wide),
        per_block("depthwise_output", &wide),
        per_block("block_output", &out),
        component("head_output", SiteLayout::FeatureMap, head, 1, None, &[]),
        component("pooled", SiteLayout::Flat, head, 1, None, &[]),
    ];
    ModelCatalog {
        model_type: "efficientnet_lite".into(),
        num_layers: out.len() as u32,
        num_heads: 0,
        hidden_size: head,
        vocab_size: 0,
        max_positions: 0,
        input: InputKind::Features,
        components: components.into(),
    }
}

impl Model for EfficientNet {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
        let pixels = match inputs.features {
            ROption::RSome(pixels) => pixels.to_tensor(),
            ROption::RNone => return Err(PluginError::invalid_input("EfficientNet needs pixel values as \"inputs\"")),
        };
        let size = pixels.size();
        if size.len() != 4 || size[1] != 3 || size[2] < 32 || size[3] < 32 {
            return Err(PluginError::invalid_input(format!(
                "pixel values must be (batch, 3, height ≥ 32, width ≥ 32), normalised as config.json's preprocess \
                 says; got {size:?}"
            )));
        }
        let weight = self.classifier.weight();
        let pixels = pixels.to_kind(weight.kind()).to_device(weight.device());
        Ok(ModelOutput { output: self.forward_pixels(&pixels, hooks)?, present: Vec::new() })
    }
}
