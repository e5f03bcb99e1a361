//! Recurrent models: zero a timestep, swap it from a source, and swap it across time, measuring the per-step effect
//! on the last layer's hidden state.

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{
    output::{format_top, Figure},
    top_named, top_words, TopWords,
};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One timestep intervention's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TimestepIntervention {
    pub name: String,
    /// ‖h_intervened(t) − h(t)‖ of the last layer, per step t.
    pub effect: Vec<f64>,
    pub top: TopWords,
}

/// Per-step effect of timestep interventions on the GRU's last-layer hidden state.
#[derive(Debug, Clone, Serialize)]
pub struct TimestepStudy {
    pub tokens: Vec<String>,
    pub interventions: Vec<TimestepIntervention>,
    pub plain: TopWords,
}

/// Which timestep interventions to run: zero `step`, swap the source's `step` into the base's `step`, and a
/// cross-time swap of the source's `step` into the base's `to_step`, all on `cell_output` at `layer`.
#[derive(Debug, Clone)]
pub struct TimestepSetup {
    pub base: String,
    pub source: String,
    pub layer: i64,
    pub step: i64,
    pub to_step: i64,
}

impl Default for TimestepSetup {
    /// The demo's: "spain" (step 3) of "the capital of spain is", with "the capital of italy is" as the source.
    fn default() -> Self {
        Self {
            base: "the capital of spain is".to_string(),
            source: "the capital of italy is".to_string(),
            layer: 0,
            step: 3,
            to_step: 4,
        }
    }
}

/// Layer and steps of the three interventions (see [`TimestepSetup`]).
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub layer: i64,
    pub step: i64,
    pub to_step: i64,
}

/// Each case's name, per-step effect and model output, after the plain run's output.
struct Outcomes {
    plain: Tensor,
    cases: Vec<(String, Vec<f64>, Tensor)>,
}

