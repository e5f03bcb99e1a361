//! Steering story continuations towards a sentiment (the paper's TinyStories ITI setup): a word's input embedding ×
//! a coefficient added to every layer's `component` at every decoding step, and the shift it makes measured as the
//! summed next-token probability of a list of positive and of negative words at each step of the continuation.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use super::{bind, output::Figure, SweepOptions};
use crate::{
    engine::IntervenableModel,
    error::{Result, VeneError},
    generate::{generate, InterveneOn, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
    vectors,
};

/// What to steer and how to measure it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentimentSetup {
    pub openings: Vec<String>,
    /// The steering words, e.g. " happy" and " sad".
    pub words: Vec<String>,
    /// The coefficient of the side-by-side continuations.
    pub coefficient: f64,
    /// The coefficients of the sweep (on the first opening).
    pub sweep: Vec<f64>,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
    pub component: String,
    pub max_new_tokens: usize,
}

/// One continuation: which opening, steered by which word (none: unsteered) at which coefficient, and the positive
/// and negative word lists' probability at each of its steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Continuation {
    pub opening: usize,
    pub word: Option<String>,
    pub coefficient: f64,
    pub text: String,
    pub positive: Vec<f64>,
    pub negative: Vec<f64>,
}

impl Continuation {
    /// Mean over the steps of p(positive words) − p(negative words).
    pub fn mean_shift(&self) -> f64 {
        let steps = self.positive.len().max(1) as f64;
        self.positive.iter().zip(&self.negative).map(|(p, n)| p - n).sum::<f64>() / steps
    }

