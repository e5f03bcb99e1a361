//! Any bytes as `model.safetensors`: loaded as weights or refused with an error; never a panic, never an allocation
//! the header asks for but the file cannot back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vene-fuzz-safetensors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), data).unwrap();
    let _ = vene_checkpoint::Weights::load(&dir, tch::Device::Cpu, tch::Kind::Float);
});
