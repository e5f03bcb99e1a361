//! GPT-2: outputs compared with pyvene 0.1.8 on a seeded random GPT-2 (f32, tolerance 1e-4), and engine behaviour
//! checked on it (skip, noise, links, sharded checkpoints, the key/value cache).

use std::path::Path;

use vene_host::{config::IntervenableConfig, engine::IntervenableModel};

use crate::common::*;

const TOLERANCE: f64 = 1e-4;

fn run_case(name: &str) {
    run_reference_case(&["vene_gpt2"], &gpt2_dir(), &fixtures().join("gpt2/cases").join(name), TOLERANCE);
}

#[test]
fn plain_logits_match_transformers() {
    run_case("plain");
}

#[test]
fn collect_matches_pyvene() {
    run_case("collect");
}

#[test]
fn collect_attention_weight_matches_pyvene() {
    run_case("collect_attention_weight");
}

#[test]
fn vanilla_pair_shorthand_matches_pyvene() {
    run_case("vanilla_pair");
}

#[test]
fn per_example_batch_locations_with_several_units_match_pyvene() {
    run_case("batch_multi_unit");
}

#[test]
fn head_level_h_pos_matches_pyvene() {
    run_case("head_pos");
}

#[test]
fn addition_on_mlp_activation_matches_pyvene() {
    run_case("addition_mlp_activation");
}

#[test]
fn qkv_thirds_with_subspace_partition_match_pyvene() {
    run_case("qkv_subspace");
}

#[test]
fn two_source_parallel_matches_pyvene() {
    run_case("parallel_two_sources");
}

#[test]
fn serial_mode_matches_pyvene() {
    run_case("serial");
}

#[test]
fn zero_and_subtraction_match_pyvene() {
    run_case("zero_and_subtraction");
}

#[test]
fn constant_source_matches_pyvene() {
    run_case("constant_source");
}

#[test]
fn pyvene_saved_directory_matches_pyvene() {
    run_case("pyvene_saved");
}

/// Directories pyvene saved for zero, collect and noise: pyvene sets their constant-source flag but writes no
/// intkey file; vene loads them and gives pyvene's numbers (noise: pyvene's fixed table, RandomState(1)). Given a
/// constant source, pyvene does write noise's state (its table and level), which is then read and used.
#[test]
fn pyvene_saved_sourceless_interventions_match_pyvene() {
    for name in ["saved_zero", "saved_collect", "saved_noise", "saved_noise_with_state"] {
        run_case(name);
    }
}

