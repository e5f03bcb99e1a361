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

/// pyvene class name → vene type, and what pyvene keeps in the type's `intkey_*.bin`.
const TYPE_MAP: &[(&str, &str, SavedState)] = &[
    ("RotatedSpaceIntervention", "rotated_space", SavedState::Trained),
    ("LowRankRotatedSpaceIntervention", "low_rank_rotated_space", SavedState::Trained),
    ("BoundlessRotatedSpaceIntervention", "boundless_rotated_space", SavedState::Trained),
    ("SigmoidMaskRotatedSpaceIntervention", "sigmoid_mask_rotated_space", SavedState::Trained),
    ("SigmoidMaskIntervention", "sigmoid_mask", SavedState::Trained),
    // pyvene writes no state for it (its loader cannot rebuild it either): the basis is given after loading.
    ("PCARotatedSpaceIntervention", "pca_rotated_space", SavedState::Nothing),
    ("AutoencoderIntervention", "autoencoder", SavedState::Trained),
    ("JumpReLUAutoencoderIntervention", "jumprelu_sae", SavedState::Trained),
    ("VanillaIntervention", "vanilla", SavedState::ConstantSource),
    ("AdditionIntervention", "addition", SavedState::ConstantSource),
    ("SubtractionIntervention", "subtraction", SavedState::ConstantSource),
    ("ZeroIntervention", "zero", SavedState::Nothing),
    ("CollectIntervention", "collect", SavedState::Nothing),
    ("SkipIntervention", "skip", SavedState::Nothing),
    ("NoiseIntervention", "noise", SavedState::Nothing),
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
    #[serde(default)]
    intervention_dimensions: Option<Vec<Value>>,
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
    TYPE_MAP.iter().find(|(py, _, _)| *py == name).map(|(_, vene, _)| *vene).ok_or_else(|| {
        VeneError::Config(format!(
            "pyvene intervention type '{name}' is not supported by this vene (supported: {})",
            TYPE_MAP.iter().map(|(py, _, _)| *py).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn field(fields: &[Value], index: usize) -> Option<&Value> {
    fields.get(index).filter(|v| !v.is_null())
}

/// What an imported intervention keeps in its `intkey_*.bin`, decided by its type (as pyvene's loader decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavedState {
    /// Zero, collect, noise, skip: no source and no state; pyvene writes no file, even with the constant flag.
    Nothing,
    /// Vanilla, addition, subtraction: a file only when the source is a constant (`source_representation`).
    ConstantSource,
    /// Trainable types: always a state dict.
    Trained,
}

fn saved_state(vene_type: &str) -> SavedState {
    TYPE_MAP.iter().find(|(_, name, _)| *name == vene_type).map_or(SavedState::Trained, |(_, _, kept)| *kept)
}

/// The intervention config of an imported representation: pyvene's noise means its fixed table, and its
/// autoencoders take their latent width from the representation's `latent_dim`.
fn intervention_json(vene_type: &str, latent_dim: Option<i64>) -> Value {
    match (vene_type, latent_dim) {
        ("noise", _) => json!({"type": "noise", "pyvene_table": true}),
        (_, Some(latent_dim)) => json!({"type": vene_type, "latent_dim": latent_dim}),
        (_, None) => json!({"type": vene_type}),
    }
}

/// A pyvene-saved directory as a vene config plus the trained state of its interventions (`{key}/{name}`).
pub struct Imported {
    pub config: IntervenableConfig,
    pub state: Vec<(String, tch::Tensor)>,
    /// pyvene's `intervention_dimensions`: the width each intervention acts on (`None`: the full width).
    pub interchange_dims: Vec<Option<i64>>,
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
    let types = intervention_types(&saved, &path)?;
    let mode = match saved.mode.as_deref() {
        None | Some("parallel") => Mode::Parallel,
        Some("serial") => Mode::Serial,
        Some(other) => return Err(VeneError::Config(format!("{}: unknown mode '{other}'", path.display()))),
    };
    let mut representations = Vec::new();
    let mut constant_sources = Vec::new();
    for (index, fields) in saved.representations.iter().enumerate() {
        let (representation, constant) = representation(index, fields, types[index], &saved, &path)?;
        representations.push(representation);
        constant_sources.push(constant);
    }
    let interchange_dims = interchange_dims(&saved, representations.len(), &path)?;
    let mut config = IntervenableConfig { mode, representations };
    let keys = config.keys();
    let saved_keys = saved.sorted_keys.clone().unwrap_or_else(|| keys.clone());
    let mut state = Vec::new();
    for (index, &constant) in constant_sources.iter().enumerate() {
        let key = saved_keys.get(index).cloned().unwrap_or_else(|| keys[index].clone());
        let path = dir.join(format!("intkey_{key}.bin"));
        let kept = match saved_state(types[index]) {
            SavedState::Nothing => {
                state.extend(sourceless_state(&path, types[index], &keys[index])?);
                continue;
            }
            SavedState::ConstantSource if !constant => continue,
            kept => kept,
        };
        if !path.exists() {
            let holds = if kept == SavedState::Trained { "the trained state" } else { "a constant source" };
            return Err(VeneError::Config(format!(
                "{} is missing: it holds {holds} of the {} intervention on {}",
                path.display(),
                types[index],
                config.representations[index].component
            )));
        }
        let entries = read_torch_state_dict(&path)?;
        if kept == SavedState::ConstantSource {
            config.representations[index].source_representation = Some(constant_source(&path, entries)?);
        } else {
            state.extend(entries.into_iter().map(|(name, tensor)| (format!("{}/{name}", keys[index]), tensor)));
        }
    }
    Ok(Imported { config, state, interchange_dims })
}

/// The state a source-less intervention's `.bin` holds, when pyvene wrote one (it does when the intervention was given
/// a `source_representation`): the file is read, so a damaged one is an error, and noise keeps its saved table and
/// level; the others have nothing that changes their output (their buffers are widths).
fn sourceless_state(path: &Path, vene_type: &str, key: &str) -> Result<Vec<(String, tch::Tensor)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let entries = read_torch_state_dict(path)?;
    let kept: &[&str] = match vene_type {
        "noise" => &["noise", "noise_level"],
        "pca_rotated_space" => &["pca_components", "pca_mean", "pca_std"],
        _ => return Ok(Vec::new()),
    };
    Ok(entries
        .into_iter()
        .filter(|(name, _)| kept.contains(&name.as_str()))
        .map(|(name, tensor)| (format!("{key}/{name}"), tensor))
        .collect())
}

/// One vene type per representation: pyvene writes one class string per intervention (or one for all).
fn intervention_types(saved: &PyveneConfig, path: &Path) -> Result<Vec<&'static str>> {
    let count = saved.representations.len();
    let classes: Vec<String> = match &saved.intervention_types {
        Value::String(one) => vec![one.clone(); count],
        Value::Array(many) => many.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        other => return Err(VeneError::Config(format!("{}: unexpected intervention_types {other}", path.display()))),
    };
    if classes.len() != count {
        return Err(VeneError::Config(format!(
            "{}: {} intervention types for {count} representations",
            path.display(),
            classes.len()
        )));
    }
    classes.iter().map(|class| vene_type(class)).collect()
}

/// Representation `index` from pyvene's positional fields (`RepresentationConfig` order: layer, component, unit,
/// max_number_of_units, low_rank_dimension, intervention_type, intervention, subspace_partition, group_key,
/// intervention_link_key, moe_key, source_representation, hidden_source_representation, latent_dim), and whether
/// its source is a saved constant.
fn representation(
    index: usize,
    fields: &[Value],
    vene_type: &str,
    saved: &PyveneConfig,
    path: &Path,
) -> Result<(Representation, bool)> {
    let int = |i: usize| field(fields, i).and_then(Value::as_i64);
    let text_field = |i: usize, default: &str| field(fields, i).and_then(Value::as_str).unwrap_or(default).to_string();
    if let Some(moe_key) = field(fields, 10) {
        return Err(VeneError::Config(format!(
            "{}: representation {index} has moe_key {moe_key} (an expert of a mixture-of-experts layer); vene's \
             adapters have no per-expert sites (valid: null)",
            path.display()
        )));
    }
    let max_number_of_units = int(3).unwrap_or(1);
    if max_number_of_units < 1 {
        return Err(VeneError::Config(format!(
            "{}: representation {index} has max_number_of_units {max_number_of_units} (valid: 1 or more)",
            path.display()
        )));
    }
    let subspace_partition =
        field(fields, 7)
            .map(|v| serde_json::from_value::<Vec<Vec<i64>>>(v.clone()))
            .transpose()
            .map_err(|e| VeneError::Config(format!("representation {index}: bad subspace_partition: {e}")))?;
    let representation = Representation {
        layer: int(0).unwrap_or(0) as u32,
        component: text_field(1, "block_output"),
        unit: text_field(2, "pos"),
        max_number_of_units: max_number_of_units as u32,
        intervention: intervention_json(vene_type, int(13)),
        low_rank_dimension: int(4).map(|v| v as u32),
        subspace_partition,
        group_key: int(8),
        intervention_link_key: int(9),
        source_representation: None,
    };
    // pyvene marks a constant source three ways: the per-intervention flag, `hidden_source_representation` (what
    // save writes in place of the tensor), or the tensor itself.
    let constant = saved.intervention_constant_sources.as_ref().and_then(|c| c.get(index).copied()).unwrap_or(false)
        || field(fields, 12).and_then(Value::as_bool).unwrap_or(false)
        || field(fields, 11).is_some();
    Ok((representation, constant))
}

/// pyvene's `intervention_dimensions`, one per representation; absent or `null` (older saves) means the full width.
fn interchange_dims(saved: &PyveneConfig, count: usize, path: &Path) -> Result<Vec<Option<i64>>> {
    let Some(dims) = &saved.intervention_dimensions else {
        return Ok(vec![None; count]);
    };
    (0..count)
        .map(|index| match dims.get(index) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                VeneError::Config(format!(
                    "{}: intervention_dimensions[{index}] is {value} (valid: a whole number or null)",
                    path.display()
                ))
            }),
        })
        .collect()
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
