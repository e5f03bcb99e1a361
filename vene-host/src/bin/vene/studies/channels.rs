//! `vene channels`: zero each channel of a CNN feature map and measure the true class's probability.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use vene_host::{
    datasets, outputs,
    studies::{channels::channel_study, output::StudyOutput},
};

use crate::common::{finish_study, load_model, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct ChannelsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "block_output")]
    component: String,
    #[arg(long, default_value_t = 0)]
    layer: u32,
    /// Directory with the Fashion-MNIST IDX files (default: the Debian package's).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    images: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: ChannelsArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let data = args
        .data
        .or_else(datasets::dataset_dir)
        .ok_or_else(|| anyhow!("Fashion-MNIST not found: pass --data DIR or install dataset-fashion-mnist"))?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let (study, _) = channel_study(model, &plugins, &args.component, args.layer, &data, args.images)?;
    let figures = vec![study.lines("channels", "mean p(true class) with one channel zeroed")];
    let summary = format!(
        "accuracy {:.3}; mean p(true class) {:.3}; per zeroed channel {:?}",
        study.accuracy, study.baseline, study.zeroed
    );
    finish_study(&StudyOutput::new("channels.json", &study, figures, summary)?, &args.out)
}
