//! transformers' `ResNetModel` / `ResNetForImageClassification` (basic or bottleneck blocks), with its hook sites.
//! Used by the ResNet adapter and, to train the demo's CNN, by the host.

use serde::Deserialize;
use tch::Tensor;
use vene_api::{
    abi_stable::std_types::{RString, RVec},
    ComponentInfo, Hooks, InputKind, ModelCatalog, PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;

use crate::{Activation, Linear};

/// The fields of a transformers `ResNetConfig` the ResNet body reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ResNetConfig {
    #[serde(default = "default_channels")]
    pub num_channels: i64,
    pub embedding_size: i64,
    pub hidden_sizes: Vec<i64>,
    pub depths: Vec<i64>,
    #[serde(default = "default_layer_type")]
    pub layer_type: String,
    #[serde(default = "default_activation")]
    pub hidden_act: String,
    #[serde(default)]
    pub downsample_in_first_stage: bool,
    #[serde(default)]
    pub downsample_in_bottleneck: bool,
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<i64>,
}

fn default_channels() -> i64 {
    3
}

fn default_layer_type() -> String {
    "bottleneck".to_string()
}

fn default_activation() -> String {
    "relu".to_string()
}

/// ResNet's hook sites, in catalog order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Site {
    EmbedderOutput,
    BlockInput,
    BlockOutput,
    StageOutput,
    PoolerOutput,
}

/// Convolution without bias, batch norm (running statistics), optional activation.
pub struct ConvLayer {
    weight: Tensor,
    stride: i64,
    norm: [Tensor; 4],
    activation: Option<Activation>,
}

const BATCH_NORM_EPSILON: f64 = 1e-5;

impl ConvLayer {
    pub fn load(
        weights: &mut Weights,
        prefix: &str,
        shape: [i64; 4],
        stride: i64,
        activation: Option<Activation>,
    ) -> vene_checkpoint::Result<Self> {
        let weight = weights.take(&format!("{prefix}.convolution.weight"), &shape)?;
        let out = shape[0];
        let norm = ["weight", "bias", "running_mean", "running_var"]
            .map(|name| weights.take(&format!("{prefix}.normalization.{name}"), &[out]));
        let [a, b, c, d] = norm;
        Ok(Self { weight, stride, norm: [a?, b?, c?, d?], activation })
    }

    /// `training` normalises with the batch's statistics and updates the running ones (in place).
    fn forward(&self, x: &Tensor, training: bool) -> Tensor {
        let padding = self.weight.size()[2] / 2;
        let y = x.conv2d(&self.weight, None::<Tensor>, [self.stride, self.stride], [padding, padding], [1, 1], 1);
        let [weight, bias, mean, var] = &self.norm;
        let y = Tensor::batch_norm(
            &y,
            Some(weight),
            Some(bias),
            Some(mean),
            Some(var),
            training,
            0.1,
            BATCH_NORM_EPSILON,
            false,
        );
        match self.activation {
            Some(activation) => activation.forward(&y),
            None => y,
        }
    }
}

struct Block {
    shortcut: Option<ConvLayer>,
    layers: Vec<ConvLayer>,
}

/// A ResNet: stem, residual stages, pooling and (with labels) a classifier.
pub struct ResNetBody {
    activation: Activation,
    embedder: ConvLayer,
    /// Residual blocks per stage.
    stages: Vec<Vec<Block>>,
    classifier: Option<Linear>,
    pub num_channels: i64,
}

impl ResNetBody {
    /// Loads from `weights` named as transformers saves them (`resnet.embedder…`, `classifier.1…`).
    pub fn load(weights: &mut Weights, config: &ResNetConfig) -> Result<Self, Box<dyn std::error::Error>> {
        let activation = Activation::from_name(&config.hidden_act).ok_or_else(|| {
            format!("hidden_act '{}' is not supported ({} are)", config.hidden_act, Activation::NAMES)
        })?;
        let bottleneck = match config.layer_type.as_str() {
            "basic" => false,
            "bottleneck" => true,
            other => return Err(format!("layer_type '{other}' is not supported (basic, bottleneck are)").into()),
        };
        if config.depths.len() != config.hidden_sizes.len() || config.depths.is_empty() {
            return Err("depths and hidden_sizes must be non-empty and of equal length".into());
        }
        let act = Some(activation);
        let embedder = ConvLayer::load(
            weights,
            "resnet.embedder.embedder",
            [config.embedding_size, config.num_channels, 7, 7],
            2,
            act,
        )?;
        let mut stages = Vec::new();
        let mut in_channels = config.embedding_size;
        for (s, (&out, &depth)) in config.hidden_sizes.iter().zip(&config.depths).enumerate() {
            let first_stride = if s == 0 && !config.downsample_in_first_stage { 1 } else { 2 };
            let mut blocks = Vec::new();
            for i in 0..depth {
                let (input, stride) = if i == 0 { (in_channels, first_stride) } else { (out, 1) };
                let p = format!("resnet.encoder.stages.{s}.layers.{i}");
                let shortcut = if input != out || stride != 1 {
                    Some(ConvLayer::load(weights, &format!("{p}.shortcut"), [out, input, 1, 1], stride, None)?)
                } else {
                    None
                };
                let layers = if bottleneck {
                    let reduced = out / 4;
                    let (first, second) = if config.downsample_in_bottleneck { (stride, 1) } else { (1, stride) };
                    vec![
                        ConvLayer::load(weights, &format!("{p}.layer.0"), [reduced, input, 1, 1], first, act)?,
                        ConvLayer::load(weights, &format!("{p}.layer.1"), [reduced, reduced, 3, 3], second, act)?,
                        ConvLayer::load(weights, &format!("{p}.layer.2"), [out, reduced, 1, 1], 1, None)?,
                    ]
                } else {
                    vec![
                        ConvLayer::load(weights, &format!("{p}.layer.0"), [out, input, 3, 3], stride, act)?,
                        ConvLayer::load(weights, &format!("{p}.layer.1"), [out, out, 3, 3], 1, None)?,
                    ]
                };
                blocks.push(Block { shortcut, layers });
            }
            stages.push(blocks);
            in_channels = out;
        }
        let labels = config.num_labels.or(config.id2label.as_ref().map(|m| m.len() as i64)).unwrap_or(0);
        let classifier =
            if labels > 0 { Some(Linear::load(weights, "classifier.1", in_channels, labels, true)?) } else { None };
        Ok(Self { activation, embedder, stages, classifier, num_channels: config.num_channels })
    }

