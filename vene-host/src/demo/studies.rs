//! The studies `vene demo` runs on its language model, with the numbers they report.

use std::path::Path;

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    generate::{generate, InterveneOn, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// Top-5 next words with probabilities.
pub type TopWords = Vec<(String, f64)>;

fn ids(tokenizer: &TextTokenizer, text: &str, device: tch::Device) -> Result<ForwardInputs> {
    let tokens = tokenizer.encode(text)?;
    Ok(ForwardInputs::from_ids(Tensor::from_slice(&tokens).view([1, -1]).to_device(device)))
}

/// The five most likely next words after the last position.
pub fn top_words(tokenizer: &TextTokenizer, logits: &Tensor) -> Result<TopWords> {
    let probabilities = logits.select(1, -1).select(0, 0).to_kind(Kind::Float).softmax(-1, Kind::Float);
    let (values, indices) = probabilities.topk(5, -1, true, true);
    let values = Vec::<f64>::try_from(&values.to_kind(Kind::Double))?;
    let indices = Vec::<i64>::try_from(&indices)?;
    Ok(indices.iter().zip(values).map(|(&i, p)| (tokenizer.decode(&[i]), p)).collect())
}

/// The multi-source interchange of the paper: "the capital of spain is" with "language" from "the language of
/// spain is" and "italy" from "the capital of italy is".
#[derive(Debug, Clone, Serialize)]
pub struct Interchange {
    pub base: TopWords,
    pub parallel: TopWords,
    pub serial: TopWords,
}

fn bind(model: LoadedModel, plugins: &PluginSet, config: serde_json::Value) -> Result<IntervenableModel> {
    let config: IntervenableConfig = serde_json::from_value(config).map_err(|e| VeneError::Config(e.to_string()))?;
    IntervenableModel::new(model, config, plugins, 0)
}

/// A parallel interchange: each source's token at its position replaces the base's token representation at the
/// same position (`component` at `layer`).
#[derive(Debug, Clone)]
pub struct InterchangeSetup {
    pub base: String,
    /// Source text and the token position taken from it.
    pub sources: Vec<(String, i64)>,
    pub layer: i64,
    pub component: String,
}

/// The base's and the intervened run's top-5 next words.
pub fn parallel_interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &InterchangeSetup,
) -> Result<(TopWords, TopWords, LoadedModel)> {
    let device = model.device();
    let _no_grad = tch::no_grad_guard();
    let base = ids(tokenizer, &setup.base, device)?;
    let base_top = top_words(tokenizer, &model.forward_plain(&base)?.output)?;
    let representations: Vec<_> = (0..setup.sources.len())
        .map(|group| {
            json!({"layer": setup.layer, "component": setup.component, "group_key": group,
                            "intervention": {"type": "vanilla"}})
        })
        .collect();
    let mut parallel = bind(model, plugins, json!({"mode": "parallel", "representations": representations}))?;
    let positions: Vec<_> = setup.sources.iter().map(|(_, p)| json!([[p]])).collect();
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [positions, positions]})))?;
    let sources =
        setup.sources.iter().map(|(text, _)| ids(tokenizer, text, device).map(Some)).collect::<Result<Vec<_>>>()?;
    let output = parallel.run(&base, &sources, &locations, &Subspaces::None)?.output;
    Ok((base_top, top_words(tokenizer, &output)?, parallel.into_model()))
}

/// The paper's interchange: "the capital of spain is" with "language" from "the language of spain is" and "italy"
/// from "the capital of italy is", in parallel and in series.
pub fn interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
) -> Result<(Interchange, LoadedModel)> {
    let setup = InterchangeSetup {
        base: "the capital of spain is".to_string(),
        sources: vec![("the language of spain is".to_string(), 1), ("the capital of italy is".to_string(), 3)],
        layer: 0,
        component: "block_input".to_string(),
    };
    let (base_top, parallel_top, model) = parallel_interchange(model, plugins, tokenizer, &setup)?;
    let device = model.device();
    let _no_grad = tch::no_grad_guard();
    let base = ids(tokenizer, &setup.base, device)?;
    let sources = setup.sources.iter().map(|(t, _)| ids(tokenizer, t, device).map(Some)).collect::<Result<Vec<_>>>()?;
    // Serial: "language" goes into the Italy prompt, whose final state then goes into the base.
    let layers = model.catalog().num_layers as i64;
    let mut serial = bind(
        model,
        plugins,
        json!({"mode": "serial", "representations": [
            {"layer": 0, "component": "block_input", "group_key": 0, "intervention": {"type": "vanilla"}},
            {"layer": layers - 1, "component": "block_output", "group_key": 1, "intervention": {"type": "vanilla"}}]}),
    )?;
    let locations = UnitLocations::parse(Some(&json!({
        "source_0->source_1": [[[[1]]], [[[1]]]],
        "source_1->base": [[[[4]]], [[[4]]]]
    })))?;
    let output = serial.run(&base, &sources, &locations, &Subspaces::None)?.output;
    let serial_top = top_words(tokenizer, &output)?;
    Ok((Interchange { base: base_top, parallel: parallel_top, serial: serial_top }, serial.into_model()))
}

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
    let word_id = *tokenizer.encode(word)?.first().ok_or_else(|| VeneError::Inputs(format!("{word:?} is empty")))?;
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

