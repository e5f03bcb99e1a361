//! The graph edge attribution works on: the residual stream as a sum of what each component writes into it. Senders
//! are the input embeddings and each layer's attention and MLP (their outputs as added to the residual stream);
//! receivers are each layer's attention and MLP (the residual stream as they read it) and the logits (the final
//! residual stream). Every sender reaches every receiver after it directly, so an edge is a (sender, receiver) pair
//! in that order.
//!
//! The head-level graph (`per_head`) splits each attention into its heads, as senders and as receivers. A head sends
//! what it writes (the `head_attention_output` site; on Gemma 2/3 its share of the normalised output, the norm's scale
//! taken from the whole output); it receives through its query, key and value inputs, each its own copy of the
//! residual stream (the `head_query_input`, `head_key_input` and `head_value_input` sites; with grouped-query
//! attention one key and one value input per key/value head). The heads' edges add up to their layer's: the
//! attention's input feeds every copy, and the heads' writes sum to the attention's.
//!
//! Sender `s` and receiver `r` are indexed in stream order: sender 0 is the input, then per layer its attention (or
//! its heads, in order) and its MLP; receivers per layer its attention (or its heads' query, key and value inputs)
//! and its MLP, then the logits. Sender `s` reaches receiver `r` exactly when `first_receiver(s) <= r`.

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
    /// One head's query, key or value input, as a receiver (key and value: per key/value head).
    HeadInput(usize, usize, Qkv),
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
            Node::HeadInput(layer, head, input) => format!("a{layer}.h{head}.{}", input.letter()),
            Node::Mlp(layer) => format!("m{layer}"),
            Node::Logits => "logits".to_string(),
        }
    }
}

/// Which input of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Qkv {
    Query,
    Key,
    Value,
}

impl Qkv {
    pub const ALL: [Qkv; 3] = [Qkv::Query, Qkv::Key, Qkv::Value];

    pub fn letter(self) -> char {
        match self {
            Qkv::Query => 'q',
            Qkv::Key => 'k',
            Qkv::Value => 'v',
        }
    }

    /// The site holding the heads' copies of the residual stream for this input.
    pub fn site(self) -> &'static str {
        match self {
            Qkv::Query => "head_query_input",
            Qkv::Key => "head_key_input",
            Qkv::Value => "head_value_input",
        }
    }
}

/// Heads per layer in a head-level graph: query heads, and key/value heads (fewer with grouped-query attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heads {
    pub query: usize,
    pub key_value: usize,
}

impl Heads {
    /// The heads with an input of `kind`.
    pub fn of(self, kind: Qkv) -> usize {
        if kind == Qkv::Query {
            self.query
        } else {
            self.key_value
        }
    }
}

/// The senders and the receivers of a graph of `layers` layers (head-level with `heads`), in stream order.
pub fn nodes(layers: usize, heads: Option<Heads>) -> (Vec<Node>, Vec<Node>) {
    let attention_senders = |l: usize| match heads {
        Some(heads) => (0..heads.query).map(|h| Node::Head(l, h)).collect::<Vec<_>>(),
        None => vec![Node::Attention(l)],
    };
    let attention_receivers = |l: usize| match heads {
        Some(heads) => Qkv::ALL
            .into_iter()
            .flat_map(|kind| (0..heads.of(kind)).map(move |h| Node::HeadInput(l, h, kind)))
            .collect(),
        None => vec![Node::Attention(l)],
    };
    let senders = std::iter::once(Node::Input)
        .chain((0..layers).flat_map(|l| attention_senders(l).into_iter().chain([Node::Mlp(l)])))
        .collect();
    let receivers = (0..layers)
        .flat_map(|l| attention_receivers(l).into_iter().chain([Node::Mlp(l)]))
        .chain(std::iter::once(Node::Logits))
        .collect();
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
    /// A head-level graph's heads per layer (their writes at [`HEAD_SITE`], their inputs at [`Qkv::site`]).
    pub heads: Option<Heads>,
    senders: Vec<Node>,
    receivers: Vec<Node>,
}

