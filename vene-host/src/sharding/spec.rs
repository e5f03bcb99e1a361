//! Which shard a process computes (`--shard I/N`, or `auto/N` with the index from the scheduler) and which items
//! belong to it.

use crate::error::{Result, VeneError};

/// The environment variables a scheduler sets to a task's index, in the order they are read: Slurm job arrays and
/// Kubernetes Indexed Jobs.
pub const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The shard of `count` that item number `position` belongs to: items are dealt round-robin.
pub(super) fn shard_of(position: usize, count: usize) -> usize {
    position % count
}

/// Shard `index` of `count`, both counted from 0 / 1: `2/4` is the third of four shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardSpec {
    /// Parses `I/N`, or `auto/N` with `I` read from [`INDEX_VARIABLES`] through `variable`.
    pub fn parse_with(text: &str, variable: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let invalid = |why: String| {
            VeneError::Sharding(format!(
                "--shard {text}: {why} (valid: I/N for shard I of N, 0 ≤ I < N, e.g. 0/4 … 3/4; or auto/N to read I \
                 from {})",
                INDEX_VARIABLES.join(" or ")
            ))
        };
        let (index, count) = text.split_once('/').ok_or_else(|| invalid("there is no '/'".to_string()))?;
        let count: usize =
            count.trim().parse().map_err(|_| invalid(format!("the shard count {count:?} is not a number")))?;
        if count == 0 {
            return Err(invalid("the shard count must be at least 1".to_string()));
        }
        let index = match index.trim() {
            "auto" => Self::index_from_scheduler(&variable).map_err(invalid)?,
            number => number.parse().map_err(|_| invalid(format!("the shard index {number:?} is not a number")))?,
        };
        if index >= count {
            return Err(invalid(format!("the shard index {index} is not below the shard count {count}")));
        }
        Ok(Self { index, count })
    }

    /// Parses `I/N` or `auto/N`, reading the process's environment for `auto`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, |name| std::env::var(name).ok())
    }

    fn index_from_scheduler(variable: &impl Fn(&str) -> Option<String>) -> std::result::Result<usize, String> {
        for name in INDEX_VARIABLES {
            if let Some(value) = variable(name) {
                return value.trim().parse().map_err(|_| format!("{name}={value:?} is not a shard index"));
            }
        }
        Err(format!("auto needs the index from the scheduler, but none of {} is set", INDEX_VARIABLES.join(", ")))
    }

    /// Whether item number `position` of the sweep's list belongs to this shard. Items are dealt round-robin, so
    /// shards differ by at most one item and a list's neighbours (often of similar cost) spread over the shards.
    pub fn owns(&self, position: usize) -> bool {
        shard_of(position, self.count) == self.index
    }

    /// The positions of this shard's items in a list of `items`.
    pub fn positions(&self, items: usize) -> Vec<usize> {
        (self.index..items).step_by(self.count).collect()
    }
}
