//! `vene ocr-steps`: a CRNN reading rendered words, with the BiLSTM state (or the CNN column) of one word swapped into
//! another at each time step; which characters each step carries.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::ocr_steps::{ocr_step_study, OcrSetup},
};

use crate::common::{finish_study, load_model, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct OcrStepsArgs {
    /// A CRNN, e.g. easyocr-english-g2 (installed by the set-up).
    #[command(flatten)]
    model: ModelArgs,
    /// Word pairs BASE:SOURCE, comma-separated; each pair is rendered to one width.
    #[arg(long, default_value = "hello:world,cat:dog,time:step")]
    pairs: String,
    /// The BiLSTM (0 or 1) whose state is swapped.
    #[arg(long, default_value_t = 0)]
    layer: u32,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: OcrStepsArgs) -> Result<()> {
    let mut pairs = Vec::new();
    for pair in args.pairs.split(',') {
        match pair.split_once(':') {
            Some((base, source)) if !base.trim().is_empty() && !source.trim().is_empty() => {
                pairs.push((base.trim().to_string(), source.trim().to_string()))
            }
            _ => bail!(
                "--pairs takes BASE:SOURCE word pairs separated by commas (e.g. hello:world,cat:dog); got '{pair}'"
            ),
        }
    }
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    if model.catalog().model_type != "crnn" {
        bail!("ocr-steps needs a CRNN text recogniser (model_type crnn), not {}", model.catalog().model_type);
    }
    let (study, _) = ocr_step_study(model, &plugins, &OcrSetup { pairs, layer: args.layer })?;
    finish_study(&study.output("ocr_steps.json")?, &args.out)
}
