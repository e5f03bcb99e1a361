//! The intervention engine: binds a config to a loaded model and runs intervened forward passes with pyvene's
//! semantics (parallel and serial modes, groups, linked interventions, constant sources, collect, skip).
//!
//! A run is a sequence of forward passes, each with a *plan*: per hook site, the getters (store the selected units of
//! a source run) and setters (gather base units, apply the intervention, scatter back) to execute there. Sites
//! without actions are inactive, so the adapter skips them with one flag check.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{ROption, RResult};
use tch::Tensor;
use vene_api::{
    model::HookSink, DTypeSpec, DeviceSpec, ErrorKind, Hooks, Intervention, InterventionSpec, InterventionTraits,
    ModelCatalog, OwnedTensor, PluginError, SiteCall, TensorRef,
};

use crate::{
    config::{IntervenableConfig, Mode, Representation},
    error::{Result, VeneError},
    interventions,
    locations::{expand_partition, Selection, Subspaces, UnitLocations, UnitLocs},
    model::{ForwardInputs, ForwardOutput, LoadedModel},
    plugins::PluginSet,
    units::{constant_vector, flatten_units, unflatten_units, unit_kind, Indexer, UnitKind},
};

/// A representation resolved against the model's catalog.
struct Bound {
    key: String,
    /// "vanilla on block_output at layer 1", for messages.
    description: String,
    component: u32,
    layer: u32,
    unit: UnitKind,
    instance: usize,
    traits: InterventionTraits,
    /// Size of the axis subspaces index: the component dimension, times the units for distributed interventions.
    subspace_width: i64,
    partition: Option<Vec<Vec<i64>>>,
    constant_source: Option<Tensor>,
    /// For `skip`: the component whose tensor is this site's input.
    skip_input: Option<u32>,
}

impl Bound {
    /// Whether this representation reads a source run (rather than a constant, the site input, or nothing).
    fn reads_source_run(&self) -> bool {
        self.traits.needs_source && self.constant_source.is_none() && self.skip_input.is_none()
    }
}

/// The results of one intervened run.
pub struct RunOutput {
    /// The model's final output of the intervened base run (logits for language models).
    pub output: Tensor,
    /// Activations returned by collect interventions, in config order.
    pub collected: Vec<Tensor>,
    /// The key/value cache, when the base inputs asked for it.
    pub present: Vec<Tensor>,
    /// Per intervened site of the base pass, in the order they acted: its description and whether every value it
    /// wrote was finite (a 0-d bool tensor, read only when asked).
    finite_writes: Vec<(String, Tensor)>,
}

impl RunOutput {
    /// The first intervened site whose output has a NaN or an infinite value (say `noise` with a huge level).
    pub fn first_non_finite_site(&self) -> Option<&str> {
        self.finite_writes.iter().find(|(_, finite)| finite.int64_value(&[]) == 0).map(|(site, _)| site.as_str())
    }
}

/// Source activations computed once by [`IntervenableModel::prepare`].
pub struct PreparedRun {
    state: RunState,
    setters: Vec<(usize, Selection)>,
    batch: i64,
}

/// A model with interventions bound to its hook sites.
pub struct IntervenableModel {
    model: LoadedModel,
    config: IntervenableConfig,
    reps: Vec<Bound>,
    instances: Vec<Box<dyn Intervention>>,
    groups: Vec<Vec<usize>>,
}

/// Resolves a catalog name or a pyvene module path (`h[3].mlp.output`, `transformer.h.3.mlp.output`).
pub fn resolve_component(catalog: &ModelCatalog, rep: &Representation) -> Result<(u32, u32)> {
    if let Some(index) = catalog.component_index(&rep.component) {
        return Ok((index as u32, rep.layer));
    }
    let path = normalise_module_path(&rep.component);
    for (index, component) in catalog.components.iter().enumerate() {
        for template in component.module_paths.iter() {
            let Some((prefix, suffix)) = template.as_str().split_once("{layer}") else {
                continue;
            };
            let layer = path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|number| number.parse::<u32>().ok());
            if let Some(layer) = layer {
                return Ok((index as u32, layer));
            }
        }
    }
    Err(VeneError::UnknownComponent {
        component: rep.component.clone(),
        model_type: catalog.model_type.to_string(),
        known: catalog.component_names().iter().map(|s| s.to_string()).collect(),
    })
}

/// `transformer.h.3.mlp.output` → `h[3].mlp.output`.
fn normalise_module_path(path: &str) -> String {
    let trimmed = ["transformer.", "model.", "gpt_neox.", "gru.", "mlp."]
        .iter()
        .find_map(|p| path.strip_prefix(p))
        .unwrap_or(path);
    trimmed.split('.').fold(String::new(), |mut out, part| {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
        out
    })
}

