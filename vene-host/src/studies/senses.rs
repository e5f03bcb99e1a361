//! Backpack sense vectors: scale one sense of a word and watch a target word.

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{bind, ids, output::Figure};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    text::TextTokenizer,
};

/// Backpack: scale one sense vector of a word and watch the next-token distribution.
#[derive(Debug, Clone, Serialize)]
pub struct SenseStudy {
    pub prompt: String,
    pub word: String,
    pub target: String,
    /// p(target) without intervention.
    pub baseline: f64,
    /// p(target) with sense k of the word multiplied by each factor: `[factor][sense]`.
    pub factors: Vec<f64>,
    pub probabilities: Vec<Vec<f64>>,
}

/// Which word's senses to scale, and the word to watch.
#[derive(Debug, Clone)]
pub struct SenseSetup {
    pub prompt: String,
    pub word: String,
    pub target: String,
    /// The model's number of sense vectors per word.
    pub senses: i64,
    pub factors: Vec<f64>,
}

impl SenseSetup {
    /// The demo's: the senses of "spain" in "the capital of spain is", watching "madrid".
    pub fn demo(senses: i64) -> Self {
        Self {
            prompt: "the capital of spain is".to_string(),
            word: "spain".to_string(),
            target: "madrid".to_string(),
            senses,
            factors: vec![0.0, 3.0],
        }
    }
}

pub fn sense_study(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SenseSetup,
) -> Result<(SenseStudy, LoadedModel)> {
    let (prompt, word, target, senses) =
        (setup.prompt.as_str(), setup.word.as_str(), setup.target.as_str(), setup.senses);
    let device = model.device();
    let inputs = ids(tokenizer, prompt, device)?;
    let tokens = tokenizer.encode(prompt)?;
    let word_tokens = tokenizer.encode_plain(word)?;
    let spaced = tokenizer.encode_plain(&format!(" {word}"))?;
    let position = [word_tokens, spaced]
        .iter()
        .filter(|w| !w.is_empty())
        .find_map(|w| {
            tokens.windows(w.len()).position(|window| window == w.as_slice()).map(|start| start + w.len() - 1)
        })
        .ok_or_else(|| VeneError::Inputs(format!("{word:?} is not a token span of {prompt:?}")))?;
    let target_id = tokenizer.encode_plain(target)?[0];
    if model.catalog().component_index("sense_network_output").is_none() {
        return Err(VeneError::Config("the sense study needs a Backpack model".to_string()));
    }
    let _no_grad = tch::no_grad_guard();
    let p_target = |logits: &Tensor| -> f64 {
        logits.select(1, -1).select(0, 0).to_kind(Kind::Float).softmax(-1, Kind::Float).double_value(&[target_id])
    };
    let baseline = p_target(&model.forward_plain(&inputs)?.output);
    let factors = setup.factors.clone();
    let mut model = model;
    let mut probabilities = Vec::new();
    for &factor in &factors {
        let mut row = Vec::new();
        for sense in 0..senses {
            let mut scaled = bind(
                model,
                plugins,
                json!({"representations": [{"layer": 0, "component": "sense_network_output", "unit": "sense.pos",
                    "intervention": {"type": "scale", "factor": factor}}]}),
            )?;
            let locations = UnitLocations::parse(Some(&json!({"base": [[[[sense]], [[position]]]]})))?;
            row.push(p_target(&scaled.run(&inputs, &[], &locations, &Subspaces::None)?.output));
            model = scaled.into_model();
        }
        probabilities.push(row);
    }
    let study = SenseStudy {
        prompt: prompt.to_string(),
        word: word.to_string(),
        target: target.to_string(),
        baseline,
        factors,
        probabilities,
    };
    Ok((study, model))
}

impl SenseStudy {
    /// p(target) per sense, one line per factor, beside the unintervened probability.
    pub fn lines(&self, name: &str, title: &str) -> Figure {
        let senses = self.probabilities.first().map_or(0, Vec::len);
        let series = self
            .factors
            .iter()
            .zip(&self.probabilities)
            .map(|(factor, row)| (format!("sense x {factor}"), row.clone()))
            .chain(std::iter::once(("no intervention".to_string(), vec![self.baseline; senses])))
            .collect();
        Figure::Lines { name: name.to_string(), title: title.to_string(), x_label: "sense".to_string(), series }
    }
}
