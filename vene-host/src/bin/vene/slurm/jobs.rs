//! The jobs `vene slurm` submitted for a sweep (`OUT/slurm/jobs.json`) and what Slurm's queue says of them.

use std::{collections::HashMap, path::Path, process::Command};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One submission: the array job, the shards it runs and the merge job waiting on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub array_job: String,
    pub shards: Vec<usize>,
    pub merge_job: String,
}

/// Every submission of a sweep, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jobs {
    pub submissions: Vec<Submission>,
}

impl Jobs {
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not vene's job list", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        vene_checkpoint::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The queued (pending or running) job of shard `shard`, as `(job id, state)`.
    pub fn queued_shard<'a>(&self, queue: &'a Queue, shard: usize) -> Option<(String, &'a str)> {
        self.submissions.iter().rev().filter(|s| s.shards.contains(&shard)).find_map(|s| {
            let id = format!("{}_{shard}", s.array_job);
            queue.state(&id).map(|state| (id, state))
        })
    }
}

/// Slurm's queue: job id (`12`, or `12_3` for an array task) → state (`PENDING`, `RUNNING`, …).
#[derive(Debug, Clone, Default)]
pub struct Queue {
    states: HashMap<String, String>,
}

impl Queue {
    /// The queue as `squeue` shows it, one array task a line; empty where squeue is missing or fails.
    pub fn read() -> Self {
        let Ok(output) = Command::new("squeue").args(["--noheader", "--array", "--format=%i %T"]).output() else {
            return Self::default();
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let states = text
            .lines()
            .filter_map(|line| line.trim().split_once(' '))
            .map(|(id, state)| (id.to_string(), state.trim().to_string()))
            .collect();
        Self { states }
    }

    pub fn state(&self, id: &str) -> Option<&str> {
        self.states.get(id).map(String::as_str)
    }
}

/// Whether `program` is on the PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs `sbatch --parsable ARGS SCRIPT` and returns the job id it prints.
pub fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let output =
        Command::new("sbatch").arg("--parsable").args(args).arg(script).output().context("cannot run sbatch")?;
    if !output.status.success() {
        anyhow::bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // --parsable prints "id" or "id;cluster".
    Ok(text.trim().split(';').next().unwrap_or_default().to_string())
}

/// Cancels job `id` (a merge that can no longer run because a task it waited on was cancelled).
pub fn scancel(id: &str) {
    let _ = Command::new("scancel").arg(id).status();
}
