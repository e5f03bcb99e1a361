//! Trainable interventions (the DAS plugin): pyvene imports, gradients across the plugin boundary, recovery of a
//! planted causal variable, and saving.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    saved::{self, SavedInterventions},
    train::{self, TrainOptions, TrainingExample},
};

use crate::common::*;

fn cases(family: &str) -> Vec<PathBuf> {
    let mut cases: Vec<_> =
        std::fs::read_dir(fixtures().join("das").join(family)).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    cases
}

#[test]
fn pyvene_saved_das_interventions_match_on_gpt2() {
    for case in cases("gpt2") {
        run_reference_case(&["vene_gpt2", "vene_das"], &gpt2_dir(), &case, 1e-4);
    }
}

/// pyvene's save of a PCA rotated space writes its config but not the basis: vene loads the directory, refuses to
/// run it without a basis (saying how to give one), and with the basis loaded gives pyvene's numbers.
#[test]
fn pyvene_saved_pca_rotated_space_loads_and_takes_its_basis() {
    use vene_host::inputs::RunInputs;
    let plugins = plugins(&["vene_gpt2", "vene_das"]);
    let case = fixtures().join("das/gpt2/pca_rotated_space");
    let saved = SavedInterventions::load(&fixtures().join("das/pca_saved_by_pyvene")).unwrap();
    let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let mut intervenable = IntervenableModel::new(model, saved.config.clone(), &plugins, 0).unwrap();
    saved.apply(&mut intervenable).unwrap();
    let inputs = RunInputs::from_file(&case.join("inputs.json"), tch::Device::Cpu, None).unwrap();
    let _no_grad = tch::no_grad_guard();
    let run =
        |m: &mut IntervenableModel| m.run(&inputs.base, &inputs.sources, &inputs.unit_locations, &inputs.subspaces);
    let error = run(&mut intervenable).err().expect("no basis, no run").to_string();
    assert!(error.contains("pca_rotated_space: has no principal components"), "{error}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    let basis = &config["representations"][0]["intervention"];
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        let mut out = Vec::new();
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Array(items) => stack.extend(items.iter().rev()),
                number => out.push(number.as_f64().unwrap() as f32),
            }
        }
        out
    };
    let key = intervenable.keys()[0].to_string();
    intervenable
        .load_state(vec![
            (format!("{key}/pca_components"), Tensor::from_slice(&floats(&basis["components"])).view([8, 32])),
            (format!("{key}/pca_mean"), Tensor::from_slice(&floats(&basis["mean"]))),
            (format!("{key}/pca_std"), Tensor::from_slice(&floats(&basis["std"]))),
        ])
        .unwrap();
    let output = run(&mut intervenable).unwrap().output;
    let expected = read_safetensors(&case.join("expected.safetensors"));
    assert_close(&output, &expected[0].1, 1e-4, "pca_rotated_space loaded from pyvene's directory");
}

#[test]
fn pyvene_saved_das_interventions_match_on_gpt_neox() {
    for case in cases("gpt_neox") {
        run_reference_case(&["vene_gpt_neox", "vene_das"], &fixtures().join("gpt_neox/model"), &case, 1e-4);
    }
}

/// The gradient of a loss computed in the host, through the frozen GPT-2 in its adapter plugin, into the rotation
/// owned by the DAS plugin equals finite differences (f64).
#[test]
fn gradients_cross_the_plugin_boundary_and_match_finite_differences() {
    let plugins = plugins(&["vene_gpt2", "vene_das"]);
    let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F64).unwrap();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
        {"layer": 1, "component": "block_output", "low_rank_dimension": 2,
         "intervention": {"type": "low_rank_rotated_space"}}]}))
    .unwrap();
    let mut model = IntervenableModel::new(model, config, &plugins, 7).unwrap();
    let base = ForwardInputs::from_ids(Tensor::from_slice(&[3i64, 14, 15, 92, 65]).view([1, 5]));
    let source = ForwardInputs::from_ids(Tensor::from_slice(&[27i64, 18, 28, 1, 8]).view([1, 5]));
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [1, 3]}))).unwrap();
    let sources = [Some(source)];
    let loss = |model: &mut IntervenableModel| {
        let logits = model.run(&base, &sources, &locations, &Subspaces::None).unwrap().output;
        logits.select(1, -1).log_softmax(-1, Kind::Double).select(1, 42).neg().sum(Kind::Double)
    };
    let parameters = model.parameters().unwrap();
    assert_eq!(parameters.len(), 1);
    let (name, original) = &parameters[0];
    assert!(name.ends_with("/rotate_layer.parametrizations.weight.original"), "{name}");
    loss(&mut model).backward();
    let gradient = original.grad();
    assert!(gradient.abs().sum(Kind::Double).double_value(&[]) > 1e-6, "no gradient reached the plugin");
    let epsilon = 1e-6;
    // Entries below the diagonal drive the Householder reflectors; the diagonal holds signs.
    for (row, column) in [(3i64, 0i64), (10, 1), (25, 0)] {
        let nudge = |delta: f64, model: &mut IntervenableModel| {
            tch::no_grad(|| {
                let _ = original.get(row).get(column).g_add_scalar_(delta);
            });
            let value = tch::no_grad(|| loss(model).double_value(&[]));
            tch::no_grad(|| {
                let _ = original.get(row).get(column).g_add_scalar_(-delta);
            });
            value
        };
        let numeric = (nudge(epsilon, &mut model) - nudge(-epsilon, &mut model)) / (2.0 * epsilon);
        let analytic = gradient.double_value(&[row, column]);
        assert!(
            (numeric - analytic).abs() <= 1e-5 * (1.0 + numeric.abs()),
            "d loss / d original[{row}, {column}]: finite differences {numeric}, autograd {analytic}"
        );
    }
}

