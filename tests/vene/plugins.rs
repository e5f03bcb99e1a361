//! Plugin loading through real dlopen of this workspace's cdylibs: handshake, isolation of faulty plugins,
//! discovery rules.

use serde_json::json;
use tch::Tensor;
use vene_api::handshake::{BuildInfo, LIBTORCH_VERSION};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
    plugins::{PluginSearch, PluginSet},
};

use crate::common::*;

fn empty_set() -> PluginSet {
    PluginSet::load(&PluginSearch::in_dirs(&[])).unwrap()
}

#[test]
fn gpt2_adapter_reports_its_build() {
    let plugins = gpt2_plugins();
    let info = &plugins.plugins()[0];
    assert_eq!(info.build.plugin_name.as_str(), "vene-gpt2");
    assert_eq!(info.build.libtorch.as_str(), LIBTORCH_VERSION);
    assert_eq!(info.model_types, vec!["gpt2"]);
}

#[test]
fn handshake_mismatch_is_refused_naming_both_sides() {
    let mut set = empty_set();
    let error = set.add_library(&plugin_path("fixture_mismatch")).expect_err("mismatched libtorch is refused");
    let text = error.to_string();
    assert!(text.contains("libfixture_mismatch.so"), "{text}");
    assert!(text.contains("libtorch 1.13.1+cpu") && text.contains(&format!("host has {LIBTORCH_VERSION}")), "{text}");
    assert!(set.plugins().is_empty());
}

#[test]
fn version_rules_of_the_handshake() {
    let host = BuildInfo::current("vene", "0.1.0");
    let mut plugin = BuildInfo::current("p", "1.0.0");
    assert!(host.check_plugin(&plugin).is_ok());
    plugin.vene_api = "0.1.9".into();
    assert!(host.check_plugin(&plugin).is_ok(), "patch releases of vene-api are compatible");
    plugin.vene_api = "0.2.0".into();
    plugin.tch = "0.25.0".into();
    let error = host.check_plugin(&plugin).unwrap_err();
    assert!(
        error.contains("vene-api 0.2.0 (host has 0.1.0)") && error.contains("tch 0.25.0 (host has 0.26.0)"),
        "{error}"
    );
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let not_plugin = std::path::Path::new(env!("LIBTORCH")).join("lib/libc10.so");
    let error = empty_set().add_library(&not_plugin).expect_err("libc10 is not a plugin");
    assert!(error.to_string().contains("is not a vene plugin"), "{error}");
}

fn faulty_model(plugins: &PluginSet, intervention: &str) -> IntervenableModel {
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": [
        {"layer": 1, "component": "block_output", "intervention": {"type": intervention}}]}))
    .unwrap();
    IntervenableModel::new(load_gpt2(plugins), config, plugins, 0).expect("plugin type binds")
}

fn base() -> ForwardInputs {
    ForwardInputs::from_ids(Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9]).view([1, 6]))
}

#[test]
fn a_panicking_plugin_is_an_error_and_the_process_lives_on() {
    let mut plugins = gpt2_plugins();
    plugins.add_library(&plugin_path("fixture_faulty")).unwrap();
    let locations = UnitLocations::parse(Some(&json!({"base": 2}))).unwrap();
    let mut model = faulty_model(&plugins, "fixture_panic");
    let error = model.run(&base(), &[], &locations, &Subspaces::None).err().expect("the panic becomes an error");
    assert!(error.to_string().contains("intervention panicked: fixture_panic always panics"), "{error}");
    // The same plugin set keeps working.
    let mut wrong = faulty_model(&plugins, "fixture_wrong_shape");
    let error = wrong.run(&base(), &[], &locations, &Subspaces::None).err().expect("a wrong shape is refused");
    assert!(error.to_string().contains("returned shape [1, 1, 1], expected [1, 1, 32]"), "{error}");
    let mut fine = faulty_model(&plugins, "zero");
    assert!(fine.run(&base(), &[], &locations, &Subspaces::None).is_ok());
}

