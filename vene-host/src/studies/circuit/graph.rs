//! The graph edge attribution works on: the residual stream as a sum of what each component writes into it. Senders
//! are the input embeddings and each layer's attention and MLP (their outputs as added to the residual stream);
//! receivers are each layer's attention and MLP (the residual stream as they read it) and the logits (the final
//! residual stream). Every sender reaches every receiver after it directly, so an edge is a (sender, receiver) pair
//! in that order.
//!
//! Sender `s` and receiver `r` are indexed in stream order: sender 0 is the input, `1 + 2l` layer l's attention,
//! `2 + 2l` its MLP; receiver `2l` is layer l's attention, `2l + 1` its MLP and `2L` the logits. Sender `s` reaches
//! receiver `r` exactly when `s <= r`.

use serde::Serialize;
use vene_api::SiteLayout;

use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
};

/// A node of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Node {
    Input,
    Attention(usize),
    Mlp(usize),
    Logits,
}

impl Node {
    /// `input`, `a3` (layer 3's attention), `m3` (its MLP), `logits`.
    pub fn name(self) -> String {
        match self {
            Node::Input => "input".to_string(),
            Node::Attention(layer) => format!("a{layer}"),
            Node::Mlp(layer) => format!("m{layer}"),
            Node::Logits => "logits".to_string(),
        }
    }
}

/// The senders and the receivers of a graph of `layers` layers, in stream order.
pub fn nodes(layers: usize) -> (Vec<Node>, Vec<Node>) {
    let blocks = || (0..layers).flat_map(|l| [Node::Attention(l), Node::Mlp(l)]);
    (std::iter::once(Node::Input).chain(blocks()).collect(), blocks().chain(std::iter::once(Node::Logits)).collect())
}

/// The sites that hold what each node writes and reads, in this model's naming.
#[derive(Debug, Clone)]
pub struct Graph {
    pub layers: usize,
    /// Each attention's output as added to the residual stream (after Gemma's post-attention norm).
    pub attention_site: String,
    /// Each MLP's output as added to the residual stream.
    pub mlp_site: String,
}

/// The residual stream entering each block, and leaving the last one.
pub const BLOCK_INPUT: &str = "block_input";
pub const BLOCK_OUTPUT: &str = "block_output";

impl Graph {
    /// The graph of `model`: it must have the residual-stream sites, with attention and MLP in sequence.
    pub fn of(model: &LoadedModel) -> Result<Self> {
        let catalog = model.catalog();
        if catalog.model_type.as_str() == "gpt_neox" {
            return Err(VeneError::Inputs(
                "edge attribution models each MLP as reading the residual stream after its layer's attention; \
                 GPT-NeoX (Pythia) runs the two in parallel on the same input, which this graph does not describe"
                    .to_string(),
            ));
        }
        let sequence = |name: &str| {
            catalog.components.iter().find(|c| c.name.as_str() == name && c.layout == SiteLayout::Sequence)
        };
        let first = |names: &[&str]| names.iter().find(|n| sequence(n).is_some()).map(|n| n.to_string());
        let attention_site = first(&["attention_post_norm_output", "attention_output"]);
        let mlp_site = first(&["mlp_post_norm_output", "mlp_output"]);
        let layers = sequence(BLOCK_INPUT).zip(sequence(BLOCK_OUTPUT)).map(|(c, _)| c.layers as usize);
        match (attention_site, mlp_site, layers) {
            (Some(attention_site), Some(mlp_site), Some(layers)) if layers > 0 => {
                Ok(Self { layers, attention_site, mlp_site })
            }
            _ => Err(VeneError::Inputs(format!(
                "edge attribution needs the residual-stream sites {BLOCK_INPUT}, attention_output, mlp_output and \
                 {BLOCK_OUTPUT}; this {} model has {}",
                catalog.model_type.as_str(),
                catalog.component_names().join(", ")
            ))),
        }
    }

    pub fn sender_count(&self) -> usize {
        2 * self.layers + 1
    }

    pub fn receiver_count(&self) -> usize {
        2 * self.layers + 1
    }

    pub fn sender(&self, index: usize) -> Node {
        match index {
            0 => Node::Input,
            i if i % 2 == 1 => Node::Attention((i - 1) / 2),
            i => Node::Mlp((i - 2) / 2),
        }
    }

    pub fn receiver(&self, index: usize) -> Node {
        match index {
            i if i == 2 * self.layers => Node::Logits,
            i if i % 2 == 0 => Node::Attention(i / 2),
            i => Node::Mlp(i / 2),
        }
    }

    /// Every edge as (sender, receiver), senders in stream order and each sender's receivers after it.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        (0..self.sender_count()).flat_map(|s| (s..self.receiver_count()).map(move |r| (s, r))).collect()
    }
}
