//! The path-patching sweep over senders (one item per sender head, so it shards like the other sweeps), and its
//! figures: senders → logits as layers × heads, senders × receivers as a grid.

use std::path::Path;

use serde::Serialize;

use super::{Baseline, PathBatch, PathOptions, Receivers, SenderEffects};
use crate::{
    error::Result,
    model::LoadedModel,
    plugins::PluginSet,
    studies::{
        output::{Figure, StudyOutput},
        SweepOptions,
    },
};

/// A whole path-patching study.
#[derive(Debug, Clone, Serialize)]
pub struct PathPatching {
    pub layers: u32,
    pub heads: u32,
    pub prompts: usize,
    pub options: PathOptions,
    pub baseline: Baseline,
    pub senders: Vec<SenderEffects>,
}

/// Every head of the model, layer by layer: the default senders.
pub fn all_heads(model: &LoadedModel) -> Vec<(u32, u32)> {
    let catalog = model.catalog();
    (0..catalog.num_layers).flat_map(|l| (0..catalog.num_heads).map(move |h| (l, h))).collect()
}

/// The sweep's items: `("L{layer}.H{head}", (layer, head))`.
pub fn items(senders: &[(u32, u32)]) -> Vec<(String, (u32, u32))> {
    senders.iter().map(|&(l, h)| (format!("L{l}.H{h}"), (l, h))).collect()
}

/// Path patching of every sender, in this process.
pub fn run(
    model: &LoadedModel,
    plugins: &PluginSet,
    batch: &PathBatch,
    senders: &[(u32, u32)],
    options: &PathOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<PathPatching> {
    let baseline = Baseline::measure(model, batch)?;
    let mut effects = Vec::with_capacity(senders.len());
    for (done, &sender) in senders.iter().enumerate() {
        effects.push(super::sender_effects(model, plugins, batch, &baseline, sender, options)?);
        progress(done + 1, senders.len());
    }
    Ok(assemble(Shape::of(model, batch), options, baseline, effects))
}

/// The study from its senders' effects (computed here, read from a cache or from shards).
pub fn assemble(shape: Shape, options: &PathOptions, baseline: Baseline, senders: Vec<SenderEffects>) -> PathPatching {
    PathPatching {
        layers: shape.layers,
        heads: shape.heads,
        prompts: shape.prompts,
        options: *options,
        baseline,
        senders,
    }
}

/// What a study's result needs to know of the model and the prompts (a sharded sweep keeps it in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shape {
    pub layers: u32,
    pub heads: u32,
    pub prompts: usize,
}

impl Shape {
    pub fn of(model: &LoadedModel, batch: &PathBatch) -> Self {
        let catalog = model.catalog();
        Self { layers: catalog.num_layers, heads: catalog.num_heads, prompts: batch.prompts }
    }
}

/// What decides an item's result besides its sender: the prompts and the options.
pub fn sweep_options(batch: &PathBatch, options: &PathOptions) -> Result<SweepOptions> {
    let prompts = serde_json::to_value(&batch.texts).map_err(|e| crate::error::VeneError::Config(e.to_string()))?;
    Ok(vec![
        ("prompts", prompts),
        ("receivers", serde_json::to_value(options.receivers).unwrap_or_default()),
        ("freeze_mlps", serde_json::Value::Bool(options.freeze_mlps)),
    ])
}

/// The `count` senders that lower the logit difference most (`opposing`: that raise it most), with their effects.
pub fn strongest(found: &PathPatching, count: usize, opposing: bool) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> =
        found.senders.iter().filter_map(|s| s.to_logits.map(|e| (format!("L{}.H{}", s.layer, s.head), e))).collect();
    ranked.sort_by(|a, b| if opposing { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
    ranked.retain(|(_, effect)| (*effect > 0.0) == opposing);
    ranked.truncate(count);
    ranked
}

/// The figures, path_patching.json and a summary naming the strongest heads.
pub fn study_output(found: &PathPatching, out: &Path) -> Result<StudyOutput> {
    let mut figures = Vec::new();
    // Drawn as the drop in logit difference: heads that carry the answer red, heads that work against it blue.
    let drop = |effect: f64| -effect;
    let scale = "drop in logit diff (× clean − corrupted)".to_string();
    if found.options.receivers == Receivers::Logits {
        let mut values = vec![vec![0.0; found.heads as usize]; found.layers as usize];
        for sender in &found.senders {
            values[sender.layer as usize][sender.head as usize] = drop(sender.to_logits.unwrap_or(0.0));
        }
        let max = values.iter().flatten().map(|v| v.abs()).fold(1e-6, f64::max);
        figures.push(Figure::Heatmap {
            name: "senders_to_logits".to_string(),
            title: "path patching: each head → logits".to_string(),
            row_labels: (0..found.layers).map(|l| format!("layer {l}")).collect(),
            column_label: "head".to_string(),
            scale_label: scale.clone(),
            values,
            max,
        });
    } else {
        // Receivers from the layer after the earliest sender: earlier heads receive nothing.
        let first = found.senders.iter().map(|s| s.layer + 1).min().unwrap_or(0).min(found.layers.saturating_sub(1));
        let receivers: Vec<(u32, u32)> =
            (first..found.layers).flat_map(|l| (0..found.heads).map(move |h| (l, h))).collect();
        let values: Vec<Vec<f64>> = found
            .senders
            .iter()
            .map(|sender| {
                receivers
                    .iter()
                    .map(|r| sender.to_receivers.iter().find(|(l, h, _)| (*l, *h) == *r).map_or(0.0, |e| drop(e.2)))
                    .collect()
            })
            .collect();
        let max = values.iter().flatten().map(|v| v.abs()).fold(1e-6, f64::max);
        let input = format!("{:?}", found.options.receivers).to_lowercase();
        figures.push(Figure::Heatmap {
            name: "senders_to_receivers".to_string(),
            title: format!("path patching: sender head → receiver {input}"),
            row_labels: found.senders.iter().map(|s| format!("L{}.H{}", s.layer, s.head)).collect(),
            column_label: format!(
                "receiver head, column {} × (layer − {first}) + head (L{first}.H0 … L{}.H{})",
                found.heads,
                found.layers.saturating_sub(1),
                found.heads.saturating_sub(1)
            ),
            scale_label: scale,
            values,
            max,
        });
    }
    let named = |heads: Vec<(String, f64)>| -> String {
        heads.iter().map(|(name, e)| format!("{name} {e:+.3}")).collect::<Vec<_>>().join(", ")
    };
    let (carrying, opposing) = (named(strongest(found, 5, false)), named(strongest(found, 3, true)));
    let heads = if carrying.is_empty() && opposing.is_empty() {
        String::new()
    } else {
        format!("heads → logits carrying the answer: {carrying}; working against it: {opposing}; ")
    };
    let summary = format!(
        "logit difference clean {:.3}, corrupted {:.3}; {heads}wrote path_patching.json and {} to {}",
        found.baseline.clean,
        found.baseline.corrupted,
        figures.iter().map(|f| format!("{}.png/.svg", f.name())).collect::<Vec<_>>().join(", "),
        out.display()
    );
    StudyOutput::new("path_patching.json", found, figures, summary)
}
