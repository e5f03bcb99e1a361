//! `vene._native.Intervenable`: a config bound to a model. Runs intervened passes, generates, saves, loads and
//! trains; the Python package gives it pyvene's call shape.

use std::path::PathBuf;

use pyo3::{prelude::*, types::PyDict};
use serde_json::Value;
use tch::Tensor;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    generate::{self, Sampling},
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    saved::{self, SavedInterventions},
    train::{self, ModelObjective, TrainOptions},
};

use crate::{
    errors::{guard, raise, released, OrRaise},
    model::{forward_inputs, Model},
    tensor,
};

/// One example's inputs as the Python layer hands them over: `(input_ids, attention_mask, features)`.
type InputTriple<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>);

/// What one intervened run hands back: the output, the collected activations, and the first intervention that
/// wrote a non-finite value (when asked to check).
type RunResult<'py> = (Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>, Option<String>);

fn inputs_from(triple: &InputTriple<'_>, what: &str) -> PyResult<ForwardInputs> {
    forward_inputs(triple.0.as_ref(), triple.1.as_ref(), triple.2.as_ref(), what)
}

fn sources_from(sources: &[Option<InputTriple<'_>>]) -> PyResult<Vec<Option<ForwardInputs>>> {
    sources
        .iter()
        .enumerate()
        .map(|(i, source)| source.as_ref().map(|s| inputs_from(s, &format!("sources[{i}]"))).transpose())
        .collect()
}

fn json_value(text: Option<&str>, what: &str) -> PyResult<Option<Value>> {
    text.map(|t| serde_json::from_str(t).map_err(|e| raise(format!("invalid {what}: {e}")))).transpose()
}

fn locations(unit_locations: Option<&str>, subspaces: Option<&str>) -> PyResult<(UnitLocations, Subspaces)> {
    let unit_locations = json_value(unit_locations, "unit_locations")?;
    let subspaces = json_value(subspaces, "subspaces")?;
    Ok((UnitLocations::parse(unit_locations.as_ref()).or_raise()?, Subspaces::parse(subspaces.as_ref()).or_raise()?))
}

fn named_tensors<'py>(py: Python<'py>, named: Vec<(String, Tensor)>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    named.into_iter().map(|(name, t)| Ok((name, tensor::to_py(py, t)?))).collect()
}

/// A model with interventions bound to its hook sites.
#[pyclass(unsendable, module = "vene._native")]
pub struct Intervenable {
    inner: IntervenableModel,
    model: Py<Model>,
}

#[pymethods]
impl Intervenable {
    /// Binds a vene config (JSON text) to `model`.
    #[new]
    #[pyo3(signature = (model, config_json, seed=0))]
    fn new(model: Bound<'_, Model>, config_json: &str, seed: u64) -> PyResult<Self> {
        let config = IntervenableConfig::from_json(config_json).map_err(|e| raise(format!("invalid config: {e}")))?;
        let inner = {
            let held = model.borrow();
            guard("binding the config", || {
                IntervenableModel::new(held.model.clone(), config, &held.plugins, seed).or_raise()
            })?
        };
        Ok(Self { inner, model: model.unbind() })
    }

    /// Binds what `path` holds (a vene config file, a directory vene or pyvene saved, or a hub repo id) to `model`,
    /// restoring its saved state.
    #[staticmethod]
    #[pyo3(signature = (path, model, seed=0))]
    fn load(path: &str, model: Bound<'_, Model>, seed: u64) -> PyResult<Self> {
        let inner = {
            let held = model.borrow();
            guard("loading the interventions", || {
                let location = vene_host::hub::resolve_interventions(path).or_raise()?;
                let saved = SavedInterventions::load(&location).or_raise()?;
                let mut inner =
                    IntervenableModel::new(held.model.clone(), saved.config.clone(), &held.plugins, seed).or_raise()?;
                saved.apply(&mut inner).or_raise()?;
                Ok(inner)
            })?
        };
        Ok(Self { inner, model: model.unbind() })
    }