#[test]
fn two_plugins_claiming_one_type_name_both_named() {
    let dir = std::env::temp_dir().join(format!("vene-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("libvene_faulty_copy.so");
    std::fs::copy(plugin_path("fixture_faulty"), &copy).unwrap();
    let mut set = empty_set();
    set.add_library(&plugin_path("fixture_faulty")).unwrap();
    let error = set.add_library(&copy).expect_err("the duplicate claim is refused");
    let text = error.to_string();
    assert!(text.contains("libvene_faulty_copy.so") && text.contains("libfixture_faulty.so"), "{text}");
    assert!(text.contains("intervention type 'fixture_panic' is already provided"), "{text}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn discovery_loads_only_named_plugins_and_skips_broken_ones() {
    let dir = build_dir();
    let only_gpt2 = PluginSet::load(&PluginSearch { dirs: vec![dir.clone()], only: vec!["gpt2".into()] }).unwrap();
    assert_eq!(only_gpt2.plugins().len(), 1);
    assert_eq!(only_gpt2.model_types(), vec!["gpt2"]);
    let missing = PluginSet::load(&PluginSearch { dirs: vec![dir.clone()], only: vec!["pythia".into()] });
    assert!(missing.err().expect("unknown name").to_string().contains("no plugin named 'pythia'"));
    // A scanned directory with a broken plugin: the broken one is reported, the others stay usable.
    let scan = std::env::temp_dir().join(format!("vene-scan-{}", std::process::id()));
    std::fs::create_dir_all(&scan).unwrap();
    std::fs::copy(plugin_path("vene_gpt2"), scan.join("libvene_gpt2.so")).unwrap();
    std::fs::copy(plugin_path("fixture_mismatch"), scan.join("libvene_mismatch.so")).unwrap();
    let set = PluginSet::load(&PluginSearch::in_dirs(std::slice::from_ref(&scan))).unwrap();
    assert_eq!(set.model_types(), vec!["gpt2"]);
    assert_eq!(set.failures().len(), 1);
    assert!(set.failures()[0].to_string().contains("libvene_mismatch.so"));
    std::fs::remove_dir_all(scan).ok();
}

/// The template plugin, copied out of the workspace and built as its own cargo project, loads and runs.
#[test]
fn the_template_builds_outside_the_workspace_and_runs() {
    let project = scratch("template");
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/template");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::copy(template.join("src/lib.rs"), project.join("src/lib.rs")).unwrap();
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vene-api");
    let manifest = std::fs::read_to_string(template.join("Cargo.toml"))
        .unwrap()
        .replace("path = \"../../vene-api\"", &format!("path = {:?}", api.to_str().unwrap()));
    std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
    // The workspace's lock file pins the same versions, so the shared target directory's builds (libtorch's C++
    // wrapper above all) are reused and only the template compiles.
    std::fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"), project.join("Cargo.lock"))
        .unwrap();
    // Built in the profile this test binary was built in, into the same target directory.
    let profile = build_dir().file_name().unwrap().to_string_lossy().into_owned();
    let target = build_dir().parent().unwrap().to_path_buf();
    let mut cargo = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cargo.args(["build", "--offline", "--quiet", "--target-dir"]).arg(&target);
    if profile == "release" {
        cargo.arg("--release");
    }
    let output = cargo
        .current_dir(&project)
        .env("LIBTORCH", env!("LIBTORCH"))
        .env("LIBTORCH_BYPASS_VERSION_CHECK", "1")
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building the template failed: {}", String::from_utf8_lossy(&output.stderr));
    let library = target.join(&profile).join("libvene_template.so");
    let mut plugins = gpt2_plugins();
    plugins.add_library(&library).expect("the template plugin loads");
    assert_eq!(plugins.intervention_types(), vec!["clamp"]);
    let collect = |with_clamp: bool| {
        let mut representations = vec![];
        if with_clamp {
            representations
                .push(json!({"layer": 1, "component": "mlp_output", "intervention": {"type": "clamp", "limit": 0.5}}));
        }
        representations.push(json!({"layer": 1, "component": "mlp_output", "intervention": {"type": "collect"}}));
        let locations = UnitLocations::parse(Some(&json!({"base": vec![[[2]]; representations.len()]}))).unwrap();
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations})).unwrap();
        let mut model = IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0).unwrap();
        let base = ForwardInputs::from_ids(Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9]).view([1, 6]));
        model.run(&base, &[], &locations, &Subspaces::None).unwrap().collected.remove(0)
    };
    let (clamped, plain) = (collect(true), collect(false));
    assert!(plain.abs().max().double_value(&[]) > 0.5, "nothing to clamp");
    assert!(max_abs_diff(&clamped, &plain.clamp(-0.5, 0.5)) < 1e-6);
    std::fs::remove_dir_all(project).ok();
}

