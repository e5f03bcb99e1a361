//! DAS versus a linear probe: where a variable is decodable versus where it is causal.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use super::{bind, output::Figure, SweepOptions};
use crate::train::{TrainOptions, TrainingExample};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// DAS versus a linear probe (the paper's gender study, in miniature): for a template such as "NAME walked because"
/// → he / she, per layer × position, the held-out IIA of a rank-1 DAS intervention on the block output and the
/// held-out accuracy of a logistic-regression probe on the same activations.
#[derive(Debug, Clone, Serialize)]
pub struct DasProbe {
    /// The prompt's tokens at the positions studied (the name as NAME).
    pub tokens: Vec<String>,
    /// The positions studied, rows of both grids.
    pub positions: Vec<usize>,
    /// Counterfactual pairs DAS was trained on and evaluated on.
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// The probe's test accuracy of always answering the largest class.
    pub majority_baseline: f64,
    /// `[position][layer]`.
    pub das_iia: Vec<Vec<f64>>,
    pub probe_accuracy: Vec<Vec<f64>>,
}

/// The variable studied: a template with a `{name}` slot, and classes of names with the word each class predicts.
#[derive(Debug, Clone)]
pub struct ProbeSetup {
    pub template: String,
    /// (target word, names).
    pub classes: Vec<(String, Vec<String>)>,
    pub budget: DasBudget,
}

/// How much of the grid DAS trains on: the full one by default; a smaller one where a large model would take hours.
#[derive(Debug, Clone)]
pub struct DasBudget {
    /// Positions studied (default: every position).
    pub positions: Option<Vec<usize>>,
    /// Counterfactual pairs drawn (seeded) from all cross-class pairs (default: all).
    pub pairs: Option<usize>,
    pub epochs: usize,
}

impl Default for DasBudget {
    fn default() -> Self {
        Self { positions: None, pairs: None, epochs: 8 }
    }
}

impl ProbeSetup {
    fn prompt(&self, name: &str) -> String {
        self.template.replace("{name}", name)
    }

    /// What decides the cells' results besides the model.
    pub fn sweep_options(&self) -> Result<SweepOptions> {
        Ok(vec![
            ("--template", json!(self.template)),
            ("the classes' sha256", json!(crate::sharding::json_sha256(&self.classes)?)),
            ("--positions", json!(self.budget.positions)),
            ("--pairs", json!(self.budget.pairs)),
            ("--epochs", json!(self.budget.epochs)),
        ])
    }
}

/// What every cell of the grid shares, from the setup and the tokenizer alone: the names with their classes, each
/// class's target token, the positions studied and the prompt's token labels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbePlan {
    names: Vec<(String, usize)>,
    targets: Vec<i64>,
    layers: usize,
    studied: Vec<usize>,
    labels: Vec<String>,
}

/// One cell of the grid: a block output at a layer and a token position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCell {
    pub position: usize,
    pub layer: usize,
}

impl ProbeCell {
    /// The cell's stable id in a sweep, e.g. `cell-p03-l012`.
    pub fn id(&self) -> String {
        format!("cell-p{:02}-l{:03}", self.position, self.layer)
    }
}

/// What one cell measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub das_iia: f64,
    pub probe_accuracy: f64,
    pub train_pairs: usize,
    pub eval_pairs: usize,
}

/// Checks `setup` against the tokenizer and lays out the grid of a model with `layers` layers.
pub fn plan(tokenizer: &TextTokenizer, setup: &ProbeSetup, layers: usize) -> Result<ProbePlan> {
    if setup.classes.len() < 2 || !setup.template.contains("{name}") {
        return Err(VeneError::Config("DAS vs probe needs two or more classes and a template with {name}".to_string()));
    }
    let names: Vec<(String, usize)> = setup
        .classes
        .iter()
        .enumerate()
        .flat_map(|(class, (_, names))| names.iter().map(move |n| (n.clone(), class)))
        .collect();
    let targets = super::first_tokens(tokenizer, setup.classes.iter().map(|(word, _)| word.as_str()))?;
    let positions = tokenizer.encode(&setup.prompt(&names[0].0))?.len();
    if let Some((name, _)) =
        names.iter().find(|(n, _)| tokenizer.encode(&setup.prompt(n)).map_or(true, |t| t.len() != positions))
    {
        return Err(VeneError::Inputs(format!("every name must give the same number of tokens; {name:?} does not")));
    }
    let studied = setup.budget.positions.clone().unwrap_or_else(|| (0..positions).collect());
    if let Some(bad) = studied.iter().find(|&&p| p >= positions) {
        return Err(VeneError::Inputs(format!("position {bad} is outside the {positions}-token prompt")));
    }
    let labels = token_labels(tokenizer, setup, &names[0].0)?;
    Ok(ProbePlan { names, targets, layers, studied, labels })
}

impl ProbePlan {
    /// Every cell with its id, position by position and layer by layer within each.
    pub fn sweep_items(&self) -> Vec<(String, ProbeCell)> {
        self.studied
            .iter()
            .flat_map(|&position| (0..self.layers).map(move |layer| ProbeCell { position, layer }))
            .map(|cell| (cell.id(), cell))
            .collect()
    }