/// With `keep_last_dim`, one rotation acts on each selected position's own vector: the same as one intervention
/// shared (linked) by a representation per position.
#[test]
fn keep_last_dim_shares_one_rotation_across_units() {
    let plugins = plugins(&["vene_gpt2", "vene_das"]);
    let run = |representations: serde_json::Value, locations: serde_json::Value| {
        let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F64).unwrap();
        let config: IntervenableConfig = serde_json::from_value(json!({ "representations": representations })).unwrap();
        let mut model = IntervenableModel::new(model, config, &plugins, 3).unwrap();
        let widths: Vec<i64> = model.parameters().unwrap().iter().map(|(_, p)| p.size()[0]).collect();
        let base = ForwardInputs::from_ids(Tensor::from_slice(&[3i64, 14, 15, 92, 65]).view([1, 5]));
        let source = ForwardInputs::from_ids(Tensor::from_slice(&[27i64, 18, 28, 1, 8]).view([1, 5]));
        let locations = UnitLocations::parse(Some(&locations)).unwrap();
        (model.run(&base, &[Some(source)], &locations, &Subspaces::None).unwrap().output, widths)
    };
    let das = json!({"type": "low_rank_rotated_space", "keep_last_dim": true});
    let (shared, widths) = run(
        json!([{"layer": 1, "component": "block_output", "max_number_of_units": 2, "low_rank_dimension": 2,
                "intervention": das}]),
        json!({"sources->base": [[[[1, 3]]], [[[1, 3]]]]}),
    );
    assert_eq!(widths, [32], "one rotation of the hidden width, not of two positions flattened");
    let linked = || {
        json!({"layer": 1, "component": "block_output", "low_rank_dimension": 2, "intervention_link_key": 0,
               "intervention": {"type": "low_rank_rotated_space"}})
    };
    let (separate, _) = run(json!([linked(), linked()]), json!({"sources->base": [[[[1]], [[3]]], [[[1]], [[3]]]]}));
    let difference = (&shared - &separate).abs().max().double_value(&[]);
    assert!(difference < 1e-10, "keep_last_dim differs from a linked intervention per position by {difference}");
    let (plain, _) = run(
        json!([{"layer": 1, "component": "block_output", "max_number_of_units": 2, "low_rank_dimension": 2,
                "intervention": {"type": "low_rank_rotated_space"}}]),
        json!({"sources->base": [[[[1, 3]]], [[[1, 3]]]]}),
    );
    assert!((&shared - &plain).abs().max().double_value(&[]) > 1e-6, "flattened units are a different intervention");
}

/// A rotation too wide to hold is refused by name, with the way out.
#[test]
fn too_wide_a_rotation_is_refused() {
    let plugins = plugins(&["vene_gpt2", "vene_das"]);
    let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
        {"layer": 0, "component": "block_output", "max_number_of_units": 600, "low_rank_dimension": 1,
         "intervention": {"type": "low_rank_rotated_space"}}]}))
    .unwrap();
    let error = IntervenableModel::new(model, config, &plugins, 0).err().expect("refused").to_string();
    assert!(error.contains("a rotation of width 19200") && error.contains("keep_last_dim"), "{error}");
}

/// A linear classifier whose hidden layer carries two independent bits along two known orthogonal directions.
struct Planted {
    dir: PathBuf,
    /// `v1`, `v2`: the directions of the two bits in block_output of layer 0.
    directions: [Tensor; 2],
}

