//! What every study run produces — named figures, the JSON of its numbers, a short text summary — and the one
//! writer that puts them on disk (each file atomically), for the study commands and the demo alike.

use std::path::Path;

use serde::Serialize;

use super::{plot, write_json, TopWords};
use crate::error::{Result, VeneError};

/// One figure of a study, drawn as `NAME.png` and `NAME.svg`.
#[derive(Debug, Clone)]
pub enum Figure {
    /// `values[row][column]` in `[0, max]`.
    Heatmap {
        name: String,
        title: String,
        row_labels: Vec<String>,
        column_label: String,
        /// What the values measure, beside the colour bar.
        scale_label: String,
        values: Vec<Vec<f64>>,
        max: f64,
    },
    /// One line per named series along `x_label`.
    Lines { name: String, title: String, x_label: String, series: Vec<(String, Vec<f64>)> },
    /// Points `(x, y)` against `x` on a log scale (from 0), with both axes described.
    Curve { name: String, title: String, x_label: String, y_label: String, points: Vec<(f64, f64)> },
    /// The top words and their probabilities, on a scale to `max`.
    Bars { name: String, title: String, bars: TopWords, max: f64 },
    /// An input with what was found drawn on it (rendered words, a photograph with an effect grid).
    Picture { name: String, picture: super::picture::Picture },
    /// A circuit: its nodes by layer and its edges by score.
    Circuit { name: String, drawing: super::circuit_plot::CircuitDrawing },
}

impl Figure {
    pub fn name(&self) -> &str {
        match self {
            Figure::Heatmap { name, .. }
            | Figure::Lines { name, .. }
            | Figure::Curve { name, .. }
            | Figure::Bars { name, .. }
            | Figure::Picture { name, .. }
            | Figure::Circuit { name, .. } => name,
        }
    }

    fn draw(&self, dir: &Path) -> Result<()> {
        match self {
            Figure::Heatmap { name, title, row_labels, column_label, scale_label, values, max } => {
                let map = plot::Heatmap { title, row_labels, column_label, scale_label, values, max: *max };
                plot::heatmap(dir, name, &map)
            }
            Figure::Lines { name, title, x_label, series } => plot::lines(dir, name, title, x_label, series),
            Figure::Curve { name, title, x_label, y_label, points } => {
                plot::curve(dir, name, title, (x_label, y_label), points)
            }
            Figure::Bars { name, title, bars, max } => plot::bars(dir, name, title, bars, *max),
            Figure::Picture { name, picture } => super::picture::write(dir, name, picture),
            Figure::Circuit { name, drawing } => super::circuit_plot::write(dir, name, drawing),
        }
    }
}

/// A study's result as it is written and reported.
#[derive(Debug, Clone)]
pub struct StudyOutput {
    /// The numbers file, e.g. `trace.json`; `None` for a study whose numbers live in a combined file.
    pub json_name: Option<String>,
    pub json: serde_json::Value,
    pub figures: Vec<Figure>,
    /// A few lines for the terminal and the report.
    pub summary: String,
}

impl StudyOutput {
    /// A study's output with its numbers serialized from `result`.
    pub fn new(json_name: &str, result: &impl Serialize, figures: Vec<Figure>, summary: String) -> Result<Self> {
        let json = serde_json::to_value(result).map_err(|e| VeneError::Config(e.to_string()))?;
        Ok(Self { json_name: Some(json_name.to_string()), json, figures, summary })
    }

    /// A study's output whose numbers go into a combined file (the demo's `results.json`), not a file of their own.
    pub fn combined(result: &impl Serialize, figures: Vec<Figure>, summary: String) -> Result<Self> {
        let json = serde_json::to_value(result).map_err(|e| VeneError::Config(e.to_string()))?;
        Ok(Self { json_name: None, json, figures, summary })
    }

    /// Writes the figures and the JSON into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| VeneError::Io { path: dir.to_path_buf(), source })?;
        for figure in &self.figures {
            figure.draw(dir)?;
        }
        match &self.json_name {
            Some(name) => write_json(dir, name, &self.json),
            None => Ok(()),
        }
    }

    /// The PNG files of the figures, relative to the parent of `subdir` (for a report there).
    pub fn images(&self, subdir: &str) -> Vec<String> {
        self.figures.iter().map(|figure| format!("{subdir}/{}.png", figure.name())).collect()
    }
}

/// `word (0.123), word (0.045), ...`.
pub fn format_top(top: &[(String, f64)]) -> String {
    top.iter().map(|(w, p)| format!("{w} ({p:.3})")).collect::<Vec<_>>().join(", ")
}