impl IntervenableModel {
    /// Binds `config` to `model`, creating every intervention (`seed` seeds their initialisation).
    pub fn new(model: LoadedModel, config: IntervenableConfig, plugins: &PluginSet, seed: u64) -> Result<Self> {
        let catalog = model.catalog().clone();
        let keys = config.keys();
        let groups = config.groups()?;
        let mut reps = Vec::new();
        let mut instances: Vec<Box<dyn Intervention>> = Vec::new();
        let mut links: Vec<(i64, usize)> = Vec::new();
        for (index, rep) in config.representations.iter().enumerate() {
            let type_name = rep.intervention_type()?.to_string();
            let (component, layer) = resolve_component(&catalog, rep)?;
            let info = &catalog.components[component as usize];
            let description = format!("{type_name} on {} at layer {layer}", info.name);
            if rep.max_number_of_units == 0 {
                return Err(VeneError::Config(format!("{description}: max_number_of_units is 0 (valid: 1 or more)")));
            }
            if layer >= info.layers {
                return Err(VeneError::LayerOutOfRange {
                    layer,
                    component: info.name.to_string(),
                    num_layers: info.layers,
                });
            }
            let unit = unit_kind(info.layout, &rep.unit).ok_or_else(|| {
                VeneError::Config(format!(
                    "unit '{}' is not valid for {} ({:?} layout); valid units: {}",
                    rep.unit,
                    info.name,
                    info.layout,
                    info.layout.units().join(", ")
                ))
            })?;
            let dim = i64::from(info.dim_at(layer));
            let spec = InterventionSpec {
                embed_dim: info.dim_at(layer) * rep.max_number_of_units,
                unit_dim: info.dim_at(layer),
                max_units: rep.max_number_of_units,
                low_rank_dimension: rep.low_rank_dimension.into(),
                device: DeviceSpec::from_device(model.device()),
                dtype: dtype_spec(model.kind()),
                seed: seed.wrapping_add(index as u64),
            };
            let linked =
                rep.intervention_link_key.and_then(|k| links.iter().find(|(key, _)| *key == k).map(|(_, i)| *i));
            let instance = match linked {
                Some(shared) => shared,
                None => {
                    let created = interventions::create(&rep.intervention, &spec, plugins)?;
                    instances.push(created);
                    if let Some(link) = rep.intervention_link_key {
                        links.push((link, instances.len() - 1));
                    }
                    instances.len() - 1
                }
            };
            let traits = instances[instance].traits();
            let partition = rep.subspace_partition.as_deref().map(expand_partition);
            // Distributed interventions see the units flattened, so their subspaces index all units' dimensions.
            let subspace_width = if traits.distributed { dim * i64::from(rep.max_number_of_units) } else { dim };
            if let Some(bad) = partition.iter().flatten().flatten().find(|&&d| d < 0 || d >= subspace_width) {
                return Err(VeneError::Config(format!(
                    "{description}: subspace_partition index {bad} is outside the intervention's {subspace_width} dimensions"
                )));
            }
            let constant_source = rep
                .source_representation
                .as_ref()
                .map(|values| {
                    let embed = i64::from(spec.embed_dim);
                    let len = values.len() as i64;
                    if len != dim && len != embed {
                        return Err(VeneError::Config(format!(
                            "{description}: source_representation has {len} values, expected {dim} (or {embed})"
                        )));
                    }
                    Ok(constant_vector(values, model.kind(), model.device()))
                })
                .transpose()?;
            let skip_input = if type_name == "skip" {
                let input = info.skip_input.as_ref().into_option().ok_or_else(|| {
                    let with_inputs: Vec<&str> =
                        catalog.components.iter().filter(|c| c.skip_input.is_some()).map(|c| c.name.as_str()).collect();
                    VeneError::Config(format!(
                        "skip needs a component whose input is a site of the same shape; {} has none (use one of: {})",
                        info.name,
                        with_inputs.join(", ")
                    ))
                })?;
                Some(catalog.component_index(input).unwrap_or_default() as u32)
            } else {
                None
            };
            reps.push(Bound {
                key: keys[index].clone(),
                description,
                component,
                layer,
                unit,
                instance,
                traits,
                subspace_width,
                partition,
                constant_source,
                skip_input,
            });
        }
        Ok(Self { model, config, reps, instances, groups })
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Gives the model back, dropping the interventions.
    pub fn into_model(self) -> LoadedModel {
        self.model
    }

    pub fn config(&self) -> &IntervenableConfig {
        &self.config
    }

    /// The width of the axis representation `index` acts on: the component dimension, times the units for
    /// distributed interventions.
    pub fn intervention_width(&self, index: usize) -> Option<i64> {
        self.reps.get(index).map(|rep| rep.subspace_width)
    }

    pub fn keys(&self) -> Vec<&str> {
        self.reps.iter().map(|r| r.key.as_str()).collect()
    }

    /// The intervention instance of representation `index` (shared between linked representations).
    pub fn intervention(&self, index: usize) -> &dyn Intervention {
        self.instances[self.reps[index].instance].as_ref()
    }

    pub fn intervention_mut(&mut self, index: usize) -> &mut dyn Intervention {
        let instance = self.reps[index].instance;
        self.instances[instance].as_mut()
    }

    /// Each distinct intervention instance once, with the key of the first representation that uses it.
    fn instances_by_key(&self) -> Vec<(usize, &str)> {
        let mut seen = Vec::new();
        for rep in &self.reps {
            if !seen.iter().any(|(instance, _)| *instance == rep.instance) {
                seen.push((rep.instance, rep.key.as_str()));
            }
        }
        seen
    }

    fn plugin_failure(key: &str, error: PluginError) -> VeneError {
        VeneError::Intervention { key: key.to_string(), message: error.to_string() }
    }

    /// Trainable parameters as `{key}/{name}` (linked representations share theirs).
    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        let mut all = Vec::new();
        for (instance, key) in self.instances_by_key() {
            let parameters = self.instances[instance].parameters().map_err(|e| Self::plugin_failure(key, e))?;
            all.extend(parameters.into_iter().map(|(name, tensor)| (format!("{key}/{name}"), tensor)));
        }
        Ok(all)
    }