fn planted_model(name: &str) -> Planted {
    let dir = std::env::temp_dir().join(format!("vene-planted-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let samples: Vec<f32> = {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        (0..64).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    };
    let (rotation, _) = Tensor::linalg_qr(&Tensor::from_slice(&samples).view([8, 8]), "reduced");
    // Input dims 0 and 1 carry the bits; the hidden layer is `rotation @ x`, so the bits lie along its columns.
    let v1 = rotation.select(1, 0);
    let v2 = rotation.select(1, 1);
    let signs = [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)];
    let score = Tensor::stack(&signs.map(|(a, b)| &v1 * a + &v2 * b), 0);
    let weights = vec![
        ("mlp.h.0.ff1.weight".to_string(), rotation.shallow_clone()),
        ("mlp.h.0.ff1.bias".to_string(), Tensor::zeros([8], (Kind::Float, tch::Device::Cpu))),
        ("mlp.h.1.ff1.weight".to_string(), Tensor::eye(8, (Kind::Float, tch::Device::Cpu))),
        ("mlp.h.1.ff1.bias".to_string(), Tensor::zeros([8], (Kind::Float, tch::Device::Cpu))),
        ("score.weight".to_string(), score),
        ("score.bias".to_string(), Tensor::zeros([4], (Kind::Float, tch::Device::Cpu))),
    ];
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &weights).unwrap();
    let config = json!({"model_type": "mlp", "architectures": ["MLPForClassification"], "h_dim": 8, "n_layer": 2,
        "num_classes": 4, "activation_function": "linear", "include_bias": true, "squeeze_output": true});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    Planted { dir, directions: [v1, v2] }
}

/// Counterfactual examples: the label is the class of (bit 1 of the source, bit 2 of `second_from_source ? source :
/// base`).
fn planted_data(count: usize, second_from_source: bool) -> Vec<TrainingExample> {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(5);
    let mut input = |bits: (bool, bool)| -> Vec<f64> {
        let mut x: Vec<f64> = (0..8).map(|_| rng.gen_range(-1.5..1.5)).collect();
        x[0] = if bits.0 { 2.0 } else { -2.0 };
        x[1] = if bits.1 { 2.0 } else { -2.0 };
        x
    };
    let class = |(a, b): (bool, bool)| (usize::from(!a) * 2 + usize::from(!b)) as i64;
    (0..count)
        .map(|i| {
            let base_bits = (i % 2 == 0, i % 3 == 0);
            let source_bits = (i % 5 < 2, i % 7 < 3);
            let label = class((source_bits.0, if second_from_source { source_bits.1 } else { base_bits.1 }));
            serde_json::from_value(json!({
                "base": {"inputs": [[input(base_bits)]]},
                "sources": [{"inputs": [[input(source_bits)]]}],
                "label": label
            }))
            .unwrap()
        })
        .collect()
}

fn bind(planted: &Planted, representation: serde_json::Value) -> IntervenableModel {
    let plugins = plugins(&["vene_mlp", "vene_das"]);
    let model = LoadedModel::load(&plugins, &planted.dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [representation]})).unwrap();
    IntervenableModel::new(model, config, &plugins, 3).unwrap()
}

fn options() -> TrainOptions {
    TrainOptions {
        epochs: 6,
        batch_size: 32,
        learning_rate: 0.05,
        warmup_fraction: 0.05,
        eval_fraction: 0.2,
        seed: 1,
        ..TrainOptions::default()
    }
}

/// Rank-1 DAS finds the planted direction of bit 1: IIA ≥ 0.95 held out and |cos| ≥ 0.95 with it.
#[test]
fn rank_one_das_recovers_a_planted_direction() {
    let planted = planted_model("rank1");
    let mut model = bind(
        &planted,
        json!({"layer": 0, "component": "block_output", "low_rank_dimension": 1,
               "intervention": {"type": "low_rank_rotated_space"}}),
    );
    let data = planted_data(600, false);
    let (train_set, eval_set) = train::split(&data, 0.2, 1);
    let before = train::evaluate(&mut model, &eval_set, 64, None).unwrap();
    let report = train::train(&mut model, &train_set, &eval_set, &options(), None, |_| {}).unwrap();
    let eval = report.eval.expect("held-out metrics");
    assert!(report.last_epoch_loss < report.first_epoch_loss, "loss did not fall: {report:?}");
    assert!(eval.iia >= 0.95, "held-out IIA {} (before training {})", eval.iia, before.iia);
    let weight = model.state().unwrap();
    let original = &weight.iter().find(|(n, _)| n.ends_with("weight.original")).unwrap().1;
    let base = &weight.iter().find(|(n, _)| n.ends_with("weight.0.base")).unwrap().1;
    // The effective direction: base @ Q(original) for one column (Householder with one reflector).
    let reflector = original.tril(-1);
    let tau = 2.0 / (1.0 + (&reflector * &reflector).sum_dim_intlist(-2, false, None::<Kind>));
    let q = reflector.linalg_householder_product(&tau)
        * original.diagonal(0, -2, -1).to_kind(Kind::Int).to_kind(Kind::Float);
    let direction = base.matmul(&q).select(1, 0);
    let cosine = direction.dot(&planted.directions[0]).double_value(&[]).abs();
    assert!(cosine >= 0.95, "|cos(learned, planted)| = {cosine}");
    std::fs::remove_dir_all(&planted.dir).ok();
}

