//! A stateful model: Silero VAD on synthesised speech, with its LSTM state (`h` and `c`) at one 32 ms chunk zeroed,
//! or replaced by the state the same chunk has when the audio is silent, and the speech probability of every later
//! chunk against the clean run: how long the model's memory of "someone is speaking" lasts.
//!
//! Each intervention is one example of one batch, acting at its own chunk.

use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::output::{Figure, StudyOutput};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

/// How far the intervened probability may stay from the clean one for a chunk to count as recovered.
const RECOVERED: f64 = 0.05;
/// Recovered means: this many chunks in a row within [`RECOVERED`].
const SETTLED: usize = 10;
/// Chunks after the intervention drawn in the difference figure.
const WINDOW: usize = 40;

/// One intervention's run.
#[derive(Debug, Clone, Serialize)]
pub struct StateIntervention {
    pub name: String,
    pub chunk: i64,
    /// p(speech) per chunk.
    pub probabilities: Vec<f64>,
    /// |p - clean| from the intervened chunk on (index 0 is the chunk itself).
    pub difference: Vec<f64>,
    /// The largest |p - clean| in the chunks after the intervened one.
    pub largest_change_after: f64,
    /// Chunks after the intervention until the run stays within 0.05 of the clean one for 10 chunks in a row.
    pub chunks_to_recover: Option<usize>,
    /// The largest |p - clean| after that: differences that come back later (None if it never recovers).
    pub later_change: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VadStudy {
    pub texts: Vec<String>,
    pub chunk_ms: f64,
    pub clean: Vec<f64>,
    pub interventions: Vec<StateIntervention>,
}

/// Runs `audio` `(1, samples)` plainly, then with the state zeroed and swapped from silence at each of `chunks`
/// (by default five chunks into each stretch of speech the clean run finds).
pub fn vad_state_study(
    model: LoadedModel,
    plugins: &PluginSet,
    audio: &Tensor,
    texts: &[String],
    chunks: Option<Vec<i64>>,
) -> Result<(VadStudy, LoadedModel)> {
    let _no_grad = tch::no_grad_guard();
    let inputs = ForwardInputs::from_features(audio.shallow_clone());
    let clean = Vec::<f64>::try_from(&model.forward_plain(&inputs)?.output.get(0).to_kind(Kind::Double))?;
    let chunks = match chunks {
        Some(chunks) => chunks,
        None => speech_onsets(&clean).into_iter().map(|t| t + 5).filter(|&t| (t as usize) < clean.len()).collect(),
    };
    if chunks.is_empty() || chunks.iter().any(|&t| t < 0 || t as usize >= clean.len()) {
        return Err(VeneError::Inputs(format!(
            "no chunk to intervene at: give chunks in 0..{} (the clean run found no speech to pick them from)",
            clean.len()
        )));
    }
    let count = chunks.len() as i64;
    let per_example = json!(chunks.iter().map(|&t| vec![t]).collect::<Vec<_>>());
    let state = |kind: &str| -> Vec<serde_json::Value> {
        ["cell_state", "cell_output"]
            .iter()
            .map(|site| {
                json!({"layer": 0, "component": site, "unit": "t", "max_number_of_units": 1, "group_key": 0,
                       "intervention": {"type": kind}})
            })
            .collect()
    };
    let run = |model: LoadedModel, representations: Vec<serde_json::Value>, source: Option<&Tensor>| {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
            .map_err(|e| VeneError::Config(e.to_string()))?;
        let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
        let sides = vec![per_example.clone(); 2];
        let (locations, sources) = match source {
            Some(source) => (
                json!({"sources->base": [sides.clone(), sides]}),
                vec![Some(ForwardInputs::from_features(source.repeat([count, 1])))],
            ),
            None => (json!({"base": sides}), Vec::new()),
        };
        let output = intervenable.run(
            &ForwardInputs::from_features(audio.repeat([count, 1])),
            &sources,
            &UnitLocations::parse(Some(&locations))?,
            &Subspaces::None,
        )?;
        Ok::<_, VeneError>((output.output.to_kind(Kind::Double), intervenable.into_model()))
    };
    let (zeroed, model) = run(model, state("zero"), None)?;
    let silence = audio.zeros_like();
    let (swapped, model) = run(model, state("vanilla"), Some(&silence))?;
    let mut interventions = Vec::new();
    for (index, &chunk) in chunks.iter().enumerate() {
        for (name, runs) in [("state zeroed", &zeroed), ("state from silence", &swapped)] {
            let probabilities = Vec::<f64>::try_from(&runs.get(index as i64))?;
            interventions.push(measure(format!("{name} at chunk {chunk}"), chunk, probabilities, &clean));
        }
    }
    let chunk_ms = 1000.0 * 512.0 / 16000.0;
    Ok((VadStudy { texts: texts.to_vec(), chunk_ms, clean, interventions }, model))
}

/// The chunks where the clean probability first rises above 0.5 after being below it.
fn speech_onsets(clean: &[f64]) -> Vec<i64> {
    (0..clean.len()).filter(|&t| clean[t] > 0.5 && (t == 0 || clean[t - 1] <= 0.5)).map(|t| t as i64).collect()
}

fn measure(name: String, chunk: i64, probabilities: Vec<f64>, clean: &[f64]) -> StateIntervention {
    let difference: Vec<f64> =
        probabilities.iter().zip(clean).skip(chunk as usize).map(|(p, c)| (p - c).abs()).collect();
    let largest_change_after = difference.iter().skip(1).copied().fold(0.0, f64::max);
    let chunks_to_recover = (1..difference.len().saturating_sub(SETTLED - 1))
        .find(|&k| difference[k..k + SETTLED].iter().all(|&d| d <= RECOVERED));
    let later_change = chunks_to_recover.map(|k| difference.iter().skip(k + SETTLED).copied().fold(0.0, f64::max));
    StateIntervention { name, chunk, probabilities, difference, largest_change_after, chunks_to_recover, later_change }
}

impl VadStudy {
    pub fn figures(&self) -> Vec<Figure> {
        let mut series = vec![("clean".to_string(), self.clean.clone())];
        series.extend(self.interventions.iter().map(|i| (i.name.clone(), i.probabilities.clone())));
        vec![
            Figure::Lines {
                name: "speech_probability".to_string(),
                title: format!(
                    "Silero VAD: p(speech) per {:.0} ms chunk, LSTM state intervened at one chunk",
                    self.chunk_ms
                ),
                x_label: "chunk".to_string(),
                series,
            },
            Figure::Lines {
                name: "difference_after".to_string(),
                title: "|p(speech) - clean| in the chunks after the intervention".to_string(),
                x_label: "chunks after the intervened one".to_string(),
                series: self
                    .interventions
                    .iter()
                    .map(|i| (i.name.clone(), i.difference.iter().take(WINDOW).copied().collect()))
                    .collect(),
            },
        ]
    }

    pub fn summary(&self) -> String {
        let speech = self.clean.iter().filter(|&&p| p > 0.5).count();
        let mut lines = vec![format!(
            "{:?}: {} chunks of {:.0} ms, {speech} with p(speech) > 0.5",
            self.texts,
            self.clean.len(),
            self.chunk_ms
        )];
        for i in &self.interventions {
            let recovery = match (i.chunks_to_recover, i.later_change) {
                (Some(n), Some(later)) => format!(
                    "back within {RECOVERED} of clean after {n} chunks ({:.0} ms); largest difference later {later:.3}",
                    n as f64 * self.chunk_ms
                ),
                _ => format!("never {SETTLED} chunks in a row within {RECOVERED} of clean"),
            };
            lines.push(format!(
                "{}: p {:.3} -> {:.3} at the chunk, largest change after it {:.3}, {recovery}",
                i.name, self.clean[i.chunk as usize], i.probabilities[i.chunk as usize], i.largest_change_after
            ));
        }
        lines.join("\n")
    }

    pub fn output(&self, json_name: &str) -> Result<StudyOutput> {
        StudyOutput::new(json_name, self, self.figures(), self.summary())
    }
}
