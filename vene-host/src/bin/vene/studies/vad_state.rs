//! `vene vad-state`: Silero VAD on speech synthesised by espeak-ng, its LSTM state zeroed or taken from silence at
//! one chunk, and the speech probability of every chunk after against the clean run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vene_host::{audio, outputs, studies::vad_state::vad_state_study};

use crate::common::{finish_study, load_model, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct VadStateArgs {
    /// A voice-activity model, e.g. silero-vad (installed by the set-up).
    #[command(flatten)]
    model: ModelArgs,
    /// Utterances, separated by '|', synthesised by espeak-ng with silence between them.
    #[arg(long, default_value = "one two three four five|the quick brown fox jumps over the lazy dog")]
    texts: String,
    /// Seconds of silence before, between and after the utterances.
    #[arg(long, default_value_t = 0.6)]
    gap: f64,
    /// Chunks (32 ms each) to intervene at, comma-separated; default: five chunks into each stretch of speech.
    #[arg(long, value_delimiter = ',')]
    chunks: Option<Vec<i64>>,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: VadStateArgs) -> Result<()> {
    let texts: Vec<String> = args.texts.split('|').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
    if texts.is_empty() || !(0.0..=10.0).contains(&args.gap) {
        bail!("--texts needs at least one utterance and --gap must be between 0 and 10 seconds");
    }
    outputs::prepare_dir(&args.out)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    if model.catalog().model_type != "silero_vad" {
        bail!("vad-state needs a Silero VAD model (model_type silero_vad), not {}", model.catalog().model_type);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let speech = audio::utterances(&refs, args.gap, 16_000, 512)?;
    let (study, _) = vad_state_study(model, &plugins, &speech, &texts, args.chunks)?;
    finish_study(&study.output("vad_state.json")?, &args.out)
}
