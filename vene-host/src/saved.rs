//! Saved interventions: a directory with `config.json` (the vene config, every constructor argument included) and
//! `interventions.safetensors` (each intervention's state as `{key}/{name}`). It is what one uploads to a hub repo.
//! Directories saved by pyvene (`config.json` with positional representations + `intkey_*.bin`) load too.

use std::path::Path;

use tch::Tensor;

use crate::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::{Result, VeneError},
    pyvene_import,
};

const STATE_FILE: &str = "interventions.safetensors";

/// A config with the state to load once it is bound to a model.
pub struct SavedInterventions {
    pub config: IntervenableConfig,
    pub state: Vec<(String, Tensor)>,
    /// Per representation, the width pyvene saved it to act on (`intervention_dimensions`); empty for vene saves.
    pub interchange_dims: Vec<Option<i64>>,
}

impl SavedInterventions {
    /// A vene config file, a directory saved by vene, or a directory saved by pyvene.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Ok(Self {
                config: IntervenableConfig::from_file(path)?,
                state: Vec::new(),
                interchange_dims: Vec::new(),
            });
        }
        let file = path.join("config.json");
        let text = std::fs::read_to_string(&file).map_err(|source| VeneError::Io { path: file.clone(), source })?;
        if pyvene_import::is_pyvene_config(&text) {
            let imported = pyvene_import::import_dir(path)?;
            return Ok(Self {
                config: imported.config,
                state: imported.state,
                interchange_dims: imported.interchange_dims,
            });
        }
        let config = IntervenableConfig::from_file(&file)?;
        let state_file = path.join(STATE_FILE);
        let state = if state_file.exists() {
            Tensor::read_safetensors(&state_file).map_err(|e| {
                VeneError::Config(format!("{} is not a valid safetensors file: {e}", state_file.display()))
            })?
        } else {
            Vec::new()
        };
        Ok(Self { config, state, interchange_dims: Vec::new() })
    }

    /// Restores the saved state into `model` (bound to this config), after checking that every intervention acts
    /// on the width pyvene saved it with.
    pub fn apply(self, model: &mut IntervenableModel) -> Result<()> {
        for (index, saved) in self.interchange_dims.iter().enumerate() {
            let (Some(saved), Some(width)) = (saved, model.intervention_width(index)) else {
                continue;
            };
            // pyvene acts on `[..., :interchange_dim]`: a saved width at least the full one is the full one. Its
            // autoencoders index latents with it instead, and vene's SAE plugin follows their subspaces.
            let kind = self.config.representations[index].intervention_type()?;
            if *saved < width && !matches!(kind, "autoencoder" | "jumprelu_sae") {
                return Err(VeneError::Config(format!(
                    "representation {index} ({kind} on {}): pyvene saved it to act on the first {saved} of its \
                     {width} dimensions (set_interchange_dim); vene acts on the full width or on the subspaces \
                     given at run time (valid: intervention_dimensions {width} or null)",
                    self.config.representations[index].component
                )));
            }
        }
        model.load_state(self.state)
    }
}

/// Writes `model`'s config and intervention state to `dir`. The files are written into a fresh sibling directory
/// that then replaces `dir`, so an interrupted save never leaves a mix of old and new files.
pub fn save(model: &IntervenableModel, dir: &Path) -> Result<()> {
    crate::outputs::write_dir(dir, |staging| {
        let config = serde_json::to_string_pretty(model.config()).map_err(|e| VeneError::Config(e.to_string()))?;
        std::fs::write(staging.join("config.json"), config)
            .map_err(|source| VeneError::Io { path: staging.to_path_buf(), source })?;
        let state: Vec<(String, Tensor)> = model.state()?.into_iter().map(|(n, t)| (n, t.detach())).collect();
        Ok(vene_checkpoint::save_safetensors(&staging.join(STATE_FILE), &state)?)
    })
}