    /// Everything needed to restore the interventions, as `{key}/{name}`.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut all = Vec::new();
        for (instance, key) in self.instances_by_key() {
            let state = self.instances[instance].state().map_err(|e| Self::plugin_failure(key, e))?;
            all.extend(state.into_iter().map(|(name, tensor)| (format!("{key}/{name}"), tensor)));
        }
        Ok(all)
    }

    /// Restores state saved by [`IntervenableModel::state`]; an entry for an unknown key is an error.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        let owners: Vec<(usize, String)> =
            self.instances_by_key().into_iter().map(|(i, k)| (i, k.to_string())).collect();
        let mut per_instance: Vec<Vec<(String, Tensor)>> = (0..self.instances.len()).map(|_| Vec::new()).collect();
        for (name, tensor) in state {
            let (key, entry) = name
                .split_once('/')
                .ok_or_else(|| VeneError::Config(format!("saved state entry '{name}' is not of the form key/name")))?;
            let (instance, _) = owners.iter().find(|(_, k)| k == key).ok_or_else(|| {
                let keys: Vec<&str> = owners.iter().map(|(_, k)| k.as_str()).collect();
                VeneError::Config(format!(
                    "saved state for '{key}' matches no representation of this config (keys: {})",
                    keys.join(", ")
                ))
            })?;
            per_instance[*instance].push((entry.to_string(), tensor));
        }
        for (instance, key) in owners {
            let state = std::mem::take(&mut per_instance[instance]);
            if !state.is_empty() {
                self.instances[instance].load_state(state).map_err(|e| Self::plugin_failure(&key, e))?;
            }
        }
        Ok(())
    }

    /// The sum of the interventions' auxiliary training losses, if any has one.
    pub fn auxiliary_loss(&self) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (instance, key) in self.instances_by_key() {
            if let Some(loss) = self.instances[instance].auxiliary_loss().map_err(|e| Self::plugin_failure(key, e))? {
                total = Some(match total {
                    Some(sum) => sum + loss,
                    None => loss,
                });
            }
        }
        Ok(total)
    }

    pub fn set_training(&mut self, training: bool) {
        self.instances.iter_mut().for_each(|i| i.set_training(training));
    }

    /// Training progress in `[0, 1]` for the interventions' schedules (e.g. temperature annealing).
    pub fn set_progress(&mut self, fraction: f64) {
        self.instances.iter_mut().for_each(|i| i.set_progress(fraction));
    }

    /// Runs the sources and the intervened base.
    pub fn run(
        &mut self,
        base: &ForwardInputs,
        sources: &[Option<ForwardInputs>],
        locations: &UnitLocations,
        subspaces: &Subspaces,
    ) -> Result<RunOutput> {
        let prepared = self.prepare(base.batch_size(), sources, locations, subspaces)?;
        self.run_prepared(base, &prepared, subspaces)
    }

    /// Runs the source passes once; the result drives any number of base passes (e.g. decoding steps, whose
    /// locations are relative to each pass's tokens).
    pub fn prepare(
        &mut self,
        batch: i64,
        sources: &[Option<ForwardInputs>],
        locations: &UnitLocations,
        subspaces: &Subspaces,
    ) -> Result<PreparedRun> {
        if batch == 0 {
            return Err(VeneError::Inputs("the base batch is empty".to_string()));
        }
        let sources = self.broadcast_sources(sources)?;
        // In parallel mode a one-example source serves every base example: one source pass instead of `batch`.
        let shareable = self.config.mode == Mode::Parallel;
        for (i, source) in sources.iter().enumerate() {
            if let Some(source) = source {
                let size = source.batch_size();
                if size != batch && !(shareable && size == 1) {
                    let valid = if shareable && batch != 1 { format!("{batch} or 1") } else { batch.to_string() };
                    return Err(VeneError::Inputs(format!(
                        "sources[{i}] has {size} examples, the base has {batch} (valid: {valid})"
                    )));
                }
            }
        }
        let mut state = RunState::new(self.reps.len());
        state.base_batch = batch;
        let setters = match self.config.mode {
            Mode::Parallel => self.run_parallel_sources(&sources, locations, batch, &mut state)?,
            Mode::Serial => self.run_serial_sources(&sources, locations, subspaces, batch, &mut state)?,
        };
        Ok(PreparedRun { state, setters, batch })
    }

    /// One intervened base pass with the source activations of `prepared`.
    pub fn run_prepared(
        &mut self,
        base: &ForwardInputs,
        prepared: &PreparedRun,
        subspaces: &Subspaces,
    ) -> Result<RunOutput> {
        let batch = base.batch_size();
        if batch != prepared.batch {
            return Err(VeneError::Inputs(format!(
                "the base has {batch} examples, the prepared sources {}",
                prepared.batch
            )));
        }
        let mut state = prepared.state.reuse();
        let mut plan = self.plan();
        for (rep, selection) in &prepared.setters {
            let dims = self.subspaces_for(*rep, subspaces, batch)?;
            self.add_setter(&mut plan, *rep, selection, dims)?;
        }
        let output = self.execute(base, &plan, &mut state)?.ok_or_else(|| VeneError::Intervention {
            key: "base run".to_string(),
            message: "the base pass stopped before its output".to_string(),
        })?;
        let mut collected = Vec::new();
        for (index, rep) in self.reps.iter().enumerate() {
            if rep.traits.collects && rep.unit == UnitKind::Timestep {
                let rows: Option<Vec<Tensor>> = std::mem::take(&mut state.step_collected[index]).into_iter().collect();
                let rows = rows.filter(|r| !r.is_empty()).ok_or_else(|| VeneError::Intervention {
                    key: rep.key.clone(),
                    message: "a collected timestep was never reached".to_string(),
                })?;
                collected.push(Tensor::stack(&rows, 0).reshape([batch, rows.len() as i64 / batch, -1]));
            } else if rep.traits.collects {
                collected.push(state.collected[index].take().ok_or_else(|| VeneError::Intervention {
                    key: rep.key.clone(),
                    message: "the collect site was never reached".to_string(),
                })?);
            }
        }
        Ok(RunOutput {
            output: output.output,
            present: output.present,
            collected,
            finite_writes: std::mem::take(&mut state.finite_writes),
        })
    }

    fn broadcast_sources<'s>(&self, sources: &'s [Option<ForwardInputs>]) -> Result<Vec<Option<&'s ForwardInputs>>> {
        let groups = self.groups.len();
        let needs_sources = self.reps.iter().any(Bound::reads_source_run);
        if sources.is_empty() {
            if needs_sources {
                let first = self.reps.iter().find(|r| r.reads_source_run()).map(|r| r.description.clone());
                return Err(VeneError::Sources(format!(
                    "{} needs a source run, but no sources were given (the config has {groups} group(s))",
                    first.unwrap_or_default()
                )));
            }
            return Ok(vec![None; groups]);
        }
        if sources.len() == 1 && groups > 1 {
            return Ok(vec![sources[0].as_ref(); groups]);
        }
        if sources.len() != groups {
            return Err(VeneError::Sources(format!(
                "the config has {groups} group(s) (one per representation unless group_key is set), so give {groups} \
                 sources (or one to reuse for all); got {}",
                sources.len()
            )));
        }
        Ok(sources.iter().map(Option::as_ref).collect())
    }

    /// Parallel mode: each group's getters on its own source run; returns the base setters.
    fn run_parallel_sources(
        &mut self,
        sources: &[Option<&ForwardInputs>],
        locations: &UnitLocations,
        batch: i64,
        state: &mut RunState,
    ) -> Result<Vec<(usize, Selection)>> {
        let count = self.reps.len();
        let key = "sources->base";
        for (group, members) in self.groups.clone().iter().enumerate() {
            let Some(source) = sources[group] else {
                continue;
            };
            let mut plan = self.plan();
            for &rep in members.iter().filter(|&&r| self.reps[r].reads_source_run()) {
                let selection = self.selection(locations, key, true, rep, count, rep, batch)?;
                self.add_getter(&mut plan, rep, &selection)?;
            }
            if !plan.is_empty() {
                self.execute_source(source, plan, state)?;
            }
        }
        let mut setters = Vec::new();
        for (group, members) in self.groups.iter().enumerate() {
            for &rep in members {
                if self.reps[rep].reads_source_run() && sources[group].is_none() {
                    continue; // its group's source is null: pyvene skips the group
                }
                setters.push((rep, self.selection(locations, key, false, rep, count, rep, batch)?));
            }
        }
        Ok(setters)
    }

    /// Serial mode: source_0 → source_1 → … → base; returns the setters for the base run.
    fn run_serial_sources(
        &mut self,
        sources: &[Option<&ForwardInputs>],
        locations: &UnitLocations,
        subspaces: &Subspaces,
        batch: i64,
        state: &mut RunState,
    ) -> Result<Vec<(usize, Selection)>> {
        let groups = self.groups.clone();
        let mut pending: Vec<(usize, Selection)> = Vec::new();
        for (group, members) in groups.iter().enumerate() {
            let Some(source) = sources[group] else {
                continue;
            };
            let key = if group + 1 < groups.len() {
                format!("source_{group}->source_{}", group + 1)
            } else {
                format!("source_{group}->base")
            };
            let mut plan = self.plan();
            for (rep, selection) in pending.drain(..) {
                let dims = self.subspaces_for(rep, subspaces, batch)?;
                self.add_setter(&mut plan, rep, &selection, dims)?;
            }
            for (slot, &rep) in members.iter().enumerate() {
                if !self.reps[rep].reads_source_run() {
                    continue;
                }
                let selection = self.selection(locations, &key, true, slot, members.len(), rep, batch)?;
                self.add_getter(&mut plan, rep, &selection)?;
            }
            self.execute_source(source, plan, state)?;
            for (slot, &rep) in members.iter().enumerate() {
                let selection = self.selection(locations, &key, false, slot, members.len(), rep, batch)?;
                pending.push((rep, selection));
            }
        }
        Ok(pending)
    }

    #[allow(clippy::too_many_arguments)]
    fn selection(
        &self,
        locations: &UnitLocations,
        key: &str,
        source_side: bool,
        slot: usize,
        count: usize,
        rep: usize,
        batch: i64,
    ) -> Result<Selection> {
        let bound = &self.reps[rep];
        locations
            .resolve(key, source_side, slot, count, bound.unit.levels(), batch as usize, &bound.description)?
            .ok_or_else(|| missing_side(&bound.description, key, source_side))
    }

    fn subspaces_for(&self, rep: usize, subspaces: &Subspaces, batch: i64) -> Result<Option<Vec<Vec<i64>>>> {
        let bound = &self.reps[rep];
        subspaces.resolve(
            rep,
            self.reps.len(),
            batch as usize,
            bound.partition.as_deref(),
            bound.subspace_width,
            &bound.description,
        )
    }

    fn plan(&self) -> Plan {
        let catalog = self.model.catalog();
        let components = catalog.components.len();
        let sites = components * catalog.max_layers() as usize;
        Plan {
            components: components as u32,
            active: vec![false; sites],
            actions: (0..sites).map(|_| Vec::new()).collect(),
            slots: Vec::new(),
            stop_when_read: false,
        }
    }

    fn add_getter(&self, plan: &mut Plan, rep: usize, selection: &Selection) -> Result<()> {
        let component = self.reps[rep].component;
        self.add_action(plan, rep, component, ActionKind::Get, selection, None)
    }

    fn add_setter(
        &self,
        plan: &mut Plan,
        rep: usize,
        selection: &Selection,
        dims: Option<Vec<Vec<i64>>>,
    ) -> Result<()> {
        let bound = &self.reps[rep];
        if let Some(input) = bound.skip_input {
            self.add_action(plan, rep, input, ActionKind::GetSkipInput, selection, None)?;
        }
        self.add_action(plan, rep, bound.component, ActionKind::Set, selection, dims)
    }

    fn add_action(
        &self,
        plan: &mut Plan,
        rep: usize,
        component: u32,
        kind: ActionKind,
        selection: &Selection,
        subspaces: Option<Vec<Vec<i64>>>,
    ) -> Result<()> {
        let bound = &self.reps[rep];
        let target = match (selection, &bound.unit) {
            (Selection::Whole, UnitKind::Timestep) => {
                return Err(VeneError::Locations(format!(
                    "{}: a timestep site needs unit_locations listing the timesteps to act at",
                    bound.description
                )))
            }
            (Selection::Whole, _) => Target::Whole,
            (Selection::Units(UnitLocs::One(steps)), UnitKind::Timestep) => Target::Steps(steps.clone()),
            (Selection::Units(units), kind) => Target::Units(
                Indexer::new(kind, units, self.model.device())
                    .map_err(|e| VeneError::Locations(format!("{}: {e}", bound.description)))?,
            ),
        };
        let site = (bound.layer * plan.components + component) as usize;
        plan.active[site] = true;
        let id = plan.slots.len();
        plan.slots.push(match &target {
            Target::Steps(steps) => steps.iter().map(Vec::len).sum(),
            _ => 0,
        });
        plan.actions[site].push(Action { id, rep, kind, target, subspaces });
        Ok(())
    }

    /// One forward pass executing `plan`; returns the model output.
    /// A source pass: its activations land in `state`; the model stops after the last site read, where it can.
    fn execute_source(&mut self, inputs: &ForwardInputs, mut plan: Plan, state: &mut RunState) -> Result<()> {
        plan.stop_when_read = true;
        self.execute(inputs, &plan, state).map(drop)
    }

    /// One forward pass under `plan`; `None` when the plan stopped it early.
    fn execute(&mut self, inputs: &ForwardInputs, plan: &Plan, state: &mut RunState) -> Result<Option<ForwardOutput>> {
        state.hits = vec![0; plan.slots.len()];
        state.getters_left = if plan.stop_when_read { plan.single_getters() } else { None };
        let result = if plan.is_empty() {
            self.model.forward(inputs, Hooks::none())
        } else {
            let sink = RunSink { plan, reps: &self.reps, instances: &mut self.instances, state: &mut *state };
            self.model.forward(inputs, Hooks::new(&plan.active, plan.components, sink))
        };
        let output = match result {
            Ok(output) => Some(output),
            // The host asked for the stop: every getter has run, and later sites do not matter.
            Err(_) if state.getters_left == Some(0) && state.error.is_none() => return Ok(None),
            Err(error) => {
                return Err(state
                    .error
                    .take()
                    .unwrap_or(VeneError::Model { context: "forward pass".to_string(), error }))
            }
        };
        for action in plan.actions.iter().flatten() {
            let (hits, slots) = (state.hits[action.id], plan.slots[action.id]);
            let missed = if slots == 0 { hits == 0 } else { hits < slots };
            if missed {
                let what = match &action.target {
                    Target::Steps(steps) => format!(
                        "the model never reached timestep {} of this site (locations {steps:?})",
                        steps.iter().flatten().max().copied().unwrap_or_default()
                    ),
                    _ => "the model never reached this hook site during the forward pass".to_string(),
                };
                return Err(VeneError::Intervention { key: self.reps[action.rep].description.clone(), message: what });
            }
        }
        Ok(output)
    }
}

