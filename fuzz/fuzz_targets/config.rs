//! Any bytes as a vene config file: parsed, its groups worked out, or refused with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vene_host::config::IntervenableConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = serde_json::from_slice::<IntervenableConfig>(data) {
        let _ = config.groups();
        let _ = serde_json::to_string(&config);
    }
});
