//! `vene timesteps`: zero, swap and cross-time-swap one step of a recurrent model, on text or on images.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use vene_host::{
    datasets, outputs,
    studies::{
        output::{format_top, StudyOutput},
        timesteps::{self, Steps, TimestepSetup},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct TimestepsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Base text (language models).
    #[arg(long, required_unless_present = "base_image", conflicts_with = "base_image")]
    base: Option<String>,
    /// Source text (language models).
    #[arg(long, required_unless_present = "source_image", conflicts_with = "source_image")]
    source: Option<String>,
    /// Base image: an index into the Fashion-MNIST test images (image classifiers, two pixel rows per step).
    #[arg(long, requires = "source_image")]
    base_image: Option<usize>,
    /// Source image: an index into the Fashion-MNIST test images.
    #[arg(long, requires = "base_image")]
    source_image: Option<usize>,
    /// Directory with the Fashion-MNIST IDX files (default: the Debian package's).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    layer: i64,
    #[arg(long)]
    step: i64,
    /// Base step the cross-time swap writes into.
    #[arg(long)]
    to_step: i64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: TimestepsArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let (study, _) = match (args.base, args.source, args.base_image, args.source_image) {
        (Some(base), Some(source), None, None) => {
            let tokenizer = model_tokenizer(&model)?;
            let setup = TimestepSetup { base, source, layer: args.layer, step: args.step, to_step: args.to_step };
            timesteps::timestep_study(model, &plugins, &tokenizer, &setup)?
        }
        (None, None, Some(base), Some(source)) => {
            let data = args
                .data
                .or_else(datasets::dataset_dir)
                .ok_or_else(|| anyhow!("Fashion-MNIST not found: pass --data DIR or install dataset-fashion-mnist"))?;
            let count = base.max(source) + 1;
            let (images, _) = datasets::load_split(&data, "t10k", count)?;
            if (images.size()[0] as usize) < count {
                bail!("image {} was asked for, but the test split has {}", count - 1, images.size()[0]);
            }
            let steps = timesteps::image_steps(&images);
            let pick = |index: usize| steps.narrow(0, index as i64, 1);
            let choice = Steps { layer: args.layer, step: args.step, to_step: args.to_step };
            timesteps::sequence_timestep_study(model, &plugins, &pick(base), &pick(source), &datasets::CLASSES, choice)?
        }
        _ => bail!("give --base and --source texts, or --base-image and --source-image indices"),
    };
    let figures = vec![study.effect_lines("timesteps", "|h_intervened - h| per step (last layer)")];
    let summary = format!("base -> {}\n{}", format_top(&study.plain), study.summary());
    finish_study(&StudyOutput::new("timesteps.json", &study, figures, summary)?, &args.out)
}
