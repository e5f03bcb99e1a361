//! `vene new-model`: a freshly initialised model in pyvene's layout, to train on a task with `vene train
//! --train-model` when no pretrained model exists for it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use vene_host::{
    outputs,
    toy::{self, MlpShape},
};

#[derive(Args)]
pub struct NewModelArgs {
    #[command(subcommand)]
    family: Family,
}

#[derive(Subcommand)]
enum Family {
    /// pyvene's MLPForClassification (float inputs `(batch, 1, h_dim)`).
    Mlp(MlpArgs),
}

#[derive(Args)]
struct MlpArgs {
    #[arg(long)]
    h_dim: i64,
    #[arg(long, default_value_t = 2)]
    layers: i64,
    #[arg(long, default_value_t = 2)]
    classes: i64,
    #[arg(long, default_value = "relu")]
    activation: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn run(args: NewModelArgs) -> Result<()> {
    match args.family {
        Family::Mlp(args) => {
            outputs::check_replaced_dir(&args.out)?;
            let shape = MlpShape {
                h_dim: args.h_dim,
                n_layer: args.layers,
                num_classes: args.classes,
                activation: args.activation,
            };
            toy::new_mlp(&args.out, &shape, args.seed)?;
            println!("wrote a new MLP ({} layers of {}) to {}", shape.n_layer, shape.h_dim, args.out.display());
        }
    }
    Ok(())
}