/// What each head writes into the residual stream, `(b, heads, seq, d)`.
pub const HEAD_SITE: &str = "head_attention_output";

/// The residual stream entering each block, and leaving the last one.
pub const BLOCK_INPUT: &str = "block_input";
pub const BLOCK_OUTPUT: &str = "block_output";

impl Graph {
    /// The graph of `model` (head-level when `per_head`): it must have the residual-stream sites, with attention and
    /// MLP in sequence.
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
        let heads = if per_head { Some(head_counts(catalog)?) } else { None };
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
        let width = self.heads.map_or(1, |h| h.query);
        let first = 1 + layer * (width + 1);
        first..first + width
    }

    /// Layer l's MLP as a sender index.
    pub fn mlp_sender(&self, layer: usize) -> usize {
        self.attention_senders(layer).end
    }

    /// Receivers per layer: its attention's (one, or each head's query, key and value inputs) and its MLP.
    fn receivers_per_layer(&self) -> usize {
        1 + self.heads.map_or(1, |h| h.query + 2 * h.key_value)
    }

    /// Layer l's attention receivers (the attention, or its heads' query inputs, then key, then value inputs).
    pub fn attention_receivers(&self, layer: usize) -> std::ops::Range<usize> {
        let first = layer * self.receivers_per_layer();
        first..first + self.receivers_per_layer() - 1
    }

    /// A head-level graph's receivers for layer l's `kind` inputs, one per head.
    pub fn input_receivers(&self, layer: usize, kind: Qkv) -> std::ops::Range<usize> {
        let heads = self.heads.unwrap_or(Heads { query: 0, key_value: 0 });
        let before: usize = Qkv::ALL.iter().take_while(|&&k| k != kind).map(|&k| heads.of(k)).sum();
        let first = self.attention_receivers(layer).start + before;
        first..first + heads.of(kind)
    }

    /// Layer l's MLP as a receiver index.
    pub fn mlp_receiver(&self, layer: usize) -> usize {
        self.attention_receivers(layer).end
    }

    /// The first receiver sender `s` reaches: the input reaches layer 0's attention, an attention (or head) its
    /// layer's MLP, an MLP the next layer's attention.
    pub fn first_receiver(&self, sender: usize) -> usize {
        match self.senders[sender] {
            Node::Input => 0,
            Node::Attention(layer) | Node::Head(layer, _) => self.mlp_receiver(layer),
            Node::Mlp(layer) => self.mlp_receiver(layer) + 1,
            Node::HeadInput(..) | Node::Logits => self.receivers.len(),
        }
    }

    /// Every edge as (sender, receiver), senders in stream order and each sender's receivers after it.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        (0..self.sender_count())
            .flat_map(|s| (self.first_receiver(s)..self.receiver_count()).map(move |r| (s, r)))
            .collect()
    }
}

/// A head-level graph's head counts, from the sites it needs: query heads from the catalog, key/value heads from the
/// key projection's width over a head's.
fn head_counts(catalog: &vene_api::ModelCatalog) -> Result<Heads> {
    let dim = |name: &str| catalog.components.iter().find(|c| c.name.as_str() == name).map(|c| c.dim as usize);
    let needed = [HEAD_SITE, "head_query_input", "head_key_input", "head_value_input"];
    let missing: Vec<&str> = needed.iter().copied().filter(|name| dim(name).is_none()).collect();
    match (missing.is_empty(), dim("key_output"), dim("head_key_output")) {
        (true, Some(key_width), Some(head_dim)) if head_dim > 0 => {
            Ok(Heads { query: catalog.num_heads as usize, key_value: key_width / head_dim })
        }
        _ => Err(VeneError::Inputs(format!(
            "a head-level graph needs the sites {} (what each head writes, and each head's query, key and value \
             input), key_output and head_key_output; this {} model lacks {}: drop per_head (--per-head) for one node \
             per attention layer",
            needed.join(", "),
            catalog.model_type.as_str(),
            if missing.is_empty() { "key_output or head_key_output".to_string() } else { missing.join(", ") }
        ))),
    }
}
