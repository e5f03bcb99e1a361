//! `vene interchange-search`: the multi-source interchange over several wordings, at every layer in parallel and
//! every later layer in series, with every combination's top 5 recorded (the demo's study, on any model).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vene_host::{
    outputs,
    studies::{
        self,
        interchange_search::{search, Wording},
        output::{format_top, StudyOutput},
    },
};

use crate::common::{finish_study, load_model, model_tokenizer, progress_bar, ModelArgs, PluginArgs};

#[derive(Args)]
pub struct InterchangeSearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines, one wording each: {"base": …, "attribute_source": …, "entity_source": …}, each source differing
    /// from the base in one token (e.g. "The capital of Spain is" / "The language of Spain is" / "The capital of
    /// Italy is").
    #[arg(long, value_name = "WORDINGS.jsonl")]
    wordings: PathBuf,
    /// The token the mix should produce, e.g. " Italian".
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "block_output")]
    component: String,
    /// Serial chains try every this-many-th later layer for the second hop.
    #[arg(long, default_value_t = 1)]
    serial_stride: usize,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
}

fn read_wordings(path: &PathBuf) -> Result<Vec<Wording>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shape = "{\"base\": …, \"attribute_source\": …, \"entity_source\": …}";
    Ok(studies::parse_json_lines(&text, &path.display().to_string(), shape)?)
}

pub fn run(args: InterchangeSearchArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let wordings = read_wordings(&args.wordings)?;
    let (plugins, model) = load_model(&args.model, &args.plugins)?;
    let tokenizer = model_tokenizer(&model)?;
    let bar = progress_bar("{bar:40} {pos}/{len} wordings  [{elapsed} < {eta}]");
    let setup = (wordings.as_slice(), args.target.as_str(), args.component.as_str());
    let (found, _) = search(model, &plugins, &tokenizer, setup, args.serial_stride, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut lines = Vec::new();
    for mode in ["parallel", "serial"] {
        let (hits, of) = found.hits(mode);
        let best = found.best(mode).map_or("none".to_string(), |a| {
            let second = a.second_layer.map_or(String::new(), |s| format!(" → {s}"));
            format!("wording {}, layer {}{second}: {}", a.wording + 1, a.layer, format_top(&a.top))
        });
        lines.push(format!("{mode}: {:?} in the top 5 in {hits} of {of}; best {best}", args.target));
    }
    finish_study(&StudyOutput::new("interchange_search.json", &found, Vec::new(), lines.join("\n"))?, &args.out)
}
