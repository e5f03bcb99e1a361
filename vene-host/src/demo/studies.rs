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

pub fn interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
) -> Result<(Interchange, LoadedModel)> {
    let device = model.device();
    let _no_grad = tch::no_grad_guard();
    let base = ids(tokenizer, "the capital of spain is", device)?;
    let language = ids(tokenizer, "the language of spain is", device)?;
    let italy = ids(tokenizer, "the capital of italy is", device)?;
    let base_top = top_words(tokenizer, &model.forward_plain(&base)?.output)?;
    // Parallel: each source swaps its token's embedding-level representation into the base.
    let mut parallel = bind(
        model,
        plugins,
        json!({"mode": "parallel", "representations": [
            {"layer": 0, "component": "block_input", "group_key": 0, "intervention": {"type": "vanilla"}},
            {"layer": 0, "component": "block_input", "group_key": 1, "intervention": {"type": "vanilla"}}]}),
    )?;
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [[[[1]], [[3]]], [[[1]], [[3]]]]})))?;
    let sources = [Some(language.to_device(device)), Some(italy.to_device(device))];
    let output = parallel.run(&base, &sources, &locations, &Subspaces::None)?.output;
    let parallel_top = top_words(tokenizer, &output)?;
    // Serial: "language" goes into the Italy prompt, whose final state then goes into the base.
    let layers = parallel.model().catalog().num_layers as i64;
    let mut serial = bind(
        parallel.into_model(),
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
}

pub fn steering(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    vector: &Tensor,
    word: &str,
    coefficient: f64,
) -> Result<(Steering, LoadedModel)> {
    let prompt = "the capital of spain is";
    let tokens = tokenizer.encode(prompt)?;
    let layers = model.catalog().num_layers;
    let sampling = Sampling { max_new_tokens: 4, intervene_on: InterveneOn::Both, ..Sampling::default() };
    let mut plain = bind(model, plugins, json!({"representations": []}))?;
    let unsteered = generate(&mut plain, &tokens, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})?;
    let values: Vec<f32> = Vec::<f32>::try_from(&vector.to_kind(Kind::Float))?;
    let representations: Vec<_> = (0..layers)
        .map(|layer| {
            json!({"layer": layer, "component": "mlp_output",
            "intervention": {"type": "steering", "coefficient": coefficient, "vector": values}})
        })
        .collect();
    let mut steered_model = bind(plain.into_model(), plugins, json!({"representations": representations}))?;
    let steered =
        generate(&mut steered_model, &tokens, &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})?;
    let result = Steering {
        prompt: prompt.to_string(),
        word: word.to_string(),
        coefficient,
        unsteered: tokenizer.decode(&unsteered),
        steered: tokenizer.decode(&steered),
    };
    Ok((result, steered_model.into_model()))
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

/// DAS versus a linear probe (the paper's gender study, in miniature): for "NAME walked because" → he / she, per
/// layer × position, the held-out IIA of a rank-1 DAS intervention on the block output and the held-out accuracy of
/// a logistic-regression probe on the same activations.
#[derive(Debug, Clone, Serialize)]
pub struct DasProbe {
    pub tokens: Vec<String>,
    /// `[position][layer]`.
    pub das_iia: Vec<Vec<f64>>,
    pub probe_accuracy: Vec<Vec<f64>>,
}

fn name_prompt(name: &str) -> String {
    format!("{name} walked because")
}

pub fn das_vs_probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
) -> Result<(DasProbe, LoadedModel)> {
    use super::corpus::{FEMALE_NAMES, MALE_NAMES};
    use crate::train::{self, TrainOptions, TrainingExample};
    let names: Vec<(&str, bool)> =
        MALE_NAMES.iter().map(|n| (*n, true)).chain(FEMALE_NAMES.iter().map(|n| (*n, false))).collect();
    let pronoun = |male: bool| -> Result<i64> { Ok(tokenizer.encode(if male { "he" } else { "she" })?[0]) };
    let layers = model.catalog().num_layers as usize;
    let positions = tokenizer.encode(&name_prompt("john"))?.len();
    // Counterfactual pairs: the label is the source name's pronoun.
    let mut examples: Vec<(usize, usize)> = Vec::new();
    for base in 0..names.len() {
        for source in 0..names.len() {
            if names[base].1 != names[source].1 {
                examples.push((base, source));
            }
        }
    }
    let ids = |name: &str| -> Result<Vec<i64>> { tokenizer.encode(&name_prompt(name)) };
    let mut model = model;
    let mut das_iia = vec![vec![0.0; layers]; positions];
    let mut probe_accuracy = vec![vec![0.0; layers]; positions];
    for position in 0..positions {
        let data: Vec<TrainingExample> = examples
            .iter()
            .map(|&(base, source)| {
                serde_json::from_value(json!({
                    "base": {"input_ids": [ids(names[base].0)?]},
                    "sources": [{"input_ids": [ids(names[source].0)?]}],
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
            let (accuracy, returned) = probe(das.into_model(), plugins, tokenizer, &names, layer, position)?;
            probe_accuracy[position][layer] = accuracy;
            model = returned;
        }
    }
    let tokens = name_prompt("NAME").split_whitespace().map(str::to_string).collect();
    Ok((DasProbe { tokens, das_iia, probe_accuracy }, model))
}

/// Held-out accuracy (train on two thirds of the names, test on the rest) of a logistic-regression probe for the
/// name's gender on the block output at `layer`, `position`.
fn probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    names: &[(&str, bool)],
    layer: usize,
    position: usize,
) -> Result<(f64, LoadedModel)> {
    let mut collector = bind(
        model,
        plugins,
        json!({"representations": [{"layer": layer, "component": "block_output", "intervention": {"type": "collect"}}]}),
    )?;
    let prompts: Vec<String> = names.iter().map(|(n, _)| name_prompt(n)).collect();
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
    let labels = Tensor::from_slice(&names.iter().map(|(_, male)| i64::from(*male)).collect::<Vec<_>>());
    // Alternate male and female names between the splits.
    let train: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 != 2).collect();
    let test: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 == 2).collect();
    let (train, test) = (Tensor::from_slice(&train), Tensor::from_slice(&test));
    let (x, y) = (features.index_select(0, &train), labels.index_select(0, &train));
    let mean = x.mean_dim(0, true, Kind::Float);
    let scale = x.std_dim(0, true, true) + 1e-6;
    let weights = Tensor::zeros([features.size()[1], 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let bias = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
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

/// `senses` is the model's number of sense vectors per word.
pub fn sense_study(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    senses: i64,
) -> Result<(SenseStudy, LoadedModel)> {
    let (prompt, word, target) = ("the capital of spain is", "spain", "madrid");
    let device = model.device();
    let inputs = ids(tokenizer, prompt, device)?;
    let position = prompt.split_whitespace().position(|w| w == word).unwrap_or(0);
    let target_id = tokenizer.encode(target)?[0];
    if model.catalog().component_index("sense_network_output").is_none() {
        return Err(VeneError::Config("the sense study needs a Backpack model".to_string()));
    }
    let _no_grad = tch::no_grad_guard();
    let p_target = |logits: &Tensor| -> f64 {
        logits.select(1, -1).select(0, 0).to_kind(Kind::Float).softmax(-1, Kind::Float).double_value(&[target_id])
    };
    let baseline = p_target(&model.forward_plain(&inputs)?.output);
    let factors = vec![0.0, 3.0];
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
