//! The demo's plan: which models it builds, which studies it runs on them and in which order, and what the
//! report says. [`run`] writes every study's output under the demo directory and returns the report's sections.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{
    corpus, ensure_built,
    language_model::{self, Architecture, LmRecipe},
    model_name, pronoun_probe, recurrent, report, vision,
};
use crate::{
    datasets,
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    studies::{
        self,
        output::{format_top, StudyOutput},
        probe, senses,
        steering::{self, SteeringSetup},
        timesteps::{self, Steps, TimestepSetup},
        tracing::{self, TraceOptions, TracePrompt},
    },
    text::TextTokenizer,
    vectors,
};

/// Where the demo writes, where its models are cached, and the seed they are trained with.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub cache: PathBuf,
    pub seed: u64,
}

/// What the demo is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Training demo model `model`: `step` of `steps`, at `loss`.
    Training { model: &'a str, step: usize, steps: usize, loss: f64 },
    /// Study `study`: `done` of `total` items.
    Study { study: &'a str, done: usize, total: usize },
    /// The current task ended.
    Done,
}

/// One section of the report: a study's heading, its summary and its figures (paths relative to the report).
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub body: String,
    pub figures: Vec<String>,
}

/// What a demo run produced.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The demo GPT-2's directory in the cache.
    pub model_dir: PathBuf,
    pub sections: Vec<Section>,
    /// The path of `report.html`.
    pub report: PathBuf,
}

/// A demo study's output, the subdirectory it goes to, its key in `results.json` and the numbers stored there.
struct Finding {
    heading: &'static str,
    subdir: &'static str,
    output: StudyOutput,
    key: &'static str,
    result: serde_json::Value,
}

impl Finding {
    /// A finding whose numbers in `results.json` are the output's own.
    fn new(heading: &'static str, subdir: &'static str, key: &'static str, output: StudyOutput) -> Self {
        Self { heading, subdir, key, result: output.json.clone(), output }
    }
}

/// Context every demo step needs.
struct Demo<'a> {
    plugins: &'a PluginSet,
    options: &'a DemoOptions,
    progress: &'a mut dyn FnMut(Progress<'_>),
}

impl Demo<'_> {
    /// The cached model `name` (for this seed), trained by `train` if it is missing.
    fn model(
        &mut self,
        name: &str,
        train: impl FnOnce(&Path, &mut dyn FnMut(usize, usize, f64)) -> Result<()>,
    ) -> Result<PathBuf> {
        let cached = model_name(name, self.options.seed);
        let progress = &mut *self.progress;
        let dir = ensure_built(&self.options.cache, &cached, |staging| {
            train(staging, &mut |step, steps, loss| progress(Progress::Training { model: name, step, steps, loss }))
        })?;
        (self.progress)(Progress::Done);
        Ok(dir)
    }

    fn load(&self, dir: &Path) -> Result<LoadedModel> {
        LoadedModel::load(self.plugins, dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)
    }
}

