//! Steering during generation (inference-time intervention, Li et al. 2023).

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{bind, output::Figure};
use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    generate::{generate, InterveneOn, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// Steering during generation (ITI): a word's embedding × coefficient added to every layer's MLP output at every
/// step, side by side with the unsteered continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Steering {
    pub prompt: String,
    pub word: String,
    pub coefficient: f64,
    pub unsteered: String,
    pub steered: String,
    /// p(word) after each position of the prompt and continuation, without and with steering.
    pub unsteered_word_probability: Vec<f64>,
    pub steered_word_probability: Vec<f64>,
}

/// What to steer: `coefficient × vector` (the embedding of `word`) added to `component` of every layer.
#[derive(Debug, Clone)]
pub struct SteeringSetup {
    pub prompt: String,
    pub word: String,
    pub coefficient: f64,
    pub component: String,
    pub max_new_tokens: usize,
}

pub fn steering(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    vector: &Tensor,
    setup: &SteeringSetup,
) -> Result<(Steering, LoadedModel)> {
    let (prompt, word, coefficient) = (setup.prompt.as_str(), setup.word.as_str(), setup.coefficient);
    let tokens = tokenizer.encode(prompt)?;
    let layers = model.catalog().num_layers;
    let sampling =
        Sampling { max_new_tokens: setup.max_new_tokens, intervene_on: InterveneOn::Both, ..Sampling::default() };
    let mut plain = bind(model, plugins, json!({"representations": []}))?;
    let unsteered = generate(&mut plain, &tokens, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})?;
    let values: Vec<f32> = Vec::<f32>::try_from(&vector.to_kind(Kind::Float))?;
    let representations: Vec<_> = (0..layers)
        .map(|layer| {
            json!({"layer": layer, "component": setup.component,
            "intervention": {"type": "steering", "coefficient": coefficient, "vector": values}})
        })
        .collect();
    let mut steered_model = bind(plain.into_model(), plugins, json!({"representations": representations}))?;
    let steered =
        generate(&mut steered_model, &tokens, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})?;
    // p(word) after each position of each continuation, under the model that produced it.
    let word_id =
        *tokenizer.encode_plain(word)?.first().ok_or_else(|| VeneError::Inputs(format!("{word:?} is empty")))?;
    let device = steered_model.model().device();
    let _no_grad = tch::no_grad_guard();
    let along = |model: &mut IntervenableModel, generated: &[i64]| -> Result<Vec<f64>> {
        let sequence: Vec<i64> = tokens.iter().chain(generated).copied().collect();
        let inputs = ForwardInputs::from_ids(Tensor::from_slice(&sequence).view([1, -1]).to_device(device));
        let logits = model.run(&inputs, &[], &UnitLocations::whole(), &Subspaces::None)?.output;
        let probabilities = logits.select(0, 0).to_kind(Kind::Float).softmax(-1, Kind::Float).select(1, word_id);
        Ok(Vec::<f64>::try_from(&probabilities.to_kind(Kind::Double))?)
    };
    let steered_probability = along(&mut steered_model, &steered)?;
    let mut plain = bind(steered_model.into_model(), plugins, json!({"representations": []}))?;
    let unsteered_probability = along(&mut plain, &unsteered)?;
    let result = Steering {
        prompt: prompt.to_string(),
        word: word.to_string(),
        coefficient,
        unsteered: tokenizer.decode(&unsteered),
        steered: tokenizer.decode(&steered),
        unsteered_word_probability: unsteered_probability,
        steered_word_probability: steered_probability,
    };
    Ok((result, plain.into_model()))
}

impl Steering {
    /// p(word) after each position, unsteered and steered.
    pub fn lines(&self, name: &str) -> Figure {
        Figure::Lines {
            name: name.to_string(),
            title: format!("p({}) after each position", self.word.trim()),
            x_label: "position".to_string(),
            series: vec![
                ("unsteered".to_string(), self.unsteered_word_probability.clone()),
                ("steered".to_string(), self.steered_word_probability.clone()),
            ],
        }
    }
}