    fn label(&self) -> String {
        match &self.word {
            None => "unsteered".to_string(),
            Some(word) => format!("+{} x \"{}\"", self.coefficient, word.trim()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SentimentSteering {
    pub openings: Vec<String>,
    pub component: String,
    pub positive_words: Vec<String>,
    pub negative_words: Vec<String>,
    /// Per opening: unsteered, then each word at the main coefficient.
    pub side_by_side: Vec<Continuation>,
    /// The first opening, each word at each coefficient of the sweep.
    pub sweep: Vec<Continuation>,
}

/// The first tokens of `words`, each once.
fn first_tokens(tokenizer: &TextTokenizer, words: &[String]) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for word in words {
        let first =
            *tokenizer.encode_plain(word)?.first().ok_or_else(|| VeneError::Inputs(format!("{word:?} is empty")))?;
        if !ids.contains(&first) {
            ids.push(first);
        }
    }
    Ok(ids)
}

/// One continuation of the study: an opening, steered by word number `word` of the setup at `coefficient`, or
/// unsteered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SteeringRun {
    pub opening: usize,
    pub word: Option<usize>,
    pub coefficient: f64,
}

/// Every continuation with its id (`continuation-NNNN`): per opening the unsteered one, then each word at the main
/// coefficient; then the first opening with each word at each coefficient of the sweep.
pub fn steering_runs(setup: &SentimentSetup) -> Vec<(String, SteeringRun)> {
    let words = setup.words.len();
    let mut runs = Vec::new();
    for opening in 0..setup.openings.len() {
        runs.push(SteeringRun { opening, word: None, coefficient: 0.0 });
        runs.extend((0..words).map(|w| SteeringRun { opening, word: Some(w), coefficient: setup.coefficient }));
    }
    for &coefficient in &setup.sweep {
        runs.extend((0..words).map(|w| SteeringRun { opening: 0, word: Some(w), coefficient }));
    }
    runs.into_iter().enumerate().map(|(i, run)| (format!("continuation-{i:04}"), run)).collect()
}

impl SentimentSetup {
    /// What decides the continuations besides the model: the whole setup.
    pub fn sweep_options(&self) -> Result<SweepOptions> {
        Ok(vec![("the study's sha256", json!(crate::sharding::json_sha256(self)?))])
    }
}

/// What every continuation shares, read from the model once: the word lists' first tokens and the steering words'
/// embeddings (one read of the 262,144-row embedding matrix, for Gemma).
pub struct SteeringInputs {
    lists: (Vec<i64>, Vec<i64>),
    vectors: Vec<Tensor>,
}

pub fn steering_inputs(
    model: &LoadedModel,
    tokenizer: &TextTokenizer,
    setup: &SentimentSetup,
) -> Result<SteeringInputs> {
    let lists = (first_tokens(tokenizer, &setup.positive)?, first_tokens(tokenizer, &setup.negative)?);
    Ok(SteeringInputs { lists, vectors: vectors::token_embeddings(model, tokenizer, &setup.words)? })
}

/// Generates and measures one continuation.
pub fn steer_once(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    (setup, inputs): (&SentimentSetup, &SteeringInputs),
    run: SteeringRun,
) -> Result<(Continuation, LoadedModel)> {
    let vector = run.word.map(|w| (&inputs.vectors[w], run.coefficient));
    let (continuation, model) = continue_story(model, plugins, tokenizer, setup, run.opening, vector, &inputs.lists)?;
    let continuation = Continuation {
        word: run.word.map(|w| setup.words[w].clone()),
        coefficient: if run.word.is_some() { run.coefficient } else { 0.0 },
        ..continuation
    };
    Ok((continuation, model))
}

/// The study from every continuation, given in [`steering_runs`]' order.
pub fn assemble(setup: &SentimentSetup, continuations: Vec<Continuation>) -> SentimentSteering {
    let mut side_by_side = continuations;
    let sweep = side_by_side.split_off((setup.openings.len() * (1 + setup.words.len())).min(side_by_side.len()));
    SentimentSteering {
        openings: setup.openings.clone(),
        component: setup.component.clone(),
        positive_words: setup.positive.clone(),
        negative_words: setup.negative.clone(),
        side_by_side,
        sweep,
    }
}

/// Runs the side-by-side continuations and the sweep; `progress(done, total)` after each continuation.
pub fn sentiment_steering(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SentimentSetup,
    progress: impl FnMut(usize, usize),
) -> Result<(SentimentSteering, LoadedModel)> {
    let inputs = steering_inputs(&model, tokenizer, setup)?;
    let compute = |model, run: &SteeringRun| steer_once(model, plugins, tokenizer, (setup, &inputs), *run);
    let (continuations, model) = super::run_items(&steering_runs(setup), model, compute, progress)?;
    Ok((assemble(setup, continuations), model))
}

/// One greedy continuation of opening `opening`, steered by `vector` × coefficient at every layer if given, with
/// the lists' probability at each step under the model that chose the step's token.
fn continue_story(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SentimentSetup,
    opening: usize,
    vector: Option<(&Tensor, f64)>,
    (positive, negative): &(Vec<i64>, Vec<i64>),
) -> Result<(Continuation, LoadedModel)> {
    let tokens = tokenizer.encode(&setup.openings[opening])?;
    let representations: Vec<serde_json::Value> = match vector {
        None => Vec::new(),
        Some((vector, coefficient)) => {
            let values = Vec::<f32>::try_from(&vector.to_kind(Kind::Float))?;
            (0..model.catalog().num_layers)
                .map(|layer| {
                    json!({"layer": layer, "component": setup.component,
                           "intervention": {"type": "steering", "coefficient": coefficient, "vector": values}})
                })
                .collect()
        }
    };
    let mut steered = bind(model, plugins, json!({"representations": representations}))?;
    let sampling =
        Sampling { max_new_tokens: setup.max_new_tokens, intervene_on: InterveneOn::Both, ..Sampling::default() };
    let generated = generate(&mut steered, &tokens, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})?;
    let (positive, negative) = list_masses(&mut steered, &tokens, &generated, (positive, negative))?;
    let continuation =
        Continuation { opening, word: None, coefficient: 0.0, text: tokenizer.decode(&generated), positive, negative };
    Ok((continuation, steered.into_model()))
}

/// p(any of `positive`) and p(any of `negative`) as the next token at each generated step.
fn list_masses(
    model: &mut IntervenableModel,
    prompt: &[i64],
    generated: &[i64],
    (positive, negative): (&[i64], &[i64]),
) -> Result<(Vec<f64>, Vec<f64>)> {
    let _no_grad = tch::no_grad_guard();
    let device = model.model().device();
    let sequence: Vec<i64> = prompt.iter().chain(generated).copied().collect();
    let inputs = ForwardInputs::from_ids(Tensor::from_slice(&sequence).view([1, -1]).to_device(device));
    let logits = model.run(&inputs, &[], &UnitLocations::whole(), &Subspaces::None)?.output;
    // The distribution each generated token was chosen from: positions prompt − 1 … end − 2.
    let steps = logits.select(0, 0).narrow(0, prompt.len() as i64 - 1, generated.len() as i64);
    let probabilities = steps.to_kind(Kind::Float).softmax(-1, Kind::Float).to_device(tch::Device::Cpu);
    let mass = |ids: &[i64]| -> Result<Vec<f64>> {
        let summed = probabilities.index_select(1, &Tensor::from_slice(ids)).sum_dim_intlist(-1, false, Kind::Double);
        Ok(Vec::<f64>::try_from(&summed)?)
    };
    Ok((mass(positive)?, mass(negative)?))
}

impl SentimentSteering {
    /// Per side-by-side condition, p(positive) − p(negative) at each step, averaged over the openings.
    pub fn shift_lines(&self, name: &str) -> Figure {
        let conditions = self.side_by_side.iter().filter(|c| c.opening == 0).map(Continuation::label);
        let series = conditions
            .map(|label| {
                let runs: Vec<&Continuation> = self.side_by_side.iter().filter(|c| c.label() == label).collect();
                let steps = runs.iter().map(|c| c.positive.len()).min().unwrap_or(0);
                let mean = (0..steps)
                    .map(|s| runs.iter().map(|c| c.positive[s] - c.negative[s]).sum::<f64>() / runs.len() as f64)
                    .collect();
                (label, mean)
            })
            .collect();
        Figure::Lines {
            name: name.to_string(),
            title: format!(
                "p(positive words) − p(negative words) at each step, mean of {} openings",
                self.openings.len()
            ),
            x_label: "generated token".to_string(),
            series,
        }
    }

