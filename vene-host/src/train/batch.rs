//! Batches of training examples: inputs right-padded and stacked, locations and subspaces stacked, labels as ids.

use tch::{Kind, Tensor};

use super::{Label, TrainingExample};
use crate::{
    error::{Result, VeneError},
    inputs::ExampleJson,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    text::TextTokenizer,
};

/// A batch of examples, ready for [`IntervenableModel::run`].
pub struct Batch {
    pub base: ForwardInputs,
    pub sources: Vec<Option<ForwardInputs>>,
    pub locations: UnitLocations,
    pub subspaces: Subspaces,
    pub labels: Tensor,
    /// The factual targets of the bases, when every example gives one (`base_label`).
    pub base_labels: Option<Tensor>,
}

/// Right-pads and stacks single examples' inputs into one batch (with an attention mask when lengths differ).
fn stack_inputs(parts: Vec<ForwardInputs>, what: &str) -> Result<ForwardInputs> {
    if let Some(features) = parts.iter().map(|p| p.features.as_ref()).collect::<Option<Vec<_>>>() {
        let shapes: Vec<_> = features.iter().map(|f| f.size()[1..].to_vec()).collect();
        if shapes.iter().any(|s| *s != shapes[0]) {
            return Err(VeneError::Inputs(format!("{what}: float inputs of one batch must share a shape")));
        }
        let stacked = Tensor::cat(&features, 0);
        return Ok(ForwardInputs {
            input_ids: None,
            features: Some(stacked),
            attention_mask: None,
            past: Vec::new(),
            use_cache: false,
            output_positions: None,
        });
    }
    let ids: Vec<&Tensor> = parts
        .iter()
        .map(|p| p.input_ids.as_ref())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| VeneError::Inputs(format!("{what}: mixes token ids and float inputs")))?;
    let longest = ids.iter().map(|t| t.size()[1]).max().unwrap_or(0);
    let mut padded = Vec::new();
    let mut masks = Vec::new();
    for (part, ids) in parts.iter().zip(&ids) {
        let length = ids.size()[1];
        let mask = part.attention_mask.as_ref().map_or_else(|| ids.ones_like(), Tensor::shallow_clone);
        padded.push(ids.constant_pad_nd([0, longest - length]));
        masks.push(mask.constant_pad_nd([0, longest - length]));
    }
    let mask = Tensor::cat(&masks, 0);
    let needs_mask = mask.min().int64_value(&[]) == 0;
    let mut inputs = ForwardInputs::from_ids(Tensor::cat(&padded, 0));
    inputs.attention_mask = needs_mask.then_some(mask);
    Ok(inputs)
}

fn label_id(label: &Label, tokenizer: Option<&TextTokenizer>) -> Result<i64> {
    match label {
        Label::Id(id) => Ok(*id),
        Label::Text(text) => {
            let tokenizer = tokenizer.ok_or_else(|| {
                VeneError::Inputs(format!("label {text:?} is text, but the model has no tokenizer; give a token id"))
            })?;
            tokenizer
                .encode(text)?
                .first()
                .copied()
                .ok_or_else(|| VeneError::Inputs(format!("label {text:?} is empty")))
        }
    }
}

/// One example converted to tensors, once per run rather than once per step.
pub struct PreparedExample {
    base: ForwardInputs,
    sources: Vec<Option<ForwardInputs>>,
    locations: UnitLocations,
    subspaces: Subspaces,
    label: i64,
    base_label: Option<i64>,
}

impl PreparedExample {
    pub fn new(example: &TrainingExample, tokenizer: Option<&TextTokenizer>, device: tch::Device) -> Result<Self> {
        let convert = |json: &ExampleJson, what: &str| json.to_inputs(what, device, tokenizer);
        let base = convert(&example.base, "base")?;
        let batch = base.batch_size() as usize;
        if batch != 1 {
            return Err(VeneError::Inputs(format!("each training example holds one base, found {batch}")));
        }
        Ok(Self {
            base,
            sources: example
                .sources
                .iter()
                .map(|source| source.as_ref().map(|s| convert(s, "sources")).transpose())
                .collect::<Result<_>>()?,
            locations: UnitLocations::parse(example.unit_locations.as_ref())?,
            subspaces: Subspaces::parse(example.subspaces.as_ref())?,
            label: label_id(&example.label, tokenizer)?,
            base_label: example.base_label.as_ref().map(|l| label_id(l, tokenizer)).transpose()?,
        })
    }

    /// Every example of `examples`, converted.
    pub fn all(
        examples: &[&TrainingExample],
        tokenizer: Option<&TextTokenizer>,
        device: tch::Device,
    ) -> Result<Vec<Self>> {
        examples.iter().map(|e| Self::new(e, tokenizer, device)).collect()
    }
}

impl Batch {
    pub fn new(examples: &[&TrainingExample], tokenizer: Option<&TextTokenizer>, device: tch::Device) -> Result<Self> {
        let prepared = PreparedExample::all(examples, tokenizer, device)?;
        Self::stack(&prepared.iter().collect::<Vec<_>>(), device)
    }

    /// Stacks converted examples into one batch.
    pub fn stack(examples: &[&PreparedExample], device: tch::Device) -> Result<Self> {
        let groups = examples.iter().map(|e| e.sources.len()).max().unwrap_or(0);
        let mut sources: Vec<Vec<Option<ForwardInputs>>> = (0..groups).map(|_| Vec::new()).collect();
        for example in examples {
            if example.sources.len() != groups {
                return Err(VeneError::Inputs("examples of one dataset must give the same number of sources".into()));
            }
            for (group, source) in example.sources.iter().enumerate() {
                sources[group].push(source.as_ref().map(ForwardInputs::shallow_clone));
            }
        }
        let sources = sources
            .into_iter()
            .map(|group| match group.iter().all(Option::is_some) {
                true => stack_inputs(group.into_iter().flatten().collect(), "sources").map(Some),
                false if group.iter().all(Option::is_none) => Ok(None),
                false => {
                    Err(VeneError::Inputs("a source is null in some examples of a batch and not in others".into()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let labels: Vec<i64> = examples.iter().map(|e| e.label).collect();
        let base_labels: Option<Vec<i64>> = examples.iter().map(|e| e.base_label).collect();
        Ok(Self {
            base: stack_inputs(examples.iter().map(|e| e.base.shallow_clone()).collect(), "base")?
                .reading_last_position(),
            sources,
            locations: UnitLocations::stack(examples.iter().map(|e| (e.locations.clone(), 1)).collect()),
            subspaces: Subspaces::Stacked(examples.iter().map(|e| (e.subspaces.clone(), 1)).collect()),
            labels: Tensor::from_slice(&labels).to_device(device),
            base_labels: base_labels.map(|b| Tensor::from_slice(&b).to_device(device)),
        })
    }
}

/// The logits at each example's last real position: `(batch, classes)`.
pub(crate) fn last_logits(output: &Tensor, mask: Option<&Tensor>) -> Tensor {
    if output.dim() == 2 {
        return output.shallow_clone();
    }
    // The adapter computed the read position only (the base asked for it).
    if output.size()[1] == 1 {
        return output.squeeze_dim(1);
    }
    let (batch, seq, classes) = (output.size()[0], output.size()[1], output.size()[2]);
    let last = match mask {
        Some(mask) => mask.sum_dim_intlist(-1, false, Kind::Int64) - 1,
        None => Tensor::full([batch], seq - 1, (Kind::Int64, output.device())),
    };
    let index = last.to_device(output.device()).view([batch, 1, 1]).expand([batch, 1, classes], false);
    output.gather(1, &index, false).squeeze_dim(1)
}
