//! Trains the demo's small language models (a GPT-2 and a Backpack GPT-2) on the generated corpus with vene's own
//! model code ([`vene_nn`]) and saves them in Hugging Face layout (config.json, model.safetensors, tokenizer.json), to
//! be loaded back through the adapter plugins like any checkpoint.

use std::{collections::HashMap, path::Path};

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::{Hooks, ModelInputs};
use vene_nn::{
    backpack::{BackpackModel, SenseConfig},
    gpt2::{Gpt2Body, Gpt2Config},
    TokenBatch,
};

use super::corpus;
use crate::error::{Result, VeneError};

/// Which language model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Gpt2,
    /// A Backpack GPT-2 with `senses` sense vectors per word.
    Backpack {
        senses: i64,
    },
}

/// Sizes and schedule of a demo language model.
#[derive(Debug, Clone)]
pub struct LmRecipe {
    pub architecture: Architecture,
    pub layers: i64,
    pub width: i64,
    pub heads: i64,
    pub positions: i64,
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Whether the corpus includes the invented places ([`corpus::place_sentences`]) that causal tracing studies.
    pub places: bool,
}

impl Default for LmRecipe {
    fn default() -> Self {
        Self {
            architecture: Architecture::Gpt2,
            layers: 4,
            width: 64,
            heads: 4,
            positions: 24,
            steps: 4000,
            batch: 32,
            learning_rate: 3e-3,
            seed: super::DEFAULT_SEED,
            places: true,
        }
    }
}

fn config_json(recipe: &LmRecipe, vocab: i64) -> serde_json::Value {
    let mut config = json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
        "n_layer": recipe.layers, "n_embd": recipe.width, "n_head": recipe.heads, "n_positions": recipe.positions,
        "n_inner": null, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true,
        "scale_attn_weights": true, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0
    });
    if let Architecture::Backpack { senses } = recipe.architecture {
        config["model_type"] = json!("backpack-gpt2");
        config["architectures"] = json!(["BackpackGPT2LMHeadModel"]);
        config["num_senses"] = json!(senses);
        config["sense_intermediate_scale"] = json!(2);
        config["scale_attn_by_inverse_layer_idx"] = json!(true);
    }
    config
}

/// Freshly initialised parameters under their Hugging Face names (GPT-2's usual N(0, 0.02)).
fn initial_weights(recipe: &LmRecipe, vocab: i64) -> Vec<(String, Tensor)> {
    let mut rng = StdRng::seed_from_u64(recipe.seed);
    let mut normal = |shape: &[i64], std: f64| {
        let distribution = Normal::new(0.0f32, std as f32).expect("a positive standard deviation");
        let count = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..count).map(|_| distribution.sample(&mut rng)).collect();
        Tensor::from_slice(&values).view(shape)
    };
    let (d, layers) = (recipe.width, recipe.layers);
    let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu));
    let ones = |n: i64| Tensor::ones([n], (Kind::Float, tch::Device::Cpu));
    let projection = 0.02 / (2.0 * layers as f64).sqrt();
    let mut weights = vec![
        ("wte.weight".to_string(), normal(&[vocab, d], 0.02)),
        ("wpe.weight".to_string(), normal(&[recipe.positions, d], 0.01)),
        ("ln_f.weight".to_string(), ones(d)),
        ("ln_f.bias".to_string(), zeros(d)),
    ];
    for layer in 0..layers {
        let p = format!("h.{layer}");
        weights.extend([
            (format!("{p}.ln_1.weight"), ones(d)),
            (format!("{p}.ln_1.bias"), zeros(d)),
            (format!("{p}.attn.c_attn.weight"), normal(&[d, 3 * d], 0.02)),
            (format!("{p}.attn.c_attn.bias"), zeros(3 * d)),
            (format!("{p}.attn.c_proj.weight"), normal(&[d, d], projection)),
            (format!("{p}.attn.c_proj.bias"), zeros(d)),
            (format!("{p}.ln_2.weight"), ones(d)),
            (format!("{p}.ln_2.bias"), zeros(d)),
            (format!("{p}.mlp.c_fc.weight"), normal(&[d, 4 * d], 0.02)),
            (format!("{p}.mlp.c_fc.bias"), zeros(4 * d)),
            (format!("{p}.mlp.c_proj.weight"), normal(&[4 * d, d], projection)),
            (format!("{p}.mlp.c_proj.bias"), zeros(d)),
        ]);
    }
    if let Architecture::Backpack { senses } = recipe.architecture {
        weights = weights.into_iter().map(|(name, tensor)| (format!("gpt2_model.{name}"), tensor)).collect();
        let sense = "sense_network";
        weights.extend([
            (format!("{sense}.ln.weight"), ones(d)),
            (format!("{sense}.ln.bias"), zeros(d)),
            (format!("{sense}.block.ln_1.weight"), ones(d)),
            (format!("{sense}.block.ln_1.bias"), zeros(d)),
            (format!("{sense}.block.ln_2.weight"), ones(d)),
            (format!("{sense}.block.ln_2.bias"), zeros(d)),
            (format!("{sense}.block.mlp.c_fc.weight"), normal(&[d, 4 * d], 0.02)),
            (format!("{sense}.block.mlp.c_fc.bias"), zeros(4 * d)),
            (format!("{sense}.block.mlp.c_proj.weight"), normal(&[4 * d, d], projection)),
            (format!("{sense}.block.mlp.c_proj.bias"), zeros(d)),
            (format!("{sense}.final_mlp.c_fc.weight"), normal(&[d, 2 * d], 0.02)),
            (format!("{sense}.final_mlp.c_fc.bias"), zeros(2 * d)),
            (format!("{sense}.final_mlp.c_proj.weight"), normal(&[2 * d, senses * d], 0.02)),
            (format!("{sense}.final_mlp.c_proj.bias"), zeros(senses * d)),
            ("sense_weight_net.c_attn.weight".to_string(), normal(&[2 * d, d], 0.02)),
            ("sense_weight_net.c_attn.bias".to_string(), zeros(2 * d)),
        ]);
    }
    weights.into_iter().map(|(name, tensor)| (name, tensor.set_requires_grad(true))).collect()
}

