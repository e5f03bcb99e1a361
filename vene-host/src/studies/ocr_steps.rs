//! Reading text time step by time step: on a CRNN (EasyOCR's English recogniser), interchange the BiLSTM state at
//! step t — or the CNN's feature column t that the LSTM reads at that step — from one rendered word into another of
//! the same width, and measure which of the base word's characters lose their probability. A steps × characters
//! causal map on a real recurrent model: the paper's time-step interventions, where they can be read.
//!
//! All `T` single-step interventions of a pair run as one batch (example t intervened at step t).

use image::GrayImage;
use serde::Serialize;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{
    output::{Figure, StudyOutput},
    picture,
};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    vision::{ctc_greedy, model_config, text_batch, Preprocess},
};

/// What to read and where to intervene.
#[derive(Debug, Clone)]
pub struct OcrSetup {
    /// (base, source) words; each pair is rendered to one width.
    pub pairs: Vec<(String, String)>,
    /// Which BiLSTM (0 or 1) has its state swapped.
    pub layer: u32,
}

impl OcrSetup {
    /// The demo's pairs: same-length words whose letters differ at every position.
    pub fn demo() -> Self {
        let pairs = [("hello", "world"), ("cat", "dog"), ("time", "step")];
        Self { pairs: pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(), layer: 0 }
    }
}

/// One intervention family on one pair: per base character, per step, how much probability the character lost at
/// its column; and what the model reads after each step's intervention.
#[derive(Debug, Clone, Serialize)]
pub struct StepMap {
    pub site: String,
    /// `[character][step]`: p(character at its column) plain minus intervened.
    pub drop: Vec<Vec<f64>>,
    /// What the model reads with step t swapped.
    pub reads: Vec<String>,
}

/// One word pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairStudy {
    pub base: String,
    pub source: String,
    /// What the model reads on the plain images.
    pub base_read: String,
    pub source_read: String,
    pub steps: usize,
    /// The base read's characters and the column where each is most probable.
    pub characters: Vec<String>,
    pub columns: Vec<usize>,
    pub lstm: StepMap,
    pub cnn: StepMap,
    #[serde(skip)]
    images: Vec<GrayImage>,
}

/// The study: one entry per pair.
#[derive(Debug, Clone, Serialize)]
pub struct OcrStudy {
    pub layer: u32,
    pub pairs: Vec<PairStudy>,
}

/// Runs every pair of `setup` on the CRNN `model` whose directory holds its `characters` and `preprocess`.
pub fn ocr_step_study(
    mut model: LoadedModel,
    plugins: &PluginSet,
    setup: &OcrSetup,
) -> Result<(OcrStudy, LoadedModel)> {
    let config = model_config(model.dir())?;
    let characters = config["characters"]
        .as_str()
        .ok_or_else(|| VeneError::Config(format!("{} has no \"characters\": is it a CRNN?", model.dir().display())))?
        .to_string();
    let preprocess = Preprocess::of_model(model.dir())?;
    let _no_grad = tch::no_grad_guard();
    let mut pairs = Vec::new();
    for (base, source) in &setup.pairs {
        let (pair, returned) = pair_study(model, plugins, setup.layer, (base, source), &characters, &preprocess)?;
        model = returned;
        pairs.push(pair);
    }
    Ok((OcrStudy { layer: setup.layer, pairs }, model))
}

