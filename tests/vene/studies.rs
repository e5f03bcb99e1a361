//! The studies: causal tracing's batched restorations and its figures.

use vene_host::{
    model::LoadedModel,
    studies::tracing::{average, trace, Trace, TraceOptions},
};

use crate::common::*;

const TOKENS: [i64; 6] = [5, 17, 23, 40, 8, 60];

fn traced(options: &TraceOptions) -> Trace {
    let plugins = gpt2_plugins();
    let model = LoadedModel::load(&plugins, &gpt2_dir(), vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32).unwrap();
    trace(model, &plugins, &TOKENS, (1, 3), 33, options, |_, _| {}).unwrap().0
}

/// Restoring the last position's final block output restores the clean output exactly, whatever the noise; with no
/// noise every restoration is the clean probability.
#[test]
fn tracing_restores_what_it_should() {
    let noisy = traced(&TraceOptions { samples: 3, window: 2, ..TraceOptions::default() });
    assert_eq!(noisy.block_output.len(), TOKENS.len());
    assert_eq!(noisy.block_output[0].len(), 3);
    assert!((noisy.block_output[5][2] - noisy.clean).abs() < 1e-6, "{} vs {}", noisy.block_output[5][2], noisy.clean);
    assert!((noisy.corrupted - noisy.clean).abs() > 1e-6, "the noise changed nothing");
    let silent = traced(&TraceOptions { samples: 1, noise_scale: 0.0, window: 2, ..TraceOptions::default() });
    assert!((silent.corrupted - silent.clean).abs() < 1e-6);
    for sweep in [&silent.block_output, &silent.mlp_output, &silent.attention_output] {
        for row in sweep.iter() {
            for &value in row {
                assert!((value - silent.clean).abs() < 1e-6, "{value} vs {}", silent.clean);
            }
        }
    }
}

/// A JSON array of rows of numbers.
fn grid(value: &serde_json::Value) -> Vec<Vec<f64>> {
    let rows = value.as_array().unwrap_or_else(|| panic!("not an array of rows: {value}"));
    rows.iter().map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()).collect()
}

/// Traces of one layout average cell by cell; traces of different layouts are refused by name.
#[test]
fn traces_average_cell_by_cell() {
    let made = |tokens: Vec<i64>, subject: (usize, usize), value: f64| Trace {
        tokens,
        subject,
        target: 1,
        clean: value,
        corrupted: value / 2.0,
        block_output: vec![vec![value, 2.0 * value]],
        mlp_output: vec![vec![value]],
        attention_output: vec![vec![3.0 * value]],
    };
    let mean = average(&[made(vec![1, 2], (0, 1), 0.2), made(vec![3, 4], (0, 1), 0.6)]).unwrap();
    assert_eq!(mean.prompts, vec![vec![1, 2], vec![3, 4]]);
    assert!((mean.clean - 0.4).abs() < 1e-12 && (mean.corrupted - 0.2).abs() < 1e-12);
    assert!((mean.block_output[0][1] - 0.8).abs() < 1e-12, "{:?}", mean.block_output);
    assert!((mean.attention_output[0][0] - 1.2).abs() < 1e-12, "{:?}", mean.attention_output);
    let error = average(&[made(vec![1, 2], (0, 1), 0.2), made(vec![1, 2, 3], (1, 2), 0.2)]).unwrap_err().to_string();
    assert!(error.contains("one layout") && error.contains("3 tokens"), "{error}");
    assert!(average(&[]).unwrap_err().to_string().contains("no traces"));
}

