//! The steering and SAE plugins, steering vectors, and the `vene train` / `vene eval` commands.

use std::process::Command;

use serde_json::json;
use tch::{Kind, Tensor};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    plugins::PluginSet,
};

use crate::common::*;

fn run(
    plugins: &PluginSet,
    config: serde_json::Value,
    sources: &[Option<ForwardInputs>],
    locations: serde_json::Value,
) -> Tensor {
    let config: IntervenableConfig = serde_json::from_value(config).unwrap();
    let mut model = IntervenableModel::new(load_gpt2(plugins), config, plugins, 0).unwrap();
    let base = ForwardInputs::from_ids(Tensor::from_slice(&[9i64, 8, 7, 6, 5, 4]).view([2, 3]));
    let _no_grad = tch::no_grad_guard();
    model.run(&base, sources, &UnitLocations::parse(Some(&locations)).unwrap(), &Subspaces::None).unwrap().output
}

fn vector() -> Vec<f32> {
    (0..32).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect()
}

/// Steering on every layer's MLP output equals the built-in addition of a constant (coefficient × vector).
#[test]
fn steering_adds_coefficient_times_vector_at_every_site() {
    let plugins = plugins(&["vene_gpt2", "vene_steering"]);
    let steer: Vec<_> = (0..3)
        .map(|layer| {
            json!({"layer": layer, "component": "mlp_output",
            "intervention": {"type": "steering", "coefficient": 0.3, "vector": vector()}})
        })
        .collect();
    let scaled: Vec<f32> = vector().iter().map(|v| v * 0.3).collect();
    let add: Vec<_> = (0..3)
        .map(|layer| {
            json!({"layer": layer, "component": "mlp_output", "intervention": {"type": "addition"},
            "source_representation": scaled})
        })
        .collect();
    let locations = json!({"base": [[[0, 1, 2], [0, 1, 2]], [[0, 1, 2], [0, 1, 2]], [[0, 1, 2], [0, 1, 2]]]});
    let steered = run(&plugins, json!({"representations": steer}), &[], locations.clone());
    let added = run(&plugins, json!({"representations": add}), &[], locations);
    assert!(max_abs_diff(&steered, &added) < 1e-5, "{}", max_abs_diff(&steered, &added));
    let plain = load_gpt2(&plugins)
        .forward_plain(&ForwardInputs::from_ids(Tensor::from_slice(&[9i64, 8, 7, 6, 5, 4]).view([2, 3])))
        .unwrap()
        .output;
    assert!(max_abs_diff(&steered, &plain) > 1e-2, "steering changed nothing");
}

/// A JumpReLU SAE whose latents are [relu(x), relu(−x)] reconstructs x exactly: swapping every latent is the
/// vanilla interchange, ablating every latent is zeroing.
#[test]
fn jumprelu_sae_swaps_and_ablates_latents() {
    let dir = scratch("sae");
    let eye = Tensor::eye(32, (Kind::Float, tch::Device::Cpu));
    let weights = vec![
        ("W_enc".to_string(), Tensor::cat(&[&eye, &(-&eye)], 1)),
        ("W_dec".to_string(), Tensor::cat(&[&eye, &(-&eye)], 0)),
        ("threshold".to_string(), Tensor::zeros([64], (Kind::Float, tch::Device::Cpu))),
        ("b_enc".to_string(), Tensor::zeros([64], (Kind::Float, tch::Device::Cpu))),
        ("b_dec".to_string(), Tensor::zeros([32], (Kind::Float, tch::Device::Cpu))),
    ];
    let file = dir.join("params.safetensors");
    vene_checkpoint::save_safetensors(&file, &weights).unwrap();
    let plugins = plugins(&["vene_gpt2", "vene_sae"]);
    let source = ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3, 10, 20, 30]).view([2, 3]));
    let sae = |mode: &str| {
        json!({"representations": [{"layer": 1, "component": "block_output", "low_rank_dimension": 64,
        "intervention": {"type": "jumprelu_sae", "weights": file.to_str().unwrap(), "mode": mode}}]})
    };
    let swapped =
        run(&plugins, sae("swap"), &[Some(source.to_device(tch::Device::Cpu))], json!({"sources->base": [1, 2]}));
    let vanilla = run(
        &plugins,
        json!({"representations": [{"layer": 1, "component": "block_output", "intervention": {"type": "vanilla"}}]}),
        &[Some(source)],
        json!({"sources->base": [1, 2]}),
    );
    assert!(max_abs_diff(&swapped, &vanilla) < 1e-5, "{}", max_abs_diff(&swapped, &vanilla));
    let ablated = run(&plugins, sae("ablate"), &[], json!({"base": 2}));
    let zeroed = run(
        &plugins,
        json!({"representations": [{"layer": 1, "component": "block_output", "intervention": {"type": "zero"}}]}),
        &[],
        json!({"base": 2}),
    );
    assert!(max_abs_diff(&ablated, &zeroed) < 1e-5, "{}", max_abs_diff(&ablated, &zeroed));
    std::fs::remove_dir_all(dir).ok();
}