    /// Per steering word, the mean shift of the first opening's continuation at each coefficient of the sweep.
    pub fn sweep_lines(&self, name: &str) -> Figure {
        let mut words: Vec<&str> = Vec::new();
        for c in &self.sweep {
            if let Some(word) = c.word.as_deref().filter(|w| !words.contains(w)) {
                words.push(word);
            }
        }
        let coefficients: Vec<String> = self
            .sweep
            .iter()
            .filter(|c| c.word.as_deref() == words.first().copied())
            .map(|c| c.coefficient.to_string())
            .collect();
        let series = words
            .iter()
            .map(|&word| {
                let shifts =
                    self.sweep.iter().filter(|c| c.word.as_deref() == Some(word)).map(Continuation::mean_shift);
                (format!("\"{}\"", word.trim()), shifts.collect())
            })
            .collect();
        Figure::Lines {
            name: name.to_string(),
            title: "mean p(positive) − p(negative) along the continuation, by steering coefficient".to_string(),
            x_label: format!("coefficient ({})", coefficients.join(", ")),
            series,
        }
    }
}

/// steer-sentiment's figures (shift along the continuations, the coefficient sweep), numbers and summary.
pub fn study_output(found: &SentimentSteering) -> Result<super::output::StudyOutput> {
    let summary = found
        .side_by_side
        .iter()
        .chain(&found.sweep)
        .map(|c| {
            let steer = c.word.as_ref().map_or("unsteered".to_string(), |w| format!("+{} x {w:?}", c.coefficient));
            format!("opening {} {steer}: {:?} (mean shift {:+.4})", c.opening + 1, c.text.trim(), c.mean_shift())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let figures = vec![found.shift_lines("shift"), found.sweep_lines("sweep")];
    super::output::StudyOutput::new("steer_sentiment.json", found, figures, summary)
}
