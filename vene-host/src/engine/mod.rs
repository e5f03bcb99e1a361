//! The intervention engine: binds a config to a loaded model and runs intervened forward passes with pyvene's
//! semantics (parallel and serial modes, groups, linked interventions, constant sources, collect, skip).
//!
//! A run is a sequence of forward passes, each with a *plan*: per hook site, the getters (store the selected units of
//! a source run) and setters (gather base units, apply the intervention, scatter back) to execute there. Sites
//! without actions are inactive, so the adapter skips them with one flag check.

//!
//! Binding a config (`bind`), building and executing the plans (`plan`) and the hook callback that carries them
//! out at each site (`sink`) are this module's parts.

mod bind;
mod plan;
mod sink;

use tch::Tensor;
use vene_api::{Intervention, PluginError};

pub use bind::resolve_component;
use bind::Bound;
use sink::RunState;

use crate::{
    config::{IntervenableConfig, Mode},
    error::{Result, VeneError},
    locations::{Selection, Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    units::UnitKind,
};

/// The results of one intervened run.
pub struct RunOutput {
    /// The model's final output of the intervened base run (logits for language models).
    pub output: Tensor,
    /// Activations returned by collect interventions, in config order.
    pub collected: Vec<Tensor>,
    /// The key/value cache, when the base inputs asked for it.
    pub present: Vec<Tensor>,
    /// With [`IntervenableModel::check_finite_writes`] on, per intervened site of the base pass in the order they
    /// acted: its description and whether every value it wrote was finite (a 0-d bool tensor, read only when asked).
    finite_writes: Vec<(String, Tensor)>,
}

impl RunOutput {
    /// The first intervened site whose output has a NaN or an infinite value (say `noise` with a huge level); always
    /// `None` unless the run was made with [`IntervenableModel::check_finite_writes`] on.
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
    /// Whether runs record if each intervened site wrote finite values (off: no tensor work for it).
    finite_checks: bool,
}

impl IntervenableModel {
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Gives the model back, dropping the interventions.
    pub fn into_model(self) -> LoadedModel {
        self.model
    }

    /// Makes the following runs record, per intervened site, whether what it wrote was finite, for
    /// [`RunOutput::first_non_finite_site`]; off by default, so runs do no extra tensor work.
    pub fn check_finite_writes(&mut self, on: bool) {
        self.finite_checks = on;
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

    /// Puts `instance` in place of representation `index`'s intervention (and of any representation linked to it):
    /// how host code runs an intervention no config can declare, such as one that shares state with others of the
    /// same pass. Its traits must match the bound one's, as the run plans were made from them.
    pub fn replace_intervention(&mut self, index: usize, instance: Box<dyn Intervention>) -> Result<()> {
        let bound = self.reps.get(index).ok_or_else(|| {
            VeneError::Config(format!("no representation {index} to replace (there are {})", self.reps.len()))
        })?;
        let (old, new) = (bound.traits, instance.traits());
        if (old.needs_source, old.collects, old.distributed) != (new.needs_source, new.collects, new.distributed) {
            return Err(VeneError::Config(format!(
                "{}: the replacement's traits {new:?} differ from the bound intervention's {old:?}",
                bound.description
            )));
        }
        self.instances[bound.instance] = instance;
        Ok(())
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

    /// pyvene's `source_representations`: the base run with `activations[i]` as the source of representation `i`
    /// instead of a source run (shaped as a collect representation at the same units returns it); `None` for
    /// representations that read no source run.
    pub fn run_with_activations(
        &mut self,
        base: &ForwardInputs,
        activations: Vec<Option<Tensor>>,
        locations: &UnitLocations,
        subspaces: &Subspaces,
    ) -> Result<RunOutput> {
        if activations.len() != self.reps.len() {
            return Err(VeneError::Sources(format!(
                "{} source activations for {} representations (give one per representation, null where none is read)",
                activations.len(),
                self.reps.len()
            )));
        }
        let batch = base.batch_size();
        let count = self.reps.len();
        let mut setters = Vec::with_capacity(count);
        for (rep, activation) in activations.iter().enumerate() {
            let bound = &self.reps[rep];
            if bound.unit == UnitKind::Timestep {
                return Err(VeneError::Sources(format!(
                    "{}: source activations are not taken at timestep units; give a source run",
                    bound.description
                )));
            }
            if bound.reads_source_run() && activation.is_none() {
                return Err(VeneError::Sources(format!("{} reads a source but got no activation", bound.description)));
            }
            setters.push((rep, self.selection(locations, "sources->base", false, rep, count, rep, batch)?));
        }
        let mut state = RunState::new(count);
        state.base_batch = batch;
        state.activations = activations;
        self.run_prepared(base, &PreparedRun { state, setters, batch }, subspaces)
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
}
