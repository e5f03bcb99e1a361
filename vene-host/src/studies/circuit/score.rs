//! Edge attribution patching (EAP, Syed et al. 2023) and its integrated-gradients form (EAP-IG, Hanna et al. 2024):
//! edge (u, v) scores `(c_u,corrupted − c_u,clean) · ∂metric/∂x_v`, where `c_u` is what sender u writes into the
//! residual stream and `x_v` the residual stream as receiver v alone reads it.
//!
//! The models read the residual stream through a norm inside one site, so `x_v` is made a separate copy by taps
//! that cancel: a zero tensor `a_l` is added at layer l's block input and subtracted again where the attention's
//! output joins the stream, so it reaches the attention's input and nothing else; `b_l` is added there and
//! subtracted at the MLP's output, reaching only the MLP's input; `r` is added to the last block's output, read only
//! by the logits. One backward gives every receiver's gradient, and all edge scores are one matrix product.

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use super::graph::{Graph, Qkv, BLOCK_INPUT, BLOCK_OUTPUT, HEAD_SITE};
use crate::{
    engine::IntervenableModel,
    error::Result,
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    studies::{
        attribution::{gradient_of, AttributionInputs, Metric},
        bind,
    },
    train::last_logits,
};

/// A representation of the whole sequence at `component` of `layer`.
fn whole(component: &str, layer: usize, intervention: Value) -> Value {
    json!({"layer": layer, "component": component, "unit": "pos", "intervention": intervention})
}

/// Collecting representations of every sender, in sender order (one for all the heads of a layer).
pub(super) fn sender_collectors(graph: &Graph) -> Vec<Value> {
    let collect = json!({"type": "collect"});
    let mut reps = vec![whole(BLOCK_INPUT, 0, collect.clone())];
    for layer in 0..graph.layers {
        if graph.heads.is_some() {
            reps.push(json!({"layer": layer, "component": HEAD_SITE, "unit": "h", "intervention": collect}));
        } else {
            reps.push(whole(&graph.attention_site, layer, collect.clone()));
        }
        reps.push(whole(&graph.mlp_site, layer, collect.clone()));
    }
    reps
}

/// The collected sites split into one `(b, seq, d)` tensor per sender: a layer's heads `(b, heads, seq, d)` apart.
fn per_sender(graph: &Graph, collected: Vec<Tensor>) -> Vec<Tensor> {
    let mut senders = Vec::with_capacity(graph.sender_count());
    for (index, tensor) in collected.into_iter().enumerate() {
        let is_heads = graph.heads.is_some() && index % 2 == 1;
        if is_heads {
            senders.extend((0..tensor.size()[1]).map(|h| tensor.select(1, h)));
        } else {
            senders.push(tensor);
        }
    }
    senders
}

/// What every sender writes into the residual stream on `inputs` (in sender order, `(b, seq, d)` each), and the
/// metric there.
pub(super) fn sender_outputs(
    model: LoadedModel,
    plugins: &PluginSet,
    graph: &Graph,
    inputs: (&crate::model::ForwardInputs, &AttributionInputs),
    metric: Metric,
) -> Result<(Vec<Tensor>, f64, LoadedModel)> {
    let _no_grad = tch::no_grad_guard();
    let mut collector = bind(model, plugins, json!({ "representations": sender_collectors(graph) }))?;
    let run = collector.run(inputs.0, &[], &UnitLocations::whole(), &Subspaces::None)?;
    let logits = last_logits(&run.output, inputs.0.attention_mask.as_ref());
    let value = metric.of(&logits, inputs.1)?.double_value(&[]);
    Ok((per_sender(graph, run.collected), value, collector.into_model()))
}

/// The taps of the module docs, in representation order: per layer its block input (`a_l`, or with `interpolate`
/// for layer 0 the embeddings replaced by a source that carries `a_0`), its attention output (`b_l − a_l`) and its
/// MLP output (`−b_l`); then the last block's output (`r`). A head-level graph's attention receivers are the heads'
/// own copies of the stream: a zero added to each (query, key and value inputs) replaces `a_l`, and with
/// `interpolate` the embeddings are replaced first.
fn taps(graph: &Graph, interpolate: bool) -> Vec<Value> {
    let addition = json!({"type": "addition"});
    let mut reps = Vec::new();
    if graph.heads.is_some() && interpolate {
        reps.push(whole(BLOCK_INPUT, 0, json!({"type": "vanilla"})));
    }
    for layer in 0..graph.layers {
        if graph.heads.is_some() {
            reps.extend(
                Qkv::ALL.map(
                    |kind| json!({"layer": layer, "component": kind.site(), "unit": "h", "intervention": addition}),
                ),
            );
        } else {
            let input = if interpolate && layer == 0 { "vanilla" } else { "addition" };
            reps.push(whole(BLOCK_INPUT, layer, json!({ "type": input })));
        }
        reps.push(whole(&graph.attention_site, layer, addition.clone()));
        reps.push(whole(&graph.mlp_site, layer, json!({"type": "subtraction"})));
    }
    reps.push(whole(BLOCK_OUTPUT, graph.layers - 1, addition));
    reps
}