    /// The grid from every cell's result, given in [`ProbePlan::sweep_items`]' order.
    pub fn assemble(&self, results: &[CellResult]) -> Result<DasProbe> {
        if results.len() != self.studied.len() * self.layers {
            return Err(VeneError::Inputs(format!(
                "{} cell results for a grid of {} positions × {} layers",
                results.len(),
                self.studied.len(),
                self.layers
            )));
        }
        let rows = |value: fn(&CellResult) -> f64| -> Vec<Vec<f64>> {
            results.chunks(self.layers).map(|row| row.iter().map(value).collect()).collect()
        };
        let last = results.last();
        Ok(DasProbe {
            tokens: self.studied.iter().map(|&p| self.labels[p].clone()).collect(),
            positions: self.studied.clone(),
            train_pairs: last.map_or(0, |r| r.train_pairs),
            eval_pairs: last.map_or(0, |r| r.eval_pairs),
            majority_baseline: majority_baseline(&self.names, self.targets.len()),
            das_iia: rows(|r| r.das_iia),
            probe_accuracy: rows(|r| r.probe_accuracy),
        })
    }
}

/// Trains and evaluates DAS, and fits and tests the probe, at one cell.
pub fn measure_cell(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    plan: &ProbePlan,
    cell: ProbeCell,
) -> Result<(CellResult, LoadedModel)> {
    let data = counterfactuals(tokenizer, setup, &plan.names, &plan.targets, cell.position)?;
    let (train_set, eval_set) = crate::train::split(&data, 0.25, 3);
    let splits = (&train_set[..], &eval_set[..]);
    let (das_iia, model) = das_iia_at(model, plugins, tokenizer, splits, cell.layer, setup.budget.epochs)?;
    let (probe_accuracy, model) = probe(model, plugins, tokenizer, setup, &plan.names, cell.layer, cell.position)?;
    let result = CellResult { das_iia, probe_accuracy, train_pairs: train_set.len(), eval_pairs: eval_set.len() };
    Ok((result, model))
}

/// The whole grid in one process; `progress(done, total)` after each layer × position.
pub fn das_vs_probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    progress: impl FnMut(usize, usize),
) -> Result<(DasProbe, LoadedModel)> {
    let plan = plan(tokenizer, setup, model.catalog().num_layers as usize)?;
    let compute = |model, cell: &ProbeCell| measure_cell(model, plugins, tokenizer, setup, &plan, *cell);
    let (results, model) = super::run_items(&plan.sweep_items(), model, compute, progress)?;
    Ok((plan.assemble(&results)?, model))
}

/// The prompt's tokens, with the name's own shown as NAME.
fn token_labels(tokenizer: &TextTokenizer, setup: &ProbeSetup, name: &str) -> Result<Vec<String>> {
    let tokens = tokenizer.encode(&setup.prompt(name))?;
    let name_ids = [tokenizer.encode_plain(name)?, tokenizer.encode_plain(&format!(" {name}"))?];
    Ok(tokens
        .iter()
        .map(|&t| if name_ids.iter().any(|ids| ids.contains(&t)) { "NAME".to_string() } else { tokenizer.decode(&[t]) })
        .collect())
}

/// The share of the probe's test names (every third) in their largest class.
fn majority_baseline(names: &[(String, usize)], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    let test: Vec<usize> = names.iter().skip(2).step_by(3).map(|(_, class)| *class).collect();
    test.iter().for_each(|&class| counts[class] += 1);
    counts.into_iter().max().unwrap_or(0) as f64 / test.len().max(1) as f64
}

/// Every ordered pair of names from different classes, swapping `position`: the label is the source name's word.
fn counterfactuals(
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    names: &[(String, usize)],
    targets: &[i64],
    position: usize,
) -> Result<Vec<TrainingExample>> {
    let ids = |name: &str| -> Result<Vec<i64>> { tokenizer.encode(&setup.prompt(name)) };
    let mut examples = Vec::new();
    for (base, base_class) in names {
        for (source, source_class) in names {
            if base_class == source_class {
                continue;
            }
            let example = serde_json::from_value(json!({
                "base": {"input_ids": [ids(base)?]},
                "sources": [{"input_ids": [ids(source)?]}],
                "unit_locations": {"sources->base": [position, position]},
                "label": targets[*source_class]
            }))
            .map_err(|e| VeneError::Config(e.to_string()))?;
            examples.push(example);
        }
    }
    if let Some(pairs) = setup.budget.pairs.filter(|&p| p < examples.len()) {
        use rand::{seq::SliceRandom, SeedableRng};
        examples.shuffle(&mut rand::rngs::StdRng::seed_from_u64(position as u64));
        examples.truncate(pairs);
    }
    Ok(examples)
}

