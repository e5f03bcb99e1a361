//! The studies of the real CNN and recurrent models as functions (`vene ocr-steps`, `vene cnn-trace`,
//! `vene image-das`, `vene vad-state`): each runs the command's library code with the GIL released and returns its numbers as JSON text
//! with the summary, writing the figures and JSON file when given a directory.

use std::path::PathBuf;

use pyo3::prelude::*;
use vene_host::{
    audio, real_model,
    studies::{
        cnn_tracing::{self, CnnTraceOptions, Photo},
        image_das::{image_das_study, AttributePhoto, ImageDasOptions, IMAGENET_ANIMALS},
        ocr_steps::{ocr_step_study, OcrSetup},
        vad_state::vad_state_study,
    },
    vision::{load_photo_with_crop, open_rgb, Preprocess},
};

use crate::{
    errors::{released, OrRaise},
    model::Model,
    studies::finish,
};

/// Word pairs `(base, source)` read by a CRNN, the BiLSTM state (layer `layer`) and the CNN column swapped at each step.
#[pyfunction]
#[pyo3(signature = (model, pairs, layer=0, out=None))]
pub fn ocr_steps(
    py: Python<'_>,
    model: &Model,
    pairs: Vec<(String, String)>,
    layer: u32,
    out: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let setup = OcrSetup { pairs, layer };
    let study = released(py, "ocr steps", || {
        ocr_step_study(model.model.clone(), &model.plugins, &setup).map(|(study, _)| study).or_raise()
    })?;
    finish(study.output("ocr_steps.json"), None, out)
}

/// Causal tracing over blocks × regions of each photo (image files), and each photo's regions swapped into the next.
#[pyfunction]
#[pyo3(signature = (model, photos, grid=7, noise=2.0, samples=2, seed=0, out=None))]
#[allow(clippy::too_many_arguments)]
pub fn cnn_trace(
    py: Python<'_>,
    model: &Model,
    photos: Vec<PathBuf>,
    grid: i64,
    noise: f64,
    samples: usize,
    seed: i64,
    out: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let options = CnnTraceOptions { grid, noise_scale: noise, samples, seed };
    let study = released(py, "cnn tracing", || {
        let dir = model.model.dir().to_path_buf();
        let preprocess = Preprocess::of_model(&dir).or_raise()?;
        let mut loaded = Vec::new();
        for path in &photos {
            let (pixels, crop) = load_photo_with_crop(path, &preprocess).or_raise()?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            loaded.push(Photo { name, pixels, crop });
        }
        let labels = cnn_tracing::labels(&dir).or_raise()?;
        cnn_tracing::cnn_trace_study(model.model.clone(), &model.plugins, loaded, &labels, &options)
            .map(|(study, _)| study)
            .or_raise()
    })?;
    finish(study.output("cnn_trace.json"), None, out)
}

/// Rank-1 DAS versus a linear probe, block by block, for a binary attribute: `positive` and `negative` photos (files
/// or installed names), the attribute's output classes (default: ImageNet's animals).
#[pyfunction]
#[pyo3(signature = (model, positive, negative, attribute="animal".to_string(), classes=None, crops=24, blocks=None,
                    pairs=96, epochs=3, seed=0, out=None))]
#[allow(clippy::too_many_arguments)]
pub fn image_das(
    py: Python<'_>,
    model: &Model,
    positive: Vec<String>,
    negative: Vec<String>,
    attribute: String,
    classes: Option<Vec<i64>>,
    crops: usize,
    blocks: Option<Vec<usize>>,
    pairs: usize,
    epochs: usize,
    seed: u64,
    out: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let options = ImageDasOptions {
        attribute,
        positive_classes: classes.unwrap_or_else(|| IMAGENET_ANIMALS.collect()),
        crops_per_photo: crops,
        blocks,
        pairs,
        epochs,
        seed,
    };
    let study = released(py, "image das", || {
        let preprocess = Preprocess::of_model(model.model.dir()).or_raise()?;
        let mut photos = Vec::new();
        for (names, kind) in [(&positive, true), (&negative, false)] {
            for name in names {
                let image = open_rgb(&real_model::photo(name).or_raise()?).or_raise()?;
                photos.push(AttributePhoto { name: name.clone(), image, positive: kind });
            }
        }
        image_das_study(model.model.clone(), &model.plugins, &preprocess, &photos, &options, |_, _| {})
            .map(|(study, _)| study)
            .or_raise()
    })?;
    finish(study.output("image_das.json"), None, out)
}

/// Utterances synthesised by espeak-ng with `gap` seconds of silence around them; the LSTM state zeroed and taken
/// from silence at each of `chunks` (default: five chunks into each stretch of speech).
#[pyfunction]
#[pyo3(signature = (model, texts, gap=0.6, chunks=None, out=None))]
pub fn vad_state(
    py: Python<'_>,
    model: &Model,
    texts: Vec<String>,
    gap: f64,
    chunks: Option<Vec<i64>>,
    out: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let study = released(py, "vad state", || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let speech = audio::utterances(&refs, gap, 16_000, 512).or_raise()?;
        vad_state_study(model.model.clone(), &model.plugins, &speech, &texts, chunks).map(|(study, _)| study).or_raise()
    })?;
    finish(study.output("vad_state.json"), None, out)
}
