//! Causal scrubbing (Chan et al. 2022) in its resampling-ablation form: a hypothesis names the nodes (attention
//! heads, MLPs) that matter and says they depend on the input only through its class; every node's output is then
//! resampled — a kept node's from another input of the same class, every other node's from a random input — and
//! the loss on the targets measured. How much of the loss the hypothesis recovers, `(L_all − L_hypothesis) /
//! (L_all − L_clean)` with `L_all` everything resampled at random, is the metric: 1 a complete explanation, 0 none.
//! Random hypotheses of the same size are the control.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use super::output::{Figure, StudyOutput};
use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One example: a text, the token it should predict next, and its class (the feature kept nodes may read; the
/// target when absent).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubExample {
    pub text: String,
    pub target: String,
    #[serde(default)]
    pub class: Option<String>,
}

/// A node of the model's computational graph: one attention head's output, or one layer's MLP output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Node {
    Head(u32, u32),
    Mlp(u32),
}

impl Node {
    /// `L11.H3` or `L13.MLP`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid =
            || VeneError::Config(format!("node {text:?} is not LAYER.HEAD or LAYER.MLP (e.g. L11.H3, L13.MLP)"));
        let (layer, rest) = text.trim().trim_start_matches('L').split_once('.').ok_or_else(invalid)?;
        let layer: u32 = layer.parse().map_err(|_| invalid())?;
        if rest.eq_ignore_ascii_case("mlp") {
            return Ok(Node::Mlp(layer));
        }
        Ok(Node::Head(layer, rest.trim_start_matches('H').parse().map_err(|_| invalid())?))
    }

    pub fn name(&self) -> String {
        match self {
            Node::Head(layer, head) => format!("L{layer}.H{head}"),
            Node::Mlp(layer) => format!("L{layer}.MLP"),
        }
    }
}

/// Every node of the model, layer by layer (its heads, then its MLP).
pub fn all_nodes(model: &LoadedModel) -> Vec<Node> {
    let catalog = model.catalog();
    (0..catalog.num_layers)
        .flat_map(|l| (0..catalog.num_heads).map(move |h| Node::Head(l, h)).chain([Node::Mlp(l)]))
        .collect()
}

/// The examples tokenized (one length), with each one's same-class and random partner drawn once, seeded.
pub struct ScrubData {
    inputs: ForwardInputs,
    targets: Tensor,
    equivalent: Tensor,
    random: Tensor,
    pub examples: Vec<ScrubExample>,
}

impl ScrubData {
    pub fn new(tokenizer: &TextTokenizer, examples: &[ScrubExample], seed: u64, device: tch::Device) -> Result<Self> {
        if examples.len() < 2 {
            return Err(VeneError::Inputs("causal scrubbing resamples between examples: give at least two".into()));
        }
        let mut rows = Vec::with_capacity(examples.len());
        let mut targets = Vec::with_capacity(examples.len());
        for (index, example) in examples.iter().enumerate() {
            let ids = tokenizer.encode(&example.text)?;
            if let Some(first) = rows.first().map(Vec::len).filter(|&n| n != ids.len()) {
                return Err(VeneError::Inputs(format!(
                    "example {}: {} tokens where example 1 has {first}; resampled activations must line up position \
                     by position, so every text needs the same number of tokens",
                    index + 1,
                    ids.len()
                )));
            }
            rows.push(ids);
            let target = tokenizer.encode_plain(&example.target)?;
            targets.push(*target.first().ok_or_else(|| {
                VeneError::Inputs(format!("example {}: the target {:?} is empty", index + 1, example.target))
            })?);
        }
        let class = |e: &ScrubExample| e.class.clone().unwrap_or_else(|| e.target.clone());
        let mut rng = StdRng::seed_from_u64(seed);
        let count = examples.len();
        let mut equivalent = Vec::with_capacity(count);
        let mut random = Vec::with_capacity(count);
        for (index, example) in examples.iter().enumerate() {
            let same: Vec<usize> =
                (0..count).filter(|&j| j != index && class(&examples[j]) == class(example)).collect();
            let partner = same.choose(&mut rng).copied().ok_or_else(|| {
                VeneError::Inputs(format!(
                    "example {} is the only one of class {:?}: a kept node needs another input of the same class",
                    index + 1,
                    class(example)
                ))
            })?;
            equivalent.push(partner as i64);
            let others: Vec<usize> = (0..count).filter(|&j| j != index).collect();
            random.push(*others.choose(&mut rng).unwrap_or(&index) as i64);
        }
        let flat: Vec<i64> = rows.concat();
        let ids = Tensor::from_slice(&flat).view([count as i64, -1]).to_device(device);
        Ok(Self {
            inputs: ForwardInputs::from_ids(ids).reading_last_position(),
            targets: Tensor::from_slice(&targets).to_device(device),
            equivalent: Tensor::from_slice(&equivalent).to_device(device),
            random: Tensor::from_slice(&random).to_device(device),
            examples: examples.to_vec(),
        })
    }