/// Builds the demo models (once per cache and seed), runs every study, writes `report.html`, `results.json` and
/// each study's figures under `options.out`, and returns the report's sections.
pub fn run(plugins: &PluginSet, options: &DemoOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<DemoReport> {
    let mut demo = Demo { plugins, options, progress };
    let seed = options.seed;
    let model_dir = demo.model("gpt2-facts", |staging, progress| {
        language_model::train(staging, &LmRecipe { seed, ..Default::default() }, progress).map(|_| ())
    })?;
    let tokenizer = TextTokenizer::for_model(&model_dir, "gpt2")?
        .ok_or_else(|| VeneError::Config("the demo model has no tokenizer".to_string()))?;
    let tracing = causal_tracing(&mut demo, &model_dir, &tokenizer)?;
    let interchange = interchange(&demo, &model_dir, &tokenizer)?;
    let steering = steering_study(&demo, &model_dir, &tokenizer)?;
    let das_probe = das_versus_probe(&mut demo, &model_dir, &tokenizer)?;
    let gru = gru_text(&mut demo, &tokenizer)?;
    let backpack = backpack_senses(&mut demo, &tokenizer)?;
    let cnn = cnn_channels(&mut demo)?;
    let images = gru_images(&mut demo)?;
    // The report's order: the transformer studies, then the vene-trained recurrent, Backpack and CNN models.
    let findings = [tracing, interchange, das_probe, gru, images, backpack, cnn, steering];
    let mut results = serde_json::Map::new();
    let mut sections = Vec::new();
    for finding in findings {
        finding.output.write(&options.out.join(finding.subdir))?;
        results.insert(finding.key.to_string(), finding.result);
        sections.push(Section {
            heading: finding.heading.to_string(),
            body: finding.output.summary.clone(),
            figures: finding.output.images(finding.subdir),
        });
    }
    report::write_report(&options.out, "vene demo", &sections)?;
    studies::write_json(&options.out, "results.json", &serde_json::Value::Object(results))?;
    Ok(DemoReport { model_dir, sections, report: options.out.join("report.html") })
}

/// Causal tracing on the invented places' capital questions (three-word subjects), averaged over all of them.
fn causal_tracing(demo: &mut Demo<'_>, model_dir: &Path, tokenizer: &TextTokenizer) -> Result<Finding> {
    let places = corpus::places();
    let options = TraceOptions { samples: 50, window: 2, ..TraceOptions::default() };
    let prompts = places
        .iter()
        .map(|place| {
            let tokens = tokenizer.encode(&format!("the capital of {} is", place.name_text()))?;
            let subject =
                tracing::locate_subject(&tokens, &[tokenizer.encode_plain(&place.name_text())?]).ok_or_else(|| {
                    VeneError::Config(format!("the place {} is not in its own prompt", place.name_text()))
                })?;
            Ok(TracePrompt { tokens, subject, target: tokenizer.encode_plain(place.capital)?[0] })
        })
        .collect::<Result<Vec<_>>>()?;
    let model = demo.load(model_dir)?;
    let progress = &mut *demo.progress;
    let (traces, _) = tracing::trace_all(model, demo.plugins, &prompts, &options, |done, total| {
        progress(Progress::Study { study: "causal tracing (places)", done, total })
    })?;
    (demo.progress)(Progress::Done);
    let trace = tracing::average(&traces)?;
    let subject = trace.subject.0..trace.subject.1;
    let labels: Vec<String> = prompts[0]
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &token)| if subject.contains(&i) { "PLACE*".to_string() } else { tokenizer.decode(&[token]) })
        .collect();
    let title = |name: &str| format!("restored p(capital), mean of {} places — {name}", places.len());
    let figures = tracing::heatmaps(trace.sweeps(), &labels, title, trace.clean);
    let summary = format!(
        "prompts: \"the capital of PLACE is\" for the {} invented places with three-word names (\"{}\", ...; subject \
         marked *), target: the place's capital; mean over the places of {} noise samples each\np(capital) clean \
         {:.4}, corrupted {:.4}",
        places.len(),
        places[0].name_text(),
        options.samples,
        trace.clean,
        trace.corrupted
    );
    let result = json!({"clean": trace.clean, "corrupted": trace.corrupted});
    let output = StudyOutput::new("trace.json", &trace, figures, summary)?;
    Ok(Finding { heading: "Causal tracing", subdir: "tracing", output, key: "tracing", result })
}

/// The paper's multi-source interchange, in parallel and in series.
fn interchange(demo: &Demo<'_>, model_dir: &Path, tokenizer: &TextTokenizer) -> Result<Finding> {
    let (found, _) = report::interchange(demo.load(model_dir)?, demo.plugins, tokenizer)?;
    let summary = format!(
        "base: the capital of spain is -> {}\nparallel (\"language\" from \"the language of spain is\", \"italy\" from \
         \"the capital of italy is\") -> {}\nserial -> {}",
        format_top(&found.base),
        format_top(&found.parallel),
        format_top(&found.serial)
    );
    let output = StudyOutput::combined(&found, Vec::new(), summary)?;
    Ok(Finding::new("Multi-source interchange", ".", "interchange", output))
}

/// DAS versus a linear probe on "NAME walked because" → he / she.
fn das_versus_probe(demo: &mut Demo<'_>, model_dir: &Path, tokenizer: &TextTokenizer) -> Result<Finding> {
    let model = demo.load(model_dir)?;
    let progress = &mut *demo.progress;
    let (found, _) = probe::das_vs_probe(model, demo.plugins, tokenizer, &pronoun_probe(), |done, total| {
        progress(Progress::Study { study: "DAS and probe", done, total })
    })?;
    (demo.progress)(Progress::Done);
    let figures = found.heatmaps("rank-1 DAS held-out IIA (he/she)", "linear probe held-out accuracy (gender)");
    let summary = format!(
        "\"NAME walked because\" -> he / she; rows: positions, columns: layers\nDAS IIA: {:?}\nprobe accuracy: {:?}",
        found.das_iia, found.probe_accuracy
    );
    let output = StudyOutput::combined(&found, figures, summary)?;
    Ok(Finding::new("DAS versus a linear probe", "das_probe", "das_probe", output))
}

