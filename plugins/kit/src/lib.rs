//! Helpers for intervention plugins (the DAS, steering and SAE plugins use them; third parties may too).

use serde::de::DeserializeOwned;
use tch::Tensor;
use vene_api::{PluginError, PluginResult};

/// Parses an intervention's JSON config after checking that its `"type"` is `type_name`; `T` sees every field but
/// `"type"`.
pub fn parse_config<T: DeserializeOwned>(type_name: &str, config_json: &str) -> PluginResult<T> {
    let invalid = |message: String| PluginError::invalid_config(format!("{type_name}: {message}"));
    let mut value: serde_json::Value = serde_json::from_str(config_json).map_err(|e| invalid(e.to_string()))?;
    let kind = value.as_object_mut().and_then(|fields| fields.remove("type"));
    match kind.as_ref().and_then(serde_json::Value::as_str) {
        Some(kind) if kind == type_name => serde_json::from_value(value).map_err(|e| invalid(e.to_string())),
        other => Err(PluginError::invalid_config(format!(
            "asked for '{type_name}' with a '{}' config",
            other.unwrap_or("untyped")
        ))),
    }
}

/// `(batch, 1, …, width)` mask shaped like `like` (last axis `width`), true at `dims[i]` for example `i`.
pub fn subspace_mask(dims: &[Vec<i64>], width: i64, like: &Tensor) -> PluginResult<Tensor> {
    let size = like.size();
    let batch = size[0];
    if dims.len() as i64 != batch {
        return Err(PluginError::invalid_input(format!("subspaces for {} examples, batch of {batch}", dims.len())));
    }
    let mut mask = vec![false; (batch * width) as usize];
    for (example, selected) in dims.iter().enumerate() {
        for &d in selected {
            if !(0..width).contains(&d) {
                return Err(PluginError::invalid_input(format!("subspace dimension {d} is outside 0..{width}")));
            }
            mask[example * width as usize + d as usize] = true;
        }
    }
    let mut view = vec![1i64; size.len()];
    view[0] = batch;
    view[size.len() - 1] = width;
    Ok(Tensor::from_slice(&mask).view(view.as_slice()).to_device(like.device()))
}

/// Fails unless the last axis of `tensor` is `width`.
pub fn check_width(tensor: &Tensor, width: i64, name: &str) -> PluginResult<()> {
    match tensor.size().last() {
        Some(&last) if last == width => Ok(()),
        _ => Err(PluginError::invalid_input(format!(
            "{name} was created for representations of width {width}, got shape {:?}",
            tensor.size()
        ))),
    }
}

/// The source, or an error saying `name` needs one.
pub fn require_source<'a>(source: Option<&'a Tensor>, name: &str) -> PluginResult<&'a Tensor> {
    source.ok_or_else(|| PluginError::invalid_input(format!("{name} needs a source")))
}

/// Copies `state` entries into `slots` by name. Unknown names and wrong shapes are errors naming both sides; the
/// `embed_dim` / `interchange_dim` buffers pyvene saves beside the weights are skipped.
pub fn load_named(name: &str, slots: &mut [(&str, &mut Tensor)], state: Vec<(String, Tensor)>) -> PluginResult<()> {
    for (key, value) in state {
        if key == "embed_dim" || key == "interchange_dim" {
            continue;
        }
        let Some((_, slot)) = slots.iter_mut().find(|(slot_name, _)| *slot_name == key) else {
            let known: Vec<&str> = slots.iter().map(|(n, _)| *n).collect();
            return Err(PluginError::invalid_config(format!(
                "{name} has no state entry '{key}' (it has: {})",
                known.join(", ")
            )));
        };
        if slot.size() != value.size() {
            return Err(PluginError::invalid_config(format!(
                "{name}: saved '{key}' has shape {:?}, this intervention needs {:?} (was it saved for another site?)",
                value.size(),
                slot.size()
            )));
        }
        tch::no_grad(|| slot.copy_(&value.to_kind(slot.kind()).to_device(slot.device())));
    }
    Ok(())
}

/// Reads the tensors of a safetensors file, naming the file in errors.
pub fn read_safetensors(path: &str) -> PluginResult<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| PluginError::load(format!("cannot read {path}: {e}")))
}

/// A matrix given in a config as rows of numbers; `what` names it in the error (`"leace: eraser"`).
pub fn matrix(what: &str, rows: &[Vec<f32>]) -> PluginResult<Tensor> {
    let width = rows.first().map_or(0, Vec::len);
    if width == 0 || rows.iter().any(|r| r.len() != width) {
        return Err(PluginError::invalid_config(format!("{what} must be a non-empty list of rows of one length")));
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_slice(&flat).view([rows.len() as i64, width as i64]))
}
