//! Saving and resuming a training run's progress: parameters, optimiser moments and where the run stands, in one
//! safetensors file written atomically.

use std::path::Path;

use tch::Tensor;

use super::TrainOptions;
use crate::{
    error::{Result, VeneError},
    optim::Adam,
};

/// Where a checkpointed run stands.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Progress {
    /// Steps done.
    pub(super) step: usize,
    /// Summed loss × examples of the epoch in progress.
    pub(super) epoch_loss: f64,
    pub(super) first_epoch_loss: f64,
    pub(super) last_epoch_loss: f64,
}

impl Progress {
    /// Closes epoch `epoch` of `examples` examples: its mean loss becomes the last (and, first time, the first).
    pub(super) fn end_epoch(&mut self, epoch: usize, examples: usize) {
        let epoch_loss = self.epoch_loss / examples as f64;
        if epoch == 0 {
            self.first_epoch_loss = epoch_loss;
        }
        self.last_epoch_loss = epoch_loss;
        self.epoch_loss = 0.0;
    }
}

/// What must match for a checkpoint to be resumed: the options that shape the run and the data's size.
pub(super) fn run_identity(options: &TrainOptions, examples: usize, parameters: &[(String, Tensor)]) -> String {
    let shapes: Vec<String> = parameters.iter().map(|(name, p)| format!("{name}{:?}", p.size())).collect();
    let objective = options
        .model_objective
        .map_or(String::new(), |o| format!(" model interchange {} task {}", o.interchange_weight, o.task_weight));
    format!(
        "epochs {} batch {} lr {} warmup {} eval {} seed {} examples {examples} parameters {}{objective}",
        options.epochs,
        options.batch_size,
        options.learning_rate,
        options.warmup_fraction,
        options.eval_fraction,
        options.seed,
        shapes.join(" ")
    )
}

pub(super) fn save_checkpoint(
    path: &Path,
    identity: &str,
    progress: &Progress,
    adam: &Adam,
    parameters: &[(String, Tensor)],
) -> Result<()> {
    let mut tensors = vec![
        ("run".to_string(), Tensor::from_slice(&identity.bytes().map(i64::from).collect::<Vec<_>>())),
        ("progress.step".to_string(), Tensor::from(progress.step as i64)),
        (
            "progress.losses".to_string(),
            Tensor::from_slice(&[progress.epoch_loss, progress.first_epoch_loss, progress.last_epoch_loss]),
        ),
    ];
    tensors.extend(parameters.iter().map(|(name, p)| (format!("parameter.{name}"), p.detach())));
    tensors.extend(adam.state());
    Ok(vene_checkpoint::save_safetensors(path, &tensors)?)
}

/// Restores a checkpoint into the parameters and the optimiser; errors if it belongs to another run.
pub(super) fn resume(
    path: &Path,
    identity: &str,
    adam: &mut Adam,
    parameters: &[(String, Tensor)],
) -> Result<Progress> {
    let mut saved: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| {
            VeneError::Config(format!("the checkpoint {} is not a valid safetensors file: {e}", path.display()))
        })?
        .into_iter()
        .collect();
    let run: Vec<u8> = match saved.get("run") {
        Some(codes) => Vec::<i64>::try_from(codes)?.into_iter().map(|c| c as u8).collect(),
        None => Vec::new(),
    };
    if run != identity.as_bytes() {
        return Err(VeneError::Config(format!(
            "the checkpoint {} belongs to another run ({}); this run is {identity}. Remove it to start afresh",
            path.display(),
            String::from_utf8_lossy(&run)
        )));
    }
    let missing = |name: &str| VeneError::Config(format!("the checkpoint {} has no {name}", path.display()));
    let _no_grad = tch::no_grad_guard();
    for (name, parameter) in parameters {
        let value = saved.remove(&format!("parameter.{name}")).ok_or_else(|| missing(name))?;
        parameter.shallow_clone().copy_(&value);
    }
    adam.load_state(|name| saved.get(name).map(Tensor::shallow_clone))?;
    let step = saved.get("progress.step").ok_or_else(|| missing("progress.step"))?.int64_value(&[]) as usize;
    let losses = Vec::<f64>::try_from(saved.get("progress.losses").ok_or_else(|| missing("progress.losses"))?)?;
    let [epoch_loss, first_epoch_loss, last_epoch_loss] = losses[..] else {
        return Err(missing("three progress.losses"));
    };
    Ok(Progress { step, epoch_loss, first_epoch_loss, last_epoch_loss })
}
