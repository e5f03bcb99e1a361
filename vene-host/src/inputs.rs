//! The `--inputs` JSON of `vene run`:
//! `{"base": X, "sources": [X | null, …], "unit_locations": …, "subspaces": …}` where X is
//! `{"input_ids": [[int]]}` (optionally with `"attention_mask"`), `{"text": ["..."]}` (tokenized with the model's
//! tokenizer) or `{"inputs": nested floats}`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    text::TextTokenizer,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleJson {
    #[serde(default)]
    pub input_ids: Option<Vec<Vec<i64>>>,
    /// Float inputs; `inputs_embeds` (the transformers keyword) is accepted too.
    #[serde(default, alias = "inputs_embeds")]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub attention_mask: Option<Vec<Vec<i64>>>,
    /// Texts, tokenized with the model's tokenizer and right-padded (with an attention mask).
    #[serde(default)]
    pub text: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInputsJson {
    pub base: ExampleJson,
    #[serde(default)]
    pub sources: Option<Vec<Option<ExampleJson>>>,
    #[serde(default)]
    pub unit_locations: Option<Value>,
    #[serde(default)]
    pub subspaces: Option<Value>,
}

/// Parsed inputs of one intervened run.
pub struct RunInputs {
    pub base: ForwardInputs,
    pub sources: Vec<Option<ForwardInputs>>,
    pub unit_locations: UnitLocations,
    pub subspaces: Subspaces,
}

impl RunInputs {
    pub fn from_file(path: &Path, device: Device, tokenizer: Option<&TextTokenizer>) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?;
        let json: RunInputsJson = serde_json::from_str(&text).map_err(|source| VeneError::Json {
            path: path.to_path_buf(),
            what: "vene inputs",
            source,
        })?;
        Self::from_json(&json, device, tokenizer)
    }

    pub fn from_json(json: &RunInputsJson, device: Device, tokenizer: Option<&TextTokenizer>) -> Result<Self> {
        let base = json.base.to_inputs("base", device, tokenizer)?;
        let sources = json
            .sources
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, s)| s.as_ref().map(|s| s.to_inputs(&format!("sources[{i}]"), device, tokenizer)).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            base,
            sources,
            unit_locations: UnitLocations::parse(json.unit_locations.as_ref())?,
            subspaces: Subspaces::parse(json.subspaces.as_ref())?,
        })
    }
}

fn rectangular(rows: &[Vec<i64>], what: &str) -> Result<Tensor> {
    if rows.is_empty() || rows[0].is_empty() {
        return Err(VeneError::Inputs(format!("{what} is empty: give at least one example with one token")));
    }
    if let Some(bad) = rows.iter().position(|r| r.len() != rows[0].len()) {
        return Err(VeneError::Inputs(format!(
            "{what} rows must have equal length (pad and use attention_mask): row 0 has {}, row {bad} has {}",
            rows[0].len(),
            rows[bad].len()
        )));
    }
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64]))
}

/// Shape and values of a nested list of numbers.
fn nested_floats(value: &Value, what: &str) -> Result<(Vec<i64>, Vec<f32>)> {
    match value {
        Value::Number(n) => Ok((Vec::new(), vec![n.as_f64().unwrap_or_default() as f32])),
        Value::Array(items) if !items.is_empty() => {
            let parts = items.iter().map(|v| nested_floats(v, what)).collect::<Result<Vec<_>>>()?;
            if parts.iter().any(|(shape, _)| shape != &parts[0].0) {
                return Err(VeneError::Inputs(format!("{what} must be a rectangular nested list of numbers")));
            }
            let mut shape = vec![parts.len() as i64];
            shape.extend(&parts[0].0);
            Ok((shape, parts.into_iter().flat_map(|(_, v)| v).collect()))
        }
        Value::Array(_) => Err(VeneError::Inputs(format!("{what} is empty"))),
        other => Err(VeneError::Inputs(format!("{what} must hold numbers, found {other}"))),
    }
}

impl ExampleJson {
    pub fn to_inputs(&self, what: &str, device: Device, tokenizer: Option<&TextTokenizer>) -> Result<ForwardInputs> {
        if let Some(texts) = &self.text {
            if self.input_ids.is_some() || self.inputs.is_some() || self.attention_mask.is_some() {
                return Err(VeneError::Inputs(format!("{what} gives \"text\" together with ids or inputs; give one")));
            }
            let tokenizer = tokenizer.ok_or_else(|| {
                VeneError::Inputs(format!(
                    "{what} gives \"text\" but the model has no tokenizer.json (and is not GPT-2 style); give input_ids"
                ))
            })?;
            if texts.is_empty() {
                return Err(VeneError::Inputs(format!("{what}.text is empty: give at least one text")));
            }
            let (ids, mask) = tokenizer.encode_batch(texts)?;
            let mut inputs = ForwardInputs::from_ids(ids.to_device(device));
            inputs.attention_mask = Some(mask.to_device(device));
            return Ok(inputs);
        }
        let input_ids = self
            .input_ids
            .as_ref()
            .map(|rows| rectangular(rows, &format!("{what}.input_ids")))
            .transpose()?
            .map(|t| t.to_device(device));
        let features = self
            .inputs
            .as_ref()
            .map(|v| {
                let (shape, values) = nested_floats(v, &format!("{what}.inputs"))?;
                Ok::<_, VeneError>(
                    Tensor::from_slice(&values).view(shape.as_slice()).to_kind(Kind::Float).to_device(device),
                )
            })
            .transpose()?;
        if input_ids.is_none() == features.is_none() {
            return Err(VeneError::Inputs(format!(
                "{what} needs exactly one of \"input_ids\", \"inputs\" and \"text\""
            )));
        }
        let attention_mask = self
            .attention_mask
            .as_ref()
            .map(|rows| rectangular(rows, &format!("{what}.attention_mask")))
            .transpose()?
            .map(|t| t.to_device(device));
        Ok(ForwardInputs {
            input_ids,
            features,
            attention_mask,
            past: Vec::new(),
            use_cache: false,
            output_positions: None,
        })
    }
}
