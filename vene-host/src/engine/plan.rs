//! Plans: what one forward pass does at each hook site (getters, setters), built from unit locations, and the
//! pass that executes one.

use vene_api::Hooks;

use super::{sink::RunSink, IntervenableModel, RunState};
use crate::{
    error::{Result, VeneError},
    locations::{Selection, Subspaces, UnitLocations, UnitLocs},
    model::{ForwardInputs, ForwardOutput},
    units::{Indexer, UnitKind},
};

impl IntervenableModel {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn selection(
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

    pub(super) fn subspaces_for(&self, rep: usize, subspaces: &Subspaces, batch: i64) -> Result<Option<Vec<Vec<i64>>>> {
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

    pub(super) fn plan(&self) -> Plan {
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

    pub(super) fn add_getter(&self, plan: &mut Plan, rep: usize, selection: &Selection) -> Result<()> {
        let component = self.reps[rep].component;
        self.add_action(plan, rep, component, ActionKind::Get, selection, None)
    }

    pub(super) fn add_setter(
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

    pub(super) fn add_action(
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
    pub(super) fn execute_source(
        &mut self,
        inputs: &ForwardInputs,
        mut plan: Plan,
        state: &mut RunState,
    ) -> Result<()> {
        plan.stop_when_read = true;
        self.execute(inputs, &plan, state).map(drop)
    }

    /// One forward pass under `plan`; `None` when the plan stopped it early.
    pub(super) fn execute(
        &mut self,
        inputs: &ForwardInputs,
        plan: &Plan,
        state: &mut RunState,
    ) -> Result<Option<ForwardOutput>> {
        state.hits = vec![0; plan.slots.len()];
        state.finite_checks = self.finite_checks;
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

pub(super) fn missing_side(description: &str, key: &str, source_side: bool) -> VeneError {
    VeneError::Locations(format!(
        "{description}: '{key}' gives no {} locations",
        if source_side { "source" } else { "base" }
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActionKind {
    /// Store the selected units of a source run.
    Get,
    /// Store the selected units of the site's input, for `skip`.
    GetSkipInput,
    /// Intervene on the selected units.
    Set,
}

/// Which part of a site's tensor an action touches.
pub(super) enum Target {
    Whole,
    Units(Indexer),
    /// Per example, the timesteps (one per unit) at which to act; the whole `(batch, dim)` row otherwise.
    Steps(Vec<Vec<i64>>),
}

pub(super) struct Action {
    pub(super) id: usize,
    pub(super) rep: usize,
    pub(super) kind: ActionKind,
    pub(super) target: Target,
    pub(super) subspaces: Option<Vec<Vec<i64>>>,
}

/// What one forward pass does at each site (`layer * components + component`).
pub(super) struct Plan {
    pub(super) components: u32,
    pub(super) active: Vec<bool>,
    pub(super) actions: Vec<Vec<Action>>,
    /// Per action id: how many (example, unit) timestep slots it must reach (0 for other targets).
    pub(super) slots: Vec<usize>,
    /// A source run whose output nobody reads: the model stops once every getter has run.
    pub(super) stop_when_read: bool,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        !self.active.iter().any(|&a| a)
    }

    /// Getters that fire once per pass; `None` if a getter reads timesteps (which a pass reaches one by one, so the
    /// host cannot tell which is the last).
    pub(super) fn single_getters(&self) -> Option<usize> {
        let getters = self.actions.iter().flatten().filter(|action| action.kind == ActionKind::Get);
        getters.map(|action| (!matches!(action.target, Target::Steps(_))).then_some(1)).sum()
    }
}