/// The GRU language model: timestep interventions on "the capital of spain is".
fn gru_text(demo: &mut Demo<'_>, tokenizer: &TextTokenizer) -> Result<Finding> {
    let seed = demo.options.seed;
    let dir =
        demo.model("gru-facts", |staging, progress| recurrent::train(staging, seed, 800, progress).map(|_| ()))?;
    let (study, _) = timesteps::timestep_study(demo.load(&dir)?, demo.plugins, tokenizer, &TimestepSetup::default())?;
    let figure = study.effect_lines("effects", "GRU: |h_intervened - h| per step (last layer)");
    let summary = format!("base: {} -> {}\n{}", study.tokens.join(" "), format_top(&study.plain), study.summary());
    let output = StudyOutput::combined(&study, vec![figure], summary)?;
    Ok(Finding::new("GRU timestep interventions", "gru", "gru", output))
}

/// The demo's GRU classifier study: what it learned, and the timestep interventions on one test image.
#[derive(Debug, serde::Serialize)]
struct GruImages {
    test_images: usize,
    accuracy: f64,
    base_image: usize,
    base_label: String,
    source_image: usize,
    source_label: String,
    study: timesteps::TimestepStudy,
}

/// The GRU classifier on Fashion-MNIST (two pixel rows per step): test image 0 with the first test image of another
/// class as the source; zero step 7 (pixel rows 14-15), swap it from the source, and move the source's step 7 into
/// step 8. Skipped without the data set.
fn gru_images(demo: &mut Demo<'_>) -> Result<Finding> {
    let heading = "GRU on Fashion-MNIST (two pixel rows per step)";
    let Some(data) = datasets::dataset_dir() else {
        return Ok(skipped(heading, "gru", "gru_images"));
    };
    let (test_images, seed) = (1_000, demo.options.seed);
    let dir = demo.model("gru-fashion-mnist", |staging, progress| {
        let accuracy = recurrent::train_classifier(staging, &data, 20_000, test_images, seed, progress)?;
        let path = staging.join("accuracy.json");
        vene_checkpoint::write_atomic(&path, json!({"accuracy": accuracy}).to_string().as_bytes())
            .map_err(|source| VeneError::Io { path, source })
    })?;
    let path = dir.join("accuracy.json");
    let text = std::fs::read_to_string(&path).map_err(|source| VeneError::Io { path: path.clone(), source })?;
    let accuracy: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| VeneError::Json { path, what: "the accuracy", source })?;
    let (images, labels) = datasets::load_split(&data, "t10k", 100)?;
    let labels = Vec::<i64>::try_from(&labels)?;
    let (base_image, source_image) = (0, labels.iter().position(|&l| l != labels[0]).unwrap_or(1));
    let steps = recurrent::image_steps(&images);
    let (study, _) = timesteps::sequence_timestep_study(
        demo.load(&dir)?,
        demo.plugins,
        &steps.narrow(0, base_image as i64, 1),
        &steps.narrow(0, source_image as i64, 1),
        &datasets::CLASSES,
        Steps { layer: 0, step: 7, to_step: 8 },
    )?;
    let label = |index: usize| datasets::CLASSES[labels[index] as usize].to_string();
    let found = GruImages {
        test_images,
        accuracy: accuracy["accuracy"].as_f64().unwrap_or(f64::NAN),
        base_image,
        base_label: label(base_image),
        source_image,
        source_label: label(source_image),
        study,
    };
    let summary = format!(
        "{} test images: accuracy {:.3}\nbase: test image {} ({}) -> {}\nsource: test image {} ({})\n{}",
        found.test_images,
        found.accuracy,
        found.base_image,
        found.base_label,
        format_top(&found.study.plain),
        found.source_image,
        found.source_label,
        found.study.summary()
    );
    let figure = found.study.effect_lines("image_effects", "GRU on images: |h_intervened - h| per step");
    let output = StudyOutput::combined(&found, vec![figure], summary)?;
    Ok(Finding::new(heading, "gru", "gru_images", output))
}

