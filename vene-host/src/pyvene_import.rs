//! Importing directories saved by pyvene's `IntervenableModel.save`: `config.json` (representations as positional
//! arrays, intervention types as Python class strings) plus `intkey_{key}.bin` state dicts, read as data only.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};
use vene_checkpoint::pickle::read_torch_state_dict;

use crate::{
    config::{IntervenableConfig, Mode, Representation},
    error::{Result, VeneError},
};

/// pyvene class name → vene built-in type.
const TYPE_MAP: &[(&str, &str)] = &[
    ("VanillaIntervention", "vanilla"),
    ("AdditionIntervention", "addition"),
    ("SubtractionIntervention", "subtraction"),
    ("ZeroIntervention", "zero"),
    ("CollectIntervention", "collect"),
    ("SkipIntervention", "skip"),
    ("NoiseIntervention", "noise"),
];

#[derive(Deserialize)]
struct PyveneConfig {
    representations: Vec<Vec<Value>>,
    intervention_types: Value,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    sorted_keys: Option<Vec<String>>,
    #[serde(default)]
    intervention_constant_sources: Option<Vec<bool>>,
}

/// Whether `text` is a pyvene-saved config (positional representations) rather than a vene one.
pub fn is_pyvene_config(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("representations").and_then(Value::as_array).cloned())
        .is_some_and(|reps| reps.iter().all(Value::is_array) && !reps.is_empty())
}

/// `"<class 'pyvene.models.interventions.VanillaIntervention'>"` → `vanilla`.
fn vene_type(class: &str) -> Result<&'static str> {
    let name = class.trim_end_matches("'>").rsplit('.').next().unwrap_or(class);
    TYPE_MAP.iter().find(|(py, _)| *py == name).map(|(_, vene)| *vene).ok_or_else(|| {
        VeneError::Config(format!(
            "pyvene intervention type '{name}' is not supported by this vene (supported: {})",
            TYPE_MAP.iter().map(|(py, _)| *py).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn field(fields: &[Value], index: usize) -> Option<&Value> {
    fields.get(index).filter(|v| !v.is_null())
}

/// Reads a pyvene-saved directory into a vene config, constant sources included.
pub fn import_dir(dir: &Path) -> Result<IntervenableConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| VeneError::Io { path: path.clone(), source })?;
    let saved: PyveneConfig = serde_json::from_str(&text).map_err(|source| VeneError::Json {
        path: path.clone(),
        what: "a pyvene config",
        source,
    })?;
    let count = saved.representations.len();
    let types: Vec<String> = match &saved.intervention_types {
        Value::String(one) => vec![one.clone(); count],
        Value::Array(many) => many.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        other => return Err(VeneError::Config(format!("{}: unexpected intervention_types {other}", path.display()))),
    };
    if types.len() != count {
        return Err(VeneError::Config(format!(
            "{}: {} intervention types for {count} representations",
            path.display(),
            types.len()
        )));
    }
    let mode = match saved.mode.as_deref() {
        None | Some("parallel") => Mode::Parallel,
        Some("serial") => Mode::Serial,
        Some(other) => return Err(VeneError::Config(format!("{}: unknown mode '{other}'", path.display()))),
    };
    let mut representations = Vec::new();
    for (index, fields) in saved.representations.iter().enumerate() {
        // pyvene's RepresentationConfig field order.
        let int = |i: usize| field(fields, i).and_then(Value::as_i64);
        let text_field =
            |i: usize, default: &str| field(fields, i).and_then(Value::as_str).unwrap_or(default).to_string();
        let component = text_field(1, "block_output");
        let subspace_partition = field(fields, 7)
            .map(|v| serde_json::from_value::<Vec<Vec<i64>>>(v.clone()))
            .transpose()
            .map_err(|e| VeneError::Config(format!("representation {index}: bad subspace_partition: {e}")))?;
        let mut representation = Representation {
            layer: int(0).unwrap_or(0) as u32,
            component,
            unit: text_field(2, "pos"),
            max_number_of_units: int(3).unwrap_or(1) as u32,
            intervention: json!({"type": vene_type(&types[index])?}),
            low_rank_dimension: int(4).map(|v| v as u32),
            subspace_partition,
            group_key: int(8),
            intervention_link_key: int(9),
            source_representation: None,
        };
        let constant =
            saved.intervention_constant_sources.as_ref().and_then(|c| c.get(index).copied()).unwrap_or(false)
                || field(fields, 12).and_then(Value::as_bool).unwrap_or(false)
                || field(fields, 11).is_some();
        if constant {
            representation.source_representation = Some(constant_source(dir, &saved, index, &representation)?);
        }
        representations.push(representation);
    }
    Ok(IntervenableConfig { mode, representations })
}

fn constant_source(dir: &Path, saved: &PyveneConfig, index: usize, rep: &Representation) -> Result<Vec<f32>> {
    let keys = saved
        .sorted_keys
        .clone()
        .unwrap_or_else(|| IntervenableConfig { mode: Mode::Parallel, representations: vec![rep.clone()] }.keys());
    let key = keys.get(index).or(keys.first()).cloned().unwrap_or_default();
    let path = dir.join(format!("intkey_{key}.bin"));
    let state = read_torch_state_dict(&path)?;
    let source = state
        .into_iter()
        .find(|(name, _)| name == "source_representation")
        .map(|(_, tensor)| tensor)
        .ok_or_else(|| VeneError::Config(format!("{} has no source_representation", path.display())))?;
    let flat = source.to_kind(tch::Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&flat).map_err(VeneError::from)
}
