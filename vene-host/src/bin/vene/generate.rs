//! `vene generate`: text from the model, with interventions on the prompt, every decoding step, or both.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    generate::{self, InterveneOn, Sampling},
    inputs::ExampleJson,
    locations::{Subspaces, UnitLocations},
};

use crate::common::{bind_saved, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct GenerateArgs {
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

pub fn run(args: GenerateArgs) -> Result<()> {
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let sampling = Sampling {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop_token: tokenizer.end_of_text(),
        intervene_on: args.intervene,
    };
    let extra: GenerationInputs = match &args.inputs {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow!("{} is not valid generation inputs: {e}", path.display()))?
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
    let mut intervenable = match &args.config {
        Some(config) => bind_saved(model, &plugins, config, sampling.seed)?,
        None => IntervenableModel::new(
            model,
            IntervenableConfig { mode: Default::default(), representations: vec![] },
            &plugins,
            0,
        )?,
    };
    let prompt_ids = tokenizer.encode(&args.prompt)?;
    print!("{}", args.prompt);
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
