//! The demo's GRUs, trained with vene's GRU body ([`vene_nn::gru`]): a language model on the fact corpus, saved in
//! pyvene's `GRULMHeadModel` layout, and a Fashion-MNIST classifier that reads an image two pixel rows per step,
//! saved in pyvene's `GRUForClassification` layout.

use std::{collections::HashMap, path::Path};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tch::Tensor;
use vene_api::{Hooks, ModelInputs};
use vene_nn::gru::{GruBody, GruConfig};

use super::corpus;
use crate::{
    datasets::CLASSES,
    error::{Result, VeneError},
};

/// A trainable tensor of N(0, `std`) values.
fn normal(rng: &mut StdRng, shape: &[i64], std: f64) -> Tensor {
    let distribution = Normal::new(0.0f32, std as f32).expect("a positive standard deviation");
    let count = shape.iter().product::<i64>() as usize;
    let values: Vec<f32> = (0..count).map(|_| distribution.sample(rng)).collect();
    Tensor::from_slice(&values).view(shape).set_requires_grad(true)
}

/// The GRU cells' weights under pyvene's names.
fn cell_parameters(rng: &mut StdRng, width: i64, layers: i64) -> Vec<(String, Tensor)> {
    let bound = 1.0 / (width as f64).sqrt();
    let mut parameters = Vec::new();
    for layer in 0..layers {
        for part in ["x2h", "h2h"] {
            parameters.push((format!("gru.cells.{layer}.{part}.weight"), normal(rng, &[3 * width, width], bound)));
            parameters.push((format!("gru.cells.{layer}.{part}.bias"), normal(rng, &[3 * width], bound)));
        }
    }
    parameters
}

/// The GRU body over `parameters` (saved names; the body reads them without `gru.`, as the adapter loads them).
fn body(dir: &Path, parameters: &[(String, Tensor)], config: GruConfig) -> Result<GruBody> {
    let tensors = parameters.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let mut weights = vene_checkpoint::Weights::from_tensors(dir, tensors);
    weights.strip_prefixes(&["gru."]);
    Ok(GruBody::load(&mut weights, config)?)
}

/// Writes `parameters` and the JSON files to `dir`.
fn save(dir: &Path, parameters: &[(String, Tensor)], files: &[(&str, serde_json::Value)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
    let saved: Vec<(String, Tensor)> = parameters.iter().map(|(n, t)| (n.clone(), t.detach())).collect();
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &saved)?;
    for (name, value) in files {
        let path = dir.join(name);
        vene_checkpoint::write_atomic(&path, value.to_string().as_bytes())
            .map_err(|source| VeneError::Io { path, source })?;
    }
    Ok(())
}

/// Pixel rows per step of the image classifier: a 28 × 28 image is 14 steps of 56 values.
pub const ROWS_PER_STEP: i64 = 2;

/// Fashion-MNIST images `(n, 1, 28, 28)` as the classifier's steps `(n, 14, 56)`.
pub fn image_steps(images: &Tensor) -> Tensor {
    let size = images.size();
    let (n, height, width) = (size[0], size[size.len() - 2], size[size.len() - 1]);
    images.reshape([n, height / ROWS_PER_STEP, ROWS_PER_STEP * width])
}

