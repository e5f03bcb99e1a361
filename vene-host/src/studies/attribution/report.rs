//! What an attribution writes: a heatmap per component (layers × positions; heads × positions per layer for
//! per-head components), the scores as tensors, and a summary of the estimate against exact patching.

use tch::Tensor;

use super::{Attribution, ComponentScores};
use crate::{
    error::Result,
    studies::output::{Figure, StudyOutput},
};

/// Writes `attribution_scores.safetensors` (see [`scores_tensors`]) into `dir`.
pub fn write_scores(result: &Attribution, dir: &std::path::Path) -> Result<()> {
    Ok(vene_checkpoint::save_safetensors(&dir.join("attribution_scores.safetensors"), &scores_tensors(result))?)
}

/// One tensor per component: `(layers, positions)`, or `(layers, heads, positions)` per head; with `verify_all`
/// also `<component>.exact`, every node's exact effect, and with GradDrop `<component>.grad_drop`.
pub fn scores_tensors(result: &Attribution) -> Vec<(String, Tensor)> {
    let shaped = |c: &ComponentScores, grid: &[Vec<Vec<f64>>]| {
        let flat: Vec<f64> = grid.iter().flatten().flatten().copied().collect();
        let (layers, heads, positions) = (grid.len() as i64, c.heads as i64, c.positions as i64);
        let tensor = Tensor::from_slice(&flat);
        if c.per_head {
            tensor.view([layers, heads, positions])
        } else {
            tensor.view([layers, positions])
        }
    };
    let mut tensors = Vec::new();
    for c in &result.components {
        tensors.push((c.component.clone(), shaped(c, &c.scores)));
        if let Some(exact) = &c.exact {
            tensors.push((format!("{}.exact", c.component), shaped(c, exact)));
        }
        if let Some(grad_drop) = &c.grad_drop {
            tensors.push((format!("{}.grad_drop", c.component), shaped(c, grad_drop)));
        }
    }
    tensors
}

/// A heatmap of `grid` (estimates or exact effects) of `component`: a row per layer, or per layer and head.
fn heatmap(result: &Attribution, component: &ComponentScores, grid: &[Vec<Vec<f64>>], exact: bool) -> Figure {
    let (row_labels, values): (Vec<String>, Vec<Vec<f64>>) = grid
        .iter()
        .enumerate()
        .flat_map(|(layer, heads)| {
            heads.iter().enumerate().map(move |(head, row)| {
                let label = if component.per_head { format!("L{layer}.H{head}") } else { format!("layer {layer}") };
                (label, row.clone())
            })
        })
        .unzip();
    let max = values.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let (name, title, scale) = if exact {
        (
            format!("exact_{}", component.component),
            format!("exact patching of {} ({})", component.component, result.metric),
            "change of the metric",
        )
    } else {
        (
            format!("attribution_{}", component.component),
            format!("{} estimate of patching {} ({})", result.method, component.component, result.metric),
            "estimated change of the metric",
        )
    };
    Figure::Heatmap {
        name,
        title,
        row_labels,
        column_label: format!("position ({})", result.tokens.join(" ")),
        scale_label: scale.to_string(),
        values,
        max,
    }
}

impl Attribution {
    pub fn figures(&self) -> Vec<Figure> {
        let mut figures = Vec::new();
        for c in &self.components {
            figures.push(heatmap(self, c, &c.scores, false));
            if let Some(exact) = &c.exact {
                figures.push(heatmap(self, c, exact, true));
            }
        }
        if !self.verified.is_empty() {
            let series = vec![
                ("estimate".to_string(), self.verified.iter().map(|v| v.estimate).collect()),
                ("exact patching".to_string(), self.verified.iter().map(|v| v.exact).collect()),
            ];
            figures.push(Figure::Lines {
                name: "attribution_verified".to_string(),
                title: "verified nodes: estimate and exact effect (top by |estimate|, then random)".to_string(),
                x_label: "verified node".to_string(),
                series,
            });
        }
        figures
    }

    pub fn summary(&self) -> String {
        let mut lines = vec![format!(
            "{} on {} prompts: {} clean {:.4}, corrupted {:.4}",
            self.method, self.prompts, self.metric, self.clean, self.corrupted
        )];
        for v in self.verified.iter().filter(|v| v.chosen == "top").take(10) {
            let head = v.head.map_or(String::new(), |h| format!(".H{h}"));
            lines.push(format!(
                "{} L{}{head} @ {} ({}): estimate {:+.4}, exact {:+.4}",
                v.component,
                v.layer,
                v.position,
                self.tokens.get(v.position).map_or("", String::as_str),
                v.estimate,
                v.exact
            ));
        }
        let correlation = |value: Option<f64>| value.map_or("n/a".to_string(), |r| format!("{r:.3}"));
        lines.push(format!(
            "rank correlation of estimate and exact: {} over the {} verified nodes{}",
            correlation(self.rank_correlation_verified),
            self.verified.len(),
            self.rank_correlation_all.map_or(String::new(), |r| format!(", {r:.3} over every node"))
        ));
        lines.join("\n")
    }

    pub fn output(&self, json_name: &str) -> Result<StudyOutput> {
        StudyOutput::new(json_name, self, self.figures(), self.summary())
    }
}
