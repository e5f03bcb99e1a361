//! `vene erase`: amnesic probing — a class (the gender of a name, say) erased from one site with LEACE or INLP, and
//! what a probe and the model itself still get right on held-out names.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use vene_host::{
    outputs,
    studies::amnesic::{self, AmnesicSetup, Eraser},
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Clone, Copy, ValueEnum)]
enum Method {
    Leace,
    Inlp,
}

#[derive(Args)]
pub struct EraseArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// e.g. "{name} walked because".
    #[arg(long)]
    template: String,
    /// "TARGET=name,name,…" (two or more classes), or "TARGET=@FILE" with one name a line.
    #[arg(long = "class", value_name = "TARGET=NAMES", required = true)]
    classes: Vec<String>,
    #[arg(long)]
    layer: u32,
    #[arg(long, default_value = "block_output")]
    component: String,
    /// The token position erased (the name's, counting the BOS token where the tokenizer adds one).
    #[arg(long)]
    position: usize,
    #[arg(long, value_enum, default_value = "leace")]
    method: Method,
    /// INLP's iterations.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// `TARGET=name,name` or `TARGET=@names.txt` → (target, names).
fn parse_class(class: &str) -> Result<(String, Vec<String>)> {
    let (target, names) = class.split_once('=').ok_or_else(|| anyhow!("--class {class:?} is not TARGET=NAMES"))?;
    let names: Vec<String> = match names.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read {file}: {e}"))?
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        None => names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
    };
    Ok((target.to_string(), names))
}

pub fn run(args: EraseArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let classes = args.classes.iter().map(|c| parse_class(c)).collect::<Result<Vec<_>>>()?;
    let eraser = match args.method {
        Method::Leace => Eraser::Leace,
        Method::Inlp => Eraser::Inlp(args.iterations),
    };
    let setup = AmnesicSetup {
        template: args.template.clone(),
        classes,
        layer: args.layer,
        component: args.component.clone(),
        position: args.position,
        eraser,
    };
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let found = amnesic::amnesic_probe(&model, &plugins, &tokenizer, &setup)?;
    finish_study(&amnesic::study_output(&found)?, &args.out)
}
