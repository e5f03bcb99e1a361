//! The real model, Gemma 3 270M from its GGUF (installed by scripts/setup.sh), against transformers 5 loading the
//! same file (tests/fixtures/gemma3_270m/reference.json, from scripts/gen_fixtures_gemma3.py).

use serde_json::Value;
use tch::Tensor;
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    generate::{generate, Sampling},
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    text::TextTokenizer,
};

use crate::common::*;

fn reference() -> Value {
    let path = fixtures().join("gemma3_270m/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn gemma3() -> (LoadedModel, TextTokenizer) {
    let path = vene_host::real_model::gemma3_270m().unwrap_or_else(|e| panic!("{e}"));
    let plugins = plugins(&["vene_llama"]);
    let model = LoadedModel::load(&plugins, &path, DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let tokenizer = TextTokenizer::for_model(&path, "gemma3_text").unwrap().expect("the GGUF carries a tokenizer");
    (model, tokenizer)
}

fn ids(value: &Value) -> Vec<i64> {
    value.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

/// For every prompt: the same ids, and at the last position the top-100 logits, the log-sum-exp and p(target)
/// within 1e-3 of transformers' (f32 from the same dequantized weights).
#[test]
fn real_gemma3_logits_match_transformers() {
    let (model, tokenizer) = gemma3();
    let _no_grad = tch::no_grad_guard();
    for case in reference()["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let expected_ids = ids(&case["ids"]);
        assert_eq!(tokenizer.encode(prompt).unwrap(), expected_ids, "ids of {prompt:?}");
        let inputs = ForwardInputs::from_ids(Tensor::from_slice(&expected_ids).view([1, -1])).reading_last_position();
        let logits = model.forward_plain(&inputs).unwrap().output.view([-1]);
        let top_ids = Tensor::from_slice(&ids(&case["top_ids"]));
        let top: Vec<f32> = case["top_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_close(
            &logits.index_select(0, &top_ids),
            &Tensor::from_slice(&top),
            1e-3,
            &format!("{prompt:?} top-100"),
        );
        let lse = logits.logsumexp([0], false).double_value(&[]);
        let expected_lse = case["logsumexp"].as_f64().unwrap();
        assert!((lse - expected_lse).abs() < 1e-3, "{prompt:?}: log-sum-exp {lse} vs {expected_lse}");
        assert_eq!(logits.argmax(0, false).int64_value(&[]), ids(&case["top_ids"])[0], "{prompt:?}: top-1");
        let target = case["target_id"].as_i64().unwrap();
        let p = logits.softmax(0, tch::Kind::Float).double_value(&[target]);
        let expected_p = case["p_target"].as_f64().unwrap();
        assert!((p - expected_p).abs() < 1e-3, "{prompt:?}: p(target) {p} vs {expected_p}");
    }
}

/// Spaces, tabs, newlines, digits, punctuation, accents, CJK and emoji tokenize to transformers' ids (BOS first),
/// and decode back to its text.
#[test]
fn real_gemma3_tokenizes_like_transformers() {
    let path = vene_host::real_model::gemma3_270m().unwrap_or_else(|e| panic!("{e}"));
    let tokenizer = TextTokenizer::for_model(&path, "gemma3_text").unwrap().unwrap();
    for case in reference()["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "ids of {text:?}");
        assert_eq!(tokenizer.decode(&expected[1..]), case["decoded"].as_str().unwrap(), "decoding {text:?}");
    }
    assert_eq!(tokenizer.pad_id(), 0, "<pad> from tokenizer.ggml.padding_token_id");
    assert_eq!(tokenizer.end_of_text(), Some(1), "<eos>");
}

/// 16 greedy tokens (key/value cache, sliding-window and global layers) equal transformers' `generate`.
#[test]
fn real_gemma3_greedy_continuation_matches_transformers() {
    let (model, _) = gemma3();
    let config: IntervenableConfig = serde_json::from_value(serde_json::json!({"representations": []})).unwrap();
    let mut model = IntervenableModel::new(model, config, &plugins(&["vene_llama"]), 0).unwrap();
    for case in reference()["greedy"].as_array().unwrap() {
        let expected = ids(&case["new_ids"]);
        let sampling = Sampling { max_new_tokens: expected.len(), ..Sampling::default() };
        let new =
            generate(&mut model, &ids(&case["ids"]), &[], &UnitLocations::whole(), &Subspaces::None, &sampling, |_| {})
                .unwrap();
        assert_eq!(new, expected, "greedy continuation of {:?}", case["prompt"]);
    }
}
