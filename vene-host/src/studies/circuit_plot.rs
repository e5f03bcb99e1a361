//! A circuit drawn as a graph a reader can follow: one row per layer (input at the bottom, logits at the top), the
//! layer's attention on the left and its MLP on the right, and each kept edge as a curve from sender to receiver,
//! as wide as its score is large, blue where patching it lowers the metric and red where it raises it. Nodes the
//! circuit does not touch are drawn faint, so the layers stay countable.

use std::path::Path;

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    circuit::{Heads, Node, Qkv},
    plot::{ensure_font, write_figure},
};
use crate::error::Result;

/// What a circuit figure shows.
#[derive(Debug, Clone)]
pub struct CircuitDrawing {
    pub title: String,
    pub layers: usize,
    /// A head-level graph's heads per layer (drawn in a row, each receiving at its own box).
    pub heads: Option<Heads>,
    /// The edges drawn: sender, receiver, score.
    pub edges: Vec<(Node, Node, f64)>,
}

/// At most this many edges are drawn (the strongest); more make a figure nobody can follow.
pub const MOST_EDGES_DRAWN: usize = 40;

const ROW: i32 = 34;
const TOP: i32 = 70;
const WIDTH: u32 = 700;
const ATTENTION_X: i32 = 250;
const MLP_X: i32 = 390;
const MIDDLE_X: i32 = 320;
/// The span the heads of a layer share, left of its attention.
const HEADS_LEFT: i32 = 95;
const HEADS_RIGHT: i32 = 205;

fn height(layers: usize) -> u32 {
    (TOP + ROW * (layers as i32 + 2) + 40) as u32
}

/// Horizontal distance between neighbouring heads' centres.
fn head_step(heads: usize) -> i32 {
    (HEADS_RIGHT - HEADS_LEFT) / (heads.max(2) as i32 - 1)
}

/// A node's centre: each layer's MLP sits a little above its attention, as it reads the stream after it.
fn place(node: Node, drawing: &CircuitDrawing) -> (i32, i32) {
    let row_y = |layer: usize| TOP + ROW * (drawing.layers - layer) as i32;
    match node {
        Node::Logits => (MIDDLE_X, TOP),
        Node::Input => (MIDDLE_X, row_y(0) + ROW),
        Node::Attention(layer) => (ATTENTION_X, row_y(layer) + 8),
        Node::Head(layer, head) => (head_x(head as f64, drawing), row_y(layer) + 8),
        // A head receives at its own box; with grouped-query attention the shared key/value heads get boxes of their
        // own in the attention column.
        Node::HeadInput(layer, head, kind) if kind == Qkv::Query || !grouped(drawing.heads) => {
            (head_x(head as f64, drawing), row_y(layer) + 8)
        }
        Node::HeadInput(layer, head, _) => {
            let kv = drawing.heads.map_or(1, |h| h.key_value) as i32;
            (ATTENTION_X + (2 * head as i32 - (kv - 1)) * kv_half(kv), row_y(layer) + 8)
        }
        Node::Mlp(layer) => (MLP_X, row_y(layer) - 8),
    }
}

/// Whether key/value heads are shared by groups of query heads.
fn grouped(heads: Option<Heads>) -> bool {
    heads.is_some_and(|h| h.key_value != h.query)
}

/// Half the width of a key/value head's box when `kv` of them share the attention column.
fn kv_half(kv: i32) -> i32 {
    (40 / kv.max(1)).min(22)
}

/// The centre of query head `head`.
fn head_x(head: f64, drawing: &CircuitDrawing) -> i32 {
    HEADS_LEFT + (head * head_step(drawing.heads.map_or(1, |h| h.query)) as f64).round() as i32
}

/// A node's half width and label: heads get what their row leaves them (their number alone when it is narrow).
fn label(node: Node, heads: Option<Heads>) -> (i32, String) {
    match node {
        Node::Input | Node::Logits => (30, node.name()),
        Node::HeadInput(layer, head, _) => {
            let kv = heads.map_or(1, |h| h.key_value);
            let half = kv_half(kv as i32) - 1;
            (half, if kv == 1 { format!("a{layer}.kv") } else { format!("kv{head}") })
        }
        Node::Head(_, head) => {
            let half = (head_step(heads.map_or(1, |h| h.query)) / 2 - 1).min(20);
            (half, if half >= 15 { node.name() } else { head.to_string() })
        }
        _ => (20, node.name()),
    }
}