/// Held-out IIA of a rank-1 low-rank rotated space trained on the block output at `layer`.
fn das_iia_at(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    (train_set, eval_set): (&[&TrainingExample], &[&TrainingExample]),
    layer: usize,
    epochs: usize,
) -> Result<(f64, LoadedModel)> {
    let mut das = bind(
        model,
        plugins,
        json!({"representations": [{"layer": layer, "component": "block_output", "low_rank_dimension": 1,
            "intervention": {"type": "low_rank_rotated_space"}}]}),
    )?;
    let options = TrainOptions {
        epochs,
        batch_size: 16,
        learning_rate: 0.05,
        warmup_fraction: 0.05,
        eval_fraction: 0.0,
        seed: 1,
        ..TrainOptions::default()
    };
    let report = crate::train::train(&mut das, train_set, eval_set, &options, Some(tokenizer), |_| {})?;
    Ok((report.eval.map_or(0.0, |m| m.iia), das.into_model()))
}

/// Held-out accuracy (train on two thirds of the names, test on the rest) of a logistic-regression probe for the
/// name's gender on the block output at `layer`, `position`.
fn probe(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &ProbeSetup,
    names: &[(String, usize)],
    layer: usize,
    position: usize,
) -> Result<(f64, LoadedModel)> {
    let mut collector = bind(
        model,
        plugins,
        json!({"representations": [{"layer": layer, "component": "block_output", "intervention": {"type": "collect"}}]}),
    )?;
    let prompts: Vec<String> = names.iter().map(|(n, _)| setup.prompt(n)).collect();
    let (ids, _) = tokenizer.encode_batch(&prompts)?;
    let inputs = ForwardInputs::from_ids(ids.to_device(collector.model().device()));
    let locations = UnitLocations::parse(Some(&json!({"base": position})))?;
    let features = {
        let _no_grad = tch::no_grad_guard();
        collector
            .run(&inputs, &[], &locations, &Subspaces::None)?
            .collected
            .remove(0)
            .squeeze_dim(1)
            .to_kind(Kind::Float)
            // The probe is a small logistic regression: it is fitted on the CPU wherever the model runs.
            .to_device(tch::Device::Cpu)
    };
    let labels = Tensor::from_slice(&names.iter().map(|(_, class)| *class as i64).collect::<Vec<_>>());
    // Every third name is held out.
    let train: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 != 2).collect();
    let test: Vec<i64> = (0..names.len() as i64).filter(|i| i % 3 == 2).collect();
    let (train, test) = (Tensor::from_slice(&train), Tensor::from_slice(&test));
    let accuracy = logistic_probe_accuracy(
        (&features.index_select(0, &train), &labels.index_select(0, &train)),
        (&features.index_select(0, &test), &labels.index_select(0, &test)),
        setup.classes.len() as i64,
    )?;
    Ok((accuracy, collector.into_model()))
}

/// Test accuracy of a logistic-regression probe (features standardised on the training set, Adam, 200 full-batch
/// steps) fitted to `(features, labels)` of `train` and scored on `test`; CPU float features, class-id labels.
pub(crate) fn logistic_probe_accuracy(
    (x, y): (&Tensor, &Tensor),
    (test_x, test_y): (&Tensor, &Tensor),
    classes: i64,
) -> Result<f64> {
    let mean = x.mean_dim(0, true, Kind::Float);
    let scale = x.std_dim(0, true, true) + 1e-6;
    let weights = Tensor::zeros([x.size()[1], classes], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let bias = Tensor::zeros([classes], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let mut optimizer = tch::COptimizer::adam(0.05, 0.9, 0.999, 0.0, 1e-8, false)?;
    optimizer.add_parameters(&weights, 0)?;
    optimizer.add_parameters(&bias, 0)?;
    let normalised = (x - &mean) / &scale;
    for _ in 0..200 {
        optimizer.zero_grad()?;
        let loss = (normalised.matmul(&weights) + &bias).cross_entropy_for_logits(y);
        loss.backward();
        optimizer.step()?;
    }
    let _no_grad = tch::no_grad_guard();
    let predicted = (((test_x - &mean) / &scale).matmul(&weights) + &bias).argmax(-1, false);
    Ok(predicted.eq_tensor(test_y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]))
}

impl DasProbe {
    /// The two heatmaps, `das_iia` and `probe_accuracy`, with the given titles.
    pub fn heatmaps(&self, das_title: &str, probe_title: &str) -> Vec<Figure> {
        [
            ("das_iia", &self.das_iia, das_title, "held-out IIA"),
            ("probe_accuracy", &self.probe_accuracy, probe_title, "held-out accuracy"),
        ]
        .into_iter()
        .map(|(name, values, title, scale)| Figure::Heatmap {
            name: name.to_string(),
            title: title.to_string(),
            row_labels: self.tokens.clone(),
            column_label: "layer".to_string(),
            scale_label: scale.to_string(),
            values: values.clone(),
            max: 1.0,
        })
        .collect()
    }
}

/// das-probe's figures (the two heatmaps), numbers and summary.
pub fn study_output(result: &DasProbe) -> Result<super::output::StudyOutput> {
    let figures = result.heatmaps("rank-1 DAS held-out IIA", "linear probe held-out accuracy");
    let summary = format!("DAS IIA {:?}\nprobe accuracy {:?}", result.das_iia, result.probe_accuracy);
    super::output::StudyOutput::new("das_probe.json", result, figures, summary)
}
