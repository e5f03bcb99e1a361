//! Shared test helpers: where the built plugins and fixtures are, loading them, comparing tensors.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    model::LoadedModel,
    plugins::{PluginSearch, PluginSet},
};

/// `target/<profile>`: the test binary lives in its `deps/` folder; cdylibs and the `vene` binary beside it.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

pub fn plugin_path(name: &str) -> PathBuf {
    let path = build_dir().join(format!("lib{name}.so"));
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

pub fn vene_binary() -> PathBuf {
    build_dir().join("vene")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn gpt2_dir() -> PathBuf {
    fixtures().join("gpt2/model")
}

/// Just the named plugin libraries (`vene_gpt2`, …).
pub fn plugins(names: &[&str]) -> PluginSet {
    let mut set = PluginSet::load(&PluginSearch::in_dirs(&[])).expect("empty plugin set");
    for name in names {
        set.add_library(&plugin_path(name)).unwrap_or_else(|e| panic!("{name} loads: {e}"));
    }
    set
}

/// The GPT-2 adapter only.
pub fn gpt2_plugins() -> PluginSet {
    plugins(&["vene_gpt2"])
}

/// Runs the reference case directory `case` on `model_dir` and compares with its `expected.safetensors`.
pub fn run_reference_case(plugin_names: &[&str], model_dir: &Path, case: &Path, tolerance: f64) {
    use vene_host::{engine::IntervenableModel, inputs::RunInputs, saved::SavedInterventions};
    let name = case.display().to_string();
    let plugins = plugins(plugin_names);
    let model = LoadedModel::load(&plugins, model_dir, DeviceSpec::CPU, DTypeSpec::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", model_dir.display()));
    let saved_dir = case.join("pyvene_saved");
    let config_path = if saved_dir.is_dir() { saved_dir } else { case.join("config.json") };
    let saved = SavedInterventions::load(&config_path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let inputs = RunInputs::from_file(&case.join("inputs.json"), model.device(), None).expect("inputs parse");
    let mut intervenable =
        IntervenableModel::new(model, saved.config.clone(), &plugins, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
    saved.apply(&mut intervenable).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _no_grad = tch::no_grad_guard();
    let result = intervenable
        .run(&inputs.base, &inputs.sources, &inputs.unit_locations, &inputs.subspaces)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected = read_safetensors(&case.join("expected.safetensors"));
    let mut collected_expected = 0;
    for (key, tensor) in &expected {
        if key == "output" {
            assert_close(&result.output, tensor, tolerance, &format!("{name}: output"));
        } else {
            let index: usize = key.strip_prefix("collected.").and_then(|i| i.parse().ok()).expect("collected.{i}");
            assert_close(&result.collected[index], tensor, tolerance, &format!("{name}: {key}"));
            collected_expected += 1;
        }
    }
    assert_eq!(result.collected.len(), collected_expected, "{name}: number of collected tensors");
}

pub fn load_gpt2(plugins: &PluginSet) -> LoadedModel {
    LoadedModel::load(plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F32).expect("fixture GPT-2 loads")
}

pub fn read_safetensors(path: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

pub fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let diff = max_abs_diff(actual, expected);
    assert!(diff <= tolerance, "{what}: max |difference| {diff} exceeds {tolerance}");
}

/// Copies a model directory's config and weights.
pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// The fixture GPT-2 in `dir` with a word-level `tokenizer.json` whose words `w0` … `w100` are token ids 0 … 100.
pub fn gpt2_with_word_tokenizer(dir: &Path) {
    copy_model(&gpt2_dir(), dir);
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vene-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
