//! Attribution patching: on a model linear in the patched activations the estimate is exact patching; bad inputs
//! are refused by name.

use serde_json::json;
use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    model::{ForwardInputs, LoadedModel},
    studies::attribution::{attribute, spearman, AttributionInputs, AttributionOptions, Metric},
};

use crate::common::*;

/// A two-layer MLP with linear activations and seeded weights (8 wide, 4 classes), saved in the HF layout.
fn linear_mlp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vene-linear-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    tch::manual_seed(3);
    let weight = |rows: i64| Tensor::randn([rows, 8], (Kind::Float, tch::Device::Cpu)) * 0.5;
    let bias = |rows: i64| Tensor::randn([rows], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let weights = vec![
        ("mlp.h.0.ff1.weight".to_string(), weight(8)),
        ("mlp.h.0.ff1.bias".to_string(), bias(8)),
        ("mlp.h.1.ff1.weight".to_string(), weight(8)),
        ("mlp.h.1.ff1.bias".to_string(), bias(8)),
        ("score.weight".to_string(), weight(4)),
        ("score.bias".to_string(), bias(4)),
    ];
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &weights).unwrap();
    let config = json!({"model_type": "mlp", "architectures": ["MLPForClassification"], "h_dim": 8, "n_layer": 2,
        "num_classes": 4, "activation_function": "linear", "include_bias": true, "squeeze_output": true});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn inputs(prompts: i64) -> AttributionInputs {
    tch::manual_seed(9);
    let features = || ForwardInputs::from_features(Tensor::randn([prompts, 3, 8], (Kind::Float, tch::Device::Cpu)));
    AttributionInputs {
        clean: features(),
        corrupted: features(),
        target: Tensor::from_slice(&vec![0i64; prompts as usize]),
        distractor: Tensor::from_slice(&vec![2i64; prompts as usize]),
    }
}

fn options(metric: Metric) -> AttributionOptions {
    AttributionOptions {
        components: vec!["block_output".to_string(), "mlp_activation".to_string()],
        metric,
        ig_steps: 0,
        top_k: 100,
        random_k: 0,
        verify_all: true,
        seed: 0,
    }
}

