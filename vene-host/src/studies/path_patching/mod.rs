//! Path patching (Wang et al. 2022, "Interpretability in the Wild"; Goldowsky-Dill et al. 2023): the effect of one
//! attention head that reaches the output, or a later head's input, only along a chosen path.
//!
//! For each sender head: the clean prompt runs with the sender's output taken from the corrupted prompt while every
//! later head's output is frozen at its clean value (and, with `freeze_mlps`, every MLP from the sender's layer on),
//! so the change travels only along the direct path (through the residual stream and, unless frozen, the MLPs).
//! Receivers `logits`: that run's logit difference is the effect. Receiver heads: that run's query (key, value)
//! inputs of every later head are collected, and the clean prompt runs again with one receiver's input set to them
//! and nothing else changed. Effects are `(patched − clean) / (clean − corrupted)` of the logit difference between
//! the target and the distractor token at the last position: 0 none, −1 as much as corrupting the whole prompt.

mod sweep;

use std::cell::OnceCell;

pub use sweep::{all_heads, assemble, items, run, strongest, study_output, sweep_options, PathPatching, Shape};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One clean / corrupted prompt pair with the token whose logit should win and the one it is compared with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathPrompt {
    pub clean: String,
    pub corrupted: String,
    pub target: String,
    pub distractor: String,
}

/// Which inputs of the receivers to patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Receivers {
    /// The direct path to the output.
    Logits,
    /// Every later head's query (key, value) input.
    Query,
    Key,
    Value,
}