    fn rows(&self, index: &Tensor) -> ForwardInputs {
        let ids = self.inputs.input_ids.as_ref().map(|ids| ids.index_select(0, index));
        ForwardInputs::from_ids(ids.unwrap_or_else(|| Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu))))
    }

    /// Mean cross entropy of the targets at the last position.
    fn loss(&self, output: &Tensor) -> Result<f64> {
        let logits = if output.dim() == 3 { output.select(1, -1) } else { output.shallow_clone() };
        Ok(logits.to_kind(Kind::Float).cross_entropy_for_logits(&self.targets).double_value(&[]))
    }
}

/// The loss of the plain model on the examples.
pub fn clean_loss(model: &LoadedModel, data: &ScrubData) -> Result<f64> {
    let _no_grad = tch::no_grad_guard();
    data.loss(&model.forward_plain(&data.inputs)?.output)
}

/// The loss with `kept` nodes resampled from same-class inputs and every other node from random ones.
pub fn scrubbed_loss(model: &LoadedModel, plugins: &PluginSet, data: &ScrubData, kept: &[Node]) -> Result<f64> {
    let _no_grad = tch::no_grad_guard();
    let catalog = model.catalog();
    for node in kept {
        let (layer, head) = match node {
            Node::Head(layer, head) => (*layer, Some(*head)),
            Node::Mlp(layer) => (*layer, None),
        };
        if layer >= catalog.num_layers || head.is_some_and(|h| h >= catalog.num_heads) {
            return Err(VeneError::Config(format!(
                "node {} is not in the model ({} layers × {} heads)",
                node.name(),
                catalog.num_layers,
                catalog.num_heads
            )));
        }
    }
    let count = data.examples.len();
    // Group 0 reads the same-class inputs, group 1 the random ones; group keys must ascend in the config.
    let mut groups: [Vec<(serde_json::Value, serde_json::Value)>; 2] = [Vec::new(), Vec::new()];
    for layer in 0..catalog.num_layers {
        for keep in [true, false] {
            let heads: Vec<u32> =
                (0..catalog.num_heads).filter(|&h| kept.contains(&Node::Head(layer, h)) == keep).collect();
            if !heads.is_empty() {
                let rep = json!({"layer": layer, "component": "head_attention_value_output", "unit": "h",
                    "intervention": {"type": "vanilla"}});
                groups[usize::from(!keep)].push((rep, json!(vec![heads; count])));
            }
        }
        let rep = json!({"layer": layer, "component": "mlp_output", "intervention": {"type": "vanilla"}});
        groups[usize::from(!kept.contains(&Node::Mlp(layer)))].push((rep, serde_json::Value::Null));
    }
    let mut representations = Vec::new();
    let mut locations = Vec::new();
    let mut sources = Vec::new();
    for (key, group) in groups.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        sources.push(Some(data.rows(if key == 0 { &data.equivalent } else { &data.random })));
        let group_key = sources.len() as i64 - 1;
        for (mut rep, location) in group {
            rep["group_key"] = json!(group_key);
            representations.push(rep);
            locations.push(location);
        }
    }
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
        .map_err(|e| VeneError::Config(format!("scrubbing config: {e}")))?;
    let mut intervenable = IntervenableModel::new(model.clone(), config, plugins, 0)?;
    let unit_locations = UnitLocations::parse(Some(&json!({"sources->base": [locations.clone(), locations]})))?;
    let run = intervenable.run(&data.inputs, &sources, &unit_locations, &Subspaces::None)?;
    data.loss(&run.output)
}

