//! The real CNN and recurrent checkpoints (installed by scripts/setup.sh): EasyOCR's English CRNN and
//! EfficientNet-Lite0 against their PyTorch references on stored inputs (tests/fixtures/real_cnn_rnn, from
//! scripts/gen_fixtures_cnn_rnn.py), the legacy-format reader against torch.load, and the models doing their jobs on
//! rendered words and a real photograph.

use std::collections::BTreeMap;

use serde_json::Value;
use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    model::{ForwardInputs, LoadedModel},
    real_model::{easyocr_english, efficientnet_lite0, real_asset, silero_vad},
    vision::{ctc_greedy, load_photo, rgb_pixels, text_batch, Preprocess},
};

use crate::common::*;

fn reference() -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("real_cnn_rnn/reference.safetensors")).unwrap().into_iter().collect()
}

fn load(plugin: &str, dir: &std::path::Path) -> LoadedModel {
    LoadedModel::load(&plugins(&[plugin]), dir, DeviceSpec::CPU, DTypeSpec::F32).unwrap_or_else(|e| panic!("{e}"))
}

fn characters(dir: &std::path::Path) -> String {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["characters"].as_str().unwrap().to_string()
}

fn label(dir: &std::path::Path, class: i64) -> String {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["id2label"][class.to_string()].as_str().unwrap().to_string()
}

#[test]
fn the_legacy_efficientnet_file_reads_as_torch_load_reads_it() {
    let path = efficientnet_lite0().unwrap().join("pytorch_model.bin");
    let tensors: BTreeMap<String, Tensor> =
        vene_checkpoint::pickle::read_torch_state_dict(&path).unwrap().into_iter().collect();
    let text = std::fs::read_to_string(fixtures().join("real_cnn_rnn/efficientnet_lite0_tensors.json")).unwrap();
    let expected: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tensors.len(), expected.len(), "every tensor torch.load finds");
    for (name, value) in expected {
        let tensor = &tensors[&name];
        let shape: Vec<i64> = value[1].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(tensor.size(), shape, "{name}");
        let kind = if value[2] == "int64" { Kind::Int64 } else { Kind::Float };
        assert_eq!(tensor.kind(), kind, "{name}");
        let sum = tensor.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        let want = value[0].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}: sum {sum}, torch.load {want}");
    }
}

#[test]
fn real_crnn_matches_easyocr() {
    let reference = reference();
    let model = load("vene_crnn", &easyocr_english().unwrap());
    let _no_grad = tch::no_grad_guard();
    let output = model.forward_plain(&ForwardInputs::from_features(reference["crnn.input"].shallow_clone())).unwrap();
    let difference = max_abs_diff(&output.output, &reference["crnn.output"]);
    assert!(difference < 1e-4, "logits differ by {difference}");
}

#[test]
fn real_efficientnet_matches_its_reference_and_sees_the_cat() {
    let reference = reference();
    let dir = efficientnet_lite0().unwrap();
    let model = load("vene_efficientnet", &dir);
    let preprocess = Preprocess::of_model(&dir).unwrap();
    let _no_grad = tch::no_grad_guard();
    let pixels = rgb_pixels(&reference["efficientnet.crop"], &preprocess).unwrap();
    let logits = model.forward_plain(&ForwardInputs::from_features(pixels)).unwrap().output;
    let difference = max_abs_diff(&logits, &reference["efficientnet.output"]);
    assert!(difference < 1e-4, "logits differ by {difference}");
    // The whole photograph through vene's own resize and crop: the top class is one of ImageNet's cats.
    let photo = load_photo(&real_asset("photos/chelsea.png").unwrap(), &preprocess).unwrap();
    let top = model.forward_plain(&ForwardInputs::from_features(photo)).unwrap().output.argmax(-1, false);
    let name = label(&dir, top.int64_value(&[0]));
    assert!(["tabby", "tiger cat", "Egyptian cat"].contains(&name.as_str()), "chelsea.png read as {name}");
}

