//! `vene interchange`: multi-source interchange, in parallel or along a chain of sources (serial).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use vene_host::{
    outputs,
    studies::{
        interchange::{parallel_interchange, serial_interchange, InterchangeSetup, SerialSetup},
        output::{format_top, Figure, StudyOutput},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

/// How `vene interchange` combines its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InterchangeMode {
    Parallel,
    Serial,
}

#[derive(Args)]
pub struct InterchangeArgs {
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
}

/// `TEXT@POSITION` → (text, position).
fn parse_source(source: &str) -> Result<(String, i64)> {
    let (text, position) =
        source.rsplit_once('@').ok_or_else(|| anyhow!("--source {source:?} is not TEXT@POSITION"))?;
    let position = position.parse::<i64>().map_err(|_| anyhow!("bad position in {source:?}"))?;
    Ok((text.to_string(), position))
}

/// `LAYER:COMPONENT` → (layer, component).
fn parse_hop(hop: &str) -> Result<(i64, String)> {
    let (layer, component) = hop.split_once(':').ok_or_else(|| anyhow!("--hop {hop:?} is not LAYER:COMPONENT"))?;
    let layer = layer.parse::<i64>().map_err(|_| anyhow!("--hop {hop:?}: the layer must be a whole number"))?;
    Ok((layer, component.to_string()))
}

pub fn run(args: InterchangeArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let sources = args.sources.iter().map(|s| parse_source(s)).collect::<Result<Vec<_>>>()?;
    let hops = args.hops.iter().map(|h| parse_hop(h)).collect::<Result<Vec<_>>>()?;
    if args.mode == InterchangeMode::Parallel && !hops.is_empty() {
        bail!("--hop is for --mode serial; parallel mode takes --layer and --component");
    }
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let (base_top, intervened, _) = match args.mode {
        InterchangeMode::Parallel => {
            let setup = InterchangeSetup { base: args.base, sources, layer: args.layer, component: args.component };
            parallel_interchange(model, &plugins, &tokenizer, &setup)?
        }
        InterchangeMode::Serial => {
            serial_interchange(model, &plugins, &tokenizer, &SerialSetup { base: args.base, sources, hops })?
        }
    };
    let figures = vec![
        Figure::Bars {
            name: "interchange_base".to_string(),
            title: "base: top-5 next tokens".to_string(),
            bars: base_top.clone(),
            max: 1.0,
        },
        Figure::Bars {
            name: "interchange_intervened".to_string(),
            title: "interchanged: top-5 next tokens".to_string(),
            bars: intervened.clone(),
            max: 1.0,
        },
    ];
    let summary = format!("base: {}\nintervened: {}", format_top(&base_top), format_top(&intervened));
    let numbers = serde_json::json!({"base": base_top, "intervened": intervened});
    finish_study(&StudyOutput::new("interchange.json", &numbers, figures, summary)?, &args.out)
}
