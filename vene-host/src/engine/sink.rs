//! The host's hook callback: at each site of a pass it stores source activations, applies interventions to the
//! selected units and scatters the results back, per the pass's plan.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{ROption, RResult};
use tch::Tensor;
use vene_api::{model::HookSink, ErrorKind, Intervention, OwnedTensor, PluginError, SiteCall, TensorRef};

use super::{
    plan::{Action, ActionKind, Plan, Target},
    Bound,
};
use crate::{
    error::{Result, VeneError},
    units::{flatten_units, unflatten_units},
};

/// Activations carried between the passes of one run.
pub(super) struct RunState {
    pub(super) activations: Vec<Option<Tensor>>,
    pub(super) skip_inputs: Vec<Option<Tensor>>,
    pub(super) collected: Vec<Option<Tensor>>,
    /// Timestep sites: per representation, rows `(dim)` at `example * units + unit`, from the source run.
    pub(super) step_sources: Vec<Vec<Option<Tensor>>>,
    /// Timestep sites: per representation, site-input rows for `skip`.
    pub(super) step_skip_inputs: Vec<Vec<Option<Tensor>>>,
    /// Timestep sites: per representation, collected rows.
    pub(super) step_collected: Vec<Vec<Option<Tensor>>>,
    pub(super) error: Option<VeneError>,
    /// Per action id of the current pass: how often it ran (timestep slots reached, for timestep actions).
    pub(super) hits: Vec<usize>,
    /// Examples of the base run; a one-example source run's activations are broadcast to it.
    pub(super) base_batch: i64,
    /// In a pass that stops early: getters still to run.
    pub(super) getters_left: Option<usize>,
    /// Whether this pass records `finite_writes`.
    pub(super) finite_checks: bool,
    /// Each intervened site's description and whether what it wrote was all finite.
    pub(super) finite_writes: Vec<(String, Tensor)>,
}

impl RunState {
    /// A fresh state for another pass that shares this one's source activations.
    pub(super) fn reuse(&self) -> Self {
        let copy = |rows: &Vec<Option<Tensor>>| rows.iter().map(|r| r.as_ref().map(Tensor::shallow_clone)).collect();
        let mut state = Self::new(self.activations.len());
        state.activations = copy(&self.activations);
        state.step_sources = self.step_sources.iter().map(copy).collect();
        state.base_batch = self.base_batch;
        state
    }

    pub(super) fn new(reps: usize) -> Self {
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
            finite_checks: false,
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
pub(super) struct RunSink<'a> {
    pub(super) plan: &'a Plan,
    pub(super) reps: &'a [Bound],
    pub(super) instances: &'a mut [Box<dyn Intervention>],
    pub(super) state: &'a mut RunState,
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
        let layout = StepSlots { examples: steps.len(), units, slots: &slots };
        match action.kind {
            ActionKind::Get => {
                layout.store(&mut self.state.step_sources[action.rep], current, true);
                return Ok(None);
            }
            ActionKind::GetSkipInput => {
                layout.store(&mut self.state.step_skip_inputs[action.rep], current, true);
                return Ok(None);
            }
            ActionKind::Set => {}
        }
        let source = self.step_source(action.rep, bound, &layout, current)?;
        let output = match self.intervene(bound, current, source, action.subspaces.as_deref())? {
            Outcome::Replace(output) => output,
            Outcome::Collected(collected) => {
                layout.store(&mut self.state.step_collected[action.rep], &collected, false);
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

    /// The source rows a timestep setter reads: the site input (skip), the source run's rows at the same slots, or
    /// the constant; the base's own rows for examples that do not act at this step.
    fn step_source(
        &self,
        rep: usize,
        bound: &Bound,
        layout: &StepSlots<'_>,
        current: &Tensor,
    ) -> Result<Option<Tensor>> {
        let stored = if bound.skip_input.is_some() {
            &self.state.step_skip_inputs[rep]
        } else if bound.constant_source.is_none() && bound.traits.needs_source {
            &self.state.step_sources[rep]
        } else {
            return Ok(bound.constant_source.as_ref().map(Tensor::shallow_clone));
        };
        let mut source_rows: Vec<Tensor> = (0..layout.examples as i64).map(|b| current.get(b)).collect();
        for &(example, unit) in layout.slots {
            let row = stored.get(example * layout.units + unit).and_then(Option::as_ref).ok_or_else(|| {
                VeneError::Intervention {
                    key: bound.description.clone(),
                    message: format!(
                        "no source activation for example {example}, unit {unit}: the source run never reached its \
                         timestep"
                    ),
                }
            })?;
            source_rows[example] = row.shallow_clone();
        }
        Ok(Some(Tensor::stack(&source_rows, 0)))
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
        if self.state.finite_checks {
            self.state.finite_writes.push((bound.description.clone(), output.detach().isfinite().all()));
        }
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

/// Which (example, unit) slots of a timestep action act at the current step, in a store of `examples × units` rows.
struct StepSlots<'a> {
    examples: usize,
    units: usize,
    slots: &'a [(usize, usize)],
}

impl StepSlots<'_> {
    /// Stores row `example` of `rows` at each acting slot; a one-example source run serves every example.
    fn store(&self, store: &mut Vec<Option<Tensor>>, rows: &Tensor, shareable: bool) {
        if store.len() != self.examples * self.units {
            *store = (0..self.examples * self.units).map(|_| None).collect();
        }
        let shared = shareable && rows.size()[0] == 1;
        for &(example, unit) in self.slots {
            store[example * self.units + unit] = Some(rows.get(if shared { 0 } else { example as i64 }));
        }
    }
}
