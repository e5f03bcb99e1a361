//! Any bytes as the pickle program (`data.pkl`) of a `torch.save` zip: read as data into tensors or refused with an
//! error; never a panic, never a call (the reader knows no globals but tensor rebuilding and containers).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("vene-fuzz-pickle-{}.bin", std::process::id()));
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file("archive/data.pkl", options).unwrap();
    writer.write_all(data).unwrap();
    // A storage for the pickle to point at: 16 float32 values.
    writer.start_file("archive/data/0", options).unwrap();
    writer.write_all(&[0u8; 64]).unwrap();
    writer.finish().unwrap();
    let _ = vene_checkpoint::pickle::read_torch_state_dict(&path);
});