/// A minimal HTML report: sections of text and figures (paths relative to the report).
pub fn write_report(dir: &Path, title: &str, sections: &[(String, String, Vec<String>)]) -> Result<()> {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>body{{font-family:sans-serif;\
         max-width:60rem;margin:2rem auto}} img{{max-width:30rem;margin:.5rem}} pre{{background:#f4f4f4;padding:1rem}}\
         </style></head><body>\n<h1>{0}</h1>\n",
        escape(title)
    );
    for (heading, body, figures) in sections {
        html.push_str(&format!("<h2>{}</h2>\n<pre>{}</pre>\n", escape(heading), escape(body)));
        for figure in figures {
            html.push_str(&format!("<img src=\"{figure}\" alt=\"{figure}\">\n"));
        }
    }
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    vene_checkpoint::write_atomic(&path, html.as_bytes()).map_err(|source| VeneError::Io { path, source })
}

/// DAS versus a linear probe (the paper's gender study, in miniature): for a template such as "NAME walked because"
/// → he / she, per layer × position, the held-out IIA of a rank-1 DAS intervention on the block output and the
/// held-out accuracy of a logistic-regression probe on the same activations.
#[derive(Debug, Clone, Serialize)]
pub struct DasProbe {
    pub tokens: Vec<String>,
    /// `[position][layer]`.
    pub das_iia: Vec<Vec<f64>>,
    pub probe_accuracy: Vec<Vec<f64>>,
}

/// The variable studied: a template with a `{name}` slot, and classes of names with the word each class predicts.
#[derive(Debug, Clone)]
pub struct ProbeSetup {
    pub template: String,
    /// (target word, names).
    pub classes: Vec<(String, Vec<String>)>,
}

impl ProbeSetup {
    /// The demo's: "NAME walked because" → he / she.
    pub fn pronouns() -> Self {
        use super::corpus::{FEMALE_NAMES, MALE_NAMES};
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect();
        Self {
            template: "{name} walked because".to_string(),
            classes: vec![("he".to_string(), names(&MALE_NAMES)), ("she".to_string(), names(&FEMALE_NAMES))],
        }
    }

    fn prompt(&self, name: &str) -> String {
        self.template.replace("{name}", name)
    }
}

/// `progress(done, total)` after each layer × position.
pub fn das_vs_probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    mut progress: impl FnMut(usize, usize),
) -> Result<(DasProbe, LoadedModel)> {
    use crate::train::{self, TrainOptions, TrainingExample};
    if setup.classes.len() < 2 || !setup.template.contains("{name}") {
        return Err(VeneError::Config("DAS vs probe needs two or more classes and a template with {name}".to_string()));
    }
    let names: Vec<(String, usize)> = setup
        .classes
        .iter()
        .enumerate()
        .flat_map(|(class, (_, names))| names.iter().map(move |n| (n.clone(), class)))
        .collect();
    let targets = setup
        .classes
        .iter()
        .map(|(word, _)| {
            tokenizer.encode(word)?.first().copied().ok_or_else(|| VeneError::Inputs(format!("{word:?} is empty")))
        })
        .collect::<Result<Vec<i64>>>()?;
    let pronoun = |class: usize| -> Result<i64> { Ok(targets[class]) };
    let layers = model.catalog().num_layers as usize;
    let positions = tokenizer.encode(&setup.prompt(&names[0].0))?.len();
    if let Some((name, _)) =
        names.iter().find(|(n, _)| tokenizer.encode(&setup.prompt(n)).map_or(true, |t| t.len() != positions))
    {
        return Err(VeneError::Inputs(format!("every name must give the same number of tokens; {name:?} does not")));
    }
    // Counterfactual pairs: the label is the source name's pronoun.
    let mut examples: Vec<(usize, usize)> = Vec::new();
    for base in 0..names.len() {
        for source in 0..names.len() {
            if names[base].1 != names[source].1 {
                examples.push((base, source));
            }
        }
    }
    let ids = |name: &str| -> Result<Vec<i64>> { tokenizer.encode(&setup.prompt(name)) };
    let mut model = model;
    let mut das_iia = vec![vec![0.0; layers]; positions];
    let mut probe_accuracy = vec![vec![0.0; layers]; positions];
    for position in 0..positions {
        let data: Vec<TrainingExample> = examples
            .iter()
            .map(|&(base, source)| {
                serde_json::from_value(json!({
                    "base": {"input_ids": [ids(&names[base].0)?]},
                    "sources": [{"input_ids": [ids(&names[source].0)?]}],
                    "unit_locations": {"sources->base": [position, position]},
                    "label": pronoun(names[source].1)?
                }))
                .map_err(|e| VeneError::Config(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let (train_set, eval_set) = train::split(&data, 0.25, 3);
        for layer in 0..layers {
            let mut das = bind(
                model,
                plugins,
                json!({"representations": [{"layer": layer, "component": "block_output", "low_rank_dimension": 1,
                    "intervention": {"type": "low_rank_rotated_space"}}]}),
            )?;
            let options = TrainOptions {
                epochs: 8,
                batch_size: 16,
                learning_rate: 0.05,
                warmup_fraction: 0.05,
                eval_fraction: 0.0,
                seed: 1,
            };
            let report = train::train(&mut das, &train_set, &eval_set, &options, Some(tokenizer), |_| {})?;
            das_iia[position][layer] = report.eval.map_or(0.0, |m| m.iia);
            let (accuracy, returned) = probe(das.into_model(), plugins, tokenizer, setup, &names, layer, position)?;
            probe_accuracy[position][layer] = accuracy;
            model = returned;
            progress(position * layers + layer + 1, positions * layers);
        }
    }
    let tokens = setup.prompt("NAME").split_whitespace().map(str::to_string).collect();
    Ok((DasProbe { tokens, das_iia, probe_accuracy }, model))
}

/// Held-out accuracy (train on two thirds of the names, test on the rest) of a logistic-regression probe for the
/// name's gender on the block output at `layer`, `position`.
fn probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    names: &[(String, usize)],
    layer: usize,
    position: usize,
) -> Result<(f64, LoadedModel)> {
    let mut collector = bind(
        model,
        plugins,
        json!({"representations": [{"layer": layer, "component": "block_output", "intervention": {"type": "collect"}}]}),
    )?;
    let prompts: Vec<String> = names.iter().map(|(n, _)| setup.prompt(n)).collect();
    let (ids, _) = tokenizer.encode_batch(&prompts)?;
    let inputs = ForwardInputs::from_ids(ids.to_device(collector.model().device()));
    let locations = UnitLocations::parse(Some(&json!({"base": position})))?;
    let features = {
        let _no_grad = tch::no_grad_guard();
        collector
            .run(&inputs, &[], &locations, &Subspaces::None)?
            .collected
            .remove(0)
            .squeeze_dim(1)
            .to_kind(Kind::Float)
    };
    let labels = Tensor::from_slice(&names.iter().map(|(_, class)| *class as i64).collect::<Vec<_>>());
    // Every third name is held out.
    let train: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 != 2).collect();
    let test: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 == 2).collect();
    let (train, test) = (Tensor::from_slice(&train), Tensor::from_slice(&test));
    let (x, y) = (features.index_select(0, &train), labels.index_select(0, &train));
    let mean = x.mean_dim(0, true, Kind::Float);
    let scale = x.std_dim(0, true, true) + 1e-6;
    let classes = setup.classes.len() as i64;
    let weights = Tensor::zeros([features.size()[1], classes], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let bias = Tensor::zeros([classes], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let mut optimizer = tch::COptimizer::adam(0.05, 0.9, 0.999, 0.0, 1e-8, false)?;
    optimizer.add_parameters(&weights, 0)?;
    optimizer.add_parameters(&bias, 0)?;
    let normalised = (&x - &mean) / &scale;
    for _ in 0..200 {
        optimizer.zero_grad()?;
        let loss = (normalised.matmul(&weights) + &bias).cross_entropy_for_logits(&y);
        loss.backward();
        optimizer.step()?;
    }
    let _no_grad = tch::no_grad_guard();
    let test_x = (features.index_select(0, &test) - &mean) / &scale;
    let predicted = (test_x.matmul(&weights) + &bias).argmax(-1, false);
    let accuracy =
        predicted.eq_tensor(&labels.index_select(0, &test)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    Ok((accuracy, collector.into_model()))
}

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
    let word_tokens = tokenizer.encode(word)?;
    let spaced = tokenizer.encode(&format!(" {word}"))?;
    let position = [word_tokens, spaced]
        .iter()
        .filter(|w| !w.is_empty())
        .find_map(|w| {
            tokens.windows(w.len()).position(|window| window == w.as_slice()).map(|start| start + w.len() - 1)
        })
        .ok_or_else(|| VeneError::Inputs(format!("{word:?} is not a token span of {prompt:?}")))?;
    let target_id = tokenizer.encode(target)?[0];
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