#[test]
fn real_crnn_reads_rendered_words() {
    let dir = easyocr_english().unwrap();
    let model = load("vene_crnn", &dir);
    let preprocess = Preprocess::of_model(&dir).unwrap();
    let words = ["hello", "world", "vene", "Causal", "2024", "cat", "step"];
    let (pixels, _) = text_batch(&words, &preprocess).unwrap();
    let _no_grad = tch::no_grad_guard();
    let logits = model.forward_plain(&ForwardInputs::from_features(pixels)).unwrap().output;
    assert_eq!(ctc_greedy(&logits, &characters(&dir)), words);
}

#[test]
fn real_silero_matches_its_reference() {
    let reference = reference();
    let model = load("vene_silero", &silero_vad().unwrap());
    let _no_grad = tch::no_grad_guard();
    let output = model.forward_plain(&ForwardInputs::from_features(reference["silero.input"].shallow_clone())).unwrap();
    let difference = max_abs_diff(&output.output, &reference["silero.output"]);
    assert!(difference < 1e-4, "speech probabilities differ by {difference}");
}

/// Swapping the BiLSTM state (or the CNN column) of one word into another at step t takes away the character read
/// at column t: most characters lose most of their probability at some step, always within 3 steps of their column.
#[test]
fn ocr_steps_each_character_is_carried_by_the_steps_at_its_column() {
    use vene_host::studies::ocr_steps::{ocr_step_study, OcrSetup};
    let model = load("vene_crnn", &easyocr_english().unwrap());
    let (study, _) = ocr_step_study(model, &plugins(&["vene_crnn"]), &OcrSetup::demo()).unwrap();
    let (mut characters, mut carried) = (0, 0);
    for pair in &study.pairs {
        assert_eq!(pair.base_read, pair.base, "the model reads the rendered base word");
        assert_eq!(pair.source_read, pair.source, "the model reads the rendered source word");
        for map in [&pair.lstm, &pair.cnn] {
            assert!(map.reads.iter().any(|read| *read != pair.base), "some step changes what '{}' reads", pair.base);
            for ((character, &column), row) in pair.characters.iter().zip(&pair.columns).zip(&map.drop) {
                characters += 1;
                let (step, drop) = vene_host::studies::ocr_steps::strongest_step(row);
                if drop > 0.5 {
                    carried += 1;
                    assert!(
                        step.abs_diff(column) <= 3,
                        "{}: '{character}' at column {column} is carried by step {step} ({})",
                        pair.base,
                        map.site
                    );
                }
            }
        }
    }
    assert!(carried * 3 >= characters * 2, "{carried} of {characters} characters lose > 0.5 at some step");
}

/// Noise takes the cat away; restoring one region of one block brings part of it back; regions of the espresso
/// photo swapped in take some away.
#[test]
fn cnn_trace_restores_and_swaps_the_class_on_a_real_photo() {
    use vene_host::{
        studies::cnn_tracing::{cnn_trace_study, labels, CnnTraceOptions, Photo},
        vision::load_photo_with_crop,
    };
    let dir = efficientnet_lite0().unwrap();
    let model = load("vene_efficientnet", &dir);
    let preprocess = Preprocess::of_model(&dir).unwrap();
    let photos = ["chelsea.png", "coffee.png"]
        .iter()
        .map(|name| {
            let (pixels, crop) =
                load_photo_with_crop(&real_asset(&format!("photos/{name}")).unwrap(), &preprocess).unwrap();
            Photo { name: name.to_string(), pixels, crop }
        })
        .take(2)
        .collect();
    let options = CnnTraceOptions { samples: 1, ..Default::default() };
    let names = labels(&dir).unwrap();
    let (study, _) = cnn_trace_study(model, &plugins(&["vene_efficientnet"]), photos, &names, &options).unwrap();
    let cat = &study.photos[0];
    let trace = &cat.trace;
    assert!(["tabby", "tiger cat", "Egyptian cat"].contains(&trace.label.as_str()), "{}", trace.label);
    assert!(trace.base < 0.25 * trace.clean, "noise takes the class away: {} of {}", trace.base, trace.clean);
    let best = trace.restored[trace.best_block][trace.best_region];
    assert!(best > trace.base + 0.05, "one region restores part of p({}): {best} vs {}", trace.label, trace.base);
    let (source, swap) = cat.interchange.as_ref().expect("two photos give an interchange");
    assert_eq!(source, "coffee.png");
    let worst = swap.restored[swap.best_block][swap.best_region];
    assert!(
        worst < swap.clean - 0.05,
        "a region of the coffee photo takes p({}) away: {worst} of {}",
        swap.label,
        swap.clean
    );
}

