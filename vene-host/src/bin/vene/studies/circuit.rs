//! `vene circuit`: edge attribution (EAP, or EAP-IG) over the residual-stream graph of attention layers and MLPs
//! for clean / corrupted prompt pairs, the top edges patched alone exactly, and circuits of the top n edges run
//! with every other edge patched from the corrupted prompts (a faithfulness curve and the circuit drawn).

use anyhow::Result;
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        attribution::{prompt_inputs, Metric},
        circuit::{find_circuit, CircuitOptions},
    },
};

use super::attribute::{read_prompt_pairs, PairArgs};
use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct CircuitArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pairs: PairArgs,
    /// Circuit sizes (edges kept) on the faithfulness curve, comma-separated (default: 0, 1, 2, 3, 5, 8, … all).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Draw the circuit of this many top edges (default: the smallest on the curve reaching --faithfulness).
    #[arg(long)]
    keep: Option<usize>,
    /// The share of the clean-minus-corrupted metric the drawn circuit must recover.
    #[arg(long, default_value_t = 0.8)]
    faithfulness: f64,
    /// The head-level graph: each attention head a sender (what it writes into the residual stream) and a receiver
    /// through its query, key and value inputs, instead of one node per attention layer.
    #[arg(long)]
    per_head: bool,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: CircuitArgs) -> Result<()> {
    outputs::prepare_dir(&args.pairs.out)?;
    let metric = Metric::parse(&args.pairs.metric)?;
    let prompts = read_prompt_pairs(&args.pairs.prompts)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let (inputs, _) = prompt_inputs(&tokenizer, &prompts, model.device())?;
    let options = CircuitOptions {
        metric,
        ig_steps: args.pairs.ig_steps,
        top_k: args.pairs.top_k,
        random_k: args.pairs.random_k,
        verify_all: args.pairs.verify_all,
        seed: args.pairs.seed,
        sizes: args.sizes.unwrap_or_default(),
        keep: args.keep,
        faithfulness: args.faithfulness,
        per_head: args.per_head,
    };
    let (result, _) = find_circuit(model, &plugins, &inputs, &options)?;
    let seconds = result.seconds;
    eprintln!(
        "seconds: scores {:.2}, {} edges patched alone {:.2}, {} circuits {:.2}",
        seconds.scores,
        result.edges.iter().filter(|e| e.exact.is_some()).count(),
        seconds.verify,
        result.curve.len(),
        seconds.curve
    );
    finish_study(&result.output("circuit.json")?, &args.pairs.out)?;
    Ok(result.write_scores(&args.pairs.out)?)
}
