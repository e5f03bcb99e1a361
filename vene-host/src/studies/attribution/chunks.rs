//! Attribution as a sweep over prompt chunks, for sharded runs (`vene attribute --shard I/N`): each chunk of prompts
//! is one item, estimated alone; the merge weights each chunk by its share of the prompts (the metric is their
//! mean), so it gives the estimates one process would. The exact re-patching needs every prompt at once and is
//! left to a single process.

use serde::{Deserialize, Serialize};

use super::{
    estimate_nodes, prompt_inputs, Attribution, AttributionOptions, ComponentScores, Metric, NodeEstimates, Seconds,
};
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    studies::path_patching::PathPrompt,
    text::TextTokenizer,
};

/// One chunk's estimates (scores summed over its prompts and divided by their number, as one run of the chunk
/// gives them) and its metric on the clean and the corrupted prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkEstimates {
    pub prompts: usize,
    pub clean: f64,
    pub corrupted: f64,
    pub components: Vec<ComponentScores>,
}

/// The prompts in chunks of `size`, with stable ids (`prompts-0000`, …).
pub fn chunk_items(prompts: &[PathPrompt], size: usize) -> Result<Vec<(String, Vec<PathPrompt>)>> {
    if size == 0 {
        return Err(VeneError::Inputs("a chunk of 0 prompts: give at least 1".to_string()));
    }
    Ok(prompts.chunks(size).enumerate().map(|(i, chunk)| (format!("prompts-{i:04}"), chunk.to_vec())).collect())
}

/// The estimates of one chunk of prompts.
pub fn estimate_chunk(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    prompts: &[PathPrompt],
    options: &AttributionOptions,
) -> Result<(ChunkEstimates, LoadedModel)> {
    if options.grad_drop {
        return Err(VeneError::Inputs(
            "GradDrop's scores are magnitudes of whole-set estimates and do not add up over prompt chunks; run it \
             in one process (without --shard)"
                .to_string(),
        ));
    }
    let (inputs, _) = prompt_inputs(tokenizer, prompts, model.device())?;
    let (NodeEstimates { components, clean, corrupted }, model) = estimate_nodes(model, plugins, &inputs, options)?;
    Ok((ChunkEstimates { prompts: prompts.len(), clean, corrupted, components }, model))
}

/// `total += weight · part`, growing `total`'s position axis to `part`'s (chunks pad to their own longest prompt).
fn accumulate(total: &mut [Vec<Vec<f64>>], part: &[Vec<Vec<f64>>], weight: f64) {
    for (layer, heads) in total.iter_mut().zip(part) {
        for (row, values) in layer.iter_mut().zip(heads) {
            if row.len() < values.len() {
                row.resize(values.len(), 0.0);
            }
            row.iter_mut().zip(values).for_each(|(sum, value)| *sum += weight * value);
        }
    }
}

/// The attribution of every prompt from its chunks' estimates: what one process's estimate gives, without the exact
/// re-patching.
pub fn merge_chunks(
    chunks: &[ChunkEstimates],
    metric: Metric,
    method: String,
    tokens: Vec<String>,
) -> Result<Attribution> {
    let first = chunks.first().ok_or_else(|| VeneError::Inputs("no chunks to merge".to_string()))?;
    let total: usize = chunks.iter().map(|c| c.prompts).sum();
    let mut components: Vec<ComponentScores> = first
        .components
        .iter()
        .map(|c| ComponentScores { scores: vec![vec![Vec::new(); c.heads]; c.scores.len()], ..c.clone() })
        .collect();
    let (mut clean, mut corrupted) = (0.0, 0.0);
    for chunk in chunks {
        let weight = chunk.prompts as f64 / total as f64;
        clean += weight * chunk.clean;
        corrupted += weight * chunk.corrupted;
        for (merged, part) in components.iter_mut().zip(&chunk.components) {
            accumulate(&mut merged.scores, &part.scores, weight);
        }
    }
    for merged in &mut components {
        merged.positions = merged.scores.iter().flatten().map(Vec::len).max().unwrap_or(0);
        merged.scores.iter_mut().flatten().for_each(|row| row.resize(merged.positions, 0.0));
    }
    Ok(Attribution {
        metric,
        method,
        prompts: total,
        clean,
        corrupted,
        tokens,
        components,
        verified: Vec::new(),
        rank_correlation_verified: None,
        rank_correlation_all: None,
        seconds: Seconds::default(),
    })
}
