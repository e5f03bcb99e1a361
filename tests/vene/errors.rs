//! Bad configs and inputs give one-line errors that name the problem and what would be valid.

use serde_json::json;
use tch::Tensor;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    error::VeneError,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
};

use crate::common::*;

fn bind(config: serde_json::Value) -> Result<IntervenableModel, VeneError> {
    let plugins = gpt2_plugins();
    let model = load_gpt2(&plugins);
    let config: IntervenableConfig = serde_json::from_value(config).expect("config parses");
    IntervenableModel::new(model, config, &plugins, 0)
}

fn ids() -> ForwardInputs {
    ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]).view([2, 4]))
}

/// `vene run` on the fixture GPT-2.
fn vene_run(config: &std::path::Path, inputs: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(vene_binary())
        .args(["run", "--plugin", "gpt2", "--model"])
        .arg(gpt2_dir())
        .arg("--config")
        .arg(config)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out)
        .output()
        .expect("vene runs")
}

fn one_line(error: &VeneError) -> String {
    let text = error.to_string();
    assert!(!text.contains('\n'), "error spans lines: {text}");
    text
}

#[test]
fn unknown_intervention_type_lists_known_types() {
    let error = bind(json!({"representations": [{"component": "block_output", "intervention": {"type": "vanila"}}]}))
        .err()
        .expect("unknown type is refused");
    let text = one_line(&error);
    assert!(text.contains("unknown intervention type 'vanila'"), "{text}");
    assert!(text.contains("vanilla") && text.contains("collect") && text.contains("noise"), "{text}");
}

#[test]
fn unknown_component_lists_the_catalog() {
    let error = bind(json!({"representations": [{"component": "mlp_out", "intervention": {"type": "vanilla"}}]}))
        .err()
        .expect("unknown component is refused");
    let text = one_line(&error);
    assert!(text.contains("unknown component 'mlp_out' for gpt2"), "{text}");
    assert!(text.contains("mlp_output") && text.contains("head_attention_value_output"), "{text}");
}

#[test]
fn layer_out_of_range_names_the_valid_range() {
    let error =
        bind(json!({"representations": [{"layer": 3, "component": "block_output", "intervention": {"type": "zero"}}]}))
            .err()
            .expect("layer 3 of a 3-layer model is refused");
    assert_eq!(one_line(&error), "layer 3 is out of range for block_output: it exists at layers 0..3");
}

#[test]
fn invalid_unit_for_a_site_names_valid_units() {
    let error = bind(json!({"representations": [
        {"component": "head_attention_value_output", "unit": "pos", "intervention": {"type": "zero"}}]}))
    .err()
    .expect("pos on a head site is refused");
    let text = one_line(&error);
    assert!(
        text.contains("unit 'pos' is not valid for head_attention_value_output") && text.contains("h, h.pos"),
        "{text}"
    );
}

#[test]
fn module_paths_name_the_same_sites_as_catalog_names() {
    let by_path = bind(
        json!({"representations": [{"component": "transformer.h.2.mlp.output", "intervention": {"type": "zero"}}]}),
    )
    .expect("dotted module path binds");
    let by_bracket =
        bind(json!({"representations": [{"component": "h[2].mlp.output", "intervention": {"type": "zero"}}]}))
            .expect("bracket module path binds");
    let by_name =
        bind(json!({"representations": [{"layer": 2, "component": "mlp_output", "intervention": {"type": "zero"}}]}))
            .expect("catalog name binds");
    let run = |mut m: IntervenableModel| {
        m.run(&ids(), &[], &UnitLocations::parse(Some(&json!({"base": 1}))).unwrap(), &Subspaces::None).unwrap().output
    };
    let (a, b, c) = (run(by_path), run(by_bracket), run(by_name));
    assert_eq!(max_abs_diff(&a, &c), 0.0);
    assert_eq!(max_abs_diff(&b, &c), 0.0);
}

#[test]
fn location_out_of_range_names_the_sequence_length() {
    let mut model =
        bind(json!({"representations": [{"layer": 1, "component": "block_output", "intervention": {"type": "zero"}}]}))
            .unwrap();
    let error = model
        .run(&ids(), &[], &UnitLocations::parse(Some(&json!({"base": 9}))).unwrap(), &Subspaces::None)
        .err()
        .expect("position 9 of 4 is refused");
    let text = one_line(&error);
    assert!(text.contains("unit location 9 is out of range (sequence length 4"), "{text}");
}

