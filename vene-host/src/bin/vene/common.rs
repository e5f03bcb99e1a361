//! Flags shared by the commands (model, device, dtype, plugins) and the helpers they have in common.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vene_host::{
    engine::IntervenableModel,
    hub,
    model::LoadedModel,
    plugins::{PluginSearch, PluginSet},
    saved::SavedInterventions,
    sharding::{self, Manifest, ShardSpec, ShardStore, SweepIdentity},
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
    /// holding one), a real model the set-up installs by name (gemma-3-270m, easyocr-english-g2,
    /// efficientnet-lite0, silero-vad), or a hub repo id (`gpt2`, `EleutherAI/pythia-70m`) resolved through the
    /// Hugging Face cache (downloaded unless HF_HUB_OFFLINE=1).
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
        let device = vene_host::model::parse_device(&self.device)?;
        let dtype = vene_host::model::parse_dtype(&self.dtype)?;
        let dir = hub::resolve_model(&self.model)?;
        vene_host::real_model::note_terms_on_first_use(&dir);
        Ok(LoadedModel::load(plugins, &dir, device, dtype)?)
    }
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

/// The `progress(done, total)` callback the library's long runs take, drawn on `bar`.
pub fn advance(bar: &ProgressBar) -> impl FnMut(usize, usize) + '_ {
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// Writes a study command's figures and numbers into `out` and prints its summary.
pub fn finish_study(output: &StudyOutput, out: &Path) -> Result<()> {
    output.write(out)?;
    println!("{}", output.summary);
    Ok(())
}

/// The manifest of `command`'s sweep of `items` in `shards` shards on `model`: the command's `options` that change
/// results, plus the device, the dtype and libtorch's thread count (its CPU kernels split sums by thread count,
/// which changes the last bits), and the model's hash.
pub fn sweep_manifest<I>(
    command: &str,
    model: &ModelArgs,
    options: &[(&str, serde_json::Value)],
    items: &[(String, I)],
    shards: usize,
    context: serde_json::Value,
) -> Result<Manifest> {
    let mut named: std::collections::BTreeMap<String, serde_json::Value> =
        options.iter().map(|(name, value)| (name.to_string(), value.clone())).collect();
    named.insert("--device".to_string(), serde_json::json!(model.device));
    named.insert("--dtype".to_string(), serde_json::json!(model.dtype));
    named.insert("libtorch's threads (VENE_THREADS)".to_string(), serde_json::json!(tch::get_num_threads()));
    let model_sha256 = sharding::model_sha256(&hub::resolve_model(&model.model)?)?;
    Ok(Manifest {
        identity: SweepIdentity::new(command, model_sha256, named),
        model: model.model.clone(),
        shards,
        items: items.iter().map(|(id, _)| id.clone()).collect(),
        context,
    })
}

/// One shard's run of a sweep whose manifest it has joined.
pub struct ShardRun<'a> {
    store: ShardStore,
    manifest: Manifest,
    spec: ShardSpec,
    out: &'a Path,
}

impl<'a> ShardRun<'a> {
    /// Joins the sweep `manifest` describes in `out` (writing the manifest, or checking the one there).
    pub fn open(out: &'a Path, manifest: Manifest, spec: ShardSpec) -> Result<Self> {
        let store = ShardStore::new(out);
        store.open(&manifest)?;
        Ok(Self { store, manifest, spec, out })
    }

    /// Computes this shard's items of `items` not stored yet, with a progress bar of `template`, then says what it
    /// did and what comes next.
    pub fn compute<I, R, S>(
        &self,
        items: &[(String, I)],
        state: S,
        compute: impl FnMut(S, &I) -> vene_host::error::Result<(R, S)>,
        template: &str,
    ) -> Result<()>
    where
        I: serde::Serialize + serde::de::DeserializeOwned + Clone,
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        let bar = progress_bar(template);
        let (store, manifest, spec) = (&self.store, &self.manifest, self.spec);
        let (report, _) = sharding::run_shard(store, manifest, spec, items, state, compute, advance(&bar))?;
        bar.finish_and_clear();
        let merge = format!("`vene merge {}` writes the result", self.out.display());
        let next = if report.sweep_done == report.sweep_total {
            format!("every item is finished: {merge}")
        } else {
            format!("when every shard is done, {merge}")
        };
        println!(
            "shard {spec}: computed {} items, {} were already stored; {} of the sweep's {} items are finished; {next}",
            report.computed, report.skipped, report.sweep_done, report.sweep_total
        );
        Ok(())
    }
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
