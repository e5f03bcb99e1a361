//! pyvene's GRU (`GRUModel`): embeddings and stacked GRU cells, every gate a hook site called once per timestep.
//! Used by the GRU adapter and, to train the demo's GRU, by the host.

use serde::Deserialize;
use tch::Tensor;
use vene_api::{ComponentInfo, Hooks, ModelInputs, PluginError, PluginResult, SiteLayout};
use vene_checkpoint::Weights;

use crate::{component, Linear};

/// The fields of pyvene's `GRUConfig` the GRU body reads.
#[derive(Debug, Clone, Deserialize)]
pub struct GruConfig {
    pub h_dim: i64,
    pub n_layer: i64,
    #[serde(default)]
    pub include_emb: bool,
    #[serde(default = "default_true")]
    pub include_bias: bool,
    #[serde(default)]
    pub vocab_size: i64,
    #[serde(default)]
    pub n_labels: i64,
}

fn default_true() -> bool {
    true
}

/// The GRU's hook sites, in catalog order.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Site {
    CellInput,
    X2hOutput,
    H2hOutput,
    ResetX2hOutput,
    UpdateX2hOutput,
    NewX2hOutput,
    ResetH2hOutput,
    UpdateH2hOutput,
    NewH2hOutput,
    ResetGateInput,
    ResetGateOutput,
    UpdateGateInput,
    UpdateGateOutput,
    NewGateInput,
    NewGateOutput,
    CellOutput,
}

const SITE_NAMES: [&str; 16] = [
    "cell_input",
    "x2h_output",
    "h2h_output",
    "reset_x2h_output",
    "update_x2h_output",
    "new_x2h_output",
    "reset_h2h_output",
    "update_h2h_output",
    "new_h2h_output",
    "reset_gate_input",
    "reset_gate_output",
    "update_gate_input",
    "update_gate_output",
    "new_gate_input",
    "new_gate_output",
    "cell_output",
];

/// pyvene module paths of a site (the thirds of x2h/h2h are slices of a module's output and have none).
fn module_paths(name: &str) -> Vec<&'static str> {
    match name {
        "cell_input" => vec!["cells[{layer}].input", "gru.cells[{layer}].input"],
        "cell_output" => vec!["cells[{layer}].output", "gru.cells[{layer}].output"],
        "x2h_output" => vec!["cells[{layer}].x2h.output", "gru.cells[{layer}].x2h.output"],
        "h2h_output" => vec!["cells[{layer}].h2h.output", "gru.cells[{layer}].h2h.output"],
        "reset_gate_input" => vec!["cells[{layer}].reset_act.input", "gru.cells[{layer}].reset_act.input"],
        "reset_gate_output" => vec!["cells[{layer}].reset_act.output", "gru.cells[{layer}].reset_act.output"],
        "update_gate_input" => vec!["cells[{layer}].update_act.input", "gru.cells[{layer}].update_act.input"],
        "update_gate_output" => vec!["cells[{layer}].update_act.output", "gru.cells[{layer}].update_act.output"],
        "new_gate_input" => vec!["cells[{layer}].new_act.input", "gru.cells[{layer}].new_act.input"],
        "new_gate_output" => vec!["cells[{layer}].new_act.output", "gru.cells[{layer}].new_act.output"],
        _ => Vec::new(),
    }
}

struct Cell {
    x2h: Linear,
    h2h: Linear,
}

/// The embeddings (with `include_emb`) and cells of a GRU.
pub struct GruBody {
    pub config: GruConfig,
    wte: Option<Tensor>,
    cells: Vec<Cell>,
}

/// The catalog entries of the GRU's sites, in [`Site`] order.
pub fn components(config: &GruConfig) -> Vec<ComponentInfo> {
    let d = config.h_dim;
    SITE_NAMES
        .iter()
        .map(|&name| {
            let dim = if name == "x2h_output" || name == "h2h_output" { 3 * d } else { d } as u32;
            component(name, SiteLayout::Recurrent, dim, config.n_layer as u32, None, &module_paths(name))
        })
        .collect()
}