fn missing_side(description: &str, key: &str, source_side: bool) -> VeneError {
    VeneError::Locations(format!(
        "{description}: '{key}' gives no {} locations",
        if source_side { "source" } else { "base" }
    ))
}

fn dtype_spec(kind: tch::Kind) -> DTypeSpec {
    match kind {
        tch::Kind::Half => DTypeSpec::F16,
        tch::Kind::BFloat16 => DTypeSpec::BF16,
        tch::Kind::Double => DTypeSpec::F64,
        _ => DTypeSpec::F32,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    /// Store the selected units of a source run.
    Get,
    /// Store the selected units of the site's input, for `skip`.
    GetSkipInput,
    /// Intervene on the selected units.
    Set,
}

/// Which part of a site's tensor an action touches.
enum Target {
    Whole,
    Units(Indexer),
    /// Per example, the timesteps (one per unit) at which to act; the whole `(batch, dim)` row otherwise.
    Steps(Vec<Vec<i64>>),
}

struct Action {
    id: usize,
    rep: usize,
    kind: ActionKind,
    target: Target,
    subspaces: Option<Vec<Vec<i64>>>,
}

/// What one forward pass does at each site (`layer * components + component`).
struct Plan {
    components: u32,
    active: Vec<bool>,
    actions: Vec<Vec<Action>>,
    /// Per action id: how many (example, unit) timestep slots it must reach (0 for other targets).
    slots: Vec<usize>,
    /// A source run whose output nobody reads: the model stops once every getter has run.
    stop_when_read: bool,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.active.iter().any(|&a| a)
    }

    /// Getters that fire once per pass; `None` if a getter reads timesteps (which a pass reaches one by one, so the
    /// host cannot tell which is the last).
    fn single_getters(&self) -> Option<usize> {
        let getters = self.actions.iter().flatten().filter(|action| action.kind == ActionKind::Get);
        getters.map(|action| (!matches!(action.target, Target::Steps(_))).then_some(1)).sum()
    }
}