/// Points along a quadratic curve from `from` to `to` that bows sideways in proportion to its length, so edges that
/// skip layers pass beside the nodes between instead of through them.
fn curve(from: (i32, i32), to: (i32, i32), bow: f64) -> Vec<(i32, i32)> {
    let (x0, y0, x1, y1) = (from.0 as f64, from.1 as f64, to.0 as f64, to.1 as f64);
    let control = ((x0 + x1) / 2.0 + bow * (y0 - y1).abs() * 0.35, (y0 + y1) / 2.0);
    (0..=24)
        .map(|i| {
            let t = i as f64 / 24.0;
            let x = (1.0 - t).powi(2) * x0 + 2.0 * t * (1.0 - t) * control.0 + t * t * x1;
            let y = (1.0 - t).powi(2) * y0 + 2.0 * t * (1.0 - t) * control.1 + t * t * y1;
            (x.round() as i32, y.round() as i32)
        })
        .collect()
}

/// Writes `stem.png` and `stem.svg` in `dir`.
pub fn write(dir: &Path, stem: &str, drawing: &CircuitDrawing) -> Result<()> {
    ensure_font();
    let size = (WIDTH, height(drawing.layers));
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    write_figure(&png, |to| draw(BitMapBackend::new(to, size).into_drawing_area(), drawing))?;
    write_figure(&svg, |to| draw(SVGBackend::new(to, size).into_drawing_area(), drawing))
}

fn draw<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    drawing: &CircuitDrawing,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    area.draw(&Text::new(drawing.title.as_str(), (12, 10), ("sans-serif", 15)))?;
    let legend = if drawing.heads.is_some() {
        "edge width: |score|; blue: patching lowers the metric, red: raises it; edges into a head reach its q, k or v"
    } else {
        "edge width: |score|; blue: patching the edge lowers the metric, red: raises it"
    };
    area.draw(&Text::new(legend, (12, 32), ("sans-serif", 12)))?;
    let layers = drawing.layers;
    let max = drawing.edges.iter().fold(1e-12f64, |m, e| m.max(e.2.abs()));
    let mut edges = drawing.edges.clone();
    edges.sort_by(|a, b| a.2.abs().total_cmp(&b.2.abs()));
    for (sender, receiver, score) in &edges {
        let bow = match sender {
            // Head to head: into the empty attention column, not off the left edge.
            Node::Head(..) if matches!(receiver, Node::HeadInput(..)) => 0.5,
            Node::Attention(_) | Node::Head(..) => -1.0,
            Node::Mlp(_) => 1.0,
            _ => {
                if matches!(receiver, Node::Attention(_) | Node::HeadInput(..)) {
                    -0.6
                } else {
                    0.6
                }
            }
        };
        let share = score.abs() / max;
        let colour = if *score < 0.0 { RGBColor(40, 90, 200) } else { RGBColor(210, 50, 50) };
        let style = colour.mix(0.35 + 0.6 * share).stroke_width(1 + (6.0 * share).round() as u32);
        area.draw(&PathElement::new(curve(place(*sender, drawing), place(*receiver, drawing), bow), style))?;
    }
    // A head's box also receives its inputs' edges: a node is touched when an edge ends where it is drawn.
    let touched = |node: Node| {
        edges.iter().any(|(s, r, _)| [*s, *r].iter().any(|&end| place(end, drawing) == place(node, drawing)))
    };
    let mut nodes = vec![Node::Input, Node::Logits];
    nodes.extend((0..layers).map(Node::Mlp));
    match drawing.heads {
        Some(heads) => {
            nodes.extend((0..layers).flat_map(|l| (0..heads.query).map(move |h| Node::Head(l, h))));
            if grouped(drawing.heads) {
                nodes.extend(
                    (0..layers).flat_map(|l| (0..heads.key_value).map(move |g| Node::HeadInput(l, g, Qkv::Key))),
                );
            }
        }
        None => nodes.extend((0..layers).map(Node::Attention)),
    }
    for node in nodes {
        let (x, y) = place(node, drawing);
        let (fill, text) =
            if touched(node) { (RGBColor(250, 250, 250), BLACK) } else { (WHITE, RGBColor(190, 190, 190)) };
        let ((w, name), h) = (label(node, drawing.heads), 10);
        area.draw(&Rectangle::new([(x - w, y - h), (x + w, y + h)], fill.filled()))?;
        area.draw(&Rectangle::new([(x - w, y - h), (x + w, y + h)], text.stroke_width(1)))?;
        let centred = ("sans-serif", 11).into_font().color(&text).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(name, (x, y), centred))?;
    }
    for layer in 0..layers {
        let y = TOP + ROW * (layers - layer) as i32;
        area.draw(&Text::new(format!("layer {layer}"), (20, y - 6), ("sans-serif", 11)))?;
    }
    area.present()?;
    Ok(())
}