#[test]
fn on_a_linear_model_the_estimate_is_exact_patching() {
    let dir = linear_mlp("exact");
    let plugins = plugins(&["vene_mlp"]);
    let model = LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let (result, model) =
        attribute(model, &plugins, &inputs(3), &options(Metric::LogitDiff), vec!["x".into()]).unwrap();
    assert!((result.clean - result.corrupted).abs() > 0.1, "the corruption changes the metric");
    assert_eq!(result.verified.len(), 12, "2 components × 2 layers × 3 positions");
    for node in &result.verified {
        assert!((node.estimate - node.exact).abs() < 1e-5, "{node:?}");
        // The MLP acts position by position and the metric reads the last one.
        assert_eq!(node.exact.abs() > 1e-3, node.position == 2, "{node:?}");
    }
    assert!(result.rank_correlation_all.is_some_and(|r| r > 0.95), "{result:?}");
    // The gradient of a linear model is the same everywhere: integrated gradients give the same estimates.
    let mut ig = options(Metric::LogitDiff);
    ig.ig_steps = 3;
    let (integrated, model) = attribute(model, &plugins, &inputs(3), &ig, vec!["x".into()]).unwrap();
    assert_eq!(integrated.method, "integrated gradients (3 steps)");
    for (a, b) in integrated.verified.iter().zip(&result.verified) {
        assert!((a.estimate - b.estimate).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    // The probability is not linear in the activations: the estimate is only first order there.
    let (nonlinear, _) = attribute(model, &plugins, &inputs(3), &options(Metric::Prob), vec!["x".into()]).unwrap();
    let worst = nonlinear.verified.iter().map(|n| (n.estimate - n.exact).abs()).fold(0.0, f64::max);
    assert!(worst > 1e-4, "p(target) is curved, so AtP misses by more than rounding ({worst})");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_attribution_inputs_are_named() {
    let dir = linear_mlp("errors");
    let plugins = plugins(&["vene_mlp"]);
    let model = || LoadedModel::load(&plugins, &dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let mut asked = options(Metric::LogitDiff);
    asked.components = vec!["head_attention_value_output".to_string()];
    let error = attribute(model(), &plugins, &inputs(2), &asked, vec![]).err().unwrap().to_string();
    assert!(
        error.contains("no component \"head_attention_value_output\"") && error.contains("block_output"),
        "{error}"
    );
    let mut uneven = inputs(2);
    uneven.corrupted = ForwardInputs::from_features(Tensor::zeros([3, 1, 8], (Kind::Float, tch::Device::Cpu)));
    let error = attribute(model(), &plugins, &uneven, &options(Metric::LogitDiff), vec![]).err().unwrap().to_string();
    assert!(error.contains("the same shape, position by position"), "{error}");
    let error = Metric::parse("kl").err().unwrap().to_string();
    assert!(error.contains("\"kl\" is not one of logit-diff, prob, logprob"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn spearman_ranks_with_ties() {
    assert_eq!(spearman(&[(1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]), Some(1.0));
    assert_eq!(spearman(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]), Some(-1.0));
    let tied = spearman(&[(1.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]).unwrap();
    assert!((tied - 0.9487).abs() < 1e-3, "{tied}");
    assert_eq!(spearman(&[(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]), None);
}

/// The metric with `epsilon` times a node's corrupted-minus-clean difference added at that node alone.
fn nudged_metric(
    model: LoadedModel,
    inputs: &AttributionInputs,
    (component, layer, head, position): (&str, usize, Option<usize>, usize),
    epsilon: f64,
) -> (f64, LoadedModel) {
    use vene_host::{
        config::IntervenableConfig,
        engine::IntervenableModel,
        locations::{Subspaces, UnitLocations},
    };
    let plugins = plugins(&["vene_gpt2"]);
    let unit = if head.is_some() { "h" } else { "pos" };
    let bind = |model, intervention: &str| {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
            {"layer": layer, "component": component, "unit": unit, "intervention": {"type": intervention}}]}))
        .unwrap();
        IntervenableModel::new(model, config, &plugins, 0).unwrap()
    };
    let collect = |model, inputs: &ForwardInputs| {
        let mut collector = bind(model, "collect");
        let mut out = collector.run(inputs, &[], &UnitLocations::whole(), &Subspaces::None).unwrap().collected;
        (out.remove(0), collector.into_model())
    };
    let (clean, model) = collect(model, &inputs.clean);
    let (corrupted, model) = collect(model, &inputs.corrupted);
    let at_node = {
        let difference = (&corrupted - &clean) * epsilon;
        let mask = Tensor::zeros_like(&difference);
        let _ = match head {
            Some(h) => mask.get(0).select(0, h as i64).select(0, position as i64).fill_(1.0),
            None => mask.get(0).select(0, position as i64).fill_(1.0),
        };
        // The same node in every prompt.
        let mask = mask.get(0).unsqueeze(0).expand_as(&difference);
        difference * mask
    };
    let mut adder = bind(model, "addition");
    let output = adder
        .run_with_activations(&inputs.clean, vec![Some(at_node)], &UnitLocations::whole(), &Subspaces::None)
        .unwrap()
        .output;
    let logits = output.select(1, -1);
    (Metric::LogitDiff.of(&logits, &inputs.target, &inputs.distractor).double_value(&[]), adder.into_model())
}

/// On GPT-2 (seeded weights, f64) every site family's estimate is the derivative of the metric along the node's
/// corrupted-minus-clean difference, measured by central finite differences.
#[test]
fn estimates_are_directional_derivatives_at_every_site_family() {
    let plugins = plugins(&["vene_gpt2"]);
    let model = LoadedModel::load(&plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F64).unwrap();
    let ids = |values: &[i64]| ForwardInputs::from_ids(Tensor::from_slice(values).view([2, 5]));
    let inputs = AttributionInputs {
        clean: ids(&[3, 14, 15, 92, 65, 35, 89, 79, 32, 38]),
        corrupted: ids(&[27, 18, 28, 1, 8, 46, 26, 43, 38, 32]),
        target: Tensor::from_slice(&[42i64, 7]),
        distractor: Tensor::from_slice(&[11i64, 19]),
    };
    let components = ["block_output", "attention_output", "mlp_output", "head_attention_value_output"];
    let options = AttributionOptions {
        components: components.iter().map(|c| c.to_string()).collect(),
        top_k: 0,
        random_k: 0,
        verify_all: false,
        ..options(Metric::LogitDiff)
    };
    let (result, mut model) = attribute(model, &plugins, &inputs, &options, vec![]).unwrap();
    for scores in &result.components {
        let head = scores.per_head.then_some(1);
        let (layer, position) = (1, 2);
        let estimate = scores.scores[layer][head.unwrap_or(0)][position];
        let node = (scores.component.as_str(), layer, head, position);
        let epsilon = 1e-4;
        let (up, returned) = nudged_metric(model, &inputs, node, epsilon);
        let (down, returned) = nudged_metric(returned, &inputs, node, -epsilon);
        model = returned;
        let numeric = (up - down) / (2.0 * epsilon);
        assert!(estimate.abs() > 1e-6, "{node:?} has a gradient to check");
        assert!((numeric - estimate).abs() <= 1e-6 * (1.0 + numeric.abs()), "{node:?}: {numeric} vs {estimate}");
    }
}