/// A hypothesis's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scrubbed {
    pub nodes: Vec<String>,
    pub loss: f64,
    /// `(L_all − loss) / (L_all − L_clean)`.
    pub recovered: f64,
}

/// A whole scrubbing study: the hypothesis and its random controls.
#[derive(Debug, Clone, Serialize)]
pub struct Scrubbing {
    pub examples: usize,
    pub clean_loss: f64,
    /// Every node resampled at random.
    pub scrubbed_loss: f64,
    pub hypothesis: Scrubbed,
    pub controls: Vec<Scrubbed>,
}

/// `controls` random hypotheses with as many heads and MLPs as `hypothesis`, seeded.
pub fn random_hypotheses(model: &LoadedModel, hypothesis: &[Node], controls: usize, seed: u64) -> Vec<Vec<Node>> {
    let nodes = all_nodes(model);
    let (heads, mlps): (Vec<Node>, Vec<Node>) = nodes.into_iter().partition(|n| matches!(n, Node::Head(..)));
    let wanted_heads = hypothesis.iter().filter(|n| matches!(n, Node::Head(..))).count();
    let wanted_mlps = hypothesis.len() - wanted_heads;
    let mut rng = StdRng::seed_from_u64(seed);
    (0..controls)
        .map(|_| {
            let mut chosen: Vec<Node> = heads.choose_multiple(&mut rng, wanted_heads).copied().collect();
            chosen.extend(mlps.choose_multiple(&mut rng, wanted_mlps).copied());
            chosen.sort();
            chosen
        })
        .collect()
}

/// Scrubs `hypothesis` and `controls` random hypotheses of its size; `progress(done, total)` per hypothesis.
pub fn scrub(
    model: &LoadedModel,
    plugins: &PluginSet,
    data: &ScrubData,
    hypothesis: &[Node],
    controls: usize,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<Scrubbing> {
    let clean = clean_loss(model, data)?;
    let all = scrubbed_loss(model, plugins, data, &[])?;
    if (all - clean).abs() < 1e-9 {
        return Err(VeneError::Inputs(format!(
            "resampling every node leaves the loss where it was ({clean:.4}): nothing for a hypothesis to recover"
        )));
    }
    let hypotheses: Vec<Vec<Node>> =
        std::iter::once(hypothesis.to_vec()).chain(random_hypotheses(model, hypothesis, controls, seed)).collect();
    let mut results = Vec::with_capacity(hypotheses.len());
    for (done, nodes) in hypotheses.iter().enumerate() {
        let loss = scrubbed_loss(model, plugins, data, nodes)?;
        let names = nodes.iter().map(Node::name).collect();
        results.push(Scrubbed { nodes: names, loss, recovered: (all - loss) / (all - clean) });
        progress(done + 1, hypotheses.len());
    }
    let hypothesis = results.remove(0);
    Ok(Scrubbing {
        examples: data.examples.len(),
        clean_loss: clean,
        scrubbed_loss: all,
        hypothesis,
        controls: results,
    })
}

/// The bars (recovered loss of the hypothesis and of each control), scrubbing.json and the summary.
pub fn study_output(found: &Scrubbing) -> Result<StudyOutput> {
    let mut bars = vec![("hypothesis".to_string(), found.hypothesis.recovered.max(0.0))];
    bars.extend(found.controls.iter().enumerate().map(|(i, c)| (format!("random {}", i + 1), c.recovered.max(0.0))));
    let figure = Figure::Bars {
        name: "recovered".to_string(),
        title: "loss recovered: the hypothesis and random ones of its size".to_string(),
        bars,
        max: 1.0,
    };
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let summary = format!(
        "{} examples: loss clean {:.4}, every node resampled {:.4}; the hypothesis ({}) {:.4}, recovering {:.3}; \
         {} random hypotheses of its size recover {:.3} on average",
        found.examples,
        found.clean_loss,
        found.scrubbed_loss,
        found.hypothesis.nodes.join(" "),
        found.hypothesis.loss,
        found.hypothesis.recovered,
        found.controls.len(),
        mean(found.controls.iter().map(|c| c.recovered).collect())
    );
    StudyOutput::new("scrubbing.json", found, vec![figure], summary)
}
