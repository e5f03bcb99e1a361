//! Training the model's own weights (interchange intervention training): the objective, the task loss on the
//! bases, and saving the trained model as a checkpoint its adapter (and pyvene / transformers) loads.

use std::path::Path;

use tch::{Kind, Tensor};

use super::{batch::last_logits, Batch};
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
};

/// The weights of the losses when the model itself is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelObjective {
    /// Of the cross entropy of the intervened run against the counterfactual labels.
    pub interchange_weight: f64,
    /// Of the cross entropy of the plain run against the bases' factual labels (`base_label`).
    pub task_weight: f64,
}

/// The plain model's loss and correct count on the bases' factual labels; `None` when the batch has none.
pub(super) fn task_loss(model: &LoadedModel, batch: &Batch) -> Result<Option<(Tensor, i64)>> {
    let Some(labels) = &batch.base_labels else { return Ok(None) };
    let output = model.forward_plain(&batch.base)?.output;
    let logits = last_logits(&output, batch.base.attention_mask.as_ref()).to_kind(Kind::Float);
    let correct = logits.argmax(-1, false).eq_tensor(labels).sum(Kind::Int64).int64_value(&[]);
    Ok(Some((logits.cross_entropy_for_logits(labels), correct)))
}

/// `interchange_weight × interchange_loss + task_weight × task loss`.
pub(super) fn objective(
    model: &LoadedModel,
    batch: &Batch,
    weights: &ModelObjective,
    interchange_loss: &Tensor,
) -> Result<Tensor> {
    let interchange = interchange_loss * weights.interchange_weight;
    if weights.task_weight == 0.0 {
        return Ok(interchange);
    }
    let (task, _) = task_loss(model, batch)?.ok_or_else(|| {
        VeneError::Inputs(
            "the task loss needs every example's factual \"base_label\" (vene causal-model writes it)".to_string(),
        )
    })?;
    Ok(interchange + task * weights.task_weight)
}

/// The model's weights, made trainable, named `model.<checkpoint name>`.
pub(super) fn trainable_weights(model: &LoadedModel) -> Result<Vec<(String, Tensor)>> {
    Ok(model
        .parameters()?
        .into_iter()
        .map(|(name, tensor)| (format!("model.{name}"), tensor.set_requires_grad(true)))
        .collect())
}

/// Freezes the model's weights again once training is over.
pub(super) fn freeze(model: &LoadedModel) -> Result<()> {
    for (_, tensor) in model.parameters()? {
        let _ = tensor.set_requires_grad(false);
    }
    Ok(())
}

/// Files of a model directory that are weights (replaced by the trained ones), not settings or tokenizers.
fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".gguf") || name.ends_with(".index.json")
}

/// Writes the model's current weights to `dir` as `model.safetensors`, beside copies of the other files of the
/// directory it was loaded from (config.json, tokenizer files); an old `dir` is replaced only once all is written.
pub fn save_model(model: &LoadedModel, dir: &Path) -> Result<()> {
    let source = model.dir();
    if !source.is_dir() {
        return Err(VeneError::Config(format!(
            "{} is a single file; a trained model is saved only for models loaded from a directory",
            source.display()
        )));
    }
    let weights: Vec<(String, Tensor)> = model
        .parameters()?
        .into_iter()
        .map(|(name, tensor)| (name, tensor.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    let entries = std::fs::read_dir(source).map_err(|e| VeneError::Io { path: source.to_path_buf(), source: e })?;
    let kept: Vec<std::path::PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !is_weight_file(n)))
        .collect();
    crate::outputs::write_dir(dir, |staging| {
        for file in &kept {
            let target = staging.join(file.file_name().unwrap_or_default());
            std::fs::copy(file, &target).map_err(|source| VeneError::Io { path: file.clone(), source })?;
        }
        Ok(vene_checkpoint::save_safetensors(&staging.join("model.safetensors"), &weights)?)
    })
}
