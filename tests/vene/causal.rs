//! Causal models and interchange intervention training: the expression language, pyvene's interchange semantics
//! on the hierarchical-equality model, and an MLP trained on the task (plainly, and by IIT so that fixed slices hold
//! the equality variables), measured with interchange interventions and DAS.

use std::path::{Path, PathBuf};

use serde_json::json;
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    causal::{CausalModel, Expr, Interventions, Value},
    config::IntervenableConfig,
    engine::IntervenableModel,
    model::LoadedModel,
    toy::{self, MlpShape},
    train::{self, ModelObjective, TrainOptions, TrainingExample},
};

use crate::common::*;

fn equality_model() -> CausalModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/causal/hierarchical_equality.json");
    CausalModel::from_file(&path).unwrap()
}

fn eval(source: &str, values: &[(&str, Value)]) -> Result<Value, String> {
    let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    Expr::parse(source)?.eval(&lookup)
}

#[test]
fn expressions_follow_precedence_and_name_their_errors() {
    let int = Value::Int;
    assert_eq!(eval("1 + 2 * 3 - 4 % 3", &[]), Ok(int(6)));
    assert_eq!(eval("-7 / 2", &[]), Ok(int(-4)), "integer division rounds down");
    assert_eq!(eval("if A > B then A else B", &[("A", int(3)), ("B", int(5))]), Ok(int(5)));
    assert_eq!(eval("not A == B and true or false", &[("A", int(1)), ("B", int(1))]), Ok(Value::Bool(false)));
    assert_eq!(eval("min(A, 4) + abs(-2) + max(1, 0)", &[("A", int(9))]), Ok(int(7)));
    assert_eq!(eval("W == \"cat\"", &[("W", Value::Str("cat".into()))]), Ok(Value::Bool(true)));
    assert_eq!(Expr::parse("if A then B + C else A").unwrap().variables(), vec!["A", "B", "C"]);
    let errors = [
        ("A +", "expected a value, found the end"),
        ("pow(A, 2)", "unknown function 'pow' (known: min, max, abs)"),
        ("A == 'open", "the string starting at \"'open\" is not closed"),
        ("if A then B", "expected 'else', found the end"),
        ("A B", "unexpected 'B' after a complete expression"),
        ("A # B", "unexpected character '#'"),
    ];
    for (source, expected) in errors {
        assert_eq!(Expr::parse(source).err().as_deref(), Some(expected), "{source}");
    }
    assert_eq!(eval("A + true", &[("A", int(1))]).err().as_deref(), Some("'add' needs an integer, got true"));
    assert_eq!(eval("A % 0", &[("A", int(1))]).err().as_deref(), Some("rem by zero (1 and 0)"));
}

#[test]
fn bad_causal_models_are_refused_by_name() {
    let check = |variables: serde_json::Value, extra: serde_json::Value, expected: &str| {
        let mut spec = json!({"variables": variables, "output": "O", "encoding": {"text": "{A}"}});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let error = CausalModel::from_json(&spec.to_string(), "spec.json").expect_err(expected).to_string();
        assert!(error.contains(expected), "{error}\n  expected: {expected}");
    };
    let a = json!({"name": "A", "values": {"range": [0, 3]}});
    check(
        json!([{"name": "O", "function": "A + 1"}, a]),
        json!({}),
        "spec.json: the function of 'O' reads 'A', which is not declared before it",
    );
    check(json!([a, a]), json!({}), "variable 'A' is declared twice");
    check(json!([a, {"name": "B", "function": "A"}]), json!({}), "the output 'O' is not a variable (variables: A, B)");
    check(
        json!([a, {"name": "O", "function": "A +"}]),
        json!({}),
        "the function of 'O' (A +): expected a value, found the end",
    );
    check(json!([a, {"name": "O"}]), json!({}), "variable 'O' needs exactly one of \"values\" and \"function\"");
    check(
        json!([a, {"name": "O", "function": "A"}]),
        json!({"sampling": {"patterns": [["x", "y"]]}}),
        "the pattern [\"x\", \"y\"] gives 2 letters for 1 inputs",
    );
    check(
        json!([a, {"name": "O", "function": "A"}]),
        json!({"encoding": {"vectors": {"dim": 2}}}),
        "the vectors encoding needs entity inputs; 'A' is not",
    );
}