#[test]
fn head_out_of_range_is_refused() {
    let mut model = bind(json!({"representations": [
        {"component": "head_attention_value_output", "unit": "h.pos", "intervention": {"type": "zero"}}]}))
    .unwrap();
    let locations = UnitLocations::parse(Some(&json!({"base": [[[[4], [0]], [[1], [2]]]]}))).unwrap();
    let error = model.run(&ids(), &[], &locations, &Subspaces::None).err().expect("head 4 of 4 is refused");
    assert!(one_line(&error).contains("unit location 4 is out of range"), "{error}");
}

#[test]
fn wrong_number_of_sources_says_how_many_are_needed() {
    let mut model = bind(json!({"representations": [
        {"layer": 0, "component": "block_output", "intervention": {"type": "vanilla"}},
        {"layer": 1, "component": "block_output", "intervention": {"type": "vanilla"}},
        {"layer": 2, "component": "block_output", "intervention": {"type": "vanilla"}}]}))
    .unwrap();
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [1, 1]}))).unwrap();
    let error = model
        .run(&ids(), &[Some(ids()), Some(ids())], &locations, &Subspaces::None)
        .err()
        .expect("two sources for three groups is refused");
    let text = one_line(&error);
    assert!(text.contains("the config has 3 group(s)") && text.contains("got 2"), "{text}");
    let error = model.run(&ids(), &[], &locations, &Subspaces::None).err().expect("no sources is refused");
    assert!(one_line(&error).contains("needs a source run, but no sources were given"), "{error}");
}

#[test]
fn subspace_outside_the_partition_is_refused() {
    let mut model = bind(json!({"representations": [
        {"component": "block_output", "intervention": {"type": "zero"}, "subspace_partition": [[0, 8], [8, 32]]}]}))
    .unwrap();
    let error = model
        .run(&ids(), &[], &UnitLocations::parse(Some(&json!({"base": 1}))).unwrap(), &Subspaces::Broadcast(vec![2]))
        .err()
        .expect("subspace 2 of 2 is refused");
    assert!(one_line(&error).contains("subspace id 2 is out of range: subspace_partition has 2 subspaces"), "{error}");
}

#[test]
fn malformed_config_json_is_one_line_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("vene-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, "{\"representations\": [ {\"layer\": 1,, } ]}").unwrap();
    let out = dir.join("out.safetensors");
    let output = vene_run(&config, &fixtures().join("gpt2/cases/plain/inputs.json"), &out);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("is not valid JSON for a vene config"), "{stderr}");
    assert!(!out.exists(), "no output is written on error");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn empty_batch_is_refused() {
    let json: vene_host::inputs::RunInputsJson = serde_json::from_value(json!({"base": {"input_ids": []}})).unwrap();
    let error =
        vene_host::inputs::RunInputs::from_json(&json, tch::Device::Cpu, None).err().expect("empty batch refused");
    assert_eq!(one_line(&error), "invalid inputs: base.input_ids is empty: give at least one example with one token");
}

