//! Concept erasure: LEACE fitted in closed form leaves every class the same mean, and the `vene_erasure` plugin's
//! types act through the engine; bad erasers are refused by name.

use tch::{Kind, Tensor};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    erasure::{fit_inlp, fit_leace},
    model::ForwardInputs,
};

use crate::common::*;

/// Seeded activations whose class shifts them along a direction, with correlated noise.
fn labelled_activations() -> (Tensor, Tensor) {
    tch::manual_seed(3);
    let labels = Tensor::randint(2, [400], (Kind::Int64, tch::Device::Cpu));
    let mixing = Tensor::randn([8, 8], (Kind::Float, tch::Device::Cpu));
    let direction = Tensor::randn([8], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::randn([400, 8], (Kind::Float, tch::Device::Cpu)).matmul(&mixing)
        + labels.to_kind(Kind::Float).unsqueeze(1) * direction.unsqueeze(0) * 3.0;
    (x, labels)
}

fn class_mean_gap(x: &Tensor, labels: &Tensor) -> f64 {
    let mean =
        |class: i64| x.index_select(0, &labels.eq(class).nonzero().squeeze_dim(1)).mean_dim(0, false, Kind::Float);
    (mean(1) - mean(0)).abs().max().double_value(&[])
}

#[test]
fn leace_leaves_every_class_the_same_mean() {
    let (x, labels) = labelled_activations();
    let fitted = fit_leace(&x, &labels).unwrap();
    let erased = &x - (&x - &fitted.mean).matmul(&fitted.eraser.tr());
    assert!(class_mean_gap(&x, &labels) > 1.0, "the classes differ before");
    assert!(class_mean_gap(&erased, &labels) < 1e-4, "gap after: {}", class_mean_gap(&erased, &labels));
    // Two classes: one direction erased, so the eraser has rank 1.
    let eraser = fitted.eraser.to_kind(Kind::Double);
    let squared_singular = eraser.tr().matmul(&eraser).linalg_eigvalsh("L");
    let rank = squared_singular.gt(1e-10).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(rank, 1, "squared singular values {squared_singular}");
}

#[test]
fn leace_refuses_labels_that_do_not_fit() {
    let (x, labels) = labelled_activations();
    let one_class = labels.zeros_like();
    let error = fit_leace(&x, &one_class).err().expect("one class").to_string();
    assert!(error.contains("at least two classes present; found 1 distinct label(s)"), "{error}");
    let error = fit_leace(&x, &labels.narrow(0, 0, 10)).err().expect("too few labels").to_string();
    assert!(error.contains("one label per example: 400 examples, labels of shape [10]"), "{error}");
}

/// INLP: the first probe reads the class, each iteration removes what the last probe used, and after a few no
/// linear probe does better than chance on held-out examples; the directions are orthonormal, one per iteration.
#[test]
fn inlp_removes_what_linear_probes_read() {
    let (x, labels) = labelled_activations();
    let fitted = fit_inlp(&x, &labels, 6).unwrap();
    assert_eq!(fitted.directions.size(), [6, 8]);
    let gram = fitted.directions.matmul(&fitted.directions.tr());
    let off = (&gram - Tensor::eye(6, (Kind::Float, tch::Device::Cpu))).abs().max().double_value(&[]);
    assert!(off < 1e-5, "orthonormal directions: {gram}");
    let accuracies = &fitted.accuracies;
    assert!(accuracies[0] > 0.9, "the first probe reads the class: {accuracies:?}");
    assert!(*accuracies.last().unwrap() < 0.65, "after five removals probes are near chance: {accuracies:?}");
    // The class means coincide along every remaining direction only approximately (INLP is not LEACE), but the
    // gap shrinks.
    let erased = &x - x.matmul(&fitted.directions.tr()).matmul(&fitted.directions);
    assert!(class_mean_gap(&erased, &labels) < 0.5 * class_mean_gap(&x, &labels));
    let error = fit_inlp(&x, &labels, 0).err().expect("no iterations").to_string();
    assert!(error.contains("INLP needs at least one iteration"), "{error}");
    let error = fit_inlp(&x, &labels.zeros_like(), 2).err().expect("one class").to_string();
    assert!(error.contains("INLP needs class labels 0, 1, … with at least two classes present; found 1"), "{error}");
}

#[test]
fn erasure_types_act_through_the_engine_and_refuse_bad_shapes() {
    let plugins = plugins(&["vene_gpt2", "vene_erasure"]);
    let model = load_gpt2(&plugins);
    let bind = |intervention: serde_json::Value| {
        let config = serde_json::json!({"representations": [
            {"layer": 1, "component": "block_output", "intervention": intervention},
            {"layer": 2, "component": "block_input", "intervention": {"type": "collect"}}]});
        IntervenableModel::new(model.clone(), IntervenableConfig::from_json(&config.to_string()).unwrap(), &plugins, 0)
    };
    // Projecting out every direction of the residual stream leaves zeros at the intervened position.
    let identity: Vec<Vec<f32>> = (0..32).map(|i| (0..32).map(|j| f32::from(i == j)).collect()).collect();
    let mut erase_all = bind(serde_json::json!({"type": "nullspace_projection", "directions": identity})).unwrap();
    let ids = ForwardInputs::from_ids(Tensor::from_slice(&[5i64, 9, 2, 7]).view([1, 4]));
    let locations = vene_host::locations::UnitLocations::parse(Some(&serde_json::json!({"base": 2}))).unwrap();
    let _no_grad = tch::no_grad_guard();
    let run = erase_all.run(&ids, &[], &locations, &vene_host::locations::Subspaces::None).unwrap();
    assert!(run.collected[0].abs().max().double_value(&[]) < 1e-5);
    let error = bind(serde_json::json!({"type": "leace", "eraser": [[1.0, 0.0], [0.0, 1.0]], "mean": [0.0, 0.0]}))
        .err()
        .expect("a 2 × 2 eraser for a 32-wide site")
        .to_string();
    assert!(error.contains("eraser [2, 2] and mean [2] must be 32 × 32 and 32 (the site's width)"), "{error}");
    let error = bind(serde_json::json!({"type": "leace", "mean": [0.0]})).err().expect("no eraser").to_string();
    assert!(error.contains("leace: needs \"eraser\""), "{error}");
}

/// Amnesic probing refuses prompts whose names differ in length and positions outside the prompt.
#[test]
fn amnesic_probing_refuses_bad_setups_by_name() {
    use vene_host::{
        studies::amnesic::{amnesic_probe, AmnesicSetup, Eraser},
        text::TextTokenizer,
    };
    let dir = scratch("amnesic-errors");
    gpt2_with_word_tokenizer(&dir);
    let plugins = plugins(&["vene_gpt2", "vene_erasure"]);
    let model =
        vene_host::model::LoadedModel::load(&plugins, &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)
            .unwrap();
    let tokenizer = TextTokenizer::for_model(&dir, "gpt2").unwrap().unwrap();
    let setup = |names: Vec<&str>, position| AmnesicSetup {
        template: "{name} w5 w6".to_string(),
        classes: vec![
            ("w1".to_string(), names.iter().map(|n| n.to_string()).collect()),
            ("w2".to_string(), vec!["w20".to_string(), "w21".to_string(), "w22".to_string()]),
        ],
        layer: 1,
        component: "block_output".to_string(),
        position,
        eraser: Eraser::Inlp(2),
    };
    let error = |s: AmnesicSetup| amnesic_probe(&model, &plugins, &tokenizer, &s).expect_err("refused").to_string();
    assert!(error(setup(vec!["w10", "w11 w12"], 0))
        .contains("\"w11 w12\" makes the prompt 4 tokens long where the first name makes it 3"));
    assert!(error(setup(vec!["w10", "w11", "w12"], 3))
        .contains("position 3 is outside the 3-token prompts (valid: 0 to 2)"));
    let found = amnesic_probe(&model, &plugins, &tokenizer, &setup(vec!["w10", "w11", "w12", "w13"], 0)).unwrap();
    assert_eq!((found.train_names, found.held_out_names), (5, 2));
}