    /// The classifier logits (or pooled features without labels) for pixels `(b, channels, h, w)`.
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks<'_>, training: bool) -> PluginResult<Tensor> {
        let stem = self.embedder.forward(x, training).max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut h = hooks.site(Site::EmbedderOutput as u32, 0, stem)?;
        let mut index = 0u32;
        for (stage, blocks) in self.stages.iter().enumerate() {
            for block in blocks {
                h = hooks.site(Site::BlockInput as u32, index, h)?;
                let residual = match &block.shortcut {
                    Some(shortcut) => shortcut.forward(&h, training),
                    None => h.shallow_clone(),
                };
                let body = block.layers.iter().fold(h.shallow_clone(), |acc, layer| layer.forward(&acc, training));
                h = hooks.site(Site::BlockOutput as u32, index, self.activation.forward(&(body + residual)))?;
                index += 1;
            }
            h = hooks.site(Site::StageOutput as u32, stage as u32, h)?;
        }
        let pooled = h.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        let pooled = hooks.site(Site::PoolerOutput as u32, 0, pooled)?;
        let output = match &self.classifier {
            Some(classifier) => classifier.forward(&pooled),
            None => pooled,
        };
        Ok(output)
    }

    pub fn kind(&self) -> tch::Kind {
        self.embedder.weight.kind()
    }

    pub fn device(&self) -> tch::Device {
        self.embedder.weight.device()
    }
}

/// The catalog of a ResNet with `config`.
pub fn catalog(config: &ResNetConfig) -> ModelCatalog {
    let blocks: Vec<u32> = config
        .hidden_sizes
        .iter()
        .zip(&config.depths)
        .enumerate()
        .flat_map(|(s, (&out, &depth))| {
            let input = if s == 0 { config.embedding_size } else { config.hidden_sizes[s - 1] };
            (0..depth).map(move |i| if i == 0 { input } else { out } as u32)
        })
        .collect();
    let block_outputs: Vec<u32> = config
        .hidden_sizes
        .iter()
        .zip(&config.depths)
        .flat_map(|(&out, &depth)| (0..depth).map(move |_| out as u32))
        .collect();
    let stages: Vec<u32> = config.hidden_sizes.iter().map(|&c| c as u32).collect();
    let last = *stages.last().unwrap_or(&0);
    let component = |name: &str, layout, dims: Vec<u32>, skip_input: Option<&str>, paths: &[&str]| ComponentInfo {
        name: name.into(),
        layout,
        dim: dims.iter().copied().max().unwrap_or(0),
        layers: dims.len() as u32,
        layer_dims: dims.into(),
        skip_input: skip_input.map(RString::from).into(),
        module_paths: paths.iter().map(|p| RString::from(*p)).collect::<RVec<_>>(),
    };
    use SiteLayout::{FeatureMap, Flat};
    let components = vec![
        component(
            "embedder_output",
            FeatureMap,
            vec![config.embedding_size as u32],
            None,
            &["resnet.embedder.output", "embedder.output"],
        ),
        component("block_input", FeatureMap, blocks, None, &[]),
        component("block_output", FeatureMap, block_outputs, None, &[]),
        component("stage_output", FeatureMap, stages.clone(), None, &["resnet.encoder.stages[{layer}].output"]),
        component("pooler_output", Flat, vec![last], None, &["resnet.pooler.output"]),
    ];
    ModelCatalog {
        model_type: "resnet".into(),
        num_layers: config.depths.iter().sum::<i64>() as u32,
        num_heads: 0,
        hidden_size: last,
        vocab_size: 0,
        max_positions: 0,
        input: InputKind::Features,
        components: components.into(),
    }
}