/// Trains the demo GRU classifier on the first `train_images` Fashion-MNIST training images (one pass) and writes it
/// to `dir`; returns the accuracy on the first `test_images` test images.
pub fn train_classifier(
    dir: &Path,
    data: &Path,
    train_images: usize,
    test_images: usize,
    seed: u64,
    progress: impl FnMut(usize, usize, f64),
) -> Result<f64> {
    let (width, layers, labels) = (28 * ROWS_PER_STEP, 2i64, CLASSES.len() as i64);
    let config_value = json!({
        "model_type": "gru", "architectures": ["GRUForClassification"], "h_dim": width, "n_layer": layers,
        "include_emb": false, "include_bias": true, "n_labels": labels, "pdrop": 0.0
    });
    let config: GruConfig =
        serde_json::from_value(config_value.clone()).map_err(|e| VeneError::Config(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut parameters = cell_parameters(&mut rng, width, layers);
    parameters.push(("score.weight".to_string(), normal(&mut rng, &[labels, width], 1.0 / (width as f64).sqrt())));
    let body = body(dir, &parameters, config)?;
    let score = parameters.last().map(|(_, t)| t.shallow_clone()).expect("the score weight was just pushed");
    let classify = |images: &Tensor, _training: bool| -> Result<Tensor> {
        let steps = image_steps(images);
        let states = body
            .forward(&ModelInputs::features(&steps), &mut Hooks::none())
            .map_err(|error| VeneError::Model { context: "the demo GRU classifier".to_string(), error })?;
        Ok(states.select(1, -1).matmul(&score.tr()))
    };
    let sizes = (train_images, test_images);
    let accuracy = super::fit_image_classifier(&parameters, 5e-3, data, sizes, &mut rng, classify, progress)?;
    save(dir, &parameters, &[("config.json", config_value)])?;
    Ok(accuracy)
}

/// Trains the demo GRU language model and writes it to `dir`; returns the final mean loss.
pub fn train(dir: &Path, seed: u64, steps: usize, mut progress: impl FnMut(usize, usize, f64)) -> Result<f64> {
    let (width, layers) = (64i64, 2i64);
    let vocab = corpus::vocabulary();
    let index: HashMap<&str, i64> = vocab.iter().enumerate().map(|(i, w)| (w.as_str(), i as i64)).collect();
    let sentences: Vec<Vec<i64>> =
        corpus::sentences().iter().map(|s| s.iter().map(|w| index[w.as_str()]).collect()).collect();
    let longest = sentences.iter().map(Vec::len).max().unwrap_or(1);
    let config_value = json!({
        "model_type": "gru", "architectures": ["GRULMHeadModel"], "h_dim": width, "n_layer": layers,
        "include_emb": true, "include_bias": true, "vocab_size": vocab.len(), "max_position_embeddings": 16,
        "n_labels": 2, "pdrop": 0.0
    });
    let config: GruConfig =
        serde_json::from_value(config_value.clone()).map_err(|e| VeneError::Config(e.to_string()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut parameters = vec![("gru.wte.weight".to_string(), normal(&mut rng, &[vocab.len() as i64, width], 0.1))];
    parameters.extend(cell_parameters(&mut rng, width, layers));
    let body = body(dir, &parameters, config)?;
    let wte = body.wte().map(Tensor::shallow_clone).ok_or_else(|| VeneError::Config("no embedding".to_string()))?;
    let mut optimizer = tch::COptimizer::adam(5e-3, 0.9, 0.999, 0.0, 1e-8, false)?;
    for (_, parameter) in &parameters {
        optimizer.add_parameters(parameter, 0)?;
    }
    let batch = 32;
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    let mut cursor = order.len();
    let mut recent = Vec::new();
    for step in 0..steps {
        let mut rows = Vec::with_capacity(batch);
        while rows.len() < batch {
            if cursor == order.len() {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            rows.push(&sentences[order[cursor]]);
            cursor += 1;
        }
        let padded: Vec<i64> =
            rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, longest - r.len()))).collect();
        let ids = Tensor::from_slice(&padded).view([batch as i64, longest as i64]);
        let inputs = ModelInputs::token_ids(&ids);
        let states = body
            .forward(&inputs, &mut Hooks::none())
            .map_err(|error| VeneError::Model { context: "training the demo GRU".to_string(), error })?;
        let logits = states.matmul(&wte.tr());
        let vocab_size = logits.size()[2];
        let predictions = logits.narrow(1, 0, longest as i64 - 1).reshape([-1, vocab_size]);
        let targets = ids.narrow(1, 1, longest as i64 - 1).reshape([-1]);
        let loss = predictions.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, 0, 0.0);
        optimizer.zero_grad()?;
        loss.backward();
        optimizer.step()?;
        let value = loss.double_value(&[]);
        recent.push(value);
        if recent.len() > 50 {
            recent.remove(0);
        }
        progress(step + 1, steps, value);
    }
    save(dir, &parameters, &[("config.json", config_value), ("tokenizer.json", corpus::tokenizer_json(&vocab))])?;
    Ok(recent.iter().sum::<f64>() / recent.len().max(1) as f64)
}
