//! CNN feature maps: zero one channel at a time and measure the true class's probability (Fashion-MNIST test images).

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::output::Figure;
use crate::{
    config::IntervenableConfig,
    datasets::load_split,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

/// Zeroing one channel of a feature map at a time: mean probability of the true class on test images.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStudy {
    pub images: usize,
    pub accuracy: f64,
    pub baseline: f64,
    /// Mean p(true class) with channel c zeroed.
    pub zeroed: Vec<f64>,
}

/// `layer` of `component` (a feature-map site) has its channels zeroed one at a time.
pub fn channel_study(
    model: LoadedModel,
    plugins: &PluginSet,
    component: &str,
    layer: u32,
    data: &Path,
    images: usize,
) -> Result<(ChannelStudy, LoadedModel)> {
    let (pixels, labels) = load_split(data, "t10k", images)?;
    let inputs = ForwardInputs {
        input_ids: None,
        features: Some(pixels.to_device(model.device())),
        attention_mask: None,
        past: Vec::new(),
        use_cache: false,
        output_positions: None,
    };
    let _no_grad = tch::no_grad_guard();
    let true_class = |logits: &Tensor| -> f64 {
        let probabilities = logits.softmax(-1, Kind::Float).to_device(tch::Device::Cpu);
        probabilities.gather(1, &labels.view([-1, 1]), false).mean(Kind::Float).double_value(&[])
    };
    let plain = model.forward_plain(&inputs)?.output;
    let accuracy = plain
        .argmax(-1, false)
        .to_device(tch::Device::Cpu)
        .eq_tensor(&labels)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    let baseline = true_class(&plain);
    let channels =
        model.catalog().components.iter().find(|c| c.name.as_str() == "block_output").map_or(0, |c| c.dim_at(0));
    let mut model = model;
    let mut zeroed = Vec::new();
    for channel in 0..i64::from(channels) {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
            {"layer": layer, "component": component, "unit": "channel", "intervention": {"type": "zero"}}]}))
        .map_err(|e| VeneError::Config(e.to_string()))?;
        let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
        let locations = UnitLocations::parse(Some(&json!({"base": channel})))?;
        zeroed.push(true_class(&intervenable.run(&inputs, &[], &locations, &Subspaces::None)?.output));
        model = intervenable.into_model();
    }
    Ok((ChannelStudy { images, accuracy, baseline, zeroed }, model))
}

impl ChannelStudy {
    /// Mean p(true class) with each channel zeroed, beside the unintervened mean.
    pub fn lines(&self, name: &str, title: &str) -> Figure {
        let series = vec![
            ("channel zeroed".to_string(), self.zeroed.clone()),
            ("no intervention".to_string(), vec![self.baseline; self.zeroed.len()]),
        ];
        Figure::Lines { name: name.to_string(), title: title.to_string(), x_label: "channel".to_string(), series }
    }
}