/// Bad input to `vene run`, case by case: a non-zero exit, an error that names what was wrong (and what would be
/// valid), no panic, and an output file from an earlier run left as it was.
#[test]
fn bad_cli_input_fails_cleanly_and_keeps_earlier_output() {
    let dir = scratch("bad-cli");
    let write = |name: &str, value: serde_json::Value| {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    };
    let plain = write("plain.json", json!({"representations": []}));
    let vanilla = write(
        "vanilla.json",
        json!({"representations": [{"layer": 1, "component": "block_output", "intervention": {"type": "vanilla"}}]}),
    );
    let unknown = write(
        "unknown.json",
        json!({"representations": [{"layer": 1, "component": "mlp_out", "intervention": {"type": "zero"}}]}),
    );
    let inputs = fixtures().join("gpt2/cases/plain/inputs.json");
    let broken_model = dir.join("broken-model");
    copy_model(&gpt2_dir(), &broken_model);
    let weights = std::fs::read(broken_model.join("model.safetensors")).unwrap();
    std::fs::write(broken_model.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let no_units = write(
        "no-units.json",
        json!({"representations": [{"layer": 1, "component": "block_output", "max_number_of_units": 0,
                                    "intervention": {"type": "zero"}}]}),
    );
    let out = dir.join("out.safetensors");
    let in_missing_dir = dir.join("missing/out.safetensors");
    let gpt2 = gpt2_dir();
    let cases: Vec<(&str, Vec<&std::ffi::OsStr>, Vec<&str>)> = vec![
        ("unknown component", vec![unknown.as_os_str()], vec!["unknown component 'mlp_out'", "mlp_output"]),
        ("no units", vec![no_units.as_os_str()], vec!["max_number_of_units is 0 (valid: 1 or more)"]),
        (
            "zero timed runs",
            vec![plain.as_os_str(), "--repeat".as_ref(), "0".as_ref()],
            vec!["--repeat", "valid: 1 or more"],
        ),
        (
            // The output is checked before the (here broken) model is loaded.
            "--out in a missing directory",
            vec![
                plain.as_os_str(),
                "--out".as_ref(),
                in_missing_dir.as_os_str(),
                "--model".as_ref(),
                broken_model.as_os_str(),
            ],
            vec!["cannot write", "missing/out.safetensors", "does not exist"],
        ),
        (
            "--out naming a directory",
            vec![plain.as_os_str(), "--out".as_ref(), dir.as_os_str()],
            vec!["cannot write", "is a directory"],
        ),
        ("missing source", vec![vanilla.as_os_str()], vec!["needs a source run"]),
        ("CUDA without a GPU", vec![plain.as_os_str(), "--device".as_ref(), "cuda".as_ref()], vec!["cuda"]),
        ("unknown dtype", vec![plain.as_os_str(), "--dtype".as_ref(), "f8".as_ref()], vec!["f8", "f32"]),
        (
            "truncated weights",
            vec![plain.as_os_str(), "--model".as_ref(), broken_model.as_os_str()],
            vec!["model.safetensors"],
        ),
    ];
    for (case, extra, expected) in cases {
        std::fs::write(&out, b"an earlier result").unwrap();
        let mut command = std::process::Command::new(vene_binary());
        command.args(["run", "--plugin", "gpt2", "--inputs"]).arg(&inputs);
        if !extra.iter().any(|a| *a == "--out") {
            command.arg("--out").arg(&out);
        }
        if !extra.iter().any(|a| *a == "--model") {
            command.arg("--model").arg(&gpt2);
        }
        command.arg("--config").args(&extra);
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: succeeded");
        assert!(stderr.starts_with("error: "), "{case}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{case}: {stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{case}: {needle:?} not in {stderr}");
        }
        assert_eq!(std::fs::read(&out).unwrap(), b"an earlier result", "{case}: the earlier output was touched");
    }
    assert!(!in_missing_dir.parent().unwrap().exists(), "the missing directory was created");
    std::fs::remove_dir_all(dir).ok();
}

/// A run whose output turns non-finite (noise with an enormous level) still writes its output, and warns naming
/// the site whose output first turned non-finite.
#[test]
fn non_finite_outputs_are_reported_with_their_site() {
    let dir = scratch("non-finite");
    let config = dir.join("noise.json");
    let noise = json!({"representations": [{"layer": 1, "component": "mlp_output",
                                            "intervention": {"type": "noise", "level": 1e308}}]});
    std::fs::write(&config, noise.to_string()).unwrap();
    let inputs = dir.join("inputs.json");
    std::fs::write(&inputs, json!({"base": {"input_ids": [[1, 2, 3]]}, "unit_locations": {"base": 1}}).to_string())
        .unwrap();
    let out = dir.join("out.safetensors");
    let output = vene_run(&config, &inputs, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: the output of noise on mlp_output at layer 1 has NaN or infinite values"),
        "{stderr}"
    );
    assert!(out.exists());
    let case = fixtures().join("gpt2/cases/zero_and_subtraction");
    let clean = vene_run(&case.join("config.json"), &case.join("inputs.json"), &out);
    let stderr = String::from_utf8_lossy(&clean.stderr);
    assert!(clean.status.success() && !stderr.contains("NaN"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

/// A source batch that does not fit the base names the valid sizes once.
#[test]
fn source_batch_mismatch_names_the_valid_sizes_once() {
    let mut model = bind(
        json!({"representations": [{"layer": 1, "component": "block_output", "intervention": {"type": "vanilla"}}]}),
    )
    .unwrap();
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [1, 1]}))).unwrap();
    let one = ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]));
    let error = model.run(&one, &[Some(ids())], &locations, &Subspaces::None).err().expect("2 sources for 1 base");
    assert_eq!(one_line(&error), "invalid inputs: sources[0] has 2 examples, the base has 1 (valid: 1)");
    let three = ForwardInputs::from_ids(Tensor::from_slice(&[1i64; 12]).view([3, 4]));
    let error = model.run(&three, &[Some(ids())], &locations, &Subspaces::None).err().expect("2 sources for 3 bases");
    assert_eq!(one_line(&error), "invalid inputs: sources[0] has 2 examples, the base has 3 (valid: 3 or 1)");
}
