//! The sbatch scripts `vene slurm` writes: an array with one task per shard (requeued when preempted) and the merge.

use std::path::Path;

/// What the array's tasks ask of Slurm.
#[derive(Debug, Clone)]
pub struct Resources {
    pub cpus_per_task: usize,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub gpus: Option<String>,
}

/// `word` quoted for a POSIX shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn header(name: &str, workdir: &Path, log: &Path) -> String {
    format!(
        "#!/bin/bash\n# Written by `vene slurm`; submitting it again by hand is fine (finished items are skipped).\n\
         #SBATCH --job-name={name}\n#SBATCH --chdir={}\n#SBATCH --output={}\n#SBATCH --open-mode=append\n",
        quote(&workdir.to_string_lossy()),
        quote(&log.to_string_lossy()),
    )
}

/// The array script: tasks `array` (e.g. `0-3` or `1,3`) each run `command` for its shard of `shards`.
pub fn array_script(
    command: &[String],
    shards: usize,
    array: &str,
    resources: &Resources,
    workdir: &Path,
    logs: &Path,
) -> String {
    let mut text = header("vene-shards", workdir, &logs.join("shard-%a.log"));
    text.push_str(&format!("#SBATCH --array={array}\n#SBATCH --requeue\n"));
    text.push_str(&format!("#SBATCH --cpus-per-task={}\n", resources.cpus_per_task));
    for (flag, value) in [("mem", &resources.mem), ("time", &resources.time), ("partition", &resources.partition)] {
        if let Some(value) = value {
            text.push_str(&format!("#SBATCH --{flag}={}\n", quote(value)));
        }
    }
    if let Some(gpus) = &resources.gpus {
        text.push_str(&format!("#SBATCH --gpus={}\n", quote(gpus)));
    }
    let words: Vec<String> = command.iter().map(|w| quote(w)).collect();
    text.push_str(&format!(
        "\n# vene reads the shard index from SLURM_ARRAY_TASK_ID and its thread count from SLURM_CPUS_PER_TASK.\n\
         exec {} --shard auto/{shards}\n",
        words.join(" ")
    ));
    text
}

/// The merge script: `vene merge OUT`.
pub fn merge_script(vene: &Path, out: &Path, workdir: &Path, logs: &Path) -> String {
    let mut text = header("vene-merge", workdir, &logs.join("merge.log"));
    text.push_str(&format!(
        "#SBATCH --cpus-per-task=1\n\nexec {} merge {}\n",
        quote(&vene.to_string_lossy()),
        quote(&out.to_string_lossy())
    ));
    text
}

/// Shard indices as an sbatch `--array` list: runs collapsed, e.g. `0-3` or `1,3-5`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < indices.len() {
        let start = indices[at];
        let mut end = start;
        while at + 1 < indices.len() && indices[at + 1] == end + 1 {
            at += 1;
            end = indices[at];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        at += 1;
    }
    parts.join(",")
}
