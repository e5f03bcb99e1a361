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

/// Meng et al.'s position classes: a one-token subject is its first and last token; a subject right before the last
/// token has no subsequent tokens; middle and further tokens are the ones in between.
#[test]
fn facts_position_classes_follow_meng_et_al() {
    use vene_host::studies::facts::position_classes;
    assert_eq!(position_classes(10, (1, 4)), [vec![1], vec![2], vec![3], vec![4], vec![5, 6, 7, 8], vec![9]]);
    assert_eq!(position_classes(5, (2, 3)), [vec![2], vec![], vec![2], vec![3], vec![], vec![4]]);
    assert_eq!(position_classes(4, (1, 3)), [vec![1], vec![], vec![2], vec![], vec![], vec![3]]);
}

/// Causal tracing on the real model (one noise sample, window 6): the Eiffel Tower fact is known, its clean
/// p(" Paris") is transformers', restoring the last token's final block output gives back exactly the clean
/// probability, and corrupting the subject loses most of it; with zero noise every restoration is the clean value.
#[test]
fn real_gemma3_causal_trace_of_a_known_fact() {
    use vene_host::studies::{facts, tracing::TraceOptions};
    let (model, tokenizer) = gemma3();
    let plugins = plugins(&["vene_llama"]);
    let eiffel = facts::Fact {
        prompt: "The Eiffel Tower is located in the city of".to_string(),
        subject: "The Eiffel Tower".to_string(),
        target: " Paris".to_string(),
    };
    let unknown = facts::Fact { target: " Madrid".to_string(), ..eiffel.clone() };
    let options = TraceOptions { samples: 1, window: 6, ..TraceOptions::default() };
    let (result, model) =
        facts::trace_facts(model, &plugins, &tokenizer, &[eiffel.clone(), unknown], &options, |_, _| {}).unwrap();
    assert_eq!((result.traced.len(), result.skipped.len()), (1, 1), "Paris is known, Madrid is not its top-1");
    assert!(result.skipped[0].reason.contains("\" Paris\""), "{}", result.skipped[0].reason);
    let trace = &result.traced[0].trace;
    let expected = reference()["prompts"][0]["p_target"].as_f64().unwrap();
    assert!((trace.clean - expected).abs() < 1e-3, "clean p(Paris) {} vs transformers' {expected}", trace.clean);
    assert_eq!(trace.subject, (1, 4), "subject tokens The ▁Eiffel ▁Tower after BOS");
    let (last, top) = (trace.tokens.len() - 1, trace.block_output[0].len() - 1);
    assert!((trace.block_output[last][top] - trace.clean).abs() < 1e-5, "restoring the output's last block");
    assert!(trace.corrupted < 0.5 * trace.clean, "corrupted {} vs clean {}", trace.corrupted, trace.clean);
    // What this model shows (seen: 0.42, 0.55, 0.88; a hand-over at layer 12): the fact sits at the subject
    // ("▁Eiffel") through the early and middle layers, its early MLPs write it there, and late attention moves it to
    // the last token, whose block output carries it from layer 12 on.
    let peak = |grid: &[Vec<f64>], positions: std::ops::Range<usize>, layers: std::ops::Range<usize>| {
        positions.flat_map(|p| grid[p][layers.clone()].to_vec()).fold(0.0, f64::max)
    };
    assert!(peak(&trace.block_output, 1..4, 0..12) > 0.3, "block output at the subject, layers 0-11");
    assert!(peak(&trace.mlp_output, 1..4, 0..9) > 0.3, "MLP output at the subject, layers 0-8");
    assert!(peak(&trace.attention_output, last..last + 1, 9..18) > 0.5, "attention at the last token, layers 9-17");
    assert!(peak(&trace.block_output, last..last + 1, 0..11) < 0.1, "the last token before the hand-over");
    let after = trace.block_output[last][12..].iter().copied().fold(1.0, f64::min);
    assert!(after > 0.5, "the last token's block output from layer 12 on: {after}");

    let quiet = TraceOptions { noise_scale: 0.0, ..options };
    let (result, _) = facts::trace_facts(model, &plugins, &tokenizer, &[eiffel], &quiet, |_, _| {}).unwrap();
    let trace = &result.traced[0].trace;
    assert!((trace.corrupted - trace.clean).abs() < 1e-5);
    for (sweep, grid) in trace.sweeps() {
        let worst = grid.iter().flatten().map(|p| (p - trace.clean).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "{sweep}: with no noise a restoration moved p by {worst}");
    }
}