/// `vene trace` writes the JSON and three heatmaps as PNG and SVG, the SVG cells carrying their values.
#[test]
fn trace_command_writes_figures() {
    let dir = scratch("trace");
    gpt2_with_word_tokenizer(&dir.join("model"));
    let out = dir.join("out");
    let output = std::process::Command::new(vene_binary())
        .args(["trace", "--plugin", "gpt2", "--model", dir.join("model").to_str().unwrap()])
        .args(["--prompt", "w5 w17 w23 w40 w8 w60", "--subject", "w17 w23", "--target", "w33", "--samples", "2"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for name in ["block_output", "mlp_output", "attention_output"] {
        let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png is not a PNG");
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("w17*"), "{name}.svg lacks the subject label");
    }
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trace.json")).unwrap()).unwrap();
    assert_eq!(trace["subject"], serde_json::json!([1, 3]));
    assert_eq!(trace["mlp_output"].as_array().unwrap().len(), 6);
    // The SVG reads by hovering: every cell's value in a tooltip, and a colour bar saying what it measures.
    let svg = std::fs::read_to_string(out.join("mlp_output.svg")).unwrap();
    let layers = trace["mlp_output"][0].as_array().unwrap().len();
    assert_eq!(svg.matches("<title>").count(), 6 * layers, "one tooltip per cell");
    let value = trace["mlp_output"][1][0].as_f64().unwrap();
    let tooltip = format!("<title>w17*, layer 0: restored p(target) {value:.4}</title>");
    assert!(svg.contains(&tooltip), "no {tooltip} in mlp_output.svg");
    assert!(svg.matches("restored p(target)").count() > 6 * layers, "the colour bar's label");
    std::fs::remove_dir_all(dir).ok();
}

/// `vene demo` trains its language model (once; two concurrent runs share one build) and the studies show real
/// effects on it: corrupting the subject destroys the fact, tracing finds it at the subject in the first layer and at
/// the last token after the last layer, the multi-source
/// interchange yields the language of the mixed country, steering changes the continuation, and DAS finds the
/// pronoun's causal site where a probe finds gender everywhere.
#[test]
fn demo_builds_once_and_shows_real_effects() {
    let root = scratch("demo");
    let cache = root.join("cache");
    let run = |out: &str| {
        std::process::Command::new(vene_binary())
            .args(["demo", "--plugin", "gpt2", "--plugin", "gru", "--plugin", "backpack", "--plugin", "steering"])
            .args(["--plugin", "das", "--plugin", "resnet", "--out"])
            .arg(root.join(out))
            .arg("--cache")
            .arg(&cache)
            .spawn()
            .expect("vene demo starts")
    };
    let (first, second) = (run("a"), run("b"));
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "vene demo failed");
    }
    let entries: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(entries.contains(&"gpt2-facts".to_string()), "{entries:?}");
    assert!(!entries.iter().any(|e| e.contains("building")), "a staging directory was left behind: {entries:?}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("a/results.json")).unwrap()).unwrap();
    let top = |path: &str| -> Vec<String> {
        results["interchange"][path].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(top("base")[0], "madrid");
    assert!(top("parallel").contains(&"italian".to_string()), "{:?}", top("parallel"));
    assert!(top("serial").contains(&"italian".to_string()), "{:?}", top("serial"));
    let (clean, corrupted) =
        (results["tracing"]["clean"].as_f64().unwrap(), results["tracing"]["corrupted"].as_f64().unwrap());
    assert!(clean > 0.9 && corrupted < 0.5, "clean {clean}, corrupted {corrupted}");
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("a/tracing/trace.json")).unwrap()).unwrap();
    // The demo models are trained here, so what is asserted about them must hold for any training run a user gets:
    // only effects that held for every seed and kernel set of scripts/demo_spread.py (seeds 7, 1, 2, 3, with this
    // CPU's kernels and with ATen's portable ones, which stand in for a machine of another CPU) are asserted, with
    // thresholds at about half the smallest value seen (the smallest is quoted with each).
    // Meng et al.'s two sites, averaged over the 24 invented places: in the first layer the fact comes back from a
    // subject token; after the last layer only the last token carries it.
    let block = grid(&trace["block_output"]);
    let subject = trace["subject"][0].as_u64().unwrap() as usize..trace["subject"][1].as_u64().unwrap() as usize;
    assert_eq!(subject.len(), 3, "three-word place names");
    let last = block.last().unwrap();
    let subject_first_layer = subject.clone().map(|position| block[position][0]).fold(0.0, f64::max);
    assert!(subject_first_layer >= corrupted + 0.075, "subject at layer 0 (least seen: +0.15): {block:?}, {corrupted}");
    assert!(*last.last().unwrap() > 0.9, "last token after the last layer (least seen 0.998): {block:?}");
    assert!(
        block[subject.end - 1].last().copied().unwrap() < 0.2,
        "subject after the last layer (most seen 0.08): {block:?}"
    );
    // And their split of the work: the MLPs act at the subject in the first layer, attention moves the fact to the
    // last token later and does far more there than at the subject.
    let (mlp, attention) = (grid(&trace["mlp_output"]), grid(&trace["attention_output"]));
    let mlp_subject = subject.clone().map(|position| mlp[position][0]).fold(0.0, f64::max);
    assert!(mlp_subject >= corrupted + 0.07, "MLP at the subject, layer 0 (least seen: +0.14): {mlp:?}");
    let attention_last = attention.last().unwrap().iter().copied().fold(0.0, f64::max);
    assert!(attention_last >= corrupted + 0.25, "attention at the last token (least seen: +0.53): {attention:?}");
    let attention_subject = attention[subject.clone()].iter().flatten().copied().fold(0.0, f64::max);
    assert!(
        attention_last >= attention_subject + 0.24,
        "attention at the last token versus the subject (least seen: +0.48): {attention:?}"
    );
    assert_ne!(results["steering"]["steered"], results["steering"]["unsteered"]);
    // DAS versus probe: the probe decodes gender at every position and layer, while DAS finds the pronoun's cause in
    // a few cells only: at the last position by the last layer, and never at the name after the last layer.
    let (das, probe) = (grid(&results["das_probe"]["das_iia"]), grid(&results["das_probe"]["probe_accuracy"]));
    assert!(*das.last().unwrap().last().unwrap() >= 0.9, "DAS at the last position, last layer: {das:?}");
    assert!(das[0].last().copied().unwrap() <= 0.1, "DAS at the name after the last layer: {das:?}");
    assert!(probe[0].iter().all(|&accuracy| accuracy >= 0.75), "probe at the name: {probe:?}");
    let cells = |grid: &[Vec<f64>]| grid.iter().flatten().filter(|&&v| v >= 0.9).count();
    assert!(
        cells(&probe) >= cells(&das) + 4,
        "DAS is sparse where the probe is not (seen: 4-5 vs 12): {das:?} {probe:?}"
    );
    // GRU timestep interventions act from their step on, never before; swapping the subject's step flips the fact.
    let gru = results["gru"]["interventions"].as_array().unwrap();
    for (intervention, first_step) in gru.iter().zip([3usize, 3, 4]) {
        let effect: Vec<f64> = intervention["effect"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(effect[..first_step].iter().all(|&e| e == 0.0), "{}: {effect:?}", intervention["name"]);
        assert!(effect[first_step..].iter().all(|&e| e > 0.1), "{}: {effect:?}", intervention["name"]);
    }
    assert_eq!(results["gru"]["plain"][0][0], "madrid");
    assert_eq!(gru[1]["top"][0][0], "rome", "swapping in italy's step: {}", gru[1]["top"]);
    // The GRU classifier on Fashion-MNIST (installed by scripts/datasets.sh): it learned, its interventions act from
    // their step on, and breaking one step of the ankle boot's middle rows changes what it sees.
    let images = &results["gru_images"];
    assert!(!images.is_null(), "the GRU image study was skipped: run scripts/datasets.sh to install Fashion-MNIST");
    assert!(images["accuracy"].as_f64().unwrap() > 0.7, "GRU test accuracy {}", images["accuracy"]);
    let plain = &images["study"]["plain"][0];
    assert_eq!(plain[0], images["base_label"], "the base image is classified correctly: {plain}");
    let interventions = images["study"]["interventions"].as_array().unwrap();
    for (intervention, first_step) in interventions.iter().zip([7usize, 7, 8]) {
        let effect: Vec<f64> = intervention["effect"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(effect.len(), 14, "two pixel rows per step");
        assert!(effect[..first_step].iter().all(|&e| e == 0.0), "{}: {effect:?}", intervention["name"]);
        assert!(effect[first_step..].iter().all(|&e| e > 0.1), "{}: {effect:?}", intervention["name"]);
    }
    let base_probability = |top: &serde_json::Value| -> f64 {
        let top = top.as_array().unwrap();
        top.iter().find(|entry| entry[0] == images["base_label"]).map_or(0.0, |entry| entry[1].as_f64().unwrap())
    };
    let before = base_probability(&images["study"]["plain"]);
    let zeroed = base_probability(&interventions[0]["top"]);
    assert!(before - zeroed > 0.3, "zeroing step 7: p(base class) {before} -> {zeroed}");
    // Backpack: it learned the fact, and the study scales each of the 4 senses by each factor. How much one sense
    // moves p(madrid) depends on the training run (from 0.002 to 1.0 over the spread's runs), so it is shown in the
    // report, not asserted.
    let baseline = results["backpack"]["baseline"].as_f64().unwrap();
    assert!(baseline > 0.9, "p(madrid) {baseline}");
    let scaled = grid(&results["backpack"]["probabilities"]);
    assert!(scaled.len() == 2 && scaled.iter().all(|row| row.len() == 4), "factors x senses: {scaled:?}");
    // The CNN (Fashion-MNIST is installed by scripts/datasets.sh): it learned, and zeroing a channel of its first
    // block costs probability on the true class.
    let cnn = &results["cnn"];
    assert!(!cnn.is_null(), "the CNN study was skipped: run scripts/datasets.sh to install Fashion-MNIST");
    let (accuracy, baseline) = (cnn["accuracy"].as_f64().unwrap(), cnn["baseline"].as_f64().unwrap());
    assert!(accuracy > 0.6, "test accuracy {accuracy}");
    let zeroed: Vec<f64> = cnn["zeroed"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
    assert!(zeroed.iter().any(|&p| baseline - p > 0.05), "no channel mattered: {zeroed:?} vs {baseline}");
    let report = std::fs::read_to_string(root.join("a/report.html")).unwrap();
    assert!(report.contains("<img src=\"tracing/block_output.png\""));
    assert!(root.join("b/tracing/mlp_output.svg").exists());

    // The same studies as commands on any model: here the demo's.
    let model = cache.join("gpt2-facts");
    let command = |args: &[&str]| {
        let output = std::process::Command::new(vene_binary())
            .args(args)
            .args(["--model", model.to_str().unwrap(), "--out", root.join("commands").to_str().unwrap()])
            .args(["--plugin", "gpt2", "--plugin", "steering", "--plugin", "das"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(root.join("commands").join(format!("{}.json", args[0].replace('-', "_"))))
                .unwrap(),
        )
        .unwrap()
    };
    let interchange = command(&[
        "interchange",
        "--base",
        "the capital of spain is",
        "--source",
        "the language of spain is@1",
        "--source",
        "the capital of italy is@3",
    ]);
    assert_eq!(interchange["intervened"][0][0], "italian");
    // In series: "language" goes into the Italy prompt at layer 0, whose last state then goes into the base; the same
    // chain as the demo's, so the same answer.
    let first_hop = [
        "interchange",
        "--mode",
        "serial",
        "--base",
        "the capital of spain is",
        "--source",
        "the language of spain is@1",
        "--source",
        "the capital of italy is@4",
        "--hop",
        "0:block_input",
    ];
    let serial = command(&[&first_hop[..], &["--hop", "3:block_output"]].concat());
    assert_eq!(serial["intervened"], results["interchange"]["serial"]);
    assert_eq!(serial["intervened"][0][0], "italian");
    let one_hop = std::process::Command::new(vene_binary())
        .args(first_hop)
        .args(["--model", model.to_str().unwrap(), "--out", root.join("one_hop").to_str().unwrap(), "--plugin", "gpt2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&one_hop.stderr);
    assert!(!one_hop.status.success() && stderr.contains("one hop (layer and component) per source"), "{stderr}");
    let steering = command(&["steer", "--prompt", "the capital of spain is", "--word", "italy", "--coefficient", "3"]);
    assert_ne!(steering["steered"], steering["unsteered"]);
    let probe = command(&[
        "das-probe",
        "--template",
        "{name} walked because",
        "--class",
        "he=john,james,peter,david",
        "--class",
        "she=mary,sarah,anna,emma",
    ]);
    assert_eq!(probe["das_iia"].as_array().unwrap().len(), 3);
    assert!(root.join("commands/das_iia.svg").exists());
    let run = |model: &str, plugin: &str, args: &[&str]| {
        let output = std::process::Command::new(vene_binary())
            .args(args)
            .args(["--model", cache.join(model).to_str().unwrap(), "--out", root.join("more").to_str().unwrap()])
            .args(["--plugin", plugin])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(root.join("more").join(format!("{}.json", args[0]))).unwrap(),
        )
        .unwrap()
    };
    let steps = run(
        "gru-facts",
        "gru",
        &[
            "timesteps",
            "--base",
            "the capital of france is",
            "--source",
            "the capital of japan is",
            "--step",
            "3",
            "--to-step",
            "4",
        ],
    );
    assert_eq!(steps["interventions"][1]["top"][0][0], "tokyo", "{}", steps["interventions"][1]);
    // The same command on the image classifier, with test images as base and source: it reproduces the demo's study.
    let image_steps = run(
        "gru-fashion-mnist",
        "gru",
        &["timesteps", "--base-image", "0", "--source-image", "1", "--step", "7", "--to-step", "8"],
    );
    assert_eq!(image_steps, images["study"]);
    let senses = run(
        "backpack-facts",
        "backpack",
        &["senses", "--prompt", "the capital of spain is", "--word", "spain", "--target", "madrid", "--senses", "4"],
    );
    assert_eq!(senses["probabilities"].as_array().unwrap().len(), 2);
    let channels = run("resnet-fashion-mnist", "resnet", &["channels", "--images", "200"]);
    assert_eq!(channels["zeroed"].as_array().unwrap().len(), 8);
    assert!(root.join("more/channels.svg").exists() && root.join("more/timesteps.png").exists());
    std::fs::remove_dir_all(root).ok();
}
