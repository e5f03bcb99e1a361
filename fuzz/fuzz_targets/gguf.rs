//! Any bytes as a GGUF file: its header and metadata read, its config, tokenizer and every tensor taken out, or an
//! error; never a panic or an allocation sized by an unchecked length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vene_checkpoint::gguf::{self, GgufFile};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vene-fuzz-{}.gguf", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(file) = GgufFile::open(&path) {
        let _ = gguf::hf_config(&file);
        let _ = gguf::tokenizer(&file);
        let names: Vec<String> = file.tensor_names().map(str::to_string).collect();
        for name in names {
            let _ = file.dequantize(&name, tch::Kind::Float, tch::Device::Cpu);
        }
    }
});
