//! Amnesic probing (Elazar et al. 2021): erase what a linear probe reads about a class from one site (LEACE or INLP,
//! fitted on the activations of training names) and measure, on held-out names, what a fresh probe still reads and
//! how the model's own prediction changes — the behavioural test a probe alone cannot give. Prompts come from a
//! template with a `{name}` slot and classes of names, each with the word the class predicts (" he" / " she").

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::output::{Figure, StudyOutput};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    erasure,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// Which eraser to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Eraser {
    Leace,
    /// INLP with this many iterations.
    Inlp(usize),
}

#[derive(Debug, Clone)]
pub struct AmnesicSetup {
    pub template: String,
    /// (target word, names).
    pub classes: Vec<(String, Vec<String>)>,
    pub layer: u32,
    pub component: String,
    /// The token position erased (the name's is where the class is written first).
    pub position: usize,
    pub eraser: Eraser,
}

/// What erasing did, on the held-out names.
#[derive(Debug, Clone, Serialize)]
pub struct Amnesic {
    pub layer: u32,
    pub component: String,
    pub position: usize,
    pub eraser: Eraser,
    pub train_names: usize,
    pub held_out_names: usize,
    /// A fresh linear probe's held-out accuracy on the activations, before and after erasing.
    pub probe_before: f64,
    pub probe_after: f64,
    /// How often the model's next word, among the classes' words, is the name's class word.
    pub behaviour_before: f64,
    pub behaviour_after: f64,
    /// The class word's probability among the class words, averaged.
    pub class_probability_before: f64,
    pub class_probability_after: f64,
    /// Predicting the majority class always.
    pub majority: f64,
}

/// An eraser applied to activations outside the model (for the probes).
type ErasureFn = Box<dyn Fn(&Tensor) -> Tensor>;

struct Prepared {
    inputs: ForwardInputs,
    labels: Tensor,
    targets: Tensor,
}

fn prepare(tokenizer: &TextTokenizer, setup: &AmnesicSetup, device: tch::Device) -> Result<Prepared> {
    if setup.classes.len() < 2 || !setup.template.contains("{name}") {
        return Err(VeneError::Config("amnesic probing needs two or more classes and a template with {name}".into()));
    }
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (class, (_, names)) in setup.classes.iter().enumerate() {
        for name in names {
            let ids = tokenizer.encode(&setup.template.replace("{name}", name))?;
            if let Some(first) = rows.first().map(Vec::len).filter(|&n: &usize| n != ids.len()) {
                return Err(VeneError::Inputs(format!(
                    "{name:?} makes the prompt {} tokens long where the first name makes it {first}: use names of one \
                     token each",
                    ids.len()
                )));
            }
            rows.push(ids);
            labels.push(class as i64);
        }
    }
    let length = rows.first().map_or(0, Vec::len);
    if setup.position >= length {
        return Err(VeneError::Config(format!(
            "position {} is outside the {length}-token prompts (valid: 0 to {})",
            setup.position,
            length.saturating_sub(1)
        )));
    }
    let targets = super::first_tokens(tokenizer, setup.classes.iter().map(|(word, _)| word.as_str()))?;
    let count = rows.len() as i64;
    let ids = Tensor::from_slice(&rows.concat()).view([count, -1]).to_device(device);
    Ok(Prepared {
        inputs: ForwardInputs::from_ids(ids).reading_last_position(),
        labels: Tensor::from_slice(&labels),
        targets: Tensor::from_slice(&targets).to_device(device),
    })
}

fn bind(
    model: &LoadedModel,
    plugins: &PluginSet,
    setup: &AmnesicSetup,
    intervention: serde_json::Value,
) -> Result<IntervenableModel> {
    let config = json!({"representations": [{"layer": setup.layer, "component": setup.component,
        "intervention": intervention}]});
    let config: IntervenableConfig =
        serde_json::from_value(config).map_err(|e| VeneError::Config(format!("amnesic probing config: {e}")))?;
    IntervenableModel::new(model.clone(), config, plugins, 0)
}

fn rows(tensor: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(Vec::<Vec<f32>>::try_from(tensor.to_kind(Kind::Float).to_device(tch::Device::Cpu))?)
}