/// Amnesic probing on the real model (" he" / " she" after "NAME walked because"): LEACE at the name's position in
/// layer 8 takes a probe to chance and the model's pronoun down to the majority class, while at layer 14 the model
/// no longer reads gender from the name's position (DAS finds it at the last token by then) and erasing there leaves
/// the pronoun as it was.
#[test]
fn real_gemma3_gender_erased_at_the_name() {
    use vene_host::studies::amnesic::{amnesic_probe, AmnesicSetup, Eraser};
    let (model, tokenizer) = gemma3();
    let plugins = plugins(&["vene_llama", "vene_erasure"]);
    let names = |file: &str| -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/das").join(file);
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    let setup = |layer| AmnesicSetup {
        template: "{name} walked because".to_string(),
        classes: vec![(" he".to_string(), names("male_names.txt")), (" she".to_string(), names("female_names.txt"))],
        layer,
        component: "block_output".to_string(),
        position: 1,
        eraser: Eraser::Leace,
    };
    let early = amnesic_probe(&model, &plugins, &tokenizer, &setup(8)).unwrap();
    assert!(early.behaviour_before > 0.95, "{early:?}");
    assert!(early.probe_after < early.probe_before && early.probe_after <= early.majority + 1e-9, "{early:?}");
    assert!(early.behaviour_after < early.behaviour_before - 0.1, "{early:?}");
    let late = amnesic_probe(&model, &plugins, &tokenizer, &setup(14)).unwrap();
    assert!(late.behaviour_after > 0.95, "{late:?}");
}

/// Attribution patching of the Eiffel Tower fact (subject swapped for "The Colosseum", Paris − Rome): among the MLP
/// outputs AtP ranks highest, exact re-patching finds the strongest where `vene trace` restores the fact — at a
/// subject token in the early and middle layers (the trace test's 0–8) — and the estimate's ranking agrees with the
/// exact one (Spearman > 0.5 over the verified nodes).
#[test]
fn real_gemma3_attribution_finds_the_subject_mlps() {
    use vene_host::studies::{
        attribution::{attribute, prompt_inputs, AttributionOptions, Metric},
        path_patching::PathPrompt,
    };
    let (model, tokenizer) = gemma3();
    let plugins = plugins(&["vene_llama"]);
    let prompt = PathPrompt {
        clean: "The Eiffel Tower is located in the city of".to_string(),
        corrupted: "The Colosseum is located in the city of".to_string(),
        target: " Paris".to_string(),
        distractor: " Rome".to_string(),
    };
    let (inputs, tokens) = prompt_inputs(&tokenizer, &[prompt], model.device()).unwrap();
    assert_eq!(tokens[1..4], ["The", " Eiffel", " Tower"]);
    let options = AttributionOptions {
        components: vec!["mlp_output".to_string()],
        metric: Metric::LogitDiff,
        ig_steps: 0,
        qk_fix: false,
        grad_drop: false,
        top_k: 10,
        random_k: 5,
        verify_all: false,
        seed: 0,
    };
    let (result, _) = attribute(model, &plugins, &inputs, &options, tokens).unwrap();
    assert!(result.clean > 0.0 && result.corrupted < 0.0, "{}", result.summary());
    let strongest = result.verified.iter().min_by(|a, b| a.exact.total_cmp(&b.exact)).unwrap();
    assert!(strongest.exact < -1.0, "{}", result.summary());
    assert!((1..=3).contains(&strongest.position) && strongest.layer <= 8, "{strongest:?}\n{}", result.summary());
    assert!(result.rank_correlation_verified.is_some_and(|r| r > 0.5), "{}", result.summary());
}
