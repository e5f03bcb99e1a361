//! The demo's plan: which models it builds, which studies it runs on them and in which order, and what the
//! report says. [`run`] writes every study's output under the demo directory and returns the report's sections.

use std::path::{Path, PathBuf};

use super::{
    cached::Context,
    circuits, cnn_rnn, ensure_built,
    language_model::{self, Architecture, LmRecipe},
    model_name,
    real_model::{self, RealGrid},
    report,
};
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    sharding::{self, ItemCache},
    studies::{self, output::StudyOutput, senses},
    text::TextTokenizer,
};

/// Where the demo writes, where its models are cached, and the seed they are trained with.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub cache: PathBuf,
    pub seed: u64,
    /// The real model's file (Gemma 3 270M GGUF).
    pub real_model: PathBuf,
    pub grid: RealGrid,
}

/// What the demo is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Training demo model `model`: `step` of `steps`, at `loss`.
    Training { model: &'a str, step: usize, steps: usize, loss: f64 },
    /// Study `study`: `done` of `total` items.
    Study { study: &'a str, done: usize, total: usize },
    /// Study `study` read `reused` of its `total` items back from the cache of an earlier run.
    Reused { study: &'a str, reused: usize, total: usize },
    /// The current task ended.
    Done,
}

/// One section of the report: a study's heading, what it asks, what the paper found, what vene measured (summary and
/// table), its figures (paths relative to the report) and the command that reruns it.
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub paper: Paper,
    pub body: String,
    pub figures: Vec<String>,
}

/// A study's framing in the report.
#[derive(Debug, Clone)]
pub struct Paper {
    pub question: String,
    /// What the paper the study comes from reports.
    pub claim: String,
    /// Key numbers, the first row the header.
    pub table: Vec<Vec<String>>,
    pub command: String,
    /// Run on a model vene trained itself (no real weights exist for the architecture).
    pub toy: bool,
}

/// What a demo run produced.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The real model's file.
    pub model: PathBuf,
    pub sections: Vec<Section>,
    /// The path of `report.html`.
    pub report: PathBuf,
}

/// A demo study's output, the subdirectory it goes to, its key in `results.json` and how the report frames it.
pub struct Finding {
    pub heading: &'static str,
    pub subdir: &'static str,
    pub output: StudyOutput,
    pub key: &'static str,
    pub paper: Paper,
}

impl Finding {
    /// A finding on a vene-trained model, with its question and the paper's claim.
    fn toy(
        heading: &'static str,
        subdir: &'static str,
        key: &'static str,
        output: StudyOutput,
        paper: [&str; 3],
    ) -> Self {
        let [question, claim, command] = paper.map(str::to_string);
        let paper = Paper { question, claim, table: Vec::new(), command, toy: true };
        Self { heading, subdir, key, output, paper }
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

/// Runs the studies on the real model, builds the vene-trained toy models (once per cache and seed) and runs theirs,
/// writes `report.html`, `results.json` and each study's figures under `options.out`, and returns the report's
/// sections.
pub fn run(plugins: &PluginSet, options: &DemoOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<DemoReport> {
    let mut demo = Demo { plugins, options, progress };
    let grid = &options.grid;
    let model = demo.load(&options.real_model)?;
    let tokenizer = TextTokenizer::for_model(&options.real_model, &model.catalog().model_type)?
        .ok_or_else(|| VeneError::Config("the real model has no tokenizer in its metadata".to_string()))?;
    let progress = &mut *demo.progress;
    let cache = ItemCache::new(&options.cache.join("real-model"), sharding::model_sha256(&options.real_model)?);
    let context = Context { plugins, tokenizer: &tokenizer, cache: &cache };
    let (tracing, eiffel, model) = real_model::tracing(model, &context, grid, progress)?;
    let (interchange, model) = real_model::interchange(model, &context, grid, progress)?;
    let (steering, model) = real_model::steering(model, &context, grid, progress)?;
    let (das_probe, model) = real_model::das_versus_probe(model, &context, grid, progress)?;
    let (path_patching, model) = circuits::path_patching(model, &context, grid.path_senders.as_deref(), progress)?;
    let (attribution, model) = circuits::attribution(model, plugins, &tokenizer)?;
    let (circuit, model) = circuits::circuit(model, plugins, &tokenizer)?;
    drop(model);
    let ocr = cnn_rnn::ocr_steps(plugins)?;
    let cnn = cnn_rnn::cnn_trace(plugins, grid.cnn_samples)?;
    let image_das = cnn_rnn::image_das(plugins, &grid.image_das)?;
    let vad = cnn_rnn::vad_state(plugins)?;
    let backpack = backpack_senses(&mut demo)?;
    let findings = [
        tracing,
        eiffel,
        interchange,
        steering,
        das_probe,
        path_patching,
        attribution,
        circuit,
        ocr,
        cnn,
        image_das,
        vad,
        backpack,
    ];
    let mut results = serde_json::Map::new();
    let mut sections = Vec::new();
    for finding in findings {
        finding.output.write(&options.out.join(finding.subdir))?;
        results.insert(finding.key.to_string(), finding.output.json.clone());
        sections.push(Section {
            heading: finding.heading.to_string(),
            paper: finding.paper,
            body: finding.output.summary.clone(),
            figures: finding.output.images(finding.subdir),
        });
    }
    report::write_report(&options.out, "vene demo: the paper's studies on real models", &sections)?;
    studies::write_json(&options.out, "results.json", &serde_json::Value::Object(results))?;
    Ok(DemoReport { model: options.real_model.clone(), sections, report: options.out.join("report.html") })
}

/// A toy model's tokenizer (its own tokenizer.json).
fn toy_tokenizer(dir: &Path, model_type: &str) -> Result<TextTokenizer> {
    TextTokenizer::for_model(dir, model_type)?
        .ok_or_else(|| VeneError::Config(format!("the demo model {} has no tokenizer", dir.display())))
}

/// The Backpack GPT-2: scaling one sense vector of "spain".
fn backpack_senses(demo: &mut Demo<'_>) -> Result<Finding> {
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
    let tokenizer = &toy_tokenizer(&dir, "backpack-gpt2")?;
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
    Ok(Finding::toy("Backpack sense vectors (vene-trained Backpack)", "backpack", "backpack", output, BACKPACK_PAPER))
}

// Question, paper's claim and command of the toy study: no real Backpack weights exist, so it runs on a model vene
// trains itself on a generated corpus.
const BACKPACK_PAPER: [&str; 3] = [
    "What does scaling one sense vector of a word do to a Backpack language model's prediction?",
    "Hewitt et al. (2023) edit Backpack sense vectors to change predictions; pyvene intervenes on them by name.",
    "vene demo  (the Backpack is trained on the demo corpus and cached)",
];