/// A source run stops after the last site the host reads from it. In serial mode, the first group's intervention
/// acts on the second source's run at layer 2, after that run's only read site (layer 0): it cannot reach the result,
/// the run stops before it, so even a panicking plugin there is never called, and the output is the second group's
/// interchange alone.
#[test]
fn a_source_run_stops_after_its_last_read_site() {
    let mut plugins = gpt2_plugins();
    plugins.add_library(&plugin_path("fixture_faulty")).unwrap();
    let bind = |config: serde_json::Value| {
        let config: IntervenableConfig = serde_json::from_value(config).unwrap();
        IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0).unwrap()
    };
    let vanilla = json!({"layer": 0, "component": "block_output", "intervention": {"type": "vanilla"}});
    let mut serial = bind(json!({"mode": "serial", "representations": [
        {"layer": 2, "component": "block_output", "intervention": {"type": "fixture_panic"}, "group_key": 0},
        {"layer": 0, "component": "block_output", "intervention": {"type": "vanilla"}, "group_key": 1}]}));
    let sources = |n: usize| -> Vec<Option<ForwardInputs>> {
        (0..n).map(|i| Some(ForwardInputs::from_ids(Tensor::from_slice(&[7i64 + i as i64; 6]).view([1, 6])))).collect()
    };
    let serial_locations = UnitLocations::parse(Some(&json!({
        "source_0->source_1": [[[[2]]], [[[2]]]], "source_1->base": [[[[2]]], [[[2]]]]})))
    .unwrap();
    let output = serial
        .run(&base(), &sources(2), &serial_locations, &Subspaces::None)
        .expect("the panic is never reached")
        .output;
    let mut single = bind(json!({"representations": [vanilla]}));
    let single_locations = UnitLocations::parse(Some(&json!({"sources->base": [[[[2]]], [[[2]]]]}))).unwrap();
    let source_1 = vec![sources(2).pop().unwrap()];
    let expected = single.run(&base(), &source_1, &single_locations, &Subspaces::None).unwrap().output;
    assert!(max_abs_diff(&output, &expected) < 1e-6, "{}", max_abs_diff(&output, &expected));
}

/// Plugins are native code with the user's rights: a plugin directory (or library) that other users may write to is
/// loaded, with a warning that names it and says how to close it.
#[test]
fn a_plugin_directory_writable_by_others_is_named_in_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vene-open-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_path("vene_gpt2"), dir.join("libvene_gpt2.so")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = || {
        std::process::Command::new(vene_binary())
            .args(["plugins", "--plugin-dir"])
            .arg(&dir)
            .env("VENE_PLUGIN_PATH", "")
            .output()
            .unwrap()
    };
    let output = run();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("plugin directory {} is writable by every user (mode 777)", dir.display()))
            && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = String::from_utf8_lossy(&run().stderr).into_owned();
    assert!(!stderr.contains(&format!("plugin directory {} is writable", dir.display())), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `vene plugins` names the libraries a scanned directory holds that are not taken for plugins (a third-party
/// `libdirectional_ablation.so`), and directories it could not read; the other plugins still load.
#[test]
fn plugins_lists_what_the_scan_skipped_and_why() {
    let dir = scratch("skipped-plugins");
    std::fs::copy(plugin_path("vene_steering"), dir.join("libdirectional_ablation.so")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a library").unwrap();
    let missing = dir.join("no-such-dir");
    let output = std::process::Command::new(vene_binary())
        .args(["plugins", "--plugin-dir"])
        .arg(&dir)
        .arg("--plugin-dir")
        .arg(&missing)
        .env("VENE_PLUGIN_PATH", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("vene-gpt2 0.1.0"), "{stdout}");
    let skipped = format!("{}: not named libvene_*.so", dir.join("libdirectional_ablation.so").display());
    assert!(stdout.contains(&skipped) && stdout.contains("--plugin PATH"), "{stdout}");
    assert!(stdout.contains(&format!("{}: cannot read the directory", missing.display())), "{stdout}");
    assert!(!stdout.contains("notes.txt"), "{stdout}");
    // Any command warns about what a directory it was pointed at holds but does not load.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("warning: skipped {}", dir.join("libdirectional_ablation.so").display())),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}
