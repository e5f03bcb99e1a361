//! The graph edge attribution works on: the residual stream as a sum of what each component writes into it. Senders
//! are the input embeddings and each layer's attention and MLP (their outputs as added to the residual stream);
//! receivers are each layer's attention and MLP (the residual stream as they read it) and the logits (the final
//! residual stream). Every sender reaches every receiver after it directly, so an edge is a (sender, receiver) pair
//! in that order.
//!
//! With heads as senders (`per_head`), each attention sender is split into what each of its heads writes (the
//! `head_attention_output` site; on Gemma 2/3 each head's share of the normalised output, the norm's scale taken
//! from the whole output), and the heads' edges to a receiver add up to the attention's.
//!
//! Sender `s` and receiver `r` are indexed in stream order: sender 0 is the input, then per layer its attention (or
//! its heads, in order) and its MLP; receiver `2l` is layer l's attention, `2l + 1` its MLP and `2L` the logits.
//! Sender `s` reaches receiver `r` exactly when `first_receiver(s) <= r`.

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
    /// One head of a layer's attention, as a sender.
    Head(usize, usize),
    Mlp(usize),
    Logits,
}

impl Node {
    /// `input`, `a3` (layer 3's attention), `a3.h1` (its head 1), `m3` (its MLP), `logits`.
    pub fn name(self) -> String {
        match self {
            Node::Input => "input".to_string(),
            Node::Attention(layer) => format!("a{layer}"),
            Node::Head(layer, head) => format!("a{layer}.h{head}"),
            Node::Mlp(layer) => format!("m{layer}"),
            Node::Logits => "logits".to_string(),
        }
    }
}

/// The senders and the receivers of a graph of `layers` layers (with `heads` head senders per attention, or one
/// sender per attention), in stream order.
pub fn nodes(layers: usize, heads: Option<usize>) -> (Vec<Node>, Vec<Node>) {
    let attention_senders = |l: usize| match heads {
        Some(heads) => (0..heads).map(|h| Node::Head(l, h)).collect::<Vec<_>>(),
        None => vec![Node::Attention(l)],
    };
    let senders = std::iter::once(Node::Input)
        .chain((0..layers).flat_map(|l| attention_senders(l).into_iter().chain([Node::Mlp(l)])))
        .collect();
    let receivers =
        (0..layers).flat_map(|l| [Node::Attention(l), Node::Mlp(l)]).chain(std::iter::once(Node::Logits)).collect();
    (senders, receivers)
}

/// The sites that hold what each node writes and reads, in this model's naming.
#[derive(Debug, Clone)]
pub struct Graph {
    pub layers: usize,
    /// Each attention's output as added to the residual stream (after Gemma's post-attention norm).
    pub attention_site: String,
    /// Each MLP's output as added to the residual stream.
    pub mlp_site: String,
    /// With heads as senders: the heads per layer (their writes at [`HEAD_SITE`]).
    pub heads: Option<usize>,
    senders: Vec<Node>,
    receivers: Vec<Node>,
}

/// What each head writes into the residual stream, `(b, heads, seq, d)`.
pub const HEAD_SITE: &str = "head_attention_output";

/// The residual stream entering each block, and leaving the last one.
pub const BLOCK_INPUT: &str = "block_input";
pub const BLOCK_OUTPUT: &str = "block_output";

impl Graph {
    /// The graph of `model` (with each head a sender when `per_head`): it must have the residual-stream sites, with
    /// attention and MLP in sequence.
    pub fn of(model: &LoadedModel, per_head: bool) -> Result<Self> {
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
        let heads = match catalog.components.iter().find(|c| c.name.as_str() == HEAD_SITE) {
            _ if !per_head => None,
            Some(_) => Some(catalog.num_heads as usize),
            None => {
                return Err(VeneError::Inputs(format!(
                    "heads as senders need the site {HEAD_SITE} (what each head writes into the residual stream), \
                     which this {} model does not have; drop per_head (--per-head) for one sender per attention layer",
                    catalog.model_type.as_str()
                )))
            }
        };
        match (attention_site, mlp_site, layers) {
            (Some(attention_site), Some(mlp_site), Some(layers)) if layers > 0 => {
                let (senders, receivers) = nodes(layers, heads);
                Ok(Self { layers, attention_site, mlp_site, heads, senders, receivers })
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
        self.senders.len()
    }

    pub fn receiver_count(&self) -> usize {
        self.receivers.len()
    }

    pub fn sender(&self, index: usize) -> Node {
        self.senders[index]
    }

    pub fn receiver(&self, index: usize) -> Node {
        self.receivers[index]
    }

    /// The senders of layer l's attention (its heads, or the attention itself), as sender indices.
    pub fn attention_senders(&self, layer: usize) -> std::ops::Range<usize> {
        let width = self.heads.unwrap_or(1);
        let first = 1 + layer * (width + 1);
        first..first + width
    }

    /// Layer l's MLP as a sender index.
    pub fn mlp_sender(&self, layer: usize) -> usize {
        self.attention_senders(layer).end
    }

    /// The first receiver sender `s` reaches: the input reaches layer 0's attention, an attention (or head) its
    /// layer's MLP, an MLP the next layer's attention.
    pub fn first_receiver(&self, sender: usize) -> usize {
        match self.senders[sender] {
            Node::Input => 0,
            Node::Attention(layer) | Node::Head(layer, _) => 2 * layer + 1,
            Node::Mlp(layer) => 2 * layer + 2,
            Node::Logits => self.receivers.len(),
        }
    }

    /// Every edge as (sender, receiver), senders in stream order and each sender's receivers after it.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        (0..self.sender_count())
            .flat_map(|s| (self.first_receiver(s)..self.receiver_count()).map(move |r| (s, r)))
            .collect()
    }
}
