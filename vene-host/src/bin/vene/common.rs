//! Flags shared by the commands (model, device, dtype, plugins) and the helpers they have in common.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vene_api::{model::DeviceKind, DTypeSpec, DeviceSpec};
use vene_host::{
    engine::IntervenableModel,
    hub,
    model::LoadedModel,
    plugins::{PluginSearch, PluginSet},
    saved::SavedInterventions,
    sharding::{ShardReport, ShardSpec},
    studies::output::StudyOutput,
    text::TextTokenizer,
};

#[derive(Args, Clone)]
pub struct PluginArgs {
    /// Extra directory to search for plugins (repeatable); searched after the executable's directory and VENE_PLUGIN_PATH.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Load only this plugin: a name such as `gpt2` or a path to a library file (repeatable).
    #[arg(long = "plugin", value_name = "NAME|PATH")]
    pub plugins: Vec<String>,
}

impl PluginArgs {
    pub fn load(&self) -> Result<PluginSet> {
        let plugins = PluginSet::load(&PluginSearch::standard(&self.plugin_dirs, &self.plugins))?;
        for failure in plugins.failures() {
            eprintln!("warning: skipped {failure}");
        }
        for warning in plugins.warnings() {
            eprintln!("warning: {warning}");
        }
        // A library that a directory named with --plugin-dir holds but that is not taken for a plugin is most likely
        // one the user meant to load.
        let named = |path: &Path| self.plugin_dirs.iter().any(|dir| path == dir || path.parent() == Some(dir));
        for skipped in plugins.skipped().iter().filter(|skipped| named(&skipped.path)) {
            eprintln!("warning: skipped {}: {}", skipped.path.display(), skipped.reason);
        }
        Ok(plugins)
    }
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A model directory in Hugging Face layout (config.json + weights), a llama.cpp GGUF file (or a directory
    /// holding one), or a hub repo id (`gpt2`, `EleutherAI/pythia-70m`) resolved through the Hugging Face cache
    /// (downloaded unless HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "DIR|FILE.gguf|REPO")]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16, bf16 or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    pub fn load(&self, plugins: &PluginSet) -> Result<LoadedModel> {
        let device = parse_device(&self.device)?;
        let dtype = parse_dtype(&self.dtype)?;
        let dir = hub::resolve_model(&self.model)?;
        vene_host::real_model::note_terms_on_first_use(&dir);
        Ok(LoadedModel::load(plugins, &dir, device, dtype)?)
    }
}

fn parse_device(text: &str) -> Result<DeviceSpec> {
    match text {
        "cpu" => Ok(DeviceSpec::CPU),
        "cuda" => Ok(DeviceSpec { kind: DeviceKind::Cuda, index: 0 }),
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(index) => Ok(DeviceSpec { kind: DeviceKind::Cuda, index }),
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

/// The plugins, then the model they serve: what every command that takes `--model` starts with.
pub fn load_model(model: &ModelArgs, plugins: &PluginArgs) -> Result<(PluginSet, LoadedModel)> {
    let plugins = plugins.load()?;
    let model = model.load(&plugins)?;
    Ok((plugins, model))
}

/// The model's tokenizer, which the text-driven commands cannot do without.
pub fn model_tokenizer(model: &LoadedModel) -> Result<TextTokenizer> {
    TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?
        .ok_or_else(|| anyhow!("the model has no tokenizer.json (and is not GPT-2 style)"))
}

/// Binds a config file, a vene-saved directory or a pyvene-saved directory to `model`, restoring saved state.
pub fn bind_saved(model: LoadedModel, plugins: &PluginSet, path: &Path, seed: u64) -> Result<IntervenableModel> {
    let saved = SavedInterventions::load(&hub::resolve_interventions(&path.to_string_lossy())?)?;
    let mut intervenable = IntervenableModel::new(model, saved.config.clone(), plugins, seed)?;
    saved.apply(&mut intervenable)?;
    Ok(intervenable)
}

/// Non-empty lines of a prompt file.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
}

/// A progress bar drawn with `template` (indicatif's syntax).
pub fn progress_bar(template: &str) -> ProgressBar {
    ProgressBar::new(0)
        .with_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()))
}

/// Writes a study command's figures and numbers into `out` and prints its summary.
pub fn finish_study(output: &StudyOutput, out: &Path) -> Result<()> {
    output.write(out)?;
    println!("{}", output.summary);
    Ok(())
}

/// Prints what a shard run did and what comes next.
pub fn print_shard_report(spec: ShardSpec, report: &ShardReport, out: &Path) {
    let next = if report.sweep_done == report.sweep_total {
        format!("every item is finished: `vene merge {}` writes the result", out.display())
    } else {
        format!("when every shard is done, `vene merge {}` writes the result", out.display())
    };
    println!(
        "shard {spec}: computed {} items, {} were already stored; {} of the sweep's {} items are finished; {next}",
        report.computed, report.skipped, report.sweep_done, report.sweep_total
    );
}

/// Sets libtorch's CPU threads from VENE_THREADS, or else from the CPUs Slurm gave the task (SLURM_CPUS_PER_TASK),
/// so tasks sharing a node do not each start a thread per core.
pub fn configure_threads() -> Result<()> {
    for variable in ["VENE_THREADS", "SLURM_CPUS_PER_TASK"] {
        if let Ok(value) = std::env::var(variable) {
            let threads: i32 = value
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow!("{variable}={value:?} is not a thread count (valid: a whole number ≥ 1)"))?;
            tch::set_num_threads(threads);
            return Ok(());
        }
    }
    Ok(())
}