fn pair_study(
    model: LoadedModel,
    plugins: &PluginSet,
    layer: u32,
    (base, source): (&str, &str),
    characters: &str,
    preprocess: &Preprocess,
) -> Result<(PairStudy, LoadedModel)> {
    let (pixels, images) = text_batch(&[base, source], preprocess)?;
    let plain = model.forward_plain(&ForwardInputs::from_features(pixels.shallow_clone()))?.output;
    let reads = ctc_greedy(&plain, characters);
    let probabilities = plain.softmax(-1, Kind::Float);
    let steps = plain.size()[1];
    let (read_characters, columns) = aligned_characters(&plain.get(0));
    let base_pixels = pixels.narrow(0, 0, 1).repeat([steps, 1, 1, 1]);
    let source_pixels = pixels.narrow(0, 1, 1).repeat([steps, 1, 1, 1]);
    let lstm_sites: Vec<String> = ["cell_output", "cell_state", "cell_output_reverse", "cell_state_reverse"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let run = |model: LoadedModel, representations: Vec<serde_json::Value>| -> Result<(Tensor, LoadedModel)> {
        let count = representations.len();
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
            .map_err(|e| VeneError::Config(e.to_string()))?;
        let mut intervenable = IntervenableModel::new(model, config, plugins, 0)?;
        let per_example: Vec<Vec<i64>> = (0..steps).map(|t| vec![t]).collect();
        let side = vec![json!(per_example); count];
        let locations = UnitLocations::parse(Some(&json!({"sources->base": [side.clone(), side]})))?;
        let sources = [Some(ForwardInputs::from_features(source_pixels.shallow_clone()))];
        let output = intervenable.run(
            &ForwardInputs::from_features(base_pixels.shallow_clone()),
            &sources,
            &locations,
            &Subspaces::None,
        )?;
        Ok((output.output, intervenable.into_model()))
    };
    let swap = |component: &str, unit: &str, layer: u32| {
        json!({"layer": layer, "component": component, "unit": unit, "max_number_of_units": 1,
               "group_key": 0, "intervention": {"type": "vanilla"}})
    };
    let (lstm_out, model) = run(model, lstm_sites.iter().map(|s| swap(s, "t", layer)).collect())?;
    let (cnn_out, model) = run(model, vec![swap("visual_features", "pos", 0)])?;
    let map = |site: String, intervened: &Tensor| StepMap {
        site,
        drop: drops(&probabilities.get(0), &intervened.softmax(-1, Kind::Float), &read_characters, &columns),
        reads: ctc_greedy(intervened, characters),
    };
    let pair = PairStudy {
        base: base.to_string(),
        source: source.to_string(),
        base_read: reads[0].clone(),
        source_read: reads[1].clone(),
        steps: steps as usize,
        characters: read_characters
            .iter()
            .map(|&(_, c)| characters.chars().nth(c - 1).unwrap_or('?').to_string())
            .collect(),
        columns: columns.clone(),
        lstm: map(format!("BiLSTM {layer} state (h and c, both directions) at step t"), &lstm_out),
        cnn: map("CNN feature column t (visual_features)".to_string(), &cnn_out),
        images,
    };
    Ok((pair, model))
}

/// The CTC read of one example `(T, classes)`: each emitted character as `(index in the read, class)` and the
/// column where its run of columns is most probable.
fn aligned_characters(logits: &Tensor) -> (Vec<(usize, usize)>, Vec<usize>) {
    let best = Vec::<i64>::try_from(&logits.argmax(-1, false)).unwrap_or_default();
    let scores = Vec::<f32>::try_from(&logits.max_dim(-1, false).0).unwrap_or_default();
    let (mut emitted, mut columns) = (Vec::new(), Vec::new());
    let mut previous = 0;
    for (column, &class) in best.iter().enumerate() {
        if class > 0 && class != previous {
            emitted.push((emitted.len(), class as usize));
            columns.push(column);
        } else if class > 0 && class == previous {
            let last = columns.len() - 1;
            if scores[column] > scores[columns[last]] {
                columns[last] = column;
            }
        }
        previous = class;
    }
    (emitted, columns)
}

/// `[character][step]`: the plain probability of each read character at its column minus the same with step t
/// intervened (example t of `intervened`).
fn drops(plain: &Tensor, intervened: &Tensor, read: &[(usize, usize)], columns: &[usize]) -> Vec<Vec<f64>> {
    read.iter()
        .zip(columns)
        .map(|(&(_, class), &column)| {
            let before = plain.double_value(&[column as i64, class as i64]);
            let after = intervened.select(1, column as i64).select(1, class as i64);
            Vec::<f64>::try_from(&(before - after.to_kind(Kind::Double))).unwrap_or_default()
        })
        .collect()
}

impl OcrStudy {
    /// Per pair: the word strips with the steps marked, and the two steps × characters maps.
    pub fn figures(&self) -> Result<Vec<Figure>> {
        let mut figures = Vec::new();
        for pair in &self.pairs {
            let stem = format!("{}_{}", pair.base, pair.source);
            let rows = vec![
                (format!("base: {}", pair.base), pair.images[0].clone()),
                (format!("source: {}", pair.source), pair.images[1].clone()),
            ];
            let title = format!("'{}' and '{}' as the CRNN sees them ({} steps)", pair.base, pair.source, pair.steps);
            figures.push(Figure::Picture {
                name: format!("{stem}_words"),
                picture: picture::strips(&title, &rows, pair.steps)?,
            });
            for (kind, map) in [("lstm", &pair.lstm), ("cnn", &pair.cnn)] {
                let row_labels =
                    pair.characters.iter().zip(&pair.columns).map(|(c, col)| format!("'{c}' (col {col})")).collect();
                figures.push(Figure::Heatmap {
                    name: format!("{stem}_{kind}"),
                    title: format!("{} -> {}: {}", pair.source, pair.base, map.site),
                    row_labels,
                    column_label: "step t swapped".to_string(),
                    scale_label: "p(char) lost".to_string(),
                    values: map.drop.clone(),
                    max: 1.0,
                });
            }
        }
        Ok(figures)
    }

    /// Per pair and site: the step that costs each character most, and the reads that change.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        for pair in &self.pairs {
            lines.push(format!(
                "'{}' reads '{}', '{}' reads '{}' ({} steps)",
                pair.base, pair.base_read, pair.source, pair.source_read, pair.steps
            ));
            for map in [&pair.lstm, &pair.cnn] {
                let peaks: Vec<String> = pair
                    .characters
                    .iter()
                    .zip(&pair.columns)
                    .zip(&map.drop)
                    .map(|((c, column), row)| {
                        let (step, drop) = strongest_step(row);
                        format!("'{c}'@{column}: step {step} (-{drop:.2})")
                    })
                    .collect();
                let changed: Vec<String> = map
                    .reads
                    .iter()
                    .enumerate()
                    .filter(|(_, read)| **read != pair.base_read)
                    .map(|(t, read)| format!("{t}:{read}"))
                    .collect();
                lines.push(format!("  {}: {}", map.site, peaks.join(", ")));
                lines.push(format!(
                    "    reads that change: {}",
                    if changed.is_empty() { "none".into() } else { changed.join(" ") }
                ));
            }
        }
        lines.join("\n")
    }

    pub fn output(&self, json_name: &str) -> Result<StudyOutput> {
        StudyOutput::new(json_name, self, self.figures()?, self.summary())
    }
}

/// The step that costs a character most, and how much: `(step, drop)` of a row of [`StepMap::drop`].
pub fn strongest_step(values: &[f64]) -> (usize, f64) {
    values.iter().copied().enumerate().fold((0, f64::MIN), |best, (i, v)| if v > best.1 { (i, v) } else { best })
}
