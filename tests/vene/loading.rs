//! Model locations (hub cache), text inputs, and `vene sites` for every adapter.

use std::{path::Path, process::Command};

use serde_json::json;
use vene_host::{inputs::RunInputs, model::LoadedModel, text::TextTokenizer};

use crate::common::*;

fn vene(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(vene_binary());
    command.args(args).env("HF_HUB_OFFLINE", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("vene runs")
}

/// A hub repo id resolves through a locally built Hugging Face cache, with no network.
#[test]
fn hub_repo_ids_load_from_the_cache_offline() {
    let cache = scratch("hub").join("hub");
    let repo = cache.join("models--vene-test--tiny-gpt2");
    copy_model(&gpt2_dir(), &repo.join("snapshots/0123abcd"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let output = vene(&["sites", "--plugin", "gpt2", "--model", "vene-test/tiny-gpt2"], &[("HF_HUB_CACHE", &cache)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("gpt2: 3 layers, 4 heads, hidden size 32, vocabulary 101"), "{stdout}");

    let output = vene(&["sites", "--plugin", "gpt2", "--model", "vene-test/absent"], &[("HF_HUB_CACHE", &cache)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("model 'vene-test/absent' is not in the Hugging Face cache at {}", cache.display()))
            && stderr.contains("HF_HUB_OFFLINE is set"),
        "{stderr}"
    );
    std::fs::remove_dir_all(cache.parent().unwrap()).ok();
}

#[test]
fn gpt2_bpe_is_built_in_for_gpt2_models_without_a_tokenizer_file() {
    let tokenizer = TextTokenizer::for_model(&gpt2_dir(), "gpt2").unwrap().expect("GPT-2 BPE");
    assert_eq!(tokenizer.encode("Hello world").unwrap(), vec![15496, 995]);
    assert_eq!(tokenizer.decode(&[15496, 995]), "Hello world");
    assert_eq!(tokenizer.pad_id(), 50256);
    assert!(TextTokenizer::for_model(&gpt2_dir(), "gru").unwrap().is_none());
}

/// `{"text": [...]}` through a tokenizer.json gives the same run as the equivalent ids and attention mask.
#[test]
fn text_inputs_match_the_equivalent_ids() {
    let dir = scratch("text");
    gpt2_with_word_tokenizer(&dir);
    let plugins = gpt2_plugins();
    let model = LoadedModel::load(&plugins, &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32).unwrap();
    let tokenizer = TextTokenizer::for_model(&dir, "gpt2").unwrap().expect("tokenizer.json");
    let parse = |value: serde_json::Value| {
        RunInputs::from_json(&serde_json::from_value(value).unwrap(), tch::Device::Cpu, Some(&tokenizer)).unwrap()
    };
    let from_text = parse(json!({"base": {"text": ["w5 w7 w9", "w1 w2"]}}));
    let from_ids =
        parse(json!({"base": {"input_ids": [[5, 7, 9], [1, 2, 0]], "attention_mask": [[1, 1, 1], [1, 1, 0]]}}));
    let a = model.forward_plain(&from_text.base).unwrap().output;
    let b = model.forward_plain(&from_ids.base).unwrap().output;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let missing = RunInputs::from_json(
        &serde_json::from_value(json!({"base": {"text": ["w1"]}})).unwrap(),
        tch::Device::Cpu,
        None,
    );
    assert!(missing.err().expect("no tokenizer").to_string().contains("the model has no tokenizer.json"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn sites_lists_every_adapters_catalog() {
    let cases = [
        ("gpt2", "gpt2/model", "gpt2: 3 layers", ["head_attention_value_output", "Heads", "8", "3", "h,h.pos"]),
        ("gpt-neox", "gpt_neox/model", "gpt_neox: 2 layers", ["head_query_output", "Heads", "8", "2", "h,h.pos"]),
        (
            "backpack",
            "backpack/model",
            "backpack-gpt2: 2 layers",
            ["sense_network_output", "Senses", "32", "1", "sense,sense.pos"],
        ),
        ("gru", "gru/model", "gru: 2 layers", ["x2h_output", "Recurrent", "48", "2", "t"]),
        ("mlp", "mlp/model", "mlp: 2 layers", ["mlp_activation", "Sequence", "16", "2", "pos"]),
        ("resnet", "resnet/model", "resnet: 3 layers", ["stage_output", "FeatureMap", "16", "2", "channel,pos"]),
    ];
    for (plugin, dir, header, row) in cases {
        let model = fixtures().join(dir);
        let output = vene(&["sites", "--plugin", plugin, "--model", model.to_str().unwrap()], &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{plugin}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with(header), "{plugin}: {stdout}");
        let found = stdout.lines().any(|line| line.split_whitespace().take(5).eq(row.iter().copied()));
        assert!(found, "{plugin}: no row {row:?} in\n{stdout}");
    }
}

/// `--config` takes a hub repo id too: saved interventions resolve through the cache like models.
#[test]
fn saved_interventions_load_from_the_hub_cache() {
    let root = scratch("hub-config");
    let cache = root.join("hub");
    let snapshot = cache.join("models--vene-test--saved/snapshots/feedbeef");
    std::fs::create_dir_all(&snapshot).unwrap();
    let case = fixtures().join("gpt2/cases/pyvene_saved");
    for entry in std::fs::read_dir(case.join("pyvene_saved")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(cache.join("models--vene-test--saved/refs")).unwrap();
    std::fs::write(cache.join("models--vene-test--saved/refs/main"), "feedbeef").unwrap();
    let out = root.join("out.safetensors");
    let output = vene(
        &[
            "run",
            "--plugin",
            "gpt2",
            "--model",
            gpt2_dir().to_str().unwrap(),
            "--config",
            "vene-test/saved",
            "--inputs",
            case.join("inputs.json").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", &cache)],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = read_safetensors(&case.join("expected.safetensors"));
    assert_close(&read_safetensors(&out)[0].1, &expected[0].1, 1e-4, "hub-loaded config");
    std::fs::remove_dir_all(root).ok();
}

/// The libtorch a process loaded is found through its memory map and compared with the one vene was built against:
/// another release is refused naming both and the fix; this test process passes.
#[test]
fn another_libtorch_release_is_refused_naming_both() {
    use vene_host::runtime::{check_loaded_libtorch, compare_libtorch, libtorch_version_at, loaded_libtorch_dir};
    let maps = "7f00-7f10 r-xp 00000000 08:01 42 /opt/torch/lib/libc10.so\n\
                7f10-7f20 r-xp 00000000 08:01 43 /opt/torch/lib/libtorch_cpu.so\n";
    assert_eq!(loaded_libtorch_dir(maps), Some(Path::new("/opt/torch/lib").to_path_buf()));
    assert_eq!(loaded_libtorch_dir("7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/libc.so.6\n"), None);

    let root = scratch("libtorch-version");
    std::fs::create_dir_all(root.join("torch/lib")).unwrap();
    std::fs::write(root.join("torch/version.py"), "__version__ = '2.11.0+cu130'\ngit_version = 'x'\n").unwrap();
    let lib = root.join("torch/lib");
    assert_eq!(libtorch_version_at(&lib).as_deref(), Some("2.11.0+cu130"));

    let error = compare_libtorch("2.13.0+cu130", "2.11.0+cu130", &lib).unwrap_err().to_string();
    assert!(
        error.contains("built against libtorch 2.13.0+cu130")
            && error.contains("loaded libtorch 2.11.0+cu130")
            && error.contains(lib.to_str().unwrap())
            && error.contains("LD_LIBRARY_PATH"),
        "{error}"
    );
    assert!(compare_libtorch("2.13.0+cu130", "2.13.0+cpu", &lib).is_ok(), "build tags do not matter");
    assert!(compare_libtorch("unknown", "2.11.0", &lib).is_ok());
    check_loaded_libtorch().expect("the test process runs on the libtorch it was built against");
    std::fs::remove_dir_all(root).ok();
}
