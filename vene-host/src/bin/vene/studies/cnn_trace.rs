//! `vene cnn-trace`: causal tracing on an image classifier over blocks × spatial regions, and each photo's regions
//! swapped into the next.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vene_host::{
    outputs, real_model,
    studies::cnn_tracing::{cnn_trace_study, CnnTraceOptions, Photo},
    vision::{load_photo_with_crop, Preprocess},
};

use crate::common::{finish_study, load_model, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct CnnTraceArgs {
    /// An image classifier with block_output feature maps, e.g. efficientnet-lite0 (installed by the set-up).
    #[command(flatten)]
    model: ModelArgs,
    /// Photographs, comma-separated: image files, or names of the installed ones (chelsea.png, coffee.png,
    /// astronaut.png, rocket.jpg, motorcycle_left.png, horse.png).
    #[arg(long, default_value = "chelsea.png,coffee.png")]
    photos: String,
    /// Regions per side of every block's output (must divide every block's width: 7 for 224-pixel inputs).
    #[arg(long, default_value_t = 7)]
    grid: i64,
    /// Noise standard deviation, in units of the normalised photo's standard deviation.
    #[arg(long, default_value_t = 2.0)]
    noise: f64,
    /// Noise draws averaged.
    #[arg(long, default_value_t = 2)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: i64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: CnnTraceArgs) -> Result<()> {
    if args.samples == 0 || args.grid < 1 || args.noise.is_nan() || args.noise <= 0.0 {
        bail!("--samples and --grid must be at least 1 and --noise positive");
    }
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let preprocess = Preprocess::of_model(model.dir())?;
    let mut photos = Vec::new();
    for name in args.photos.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let path = real_model::photo(name)?;
        let (pixels, crop) = load_photo_with_crop(&path, &preprocess)?;
        photos.push(Photo { name: name.to_string(), pixels, crop });
    }
    if photos.is_empty() {
        bail!("--photos names no photograph");
    }
    let labels = vene_host::studies::cnn_tracing::labels(model.dir())?;
    let options = CnnTraceOptions { grid: args.grid, noise_scale: args.noise, samples: args.samples, seed: args.seed };
    let (study, _) = cnn_trace_study(model, &plugins, photos, &labels, &options)?;
    finish_study(&study.output("cnn_trace.json")?, &args.out)
}