/// Activations carried between the passes of one run.
struct RunState {
    activations: Vec<Option<Tensor>>,
    skip_inputs: Vec<Option<Tensor>>,
    collected: Vec<Option<Tensor>>,
    /// Timestep sites: per representation, rows `(dim)` at `example * units + unit`, from the source run.
    step_sources: Vec<Vec<Option<Tensor>>>,
    /// Timestep sites: per representation, site-input rows for `skip`.
    step_skip_inputs: Vec<Vec<Option<Tensor>>>,
    /// Timestep sites: per representation, collected rows.
    step_collected: Vec<Vec<Option<Tensor>>>,
    error: Option<VeneError>,
    /// Per action id of the current pass: how often it ran (timestep slots reached, for timestep actions).
    hits: Vec<usize>,
    /// Examples of the base run; a one-example source run's activations are broadcast to it.
    base_batch: i64,
    /// In a pass that stops early: getters still to run.
    getters_left: Option<usize>,
    /// Each intervened site's description and whether what it wrote was all finite.
    finite_writes: Vec<(String, Tensor)>,
}

impl RunState {
    /// A fresh state for another pass that shares this one's source activations.
    fn reuse(&self) -> Self {
        let copy = |rows: &Vec<Option<Tensor>>| rows.iter().map(|r| r.as_ref().map(Tensor::shallow_clone)).collect();
        let mut state = Self::new(self.activations.len());
        state.activations = copy(&self.activations);
        state.step_sources = self.step_sources.iter().map(copy).collect();
        state.base_batch = self.base_batch;
        state
    }

