//! `vene vector`: a steering vector from a token's embedding or from contrasting prompts.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vene_host::{outputs, vectors};

use crate::common::{load_model, model_tokenizer, read_prompts, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct VectorArgs {
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
}

pub fn run(args: VectorArgs) -> Result<()> {
    outputs::check_file(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let vector = match (&args.token, &args.positive, &args.negative) {
        (Some(token), _, _) => vectors::token_embedding(&model, &tokenizer, token)?,
        (None, Some(positive), Some(negative)) => {
            let (positive, negative) = (read_prompts(positive)?, read_prompts(negative)?);
            vectors::mean_difference(model, &plugins, &tokenizer, &positive, &negative, args.layer, &args.component)?
        }
        _ => bail!("give --token, or --positive and --negative prompt files"),
    };
    vene_checkpoint::save_safetensors(&args.out, &[("vector".to_string(), vector.shallow_clone())])?;
    println!("wrote {} ({} values, norm {:.4})", args.out.display(), vector.numel(), vector.norm().double_value(&[]));
    Ok(())
}
