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

/// `vene demo --small` on the real model (Gemma 3 270M, installed by the set-up) and the vene-trained toy models
/// (built once into a scratch cache): the effects that hold for the real model, which has no training seed; the toy
/// models' effects that held for every training run; a report that renders in a real browser; and the same studies
/// as commands.
#[test]
fn demo_on_the_real_model_shows_its_effects() {
    let root = scratch("demo");
    let cache = root.join("cache");
    let demo = |out: &str| {
        let output = std::process::Command::new(vene_binary())
            .args(["demo", "--small", "--plugin", "llama", "--plugin", "crnn", "--plugin", "backpack"])
            .args([
                "--plugin",
                "steering",
                "--plugin",
                "das",
                "--plugin",
                "efficientnet",
                "--plugin",
                "silero",
                "--out",
            ])
            .arg(root.join(out))
            .arg("--cache")
            .arg(&cache)
            .output()
            .expect("vene demo starts");
        assert!(output.status.success(), "vene demo failed: {}", String::from_utf8_lossy(&output.stderr));
        let read = |path: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(root.join(out).join(path)).unwrap()).unwrap()
        };
        (read("results.json"), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (results, said) = demo("a");
    assert!(!said.contains("read back from the cache"), "a first run computes everything: {said}");
    real_model_effects(&results);
    toy_model_effects(&results);
    real_cnn_rnn_effects(&results);
    report_renders_in_chromium(&root.join("a/report.html"));

    // A second run reads the real model's facts, interchange combinations, continuations and DAS cells back from the
    // cache, and reports the same numbers.
    let (again, said) = demo("b");
    for study in [
        "causal tracing (facts): 3 of 3",
        "causal tracing (one fact): 1 of 1",
        "multi-source interchange: 54 of 54",
        "steering: 7 of 7",
        "DAS and probe: 18 of 18",
        "path patching: 8 of 8",
    ] {
        assert!(said.contains(&format!("{study} items read back")), "the second run reuses {study}: {said}");
    }
    for key in ["tracing", "eiffel", "interchange", "steering", "das_probe", "path_patching"] {
        assert_eq!(again[key], results[key], "{key}: the second run's numbers are the first's");
    }

    // The same studies as commands on the real model give the demo's numbers.
    let model = vene_host::real_model::gemma3_270m().unwrap();
    let command = |args: &[&str]| {
        let output = std::process::Command::new(vene_binary())
            .args(args)
            .args(["--model", model.to_str().unwrap(), "--out", root.join("commands").to_str().unwrap()])
            .args(["--plugin", "llama", "--plugin", "steering"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(root.join("commands").join(format!("{}.json", args[0].replace('-', "_"))))
                .unwrap(),
        )
        .unwrap()
    };
    let interchange = &results["interchange"];
    let best = interchange["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["mode"] == "serial")
        .max_by(|a, b| a["target_probability"].as_f64().unwrap().total_cmp(&b["target_probability"].as_f64().unwrap()))
        .unwrap();
    let wording = best["wording"].as_u64().unwrap() as usize;
    let [attribute, _, last] = [0, 1, 2].map(|i| interchange["positions"][wording][i].as_u64().unwrap());
    let text = |key: &str| interchange["wordings"][wording][key].as_str().unwrap().to_string();
    let hop = |layer: &serde_json::Value| format!("{layer}:block_output");
    let serial = command(&[
        "interchange",
        "--mode",
        "serial",
        "--base",
        &text("base"),
        "--source",
        &format!("{}@{attribute}", text("attribute_source")),
        "--source",
        &format!("{}@{last}", text("entity_source")),
        "--hop",
        &hop(&best["layer"]),
        "--hop",
        &hop(&best["second_layer"]),
    ]);
    assert_eq!(serial["intervened"], best["top"], "the command's serial interchange is the demo's best");
    let one_hop = std::process::Command::new(vene_binary())
        .args(["interchange", "--mode", "serial", "--base", "The capital of Spain is", "--source"])
        .args(["The language of Spain is@2", "--source", "The capital of Italy is@5", "--hop", "3:block_output"])
        .args(["--model", model.to_str().unwrap(), "--out", root.join("one_hop").to_str().unwrap()])
        .args(["--plugin", "llama"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&one_hop.stderr);
    assert!(!one_hop.status.success() && stderr.contains("one hop (layer and component) per source"), "{stderr}");
    let steering = &results["steering"];
    let sad = steering["sweep"].as_array().unwrap().iter().find(|c| c["word"] == " sad" && c["coefficient"] == 10.0);
    let steer = command(&[
        "steer",
        "--prompt",
        steering["openings"][0].as_str().unwrap(),
        "--word",
        " sad",
        "--coefficient",
        "10",
        "--component",
        "mlp_post_norm_output",
        "--max-new-tokens",
        "8",
    ]);
    let continuation = sad.unwrap()["text"].as_str().unwrap();
    assert!(steer["steered"].as_str().unwrap().ends_with(continuation), "{} vs {continuation}", steer["steered"]);
    // The demo's two searches as commands: the same continuations and the same interchange grid.
    let examples = fixtures().join("../../examples/steering");
    let openings = root.join("openings.txt");
    std::fs::write(&openings, steering["openings"][0].as_str().unwrap()).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let sentiment = command(&[
        "steer-sentiment",
        "--openings",
        &path(&openings),
        "--positive",
        &path(&examples.join("positive_words.txt")),
        "--negative",
        &path(&examples.join("negative_words.txt")),
        "--coefficient",
        "10",
        "--sweep",
        "0.3,10",
        "--component",
        "mlp_post_norm_output",
        "--max-new-tokens",
        "8",
    ]);
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(texts(&sentiment["side_by_side"]), texts(&steering["side_by_side"]));
    assert_eq!(texts(&sentiment["sweep"]), texts(&steering["sweep"]));
    let wordings = root.join("wordings.jsonl");
    std::fs::write(&wordings, interchange["wordings"][1].to_string()).unwrap();
    let searched = command(&[
        "interchange-search",
        "--wordings",
        &path(&wordings),
        "--target",
        " Italian",
        "--serial-stride",
        "17",
    ]);
    let parallel = |v: &serde_json::Value, wording: u64| -> Vec<f64> {
        let attempts = v["attempts"].as_array().unwrap().iter();
        attempts
            .filter(|a| a["mode"] == "parallel" && a["wording"] == wording)
            .map(|a| a["target_probability"].as_f64().unwrap())
            .collect()
    };
    let (mine, demo) = (parallel(&searched, 0), parallel(interchange, 1));
    assert_eq!(mine.len(), 18);
    assert!(mine.iter().zip(&demo).all(|(a, b)| (a - b).abs() < 1e-6), "{mine:?} vs {demo:?}");

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
    let senses = run(
        "backpack-facts",
        "backpack",
        &["senses", "--prompt", "the capital of spain is", "--word", "spain", "--target", "madrid", "--senses", "4"],
    );
    assert_eq!(senses["probabilities"].as_array().unwrap().len(), 2);
    // The real CNN / recurrent studies as commands (installed models by name) reproduce the demo's numbers.
    let installed = |name: &str, args: &[&str]| {
        let output = std::process::Command::new(vene_binary())
            .args(args)
            .args(["--model", name, "--out", root.join("real").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(root.join("real").join(format!("{}.json", args[0].replace('-', "_")))).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(installed("easyocr-english-g2", &["ocr-steps"]), results["ocr_steps"]);
    assert_eq!(installed("silero-vad", &["vad-state"]), results["vad_state"]);
    let small_das = ["image-das", "--crops", "12", "--blocks", "2,15", "--pairs", "48", "--epochs", "2"];
    assert_eq!(installed("efficientnet-lite0", &small_das), results["image_das"]);
    assert!(root.join("real/hello_world_words.png").exists() && root.join("real/speech_probability.svg").exists());
    std::fs::remove_dir_all(root).ok();
}

/// What the real model shows on the demo's small grid. It has no training seed, so these hold on every run; the
/// thresholds leave room for another CPU's rounding.
fn real_model_effects(results: &serde_json::Value) {
    // Path patching to the logits (layers 11 and 15 in the small grid): the model prefers the indirect object on the
    // clean prompts and not on the corrupted ones, one head alone carries at least a third of that preference along
    // its direct path (the full run: L11.H3, -1.06), and another head writes against it (L11.H2, +0.55).
    let patching = &results["path_patching"];
    let (clean, corrupted) =
        (patching["baseline"]["clean"].as_f64().unwrap(), patching["baseline"]["corrupted"].as_f64().unwrap());
    assert!(clean > 2.0 && corrupted.abs() < 0.5, "logit differences clean {clean}, corrupted {corrupted}");
    let effects: Vec<f64> =
        patching["senders"].as_array().unwrap().iter().map(|s| s["to_logits"].as_f64().unwrap()).collect();
    assert_eq!(effects.len(), 8);
    let (strongest, opposing) =
        (effects.iter().copied().fold(0.0, f64::min), effects.iter().copied().fold(0.0, f64::max));
    assert!(strongest < -0.33, "the strongest head's effect {strongest}: {effects:?}");
    assert!(opposing > 0.1, "a head working against the answer: {effects:?}");
    // Attribution patching of every node on the same prompts: the head whose exact re-patching costs the most is the
    // one path patching finds carrying the indirect object along its direct path, and the estimate ranks the
    // verified nodes as exact patching does.
    let strongest_sender = patching["senders"]
        .as_array()
        .unwrap()
        .iter()
        .min_by(|a, b| a["to_logits"].as_f64().unwrap().total_cmp(&b["to_logits"].as_f64().unwrap()))
        .unwrap();
    let attribution = &results["attribution"];
    let strongest_head = attribution["verified"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["component"] == "head_attention_value_output")
        .min_by(|a, b| a["exact"].as_f64().unwrap().total_cmp(&b["exact"].as_f64().unwrap()))
        .expect("a head among the verified nodes");
    assert_eq!(
        (&strongest_head["layer"], &strongest_head["head"]),
        (&strongest_sender["layer"], &strongest_sender["head"]),
        "{strongest_head} vs {strongest_sender}"
    );
    assert!(strongest_head["exact"].as_f64().unwrap() < -1.0, "{strongest_head}");
    let correlation = attribution["rank_correlation_verified"].as_f64().unwrap();
    assert!(correlation > 0.5, "estimate vs exact rank correlation {correlation}");
    // Edge attribution (EAP-IG, head-level graph): the empty circuit is the corrupted run and the whole graph the
    // clean one; the scores rank the edges patched alone as exact patching does (the full run: 0.99); and among the
    // top three edges is the direct edge to the logits from path patching's strongest head, costing more than two
    // logits when patched alone (the full run: the top edge, a11.h3 → logits, exact -5.53).
    let circuit = &results["circuit"];
    let curve = circuit["curve"].as_array().unwrap();
    let metric = |point: &serde_json::Value| point["metric"].as_f64().unwrap();
    assert!((metric(&curve[0]) - circuit["corrupted"].as_f64().unwrap()).abs() < 1e-4, "{}", curve[0]);
    assert!((metric(curve.last().unwrap()) - circuit["clean"].as_f64().unwrap()).abs() < 1e-4, "{curve:?}");
    let correlation = circuit["rank_correlation_verified"].as_f64().unwrap();
    assert!(correlation > 0.8, "EAP-IG score vs exact rank correlation {correlation}");
    let direct = format!("a{}.h{}", strongest_sender["layer"], strongest_sender["head"]);
    let edges = circuit["edges"].as_array().unwrap();
    let top = &edges[..3];
    let to_logits = top.iter().find(|e| e["sender"] == direct.as_str() && e["receiver"] == "logits");
    let to_logits = to_logits.unwrap_or_else(|| panic!("{direct} → logits among the top edges: {top:?}"));
    assert!(to_logits["exact"].as_f64().unwrap() < -2.0, "{to_logits}");
    // Causal tracing: the three facts are known; corrupting the subject destroys them; restoring the last token's
    // final block output gives back exactly the clean probability; the MLPs matter at the last subject token in
    // early layers and attention at the last token in late ones (the peaks the full run finds: MLP layers 2-5,
    // attention 11-14).
    let tracing = &results["tracing"];
    let traced = tracing["traced"].as_array().unwrap();
    assert_eq!(traced.len(), 3, "the first three facts are known: {}", tracing["skipped"]);
    for fact in traced {
        let trace = &fact["trace"];
        let clean = trace["clean"].as_f64().unwrap();
        let restored = grid(&trace["block_output"]).last().unwrap().last().copied().unwrap();
        assert!((restored - clean).abs() < 1e-4, "{}: restored {restored} vs clean {clean}", fact["prompt"]);
        assert!(trace["corrupted"].as_f64().unwrap() < 0.2 * clean, "{}", fact["prompt"]);
    }
    let means = &tracing["by_class"];
    let peak = |sweep: &str| {
        let values = grid(&means[sweep]);
        let mut best = (0, 0, f64::MIN);
        for (class, row) in values.iter().enumerate() {
            for (layer, &value) in row.iter().enumerate() {
                if value > best.2 {
                    best = (class, layer, value);
                }
            }
        }
        best
    };
    let (mlp_class, mlp_layer, mlp_value) = peak("mlp_output");
    assert!(mlp_class == 2 && mlp_layer <= 8, "MLP peak: class {mlp_class}, layer {mlp_layer}");
    assert!(mlp_value > means["corrupted"].as_f64().unwrap() + 0.1, "MLP peak {mlp_value}");
    let (attention_class, attention_layer, _) = peak("attention_output");
    assert!(attention_class == 5 && attention_layer >= 9, "attention peak: {attention_class}, {attention_layer}");
    // The Eiffel Tower: transformers' p(" Paris") for the same file.
    let eiffel = &results["eiffel"]["traced"][0]["trace"];
    assert!((eiffel["clean"].as_f64().unwrap() - 0.7594).abs() < 1e-3, "p(Paris) {}", eiffel["clean"]);
    // The interchange: the base prompt says " Madrid", and some serial chain puts " Italian" in the top 5.
    let interchange = &results["interchange"];
    assert_eq!(interchange["base_top"][1][0][0], " Madrid");
    let serial_best = interchange["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["mode"] == "serial")
        .map(|a| a["target_probability"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(serial_best > 0.1, "serial interchange: best p(Italian) {serial_best}");
    // Steering: at 10 × the embedding, " sad" makes the story sad and " happy" happy, measured on the committed
    // word lists (which hold the steering words too); at the paper's 0.3 the continuation is the unsteered one.
    let steering = &results["steering"];
    let side = steering["side_by_side"].as_array().unwrap();
    let shift = |c: &serde_json::Value| {
        let (p, n) = (
            grid(&serde_json::json!([c["positive"]]))[0].clone(),
            grid(&serde_json::json!([c["negative"]]))[0].clone(),
        );
        p.iter().zip(&n).map(|(p, n)| p - n).sum::<f64>() / p.len() as f64
    };
    let (plain, happy, sad) = (shift(&side[0]), shift(&side[1]), shift(&side[2]));
    assert!(sad < plain && plain < happy, "shifts: sad {sad}, unsteered {plain}, happy {happy}");
    assert!(side[2]["text"].as_str().unwrap().contains("sad"), "{}", side[2]["text"]);
    let weak = steering["sweep"].as_array().unwrap().iter().find(|c| c["coefficient"] == 0.3).unwrap();
    assert_eq!(weak["text"], side[0]["text"], "0.3 x the embedding leaves Gemma's continuation unchanged");
    // DAS versus the probe at the last position: the probe reads gender at least as well as always answering
    // "male" everywhere and near perfectly in most layers; DAS finds no causal pronoun variable there in the first
    // layers, only later.
    let das = &results["das_probe"];
    let (iia, probe) = (grid(&das["das_iia"])[0].clone(), grid(&das["probe_accuracy"])[0].clone());
    let baseline = das["majority_baseline"].as_f64().unwrap();
    assert!(probe.iter().all(|&a| a >= baseline - 1e-9), "probe {probe:?} vs baseline {baseline}");
    assert!(probe.iter().filter(|&&a| a >= 0.9).count() >= 12, "probe {probe:?}");
    assert!(iia[..6].iter().all(|&v| v <= 0.1), "DAS at the last position, layers 0-5: {iia:?}");
    assert!(iia.iter().copied().fold(0.0, f64::max) >= 0.5, "DAS at the last position: {iia:?}");
}

/// The vene-trained models' effects that held for every seed and kernel set of scripts/demo_spread.py.
fn toy_model_effects(results: &serde_json::Value) {
    // Backpack: it learned the fact, and the study scales each of the 4 senses by each factor. How much one sense
    // moves p(madrid) depends on the training run (from 0.002 to 1.0 over the spread's runs), so it is shown in the
    // report, not asserted.
    assert!(results["backpack"]["baseline"].as_f64().unwrap() > 0.9, "p(madrid) {}", results["backpack"]["baseline"]);
    let scaled = grid(&results["backpack"]["probabilities"]);
    assert!(scaled.len() == 2 && scaled.iter().all(|row| row.len() == 4), "factors x senses: {scaled:?}");
}

/// The real CNN and recurrent models' effects (the same measurements the real-model tests make on the studies).
fn real_cnn_rnn_effects(results: &serde_json::Value) {
    let pairs = results["ocr_steps"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3);
    for pair in pairs {
        assert_eq!(pair["base_read"], pair["base"], "the CRNN reads the rendered word");
        let columns: Vec<usize> =
            pair["columns"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
        for (row, &column) in grid(&pair["lstm"]["drop"]).iter().zip(&columns) {
            let (step, drop) = vene_host::studies::ocr_steps::strongest_step(row);
            assert!(
                drop <= 0.5 || step.abs_diff(column) <= 3,
                "{}: column {column} carried by step {step}",
                pair["base"]
            );
        }
    }
    for trace in results["cnn_trace"]["photos"].as_array().unwrap() {
        let (clean, base) = (trace["trace"]["clean"].as_f64().unwrap(), trace["trace"]["base"].as_f64().unwrap());
        assert!(base < 0.25 * clean, "{}: noise takes the class away ({base} of {clean})", trace["photo"]);
        let best = grid(&trace["trace"]["restored"]).iter().flatten().copied().fold(0.0, f64::max);
        assert!(best > base + 0.05, "{}: one region restores part of the class ({best})", trace["photo"]);
    }
    let image_das = &results["image_das"];
    let row = |key: &str| grid(&serde_json::json!([image_das[key]])).remove(0);
    let (das, probe) = (row("das_iia"), row("probe_accuracy"));
    assert_eq!(image_das["blocks"], serde_json::json!([2, 15]));
    assert!(probe[0] >= 0.9, "a probe reads \"animal\" at block 2: {image_das}");
    assert!(das[1] > das[0] + 0.4, "one direction carries it at block 15, not at block 2: {image_das}");
    let vad = &results["vad_state"];
    assert!(!vad.is_null(), "the Silero study was skipped: install espeak-ng");
    for intervention in vad["interventions"].as_array().unwrap() {
        let recovered = intervention["chunks_to_recover"].as_u64().expect("the state is forgotten");
        assert!((1..=20).contains(&recovered), "{}: {recovered} chunks", intervention["name"]);
    }
}

/// The report as headless Chromium (Debian's `chromium`) renders it: every figure loaded, every section has its
/// question, its measurement and its command, and the toy sections are marked. A copy with one figure removed is
/// caught.
fn report_renders_in_chromium(report: &std::path::Path) {
    let dom = rendered_dom(report);
    let images: usize = body_data(&dom, "data-images");
    assert!(images >= 15, "{images} figures");
    assert_eq!(body_data(&dom, "data-broken-images"), 0, "figures that did not load");
    let sections: Vec<&str> = dom.split("<section").skip(1).map(|s| &s[..s.find("</section>").unwrap()]).collect();
    assert_eq!(sections.len(), 13, "one section per study");
    for section in &sections {
        for part in ["Question.", "Measured here.", "Reproduce", "<pre>vene", "<h2>"] {
            assert!(
                section.contains(part) || (part == "<pre>vene" && section.contains("<pre>scripts")),
                "{part}: {section}"
            );
        }
        let measured = &section[section.find("Measured here.</span>").unwrap() + 21..];
        assert!(measured.trim_start().len() > 40, "an empty measurement: {section}");
    }
    assert_eq!(dom.matches("vene-trained toy model</span>").count(), 1, "only the Backpack is a toy");
    // The same report beside one figure fewer: the browser sees it, and the page says so.
    let moved = report.parent().unwrap().join("tracing/block_output.png");
    let kept = moved.with_extension("png.kept");
    std::fs::rename(&moved, &kept).unwrap();
    let dom = rendered_dom(report);
    std::fs::rename(&kept, &moved).unwrap();
    assert_eq!(body_data(&dom, "data-broken-images"), 1);
    assert!(dom.contains("1 figure(s) did not load: tracing/block_output.png"), "no warning on the page");
}

fn rendered_dom(page: &std::path::Path) -> String {
    // No network and no profile of the user's: the flags Chromium needs on a closed machine.
    let profile = scratch("chromium-profile");
    let output = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/setup.sh installs Debian's chromium)");
    assert!(output.status.success(), "chromium: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(profile).ok();
    String::from_utf8(output.stdout).unwrap()
}

/// A `data-…` attribute of `<body>` in a rendered page.
fn body_data(dom: &str, name: &str) -> usize {
    let start = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} on <body>")) + name.len() + 2;
    dom[start..start + dom[start..].find('"').unwrap()].parse().unwrap()
}

/// A fact whose subject is not in its prompt is refused when the facts are read, naming its line.
#[test]
fn a_fact_whose_subject_is_not_in_its_prompt_names_its_line() {
    let text =
        "{\"prompt\": \"The Eiffel Tower is in\", \"subject\": \"The Eiffel Tower\", \"target\": \" Paris\"}\n\n\
                {\"prompt\": \"Rome is the capital of\", \"subject\": \"The Colosseum\", \"target\": \" Italy\"}\n";
    let error = vene_host::studies::facts::parse_facts(text, "facts.jsonl").unwrap_err().to_string();
    assert!(
        error.contains(
            "facts.jsonl line 3: the subject \"The Colosseum\" is not in the prompt \"Rome is the capital of\""
        ),
        "{error}"
    );
}

/// Line plots label an integer axis with integers and never write "-0.0".
#[test]
fn line_plots_label_integer_steps_and_no_negative_zero() {
    let dir = scratch("plot-ticks");
    let values: Vec<f64> = (0..20).map(|i| (i as f64 - 10.0) * 0.00025).collect();
    let series = vec![("shift".to_string(), values)];
    vene_host::studies::plot::lines(&dir, "shift", "a shift", "generated token", &series).unwrap();
    let svg = std::fs::read_to_string(dir.join("shift.svg")).unwrap();
    let labels: Vec<&str> = svg.split("</text>").filter_map(|t| t.rsplit('>').next()).map(str::trim).collect();
    assert!(labels.contains(&"18"), "{labels:?}");
    assert!(!labels.iter().any(|l| l.ends_with(".0") && l.parse::<f64>().is_ok_and(|v| v > 1.0)), "{labels:?}");
    assert!(!labels.iter().any(|l| l.starts_with("-0") && l.parse::<f64>() == Ok(0.0)), "{labels:?}");
    // The y ticks (every label with a decimal point) are told apart.
    let y_ticks: Vec<&&str> = labels.iter().filter(|l| l.contains('.') && l.parse::<f64>().is_ok()).collect();
    let distinct: std::collections::BTreeSet<&&str> = y_ticks.iter().copied().collect();
    assert!(y_ticks.len() >= 3 && distinct.len() == y_ticks.len(), "{y_ticks:?}");
    assert_eq!(vene_host::studies::plot::tick(-0.0004, 3), "0.000");
    assert_eq!(vene_host::studies::plot::tick(-0.04, 2), "-0.04");
    assert_eq!(vene_host::studies::plot::tick(-0.0022, 4), "-0.0022");
}
