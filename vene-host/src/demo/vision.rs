//! The demo's CNN: a small ResNet trained by vene ([`vene_nn::resnet`]) on Fashion-MNIST (Debian package
//! `dataset-fashion-mnist`, or `VENE_FASHION_MNIST=DIR` with the four IDX `.gz` files), saved in transformers' ResNet
//! layout; and the channel study run on it.

use std::{io::Read, path::Path, path::PathBuf};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::Hooks;
use vene_nn::resnet::{ResNetBody, ResNetConfig};

use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

pub const CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// Where the Fashion-MNIST files are, if anywhere.
pub fn dataset_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VENE_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    dir.join("train-images-idx3-ubyte.gz").exists().then_some(dir)
}

/// Reads a gzipped IDX file: its dimensions and bytes.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let io = |source| VeneError::Io { path: path.to_path_buf(), source };
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).map_err(io)?).read_to_end(&mut bytes).map_err(io)?;
    let invalid = |what: &str| VeneError::Inputs(format!("{} is not an IDX file: {what}", path.display()));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 {
        return Err(invalid("bad magic number"));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(invalid("truncated header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    if bytes.len() - header != dims.iter().product::<usize>() {
        return Err(invalid("the data does not match the declared dimensions"));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Images `(n, 1, 28, 28)` scaled to `[0, 1]` and normalised, and labels `(n)`, the first `limit` of a split.
pub fn load_split(dir: &Path, split: &str, limit: usize) -> Result<(Tensor, Tensor)> {
    let (dims, pixels) = read_idx(&dir.join(format!("{split}-images-idx3-ubyte.gz")))?;
    let (_, labels) = read_idx(&dir.join(format!("{split}-labels-idx1-ubyte.gz")))?;
    let n = dims[0].min(limit).min(labels.len());
    let (h, w) = (dims[1] as i64, dims[2] as i64);
    let images =
        Tensor::from_slice(&pixels[..n * (h * w) as usize]).view([n as i64, 1, h, w]).to_kind(Kind::Float) / 255.0;
    let images = (images - 0.2860) / 0.3530;
    let labels = Tensor::from_slice(&labels[..n]).to_kind(Kind::Int64);
    Ok((images, labels))
}

fn config_json() -> serde_json::Value {
    json!({
        "model_type": "resnet", "architectures": ["ResNetForImageClassification"], "num_channels": 1,
        "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic", "hidden_act": "relu",
        "downsample_in_first_stage": false, "num_labels": 10,
        "id2label": CLASSES.iter().enumerate().map(|(i, c)| (i.to_string(), json!(c))).collect::<serde_json::Map<_, _>>()
    })
}

/// Trains the demo ResNet on `train_images` Fashion-MNIST images and writes it to `dir`; returns the held-out
/// accuracy on `test_images` test images.
pub fn train(
    dir: &Path,
    data: &Path,
    train_images: usize,
    test_images: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<f64> {
    let config_value = config_json();
    let config: ResNetConfig =
        serde_json::from_value(config_value.clone()).map_err(|e| VeneError::Config(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = |shape: &[i64], std: f64| {
        let distribution = Normal::new(0.0f32, std as f32).expect("a positive standard deviation");
        let count = shape.iter().product::<i64>() as usize;
        Tensor::from_slice(&(0..count).map(|_| distribution.sample(&mut rng)).collect::<Vec<f32>>()).view(shape)
    };
    let mut parameters: Vec<(String, Tensor)> = Vec::new();
    let mut buffers: Vec<(String, Tensor)> = Vec::new();
    let mut conv = |parameters: &mut Vec<(String, Tensor)>, prefix: &str, shape: [i64; 4]| {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        parameters.push((format!("{prefix}.convolution.weight"), normal(&shape, (2.0 / fan_in).sqrt())));
        parameters.push((
            format!("{prefix}.normalization.weight"),
            Tensor::ones([shape[0]], (Kind::Float, tch::Device::Cpu)),
        ));
        parameters
            .push((format!("{prefix}.normalization.bias"), Tensor::zeros([shape[0]], (Kind::Float, tch::Device::Cpu))));
        buffers.push((
            format!("{prefix}.normalization.running_mean"),
            Tensor::zeros([shape[0]], (Kind::Float, tch::Device::Cpu)),
        ));
        buffers.push((
            format!("{prefix}.normalization.running_var"),
            Tensor::ones([shape[0]], (Kind::Float, tch::Device::Cpu)),
        ));
    };
    conv(&mut parameters, "resnet.embedder.embedder", [8, 1, 7, 7]);
    conv(&mut parameters, "resnet.encoder.stages.0.layers.0.layer.0", [8, 8, 3, 3]);
    conv(&mut parameters, "resnet.encoder.stages.0.layers.0.layer.1", [8, 8, 3, 3]);
    conv(&mut parameters, "resnet.encoder.stages.1.layers.0.shortcut", [16, 8, 1, 1]);
    conv(&mut parameters, "resnet.encoder.stages.1.layers.0.layer.0", [16, 8, 3, 3]);
    conv(&mut parameters, "resnet.encoder.stages.1.layers.0.layer.1", [16, 16, 3, 3]);
    parameters.push(("classifier.1.weight".to_string(), normal(&[10, 16], 0.1)));
    parameters.push(("classifier.1.bias".to_string(), Tensor::zeros([10], (Kind::Float, tch::Device::Cpu))));
    let parameters: Vec<(String, Tensor)> =
        parameters.into_iter().map(|(n, t)| (n, t.set_requires_grad(true))).collect();
    let all = parameters.iter().chain(&buffers).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let mut weights = vene_checkpoint::Weights::from_tensors(dir, all);
    let body = ResNetBody::load(&mut weights, &config).map_err(|e| VeneError::Config(e.to_string()))?;
    let (images, labels) = load_split(data, "train", train_images)?;
    let mut optimizer = tch::COptimizer::adam(3e-3, 0.9, 0.999, 0.0, 1e-8, false)?;
    for (_, parameter) in &parameters {
        optimizer.add_parameters(parameter, 0)?;
    }
    let batch = 64;
    let count = images.size()[0] as usize;
    let mut order: Vec<i64> = (0..count as i64).collect();
    order.shuffle(&mut rng);
    let steps = count / batch;
    for step in 0..steps {
        let index = Tensor::from_slice(&order[step * batch..(step + 1) * batch]);
        let logits = body
            .forward(&images.index_select(0, &index), &mut Hooks::none(), true)
            .map_err(|error| VeneError::Model { context: "training the demo ResNet".to_string(), error })?;
        let loss = logits.cross_entropy_for_logits(&labels.index_select(0, &index));
        optimizer.zero_grad()?;
        loss.backward();
        optimizer.step()?;
        progress(step + 1, steps, loss.double_value(&[]));
    }
    let (test, test_labels) = load_split(data, "t10k", test_images)?;
    let accuracy = tch::no_grad(|| -> Result<f64> {
        let logits = body
            .forward(&test, &mut Hooks::none(), false)
            .map_err(|error| VeneError::Model { context: "evaluating the demo ResNet".to_string(), error })?;
        Ok(logits.argmax(-1, false).eq_tensor(&test_labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]))
    })?;
    std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
    let saved: Vec<(String, Tensor)> =
        parameters.iter().chain(&buffers).map(|(n, t)| (n.clone(), t.detach())).collect();
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &saved)?;
    let path = dir.join("config.json");
    vene_checkpoint::write_atomic(&path, config_value.to_string().as_bytes())
        .map_err(|source| VeneError::Io { path, source })?;
    Ok(accuracy)
}

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