fn vene(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(vene_binary()).args(args).output().expect("vene runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

/// `vene vector --token` writes the token's embedding row; `--positive/--negative` the difference of mean
/// last-token activations.
#[test]
fn steering_vectors_from_embeddings_and_mean_differences() {
    let dir = scratch("vectors");
    gpt2_with_word_tokenizer(&dir);
    let out = dir.join("happy.safetensors");
    let model = dir.to_str().unwrap();
    let (ok, _, stderr) =
        vene(&["vector", "--plugin", "gpt2", "--model", model, "--token", "w17", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let written = read_safetensors(&out);
    let wte = read_safetensors(&gpt2_dir().join("model.safetensors"))
        .into_iter()
        .find(|(n, _)| n.ends_with("wte.weight"))
        .unwrap()
        .1;
    assert_eq!(written[0].0, "vector");
    assert_eq!(max_abs_diff(&written[0].1, &wte.get(17)), 0.0);

    std::fs::write(dir.join("positive.txt"), "w1 w2 w3\nw4 w5\n").unwrap();
    std::fs::write(dir.join("negative.txt"), "w9 w8\n").unwrap();
    let difference = dir.join("difference.safetensors");
    let (ok, _, stderr) = vene(&[
        "vector",
        "--plugin",
        "gpt2",
        "--model",
        model,
        "--positive",
        dir.join("positive.txt").to_str().unwrap(),
        "--negative",
        dir.join("negative.txt").to_str().unwrap(),
        "--layer",
        "1",
        "--component",
        "mlp_output",
        "--out",
        difference.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // The same by hand: mlp_output of layer 1 at the last token of each prompt.
    let plugins = gpt2_plugins();
    let collect = |ids: &[i64], last: i64| {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
            {"layer": 1, "component": "mlp_output", "intervention": {"type": "collect"}}]}))
        .unwrap();
        let mut model = IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0).unwrap();
        let inputs = ForwardInputs::from_ids(Tensor::from_slice(ids).view([1, -1]));
        let locations = UnitLocations::parse(Some(&json!({"base": last}))).unwrap();
        model.run(&inputs, &[], &locations, &Subspaces::None).unwrap().collected[0].view([-1])
    };
    let expected = (collect(&[1, 2, 3], 2) + collect(&[4, 5], 1)) / 2.0 - collect(&[9, 8], 1);
    assert!(max_abs_diff(&read_safetensors(&difference)[0].1, &expected) < 1e-5);
    std::fs::remove_dir_all(dir).ok();
}

/// Writes `data.jsonl` (48 counterfactual examples on the test GPT-2) and a rank-2 DAS `config.json` to `dir`.
fn write_training_files(dir: &std::path::Path) {
    let data: Vec<String> = (0..48)
        .map(|i| {
            let (a, b) = ((i * 5 + 1) % 100, (i * 11 + 7) % 100);
            json!({"base": {"input_ids": [[a, 3, 4]]}, "sources": [{"input_ids": [[b, 3, 4]]}],
                   "unit_locations": {"sources->base": [0, 0]}, "label": (a + b) % 101})
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("data.jsonl"), data.join("\n")).unwrap();
    let config = json!({"representations": [{"layer": 0, "component": "block_output", "low_rank_dimension": 2,
        "intervention": {"type": "low_rank_rotated_space"}}]});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// `vene train` trains and saves; `vene eval` on the saved directory reports the same IIA on the same data.
#[test]
fn train_then_eval_from_the_command_line() {
    let dir = scratch("cli-train");
    write_training_files(&dir);
    let saved = dir.join("trained");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ok, stdout, stderr) = vene(&[
        "train",
        "--plugin",
        "gpt2",
        "--plugin",
        "das",
        "--model",
        gpt2_dir().to_str().unwrap(),
        "--config",
        &path("config.json"),
        "--data",
        &path("data.jsonl"),
        "--out",
        saved.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--eval-fraction",
        "0",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["steps"], 12);
    assert!(saved.join("interventions.safetensors").exists());
    let (ok, stdout, stderr) = vene(&[
        "eval",
        "--plugin",
        "gpt2",
        "--plugin",
        "das",
        "--model",
        gpt2_dir().to_str().unwrap(),
        "--config",
        saved.to_str().unwrap(),
        "--data",
        &path("data.jsonl"),
    ]);
    assert!(ok, "{stderr}");
    let eval: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(eval["examples"], 48);
    let (trained, evaluated) = (report["train"]["iia"].as_f64().unwrap(), eval["iia"].as_f64().unwrap());
    assert!((trained - evaluated).abs() < 1e-9, "train IIA {trained} vs eval IIA {evaluated}");
    std::fs::remove_dir_all(dir).ok();
}

/// In parallel mode one source example serves every base example: the result equals repeating it, with one source
/// pass instead of a batch. Serial mode feeds each source run the previous one's setters, so there the batch must
/// match and the error names what would be valid.
#[test]
fn one_source_example_serves_the_whole_batch_in_parallel_mode() {
    let plugins = plugins(&["vene_gpt2"]);
    let config = |mode: &str| {
        json!({"mode": mode, "representations": [
            {"layer": 0, "component": "block_output", "intervention": {"type": "vanilla"}},
            {"layer": 1, "component": "head_attention_value_output", "unit": "h.pos", "intervention": {"type": "vanilla"}}]})
    };
    // Per representation: positions per example; heads and positions per example.
    let side = json!([[[1], [2]], [[[0], [1]], [[1], [2]]]]);
    let locations = json!({"sources->base": [side, side]});
    let one = || ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]));
    let repeated = ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3, 1, 2, 3]).view([2, 3]));
    let shared = run(&plugins, config("parallel"), &[Some(one())], locations.clone());
    let copied = run(&plugins, config("parallel"), &[Some(repeated)], locations.clone());
    assert!(max_abs_diff(&shared, &copied) < 1e-4, "{}", max_abs_diff(&shared, &copied));
    let plain = load_gpt2(&plugins)
        .forward_plain(&ForwardInputs::from_ids(Tensor::from_slice(&[9i64, 8, 7, 6, 5, 4]).view([2, 3])))
        .unwrap()
        .output;
    assert!(max_abs_diff(&shared, &plain) > 1e-3, "the interchange changed nothing");

    let serial: IntervenableConfig = serde_json::from_value(config("serial")).unwrap();
    let mut model = IntervenableModel::new(load_gpt2(&plugins), serial, &plugins, 0).unwrap();
    let base = ForwardInputs::from_ids(Tensor::from_slice(&[9i64, 8, 7, 6, 5, 4]).view([2, 3]));
    let error = model
        .run(&base, &[Some(one())], &UnitLocations::parse(Some(&locations)).unwrap(), &Subspaces::None)
        .err()
        .expect("a one-example source is refused in serial mode")
        .to_string();
    assert!(error.contains("sources[0] has 1 examples, the base has 2 (valid: 2)"), "{error}");
}

