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
    ("RotatedSpaceIntervention", "rotated_space"),
    ("LowRankRotatedSpaceIntervention", "low_rank_rotated_space"),
    ("BoundlessRotatedSpaceIntervention", "boundless_rotated_space"),
    ("SigmoidMaskRotatedSpaceIntervention", "sigmoid_mask_rotated_space"),
    ("SigmoidMaskIntervention", "sigmoid_mask"),
    ("AutoencoderIntervention", "autoencoder"),
    ("JumpReLUAutoencoderIntervention", "jumprelu_sae"),
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

/// A pyvene-saved directory as a vene config plus the trained state of its interventions (`{key}/{name}`).
pub struct Imported {
    pub config: IntervenableConfig,
    pub state: Vec<(String, tch::Tensor)>,
}

/// Reads a pyvene-saved directory: the config, constant sources, and trained state from `intkey_*.bin`.
pub fn import_dir(dir: &Path) -> Result<Imported> {
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
    let mut representations: Vec<(Representation, bool)> = Vec::new();
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
        let representation = Representation {
            layer: int(0).unwrap_or(0) as u32,
            component,
            unit: text_field(2, "pos"),
            max_number_of_units: int(3).unwrap_or(1) as u32,
            intervention: match int(13) {
                // pyvene's autoencoders take their latent width from the representation's latent_dim.
                Some(latent_dim) => json!({"type": vene_type(&types[index])?, "latent_dim": latent_dim}),
                None => json!({"type": vene_type(&types[index])?}),
            },
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
        representations.push((representation, constant));
    }
    let mut config =
        IntervenableConfig { mode, representations: representations.iter().map(|(r, _)| r.clone()).collect() };
    let keys = config.keys();
    let saved_keys = saved.sorted_keys.clone().unwrap_or_else(|| keys.clone());
    let mut state = Vec::new();
    for (index, (_, constant)) in representations.iter().enumerate() {
        let key = saved_keys.get(index).cloned().unwrap_or_else(|| keys[index].clone());
        let path = dir.join(format!("intkey_{key}.bin"));
        if !path.exists() {
            if *constant {
                return Err(VeneError::Config(format!("{} is missing: it holds a constant source", path.display())));
            }
            continue;
        }
        let entries = read_torch_state_dict(&path)?;
        if *constant {
            config.representations[index].source_representation = Some(constant_source(&path, entries)?);
        } else {
            state.extend(entries.into_iter().map(|(name, tensor)| (format!("{}/{name}", keys[index]), tensor)));
        }
    }
    Ok(Imported { config, state })
}

fn constant_source(path: &Path, entries: Vec<(String, tch::Tensor)>) -> Result<Vec<f32>> {
    let source = entries
        .into_iter()
        .find(|(name, _)| name == "source_representation")
        .map(|(_, tensor)| tensor)
        .ok_or_else(|| VeneError::Config(format!("{} has no source_representation", path.display())))?;
    let flat = source.to_kind(tch::Kind::Float).flatten(0, -1);
    Vec::<f32>::try_from(&flat).map_err(VeneError::from)
}