/// Binds the receiver taps.
pub(super) fn bind_taps(
    model: LoadedModel,
    plugins: &PluginSet,
    graph: &Graph,
    interpolate: bool,
) -> Result<IntervenableModel> {
    bind(model, plugins, json!({ "representations": taps(graph, interpolate) }))
}

/// Every receiver's ∂metric/∂x_v on the clean prompts (with the embeddings replaced by `embeddings` when given),
/// `(b, seq, d)` each in receiver order, in f64.
pub(super) fn receiver_gradients(
    tap: &mut IntervenableModel,
    graph: &Graph,
    inputs: &AttributionInputs,
    like: &Tensor,
    embeddings: Option<&Tensor>,
    metric: Metric,
) -> Result<Vec<Tensor>> {
    // A zero leaf shaped like the stream, or like `heads` copies of it.
    let zeros = |heads: Option<usize>| {
        let mut size = like.size();
        if let Some(heads) = heads {
            size.insert(1, heads as i64);
        }
        Tensor::zeros(size.as_slice(), (like.kind(), like.device())).set_requires_grad(true)
    };
    // Per layer its attention's leaves (one, or one per input kind holding every head's copy) and its MLP's.
    let mut layer_leaves: Vec<(Vec<Tensor>, Tensor)> = Vec::new();
    let mut activations = Vec::new();
    if let (Some(_), Some(embeddings)) = (graph.heads, embeddings) {
        activations.push(Some(embeddings.shallow_clone()));
    }
    for layer in 0..graph.layers {
        let mlp = zeros(None);
        let attention = match graph.heads {
            Some(heads) => {
                let copies: Vec<Tensor> = Qkv::ALL.iter().map(|&kind| zeros(Some(heads.of(kind)))).collect();
                activations.extend(copies.iter().map(|leaf| Some(leaf.shallow_clone())));
                activations.push(Some(mlp.shallow_clone()));
                copies
            }
            None => {
                let leaf = zeros(None);
                let input = match embeddings {
                    Some(embeddings) if layer == 0 => embeddings + &leaf,
                    _ => leaf.shallow_clone(),
                };
                activations.push(Some(input));
                activations.push(Some(&mlp - &leaf));
                vec![leaf]
            }
        };
        activations.push(Some(mlp.shallow_clone()));
        layer_leaves.push((attention, mlp));
    }
    let logits_leaf = zeros(None);
    activations.push(Some(logits_leaf.shallow_clone()));
    let run = tap.run_with_activations(&inputs.clean, activations, &UnitLocations::whole(), &Subspaces::None)?;
    let logits = last_logits(&run.output, inputs.clean.attention_mask.as_ref());
    metric.of(&logits, inputs)?.backward();
    // A receiver the metric does not depend on gets no gradient: its edges score zero.
    let mut gradients = Vec::with_capacity(graph.receiver_count());
    for (attention, mlp) in &layer_leaves {
        for leaf in attention {
            let gradient = gradient_of(leaf);
            match graph.heads {
                Some(_) => gradients.extend((0..leaf.size()[1]).map(|head| gradient.select(1, head))),
                None => gradients.push(gradient),
            }
        }
        gradients.push(gradient_of(mlp));
    }
    gradients.push(gradient_of(&logits_leaf));
    Ok(gradients)
}

/// Scores of every (sender, receiver) pair, `(senders, receivers)`: the change of each sender's output dotted with
/// each receiver's gradient, summed over prompts (the metric is their mean), positions and width. Pairs that are
/// not edges (a receiver before its sender) are zero.
pub(super) fn edge_scores(graph: &Graph, clean: &[Tensor], corrupted: &[Tensor], gradients: &[Tensor]) -> Tensor {
    let flat = |tensors: Vec<Tensor>| Tensor::stack(&tensors, 0).flatten(1, -1);
    let deltas = flat(corrupted.iter().zip(clean).map(|(c, k)| (c - k).to_kind(Kind::Double)).collect());
    let gradients = flat(gradients.iter().map(Tensor::shallow_clone).collect());
    let scores = deltas.matmul(&gradients.tr());
    let receivers = graph.receiver_count();
    let mask: Vec<f64> = (0..graph.sender_count())
        .flat_map(|s| (0..receivers).map(move |r| if r >= graph.first_receiver(s) { 1.0 } else { 0.0 }))
        .collect();
    scores * Tensor::from_slice(&mask).view([graph.sender_count() as i64, receivers as i64]).to_device(deltas.device())
}
