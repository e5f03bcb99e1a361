//! `vene slurm`: a sweep command as a Slurm job array (one task per shard) plus a merge job that waits for it;
//! `vene slurm status OUT` shows each shard's progress. Submitting again submits only the shards that are neither
//! finished nor queued. Without sbatch on the PATH the scripts are written and the commands to submit them printed.

mod jobs;
mod script;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use vene_host::sharding::{shard_states, ShardState, ShardStore};

use jobs::{Jobs, Queue, Submission};
use script::Resources;

/// The sweep commands that take --shard, and what each needs to be a sweep.
const SWEEPS: [(&str, &str); 6] = [
    ("trace", "--facts"),
    ("das-probe", "--template"),
    ("interchange-search", "--wordings"),
    ("steer-sentiment", "--openings"),
    ("path-patch", "--prompts"),
    ("attribute", "--prompts"),
];

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SlurmArgs {
    #[command(subcommand)]
    action: Option<SlurmAction>,
    #[command(flatten)]
    submit: SubmitArgs,
}

#[derive(Subcommand)]
enum SlurmAction {
    /// Each shard's progress (done / running / pending / failed) and the merge's, from OUT and Slurm's queue.
    Status {
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct SubmitArgs {
    /// Shards, one array task each.
    #[arg(long, value_name = "N")]
    array: Option<usize>,
    #[arg(long, default_value_t = 1)]
    cpus_per_task: usize,
    /// Memory per task, as sbatch takes it (e.g. 8G).
    #[arg(long)]
    mem: Option<String>,
    /// Time limit per task, as sbatch takes it (e.g. 2:00:00).
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    partition: Option<String>,
    /// GPUs per task, as sbatch's --gpus takes them (e.g. 1); pass --device cuda to the command too.
    #[arg(long)]
    gpus: Option<String>,
    /// The sweep, after `--`: e.g. `-- vene trace --model M --facts F.jsonl --out OUT`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(args: SlurmArgs) -> Result<()> {
    match args.action {
        Some(SlurmAction::Status { out }) => status(&out),
        None => submit(args.submit),
    }
}

/// The command with `vene` made the path of this executable, checked to be a sweep, and its `--out`.
fn sweep_command(command: &[String]) -> Result<(Vec<String>, PathBuf)> {
    let known = SWEEPS.map(|(name, needs)| format!("vene {name} {needs} …")).join(", ");
    let (program, rest) = command.split_first().ok_or_else(|| {
        anyhow!("no command after `--`: give the sweep to run, e.g. `vene slurm --array 4 -- {known}`")
    })?;
    let is_vene = Path::new(program).file_name().is_some_and(|name| name == "vene");
    let subcommand = rest.first().map(String::as_str).unwrap_or_default();
    let Some((_, needs)) = SWEEPS.iter().find(|(name, _)| *name == subcommand).filter(|_| is_vene) else {
        bail!("`{}` is not a sweep vene can shard (valid: {known})", command.join(" "));
    };
    let has = |flag: &str| rest.iter().any(|w| w == flag || w.starts_with(&format!("{flag}=")));
    if !has(needs) {
        bail!("`vene {subcommand}` runs as a sweep only with {needs}");
    }
    if has("--shard") {
        bail!("leave --shard out of the command: each array task adds --shard auto/N");
    }
    // Every task would fail on a command that does not parse: say so now, not in N logs.
    if let Err(error) = <crate::Cli as clap::Parser>::try_parse_from(command) {
        bail!(
            "the command after `--` is not a valid vene command: {}",
            error.render().to_string().trim().trim_start_matches("error: ")
        );
    }
    let out = rest
        .iter()
        .enumerate()
        .find_map(|(i, w)| match w.strip_prefix("--out=") {
            Some(value) => Some(value.to_string()),
            None => (w == "--out").then(|| rest.get(i + 1).cloned()).flatten(),
        })
        .ok_or_else(|| anyhow!("the command has no --out DIR, where the shards and the merged result go"))?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create --out {out}"))?;
    let out = std::fs::canonicalize(&out)?;
    let vene = std::env::current_exe().context("cannot find the vene executable")?;
    let absolute = out.to_string_lossy().into_owned();
    let mut words = vec![vene.to_string_lossy().into_owned()];
    for (i, word) in rest.iter().enumerate() {
        words.push(match word.strip_prefix("--out=") {
            Some(_) => format!("--out={absolute}"),
            None if i > 0 && rest[i - 1] == "--out" => absolute.clone(),
            None => word.clone(),
        });
    }
    Ok((words, out))
}

fn submit(args: SubmitArgs) -> Result<()> {
    let shards =
        args.array.ok_or_else(|| anyhow!("give --array N (the number of shards), or `vene slurm status OUT`"))?;
    if shards == 0 {
        bail!("--array 0: a sweep needs at least one shard (valid: --array N with N ≥ 1)");
    }
    let (command, out) = sweep_command(&args.command)?;
    let store = ShardStore::new(&out);
    let slurm_dir = out.join("slurm");
    let jobs_path = slurm_dir.join("jobs.json");
    let mut jobs = Jobs::read(&jobs_path)?;
    let queue = Queue::read();
    let todo = shards_to_submit(&store, shards, &jobs, &queue)?;
    std::fs::create_dir_all(slurm_dir.join("logs"))?;
    let workdir = std::env::current_dir()?;
    let resources = Resources {
        cpus_per_task: args.cpus_per_task,
        mem: args.mem,
        time: args.time,
        partition: args.partition,
        gpus: args.gpus,
    };
    let array_path = slurm_dir.join("array.sbatch");
    let merge_path = slurm_dir.join("merge.sbatch");
    let array = script::array_spec(&todo);
    let logs = slurm_dir.join("logs");
    let vene = PathBuf::from(&command[0]);
    write_script(&array_path, &script::array_script(&command, shards, &array, &resources, &workdir, &logs))?;
    write_script(&merge_path, &script::merge_script(&vene, &out, &workdir, &logs))?;
    if !jobs::on_path("sbatch") {
        println!(
            "sbatch is not on the PATH; wrote {} (tasks {array}) and {}. Submit them with:\n  id=$(sbatch --parsable {})\n  \
             sbatch --dependency=afterok:$id {}",
            array_path.display(),
            merge_path.display(),
            array_path.display(),
            merge_path.display()
        );
        return Ok(());
    }
    // A merge still waiting on an earlier submission would wait forever on a cancelled task: the new one replaces it.
    for stale in jobs.submissions.iter().filter(|s| queue.state(&s.merge_job).is_some()) {
        jobs::scancel(&stale.merge_job);
    }
    let (array_job, dependency) = if todo.is_empty() {
        (String::new(), Vec::new())
    } else {
        let id = jobs::sbatch(&[], &array_path)?;
        (id.clone(), vec![format!("--dependency=afterok:{id}")])
    };
    let merge_job = jobs::sbatch(&dependency, &merge_path)?;
    jobs.submissions.push(Submission {
        array_job: array_job.clone(),
        shards: todo.clone(),
        merge_job: merge_job.clone(),
    });
    jobs.write(&jobs_path)?;
    if todo.is_empty() {
        println!("every shard is finished or queued; submitted the merge as job {merge_job}");
    } else {
        println!(
            "submitted shards {array} of {shards} as array job {array_job} and the merge as job {merge_job} (after \
             the array succeeds); follow them with `vene slurm status {}`",
            out.display()
        );
    }
    Ok(())
}

/// Shards neither finished nor pending/running in Slurm's queue: all of them before any shard has written the
/// manifest.
fn shards_to_submit(store: &ShardStore, shards: usize, jobs: &Jobs, queue: &Queue) -> Result<Vec<usize>> {
    let finished: Vec<bool> = match store.read_manifest()? {
        Some(manifest) if manifest.shards != shards => bail!(
            "{} splits this sweep into {} shards, not {shards}: submit with --array {} (or another --out)",
            store.manifest_path().display(),
            manifest.shards,
            manifest.shards
        ),
        Some(manifest) => shard_states(store, &manifest).iter().map(ShardState::finished).collect(),
        None => vec![false; shards],
    };
    Ok((0..shards).filter(|&s| !finished[s] && jobs.queued_shard(queue, s).is_none()).collect())
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    vene_checkpoint::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn status(out: &Path) -> Result<()> {
    let store = ShardStore::new(out);
    let jobs = Jobs::read(&out.join("slurm").join("jobs.json"))?;
    let queue = Queue::read();
    let Some(manifest) = store.read_manifest()? else {
        let queued = jobs.submissions.last().map_or(String::new(), |s| format!(" (array job {})", s.array_job));
        println!("no shard has started yet{queued}: {} does not exist", store.manifest_path().display());
        return Ok(());
    };
    let states = shard_states(&store, &manifest);
    let done: usize = states.iter().map(|s| s.done).sum();
    let total = manifest.items.len();
    println!(
        "`vene {}` sweep of {total} items in {} shards ({})",
        manifest.identity.command,
        manifest.shards,
        out.display()
    );
    println!("{} {done}/{total} items", bar(done, total, 40));
    for state in &states {
        println!("shard {}/{}: {}", state.index, manifest.shards, describe(state, &jobs, &queue));
    }
    match jobs.submissions.last() {
        Some(last) => {
            let state = queue.state(&last.merge_job).unwrap_or("not queued (finished, failed or cancelled)");
            println!("merge: job {} {}", last.merge_job, state.to_lowercase());
        }
        None => {
            println!("merge: not submitted by vene slurm; run `vene merge {}` when every shard is done", out.display())
        }
    }
    Ok(())
}

fn describe(state: &ShardState, jobs: &Jobs, queue: &Queue) -> String {
    let count = format!("{}/{} items", state.done, state.total);
    if state.finished() {
        return format!("done ({count})");
    }
    if let Some((id, job_state)) = jobs.queued_shard(queue, state.index) {
        return format!("{} ({count}), job {id}", job_state.to_lowercase());
    }
    match &state.failure {
        Some(error) => format!("failed ({count}): {}", error.trim()),
        None => format!("not running ({count}); `vene slurm` again submits it"),
    }
}

/// `[#####-----]` for `done` of `total`.
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}
