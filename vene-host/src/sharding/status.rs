//! How far each shard of a sweep has got, from the files under `OUT/shards/` alone.

use super::{Manifest, ShardStore};

/// One shard's stored items and the error its last run stopped on, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardState {
    pub index: usize,
    pub done: usize,
    pub total: usize,
    pub failure: Option<String>,
}

impl ShardState {
    pub fn finished(&self) -> bool {
        self.done == self.total
    }
}

/// Every shard's state, by index.
pub fn shard_states(store: &ShardStore, manifest: &Manifest) -> Vec<ShardState> {
    let mut states: Vec<ShardState> =
        (0..manifest.shards).map(|index| ShardState { index, done: 0, total: 0, failure: None }).collect();
    for (position, id) in manifest.items.iter().enumerate() {
        let state = &mut states[manifest.shard_of(position)];
        state.total += 1;
        state.done += usize::from(store.has_item(id));
    }
    for state in &mut states {
        state.failure = (!state.finished()).then(|| store.failure(state.index)).flatten();
    }
    states
}