    fn new(reps: usize) -> Self {
        Self {
            activations: (0..reps).map(|_| None).collect(),
            skip_inputs: (0..reps).map(|_| None).collect(),
            collected: (0..reps).map(|_| None).collect(),
            step_sources: (0..reps).map(|_| Vec::new()).collect(),
            step_skip_inputs: (0..reps).map(|_| Vec::new()).collect(),
            step_collected: (0..reps).map(|_| Vec::new()).collect(),
            error: None,
            hits: Vec::new(),
            base_batch: 0,
            getters_left: None,
            finite_writes: Vec::new(),
        }
    }
}

/// `tensor` with a batch of one viewed as `rows` examples (no copy); any other tensor unchanged.
fn broadcast_rows(tensor: &Tensor, rows: i64) -> Tensor {
    let mut size = tensor.size();
    if size.first() == Some(&1) && rows > 1 {
        size[0] = rows;
        return tensor.expand(size.as_slice(), false);
    }
    tensor.shallow_clone()
}

/// The host's hook callback for one forward pass.
struct RunSink<'a> {
    plan: &'a Plan,
    reps: &'a [Bound],
    instances: &'a mut [Box<dyn Intervention>],
    state: &'a mut RunState,
}

/// What an intervention produced at a site.
enum Outcome {
    /// New values for the selected units.
    Replace(Tensor),
    /// Collected activations; the site is unchanged.
    Collected(Tensor),
}

