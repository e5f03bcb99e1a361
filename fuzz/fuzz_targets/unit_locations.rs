//! Any JSON as `unit_locations`: parsed and resolved for every intervention slot, unit depth and batch size it could
//! be asked about, or refused with an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vene_host::locations::UnitLocations;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(locations) = UnitLocations::parse(Some(&value)) else {
        return;
    };
    for key in ["sources->base", "source_0->source_1", "source_1->base"] {
        for source_side in [false, true] {
            for (index, count) in [(0, 1), (0, 2), (1, 2)] {
                for levels in [1, 2] {
                    for batch in [1, 3] {
                        let _ = locations.resolve(key, source_side, index, count, levels, batch, "fuzz");
                    }
                }
            }
        }
    }
});
