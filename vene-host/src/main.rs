//! The `vene` command line: list plugins, show a model's hook sites, run interventions.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    config::IntervenableConfig,
    datasets, demo,
    engine::IntervenableModel,
    generate::{self, InterveneOn, Sampling},
    hub,
    inputs::ExampleJson,
    inputs::RunInputs,
    interventions::builtin_types,
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::{PluginSearch, PluginSet},
    saved::{self, SavedInterventions},
    studies::{
        self, plot,
        tracing::{self, TraceOptions},
    },
    text::TextTokenizer,
    train::{self, TrainOptions},
    vectors,
};

#[derive(Parser)]
#[command(name = "vene", version, about = "Interventions on neural model internals (pyvene semantics, native plugins)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct PluginArgs {
    /// Extra directory to search for plugins (repeatable); searched after the executable's directory and VENE_PLUGIN_PATH.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    /// Load only this plugin: a name such as `gpt2` or a path to a library file (repeatable).
    #[arg(long = "plugin", value_name = "NAME|PATH")]
    plugins: Vec<String>,
}

impl PluginArgs {
    fn load(&self) -> Result<PluginSet> {
        let plugins = PluginSet::load(&PluginSearch::standard(&self.plugin_dirs, &self.plugins))?;
        for failure in plugins.failures() {
            eprintln!("warning: skipped {failure}");
        }
        for warning in plugins.warnings() {
            eprintln!("warning: {warning}");
        }
        Ok(plugins)
    }
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A model directory in Hugging Face layout (config.json + weights), or a hub repo id (`gpt2`,
    /// `EleutherAI/pythia-70m`) resolved through the Hugging Face cache (downloaded unless HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "DIR|REPO")]
    model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16, bf16 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

impl ModelArgs {
    fn load(&self, plugins: &PluginSet) -> Result<LoadedModel> {
        let device = parse_device(&self.device)?;
        let dtype = parse_dtype(&self.dtype)?;
        let dir = hub::resolve_model(&self.model)?;
        Ok(LoadedModel::load(plugins, &dir, device, dtype)?)
    }
}

/// How `vene interchange` combines its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InterchangeMode {
    Parallel,
    Serial,
}

#[derive(Subcommand)]
enum Command {
    /// List the loaded plugins with their versions and the types they provide.
    Plugins {
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Show a model's hook-site catalog.
    Sites {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Train the config's interventions on counterfactual data and save them.
    Train {
        #[command(flatten)]
        model: ModelArgs,
        /// A vene config JSON file (or a saved directory to continue from).
        #[arg(long, value_name = "CONFIG")]
        config: PathBuf,
        /// JSON lines: {"base": ..., "sources": [...], "unit_locations": ..., "label": ...}.
        #[arg(long, value_name = "DATA.jsonl")]
        data: PathBuf,
        /// Directory to save the trained interventions to (config.json + interventions.safetensors).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long = "lr", default_value_t = 1e-3)]
        learning_rate: f64,
        /// Fraction of the steps spent warming the learning rate up.
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
        /// Fraction of the examples held out for evaluation.
        #[arg(long, default_value_t = 0.2)]
        eval_fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Progress file: saved every --checkpoint-every steps, resumed from when it exists, removed once the
        /// trained interventions are saved. Default: OUT.checkpoint.safetensors beside OUT.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[arg(long, default_value_t = 50)]
        checkpoint_every: usize,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Interchange intervention accuracy of saved interventions on counterfactual data.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// A saved directory (vene or pyvene) or a config file.
        #[arg(long, value_name = "CONFIG")]
        config: PathBuf,
        #[arg(long, value_name = "DATA.jsonl")]
        data: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Write a steering vector (safetensors, key "vector"): a token's embedding, or mean(positive) - mean(negative)
    /// activations at the prompts' last token.
    Vector {
        #[command(flatten)]
        model: ModelArgs,
        /// Text whose (mean) token embedding is the vector, e.g. " happy".
        #[arg(long, conflicts_with_all = ["positive", "negative"])]
        token: Option<String>,
        /// Prompts, one per line, whose mean activation is added.
        #[arg(long, value_name = "PROMPTS.txt", requires = "negative")]
        positive: Option<PathBuf>,
        /// Prompts, one per line, whose mean activation is subtracted.
        #[arg(long, value_name = "PROMPTS.txt", requires = "positive")]
        negative: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        layer: u32,
        #[arg(long, default_value = "block_output")]
        component: String,
        #[arg(long, value_name = "OUT.safetensors")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Generate text with interventions on the prompt, on every decoding step, or both.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// A config (file, saved directory or hub id); without one the model generates unchanged.
        #[arg(long, value_name = "CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        prompt: String,
        /// JSON with "sources", "unit_locations" and "subspaces" for the interventions (locations are relative to
        /// each pass's tokens).
        #[arg(long, value_name = "INPUTS.json")]
        inputs: Option<PathBuf>,
        #[arg(long, default_value_t = 20)]
        max_new_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long)]
        top_p: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// prompt, steps or both.
        #[arg(long, default_value = "both")]
        intervene: InterveneOn,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Multi-source interchange: tokens from several sources replace the base's at their positions (parallel), or
    /// pass along the chain of sources into the base (serial, one --hop per source); prints and saves the top-5 next
    /// tokens.
    Interchange {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        base: String,
        /// A source text and the token position taken from it: "TEXT@POSITION" (repeatable).
        #[arg(long = "source", value_name = "TEXT@POSITION", required = true)]
        sources: Vec<String>,
        /// parallel: every source writes into the base; serial: source i writes into source i+1, the last into the
        /// base, each at its own position.
        #[arg(long, value_enum, default_value_t = InterchangeMode::Parallel)]
        mode: InterchangeMode,
        /// Serial mode: where each hop happens, "LAYER:COMPONENT", one per source in order (e.g. 0:block_input).
        #[arg(long = "hop", value_name = "LAYER:COMPONENT")]
        hops: Vec<String>,
        /// Parallel mode: the layer of every source's interchange.
        #[arg(long, default_value_t = 0)]
        layer: i64,
        /// Parallel mode: the component of every source's interchange.
        #[arg(long, default_value = "block_input")]
        component: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Steering during generation (ITI): a word's embedding × coefficient added to a component of every layer at
    /// every step; the steered and unsteered continuations side by side.
    Steer {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        word: String,
        #[arg(long, default_value_t = 0.3)]
        coefficient: f64,
        #[arg(long, default_value = "mlp_output")]
        component: String,
        #[arg(long, default_value_t = 20)]
        max_new_tokens: usize,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// DAS versus a linear probe per layer × position, for a template with a {name} slot and classes of names.
    DasProbe {
        #[command(flatten)]
        model: ModelArgs,
        /// e.g. "{name} walked because".
        #[arg(long)]
        template: String,
        /// "TARGET=name,name,…" (two or more): names of a class and the word the class predicts.
        #[arg(long = "class", value_name = "TARGET=NAMES", required = true)]
        classes: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Recurrent models: zero a timestep, swap it from a source, and swap it across time, plotting the per-step
    /// effect on the last layer's hidden state.
    Timesteps {
        #[command(flatten)]
        model: ModelArgs,
        /// Base text (language models).
        #[arg(long, required_unless_present = "base_image", conflicts_with = "base_image")]
        base: Option<String>,
        /// Source text (language models).
        #[arg(long, required_unless_present = "source_image", conflicts_with = "source_image")]
        source: Option<String>,
        /// Base image: an index into the Fashion-MNIST test images (image classifiers, two pixel rows per step).
        #[arg(long, requires = "source_image")]
        base_image: Option<usize>,
        /// Source image: an index into the Fashion-MNIST test images.
        #[arg(long, requires = "base_image")]
        source_image: Option<usize>,
        /// Directory with the Fashion-MNIST IDX files (default: the Debian package's).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        layer: i64,
        #[arg(long)]
        step: i64,
        /// Base step the cross-time swap writes into.
        #[arg(long)]
        to_step: i64,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Backpack models: scale each sense vector of a word and watch a target word's probability.
    Senses {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long)]
        word: String,
        #[arg(long)]
        target: String,
        /// The model's number of senses per word.
        #[arg(long)]
        senses: i64,
        /// Factors to scale each sense by (repeatable).
        #[arg(long = "factor", default_values_t = [0.0, 3.0])]
        factors: Vec<f64>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// CNNs on Fashion-MNIST: zero each channel of a feature map and measure the true class's probability.
    Channels {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "block_output")]
        component: String,
        #[arg(long, default_value_t = 0)]
        layer: u32,
        /// Directory with the Fashion-MNIST IDX files (default: the Debian package's).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 500)]
        images: usize,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Build the embedded demo model (once, cached) and run the studies on it; writes an HTML report.
    Demo {
        /// Directory for the report, figures and numbers.
        #[arg(long, value_name = "DIR", default_value = "vene-demo")]
        out: PathBuf,
        /// Where the built demo models are cached (default: the user's cache dir).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Causal tracing: corrupt the subject, restore each site, and plot how much of the target comes back.
    Trace {
        #[command(flatten)]
        model: ModelArgs,
        /// The factual prompt, e.g. "The Eiffel Tower is in the city of".
        #[arg(long)]
        prompt: String,
        /// The subject's text within the prompt, e.g. "The Eiffel Tower".
        #[arg(long)]
        subject: String,
        /// The target continuation (its first token is scored), e.g. " Paris".
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// Noise standard deviation in units of the embeddings' standard deviation.
        #[arg(long, default_value_t = 3.0)]
        noise: f64,
        #[arg(long, default_value_t = 10)]
        window: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Directory for trace.json and the heatmaps (PNG + SVG).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Run an intervened forward pass and save its outputs.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// A vene config JSON file, a directory saved by vene or by pyvene's IntervenableModel.save, or a hub repo
        /// id holding such a directory.
        #[arg(long, value_name = "CONFIG")]
        config: PathBuf,
        /// The inputs JSON: {"base": ..., "sources": [...], "unit_locations": ..., "subspaces": ...}.
        #[arg(long, value_name = "INPUTS.json")]
        inputs: PathBuf,
        /// Where to write `output` and `collected.{i}` (safetensors).
        #[arg(long, value_name = "OUT.safetensors")]
        out: PathBuf,
        /// After the first run, time this many more identical runs and print their median and minimum.
        #[arg(long, default_value_t = 0)]
        repeat: usize,
        /// Seed for intervention initialisation and noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

fn parse_device(text: &str) -> Result<DeviceSpec> {
    match text {
        "cpu" => Ok(DeviceSpec::CPU),
        "cuda" => Ok(DeviceSpec { kind: vene_api::model::DeviceKind::Cuda, index: 0 }),
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(index) => Ok(DeviceSpec { kind: vene_api::model::DeviceKind::Cuda, index }),
            None => bail!("unknown device '{other}': use cpu, cuda or cuda:N"),
        },
    }
}

fn parse_dtype(text: &str) -> Result<DTypeSpec> {
    Ok(match text {
        "f32" | "float32" => DTypeSpec::F32,
        "f16" | "float16" => DTypeSpec::F16,
        "bf16" | "bfloat16" => DTypeSpec::BF16,
        "f64" | "float64" => DTypeSpec::F64,
        other => bail!("unknown dtype '{other}': use f32, f16, bf16 or f64"),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line; a cause whose text the message already quotes is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Plugins { plugins } => list_plugins(&plugins.load()?),
        Command::Sites { model, plugins } => show_sites(&model.load(&plugins.load()?)?),
        Command::Train {
            model,
            config,
            data,
            out,
            epochs,
            batch_size,
            learning_rate,
            warmup,
            eval_fraction,
            seed,
            checkpoint,
            checkpoint_every,
            plugins,
        } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let checkpoint = checkpoint.unwrap_or_else(|| {
                let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "trained".into());
                name.push(".checkpoint.safetensors");
                out.with_file_name(name)
            });
            let options = TrainOptions {
                epochs,
                batch_size,
                learning_rate,
                warmup_fraction: warmup,
                eval_fraction,
                seed,
                checkpoint: Some(checkpoint),
                checkpoint_every,
            };
            train_interventions(model, &plugins, &config, &data, &out, &options)
        }
        Command::Eval { model, config, data, batch_size, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
            let mut intervenable = bind_saved(model, &plugins, &config, 0)?;
            let examples = train::read_dataset(&data)?;
            let all: Vec<&train::TrainingExample> = examples.iter().collect();
            let metrics = train::evaluate(&mut intervenable, &all, batch_size, tokenizer.as_ref())?;
            println!(
                "{{\"iia\": {:.4}, \"loss\": {:.4}, \"examples\": {}}}",
                metrics.iia, metrics.loss, metrics.examples
            );
            Ok(())
        }
        Command::Vector { model, token, positive, negative, layer, component, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?
                .ok_or_else(|| anyhow::anyhow!("the model has no tokenizer.json (and is not GPT-2 style)"))?;
            let vector = match (token, positive, negative) {
                (Some(token), _, _) => vectors::token_embedding(&model, &tokenizer, &token)?,
                (None, Some(positive), Some(negative)) => {
                    let (positive, negative) = (read_prompts(&positive)?, read_prompts(&negative)?);
                    vectors::mean_difference(model, &plugins, &tokenizer, &positive, &negative, layer, &component)?
                }
                _ => bail!("give --token, or --positive and --negative prompt files"),
            };
            vene_checkpoint::save_safetensors(&out, &[("vector".to_string(), vector.shallow_clone())])?;
            println!(
                "wrote {} ({} values, norm {:.4})",
                out.display(),
                vector.numel(),
                vector.norm().double_value(&[])
            );
            Ok(())
        }
        Command::Generate {
            model,
            config,
            prompt,
            inputs,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            intervene,
            plugins,
        } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let sampling =
                Sampling { max_new_tokens, temperature, top_k, top_p, seed, stop_token: None, intervene_on: intervene };
            generate_text(model, &plugins, config.as_deref(), &prompt, inputs.as_deref(), sampling)
        }
        Command::Demo { out, cache, plugins } => run_demo(&plugins.load()?, &out, cache),
        Command::Timesteps {
            model,
            base,
            source,
            base_image,
            source_image,
            data,
            layer,
            step,
            to_step,
            out,
            plugins,
        } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let (study, _) = match (base, source, base_image, source_image) {
                (Some(base), Some(source), None, None) => {
                    let tokenizer = model_tokenizer(&model)?;
                    let setup = studies::timesteps::TimestepSetup { base, source, layer, step, to_step };
                    studies::timesteps::timestep_study(model, &plugins, &tokenizer, &setup)?
                }
                (None, None, Some(base), Some(source)) => {
                    let data = data.or_else(datasets::dataset_dir).ok_or_else(|| {
                        anyhow::anyhow!("Fashion-MNIST not found: pass --data DIR or install dataset-fashion-mnist")
                    })?;
                    let count = base.max(source) + 1;
                    let (images, _) = datasets::load_split(&data, "t10k", count)?;
                    if (images.size()[0] as usize) < count {
                        anyhow::bail!("image {} was asked for, but the test split has {}", count - 1, images.size()[0]);
                    }
                    let steps = demo::recurrent::image_steps(&images);
                    let pick = |index: usize| steps.narrow(0, index as i64, 1);
                    let choice = studies::timesteps::Steps { layer, step, to_step };
                    studies::timesteps::sequence_timestep_study(
                        model,
                        &plugins,
                        &pick(base),
                        &pick(source),
                        &datasets::CLASSES,
                        choice,
                    )?
                }
                _ => anyhow::bail!("give --base and --source texts, or --base-image and --source-image indices"),
            };
            std::fs::create_dir_all(&out)?;
            let series: Vec<(String, Vec<f64>)> =
                study.interventions.iter().map(|i| (i.name.clone(), i.effect.clone())).collect();
            plot::lines(&out, "timesteps", "|h_intervened - h| per step (last layer)", "step", &series)?;
            studies::write_json(&out, "timesteps.json", &serde_json::to_value(&study)?)?;
            println!("base -> {}", format_top(&study.plain));
            for intervention in &study.interventions {
                println!(
                    "{}: effect per step {:?} -> {}",
                    intervention.name,
                    intervention.effect,
                    format_top(&intervention.top)
                );
            }
            Ok(())
        }
        Command::Senses { model, prompt, word, target, senses, factors, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = model_tokenizer(&model)?;
            let setup = studies::senses::SenseSetup { prompt, word, target, senses, factors };
            let (study, _) = studies::senses::sense_study(model, &plugins, &tokenizer, &setup)?;
            std::fs::create_dir_all(&out)?;
            let series: Vec<(String, Vec<f64>)> = study
                .factors
                .iter()
                .zip(&study.probabilities)
                .map(|(factor, row)| (format!("sense x {factor}"), row.clone()))
                .collect();
            plot::lines(
                &out,
                "senses",
                &format!("p({}) with one sense of '{}' scaled", study.target, study.word),
                "sense",
                &series,
            )?;
            studies::write_json(&out, "senses.json", &serde_json::to_value(&study)?)?;
            println!(
                "p({}) {:.4} without intervention; per factor and sense: {:?}",
                study.target, study.baseline, study.probabilities
            );
            Ok(())
        }
        Command::Channels { model, component, layer, data, images, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let data = data.or_else(datasets::dataset_dir).ok_or_else(|| {
                anyhow::anyhow!("Fashion-MNIST not found: pass --data DIR or install dataset-fashion-mnist")
            })?;
            let (study, _) = studies::channels::channel_study(model, &plugins, &component, layer, &data, images)?;
            std::fs::create_dir_all(&out)?;
            let series = vec![
                ("channel zeroed".to_string(), study.zeroed.clone()),
                ("no intervention".to_string(), vec![study.baseline; study.zeroed.len()]),
            ];
            plot::lines(&out, "channels", "mean p(true class) with one channel zeroed", "channel", &series)?;
            studies::write_json(&out, "channels.json", &serde_json::to_value(&study)?)?;
            println!(
                "accuracy {:.3}; mean p(true class) {:.3}; per zeroed channel {:?}",
                study.accuracy, study.baseline, study.zeroed
            );
            Ok(())
        }
        Command::Interchange { model, base, sources, mode, hops, layer, component, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = model_tokenizer(&model)?;
            let sources = sources
                .iter()
                .map(|s| {
                    let (text, position) =
                        s.rsplit_once('@').ok_or_else(|| anyhow::anyhow!("--source {s:?} is not TEXT@POSITION"))?;
                    Ok((
                        text.to_string(),
                        position.parse::<i64>().map_err(|_| anyhow::anyhow!("bad position in {s:?}"))?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let (base_top, intervened, _) = match mode {
                InterchangeMode::Parallel => {
                    if !hops.is_empty() {
                        anyhow::bail!("--hop is for --mode serial; parallel mode takes --layer and --component");
                    }
                    let setup = studies::interchange::InterchangeSetup { base, sources, layer, component };
                    studies::interchange::parallel_interchange(model, &plugins, &tokenizer, &setup)?
                }
                InterchangeMode::Serial => {
                    let hops = hops
                        .iter()
                        .map(|hop| {
                            let (layer, component) = hop
                                .split_once(':')
                                .ok_or_else(|| anyhow::anyhow!("--hop {hop:?} is not LAYER:COMPONENT"))?;
                            let layer = layer
                                .parse::<i64>()
                                .map_err(|_| anyhow::anyhow!("--hop {hop:?}: the layer must be a whole number"))?;
                            Ok((layer, component.to_string()))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let setup = studies::interchange::SerialSetup { base, sources, hops };
                    studies::interchange::serial_interchange(model, &plugins, &tokenizer, &setup)?
                }
            };
            std::fs::create_dir_all(&out)?;
            studies::write_json(
                &out,
                "interchange.json",
                &serde_json::json!({"base": base_top, "intervened": intervened}),
            )?;
            plot::bars(&out, "interchange_base", "base: top-5 next tokens", &base_top, 1.0)?;
            plot::bars(&out, "interchange_intervened", "interchanged: top-5 next tokens", &intervened, 1.0)?;
            println!("base: {}\nintervened: {}", format_top(&base_top), format_top(&intervened));
            Ok(())
        }
        Command::Steer { model, prompt, word, coefficient, component, max_new_tokens, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = model_tokenizer(&model)?;
            let vector = vectors::token_embedding(&model, &tokenizer, &word)?;
            let setup = studies::steering::SteeringSetup { prompt, word, coefficient, component, max_new_tokens };
            let (result, _) = studies::steering::steering(model, &plugins, &tokenizer, &vector, &setup)?;
            std::fs::create_dir_all(&out)?;
            studies::write_json(&out, "steer.json", &serde_json::to_value(&result)?)?;
            let series = vec![
                ("unsteered".to_string(), result.unsteered_word_probability.clone()),
                ("steered".to_string(), result.steered_word_probability.clone()),
            ];
            plot::lines(&out, "steer", &format!("p({}) after each position", result.word.trim()), "position", &series)?;
            let (prompt, unsteered, steered) =
                (&result.prompt, result.unsteered.trim_start(), result.steered.trim_start());
            println!("unsteered: {prompt} {unsteered}\nsteered:   {prompt} {steered}");
            Ok(())
        }
        Command::DasProbe { model, template, classes, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let tokenizer = model_tokenizer(&model)?;
            let classes = classes
                .iter()
                .map(|c| {
                    let (target, names) =
                        c.split_once('=').ok_or_else(|| anyhow::anyhow!("--class {c:?} is not TARGET=NAMES"))?;
                    Ok((
                        target.to_string(),
                        names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let setup = studies::probe::ProbeSetup { template, classes };
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("DAS and probe {bar:40} {pos}/{len} sites  [{elapsed} < {eta}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let (result, _) = studies::probe::das_vs_probe(model, &plugins, &tokenizer, &setup, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            std::fs::create_dir_all(&out)?;
            for (name, values, title) in [
                ("das_iia", &result.das_iia, "rank-1 DAS held-out IIA"),
                ("probe_accuracy", &result.probe_accuracy, "linear probe held-out accuracy"),
            ] {
                let map = plot::Heatmap { title, row_labels: &result.tokens, column_label: "layer", values, max: 1.0 };
                plot::heatmap(&out, name, &map)?;
            }
            studies::write_json(&out, "das_probe.json", &serde_json::to_value(&result)?)?;
            println!("DAS IIA {:?}\nprobe accuracy {:?}", result.das_iia, result.probe_accuracy);
            Ok(())
        }
        Command::Trace { model, prompt, subject, target, samples, noise, window, seed, out, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            let options = TraceOptions { samples, noise_scale: noise, window, seed };
            trace_command(model, &plugins, &prompt, &subject, &target, &options, &out)
        }
        Command::Run { model, config, inputs, out, repeat, seed, plugins } => {
            let plugins = plugins.load()?;
            let model = model.load(&plugins)?;
            run_interventions(model, &plugins, &config, &inputs, &out, repeat, seed)
        }
    }
}

fn list_plugins(plugins: &PluginSet) -> Result<()> {
    if plugins.plugins().is_empty() {
        println!("no plugins found (searched the executable's directory, VENE_PLUGIN_PATH and --plugin-dir)");
    }
    for plugin in plugins.plugins() {
        let build = &plugin.build;
        println!("{} {}  ({})", build.plugin_name, build.plugin_version, plugin.path.display());
        println!("  built against vene-api {}, tch {}, libtorch {}", build.vene_api, build.tch, build.libtorch);
        if !plugin.model_types.is_empty() {
            println!("  model types: {}", plugin.model_types.join(", "));
        }
        if !plugin.intervention_types.is_empty() {
            println!("  intervention types: {}", plugin.intervention_types.join(", "));
        }
    }
    println!("built-in intervention types:");
    for builtin in builtin_types() {
        println!("  {:<12} {}", builtin.name, builtin.summary);
    }
    Ok(())
}

fn show_sites(model: &LoadedModel) -> Result<()> {
    let catalog = model.catalog();
    println!(
        "{}: {} layers, {} heads, hidden size {}{}  (plugin {})",
        catalog.model_type,
        catalog.num_layers,
        catalog.num_heads,
        catalog.hidden_size,
        if catalog.vocab_size > 0 { format!(", vocabulary {}", catalog.vocab_size) } else { String::new() },
        model.plugin_path().display()
    );
    println!("{:<30} {:<18} {:>6} {:>6}  {:<12} module paths", "component", "layout", "dim", "layers", "units");
    for component in catalog.components.iter() {
        let paths: Vec<&str> = component.module_paths.iter().map(|p| p.as_str()).collect();
        println!(
            "{:<30} {:<18} {:>6} {:>6}  {:<12} {}",
            component.name.as_str(),
            format!("{:?}", component.layout),
            component.dim,
            component.layers,
            component.layout.units().join(","),
            paths.join(" ")
        );
    }
    Ok(())
}

/// Binds a config file, a vene-saved directory or a pyvene-saved directory to `model`, restoring saved state.
fn bind_saved(model: LoadedModel, plugins: &PluginSet, path: &Path, seed: u64) -> Result<IntervenableModel> {
    let saved = SavedInterventions::load(&hub::resolve_interventions(&path.to_string_lossy())?)?;
    let mut intervenable = IntervenableModel::new(model, saved.config.clone(), plugins, seed)?;
    saved.apply(&mut intervenable)?;
    Ok(intervenable)
}

fn train_interventions(
    model: LoadedModel,
    plugins: &PluginSet,
    config: &Path,
    data: &Path,
    out: &Path,
    options: &TrainOptions,
) -> Result<()> {
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let mut intervenable = bind_saved(model, plugins, config, options.seed)?;
    let examples = train::read_dataset(data)?;
    let (train_set, eval_set) = train::split(&examples, options.eval_fraction, options.seed);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = train::train(&mut intervenable, &train_set, &eval_set, options, tokenizer.as_ref(), |update| {
        bar.set_length(update.total as u64);
        bar.set_position(update.step as u64);
        bar.set_message(format!("loss {:.4}  iia {:.3}", update.loss, update.iia));
    })?;
    bar.finish_and_clear();
    saved::save(&intervenable, out)?;
    if let Some(checkpoint) = &options.checkpoint {
        std::fs::remove_file(checkpoint).ok();
    }
    let eval =
        report.eval.map_or("null".to_string(), |m| format!("{{\"iia\": {:.4}, \"loss\": {:.4}}}", m.iia, m.loss));
    println!(
        "{{\"steps\": {}, \"resumed_from\": {}, \"first_epoch_loss\": {:.4}, \"last_epoch_loss\": {:.4}, \"train\": {{\"iia\": {:.4}, \"loss\": {:.4}}}, \"eval\": {eval}}}",
        report.steps, report.resumed_from, report.first_epoch_loss, report.last_epoch_loss, report.train.iia, report.train.loss
    );
    println!("saved to {}", out.display());
    Ok(())
}

/// The sources, unit locations and subspaces of `vene generate --inputs`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GenerationInputs {
    #[serde(default)]
    sources: Vec<Option<ExampleJson>>,
    #[serde(default)]
    unit_locations: Option<serde_json::Value>,
    #[serde(default)]
    subspaces: Option<serde_json::Value>,
}

fn generate_text(
    model: LoadedModel,
    plugins: &PluginSet,
    config: Option<&Path>,
    prompt: &str,
    inputs: Option<&Path>,
    mut sampling: Sampling,
) -> Result<()> {
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?
        .ok_or_else(|| anyhow::anyhow!("the model has no tokenizer.json (and is not GPT-2 style)"))?;
    sampling.stop_token = tokenizer.end_of_text();
    let extra: GenerationInputs = match inputs {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not valid generation inputs: {e}", path.display()))?
        }
        None => GenerationInputs::default(),
    };
    let device = model.device();
    let sources = extra
        .sources
        .iter()
        .map(|s| s.as_ref().map(|s| s.to_inputs("sources", device, Some(&tokenizer))).transpose())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let locations = UnitLocations::parse(extra.unit_locations.as_ref())?;
    let subspaces = Subspaces::parse(extra.subspaces.as_ref())?;
    let mut intervenable = match config {
        Some(config) => bind_saved(model, plugins, config, sampling.seed)?,
        None => IntervenableModel::new(
            model,
            IntervenableConfig { mode: Default::default(), representations: vec![] },
            plugins,
            0,
        )?,
    };
    let prompt_ids = tokenizer.encode(prompt)?;
    print!("{prompt}");
    let mut so_far: Vec<i64> = Vec::new();
    let mut printed = 0;
    generate::generate(&mut intervenable, &prompt_ids, &sources, &locations, &subspaces, &sampling, |token| {
        // Decode everything so far so multi-token characters print whole.
        so_far.push(token);
        let text = tokenizer.decode(&so_far);
        if text.len() > printed && text.is_char_boundary(printed) {
            print!("{}", &text[printed..]);
            printed = text.len();
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    })?;
    println!();
    Ok(())
}

fn model_tokenizer(model: &LoadedModel) -> Result<TextTokenizer> {
    TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?
        .ok_or_else(|| anyhow::anyhow!("the model has no tokenizer.json (and is not GPT-2 style)"))
}

fn format_top(top: &[(String, f64)]) -> String {
    top.iter().map(|(w, p)| format!("{w} ({p:.3})")).collect::<Vec<_>>().join(", ")
}

fn run_demo(plugins: &PluginSet, out: &Path, cache: Option<PathBuf>) -> Result<()> {
    let root = cache.unwrap_or_else(demo::cache_dir);
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("training the demo model {bar:40} {pos}/{len}  loss {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let model_dir = demo::ensure_built(&root, "gpt2-facts", |staging| {
        let recipe = demo::language_model::LmRecipe::default();
        demo::language_model::train(staging, &recipe, |step, steps, loss| {
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("{loss:.3}"));
        })
        .map(|_| ())
    })?;
    bar.finish_and_clear();
    println!("demo model: {}", model_dir.display());
    let model = LoadedModel::load(plugins, &model_dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
    let tokenizer = TextTokenizer::for_model(&model_dir, "gpt2")?
        .ok_or_else(|| anyhow::anyhow!("the demo model has no tokenizer"))?;
    std::fs::create_dir_all(out.join("tracing"))?;
    // Causal tracing, averaged over the invented places' capital questions (three-word subjects).
    let places = demo::corpus::places();
    let tracing_bar = ProgressBar::new(places.len() as u64).with_style(
        ProgressStyle::with_template("causal tracing {bar:40} {pos}/{len} places  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = TraceOptions { samples: 50, window: 2, ..TraceOptions::default() };
    let prompts = places
        .iter()
        .map(|place| {
            let tokens = tokenizer.encode(&format!("the capital of {} is", place.name_text()))?;
            let subject = tracing::locate_subject(&tokens, &[tokenizer.encode(&place.name_text())?])
                .ok_or_else(|| anyhow::anyhow!("the place {} is not in its own prompt", place.name_text()))?;
            Ok(tracing::TracePrompt { tokens, subject, target: tokenizer.encode(place.capital)?[0] })
        })
        .collect::<Result<Vec<_>>>()?;
    let (traces, model) =
        tracing::trace_all(model, plugins, &prompts, &options, |done, _| tracing_bar.set_position(done as u64))?;
    tracing_bar.finish_and_clear();
    let trace = tracing::average(&traces)?;
    let subject = trace.subject.0..trace.subject.1;
    let labels: Vec<String> = prompts[0]
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &token)| if subject.contains(&i) { "PLACE*".to_string() } else { tokenizer.decode(&[token]) })
        .collect();
    for (name, values) in [
        ("block_output", &trace.block_output),
        ("mlp_output", &trace.mlp_output),
        ("attention_output", &trace.attention_output),
    ] {
        let title = format!("restored p(capital), mean of {} places — {name}", places.len());
        let map = plot::Heatmap { title: &title, row_labels: &labels, column_label: "layer", values, max: trace.clean };
        plot::heatmap(&out.join("tracing"), name, &map)?;
    }
    studies::write_json(&out.join("tracing"), "trace.json", &serde_json::to_value(&trace)?)?;
    // Multi-source interchange.
    let (interchange, model) = demo::report::interchange(model, plugins, &tokenizer)?;
    // Steering during generation.
    let vector = vectors::token_embedding(&model, &tokenizer, "italy")?;
    let setup = studies::steering::SteeringSetup {
        prompt: "the capital of spain is".to_string(),
        word: "italy".to_string(),
        coefficient: 3.0,
        component: "mlp_output".to_string(),
        max_new_tokens: 4,
    };
    let (steering, _) = studies::steering::steering(model, plugins, &tokenizer, &vector, &setup)?;
    // DAS versus a linear probe.
    let (das_probe, _) = studies::probe::das_vs_probe(
        LoadedModel::load(plugins, &model_dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?,
        plugins,
        &tokenizer,
        &demo::pronoun_probe(),
        |_, _| {},
    )?;
    std::fs::create_dir_all(out.join("das_probe"))?;
    for (name, values, title) in [
        ("das_iia", &das_probe.das_iia, "rank-1 DAS held-out IIA (he/she)"),
        ("probe_accuracy", &das_probe.probe_accuracy, "linear probe held-out accuracy (gender)"),
    ] {
        let map = plot::Heatmap { title, row_labels: &das_probe.tokens, column_label: "layer", values, max: 1.0 };
        plot::heatmap(&out.join("das_probe"), name, &map)?;
    }
    // The GRU: timestep interventions and their per-step effect.
    let gru_dir = demo::ensure_built(&root, "gru-facts", |staging| {
        demo::recurrent::train(staging, 7, 800, |step, steps, loss| {
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("{loss:.3}"));
        })
        .map(|_| ())
    })?;
    bar.finish_and_clear();
    let gru = LoadedModel::load(plugins, &gru_dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
    let (timesteps, _) =
        studies::timesteps::timestep_study(gru, plugins, &tokenizer, &studies::timesteps::TimestepSetup::default())?;
    std::fs::create_dir_all(out.join("gru"))?;
    let series: Vec<(String, Vec<f64>)> =
        timesteps.interventions.iter().map(|i| (i.name.clone(), i.effect.clone())).collect();
    plot::lines(&out.join("gru"), "effects", "GRU: |h_intervened - h| per step (last layer)", "step", &series)?;
    // Backpack: scaling one sense vector.
    let senses = 4;
    let backpack_dir = demo::ensure_built(&root, "backpack-facts", |staging| {
        let recipe = demo::language_model::LmRecipe {
            architecture: demo::language_model::Architecture::Backpack { senses },
            positions: 16,
            steps: 1200,
            places: false,
            ..Default::default()
        };
        demo::language_model::train(staging, &recipe, |step, steps, loss| {
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("{loss:.3}"));
        })
        .map(|_| ())
    })?;
    bar.finish_and_clear();
    let backpack = LoadedModel::load(plugins, &backpack_dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
    let (sense_study, _) =
        studies::senses::sense_study(backpack, plugins, &tokenizer, &studies::senses::SenseSetup::demo(senses))?;
    std::fs::create_dir_all(out.join("backpack"))?;
    let series: Vec<(String, Vec<f64>)> = sense_study
        .factors
        .iter()
        .zip(&sense_study.probabilities)
        .map(|(factor, row)| (format!("sense x {factor}"), row.clone()))
        .chain(std::iter::once(("no intervention".to_string(), vec![sense_study.baseline; senses as usize])))
        .collect();
    plot::lines(
        &out.join("backpack"),
        "senses",
        "Backpack: p(madrid) with one sense of 'spain' scaled",
        "sense",
        &series,
    )?;
    // The CNN on Fashion-MNIST, when the dataset is installed.
    let vision = match datasets::dataset_dir() {
        Some(data) => {
            let resnet_dir = demo::ensure_built(&root, "resnet-fashion-mnist", |staging| {
                demo::vision::train(staging, &data, 12_000, 2_000, 7, |step, steps, loss| {
                    bar.set_length(steps as u64);
                    bar.set_position(step as u64);
                    bar.set_message(format!("{loss:.3}"));
                })
                .map(|_| ())
            })?;
            bar.finish_and_clear();
            let resnet = LoadedModel::load(plugins, &resnet_dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
            let (study, _) = studies::channels::channel_study(resnet, plugins, "block_output", 0, &data, 500)?;
            std::fs::create_dir_all(out.join("cnn"))?;
            let series = vec![
                ("channel zeroed".to_string(), study.zeroed.clone()),
                ("no intervention".to_string(), vec![study.baseline; study.zeroed.len()]),
            ];
            plot::lines(
                &out.join("cnn"),
                "channels",
                "ResNet: mean p(true class), one channel of block 0 zeroed",
                "channel",
                &series,
            )?;
            Some(study)
        }
        None => {
            eprintln!(
                "Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or VENE_FASHION_MNIST=DIR): \
                 skipping the CNN study"
            );
            None
        }
    };
    // The GRU classifier on Fashion-MNIST, likewise.
    let gru_images = match datasets::dataset_dir() {
        Some(data) => Some(gru_image_study(&root, plugins, &data, out, &bar)?),
        None => None,
    };
    let words = |top: &[(String, f64)]| top.iter().map(|(w, p)| format!("{w} ({p:.3})")).collect::<Vec<_>>().join(", ");
    let effects = |study: &studies::timesteps::TimestepStudy| {
        study
            .interventions
            .iter()
            .map(|i| {
                format!(
                    "{}: per-step effect {:?} -> {}",
                    i.name,
                    i.effect.iter().map(|e| (e * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                    words(&i.top)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let sections = vec![
        (
            "Causal tracing".to_string(),
            format!(
                "prompts: \"the capital of PLACE is\" for the {} invented places with three-word names (\"{}\", ...; \
                 subject marked *), target: the place's capital; mean over the places of {} noise samples each\n\
                 p(capital) clean {:.4}, corrupted {:.4}",
                places.len(),
                places[0].name_text(),
                options.samples,
                trace.clean,
                trace.corrupted
            ),
            ["block_output", "mlp_output", "attention_output"].iter().map(|n| format!("tracing/{n}.png")).collect(),
        ),
        (
            "Multi-source interchange".to_string(),
            format!(
                "base: the capital of spain is -> {}\nparallel (\"language\" from \"the language of spain is\", \"italy\" from \"the capital of italy is\") -> {}\nserial -> {}",
                words(&interchange.base),
                words(&interchange.parallel),
                words(&interchange.serial)
            ),
            Vec::new(),
        ),
        (
            "DAS versus a linear probe".to_string(),
            format!(
                "\"NAME walked because\" -> he / she; rows: positions, columns: layers\nDAS IIA: {:?}\nprobe accuracy: {:?}",
                das_probe.das_iia, das_probe.probe_accuracy
            ),
            vec!["das_probe/das_iia.png".to_string(), "das_probe/probe_accuracy.png".to_string()],
        ),
        (
            "GRU timestep interventions".to_string(),
            format!("base: {} -> {}\n{}", timesteps.tokens.join(" "), words(&timesteps.plain), effects(&timesteps)),
            vec!["gru/effects.png".to_string()],
        ),
        (
            "GRU on Fashion-MNIST (two pixel rows per step)".to_string(),
            match &gru_images {
                Some(images) => format!(
                    "{} test images: accuracy {:.3}\nbase: test image {} ({}) -> {}\nsource: test image {} ({})\n{}",
                    images.test_images,
                    images.accuracy,
                    images.base_image,
                    images.base_label,
                    words(&images.study.plain),
                    images.source_image,
                    images.source_label,
                    effects(&images.study)
                ),
                None => "skipped: Fashion-MNIST is not installed".to_string(),
            },
            if gru_images.is_some() { vec!["gru/image_effects.png".to_string()] } else { Vec::new() },
        ),
        (
            "Backpack sense vectors".to_string(),
            format!(
                "prompt: {}; word: {}; p({}) without intervention {:.4}\n{}",
                sense_study.prompt,
                sense_study.word,
                sense_study.target,
                sense_study.baseline,
                sense_study
                    .factors
                    .iter()
                    .zip(&sense_study.probabilities)
                    .map(|(f, row)| format!(
                        "sense x {f}: {:?}",
                        row.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            vec!["backpack/senses.png".to_string()],
        ),
        (
            "CNN channels (ResNet on Fashion-MNIST)".to_string(),
            match &vision {
                Some(study) => format!(
                    "{} test images: accuracy {:.3}, mean p(true class) {:.3}\nwith channel c of block 0 zeroed: {:?}",
                    study.images,
                    study.accuracy,
                    study.baseline,
                    study.zeroed.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>()
                ),
                None => "skipped: Fashion-MNIST is not installed".to_string(),
            },
            if vision.is_some() { vec!["cnn/channels.png".to_string()] } else { Vec::new() },
        ),
        (
            "Steering during generation".to_string(),
            format!(
                "prompt: {}\nunsteered: {}\nsteered (+{} x embedding of \"{}\" at every MLP output, every step): {}",
                steering.prompt, steering.unsteered, steering.coefficient, steering.word, steering.steered
            ),
            Vec::new(),
        ),
    ];
    demo::report::write_report(out, "vene demo", &sections)?;
    studies::write_json(
        out,
        "results.json",
        &serde_json::json!({"interchange": interchange, "steering": steering, "das_probe": das_probe,
        "gru": timesteps, "gru_images": gru_images, "backpack": sense_study, "cnn": vision,
        "tracing": {"clean": trace.clean, "corrupted": trace.corrupted}}),
    )?;
    for (heading, body, _) in &sections {
        println!("== {heading}\n{body}\n");
    }
    println!("report: {}", out.join("report.html").display());
    Ok(())
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
    study: studies::timesteps::TimestepStudy,
}

/// Builds (once) the GRU classifier on Fashion-MNIST and runs the timestep interventions on a test image, with the
/// first test image of another class as the source: zero step 7 (pixel rows 14-15), swap it from the source, and
/// move the source's step 7 into step 8.
fn gru_image_study(root: &Path, plugins: &PluginSet, data: &Path, out: &Path, bar: &ProgressBar) -> Result<GruImages> {
    let test_images = 1_000;
    let dir = demo::ensure_built(root, "gru-fashion-mnist", |staging| {
        let accuracy =
            demo::recurrent::train_classifier(staging, data, 20_000, test_images, 7, |step, steps, loss| {
                bar.set_length(steps as u64);
                bar.set_position(step as u64);
                bar.set_message(format!("{loss:.3}"));
            })?;
        let path = staging.join("accuracy.json");
        vene_checkpoint::write_atomic(&path, serde_json::json!({"accuracy": accuracy}).to_string().as_bytes())
            .map_err(|source| vene_host::error::VeneError::Io { path, source })
    })?;
    bar.finish_and_clear();
    let accuracy: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("accuracy.json"))?)?;
    let (images, labels) = datasets::load_split(data, "t10k", 100)?;
    let labels = Vec::<i64>::try_from(&labels)?;
    let (base_image, source_image) = (0, labels.iter().position(|&l| l != labels[0]).unwrap_or(1));
    let steps = demo::recurrent::image_steps(&images);
    let model = LoadedModel::load(plugins, &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)?;
    let choice = studies::timesteps::Steps { layer: 0, step: 7, to_step: 8 };
    let (study, _) = studies::timesteps::sequence_timestep_study(
        model,
        plugins,
        &steps.narrow(0, base_image as i64, 1),
        &steps.narrow(0, source_image as i64, 1),
        &datasets::CLASSES,
        choice,
    )?;
    let series: Vec<(String, Vec<f64>)> =
        study.interventions.iter().map(|i| (i.name.clone(), i.effect.clone())).collect();
    std::fs::create_dir_all(out.join("gru"))?;
    plot::lines(&out.join("gru"), "image_effects", "GRU on images: |h_intervened - h| per step", "step", &series)?;
    let label = |index: usize| datasets::CLASSES[labels[index] as usize].to_string();
    Ok(GruImages {
        test_images,
        accuracy: accuracy["accuracy"].as_f64().unwrap_or(f64::NAN),
        base_image,
        base_label: label(base_image),
        source_image,
        source_label: label(source_image),
        study,
    })
}

fn trace_command(
    model: LoadedModel,
    plugins: &PluginSet,
    prompt: &str,
    subject: &str,
    target: &str,
    options: &TraceOptions,
    out: &Path,
) -> Result<()> {
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?
        .ok_or_else(|| anyhow::anyhow!("the model has no tokenizer.json (and is not GPT-2 style)"))?;
    let tokens = tokenizer.encode(prompt)?;
    let candidates = [tokenizer.encode(subject)?, tokenizer.encode(&format!(" {subject}"))?];
    let span = tracing::locate_subject(&tokens, &candidates)
        .ok_or_else(|| anyhow::anyhow!("the subject {subject:?} is not a token span of the prompt {prompt:?}"))?;
    let target_id = *tokenizer.encode(target)?.first().ok_or_else(|| anyhow::anyhow!("the target is empty"))?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} passes  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (trace, _) = tracing::trace(model, plugins, &tokens, span, target_id, options, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    std::fs::create_dir_all(out)?;
    let labels: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let marker = if (span.0..span.1).contains(&i) { "*" } else { "" };
            format!("{}{marker}", tokenizer.decode(&[t]).trim())
        })
        .collect();
    for (name, values) in [
        ("block_output", &trace.block_output),
        ("mlp_output", &trace.mlp_output),
        ("attention_output", &trace.attention_output),
    ] {
        let title = format!("restored p({}) — {name}", target.trim());
        let map = plot::Heatmap {
            title: &title,
            row_labels: &labels,
            column_label: "layer",
            values,
            max: trace.clean.max(1e-9),
        };
        plot::heatmap(out, name, &map)?;
    }
    studies::write_json(out, "trace.json", &serde_json::to_value(&trace)?)?;
    println!(
        "p({}) clean {:.4}, corrupted {:.4}; wrote trace.json and block_output / mlp_output / attention_output .png/.svg to {}",
        target.trim(),
        trace.clean,
        trace.corrupted,
        out.display()
    );
    Ok(())
}

/// Non-empty lines of a prompt file.
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
}

fn run_interventions(
    model: LoadedModel,
    plugins: &PluginSet,
    config_path: &Path,
    inputs_path: &Path,
    out: &Path,
    repeat: usize,
    seed: u64,
) -> Result<()> {
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let inputs = RunInputs::from_file(inputs_path, model.device(), tokenizer.as_ref())?;
    let is_language_model = model.catalog().vocab_size > 0;
    let plain = is_language_model.then(|| model.forward_plain(&inputs.base)).transpose()?;
    let mut intervenable = bind_saved(model, plugins, config_path, seed)?;
    let _guard = tch::no_grad_guard();
    let result = intervenable.run(&inputs.base, &inputs.sources, &inputs.unit_locations, &inputs.subspaces)?;
    let mut tensors = vec![("output".to_string(), result.output.to_kind(Kind::Float))];
    for (i, collected) in result.collected.iter().enumerate() {
        tensors.push((format!("collected.{i}"), collected.to_kind(Kind::Float)));
    }
    vene_checkpoint::save_safetensors(out, &tensors)?;
    if let Some(plain) = plain {
        print_top_tokens(&plain.output, &result.output, tokenizer.as_ref(), inputs.base.attention_mask.as_ref());
    }
    println!("wrote {} ({} tensor(s))", out.display(), tensors.len());
    if repeat > 0 {
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let start = Instant::now();
            let timed = intervenable.run(&inputs.base, &inputs.sources, &inputs.unit_locations, &inputs.subspaces)?;
            drop(timed);
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!("{{\"forward_ms_median\": {:.4}, \"forward_ms_min\": {:.4}}}", times[times.len() / 2], times[0]);
    }
    Ok(())
}

/// Top-5 next tokens after the last (unpadded) position of each base example, plain and intervened.
fn print_top_tokens(plain: &Tensor, intervened: &Tensor, tokenizer: Option<&TextTokenizer>, mask: Option<&Tensor>) {
    let last = |logits: &Tensor| -> Tensor {
        let (batch, seq) = (logits.size()[0], logits.size()[1]);
        let positions = match mask {
            Some(mask) => mask.sum_dim_intlist(-1, false, Kind::Int64) - 1,
            None => Tensor::full([batch], seq - 1, (Kind::Int64, logits.device())),
        };
        let index =
            positions.to_device(logits.device()).view([batch, 1, 1]).expand([batch, 1, logits.size()[2]], false);
        logits.gather(1, &index, false).squeeze_dim(1)
    };
    let top = |logits: &Tensor| -> Vec<Vec<(i64, f64)>> {
        let probabilities = last(logits).to_kind(Kind::Float).softmax(-1, Kind::Float);
        let (values, indices) = probabilities.topk(5, -1, true, true);
        (0..values.size()[0])
            .map(|b| (0..5).map(|k| (indices.int64_value(&[b, k]), values.double_value(&[b, k]))).collect())
            .collect()
    };
    let name = |token: i64| match tokenizer {
        Some(tokenizer) => format!("{:?}", tokenizer.decode(&[token])),
        None => token.to_string(),
    };
    let format =
        |row: &[(i64, f64)]| row.iter().map(|(t, p)| format!("{} ({p:.3})", name(*t))).collect::<Vec<_>>().join(", ");
    for (b, (base, changed)) in top(plain).iter().zip(top(intervened)).enumerate() {
        println!("example {b} top-5 next tokens  base: {}", format(base));
        println!("example {b} top-5 next tokens  intervened: {}", format(&changed));
    }
}