impl Receivers {
    fn component(self) -> Option<&'static str> {
        match self {
            Receivers::Logits => None,
            Receivers::Query => Some("head_query_output"),
            Receivers::Key => Some("head_key_output"),
            Receivers::Value => Some("head_value_output"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathOptions {
    pub receivers: Receivers,
    /// Freeze the MLPs too: only the residual stream carries the sender's effect.
    pub freeze_mlps: bool,
}

/// The prompts, tokenized and batched (right-padded, with masks), and their tokens.
pub struct PathBatch {
    clean: ForwardInputs,
    corrupted: ForwardInputs,
    target: Tensor,
    distractor: Tensor,
    pub prompts: usize,
    /// The prompts as given, for a sweep's identity.
    pub texts: Vec<PathPrompt>,
    /// The clean and corrupted activations every sender's run reads, collected on first use.
    sources: OnceCell<Sources>,
}

/// Per layer: every head's output on the corrupted prompts `(batch, heads, seq, head_dim)`, and the clean prompts'
/// attention value output `(batch, seq, width)` and MLP output.
struct Sources {
    corrupted_heads: Vec<Tensor>,
    clean_attention: Vec<Tensor>,
    clean_mlp: Vec<Tensor>,
}

fn single_token(tokenizer: &TextTokenizer, word: &str, line: usize) -> Result<i64> {
    let ids = tokenizer.encode_plain(word)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(VeneError::Inputs(format!(
            "prompt {line}: {word:?} is {} tokens ({}); the metric compares single tokens, give a one-token word",
            ids.len(),
            ids.iter().map(|&id| format!("{:?}", tokenizer.decode(&[id]))).collect::<Vec<_>>().join(" ")
        ))),
    }
}

impl PathBatch {
    /// Tokenizes the pairs; each pair's prompts must have the same number of tokens (positions line up).
    pub fn new(tokenizer: &TextTokenizer, prompts: &[PathPrompt], device: tch::Device) -> Result<Self> {
        if prompts.is_empty() {
            return Err(VeneError::Inputs("no prompts: give at least one clean / corrupted pair".to_string()));
        }
        let (mut target, mut distractor) = (Vec::new(), Vec::new());
        for (index, prompt) in prompts.iter().enumerate() {
            let (clean, corrupted) = (tokenizer.encode(&prompt.clean)?, tokenizer.encode(&prompt.corrupted)?);
            if clean.len() != corrupted.len() {
                return Err(VeneError::Inputs(format!(
                    "prompt {}: the clean prompt has {} tokens, the corrupted one {}; patching needs them to line \
                     up position by position",
                    index + 1,
                    clean.len(),
                    corrupted.len()
                )));
            }
            target.push(single_token(tokenizer, &prompt.target, index + 1)?);
            distractor.push(single_token(tokenizer, &prompt.distractor, index + 1)?);
        }
        let batch = |texts: Vec<String>| -> Result<ForwardInputs> {
            let (ids, mask) = tokenizer.encode_batch(&texts)?;
            let mut inputs = ForwardInputs::from_ids(ids.to_device(device));
            inputs.attention_mask = Some(mask.to_device(device));
            Ok(inputs.reading_last_position())
        };
        Ok(Self {
            clean: batch(prompts.iter().map(|p| p.clean.clone()).collect())?,
            corrupted: batch(prompts.iter().map(|p| p.corrupted.clone()).collect())?,
            target: Tensor::from_slice(&target).to_device(device),
            distractor: Tensor::from_slice(&distractor).to_device(device),
            prompts: prompts.len(),
            texts: prompts.to_vec(),
            sources: OnceCell::new(),
        })
    }

    /// The batch as attribution reads it: clean and corrupted inputs, targets and distractors.
    pub fn into_attribution_inputs(self) -> crate::studies::attribution::AttributionInputs {
        crate::studies::attribution::AttributionInputs::new(self.clean, self.corrupted, self.target, self.distractor)
    }

    /// The activations the senders' runs read, collected by one corrupted and one clean pass the first time.
    fn sources(&self, model: &LoadedModel, plugins: &PluginSet) -> Result<&Sources> {
        if let Some(sources) = self.sources.get() {
            return Ok(sources);
        }
        let layers = model.catalog().num_layers;
        let collect = |inputs: &ForwardInputs, sites: &[(&str, &str)]| -> Result<Vec<Tensor>> {
            let representations = (0..layers)
                .flat_map(|layer| {
                    sites.iter().map(move |(component, unit)| {
                        json!({"layer": layer, "component": component, "unit": unit, "intervention": {"type": "collect"}})
                    })
                })
                .collect();
            let mut collector = bind(model, plugins, representations)?;
            Ok(collector.run(inputs, &[], &UnitLocations::whole(), &Subspaces::None)?.collected)
        };
        let corrupted_heads = collect(&self.corrupted, &[("head_attention_value_output", "h")])?;
        let mut clean = collect(&self.clean, &[("attention_value_output", "pos"), ("mlp_output", "pos")])?.into_iter();
        let (mut clean_attention, mut clean_mlp) = (Vec::new(), Vec::new());
        while let (Some(attention), Some(mlp)) = (clean.next(), clean.next()) {
            clean_attention.push(attention);
            clean_mlp.push(mlp);
        }
        Ok(self.sources.get_or_init(|| Sources { corrupted_heads, clean_attention, clean_mlp }))
    }

    /// The mean logit difference (target − distractor) at each prompt's last position, per block of `prompts`
    /// examples (the batch may hold several copies of the prompts, one after the other).
    fn logit_differences(&self, output: &Tensor, inputs: &ForwardInputs) -> Result<Vec<f64>> {
        let rows = output.size()[0];
        let logits = if output.size()[1] == 1 {
            output.squeeze_dim(1)
        } else {
            let vocab = output.size()[2];
            let mask = inputs.attention_mask.as_ref().ok_or_else(|| VeneError::Inputs("no attention mask".into()))?;
            let last = (mask.sum_dim_intlist(-1, false, Kind::Int64) - 1).to_device(output.device());
            output.gather(1, &last.view([rows, 1, 1]).expand([rows, 1, vocab], false), false).squeeze_dim(1)
        };
        let copies = rows / self.prompts as i64;
        let pick = |tokens: &Tensor| logits.gather(1, &tokens.repeat([copies]).unsqueeze(1), false).squeeze_dim(1);
        let difference = (pick(&self.target) - pick(&self.distractor)).to_kind(Kind::Double);
        Ok(Vec::<f64>::try_from(difference.view([copies, self.prompts as i64]).mean_dim(1, false, Kind::Double))?)
    }
}

/// One sender's effects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderEffects {
    pub layer: u32,
    pub head: u32,
    /// Through the direct path to the output (with `Logits` receivers), else `None`.
    pub to_logits: Option<f64>,
    /// Per receiver head of every later layer, `(layer, head, effect)`.
    pub to_receivers: Vec<(u32, u32, f64)>,
}

/// The clean and corrupted logit differences the effects are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub clean: f64,
    pub corrupted: f64,
}

impl Baseline {
    pub fn measure(model: &LoadedModel, batch: &PathBatch) -> Result<Self> {
        let _no_grad = tch::no_grad_guard();
        let run = |inputs: &ForwardInputs| -> Result<f64> {
            let output = model.forward_plain(inputs)?.output;
            Ok(batch.logit_differences(&output, inputs)?[0])
        };
        let baseline = Self { clean: run(&batch.clean)?, corrupted: run(&batch.corrupted)? };
        if (baseline.clean - baseline.corrupted).abs() < 1e-6 {
            return Err(VeneError::Inputs(format!(
                "the clean and corrupted prompts give the same logit difference ({:.4}): nothing to patch",
                baseline.clean
            )));
        }
        Ok(baseline)
    }

    fn effect(&self, patched: f64) -> f64 {
        (patched - self.clean) / (self.clean - self.corrupted)
    }
}

