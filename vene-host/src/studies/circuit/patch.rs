//! Exact edge patching: the clean prompts run with every edge outside a circuit patched from the corrupted run.
//! Receiver v then reads `x_v − Σ_{u → v removed} (c_u − c_u,corrupted)`, where `c_u` is what sender u writes in
//! this same run (so a sender downstream of patched edges passes their effect on), as ACDC and EAP's evaluations do.
//!
//! Each receiver's correction is subtracted where its input leaves the shared stream and added back where the
//! stream continues: at layer l's block input (for its attention), where the attention's output joins (added back;
//! the MLP's correction subtracted) and at the MLP's output (added back); the last block's output carries the logits'
//! correction. One stateful intervention per site, sharing what the senders wrote so far in the pass. In a
//! head-level graph each head's query, key and value input is its own copy of the stream, so its correction is
//! taken off that copy and never put back; the heads' shares are recorded at their site, where the MLP's correction
//! is spread evenly over them (their sum is what joins the stream).

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;
use tch::Tensor;
use vene_api::{Intervention, InterventionTraits, PluginResult};

use super::graph::{Graph, Qkv, BLOCK_INPUT, BLOCK_OUTPUT, HEAD_SITE};
use crate::{
    engine::IntervenableModel,
    error::Result,
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    studies::{attribution::AttributionInputs, attribution::Metric, bind},
    train::last_logits,
};

/// What the interventions of one pass share.
struct Shared {
    /// Each sender's output on the corrupted prompts.
    corrupted: Vec<Tensor>,
    /// Per receiver, the senders whose edge to it is patched.
    removed: Vec<Vec<usize>>,
    /// Each sender's output in the current pass, once it has run.
    current: Vec<Option<Tensor>>,
    /// Per receiver, the correction taken off the stream and not yet put back.
    pending: Vec<Option<Tensor>>,
}

impl Shared {
    /// `Σ (c_u − c_u,corrupted)` over the senders patched out of `receiver`; `None` when none is.
    fn correction(&self, receiver: usize) -> Option<Tensor> {
        let mut sum: Option<Tensor> = None;
        // Every sender runs before its receivers (the graph's order), so `current` holds it here.
        for &sender in &self.removed[receiver] {
            if let Some(current) = &self.current[sender] {
                let difference = current - &self.corrupted[sender];
                sum = Some(match sum {
                    None => difference,
                    Some(sum) => sum + difference,
                });
            }
        }
        sum
    }
}

/// Where an [`EdgePatch`] sits: the site decides which sender it records and which corrections it moves.
#[derive(Clone)]
enum Role {
    /// A block's input: records the input sender (`records_input`, layer 0) and, for a layer-level attention
    /// `receiver`, takes its correction off the stream.
    BlockInput {
        records_input: bool,
        receiver: Option<usize>,
    },
    /// The heads' own copies of the stream for one input kind `(b, heads, s, d)`: each head's correction taken off
    /// its copy (`receivers`, one per head).
    HeadInputs {
        receivers: std::ops::Range<usize>,
    },
    /// An attention's output as it joins the stream: records its senders (the attention, or its heads
    /// `(b, h, s, d)`), puts a layer-level attention receiver's correction back and takes the MLP's off.
    Attention {
        senders: std::ops::Range<usize>,
        heads: bool,
        attention_receiver: Option<usize>,
        mlp_receiver: usize,
    },
    /// An MLP's output: records its sender and puts its own correction back.
    Mlp {
        sender: usize,
        receiver: usize,
    },
    LastOutput,
}

struct EdgePatch {
    role: Role,
    shared: Arc<Mutex<Shared>>,
}

impl Intervention for EdgePatch {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits::default()
    }

    fn apply(&mut self, base: &Tensor, _: Option<&Tensor>, _: Option<&[Vec<i64>]>) -> PluginResult<Tensor> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = &mut *shared;
        let minus = |base: Tensor, correction: &Option<Tensor>| match correction {
            Some(c) => base - c,
            None => base,
        };
        let plus = |base: Tensor, correction: Option<Tensor>| match correction {
            Some(c) => base + c,
            None => base,
        };
        let output = match self.role {
            Role::BlockInput { records_input, receiver } => {
                if records_input {
                    shared.current[0] = Some(base.shallow_clone());
                }
                match receiver {
                    Some(receiver) => {
                        let correction = shared.correction(receiver);
                        let output = minus(base.shallow_clone(), &correction);
                        shared.pending[receiver] = correction;
                        output
                    }
                    None => base.shallow_clone(),
                }
            }
            Role::HeadInputs { ref receivers } => {
                let corrections: Vec<Tensor> = receivers
                    .clone()
                    .enumerate()
                    .map(|(head, r)| shared.correction(r).unwrap_or_else(|| base.select(1, head as i64).zeros_like()))
                    .collect();
                base - Tensor::stack(&corrections, 1)
            }
            Role::Attention { ref senders, heads, attention_receiver, mlp_receiver } => {
                let per_head = if heads { base.size()[1] } else { 1 };
                for (head, sender) in senders.clone().enumerate() {
                    shared.current[sender] =
                        Some(if heads { base.select(1, head as i64) } else { base.shallow_clone() });
                }
                let back = attention_receiver.and_then(|r| shared.pending[r].take());
                let correction = shared.correction(mlp_receiver);
                // The heads' shares add up to what joins the stream: each takes an equal part of the correction.
                let spread = |c: Tensor| if heads { c.unsqueeze(1) / per_head as f64 } else { c };
                let output = minus(
                    plus(base.shallow_clone(), back.map(spread)),
                    &correction.as_ref().map(|c| spread(c.shallow_clone())),
                );
                shared.pending[mlp_receiver] = correction;
                output
            }
            Role::Mlp { sender, receiver } => {
                shared.current[sender] = Some(base.shallow_clone());
                let back = shared.pending[receiver].take();
                plus(base.shallow_clone(), back)
            }
            Role::LastOutput => {
                let correction = shared.correction(shared.removed.len() - 1);
                minus(base.shallow_clone(), &correction)
            }
        };
        Ok(output)
    }
}