/// Writes an untrained model of `recipe` over `vocab` words to `dir` in Hugging Face layout (config.json,
/// model.safetensors; no tokenizer), atomically: the benches' seeded random models.
pub fn write_untrained(dir: &Path, recipe: &LmRecipe, vocab: i64) -> Result<()> {
    let weights: Vec<(String, Tensor)> =
        initial_weights(recipe, vocab).into_iter().map(|(name, tensor)| (name, tensor.detach())).collect();
    let staging = dir.with_extension("staging");
    std::fs::create_dir_all(&staging).map_err(|source| VeneError::Io { path: staging.clone(), source })?;
    vene_checkpoint::save_safetensors(&staging.join("model.safetensors"), &weights)?;
    let config = config_json(recipe, vocab).to_string();
    let config_path = staging.join("config.json");
    vene_checkpoint::write_atomic(&config_path, config.as_bytes())
        .map_err(|source| VeneError::Io { path: config_path, source })?;
    std::fs::rename(&staging, dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })
}

/// The model being trained: a GPT-2, or a Backpack around one.
enum Trainee {
    Gpt2(Gpt2Body),
    Backpack(Box<BackpackModel>),
}

impl Trainee {
    fn logits(&self, inputs: &ModelInputs<'_>, vocab: i64, positions: i64) -> vene_api::PluginResult<Tensor> {
        match self {
            Trainee::Gpt2(body) => {
                let tokens = TokenBatch::from_inputs(inputs, vocab, positions, body.layers(), tch::Device::Cpu)?;
                let (hidden, _) = body.forward(&tokens, &mut Hooks::none())?;
                Ok(hidden.matmul(&body.wte().tr()))
            }
            Trainee::Backpack(model) => Ok(model.forward(inputs, &mut Hooks::none())?.0),
        }
    }
}