/// The Backpack GPT-2: scaling one sense vector of "spain".
fn backpack_senses(demo: &mut Demo<'_>, tokenizer: &TextTokenizer) -> Result<Finding> {
    let (count, seed) = (4, demo.options.seed);
    let dir = demo.model("backpack-facts", |staging, progress| {
        let recipe = LmRecipe {
            architecture: Architecture::Backpack { senses: count },
            positions: 16,
            steps: 1200,
            places: false,
            seed,
            ..Default::default()
        };
        language_model::train(staging, &recipe, progress).map(|_| ())
    })?;
    let (study, _) = senses::sense_study(demo.load(&dir)?, demo.plugins, tokenizer, &senses::SenseSetup::demo(count))?;
    let rows: Vec<String> = study
        .factors
        .iter()
        .zip(&study.probabilities)
        .map(|(f, row)| {
            format!("sense x {f}: {:?}", row.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>())
        })
        .collect();
    let summary = format!(
        "prompt: {}; word: {}; p({}) without intervention {:.4}\n{}",
        study.prompt,
        study.word,
        study.target,
        study.baseline,
        rows.join("\n")
    );
    let figure = study.lines("senses", "Backpack: p(madrid) with one sense of 'spain' scaled");
    let output = StudyOutput::combined(&study, vec![figure], summary)?;
    Ok(Finding::new("Backpack sense vectors", "backpack", "backpack", output))
}

/// The ResNet on Fashion-MNIST: zeroing each channel of its first block. Skipped without the data set.
fn cnn_channels(demo: &mut Demo<'_>) -> Result<Finding> {
    let heading = "CNN channels (ResNet on Fashion-MNIST)";
    let Some(data) = datasets::dataset_dir() else {
        return Ok(skipped(heading, "cnn", "cnn"));
    };
    let seed = demo.options.seed;
    let dir = demo.model("resnet-fashion-mnist", |staging, progress| {
        vision::train(staging, &data, 12_000, 2_000, seed, progress).map(|_| ())
    })?;
    let (study, _) = studies::channels::channel_study(demo.load(&dir)?, demo.plugins, "block_output", 0, &data, 500)?;
    let summary = format!(
        "{} test images: accuracy {:.3}, mean p(true class) {:.3}\nwith channel c of block 0 zeroed: {:?}",
        study.images,
        study.accuracy,
        study.baseline,
        study.zeroed.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>()
    );
    let figure = study.lines("channels", "ResNet: mean p(true class), one channel of block 0 zeroed");
    let output = StudyOutput::combined(&study, vec![figure], summary)?;
    Ok(Finding::new(heading, "cnn", "cnn", output))
}

/// Steering "the capital of spain is" towards "italy" at every MLP output, every decoding step.
fn steering_study(demo: &Demo<'_>, model_dir: &Path, tokenizer: &TextTokenizer) -> Result<Finding> {
    let model = demo.load(model_dir)?;
    let vector = vectors::token_embedding(&model, tokenizer, "italy")?;
    let setup = SteeringSetup {
        prompt: "the capital of spain is".to_string(),
        word: "italy".to_string(),
        coefficient: 3.0,
        component: "mlp_output".to_string(),
        max_new_tokens: 4,
    };
    let (found, _) = steering::steering(model, demo.plugins, tokenizer, &vector, &setup)?;
    let summary = format!(
        "prompt: {}\nunsteered: {}\nsteered (+{} x embedding of \"{}\" at every MLP output, every step): {}",
        found.prompt, found.unsteered, found.coefficient, found.word, found.steered
    );
    let output = StudyOutput::combined(&found, Vec::new(), summary)?;
    Ok(Finding::new("Steering during generation", ".", "steering", output))
}

/// A study that needs Fashion-MNIST, when it is not installed.
fn skipped(heading: &'static str, subdir: &'static str, key: &'static str) -> Finding {
    let summary = "skipped: Fashion-MNIST is not installed (scripts/datasets.sh installs it)".to_string();
    let output = StudyOutput { json_name: None, json: serde_json::Value::Null, figures: Vec::new(), summary };
    Finding::new(heading, subdir, key, output)
}
