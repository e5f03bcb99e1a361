//! vene model adapter for pyvene's GRU models (`model_type` "gru": `GRUModel`, `GRUForClassification`,
//! `GRULMHeadModel`).
//!
//! Every site is called once per timestep with the step number, so unit `t` selects steps: an intervention at step
//! `t` acts at step `t` only, and a source step can be moved into a different base step. (pyvene 0.1.8 intervenes at
//! every step for unit `t`; vene does not.)

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor};
use vene_api::{
    model::ModelOutput, Hooks, InputKind, LoadRequest, Model, ModelAdapter, ModelCatalog, ModelInputs, PluginError,
    PluginResult, SiteLayout,
};
use vene_checkpoint::Weights;
use vene_nn::{component, Linear};

vene_api::export_plugin! {
    adapters: [GruAdapter],
    interventions: [],
}

/// Loads pyvene `gru` checkpoints.
pub struct GruAdapter;

impl ModelAdapter for GruAdapter {
    fn model_types(&self) -> Vec<String> {
        vec!["gru".to_string()]
    }

    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>> {
        let dir = Path::new(request.dir.as_str());
        let config: GruConfig = vene_checkpoint::read_config(dir).map_err(|e| PluginError::load(e.to_string()))?;
        let model = Gru::load(dir, config, request).map_err(|e| PluginError::load(e.to_string()))?;
        Ok(Box::new(model))
    }
}

/// The fields of pyvene's `GRUConfig` this adapter reads.
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

enum Head {
    /// `GRUModel`: the last layer's hidden state at every step.
    None,
    /// `GRUForClassification`: scores of the last (unpadded) step.
    Classifier(Linear),
    /// `GRULMHeadModel`: next-token logits at every step.
    LanguageModel(Linear),
}

struct Cell {
    x2h: Linear,
    h2h: Linear,
}

/// A loaded pyvene GRU.
pub struct Gru {
    config: GruConfig,
    wte: Option<Tensor>,
    cells: Vec<Cell>,
    head: Head,
    catalog: ModelCatalog,
}

impl Gru {
    fn load(dir: &Path, config: GruConfig, request: &LoadRequest<'_>) -> Result<Self, Box<dyn std::error::Error>> {
        let mut weights = Weights::load(dir, request.device.to_device(), request.dtype.to_kind())?;
        let architecture = vene_nn::architecture(dir).unwrap_or_default();
        weights.strip_prefixes(&["gru."]);
        let d = config.h_dim;
        let wte = if config.include_emb { Some(weights.take("wte.weight", &[config.vocab_size, d])?) } else { None };
        let bias = config.include_bias;
        let cells = (0..config.n_layer)
            .map(|l| {
                Ok(Cell {
                    x2h: Linear::load(&mut weights, &format!("cells.{l}.x2h"), d, 3 * d, bias)?,
                    h2h: Linear::load(&mut weights, &format!("cells.{l}.h2h"), d, 3 * d, bias)?,
                })
            })
            .collect::<vene_checkpoint::Result<Vec<_>>>()?;
        let head = match architecture.as_str() {
            "GRUForClassification" => Head::Classifier(Linear::load(&mut weights, "score", d, config.n_labels, false)?),
            "GRULMHeadModel" => {
                let weight = match weights.take_optional("lm_head.weight", &[config.vocab_size, d])? {
                    Some(weight) => weight,
                    None => wte.as_ref().ok_or("GRULMHeadModel without lm_head.weight or wte.weight")?.shallow_clone(),
                };
                Head::LanguageModel(Linear::from_parts(weight, None))
            }
            _ => Head::None,
        };
        let layers = config.n_layer as u32;
        let components = SITE_NAMES
            .iter()
            .map(|&name| {
                let dim = if name == "x2h_output" || name == "h2h_output" { 3 * d } else { d } as u32;
                component(name, SiteLayout::Recurrent, dim, layers, None, &module_paths(name))
            })
            .collect::<Vec<_>>();
        let catalog = ModelCatalog {
            model_type: "gru".into(),
            num_layers: layers,
            num_heads: 0,
            hidden_size: d as u32,
            vocab_size: if matches!(head, Head::LanguageModel(_)) { config.vocab_size as u32 } else { 0 },
            input: if config.include_emb { InputKind::TokenIds } else { InputKind::Features },
            components: components.into(),
        };
        Ok(Self { config, wte, cells, head, catalog })
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
}

impl Model for Gru {
    fn catalog(&self) -> ModelCatalog {
        self.catalog.clone()
    }

    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput> {
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
        let states = Tensor::stack(&outputs, 1);
        let output = match &self.head {
            Head::None => states,
            Head::LanguageModel(head) => head.forward(&states),
            Head::Classifier(score) => {
                let last = match inputs.attention_mask.into_option() {
                    Some(mask) => mask.to_tensor().to_device(device).sum_dim_intlist(-1, false, Kind::Int64) - 1,
                    None => Tensor::full([batch], steps - 1, (Kind::Int64, device)),
                };
                let pooled = states.index_select(0, &Tensor::arange(batch, (Kind::Int64, device)));
                let pooled =
                    pooled.gather(1, &last.view([batch, 1, 1]).expand([batch, 1, self.config.h_dim], false), false);
                score.forward(&pooled.squeeze_dim(1))
            }
        };
        Ok(ModelOutput { output, present: Vec::new() })
    }
}