/// A model bound for circuit runs, with the corrupted sender outputs they patch from: evaluates any set of kept
/// edges of its [`Graph`] exactly.
pub struct EdgePatching {
    model: IntervenableModel,
    shared: Arc<Mutex<Shared>>,
    edges: Vec<(usize, usize)>,
}

impl EdgePatching {
    /// Collects the senders' outputs on the corrupted prompts and binds the edge patches.
    pub fn new(
        model: LoadedModel,
        plugins: &PluginSet,
        inputs: &AttributionInputs,
        metric: Metric,
        per_head: bool,
    ) -> Result<Self> {
        let graph = Graph::of(&model, per_head)?;
        inputs.prepare(&model, metric)?;
        let (corrupted, _, model) =
            super::score::sender_outputs(model, plugins, &graph, (&inputs.corrupted, inputs), metric)?;
        Self::with_corrupted(model, plugins, &graph, corrupted)
    }

    /// Binds the edge patches to patch from `corrupted` (each sender's output, in sender order).
    pub(super) fn with_corrupted(
        model: LoadedModel,
        plugins: &PluginSet,
        graph: &Graph,
        corrupted: Vec<Tensor>,
    ) -> Result<Self> {
        let placeholder = json!({"type": "zero"});
        let rep = |component: &str, layer: usize, unit: &str| json!({"layer": layer, "component": component, "unit": unit, "intervention": placeholder});
        let heads = graph.heads.is_some();
        let (attention_site, attention_unit) =
            if heads { (HEAD_SITE, "h") } else { (graph.attention_site.as_str(), "pos") };
        let mut reps = Vec::new();
        let mut roles = Vec::new();
        for layer in 0..graph.layers {
            let attention_receiver = (!heads).then(|| graph.attention_receivers(layer).start);
            if layer == 0 || !heads {
                reps.push(rep(BLOCK_INPUT, layer, "pos"));
                roles.push(Role::BlockInput { records_input: layer == 0, receiver: attention_receiver });
            }
            if heads {
                for kind in Qkv::ALL {
                    reps.push(rep(kind.site(), layer, "h"));
                    roles.push(Role::HeadInputs { receivers: graph.input_receivers(layer, kind) });
                }
            }
            let mlp_receiver = graph.mlp_receiver(layer);
            reps.extend([rep(attention_site, layer, attention_unit), rep(&graph.mlp_site, layer, "pos")]);
            roles.extend([
                Role::Attention { senders: graph.attention_senders(layer), heads, attention_receiver, mlp_receiver },
                Role::Mlp { sender: graph.mlp_sender(layer), receiver: mlp_receiver },
            ]);
        }
        reps.push(rep(BLOCK_OUTPUT, graph.layers - 1, "pos"));
        roles.push(Role::LastOutput);
        let shared = Arc::new(Mutex::new(Shared {
            current: corrupted.iter().map(|_| None).collect(),
            corrupted,
            removed: vec![Vec::new(); graph.receiver_count()],
            pending: (0..graph.receiver_count()).map(|_| None).collect(),
        }));
        let mut model = bind(model, plugins, json!({ "representations": reps }))?;
        for (index, role) in roles.into_iter().enumerate() {
            model.replace_intervention(index, Box::new(EdgePatch { role, shared: Arc::clone(&shared) }))?;
        }
        Ok(Self { model, shared, edges: graph.edges() })
    }

    /// The graph's edges as (sender, receiver) indices, in the order `kept` follows.
    pub fn edges(&self) -> &[(usize, usize)] {
        &self.edges
    }

    /// The metric on the clean prompts with only the edges `kept[i]` (indexing [`Self::edges`]) left clean.
    pub fn metric(&mut self, inputs: &AttributionInputs, kept: &[bool], metric: Metric) -> Result<f64> {
        if kept.len() != self.edges.len() {
            return Err(crate::error::VeneError::Inputs(format!(
                "{} kept flags for a graph of {} edges",
                kept.len(),
                self.edges.len()
            )));
        }
        {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            shared.removed.iter_mut().for_each(Vec::clear);
            for (&(sender, receiver), &keep) in self.edges.iter().zip(kept) {
                if !keep {
                    shared.removed[receiver].push(sender);
                }
            }
            shared.current.iter_mut().for_each(|c| *c = None);
            shared.pending.iter_mut().for_each(|p| *p = None);
        }
        let _no_grad = tch::no_grad_guard();
        let run = self.model.run(&inputs.clean, &[], &UnitLocations::whole(), &Subspaces::None)?;
        let logits = last_logits(&run.output, inputs.clean.attention_mask.as_ref());
        Ok(metric.of(&logits, inputs)?.double_value(&[]))
    }

    pub fn into_model(self) -> LoadedModel {
        self.model.into_model()
    }
}