impl GruBody {
    /// Loads from `weights` whose names start at the body (`wte.weight`, `cells.0.x2h.weight`, …).
    pub fn load(weights: &mut Weights, config: GruConfig) -> vene_checkpoint::Result<Self> {
        let d = config.h_dim;
        let wte = if config.include_emb { Some(weights.take("wte.weight", &[config.vocab_size, d])?) } else { None };
        let bias = config.include_bias;
        let cells = (0..config.n_layer)
            .map(|l| {
                Ok(Cell {
                    x2h: Linear::load(weights, &format!("cells.{l}.x2h"), d, 3 * d, bias)?,
                    h2h: Linear::load(weights, &format!("cells.{l}.h2h"), d, 3 * d, bias)?,
                })
            })
            .collect::<vene_checkpoint::Result<Vec<_>>>()?;
        Ok(Self { config, wte, cells })
    }

    pub fn wte(&self) -> Option<&Tensor> {
        self.wte.as_ref()
    }

    /// One cell at one step, calling every site of the cell.
    #[allow(clippy::too_many_arguments)]
    fn cell(
        &self,
        layer: u32,
        step: u32,
        cell: &Cell,
        input: Tensor,
        hidden: &Tensor,
        hooks: &mut Hooks<'_>,
    ) -> PluginResult<Tensor> {
        let mut site = |site: Site, value: Tensor| hooks.site_at(site as u32, layer, step, value);
        let input = site(Site::CellInput, input)?;
        let x = site(Site::X2hOutput, cell.x2h.forward(&input))?;
        let h = site(Site::H2hOutput, cell.h2h.forward(hidden))?;
        let (xs, hs) = (x.chunk(3, 1), h.chunk(3, 1));
        let x_reset = site(Site::ResetX2hOutput, xs[0].shallow_clone())?;
        let x_update = site(Site::UpdateX2hOutput, xs[1].shallow_clone())?;
        let x_new = site(Site::NewX2hOutput, xs[2].shallow_clone())?;
        let h_reset = site(Site::ResetH2hOutput, hs[0].shallow_clone())?;
        let h_update = site(Site::UpdateH2hOutput, hs[1].shallow_clone())?;
        let h_new = site(Site::NewH2hOutput, hs[2].shallow_clone())?;
        let reset = site(Site::ResetGateInput, x_reset + h_reset)?;
        let reset = site(Site::ResetGateOutput, reset.sigmoid())?;
        let update = site(Site::UpdateGateInput, x_update + h_update)?;
        let update = site(Site::UpdateGateOutput, update.sigmoid())?;
        let new = site(Site::NewGateInput, x_new + &reset * h_new)?;
        let new = site(Site::NewGateOutput, new.tanh())?;
        let next = &update * hidden + (1.0 - &update) * new;
        site(Site::CellOutput, next)
    }

    /// The last layer's hidden state at every step, `(batch, steps, h_dim)`.
    pub fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<Tensor> {
        let device = self.cells[0].x2h.weight().device();
        let kind = self.cells[0].x2h.weight().kind();
        let embedded = match (&self.wte, inputs.input_ids.into_option(), inputs.features.into_option()) {
            (Some(wte), Some(ids), _) => {
                let ids = ids.to_tensor().to_device(device);
                let (low, high) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
                if low < 0 || high >= self.config.vocab_size {
                    return Err(PluginError::invalid_input(format!(
                        "token id {} is outside the vocabulary [0, {})",
                        if low < 0 { low } else { high },
                        self.config.vocab_size
                    )));
                }
                Tensor::embedding(wte, &ids, -1, false, false)
            }
            (_, _, Some(features)) => features.to_tensor().to_device(device).to_kind(kind),
            _ => return Err(PluginError::invalid_input("this GRU needs \"inputs\" (or input_ids with include_emb)")),
        };
        let size = embedded.size();
        if size.len() != 3 || size[2] != self.config.h_dim {
            return Err(PluginError::invalid_input(format!(
                "GRU inputs must be (batch, steps, {}), got {size:?}",
                self.config.h_dim
            )));
        }
        let (batch, steps) = (size[0], size[1]);
        let mut hidden: Vec<Tensor> =
            self.cells.iter().map(|_| Tensor::zeros([batch, self.config.h_dim], (kind, device))).collect();
        let mut outputs = Vec::with_capacity(steps as usize);
        for step in 0..steps {
            let mut input = embedded.select(1, step);
            for (index, cell) in self.cells.iter().enumerate() {
                let next = self.cell(index as u32, step as u32, cell, input, &hidden[index], hooks)?;
                hidden[index] = next.shallow_clone();
                input = next;
            }
            outputs.push(input);
        }
        Ok(Tensor::stack(&outputs, 1))
    }
}