impl RunSink<'_> {
    fn visit_site(&mut self, call: SiteCall, value: Tensor) -> Result<Option<Tensor>> {
        let site = (call.layer * self.plan.components + call.component) as usize;
        let Some(actions) = self.plan.actions.get(site) else {
            return Ok(None);
        };
        let mut current = value;
        let mut changed = false;
        for action in actions {
            let bound = &self.reps[action.rep];
            if let Target::Steps(steps) = &action.target {
                if let Some(next) = self.visit_step(action, bound, steps, call.timestep, &current)? {
                    current = next;
                    changed = true;
                }
                continue;
            }
            self.state.hits[action.id] += 1;
            let reading_source = action.kind == ActionKind::Get;
            let selected = match &action.target {
                Target::Units(indexer) if reading_source => {
                    let shared = broadcast_rows(&current, indexer.examples());
                    indexer.check(&shared, &bound.description)?;
                    indexer.gather(&shared)
                }
                Target::Units(indexer) => {
                    indexer.check(&current, &bound.description)?;
                    indexer.gather(&current)
                }
                _ if reading_source => broadcast_rows(&current, self.state.base_batch),
                _ => current.shallow_clone(),
            };
            let source = match action.kind {
                ActionKind::Get => {
                    self.state.activations[action.rep] = Some(selected);
                    if let Some(left) = self.state.getters_left.as_mut() {
                        *left = left.saturating_sub(1);
                    }
                    continue;
                }
                ActionKind::GetSkipInput => {
                    self.state.skip_inputs[action.rep] = Some(selected);
                    continue;
                }
                ActionKind::Set => self.source_for(action.rep, bound),
            };
            let output = match self.intervene(bound, &selected, source, action.subspaces.as_deref())? {
                Outcome::Replace(output) => output,
                Outcome::Collected(collected) => {
                    self.state.collected[action.rep] = Some(collected);
                    continue;
                }
            };
            current = match &action.target {
                Target::Units(indexer) => indexer.scatter(&current, &output),
                _ => output,
            };
            changed = true;
        }
        Ok(changed.then_some(current))
    }

    /// The source a setter reads: the site input (skip), a constant, or the stored source activation.
    fn source_for(&mut self, rep: usize, bound: &Bound) -> Option<Tensor> {
        if bound.skip_input.is_some() {
            self.state.skip_inputs[rep].take()
        } else if let Some(constant) = &bound.constant_source {
            Some(constant.shallow_clone())
        } else {
            self.state.activations[rep].as_ref().map(Tensor::shallow_clone)
        }
    }

    /// A timestep action at the site's call for `timestep`: acts on the examples whose locations list it.
    fn visit_step(
        &mut self,
        action: &Action,
        bound: &Bound,
        steps: &[Vec<i64>],
        timestep: u32,
        current: &Tensor,
    ) -> Result<Option<Tensor>> {
        let units = steps.first().map_or(0, Vec::len);
        let slots: Vec<(usize, usize)> = steps
            .iter()
            .enumerate()
            .flat_map(|(example, list)| list.iter().position(|&s| s == i64::from(timestep)).map(|unit| (example, unit)))
            .collect();
        if slots.is_empty() {
            return Ok(None);
        }
        self.state.hits[action.id] +=
            steps.iter().map(|list| list.iter().filter(|&&s| s == i64::from(timestep)).count()).sum::<usize>();
        let rows = |store: &mut Vec<Option<Tensor>>| {
            if store.len() != steps.len() * units {
                *store = (0..steps.len() * units).map(|_| None).collect();
            }
            // A one-example source run serves every example.
            let shared = current.size()[0] == 1;
            for &(example, unit) in &slots {
                store[example * units + unit] = Some(current.get(if shared { 0 } else { example as i64 }));
            }
        };
        match action.kind {
            ActionKind::Get => {
                rows(&mut self.state.step_sources[action.rep]);
                return Ok(None);
            }
            ActionKind::GetSkipInput => {
                rows(&mut self.state.step_skip_inputs[action.rep]);
                return Ok(None);
            }
            ActionKind::Set => {}
        }
        let stored = if bound.skip_input.is_some() {
            Some(&self.state.step_skip_inputs[action.rep])
        } else if bound.constant_source.is_none() && bound.traits.needs_source {
            Some(&self.state.step_sources[action.rep])
        } else {
            None
        };
        let source = match stored {
            None => bound.constant_source.as_ref().map(Tensor::shallow_clone),
            Some(stored) => {
                let mut source_rows: Vec<Tensor> = (0..steps.len() as i64).map(|b| current.get(b)).collect();
                for &(example, unit) in &slots {
                    let row = stored.get(example * units + unit).and_then(Option::as_ref).ok_or_else(|| {
                        VeneError::Intervention {
                            key: bound.description.clone(),
                            message: format!(
                                "no source activation for example {example}, unit {unit}: the source run never reached \
                                 its timestep"
                            ),
                        }
                    })?;
                    source_rows[example] = row.shallow_clone();
                }
                Some(Tensor::stack(&source_rows, 0))
            }
        };
        let output = match self.intervene(bound, current, source, action.subspaces.as_deref())? {
            Outcome::Replace(output) => output,
            Outcome::Collected(collected) => {
                let store = &mut self.state.step_collected[action.rep];
                if store.len() != steps.len() * units {
                    *store = (0..steps.len() * units).map(|_| None).collect();
                }
                for &(example, unit) in &slots {
                    store[example * units + unit] = Some(collected.get(example as i64));
                }
                return Ok(None);
            }
        };
        let mut mask = vec![false; steps.len()];
        for &(example, _) in &slots {
            mask[example] = true;
        }
        let mask = Tensor::from_slice(&mask).view([-1, 1]).to_device(current.device());
        Ok(Some(output.where_self(&mask, current)))
    }

    /// Applies the intervention of `bound` to `selected`.
    fn intervene(
        &mut self,
        bound: &Bound,
        selected: &Tensor,
        source: Option<Tensor>,
        subspaces: Option<&[Vec<i64>]>,
    ) -> Result<Outcome> {
        // A constant with one vector per unit (`units × dim` values) lines up with the selected units.
        let per_unit = selected.size()[1..].iter().product::<i64>();
        let source = source.map(|s| {
            if s.dim() == 1
                && selected.dim() > 2
                && s.numel() as i64 == per_unit
                && s.numel() as i64 != bound.subspace_width
            {
                s.view(&selected.size()[1..])
            } else {
                s
            }
        });
        let fail = |message: String| VeneError::Intervention { key: bound.description.clone(), message };
        if bound.traits.needs_source && source.is_none() {
            return Err(fail("no source activation is available for this site".to_string()));
        }
        let (base_in, source_in) = if bound.traits.distributed {
            (flatten_units(selected), source.as_ref().map(flatten_units))
        } else {
            (selected.shallow_clone(), source)
        };
        let output = self.instances[bound.instance]
            .apply(&base_in, source_in.as_ref(), subspaces)
            .map_err(|e| fail(e.to_string()))?;
        if bound.traits.collects {
            return Ok(Outcome::Collected(output));
        }
        let output = if bound.traits.distributed { unflatten_units(&output, &selected.size()) } else { output };
        self.state.finite_writes.push((bound.description.clone(), output.detach().isfinite().all()));
        if output.size() != selected.size() {
            return Err(fail(format!(
                "the intervention returned shape {:?}, expected {:?}",
                output.size(),
                selected.size()
            )));
        }
        Ok(Outcome::Replace(output.to_kind(selected.kind())))
    }
}

impl HookSink for RunSink<'_> {
    fn visit(&mut self, call: SiteCall, value: TensorRef<'_>) -> RResult<ROption<OwnedTensor>, PluginError> {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.visit_site(call, value.to_tensor())));
        let error = match outcome {
            Ok(Ok(_)) if self.state.getters_left == Some(0) => {
                return RResult::RErr(PluginError::new(ErrorKind::Stop, "the host has every activation it reads"))
            }
            Ok(Ok(replacement)) => return RResult::ROk(replacement.map(OwnedTensor::new).into()),
            Ok(Err(error)) => error,
            Err(_) => VeneError::Intervention {
                key: format!("site {} at layer {}", call.component, call.layer),
                message: "the host panicked while intervening".to_string(),
            },
        };
        let message = error.to_string();
        self.state.error = Some(error);
        RResult::RErr(PluginError::new(ErrorKind::Host, message))
    }
}