fn bind(
    model: &LoadedModel,
    plugins: &PluginSet,
    representations: Vec<serde_json::Value>,
) -> Result<IntervenableModel> {
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations}))
        .map_err(|e| VeneError::Config(format!("path patching config: {e}")))?;
    IntervenableModel::new(model.clone(), config, plugins, 0)
}

/// One sender's effects on the logits or on every later receiver.
pub fn sender_effects(
    model: &LoadedModel,
    plugins: &PluginSet,
    batch: &PathBatch,
    baseline: &Baseline,
    sender: (u32, u32),
    options: &PathOptions,
) -> Result<SenderEffects> {
    let _no_grad = tch::no_grad_guard();
    let catalog = model.catalog();
    let (layers, (layer, head)) = (catalog.num_layers, sender);
    if layer >= layers || head >= catalog.num_heads {
        return Err(VeneError::Config(format!(
            "sender L{layer}.H{head} is not a head of the model ({layers} layers × {} heads)",
            catalog.num_heads
        )));
    }
    let sources = batch.sources(model, plugins)?;
    let vanilla = json!({"type": "vanilla"});
    let mut representations = vec![json!({"layer": layer, "component": "head_attention_value_output", "unit": "h",
        "intervention": vanilla})];
    let mut activations = vec![Some(sources.corrupted_heads[layer as usize].narrow(1, i64::from(head), 1))];
    let rows = batch.prompts;
    let mut locations = vec![json!(vec![vec![head]; rows])];
    let frozen_mlps = if options.freeze_mlps { layer..layers } else { layers..layers };
    for later in layer + 1..layers {
        representations.push(json!({"layer": later, "component": "attention_value_output", "intervention": vanilla}));
        activations.push(Some(sources.clean_attention[later as usize].shallow_clone()));
        locations.push(serde_json::Value::Null);
    }
    for mlp in frozen_mlps {
        representations.push(json!({"layer": mlp, "component": "mlp_output", "intervention": vanilla}));
        activations.push(Some(sources.clean_mlp[mlp as usize].shallow_clone()));
        locations.push(serde_json::Value::Null);
    }
    let receiver_component = options.receivers.component();
    if let Some(component) = receiver_component {
        for later in layer + 1..layers {
            representations.push(json!({"layer": later, "component": component, "unit": "h",
                "intervention": {"type": "collect"}}));
            activations.push(None);
            locations.push(serde_json::Value::Null);
        }
    }
    let unit_locations = UnitLocations::parse(Some(&json!({"sources->base": [locations.clone(), locations]})))?;
    let mut intervenable = bind(model, plugins, representations)?;
    // One pass: the sources were collected once for every sender.
    let run = intervenable.run_with_activations(&batch.clean, activations, &unit_locations, &Subspaces::None)?;
    let to_logits = match options.receivers {
        Receivers::Logits => Some(baseline.effect(batch.logit_differences(&run.output, &batch.clean)?[0])),
        _ => None,
    };
    let mut to_receivers = Vec::new();
    if let Some(component) = receiver_component {
        for (offset, collected) in run.collected.iter().enumerate() {
            let receiver_layer = layer + 1 + offset as u32;
            let effects = receiver_effects(model, plugins, batch, collected, receiver_layer, component)?;
            to_receivers
                .extend(effects.into_iter().enumerate().map(|(h, e)| (receiver_layer, h as u32, baseline.effect(e))));
        }
    }
    Ok(SenderEffects { layer, head, to_logits, to_receivers })
}

/// The logit difference with one receiver head's input set to `collected` (`(batch, heads, seq, dim)`), for every
/// head of the layer at once: the clean batch is repeated once per head, each copy patching its own head.
fn receiver_effects(
    model: &LoadedModel,
    plugins: &PluginSet,
    batch: &PathBatch,
    collected: &Tensor,
    layer: u32,
    component: &str,
) -> Result<Vec<f64>> {
    let heads = collected.size()[1];
    let rows = batch.prompts;
    let representation = json!({"layer": layer, "component": component, "unit": "h",
        "intervention": {"type": "vanilla"}});
    let mut intervenable = bind(model, plugins, vec![representation])?;
    let head_rows: Vec<Vec<i64>> = (0..heads).flat_map(|h| vec![vec![h]; rows]).collect();
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [[head_rows], [head_rows]]})))?;
    let size = collected.size();
    let activation = collected.transpose(0, 1).reshape([heads * size[0], 1, size[2], size[3]]);
    let base = batch.clean.repeat(heads);
    let run = intervenable.run_with_activations(&base, vec![Some(activation)], &locations, &Subspaces::None)?;
    batch.logit_differences(&run.output, &base)
}