/// pyvene's `run_interchange`: the intervened variable takes its value on the source, the rest follows the base.
#[test]
fn interchange_labels_follow_the_causal_model() {
    let model = equality_model();
    let [w, x, y, z, wx, yz, o] = ["W", "X", "Y", "Z", "WX", "YZ", "O"].map(|n| model.index(n).unwrap());
    let entities = |ids: [i64; 4]| ids.map(Value::Int).to_vec();
    let base = entities([1, 1, 2, 3]);
    assert_eq!(model.run(&base, &[]).unwrap()[o], Value::Bool(false), "WX true, YZ false");
    let source = entities([4, 5, 6, 6]);
    let setting = model.interchange(&base, &[(wx, source.clone())]).unwrap();
    assert_eq!(
        (setting[wx].clone(), setting[yz].clone(), setting[o].clone()),
        (false.into(), false.into(), true.into())
    );
    let both = model.interchange(&base, &[(wx, source.clone()), (yz, source)]).unwrap();
    assert_eq!(both[o], Value::Bool(false), "WX false from the source, YZ true from the source");
    assert_eq!(model.run(&base, &[(x, Value::Int(9))]).unwrap()[o], Value::Bool(true), "fixing an input");
    let _ = (w, y, z);

    // Generated lines agree with the model, sources stand in for the base where not intervened on, and the
    // tutorial's four patterns balance the output exactly.
    let interventions = Interventions::new(&model, &["WX".into(), "YZ".into()], &[]).unwrap();
    assert_eq!(interventions.sets, vec![vec![0], vec![1], vec![0, 1]]);
    let mut rng = rand::SeedableRng::seed_from_u64(4);
    let mut flips = 0;
    for _ in 0..300 {
        let example = model.sample_counterfactual(&interventions, &mut rng).unwrap();
        let fixed: Vec<(usize, Vec<Value>)> =
            example.intervened.iter().map(|&s| (interventions.variables[s], example.sources[s].clone())).collect();
        assert_eq!(example.output, model.interchange(&example.base, &fixed).unwrap()[o]);
        for slot in 0..2 {
            if !example.intervened.contains(&slot) {
                assert_eq!(example.sources[slot], example.base);
            }
        }
        flips += usize::from(example.output != example.base_output);
    }
    assert!((120..180).contains(&flips), "about half the interventions change the output: {flips} of 300");
    let distribution = model.output_distribution(4000, 1).unwrap();
    let shares: Vec<usize> = distribution.iter().map(|(_, n)| *n).collect();
    assert!(shares.iter().all(|&n| (1800..2200).contains(&n)), "output shares {distribution:?}");
    let sets = [vec!["YZ".to_string(), "XY".to_string()]];
    let error = Interventions::new(&model, &["WX".into(), "YZ".into()], &sets).err().unwrap().to_string();
    assert!(
        error.contains("the intervention on 'XY' names a variable that is not aligned (aligned: WX, YZ)"),
        "{error}"
    );
}

fn examples(lines: Vec<serde_json::Value>) -> Vec<TrainingExample> {
    lines.into_iter().map(|line| serde_json::from_value(line).unwrap()).collect()
}