    #[getter]
    fn model(&self, py: Python<'_>) -> Py<Model> {
        self.model.clone_ref(py)
    }

    /// pyvene's keys, one per representation in config order.
    fn keys(&self) -> Vec<String> {
        self.inner.keys().into_iter().map(str::to_string).collect()
    }

    /// The bound config as vene JSON.
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.inner.config()).or_raise()
    }

    /// One intervened run: `(output, collected)` with the collect interventions' activations in config order.
    #[pyo3(signature = (base, sources, unit_locations=None, subspaces=None, check_finite=false))]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        base: InputTriple<'py>,
        sources: Vec<Option<InputTriple<'py>>>,
        unit_locations: Option<&str>,
        subspaces: Option<&str>,
        check_finite: bool,
    ) -> PyResult<RunResult<'py>> {
        let base = inputs_from(&base, "base")?;
        let sources = sources_from(&sources)?;
        let (unit_locations, subspaces) = locations(unit_locations, subspaces)?;
        self.inner.check_finite_writes(check_finite);
        let result = released(py, "the intervened run", || {
            self.inner.run(&base, &sources, &unit_locations, &subspaces).or_raise()
        })?;
        let non_finite = result.first_non_finite_site().map(str::to_string);
        let collected = result.collected.into_iter().map(|t| tensor::to_py(py, t)).collect::<PyResult<Vec<_>>>()?;
        Ok((tensor::to_py(py, result.output)?, collected, non_finite))
    }

    /// Greedy or sampled decoding of one prompt with the interventions acting; returns the new token ids.
    #[pyo3(signature = (prompt, sources, unit_locations=None, subspaces=None, max_new_tokens=20, temperature=0.0,
                        top_k=None, top_p=None, seed=0, stop_token=None, intervene_on="both"))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &mut self,
        py: Python<'_>,
        prompt: Vec<i64>,
        sources: Vec<Option<InputTriple<'_>>>,
        unit_locations: Option<&str>,
        subspaces: Option<&str>,
        max_new_tokens: usize,
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        seed: u64,
        stop_token: Option<i64>,
        intervene_on: &str,
    ) -> PyResult<Vec<i64>> {
        let sources = sources_from(&sources)?;
        let (unit_locations, subspaces) = locations(unit_locations, subspaces)?;
        let intervene_on = intervene_on.parse().map_err(|e| raise(format!("invalid intervene_on: {e}")))?;
        let sampling = Sampling { max_new_tokens, temperature, top_k, top_p, seed, stop_token, intervene_on };
        released(py, "generation", || {
            generate::generate(&mut self.inner, &prompt, &sources, &unit_locations, &subspaces, &sampling, |_| {})
                .or_raise()
        })
    }

    /// Writes the config and the interventions' state to `dir` (replaced whole, never half-written).
    fn save(&self, dir: PathBuf) -> PyResult<()> {
        guard("saving", || saved::save(&self.inner, &dir).or_raise())
    }

    /// Trainable parameters as `(name, tensor)`: the tensors the interventions train, shared, with gradients.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        named_tensors(py, self.inner.parameters().or_raise()?)
    }

    /// Everything needed to restore the interventions, as `(key/name, tensor)`.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        named_tensors(py, self.inner.state().or_raise()?)
    }

    fn load_state(&mut self, state: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        let state = state
            .iter()
            .map(|(name, t)| Ok((name.clone(), tensor::from_py(t, name)?)))
            .collect::<PyResult<Vec<_>>>()?;
        guard("loading state", || self.inner.load_state(state).or_raise())
    }

    /// Training mode for the interventions (dropout, annealed temperatures).
    fn set_training(&mut self, training: bool) {
        self.inner.set_training(training);
    }

    /// The sum of the interventions' auxiliary losses (e.g. boundless DAS's boundary penalty), if any.
    fn auxiliary_loss<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner.auxiliary_loss().or_raise()?.map(|t| tensor::to_py(py, t)).transpose()
    }

    /// vene's trainer on JSON-lines counterfactual examples (`vene train`'s format); returns its report. `progress`
    /// is called with `(step, total, loss, iia)` after every step.
    #[pyo3(signature = (examples, epochs=3, batch_size=16, learning_rate=1e-3, warmup_fraction=0.1, eval_fraction=0.2,
                        seed=0, checkpoint=None, checkpoint_every=50, train_model=false, interchange_weight=1.0,
                        task_weight=1.0, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &mut self,
        py: Python<'py>,
        examples: &str,
        epochs: usize,
        batch_size: usize,
        learning_rate: f64,
        warmup_fraction: f64,
        eval_fraction: f64,
        seed: u64,
        checkpoint: Option<PathBuf>,
        checkpoint_every: usize,
        train_model: bool,
        interchange_weight: f64,
        task_weight: f64,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let options = TrainOptions {
            epochs,
            batch_size,
            learning_rate,
            warmup_fraction,
            eval_fraction,
            seed,
            checkpoint,
            checkpoint_every,
            model_objective: train_model.then_some(ModelObjective { interchange_weight, task_weight }),
        };
        let examples = train::parse_dataset(examples, "the training examples").or_raise()?;
        let (train_set, eval_set) = train::split(&examples, options.eval_fraction, options.seed);
        let tokenizer = self.model.borrow(py).tokenizer.clone();
        let progress = progress.filter(|p| !p.is_none()).map(Bound::unbind);
        let mut callback_error = None;
        let report = released(py, "training", || {
            train::train(&mut self.inner, &train_set, &eval_set, &options, tokenizer.as_deref(), |update| {
                if let (Some(progress), None) = (&progress, &callback_error) {
                    let arguments = (update.step, update.total, update.loss, update.iia);
                    if let Err(error) = Python::with_gil(|py| progress.call1(py, arguments)) {
                        callback_error = Some(error);
                    }
                }
            })
            .or_raise()
        })?;
        if let Some(error) = callback_error {
            return Err(error);
        }
        let metrics = |m: &train::Metrics| -> PyResult<Bound<'py, PyDict>> {
            let dict = PyDict::new(py);
            dict.set_item("loss", m.loss)?;
            dict.set_item("iia", m.iia)?;
            dict.set_item("task_accuracy", m.task_accuracy)?;
            dict.set_item("examples", m.examples)?;
            Ok(dict)
        };
        let dict = PyDict::new(py);
        dict.set_item("steps", report.steps)?;
        dict.set_item("resumed_from", report.resumed_from)?;
        dict.set_item("first_epoch_loss", report.first_epoch_loss)?;
        dict.set_item("last_epoch_loss", report.last_epoch_loss)?;
        dict.set_item("train", metrics(&report.train)?)?;
        dict.set_item("eval", report.eval.as_ref().map(metrics).transpose()?)?;
        Ok(dict)
    }

    /// Writes the model's (trained) weights to `dir` as a checkpoint its adapter loads.
    fn save_model(&self, py: Python<'_>, dir: PathBuf) -> PyResult<()> {
        released(py, "saving the model", || train::save_model(self.inner.model(), &dir).or_raise())
    }

    /// Loss, IIA and (with factual labels) task accuracy on JSON-lines examples, without gradients.
    #[pyo3(signature = (examples, batch_size=16))]
    fn evaluate(&mut self, py: Python<'_>, examples: &str, batch_size: usize) -> PyResult<(f64, f64, Option<f64>)> {
        let examples = train::parse_dataset(examples, "the evaluation examples").or_raise()?;
        let all: Vec<&train::TrainingExample> = examples.iter().collect();
        let tokenizer = self.model.borrow(py).tokenizer.clone();
        let metrics = released(py, "evaluation", || {
            train::evaluate(&mut self.inner, &all, batch_size, tokenizer.as_deref()).or_raise()
        })?;
        Ok((metrics.loss, metrics.iia, metrics.task_accuracy))
    }
}