/// Runs `base` plainly and with each of the three interventions (`source` feeding the swaps), collecting the last
/// layer's `cell_output` at every step to measure each intervention's effect on it.
fn run_cases(
    model: LoadedModel,
    plugins: &PluginSet,
    base: &ForwardInputs,
    source: &ForwardInputs,
    steps: i64,
    choice: Steps,
) -> Result<(Outcomes, LoadedModel)> {
    let device = model.device();
    let layers = model.catalog().num_layers as i64;
    let all_steps: Vec<i64> = (0..steps).collect();
    let collect = json!({"layer": layers - 1, "component": "cell_output", "unit": "t", "max_number_of_units": steps,
                         "intervention": {"type": "collect"}});
    let _no_grad = tch::no_grad_guard();
    let run = |model: LoadedModel,
               intervention: Option<(serde_json::Value, serde_json::Value)>|
     -> Result<(Tensor, Tensor, LoadedModel)> {
        let mut representations = vec![collect.clone()];
        let mut base_locations = vec![json!([all_steps.clone()])];
        let mut source_locations = vec![serde_json::Value::Null];
        let mut sources = Vec::new();
        if let Some((representation, (from, to))) = intervention.map(|(r, l)| (r, (l[0].clone(), l[1].clone()))) {
            representations.push(representation);
            source_locations.push(from);
            base_locations.push(to);
            sources = vec![None, Some(source.to_device(device))];
        }
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
            .map_err(|e| VeneError::Config(e.to_string()))?;
        let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
        let locations = UnitLocations::parse(Some(&json!({"sources->base": [source_locations, base_locations]})))?;
        let output = intervenable.run(base, &sources, &locations, &Subspaces::None)?;
        Ok((output.output, output.collected[0].shallow_clone(), intervenable.into_model()))
    };
    let (plain, plain_states, mut model) = run(model, None)?;
    let Steps { layer, step, to_step } = choice;
    let representation =
        |kind: &str| json!({"layer": layer, "component": "cell_output", "unit": "t", "intervention": {"type": kind}});
    let cases = [
        (format!("zero at step {step}, layer {layer}"), representation("zero"), json!([null, [[step]]])),
        (
            format!("swap step {step} from the source, layer {layer}"),
            representation("vanilla"),
            json!([[[step]], [[step]]]),
        ),
        (
            format!("cross-time: source step {step} into base step {to_step}, layer {layer}"),
            representation("vanilla"),
            json!([[[step]], [[to_step]]]),
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, representation, locations) in cases {
        let (output, states, returned) = run(model, Some((representation, locations)))?;
        model = returned;
        let effect = (&states - &plain_states).square().sum_dim_intlist(-1, false, Kind::Float).sqrt().view([-1]);
        outcomes.push((name, Vec::<f64>::try_from(&effect.to_kind(Kind::Double))?, output));
    }
    Ok((Outcomes { plain, cases: outcomes }, model))
}

/// The study on a language model, `setup`'s texts as base and source.
pub fn timestep_study(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &TimestepSetup,
) -> Result<(TimestepStudy, LoadedModel)> {
    let device = model.device();
    let ids = |text: &str| -> Result<ForwardInputs> {
        Ok(ForwardInputs::from_ids(Tensor::from_slice(&tokenizer.encode(text)?).view([1, -1]).to_device(device)))
    };
    let (base, source) = (ids(&setup.base)?, ids(&setup.source)?);
    let steps = base.input_ids.as_ref().map_or(0, |t| t.size()[1]);
    let choice = Steps { layer: setup.layer, step: setup.step, to_step: setup.to_step };
    let (outcomes, model) = run_cases(model, plugins, &base, &source, steps, choice)?;
    let mut interventions = Vec::new();
    for (name, effect, logits) in outcomes.cases {
        interventions.push(TimestepIntervention { name, effect, top: top_words(tokenizer, &logits)? });
    }
    let tokens = setup.base.split_whitespace().map(str::to_string).collect();
    Ok((TimestepStudy { tokens, interventions, plain: top_words(tokenizer, &outcomes.plain)? }, model))
}

/// The study on a classifier of feature sequences (`(1, steps, features)` base and source), its classes named by
/// `labels`; `steps` in the result names each step, `top` holds the three most likely classes.
pub fn sequence_timestep_study(
    model: LoadedModel,
    plugins: &PluginSet,
    base: &Tensor,
    source: &Tensor,
    labels: &[&str],
    choice: Steps,
) -> Result<(TimestepStudy, LoadedModel)> {
    let steps = base.size().get(1).copied().unwrap_or(0);
    let device = model.device();
    let (base_inputs, source_inputs) =
        (ForwardInputs::from_features(base.to_device(device)), ForwardInputs::from_features(source.to_device(device)));
    let (outcomes, model) = run_cases(model, plugins, &base_inputs, &source_inputs, steps, choice)?;
    let top = |logits: &Tensor| -> Result<TopWords> {
        let scores = logits.view([-1]);
        if scores.size()[0] != labels.len() as i64 {
            return Err(VeneError::Inputs(format!(
                "the model scores {} classes but {} labels were given",
                scores.size()[0],
                labels.len()
            )));
        }
        top_named(&scores, 3, |i| labels[i as usize].to_string())
    };
    let mut interventions = Vec::new();
    for (name, effect, logits) in outcomes.cases {
        interventions.push(TimestepIntervention { name, effect, top: top(&logits)? });
    }
    let tokens = (0..steps).map(|step| format!("step {step}")).collect();
    Ok((TimestepStudy { tokens, interventions, plain: top(&outcomes.plain)? }, model))
}

impl TimestepStudy {
    /// Each intervention's per-step effect as one line.
    pub fn effect_lines(&self, name: &str, title: &str) -> Figure {
        Figure::Lines {
            name: name.to_string(),
            title: title.to_string(),
            x_label: "step".to_string(),
            series: self.interventions.iter().map(|i| (i.name.clone(), i.effect.clone())).collect(),
        }
    }

    /// One line per intervention: its per-step effect (to 3 decimals) and the top outputs it leads to.
    pub fn summary(&self) -> String {
        self.interventions
            .iter()
            .map(|i| {
                let effect: Vec<f64> = i.effect.iter().map(|e| (e * 1000.0).round() / 1000.0).collect();
                format!("{}: per-step effect {effect:?} -> {}", i.name, format_top(&i.top))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Fashion-MNIST rows read per step by a GRU classifier over images.
pub const ROWS_PER_STEP: i64 = 2;

/// Images `(n, 1, h, w)` as a recurrent classifier's steps `(n, h / 2, 2 w)`: two pixel rows per step.
pub fn image_steps(images: &Tensor) -> Tensor {
    let size = images.size();
    let (n, height, width) = (size[0], size[size.len() - 2], size[size.len() - 1]);
    images.reshape([n, height / ROWS_PER_STEP, ROWS_PER_STEP * width])
}
