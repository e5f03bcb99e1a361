//! `vene causal-model`: a high-level causal model declared in JSON, checked and shown, and the factual and
//! counterfactual datasets it generates, written as `vene train` data lines.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use vene_host::{
    causal::{CausalModel, Interventions, Mechanism},
    outputs,
};

#[derive(Args)]
pub struct CausalModelArgs {
    #[command(subcommand)]
    command: CausalCommand,
}

#[derive(Subcommand)]
enum CausalCommand {
    /// Check a causal model and show its variables, a sample and how its output is distributed.
    Show(ShowArgs),
    /// Sampled inputs with the output as their label: task data (`{"base", "label", "base_label"}`).
    Factual(FactualArgs),
    /// Interchange interventions on the aligned variables: `{"base", "sources", "label", "base_label"}`, the label
    /// the causal model gives when each intervened variable takes its value on its source.
    Counterfactual(CounterfactualArgs),
}

#[derive(Args)]
struct ShowArgs {
    /// The causal model (JSON).
    spec: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct Sampling {
    /// The causal model (JSON).
    spec: PathBuf,
    #[arg(long, default_value_t = 1000)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON lines to write.
    #[arg(long, value_name = "DATA.jsonl")]
    out: PathBuf,
}

#[derive(Args)]
struct FactualArgs {
    #[command(flatten)]
    sampling: Sampling,
}

#[derive(Args)]
struct CounterfactualArgs {
    #[command(flatten)]
    sampling: Sampling,
    /// The aligned variables, comma-separated: source i of every line feeds variable i (the base itself where the
    /// variable is not intervened on).
    #[arg(long, value_delimiter = ',', required = true)]
    variables: Vec<String>,
    /// One intervention set, comma-separated (repeat for several; one is drawn uniformly per line). Default:
    /// every non-empty subset of --variables.
    #[arg(long = "intervene", value_name = "A,B")]
    interventions: Vec<String>,
    /// Write `"subspaces": [[[0]], [[1]], …]`: source i acts on subspace i of representation i.
    #[arg(long)]
    subspaces: bool,
}

pub fn run(args: CausalModelArgs) -> Result<()> {
    match args.command {
        CausalCommand::Show(args) => show(args),
        CausalCommand::Factual(args) => {
            let model = CausalModel::from_file(&args.sampling.spec)?;
            let lines = model.factual_lines(args.sampling.count, args.sampling.seed)?;
            write_lines(&args.sampling.out, &lines)
        }
        CausalCommand::Counterfactual(args) => {
            let model = CausalModel::from_file(&args.sampling.spec)?;
            let sets: Vec<Vec<String>> =
                args.interventions.iter().map(|set| set.split(',').map(|v| v.trim().to_string()).collect()).collect();
            let interventions = Interventions::new(&model, &args.variables, &sets)?;
            let lines =
                model.counterfactual_lines(&interventions, args.sampling.count, args.sampling.seed, args.subspaces)?;
            write_lines(&args.sampling.out, &lines)
        }
    }
}

fn show(args: ShowArgs) -> Result<()> {
    let model = CausalModel::from_file(&args.spec)?;
    for variable in &model.variables {
        match &variable.mechanism {
            Mechanism::Input(domain) => println!("{:>8}  input: {domain:?}", variable.name),
            Mechanism::Function { source, .. } => println!("{:>8}  = {source}", variable.name),
        }
    }
    let mut rng = rand::SeedableRng::seed_from_u64(args.seed);
    let inputs = model.sample_inputs(&mut rng)?;
    let setting = model.run(&inputs, &[])?;
    let shown: Vec<String> =
        model.variables.iter().zip(&setting).map(|(v, value)| format!("{}={value}", v.name)).collect();
    println!("a sample: {}", shown.join(" "));
    println!("as model inputs: {}", model.encode(&inputs));
    let samples = 10_000;
    let distribution = model.output_distribution(samples, args.seed)?;
    let shares: Vec<String> =
        distribution.iter().map(|(value, n)| format!("{value}: {:.3}", *n as f64 / samples as f64)).collect();
    println!("output {} over {samples} samples: {}", model.variables[model.output].name, shares.join(", "));
    Ok(())
}

/// Writes JSON lines atomically (a temporary file, then a rename).
fn write_lines(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    outputs::check_file(path)?;
    let mut text = Vec::new();
    for line in lines {
        writeln!(text, "{line}")?;
    }
    vene_checkpoint::write_atomic(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {} lines to {}", lines.len(), path.display());
    Ok(())
}
