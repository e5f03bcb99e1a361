//! Checkpoint reading: pytorch_model.bin as data only, hostile and damaged files refused with clear errors.

use std::path::Path;

use tch::{Device, Kind};
use vene_checkpoint::{pickle::read_torch_state_dict, Weights};
use vene_host::model::{ForwardInputs, LoadedModel};

use crate::common::*;

fn pickles() -> std::path::PathBuf {
    fixtures().join("checkpoints/pickles")
}

fn error_of(path: &Path) -> String {
    match read_torch_state_dict(path) {
        Ok(tensors) => panic!("{} was accepted with {} tensors", path.display(), tensors.len()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn pytorch_model_bin_gives_the_same_logits_as_safetensors() {
    let plugins = gpt2_plugins();
    let from_bin = LoadedModel::load(
        &plugins,
        &fixtures().join("checkpoints/gpt2_bin"),
        vene_api::DeviceSpec::CPU,
        vene_api::DTypeSpec::F32,
    )
    .expect("pytorch_model.bin loads");
    let from_safetensors = load_gpt2(&plugins);
    let inputs = ForwardInputs::from_ids(tch::Tensor::from_slice(&[1i64, 50, 7, 99]).view([2, 2]));
    let a = from_bin.forward_plain(&inputs).unwrap().output;
    let b = from_safetensors.forward_plain(&inputs).unwrap().output;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn a_pickle_that_calls_os_system_is_refused() {
    let error = error_of(&pickles().join("os_system.bin"));
    assert!(error.contains("'posix.system'") || error.contains("'os.system'"), "{error}");
    assert!(error.contains("refusing to load it"), "{error}");
}

#[test]
fn a_pickle_that_calls_eval_is_refused() {
    let error = error_of(&pickles().join("builtins_eval.bin"));
    assert!(error.contains("'__builtin__.eval'") || error.contains("'builtins.eval'"), "{error}");
    assert!(error.contains("refusing"), "{error}");
}

#[test]
fn a_truncated_checkpoint_is_an_error() {
    let error = error_of(&pickles().join("truncated.bin"));
    assert!(error.contains("truncated.bin is not a valid PyTorch checkpoint"), "{error}");
}

#[test]
fn sizes_in_headers_are_checked_before_allocating() {
    let error = error_of(&pickles().join("oversized.bin"));
    assert!(error.contains("holds 24 bytes but the pickle declares 1099511627776 elements"), "{error}");
}

#[test]
fn the_legacy_format_reads_every_tensor_as_torch_load_does() {
    let tensors: std::collections::HashMap<_, _> =
        read_torch_state_dict(&pickles().join("legacy.pth")).expect("legacy file reads").into_iter().collect();
    let base = tch::Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]) / 4.0;
    assert_eq!(max_abs_diff(&tensors["weight"], &base), 0.0);
    assert_eq!(max_abs_diff(&tensors["transposed"], &base.tr()), 0.0);
    assert_eq!(max_abs_diff(&tensors["row"], &base.get(1)), 0.0);
    assert_eq!(tensors["steps"].kind(), Kind::Int64);
    assert_eq!(Vec::<i64>::try_from(&tensors["steps"]).unwrap(), vec![0, 1000, 2000, 3000, 4000]);
    assert_eq!(tensors["half"].kind(), Kind::Half);
    assert_eq!(Vec::<f32>::try_from(&tensors["half"].to_kind(Kind::Float)).unwrap(), vec![0.5, -1.25, 3.0]);
}

#[test]
fn a_truncated_legacy_file_names_the_storage_it_lost() {
    let error = error_of(&pickles().join("legacy_truncated.pth"));
    assert!(error.contains("legacy_truncated.pth is not a valid PyTorch checkpoint"), "{error}");
    assert!(error.contains("elements but the file ends before them"), "{error}");
}

#[test]
fn a_file_that_is_neither_layout_names_both() {
    let path = std::env::temp_dir().join(format!("vene-not-torch-{}.pth", std::process::id()));
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00 not a torch file").unwrap();
    let error = error_of(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(error.contains("neither a zip archive (torch.save since 1.6) nor a pickle stream"), "{error}");
}

#[test]
fn damaged_safetensors_and_missing_weights_name_the_file_and_weight() {
    let dir = std::env::temp_dir().join(format!("vene-damaged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read(gpt2_dir().join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &original[..original.len() / 3]).unwrap();
    let error = Weights::load(&dir, Device::Cpu, Kind::Float).err().expect("truncated file refused").to_string();
    assert!(error.contains("model.safetensors is not a valid safetensors file"), "{error}");

    let mut weights = read_safetensors(&gpt2_dir().join("model.safetensors"));
    weights.retain(|(name, _)| name != "transformer.h.1.attn.c_attn.weight");
    vene_checkpoint::save_safetensors(&dir.join("model.safetensors"), &weights).unwrap();
    std::fs::copy(gpt2_dir().join("config.json"), dir.join("config.json")).unwrap();
    let error = LoadedModel::load(&gpt2_plugins(), &dir, vene_api::DeviceSpec::CPU, vene_api::DTypeSpec::F32)
        .err()
        .expect("missing weight refused")
        .to_string();
    assert!(error.contains("is missing weight 'h.1.attn.c_attn.weight'"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_directory_without_weights_lists_the_accepted_files() {
    let dir = std::env::temp_dir().join(format!("vene-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let error = Weights::load(&dir, Device::Cpu, Kind::Float).err().expect("no weights").to_string();
    assert!(error.contains("has no weights: expected model.safetensors"), "{error}");
    assert!(error.contains("pytorch_model.bin"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}
