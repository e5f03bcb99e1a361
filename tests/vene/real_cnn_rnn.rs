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
