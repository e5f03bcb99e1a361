//! Freshly initialised models in pyvene's layouts, for tasks no pretrained model exists for (a causal model's
//! task, trained with `vene train --train-model`).

use std::path::Path;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use tch::Tensor;

use crate::error::{Result, VeneError};

/// The shape of a pyvene `MLPForClassification`.
#[derive(Debug, Clone)]
pub struct MlpShape {
    pub h_dim: i64,
    pub n_layer: i64,
    pub num_classes: i64,
    /// A name the MLP adapter knows (`relu`, `gelu`, `tanh`, …).
    pub activation: String,
}

/// torch's `nn.Linear` initialisation: weight and bias uniform in ±1/√fan_in.
fn linear(rng: &mut StdRng, fan_in: i64, fan_out: i64) -> (Tensor, Tensor) {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut uniform = |count: i64| -> Vec<f32> { (0..count).map(|_| rng.gen_range(-bound..bound) as f32).collect() };
    let weight = Tensor::from_slice(&uniform(fan_in * fan_out)).view([fan_out, fan_in]);
    let bias = Tensor::from_slice(&uniform(fan_out));
    (weight, bias)
}

/// Writes a seeded, freshly initialised MLP classifier (config.json and model.safetensors) to `dir`.
pub fn new_mlp(dir: &Path, shape: &MlpShape, seed: u64) -> Result<()> {
    if shape.h_dim < 1 || shape.n_layer < 1 || shape.num_classes < 2 {
        return Err(VeneError::Config(format!(
            "an MLP needs h_dim ≥ 1, at least one layer and two classes (got h_dim {}, {} layers, {} classes)",
            shape.h_dim, shape.n_layer, shape.num_classes
        )));
    }
    let config = json!({
        "model_type": "mlp", "architectures": ["MLPForClassification"], "h_dim": shape.h_dim,
        "n_layer": shape.n_layer, "num_classes": shape.num_classes, "activation_function": shape.activation,
        "pdrop": 0.0, "include_emb": false, "include_bias": true, "squeeze_output": true
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = Vec::new();
    for layer in 0..shape.n_layer {
        let (weight, bias) = linear(&mut rng, shape.h_dim, shape.h_dim);
        tensors.push((format!("mlp.h.{layer}.ff1.weight"), weight));
        tensors.push((format!("mlp.h.{layer}.ff1.bias"), bias));
    }
    let (weight, bias) = linear(&mut rng, shape.h_dim, shape.num_classes);
    tensors.push(("score.weight".to_string(), weight));
    tensors.push(("score.bias".to_string(), bias));
    crate::outputs::write_dir(dir, |staging| {
        let text = serde_json::to_string_pretty(&config).map_err(|e| VeneError::Config(e.to_string()))?;
        std::fs::write(staging.join("config.json"), text)
            .map_err(|source| VeneError::Io { path: staging.to_path_buf(), source })?;
        Ok(vene_checkpoint::save_safetensors(&staging.join("model.safetensors"), &tensors)?)
    })
}