/// Zeroing Silero's LSTM state inside speech drops the speech probability at that chunk, and the model recovers
/// within a few hundred milliseconds.
#[test]
fn vad_state_zeroing_inside_speech_is_forgotten_within_chunks() {
    use vene_host::studies::vad_state::vad_state_study;
    let model = load("vene_silero", &silero_vad().unwrap());
    let texts = vec!["one two three four five".to_string()];
    let audio = vene_host::audio::utterances(&["one two three four five"], 0.6, 16_000, 512).unwrap();
    let (study, _) = vad_state_study(model, &plugins(&["vene_silero"]), &audio, &texts, None).unwrap();
    let speech = study.clean.iter().filter(|&&p| p > 0.5).count();
    assert!(speech >= 20 && speech + 20 <= study.clean.len(), "speech and silence both found: {speech} chunks");
    for intervention in &study.interventions {
        let t = intervention.chunk as usize;
        assert!(study.clean[t] > 0.9, "the chunk is inside speech");
        assert!(intervention.probabilities[t] < study.clean[t] - 0.3, "{}: p drops at the chunk", intervention.name);
        let recovered = intervention.chunks_to_recover.expect("the model recovers");
        assert!((1..=20).contains(&recovered), "{}: recovered after {recovered} chunks", intervention.name);
    }
}

/// "Animal" is decodable from EfficientNet's early blocks (a probe reads it) but a rank-1 channel direction swapped
/// there does not carry it; at the last block one direction flips the model's animal decision to the source's.
#[test]
fn image_das_finds_the_attribute_causal_late_and_decodable_early() {
    use vene_host::studies::image_das::{image_das_study, AttributePhoto, ImageDasOptions, IMAGENET_ANIMALS};
    let dir = efficientnet_lite0().unwrap();
    let model = load("vene_efficientnet", &dir);
    let preprocess = Preprocess::of_model(&dir).unwrap();
    let photos: Vec<AttributePhoto> =
        [("chelsea.png", true), ("horse.png", true), ("coffee.png", false), ("rocket.jpg", false)]
            .iter()
            .map(|&(name, positive)| AttributePhoto {
                name: name.to_string(),
                image: vene_host::vision::open_rgb(&real_asset(&format!("photos/{name}")).unwrap()).unwrap(),
                positive,
            })
            .collect();
    let options = ImageDasOptions {
        attribute: "animal".to_string(),
        positive_classes: IMAGENET_ANIMALS.collect(),
        crops_per_photo: 12,
        blocks: Some(vec![2, 15]),
        pairs: 48,
        epochs: 2,
        seed: 0,
    };
    let plugins = plugins(&["vene_efficientnet", "vene_das"]);
    let (study, _) = image_das_study(model, &plugins, &preprocess, &photos, &options, |_, _| {}).unwrap();
    assert!(study.eval_pairs > 0 && study.test_crops >= 8, "{}", study.summary());
    let (early, late) = (0, 1);
    assert!(study.probe_accuracy[early] >= 0.9, "a probe reads the attribute at block 2: {}", study.summary());
    assert!(study.das_iia[early] < 0.3, "one direction at block 2 does not flip it: {}", study.summary());
    assert!(study.das_iia[late] > study.das_iia[early] + 0.4, "one direction at block 15 does: {}", study.summary());
}
