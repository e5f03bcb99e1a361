//! GGUF checkpoints: small files written as llama.cpp writes them (scripts/gen_fixtures_gguf.py) load to
//! transformers 5's logits and tokens, and damaged files are refused with one clear error each.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::Tensor;
use vene_api::{DTypeSpec, DeviceSpec};
use vene_host::{
    model::{ForwardInputs, LoadedModel},
    text::TextTokenizer,
};

use crate::common::*;

fn gguf_fixture(arch: &str) -> (PathBuf, Value) {
    let dir = fixtures().join("gguf");
    let reference = std::fs::read_to_string(dir.join(format!("{arch}.json"))).unwrap();
    (dir.join(format!("{arch}.gguf")), serde_json::from_str(&reference).unwrap())
}

fn load(path: &Path) -> vene_host::error::Result<LoadedModel> {
    LoadedModel::load(&plugins(&["vene_llama"]), path, DeviceSpec::CPU, DTypeSpec::F32)
}

/// llama (q/k permuted by the converter, GQA), qwen2 (biases, byte-level BPE) and gemma3 (norms stored as 1 + w,
/// q/k norms, sliding window) with tensors in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1: every position's
/// logits within 1e-4 of transformers' reading of the same file, and its tokenizer's ids.
#[test]
fn small_ggufs_load_to_transformers_logits_and_tokens() {
    let _no_grad = tch::no_grad_guard();
    for arch in ["llama", "qwen2", "gemma3"] {
        let (path, reference) = gguf_fixture(arch);
        let model = load(&path).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let ids: Vec<i64> = reference["ids"].as_array().unwrap().iter().flat_map(ids_of).collect();
        let batch = reference["ids"].as_array().unwrap().len() as i64;
        let logits = model.forward_plain(&ForwardInputs::from_ids(Tensor::from_slice(&ids).view([batch, -1]))).unwrap();
        let expected: Vec<f32> = flatten(&reference["logits"]);
        let expected = Tensor::from_slice(&expected).view_as(&logits.output);
        assert_close(&logits.output, &expected, 1e-4, &format!("{arch} logits"));
        let tokenizer = TextTokenizer::for_model(&path, &model.catalog().model_type).unwrap().unwrap();
        for case in reference["tokenization"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(tokenizer.encode(text).unwrap(), ids_of(&case["ids"]), "{arch}: ids of {text:?}");
        }
    }
}

/// A directory holding one GGUF (and no config.json) loads as that file.
#[test]
fn a_directory_holding_one_gguf_loads_it() {
    let (path, _) = gguf_fixture("qwen2");
    let dir = scratch("gguf-dir");
    std::fs::copy(&path, dir.join("model.gguf")).unwrap();
    let model = load(&dir).unwrap();
    assert_eq!(model.catalog().model_type.as_str(), "qwen2");
    assert_eq!(model.dir(), dir.join("model.gguf"));
}

/// A directory holding several GGUFs and no config.json is refused, naming them.
#[test]
fn a_directory_holding_several_ggufs_names_them() {
    let dir = scratch("gguf-dir-several");
    for arch in ["qwen2", "llama"] {
        std::fs::copy(gguf_fixture(arch).0, dir.join(format!("{arch}.gguf"))).unwrap();
    }
    let error = load(&dir).err().expect("two GGUFs are refused").to_string();
    assert!(error.contains("holds 2 GGUF files (llama.gguf, qwen2.gguf) and no config.json"), "{error}");
    assert!(error.contains("give the file to load"), "{error}");
}

fn ids_of(value: &Value) -> Vec<i64> {
    value.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        number => vec![number.as_f64().unwrap() as f32],
    }
}

/// The position of `needle` in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| panic!("{needle:?} not in the file"))
}

/// The error of loading `bytes` as a GGUF file named `name`.
fn load_error(name: &str, bytes: &[u8]) -> String {
    let path = scratch("bad-gguf").join(name);
    std::fs::write(&path, bytes).unwrap();
    let error = load(&path).err().unwrap_or_else(|| panic!("{name} loaded")).to_string();
    assert!(error.contains(&path.display().to_string()), "{name}: the error does not name the file: {error}");
    error
}

/// Truncated, wrong magic, an unknown architecture or block format, a missing tensor, a metadata array longer than
/// the file: one clear error each, naming the file and the problem (nothing is allocated from the bad sizes).
#[test]
fn damaged_ggufs_are_refused_with_the_reason() {
    let (path, _) = gguf_fixture("llama");
    let good = std::fs::read(&path).unwrap();

    let error = load_error("truncated-data.gguf", &good[..good.len() * 2 / 3]);
    assert!(error.contains("runs past the end of the file") && error.contains("truncated"), "{error}");
    let error = load_error("truncated-header.gguf", &good[..200]);
    assert!(error.contains("GGUF file") && error.contains("truncated"), "{error}");

    let mut magic = good.clone();
    magic[..4].copy_from_slice(b"GGML");
    let error = load_error("magic.gguf", &magic);
    assert!(error.contains("unknown magic") && error.contains("'GGUF'"), "{error}");

    let mut architecture = good.clone();
    let at = find(&architecture, b"general.architecture") + "general.architecture".len() + 4 + 8;
    architecture[at..at + 5].copy_from_slice(b"mamba");
    let error = load_error("architecture.gguf", &architecture);
    assert!(error.contains("architecture 'mamba'") && error.contains("llama, qwen2, qwen3, gemma"), "{error}");

    // The tensor table entry of blk.1.ffn_up.weight: name, dimension count, dimensions, then the type code.
    let mut format = good.clone();
    let at = find(&format, b"blk.1.ffn_up.weight") + "blk.1.ffn_up.weight".len();
    let dims = u32::from_le_bytes(format[at..at + 4].try_into().unwrap()) as usize;
    let type_at = at + 4 + 8 * dims;
    format[type_at..type_at + 4].copy_from_slice(&20u32.to_le_bytes());
    let error = load_error("format.gguf", &format);
    assert!(error.contains("ggml type 20") && error.contains("Q4_K"), "{error}");

    let mut missing = good.clone();
    let at = find(&missing, b"blk.1.ffn_up.weight");
    missing[at..at + "blk.1.ffn_up.weight".len()].copy_from_slice(b"blk.1.ffn_uq.weight");
    let error = load_error("missing.gguf", &missing);
    assert!(error.contains("model.layers.1.mlp.up_proj.weight"), "{error}");

    // A norm's one dimension of 2^62 values: its byte length overflows, and is refused rather than wrapped.
    let mut width = good.clone();
    let at = find(&width, b"blk.0.attn_norm.weight") + "blk.0.attn_norm.weight".len() + 4;
    width[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let error = load_error("width.gguf", &width);
    assert!(error.contains("blk.0.attn_norm.weight") && error.contains("runs past the end"), "{error}");

    // llama.block_count: key, value type (u32), then the value.
    let mut blocks = good.clone();
    let at = find(&blocks, b"llama.block_count") + "llama.block_count".len() + 4;
    blocks[at..at + 4].copy_from_slice(&0xF200_0001u32.to_le_bytes());
    let error = load_error("blocks.gguf", &blocks);
    assert!(error.contains("llama.block_count = 4060086273") && error.contains("hold 2 blocks"), "{error}");

    // tokenizer.ggml.tokens: key, value type (array), element type (string), then the element count.
    let mut array = good.clone();
    let at = find(&array, b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 8;
    array[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let error = load_error("array.gguf", &array);
    assert!(error.contains("array") && error.contains("exceeds"), "{error}");
}