/// Trains the demo GPT-2 and writes it to `dir`; `progress(step, steps, loss)` after every step. Returns the final
/// mean training loss.
pub fn train(dir: &Path, recipe: &LmRecipe, mut progress: impl FnMut(usize, usize, f64)) -> Result<f64> {
    let vocab = corpus::vocabulary();
    let index: HashMap<&str, i64> = vocab.iter().enumerate().map(|(i, w)| (w.as_str(), i as i64)).collect();
    let mut text = corpus::sentences();
    if recipe.places {
        text.extend(corpus::place_sentences());
    }
    let sentences: Vec<Vec<i64>> = text.iter().map(|s| s.iter().map(|w| index[w.as_str()]).collect()).collect();
    let longest = sentences.iter().map(Vec::len).max().unwrap_or(1);
    if longest as i64 > recipe.positions {
        return Err(VeneError::Config(format!(
            "corpus sentences of {longest} words exceed {} positions",
            recipe.positions
        )));
    }
    let config_value = config_json(recipe, vocab.len() as i64);
    let config: Gpt2Config =
        serde_json::from_value(config_value.clone()).map_err(|e| VeneError::Config(e.to_string()))?;
    let parameters = initial_weights(recipe, vocab.len() as i64);
    let mut weights = vene_checkpoint::Weights::from_tensors(
        dir,
        parameters.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
    );
    let trainee = match recipe.architecture {
        Architecture::Gpt2 => Gpt2Body::load(&mut weights, config, 0).map(Trainee::Gpt2),
        Architecture::Backpack { senses } => {
            let sense = SenseConfig { num_senses: senses, sense_intermediate_scale: 2 };
            BackpackModel::load(weights, config, sense).map(|m| Trainee::Backpack(Box::new(m)))
        }
    }
    .map_err(|e| VeneError::Config(e.to_string()))?;
    let mut optimizer = tch::COptimizer::adamw(recipe.learning_rate, 0.9, 0.98, 0.01, 1e-8, false)?;
    for (_, parameter) in &parameters {
        optimizer.add_parameters(parameter, 0)?;
    }
    let mut batches = Batches::new(&sentences, longest, recipe);
    let mut recent = Vec::new();
    for step in 0..recipe.steps {
        let ids = batches.next_batch();
        let inputs = ModelInputs::token_ids(&ids);
        let logits = trainee
            .logits(&inputs, vocab.len() as i64, recipe.positions)
            .map_err(|error| VeneError::Model { context: "training a demo language model".to_string(), error })?;
        let vocab_size = logits.size()[2];
        let predictions = logits.narrow(1, 0, longest as i64 - 1).reshape([-1, vocab_size]);
        let targets = ids.narrow(1, 1, longest as i64 - 1).reshape([-1]);
        // Padding (id 0) is not predicted.
        let loss = predictions.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, 0, 0.0);
        let rate = recipe.learning_rate * (1.0 - step as f64 / recipe.steps as f64).max(0.05);
        optimizer.set_learning_rate(rate)?;
        optimizer.zero_grad()?;
        loss.backward();
        optimizer.step()?;
        let value = loss.double_value(&[]);
        recent.push(value);
        if recent.len() > 50 {
            recent.remove(0);
        }
        progress(step + 1, recipe.steps, value);
    }
    save_trained(dir, recipe, &parameters, &config_value, &vocab)?;
    Ok(recent.iter().sum::<f64>() / recent.len().max(1) as f64)
}

/// Shuffled batches of corpus sentences, right-padded with id 0 to the longest sentence; every sentence once per
/// pass, in a fresh order each pass.
struct Batches<'a> {
    sentences: &'a [Vec<i64>],
    longest: usize,
    batch: usize,
    rng: StdRng,
    order: Vec<usize>,
    cursor: usize,
}

impl<'a> Batches<'a> {
    fn new(sentences: &'a [Vec<i64>], longest: usize, recipe: &LmRecipe) -> Self {
        let order: Vec<usize> = (0..sentences.len()).collect();
        let cursor = order.len();
        Self { sentences, longest, batch: recipe.batch, rng: StdRng::seed_from_u64(recipe.seed), order, cursor }
    }

    /// The next `(batch, longest)` ids.
    fn next_batch(&mut self) -> Tensor {
        let mut rows = Vec::with_capacity(self.batch);
        while rows.len() < self.batch {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            rows.push(&self.sentences[self.order[self.cursor]]);
            self.cursor += 1;
        }
        let longest = self.longest;
        let padded: Vec<i64> =
            rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, longest - r.len()))).collect();
        Tensor::from_slice(&padded).view([self.batch as i64, longest as i64])
    }
}

/// Writes the trained model in Hugging Face layout: weights (Backpack's under `backpack.`), config, tokenizer.
fn save_trained(
    dir: &Path,
    recipe: &LmRecipe,
    parameters: &[(String, Tensor)],
    config: &serde_json::Value,
    vocab: &[String],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
    let prefix = if matches!(recipe.architecture, Architecture::Backpack { .. }) { "backpack." } else { "" };
    let saved: Vec<(String, Tensor)> = parameters.iter().map(|(n, t)| (format!("{prefix}{n}"), t.detach())).collect();
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &saved)?;
    let write = |name: &str, value: &serde_json::Value| {
        let path = dir.join(name);
        vene_checkpoint::write_atomic(&path, value.to_string().as_bytes())
            .map_err(|source| VeneError::Io { path, source })
    };
    write("config.json", config)?;
    write("tokenizer.json", &corpus::tokenizer_json(vocab))
}