/// Boundless DAS learns a boundary as wide as the planted variable (two dimensions of eight).
#[test]
fn boundless_das_finds_the_planted_width() {
    let planted = planted_model("boundless");
    let mut model = bind(
        &planted,
        json!({"layer": 0, "component": "block_output",
               "intervention": {"type": "boundless_rotated_space", "temperature": {"start": 5.0, "end": 0.05},
                                "boundary_loss": 1.5}}),
    );
    let data = planted_data(600, true);
    let (train_set, eval_set) = train::split(&data, 0.2, 1);
    let report =
        train::train(&mut model, &train_set, &eval_set, &TrainOptions { epochs: 40, ..options() }, None, |_| {})
            .unwrap();
    let eval = report.eval.expect("held-out metrics");
    assert!(eval.iia >= 0.95, "held-out IIA {}", eval.iia);
    let state = model.state().unwrap();
    let entry = |name: &str| state.iter().find(|(n, _)| n.ends_with(name)).unwrap().1.shallow_clone();
    let (boundary, temperature) =
        (entry("intervention_boundaries").double_value(&[0]), entry("temperature").double_value(&[]));
    // pyvene's mask: σ(i/T)·σ((β·n − i)/T); rotated dimension 0 is never more than half swapped.
    let swapped = (0..8)
        .filter(|&i| {
            let i = f64::from(i);
            let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
            sigmoid(i / temperature) * sigmoid((boundary.clamp(1e-3, 1.0) * 8.0 - i) / temperature) > 0.9
        })
        .count();
    assert_eq!(swapped, 2, "fully swapped rotated dimensions (boundary {boundary}, temperature {temperature})");
    std::fs::remove_dir_all(&planted.dir).ok();
}

/// A trained intervention saved and loaded back gives bit-for-bit the same outputs.
#[test]
fn saved_interventions_reproduce_outputs_bit_for_bit() {
    let planted = planted_model("save");
    let representation = json!({"layer": 0, "component": "block_output", "low_rank_dimension": 2,
                                "intervention": {"type": "low_rank_rotated_space"}});
    let mut model = bind(&planted, representation.clone());
    let data = planted_data(64, false);
    let all: Vec<&TrainingExample> = data.iter().collect();
    train::train(&mut model, &all, &[], &TrainOptions { epochs: 1, ..options() }, None, |_| {}).unwrap();
    let out = planted.dir.join("saved");
    saved::save(&model, &out).unwrap();
    assert!(out.join("config.json").exists() && out.join("interventions.safetensors").exists());
    let batch = train::Batch::new(&all[..8], None, tch::Device::Cpu).unwrap();
    let _no_grad = tch::no_grad_guard();
    let expected = model.run(&batch.base, &batch.sources, &batch.locations, &batch.subspaces).unwrap().output;
    let plugins = plugins(&["vene_mlp", "vene_das"]);
    let loaded = SavedInterventions::load(&out).unwrap();
    assert_eq!(loaded.config.representations[0].intervention, representation["intervention"]);
    let model = LoadedModel::load(&plugins, &planted.dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let mut reloaded = IntervenableModel::new(model, loaded.config.clone(), &plugins, 99).unwrap();
    loaded.apply(&mut reloaded).unwrap();
    let again = reloaded.run(&batch.base, &batch.sources, &batch.locations, &batch.subspaces).unwrap().output;
    assert!(expected.equal(&again), "outputs differ after save and load");
    std::fs::remove_dir_all(&planted.dir).ok();
}

/// Loading state saved for another width names both shapes.
#[test]
fn saved_state_for_another_width_is_refused() {
    let planted = planted_model("width");
    let model = bind(
        &planted,
        json!({"layer": 0, "component": "block_output", "low_rank_dimension": 2,
                                      "intervention": {"type": "low_rank_rotated_space"}}),
    );
    let out = planted.dir.join("saved");
    saved::save(&model, &out).unwrap();
    let loaded = SavedInterventions::load(&out).unwrap();
    let plugins = plugins(&["vene_mlp", "vene_das"]);
    let model = LoadedModel::load(&plugins, &planted.dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let mut config = loaded.config.clone();
    config.representations[0].low_rank_dimension = Some(3);
    let mut other = IntervenableModel::new(model, config, &plugins, 0).unwrap();
    let error = loaded.apply(&mut other).expect_err("shape mismatch refused").to_string();
    assert!(error.contains("has shape [8, 2], this intervention needs [8, 3]"), "{error}");
    assert!(Path::new(&out).exists());
    std::fs::remove_dir_all(&planted.dir).ok();
}
