//! torch's `nn.LSTM` (stacked, one or two directions) and `nn.LSTMCell`, unrolled step by step so that every gate,
//! the cell state and the cell output are hook sites called once per time step (unit `t`, as for the GRU).
//!
//! The step number a site reports is the position in the sequence, for both directions: the reverse direction reads
//! the sequence from its end, but its site at step `t` is the state after reading input `t`. So an intervention at
//! `t` names the same input column in either direction.

use tch::Tensor;
use vene_api::{ComponentInfo, Hooks, PluginResult, SiteLayout};
use vene_checkpoint::{Result, Weights};

use crate::component;

/// The sites of one LSTM direction, in catalog order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Site {
    /// `x_t`, the cell's input at step t.
    CellInput,
    /// `i_t = σ(·)`.
    InputGate,
    /// `f_t = σ(·)`.
    ForgetGate,
    /// `g_t = tanh(·)`, the candidate cell values.
    CellGate,
    /// `o_t = σ(·)`.
    OutputGate,
    /// `c_t = f_t c_{t-1} + i_t g_t`, carried to the next step.
    CellState,
    /// `h_t = o_t tanh(c_t)`, the hidden state: the step's output and carried to the next step.
    CellOutput,
}

const SITE_NAMES: [&str; 7] =
    ["cell_input", "input_gate", "forget_gate", "cell_gate", "output_gate", "cell_state", "cell_output"];

/// How many catalog entries an LSTM with `directions` directions adds.
pub fn site_count(directions: usize) -> u32 {
    (SITE_NAMES.len() * directions) as u32
}

/// The catalog entries of an LSTM's sites: the forward direction's, then (bidirectional) the same names with
/// `_reverse`. `input_dims[l]` is layer `l`'s input size.
pub fn components(hidden: i64, input_dims: &[i64], directions: usize) -> Vec<ComponentInfo> {
    let layers = input_dims.len() as u32;
    let suffixes: &[&str] = if directions == 2 { &["", "_reverse"] } else { &[""] };
    suffixes
        .iter()
        .flat_map(|suffix| {
            SITE_NAMES.iter().map(move |name| {
                let mut info =
                    component(&format!("{name}{suffix}"), SiteLayout::Recurrent, hidden as u32, layers, None, &[]);
                if *name == "cell_input" {
                    info.layer_dims = input_dims.iter().map(|&d| d as u32).collect();
                    info.dim = info.layer_dims.iter().copied().max().unwrap_or(0);
                }
                info
            })
        })
        .collect()
}

/// The weights of one direction of one layer: `(4h, in)`, `(4h, h)` and two `(4h)` biases, gates in torch's order
/// input, forget, cell, output.
pub struct LstmCell {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
}

impl LstmCell {
    /// `prefix.weight_ih{suffix}`, … (`suffix` is `_l0`, `_l1_reverse`, or empty for `nn.LSTMCell`).
    pub fn load(weights: &mut Weights, prefix: &str, suffix: &str, input: i64, hidden: i64) -> Result<Self> {
        let mut take = |name: &str, shape: &[i64]| weights.take(&format!("{prefix}.{name}{suffix}"), shape);
        Ok(Self {
            weight_ih: take("weight_ih", &[4 * hidden, input])?,
            weight_hh: take("weight_hh", &[4 * hidden, hidden])?,
            bias_ih: take("bias_ih", &[4 * hidden])?,
            bias_hh: take("bias_hh", &[4 * hidden])?,
        })
    }

    pub fn hidden_size(&self) -> i64 {
        self.weight_hh.size()[1]
    }

    pub fn input_size(&self) -> i64 {
        self.weight_ih.size()[1]
    }

