//! `vene run`: one intervened forward pass, its outputs saved as safetensors.

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use clap::Args;
use tch::{Kind, Tensor};
use vene_host::{inputs::RunInputs, outputs, text::TextTokenizer};

use crate::common::{bind_saved, load_model, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct RunArgs {
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
    /// After the first run, time this many more identical runs (1 or more) and print their median and minimum.
    #[arg(long, value_name = "N", value_parser = timed_runs)]
    repeat: Option<usize>,
    /// Seed for intervention initialisation and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// `--repeat N`: 0 would time nothing, so it is refused rather than ignored.
fn timed_runs(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 runs time nothing (valid: 1 or more; leave --repeat out to time nothing)".to_string()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("'{text}' is not a number of runs (valid: 1 or more)")),
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    outputs::check_file(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = TextTokenizer::for_model(model.dir(), &model.catalog().model_type)?;
    let inputs = RunInputs::from_file(&args.inputs, model.device(), tokenizer.as_ref())?;
    let is_language_model = model.catalog().vocab_size > 0;
    let plain = is_language_model.then(|| model.forward_plain(&inputs.base)).transpose()?;
    let mut intervenable = bind_saved(model, &plugins, &args.config, args.seed)?;
    intervenable.check_finite_writes(true);
    let _guard = tch::no_grad_guard();
    let result = intervenable.run(&inputs.base, &inputs.sources, &inputs.unit_locations, &inputs.subspaces)?;
    if let Some(site) = result.first_non_finite_site() {
        eprintln!("warning: the output of {site} has NaN or infinite values, and so may everything after it");
    } else if !bool::try_from(result.output.isfinite().all())? {
        eprintln!("warning: the model's output has NaN or infinite values (no intervention wrote any)");
    }
    let mut tensors = vec![("output".to_string(), result.output.to_kind(Kind::Float))];
    for (i, collected) in result.collected.iter().enumerate() {
        tensors.push((format!("collected.{i}"), collected.to_kind(Kind::Float)));
    }
    vene_checkpoint::save_safetensors(&args.out, &tensors)?;
    if let Some(plain) = plain {
        print_top_tokens(&plain.output, &result.output, tokenizer.as_ref(), inputs.base.attention_mask.as_ref());
    }
    println!("wrote {} ({} tensor(s))", args.out.display(), tensors.len());
    if let Some(repeat) = args.repeat {
        // Timed as the library runs by default: without the finite checks.
        intervenable.check_finite_writes(false);
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
