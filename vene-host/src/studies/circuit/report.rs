//! What a circuit search writes: the faithfulness curve, the edges patched alone beside their scores, the circuit as
//! a graph figure, every edge's score as a `(senders, receivers)` tensor, and a summary.

use tch::Tensor;

use super::{graph, Circuit, Heads, Node};
use crate::{
    error::Result,
    studies::{
        circuit_plot::{CircuitDrawing, MOST_EDGES_DRAWN},
        output::{Figure, StudyOutput},
    },
};

/// Every node name in stream order, senders then receivers as the tensor's axes index them.
fn axis_names(layers: usize, heads: Option<Heads>) -> (Vec<String>, Vec<String>) {
    let (senders, receivers) = graph::nodes(layers, heads);
    let names = |nodes: Vec<Node>| nodes.into_iter().map(Node::name).collect();
    (names(senders), names(receivers))
}

impl Circuit {
    /// `scores` `(senders, receivers)` in stream order (zero where a receiver comes before its sender) and, where
    /// edges were patched alone, `exact` (NaN elsewhere).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let (senders, receivers) = axis_names(self.layers, self.heads);
        let (s, r) = (senders.len(), receivers.len());
        let mut scores = vec![0.0f64; s * r];
        let mut exact = vec![f64::NAN; s * r];
        for edge in &self.edges {
            let i = senders.iter().position(|n| *n == edge.sender).unwrap_or(0);
            let j = receivers.iter().position(|n| *n == edge.receiver).unwrap_or(0);
            scores[i * r + j] = edge.score;
            if let Some(value) = edge.exact {
                exact[i * r + j] = value;
            }
        }
        let shaped = |values: &[f64]| Tensor::from_slice(values).view([s as i64, r as i64]);
        vec![("scores".to_string(), shaped(&scores)), ("exact".to_string(), shaped(&exact))]
    }

    /// Writes `circuit_scores.safetensors` into `dir`.
    pub fn write_scores(&self, dir: &std::path::Path) -> Result<()> {
        Ok(vene_checkpoint::save_safetensors(&dir.join("circuit_scores.safetensors"), &self.tensors())?)
    }

    pub fn figures(&self) -> Vec<Figure> {
        let mut figures = vec![Figure::Curve {
            name: "circuit_faithfulness".to_string(),
            title: format!("share of the {} recovered by the top-n edges ({})", self.metric, self.method),
            x_label: format!("edges kept (of {}, by |score|)", self.edges.len()),
            y_label: "faithfulness".to_string(),
            points: self.curve.iter().map(|p| (p.edges as f64, p.faithfulness)).collect(),
        }];
        let verified: Vec<_> = self.edges.iter().filter(|e| e.exact.is_some()).collect();
        if !verified.is_empty() {
            figures.push(Figure::Lines {
                name: "circuit_verified".to_string(),
                title: "edges patched alone: score and exact effect (by |score|)".to_string(),
                x_label: "edge".to_string(),
                series: vec![
                    ("score".to_string(), verified.iter().map(|e| e.score).collect()),
                    ("exact patching".to_string(), verified.iter().filter_map(|e| e.exact).collect()),
                ],
            });
        }
        figures.push(Figure::Circuit { name: "circuit".to_string(), drawing: self.drawing() });
        figures
    }

    /// The drawn circuit: its top edges by |score|.
    fn drawing(&self) -> CircuitDrawing {
        let (senders, receivers) = graph::nodes(self.layers, self.heads);
        let find = |nodes: &[Node], name: &str| nodes.iter().copied().find(|n| n.name() == name);
        let edges = self
            .edges
            .iter()
            .take(self.circuit.edges.min(MOST_EDGES_DRAWN))
            .filter_map(|e| Some((find(&senders, &e.sender)?, find(&receivers, &e.receiver)?, e.score)))
            .collect();
        let shown = if self.circuit.edges > MOST_EDGES_DRAWN {
            format!("the strongest {MOST_EDGES_DRAWN} of a circuit of {} edges", self.circuit.edges)
        } else {
            format!("a circuit of {} edges", self.circuit.edges)
        };
        CircuitDrawing {
            title: format!(
                "{shown} ({}), which recovers {:.0}% of the {}",
                self.method,
                100.0 * self.circuit.faithfulness,
                self.metric
            ),
            layers: self.layers,
            heads: self.heads,
            edges,
        }
    }

    pub fn summary(&self) -> String {
        let total = self.edges.len();
        let mut lines = vec![format!(
            "{} over {total} edges on {} prompts: {} clean {:.4}, corrupted {:.4}",
            self.method, self.prompts, self.metric, self.clean, self.corrupted
        )];
        for edge in self.edges.iter().filter(|e| e.chosen.as_deref() == Some("top")).take(10) {
            lines.push(format!(
                "{} → {}: score {:+.4}, exact {:+.4}",
                edge.sender,
                edge.receiver,
                edge.score,
                edge.exact.unwrap_or(f64::NAN)
            ));
        }
        let correlation = |value: Option<f64>| value.map_or("n/a".to_string(), |r| format!("{r:.3}"));
        lines.push(format!(
            "rank correlation of score and exact effect: {} over the edges patched alone{}",
            correlation(self.rank_correlation_verified),
            self.rank_correlation_all.map_or(String::new(), |r| format!(", {r:.3} over every edge"))
        ));
        let curve: Vec<String> = self.curve.iter().map(|p| format!("{}: {:.2}", p.edges, p.faithfulness)).collect();
        lines.push(format!("faithfulness by edges kept: {}", curve.join(", ")));
        lines.push(format!(
            "circuit drawn: the top {} edges recover {:.3} ({} {:.4})",
            self.circuit.edges, self.circuit.faithfulness, self.metric, self.circuit.metric
        ));
        lines.join("\n")
    }

    pub fn output(&self, json_name: &str) -> Result<StudyOutput> {
        StudyOutput::new(json_name, self, self.figures(), self.summary())
    }
}