fn bind(dir: &Path, config: serde_json::Value) -> IntervenableModel {
    let plugins = plugins(&["vene_mlp", "vene_das"]);
    let model = LoadedModel::load(&plugins, dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    IntervenableModel::new(model, serde_json::from_value(config).unwrap(), &plugins, 0).unwrap()
}

/// Two representations at block_output of layer 0, WX in dims 0..8 (or rotated dims), YZ in 8..16.
fn aligned_config(intervention: serde_json::Value) -> serde_json::Value {
    let representation = json!({"layer": 0, "component": "block_output", "subspace_partition": [[0, 8], [8, 16]],
        "intervention_link_key": 0, "intervention": intervention});
    json!({"representations": [representation, representation]})
}

fn train_model(dir: &Path, out: &Path, config: serde_json::Value, data: &[TrainingExample], options: TrainOptions) {
    let mut model = bind(dir, config);
    let (train_set, eval_set) = train::split(data, 0.1, 0);
    let report = train::train(&mut model, &train_set, &eval_set, &options, None, |_| {}).unwrap();
    let eval = report.eval.unwrap();
    assert!(eval.task_accuracy.unwrap() > 0.97, "task accuracy after training: {eval:?}");
    train::save_model(model.model(), out).unwrap();
}

fn iia(dir: &Path, config: serde_json::Value, data: &[TrainingExample]) -> f64 {
    let all: Vec<&TrainingExample> = data.iter().collect();
    train::evaluate(&mut bind(dir, config), &all, 512, None).unwrap().iia
}

/// An MLP trained on the task alone does not keep WX and YZ in fixed halves of its first layer; trained by IIT it
/// does (vanilla interchanges there follow the causal model), and DAS finds the variables in the plain one.
#[test]
fn interchange_intervention_training_puts_the_variables_where_asked() {
    let scratch = scratch("iit");
    let model = equality_model();
    let shape = MlpShape { h_dim: 16, n_layer: 3, num_classes: 2, activation: "relu".into() };
    let fresh = scratch.join("fresh");
    toy::new_mlp(&fresh, &shape, 0).unwrap();
    let options = |epochs, batch_size, interchange_weight| TrainOptions {
        epochs,
        batch_size,
        learning_rate: 2e-3,
        warmup_fraction: 0.0,
        model_objective: Some(ModelObjective { interchange_weight, task_weight: 1.0 }),
        ..TrainOptions::default()
    };
    let interventions = Interventions::new(&model, &["WX".into(), "YZ".into()], &[]).unwrap();
    let counterfactual = examples(model.counterfactual_lines(&interventions, 40_000, 1, true).unwrap());
    let test = examples(model.counterfactual_lines(&interventions, 4_000, 2, true).unwrap());
    let factual = examples(model.factual_lines(60_000, 3).unwrap());

    let plain = scratch.join("plain");
    train_model(&fresh, &plain, json!({"representations": []}), &factual, options(12, 128, 0.0));
    let iit = scratch.join("iit");
    train_model(&fresh, &iit, aligned_config(json!({"type": "vanilla"})), &counterfactual, options(8, 128, 1.0));

    let vanilla = aligned_config(json!({"type": "vanilla"}));
    let (plain_iia, iit_iia) = (iia(&plain, vanilla.clone(), &test), iia(&iit, vanilla, &test));
    assert!(iit_iia > 0.97, "IIT-trained: IIA {iit_iia} at the aligned slices");
    assert!(plain_iia < 0.8, "plain-trained control: IIA {plain_iia} at the same slices");

    let mut das = bind(&plain, aligned_config(json!({"type": "rotated_space"})));
    let (train_set, _) = train::split(&counterfactual, 0.0, 0);
    let das_options = TrainOptions { epochs: 4, batch_size: 256, learning_rate: 1e-2, ..TrainOptions::default() };
    train::train(&mut das, &train_set, &[], &das_options, None, |_| {}).unwrap();
    let test_refs: Vec<&TrainingExample> = test.iter().collect();
    let das_iia = train::evaluate(&mut das, &test_refs, 512, None).unwrap().iia;
    assert!(das_iia > plain_iia + 0.1, "DAS on the plain model: IIA {das_iia} (vanilla {plain_iia})");
    std::fs::remove_dir_all(&scratch).ok();
}

/// The trained weights are saved beside a copy of the config and reload to the same outputs; adapters that do not
/// offer their weights are refused by name.
#[test]
fn trained_models_save_and_reload_and_other_adapters_are_refused() {
    let scratch = scratch("iit-save");
    let shape = MlpShape { h_dim: 16, n_layer: 2, num_classes: 2, activation: "relu".into() };
    let fresh = scratch.join("fresh");
    toy::new_mlp(&fresh, &shape, 7).unwrap();
    let model = equality_model();
    let factual = examples(model.factual_lines(256, 1).unwrap());
    let options = TrainOptions {
        epochs: 1,
        batch_size: 64,
        model_objective: Some(ModelObjective { interchange_weight: 0.0, task_weight: 1.0 }),
        ..TrainOptions::default()
    };
    let mut trained = bind(&fresh, json!({"representations": []}));
    let refs: Vec<&TrainingExample> = factual.iter().collect();
    train::train(&mut trained, &refs, &[], &options, None, |_| {}).unwrap();
    let saved: PathBuf = scratch.join("saved");
    train::save_model(trained.model(), &saved).unwrap();
    let batch = train::Batch::new(&refs[..32], None, tch::Device::Cpu).unwrap();
    let before = bind(&fresh, json!({"representations": []})).model().forward_plain(&batch.base).unwrap().output;
    let after = trained.model().forward_plain(&batch.base).unwrap().output;
    let reloaded = bind(&saved, json!({"representations": []})).model().forward_plain(&batch.base).unwrap().output;
    assert!(max_abs_diff(&before, &after) > 1e-3, "training changed the weights");
    assert_close(&reloaded, &after, 0.0, "the reloaded model");
    assert!(!after.requires_grad(), "the weights are frozen again after training");
    assert_eq!(std::fs::read(saved.join("config.json")).unwrap(), std::fs::read(fresh.join("config.json")).unwrap());

    let plugins = plugins(&["vene_gpt2"]);
    let gpt2 = load_gpt2(&plugins);
    let mut intervenable = IntervenableModel::new(gpt2, IntervenableConfig::empty(), &plugins, 0).unwrap();
    let error = train::train(&mut intervenable, &refs, &[], &options, None, |_| {}).err().unwrap().to_string();
    assert!(
        error.contains("the gpt2 adapter does not offer its weights for training (the mlp and gru adapters do)"),
        "{error}"
    );
    std::fs::remove_dir_all(&scratch).ok();
}