/// A saved directory whose intervention needs its intkey file (a constant source, a trained state) and lacks it
/// is refused naming the file and what it holds; other pyvene fields vene cannot honour are refused by name.
#[test]
fn pyvene_saved_directories_missing_what_they_need_are_refused() {
    let dir = scratch("pyvene-saved-missing");
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
        to
    };
    let load = |dir: &Path| match vene_host::saved::SavedInterventions::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(error) => error.to_string(),
    };
    let constant = copy(&fixtures().join("gpt2/cases/pyvene_saved/pyvene_saved"), "constant");
    let addition = std::fs::read_dir(&constant)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("mlp_output"))
        .expect("the constant addition's intkey file");
    std::fs::remove_file(&addition).unwrap();
    let error = load(&constant);
    assert!(error.contains("is missing: it holds a constant source of the addition intervention"), "{error}");
    let trained = copy(&fixtures().join("das/gpt2/low_rank/pyvene_saved"), "trained");
    for entry in std::fs::read_dir(&trained).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let error = load(&trained);
    assert!(error.contains("is missing: it holds the trained state of the low_rank_rotated_space"), "{error}");
    // A source-less intervention's intkey file is not needed, but one that is there is read: a damaged one is refused.
    let damaged = copy(&fixtures().join("gpt2/cases/saved_noise_with_state/pyvene_saved"), "damaged");
    let bin = std::fs::read_dir(&damaged)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"));
    let bin = bin.expect("the noise's intkey file");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() / 2]).unwrap();
    let error = load(&damaged);
    assert!(error.contains(&bin.display().to_string()), "{error}");
    // An expert index, and an interchange dimension narrower than the site: pyvene would act on other numbers.
    let edit = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let saved = copy(&fixtures().join("gpt2/cases/saved_zero/pyvene_saved"), name);
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
        change(&mut config);
        std::fs::write(saved.join("config.json"), config.to_string()).unwrap();
        saved
    };
    let error = load(&edit("moe", &|config| config["representations"][0][10] = serde_json::json!(2)));
    assert!(error.contains("moe_key 2") && error.contains("valid: null"), "{error}");
    let narrow = edit("narrow", &|config| config["intervention_dimensions"][0] = serde_json::json!(8));
    let plugins = gpt2_plugins();
    let saved = vene_host::saved::SavedInterventions::load(&narrow).expect("the config itself is readable");
    let mut model = IntervenableModel::new(load_gpt2(&plugins), saved.config.clone(), &plugins, 0).unwrap();
    let error = saved.apply(&mut model).expect_err("a narrower interchange dimension is refused").to_string();
    assert!(
        error.contains("first 8 of its 32 dimensions") && error.contains("valid: intervention_dimensions 32 or null"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The CLI writes the same tensors as the library, as f32 safetensors.
#[test]
fn cli_run_writes_reference_outputs() {
    let case = fixtures().join("gpt2/cases/head_pos");
    let out = std::env::temp_dir().join(format!("vene-cli-{}.safetensors", std::process::id()));
    let status = std::process::Command::new(vene_binary())
        .args(["run", "--plugin", "gpt2", "--model"])
        .arg(gpt2_dir())
        .arg("--config")
        .arg(case.join("config.json"))
        .arg("--inputs")
        .arg(case.join("inputs.json"))
        .arg("--out")
        .arg(&out)
        .args(["--repeat", "3"])
        .output()
        .expect("vene runs");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "vene run failed: {}", String::from_utf8_lossy(&status.stderr));
    assert!(stdout.contains("\"forward_ms_median\""), "no timing line in: {stdout}");
    assert!(stdout.contains("top-5 next tokens  intervened"), "no top-5 in: {stdout}");
    let written = read_safetensors(&out);
    let expected = read_safetensors(&case.join("expected.safetensors"));
    assert_close(&written[0].1, &expected[0].1, TOLERANCE, "cli output");
    std::fs::remove_file(out).ok();
}

/// Skip replaces a block's output with its input: the block output then equals the block input.
#[test]
fn skip_replaces_block_output_with_block_input() {
    let plugins = gpt2_plugins();
    let model = load_gpt2(&plugins);
    let config: IntervenableConfig = serde_json::from_str(
        r#"{"representations": [
            {"layer": 1, "component": "block_output", "intervention": {"type": "skip"}},
            {"layer": 1, "component": "block_input", "intervention": {"type": "collect"}},
            {"layer": 2, "component": "block_input", "intervention": {"type": "collect"}}]}"#,
    )
    .unwrap();
    let ids = tch::Tensor::from_slice(&[5i64, 9, 13, 2, 40, 7]).view([2, 3]);
    let base = vene_host::model::ForwardInputs::from_ids(ids);
    let locations = vene_host::locations::UnitLocations::parse(Some(
        &serde_json::json!({"base": [[[1], [2]], [[1], [2]], [[1], [2]]]}),
    ))
    .unwrap();
    let mut intervenable = IntervenableModel::new(model, config, &plugins, 0).unwrap();
    let result = intervenable.run(&base, &[], &locations, &vene_host::locations::Subspaces::None).unwrap();
    // Layer 2's input is layer 1's output: at the skipped positions it equals layer 1's input.
    assert_close(&result.collected[1], &result.collected[0], 1e-6, "skipped block output");
}

