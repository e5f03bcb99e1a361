//! `vene demo`: runs the demo's plan (`vene_host::demo::plan`) with progress bars and says where things went.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::ProgressBar;
use vene_host::{
    demo::{
        self,
        plan::{DemoOptions, Progress},
        real_model::RealGrid,
    },
    outputs,
};

use crate::common::{progress_bar, PluginArgs};

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the report, figures and numbers.
    #[arg(long, value_name = "DIR", default_value = "vene-demo")]
    out: PathBuf,
    /// Where the built demo models are cached (default: the user's cache dir).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Training seed of the toy models; models of another seed than the default are cached beside them.
    #[arg(long, default_value_t = demo::DEFAULT_SEED)]
    seed: u64,
    /// The real model's GGUF (default: the Gemma 3 270M that scripts/setup.sh installs).
    #[arg(long, value_name = "FILE.gguf")]
    model: Option<PathBuf>,
    /// The tests' small grid (3 facts, 1 noise sample, DAS at one position, short continuations) instead of the
    /// demo's; for checking the pipeline, not for reading the numbers.
    #[arg(long)]
    small: bool,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// One progress bar at a time, restyled when the demo moves from training to a study.
struct Bars {
    current: Option<(String, ProgressBar)>,
}

impl Bars {
    fn show(&mut self, progress: Progress<'_>) {
        let (key, template, position, length, message) = match progress {
            Progress::Training { model, step, steps, loss } => (
                format!("train {model}"),
                format!("training {model} {{bar:40}} {{pos}}/{{len}}  loss {{msg}}  [{{elapsed}} < {{eta}}]"),
                step,
                steps,
                format!("{loss:.3}"),
            ),
            Progress::Study { study, done, total } => (
                study.to_string(),
                format!("{study} {{bar:40}} {{pos}}/{{len}}  [{{elapsed}} < {{eta}}]"),
                done,
                total,
                String::new(),
            ),
            Progress::Reused { study, reused, total } => {
                if reused > 0 {
                    println!("{study}: {reused} of {total} items read back from the cache of an earlier run");
                }
                return;
            }
            Progress::Done => {
                if let Some((_, bar)) = self.current.take() {
                    bar.finish_and_clear();
                }
                return;
            }
        };
        if self.current.as_ref().is_none_or(|(current, _)| *current != key) {
            if let Some((_, bar)) = self.current.take() {
                bar.finish_and_clear();
            }
            self.current = Some((key.clone(), progress_bar(&template)));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_length(length as u64);
            bar.set_position(position as u64);
            bar.set_message(message);
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    outputs::prepare_dir(&args.out)?;
    let plugins = args.plugins.load()?;
    let real_model = match args.model {
        Some(path) => path,
        None => vene_host::real_model::gemma3_270m()?,
    };
    vene_host::real_model::note_terms_on_first_use(&real_model);
    let grid = if args.small { RealGrid::small() } else { RealGrid::demo() };
    let cache = args.cache.unwrap_or_else(demo::cache_dir);
    let options = DemoOptions { out: args.out, cache, seed: args.seed, real_model, grid };
    let mut bars = Bars { current: None };
    let report = demo::plan::run(&plugins, &options, &mut |progress| bars.show(progress))?;
    bars.show(Progress::Done);
    println!("real model: {}", report.model.display());
    for section in &report.sections {
        println!("== {}\n{}\n", section.heading, section.body);
    }
    println!("report: {}", report.report.display());
    Ok(())
}