/// `vene train` killed with SIGKILL mid-run resumes from its checkpoint when started again and saves exactly what an
/// uninterrupted run with the same seed saves; the checkpoint is gone afterwards.
#[test]
fn killed_training_resumes_to_the_same_result() {
    let dir = scratch("resume");
    write_training_files(&dir);
    let train = |out: &str| {
        let mut command = Command::new(vene_binary());
        command
            .args(["train", "--plugin", "gpt2", "--plugin", "das", "--model", gpt2_dir().to_str().unwrap()])
            .arg("--config")
            .arg(dir.join("config.json"))
            .arg("--data")
            .arg(dir.join("data.jsonl"))
            .arg("--out")
            .arg(dir.join(out))
            .args(["--epochs", "30", "--batch-size", "2", "--eval-fraction", "0", "--seed", "3"])
            .args(["--checkpoint-every", "5"]);
        command
    };
    let finished = |command: &mut Command| {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str::<serde_json::Value>(String::from_utf8_lossy(&output.stdout).lines().next().unwrap())
            .unwrap()
    };
    let uninterrupted = finished(&mut train("straight"));
    assert_eq!((uninterrupted["steps"].as_u64(), uninterrupted["resumed_from"].as_u64()), (Some(720), Some(0)));

    let checkpoint = dir.join("killed.checkpoint.safetensors");
    let mut child = train("killed").stdout(std::process::Stdio::null()).spawn().unwrap();
    let started = std::time::Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "training finished before it could be killed");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!dir.join("killed").exists(), "a killed run saved its result");

    let resumed = finished(&mut train("killed"));
    let resumed_from = resumed["resumed_from"].as_u64().unwrap();
    assert!((5..720).contains(&resumed_from), "resumed from step {resumed_from}");
    assert_eq!(resumed["steps"], uninterrupted["steps"]);
    assert_eq!(resumed["last_epoch_loss"], uninterrupted["last_epoch_loss"]);
    assert_eq!(resumed["train"], uninterrupted["train"]);
    let read = |out: &str| {
        let mut tensors = read_safetensors(&dir.join(out).join("interventions.safetensors"));
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    };
    let (straight, killed) = (read("straight"), read("killed"));
    assert_eq!(straight.len(), killed.len());
    for ((name, a), (other, b)) in straight.iter().zip(&killed) {
        assert_eq!(name, other);
        assert_eq!(max_abs_diff(a, b), 0.0, "{name} differs after resuming");
    }
    assert!(!checkpoint.exists(), "the checkpoint outlived the saved result");
    std::fs::remove_dir_all(dir).ok();
}
