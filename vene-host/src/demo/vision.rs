//! The demo's CNN: a small ResNet trained by vene ([`vene_nn::resnet`]) on Fashion-MNIST, saved in transformers'
//! ResNet layout.

use std::path::Path;

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::Hooks;
use vene_nn::resnet::{ResNetBody, ResNetConfig};

use crate::{
    datasets::CLASSES,
    error::{Result, VeneError},
};

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
    progress: impl FnMut(usize, usize, f64),
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
    let logits = |images: &Tensor, training: bool| -> Result<Tensor> {
        body.forward(images, &mut Hooks::none(), training)
            .map_err(|error| VeneError::Model { context: "the demo ResNet".to_string(), error })
    };
    let sizes = (train_images, test_images);
    let accuracy = super::fit_image_classifier(&parameters, 3e-3, data, sizes, &mut rng, logits, progress)?;
    std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
    let saved: Vec<(String, Tensor)> =
        parameters.iter().chain(&buffers).map(|(n, t)| (n.clone(), t.detach())).collect();
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &saved)?;
    let path = dir.join("config.json");
    vene_checkpoint::write_atomic(&path, config_value.to_string().as_bytes())
        .map_err(|source| VeneError::Io { path, source })?;
    Ok(accuracy)
}