/// A config survives a JSON round trip unchanged.
#[test]
fn config_round_trips_through_json() {
    let text = std::fs::read_to_string(fixtures().join("gpt2/cases/qkv_subspace/config.json")).unwrap();
    let config = IntervenableConfig::from_json(&text).unwrap();
    let again = IntervenableConfig::from_json(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(config, again);
    assert_eq!(
        config.keys(),
        vec!["layer_1_comp_value_output_unit_pos_nunit_1#0", "layer_2_comp_query_output_unit_pos_nunit_1#0"]
    );
    assert!(Path::new(&fixtures()).exists());
}

/// A checkpoint split into shards with a `model.safetensors.index.json` loads to the same logits.
#[test]
fn sharded_checkpoint_matches_single_file() {
    let weights = read_safetensors(&gpt2_dir().join("model.safetensors"));
    let dir = std::env::temp_dir().join(format!("vene-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(gpt2_dir().join("config.json"), dir.join("config.json")).unwrap();
    let (first, second) = weights.split_at(weights.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        vene_checkpoint::save_safetensors(&dir.join(file), part).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let plugins = gpt2_plugins();
    let sharded =
        vene_host::model::LoadedModel::load(&plugins, &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)
            .expect("sharded checkpoint loads");
    let single = load_gpt2(&plugins);
    let ids = tch::Tensor::from_slice(&[4i64, 8, 15, 16, 23, 42]).view([1, 6]);
    let inputs = vene_host::model::ForwardInputs::from_ids(ids);
    let a = sharded.forward_plain(&inputs).unwrap().output;
    let b = single.forward_plain(&inputs).unwrap().output;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(dir).ok();
}

/// Decoding with the key/value cache gives the logits of a full forward pass at each new position.
#[test]
fn key_value_cache_matches_full_forward() {
    let plugins = gpt2_plugins();
    let model = load_gpt2(&plugins);
    let tokens = [11i64, 27, 3, 99, 54, 6, 70];
    let full = model
        .forward_plain(&vene_host::model::ForwardInputs::from_ids(tch::Tensor::from_slice(&tokens).view([1, 7])))
        .unwrap()
        .output;
    let mut prompt = vene_host::model::ForwardInputs::from_ids(tch::Tensor::from_slice(&tokens[..4]).view([1, 4]));
    prompt.use_cache = true;
    let mut step = model.forward_plain(&prompt).unwrap();
    assert_eq!(step.present.len(), 6, "key and value for each of 3 layers");
    for (position, &token) in tokens.iter().enumerate().skip(4) {
        let mut next = vene_host::model::ForwardInputs::from_ids(tch::Tensor::from_slice(&[token]).view([1, 1]));
        next.past = step.present;
        next.use_cache = true;
        step = model.forward_plain(&next).unwrap();
        let expected = full.narrow(1, position as i64, 1);
        assert_close(&step.output, &expected, 1e-5, &format!("position {position}"));
    }
}

/// Noise is seeded: the same seed gives the same output, another seed a different one.
#[test]
fn noise_is_reproducible_per_seed() {
    let plugins = gpt2_plugins();
    let ids = tch::Tensor::from_slice(&[5i64, 6, 7, 8]).view([1, 4]);
    let base = vene_host::model::ForwardInputs::from_ids(ids);
    let locations = vene_host::locations::UnitLocations::parse(Some(&serde_json::json!({"base": [0, 1]}))).unwrap();
    let run = |seed: u64| {
        let config: IntervenableConfig = serde_json::from_value(serde_json::json!({"representations": [
            {"layer": 0, "component": "block_input", "max_number_of_units": 2,
             "intervention": {"type": "noise", "level": 0.5, "seed": seed}}]}))
        .unwrap();
        let mut model = IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0).unwrap();
        model.run(&base, &[], &locations, &vene_host::locations::Subspaces::None).unwrap().output
    };
    let plain = load_gpt2(&plugins).forward_plain(&base).unwrap().output;
    let (a, b, c) = (run(1), run(1), run(2));
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &c) > 1e-3, "different seeds give different noise");
    assert!(max_abs_diff(&a, &plain) > 1e-3, "noise changes the output");
}

/// Linked representations share one intervention instance.
#[test]
fn linked_representations_share_an_instance() {
    let plugins = gpt2_plugins();
    let config: IntervenableConfig = serde_json::from_value(serde_json::json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention": {"type": "noise", "seed": 3}, "intervention_link_key": 7},
        {"layer": 1, "component": "block_output", "intervention": {"type": "noise", "seed": 9}, "intervention_link_key": 7},
        {"layer": 2, "component": "block_output", "intervention": {"type": "noise", "seed": 3}}]}))
    .unwrap();
    let model = IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0).unwrap();
    let address = |i: usize| model.intervention(i) as *const dyn vene_api::Intervention as *const () as usize;
    assert_eq!(address(0), address(1));
    assert_ne!(address(0), address(2));
}