    /// `x W_ih^T + b_ih` for every step of `(b, T, in)` at once.
    pub fn project_inputs(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight_ih, Some(&self.bias_ih))
    }

    /// One step from `(h, c)`: returns the new `(h, c)`, each site called with `layer` and `step`. `first_site` is
    /// the catalog index of this direction's [`Site::CellInput`].
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        hooks: &mut Hooks<'_>,
        first_site: u32,
        layer: u32,
        step: u32,
        input: Tensor,
        state: (&Tensor, &Tensor),
    ) -> PluginResult<(Tensor, Tensor)> {
        let input = hooks.site_at(first_site + Site::CellInput as u32, layer, step, input)?;
        self.step_projected(hooks, first_site, layer, step, self.project_inputs(&input), state)
    }

    /// [`LstmCell::step`] from the input already projected by [`LstmCell::project_inputs`] (when no intervention
    /// touches `cell_input`, the whole sequence is projected in one product).
    #[allow(clippy::too_many_arguments)]
    pub fn step_projected(
        &self,
        hooks: &mut Hooks<'_>,
        first_site: u32,
        layer: u32,
        step: u32,
        projected: Tensor,
        state: (&Tensor, &Tensor),
    ) -> PluginResult<(Tensor, Tensor)> {
        let mut site = |site: Site, value: Tensor| hooks.site_at(first_site + site as u32, layer, step, value);
        let gates = projected + state.0.linear(&self.weight_hh, Some(&self.bias_hh));
        let parts = gates.chunk(4, -1);
        let input_gate = site(Site::InputGate, parts[0].sigmoid())?;
        let forget_gate = site(Site::ForgetGate, parts[1].sigmoid())?;
        let cell_gate = site(Site::CellGate, parts[2].tanh())?;
        let output_gate = site(Site::OutputGate, parts[3].sigmoid())?;
        let cell = site(Site::CellState, forget_gate * state.1 + input_gate * cell_gate)?;
        let hidden = site(Site::CellOutput, output_gate * cell.tanh())?;
        Ok((hidden, cell))
    }
}

/// torch's `nn.LSTM` with `batch_first=True`, zero initial state.
pub struct Lstm {
    /// Per layer, the forward direction and (bidirectional) the reverse one.
    layers: Vec<Vec<LstmCell>>,
}

impl Lstm {
    /// `prefix.weight_ih_l{k}` and, with two `directions`, `prefix.weight_ih_l{k}_reverse`, for `num_layers` layers.
    pub fn load(
        weights: &mut Weights,
        prefix: &str,
        input: i64,
        hidden: i64,
        num_layers: usize,
        directions: usize,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|k| {
                let layer_input = if k == 0 { input } else { hidden * directions as i64 };
                ["", "_reverse"][..directions]
                    .iter()
                    .map(|reverse| LstmCell::load(weights, prefix, &format!("_l{k}{reverse}"), layer_input, hidden))
                    .collect()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn directions(&self) -> usize {
        self.layers[0].len()
    }

    pub fn hidden_size(&self) -> i64 {
        self.layers[0][0].hidden_size()
    }

    /// The input size of each layer.
    pub fn input_sizes(&self) -> Vec<i64> {
        self.layers.iter().map(|cells| cells[0].input_size()).collect()
    }

    /// `(batch, steps, in)` → `(batch, steps, directions × hidden)`. Layer `k` reports itself as `first_layer + k`;
    /// `first_site` is the catalog index of the forward direction's `cell_input`.
    pub fn forward(
        &self,
        x: &Tensor,
        hooks: &mut Hooks<'_>,
        first_site: u32,
        first_layer: u32,
    ) -> PluginResult<Tensor> {
        let mut x = x.shallow_clone();
        for (k, cells) in self.layers.iter().enumerate() {
            let outputs = cells
                .iter()
                .enumerate()
                .map(|(direction, cell)| {
                    let sites = first_site + site_count(1) * direction as u32;
                    run_direction(cell, &x, hooks, sites, first_layer + k as u32, direction == 1)
                })
                .collect::<PluginResult<Vec<_>>>()?;
            x = Tensor::cat(&outputs, -1);
        }
        Ok(x)
    }
}

/// One direction over the whole sequence: `(batch, steps, hidden)` in sequence order.
fn run_direction(
    cell: &LstmCell,
    x: &Tensor,
    hooks: &mut Hooks<'_>,
    first_site: u32,
    layer: u32,
    reverse: bool,
) -> PluginResult<Tensor> {
    let (batch, steps) = (x.size()[0], x.size()[1]);
    let zeros = Tensor::zeros([batch, cell.hidden_size()], (x.kind(), x.device()));
    let (mut hidden, mut state) = (zeros.shallow_clone(), zeros);
    let mut outputs: Vec<Option<Tensor>> = (0..steps).map(|_| None).collect();
    let order: Vec<i64> = if reverse { (0..steps).rev().collect() } else { (0..steps).collect() };
    let projected = (!hooks.is_active(first_site + Site::CellInput as u32, layer)).then(|| cell.project_inputs(x));
    for t in order {
        let (h, c) = match &projected {
            Some(projected) => {
                cell.step_projected(hooks, first_site, layer, t as u32, projected.select(1, t), (&hidden, &state))?
            }
            None => cell.step(hooks, first_site, layer, t as u32, x.select(1, t), (&hidden, &state))?,
        };
        outputs[t as usize] = Some(h.shallow_clone());
        (hidden, state) = (h, c);
    }
    Ok(Tensor::stack(&outputs.into_iter().flatten().collect::<Vec<_>>(), 1))
}
