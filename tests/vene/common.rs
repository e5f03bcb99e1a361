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
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn plugin_path(name: &str) -> PathBuf {
    let path = build_dir().join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
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

/// The GPT-2 adapter only.
pub fn gpt2_plugins() -> PluginSet {
    let mut set = PluginSet::load(&PluginSearch::in_dirs(&[])).expect("empty plugin set");
    set.add_library(&plugin_path("vene_gpt2"))
        .expect("the GPT-2 adapter loads");
    set
}

pub fn load_gpt2(plugins: &PluginSet) -> LoadedModel {
    LoadedModel::load(plugins, &gpt2_dir(), DeviceSpec::CPU, DTypeSpec::F32)
        .expect("fixture GPT-2 loads")
}

pub fn read_safetensors(path: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

pub fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let diff = max_abs_diff(actual, expected);
    assert!(
        diff <= tolerance,
        "{what}: max |difference| {diff} exceeds {tolerance}"
    );
}