/// Fits the eraser on the training names' activations, then measures probes and behaviour on the held-out names
/// (every third name), with and without erasing.
pub fn amnesic_probe(
    model: &LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &AmnesicSetup,
) -> Result<Amnesic> {
    let _no_grad = tch::no_grad_guard();
    let prepared = prepare(tokenizer, setup, model.device())?;
    let base_location = UnitLocations::parse(Some(&json!({"base": setup.position})))?;
    let mut collector = bind(model, plugins, setup, json!({"type": "collect"}))?;
    let activations = collector
        .run(&prepared.inputs, &[], &base_location, &Subspaces::None)?
        .collected
        .remove(0)
        .squeeze_dim(1)
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu);
    let count = activations.size()[0];
    let held: Vec<i64> = (0..count).filter(|i| i % 3 == 2).collect();
    let train: Vec<i64> = (0..count).filter(|i| i % 3 != 2).collect();
    let (held, train) = (Tensor::from_slice(&held), Tensor::from_slice(&train));
    let (train_x, train_y) = (activations.index_select(0, &train), prepared.labels.index_select(0, &train));
    let (held_x, held_y) = (activations.index_select(0, &held), prepared.labels.index_select(0, &held));
    let (intervention, erase): (serde_json::Value, ErasureFn) = match setup.eraser {
        Eraser::Leace => {
            let fitted = erasure::fit_leace(&train_x, &train_y)?;
            let json =
                json!({"type": "leace", "eraser": rows(&fitted.eraser)?, "mean": rows(&fitted.mean.unsqueeze(0))?[0]});
            (json, Box::new(move |x: &Tensor| x - (x - &fitted.mean).matmul(&fitted.eraser.tr())))
        }
        Eraser::Inlp(iterations) => {
            let fitted = erasure::fit_inlp(&train_x, &train_y, iterations)?;
            let json = json!({"type": "nullspace_projection", "directions": rows(&fitted.directions)?});
            let q = fitted.directions;
            (json, Box::new(move |x: &Tensor| x - x.matmul(&q.tr()).matmul(&q)))
        }
    };
    let classes = setup.classes.len() as i64;
    let probe_before = erasure::probe_accuracy((&train_x, &train_y), (&held_x, &held_y), classes)?;
    let probe_after = erasure::probe_accuracy((&erase(&train_x), &train_y), (&erase(&held_x), &held_y), classes)?;

    let held_inputs = ForwardInputs {
        input_ids: prepared.inputs.input_ids.as_ref().map(|ids| ids.index_select(0, &held.to_device(ids.device()))),
        ..ForwardInputs::from_ids(Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)))
    }
    .reading_last_position();
    let behaviour = |output: Tensor| -> Result<(f64, f64)> {
        let logits = if output.dim() == 3 { output.select(1, -1) } else { output };
        let class_logits = logits.index_select(1, &prepared.targets).to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let right = class_logits.argmax(-1, false).eq_tensor(&held_y).to_kind(Kind::Double).mean(Kind::Double);
        let probability =
            class_logits.softmax(-1, Kind::Double).gather(1, &held_y.unsqueeze(1), false).mean(Kind::Double);
        Ok((right.double_value(&[]), probability.double_value(&[])))
    };
    let (behaviour_before, class_probability_before) = behaviour(model.forward_plain(&held_inputs)?.output)?;
    let mut eraser = bind(model, plugins, setup, intervention)?;
    let erased = eraser.run(&held_inputs, &[], &base_location, &Subspaces::None)?.output;
    let (behaviour_after, class_probability_after) = behaviour(erased)?;
    let counts: Vec<i64> = (0..classes).map(|c| held_y.eq(c).sum(Kind::Int64).int64_value(&[])).collect();
    let majority = *counts.iter().max().unwrap_or(&0) as f64 / held_y.size()[0].max(1) as f64;
    Ok(Amnesic {
        layer: setup.layer,
        component: setup.component.clone(),
        position: setup.position,
        eraser: setup.eraser,
        train_names: train.size()[0] as usize,
        held_out_names: held.size()[0] as usize,
        probe_before,
        probe_after,
        behaviour_before,
        behaviour_after,
        class_probability_before,
        class_probability_after,
        majority,
    })
}

/// The bars (probe and behaviour, before and after), amnesic.json and the summary.
pub fn study_output(found: &Amnesic) -> Result<StudyOutput> {
    let bars = vec![
        ("probe, before".to_string(), found.probe_before),
        ("probe, erased".to_string(), found.probe_after),
        ("model's class word, before".to_string(), found.behaviour_before),
        ("model's class word, erased".to_string(), found.behaviour_after),
        ("majority class".to_string(), found.majority),
    ];
    let figure = Figure::Bars {
        name: "amnesic".to_string(),
        title: format!("erasing at layer {} position {} ({:?})", found.layer, found.position, found.eraser),
        bars,
        max: 1.0,
    };
    let summary = format!(
        "{} held-out names ({} to fit): probe accuracy {:.3} → {:.3}; the model picks the class word {:.3} → {:.3} \
         (its probability among the class words {:.3} → {:.3}); the majority class is {:.3}",
        found.held_out_names,
        found.train_names,
        found.probe_before,
        found.probe_after,
        found.behaviour_before,
        found.behaviour_after,
        found.class_probability_before,
        found.class_probability_after,
        found.majority
    );
    StudyOutput::new("amnesic.json", found, vec![figure], summary)
}
