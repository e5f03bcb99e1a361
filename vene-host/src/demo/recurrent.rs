//! The demo's GRU: a language model on the same fact corpus, trained with vene's GRU body ([`vene_nn::gru`]) and
//! saved in pyvene's `GRULMHeadModel` layout.

use std::{collections::HashMap, path::Path};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tch::Tensor;
use vene_api::{Hooks, ModelInputs};
use vene_nn::gru::{GruBody, GruConfig};

use super::corpus;
use crate::error::{Result, VeneError};

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
    let bound = 1.0 / (width as f64).sqrt();
    let mut uniform = |shape: &[i64], scale: f64| {
        let distribution = Normal::new(0.0f32, scale as f32).expect("a positive scale");
        let count = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..count).map(|_| distribution.sample(&mut rng)).collect();
        Tensor::from_slice(&values).view(shape).set_requires_grad(true)
    };
    let mut parameters = vec![("wte.weight".to_string(), uniform(&[vocab.len() as i64, width], 0.1))];
    for layer in 0..layers {
        for part in ["x2h", "h2h"] {
            parameters.push((format!("cells.{layer}.{part}.weight"), uniform(&[3 * width, width], bound)));
            parameters.push((format!("cells.{layer}.{part}.bias"), uniform(&[3 * width], bound)));
        }
    }
    let mut weights = vene_checkpoint::Weights::from_tensors(
        dir,
        parameters.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
    );
    let body = GruBody::load(&mut weights, config)?;
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
    std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
    let saved: Vec<(String, Tensor)> = parameters.iter().map(|(n, t)| (format!("gru.{n}"), t.detach())).collect();
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &saved)?;
    for (name, value) in [("config.json", config_value), ("tokenizer.json", corpus::tokenizer_json(&vocab))] {
        let path = dir.join(name);
        vene_checkpoint::write_atomic(&path, value.to_string().as_bytes())
            .map_err(|source| VeneError::Io { path, source })?;
    }
    Ok(recent.iter().sum::<f64>() / recent.len().max(1) as f64)
}
