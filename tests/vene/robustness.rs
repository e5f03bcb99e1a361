//! Damaged files and random configurations never crash vene: every case ends in a result or an error, never a panic
//! (which in a plugin would be caught, but in the host would end the process).
//!
//! The file readers get mutated copies of real checkpoints (bytes flipped, inserted, cut off); the engine gets
//! random configurations and unit locations built from the keys and values it understands and ones it does not.

use std::io::{Read, Write};

use proptest::prelude::*;
use serde_json::{json, Value};
use tch::Tensor;
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::ForwardInputs,
};

use crate::common::*;

/// A change to a byte string: flip bits at some offsets, insert a byte, or cut the tail off.
#[derive(Debug, Clone)]
enum Damage {
    Flip(Vec<(usize, u8)>),
    Insert(usize, u8),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..8).prop_map(Damage::Flip),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert(at, byte)),
        any::<usize>().prop_map(Damage::Truncate),
    ]
}

/// `bytes` damaged; offsets are taken modulo the length, biased towards the start where headers live.
fn apply(bytes: &[u8], damage: &Damage, head: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let length = out.len().max(1);
    let span = |at: usize| if at.is_multiple_of(2) { at % head.clamp(1, length) } else { at % length };
    match damage {
        Damage::Flip(flips) => {
            for &(at, mask) in flips {
                let index = span(at);
                out[index] ^= mask;
            }
        }
        Damage::Insert(at, byte) => {
            let index = span(*at);
            out.insert(index, *byte);
        }
        Damage::Truncate(at) => out.truncate(span(*at)),
    }
    out
}

/// The entries of the fixture `pytorch_model.bin` (a zip as `torch.save` writes it).
fn checkpoint_entries() -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(fixtures().join("checkpoints/gpt2_bin/pytorch_model.bin")).unwrap();
    let mut archive = zip::ZipArchive::new(file).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().to_string(), bytes)
        })
        .collect()
}

/// A `torch.save`-style zip of `entries` (stored, so the pickle bytes are what the reader sees).
fn write_zip(path: &std::path::Path, entries: &[(String, Vec<u8>)]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: &[T]) -> impl Strategy<Value = T> {
    prop::sample::select(values.to_vec())
}

/// One representation: known keys with values valid or not, sometimes an unknown key.
fn representation() -> impl Strategy<Value = Value> {
    // Mostly values vene accepts, so that cases get past parsing into binding and running; sometimes not.
    let layer = prop_oneof![16 => (0i64..3).prop_map(Value::from), 1 => Just(json!(3)), 1 => Just(json!("one"))];
    let site = prop_oneof![
        12 => pick(&[
            ("block_output", Some("pos")),
            ("block_input", None),
            ("mlp_output", Some("pos")),
            ("mlp_activation", None),
            ("attention_output", Some("pos")),
            ("head_attention_value_output", Some("h.pos")),
            ("head_attention_value_output", Some("h")),
        ]),
        1 => pick(&[("mlp_out", None), ("block_output", Some("h.pos")), ("attention_weight", Some("pos"))]),
    ];
    let kind = prop_oneof![
        16 => pick(&["vanilla", "zero", "addition", "collect", "noise", "skip", "low_rank_rotated_space"]),
        1 => Just("nope"),
    ];
    let rank = prop_oneof![16 => Just(None), 3 => (1i64..40).prop_map(Some), 1 => Just(Some(0))];
    let units = prop_oneof![16 => Just(None), 3 => (1i64..4).prop_map(Some), 1 => Just(Some(0))];
    let partition = prop_oneof![
        16 => Just(None),
        2 => prop::collection::vec(prop::collection::vec(0i64..40, 1..3), 1..3).prop_map(Some),
    ];
    let extra = prop_oneof![
        24 => Just(None),
        3 => Just(Some("source_representation")),
        1 => Just(Some("group_key")),
        1 => Just(Some("unknown_key")),
    ];
    (layer, site, kind, rank, units, partition, extra).prop_map(
        |(layer, (component, unit), kind, rank, units, partition, extra)| {
            let mut rep = json!({"layer": layer, "component": component, "intervention": {"type": kind}});
            let fields = rep.as_object_mut().unwrap();
            if let Some(unit) = unit {
                fields.insert("unit".into(), json!(unit));
            }
            if let Some(rank) = rank {
                fields.insert("low_rank_dimension".into(), json!(rank));
            }
            if let Some(units) = units {
                fields.insert("max_number_of_units".into(), json!(units));
            }
            if let Some(partition) = partition {
                fields.insert("subspace_partition".into(), json!(partition));
            }
            match extra {
                Some("group_key") => fields.insert("group_key".into(), json!(0)),
                Some("source_representation") => fields.insert("source_representation".into(), json!([0.5, 1.0])),
                Some(other) => fields.insert(other.into(), json!(true)),
                None => None,
            };
            rep
        },
    )
}

/// Unit locations in pyvene's shapes, nested at random depths, with indices in and out of range.
fn locations() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![9 => (0i64..3).prop_map(Value::from), 1 => (-2i64..8).prop_map(Value::from), 1 => Just(Value::Null)];
    let nested = leaf.prop_recursive(4, 24, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::Array));
    let key =
        prop_oneof![4 => Just("sources->base"), 2 => Just("base"), 1 => Just("source_0->source_1"), 1 => Just("bad")];
    prop::option::of((key, nested)).prop_map(|entry| match entry {
        Some((key, value)) => json!({ key: value }),
        None => Value::Null,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A damaged `model.safetensors` loads or is refused with an error.
    #[test]
    fn damaged_safetensors_never_panic(damage in damage()) {
        let dir = scratch("fuzz-safetensors");
        copy_model(&gpt2_dir(), &dir);
        let bytes = std::fs::read(gpt2_dir().join("model.safetensors")).unwrap();
        std::fs::write(dir.join("model.safetensors"), apply(&bytes, &damage, 2048)).unwrap();
        let _ = vene_checkpoint::Weights::load(&dir, tch::Device::Cpu, tch::Kind::Float);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A checkpoint whose pickle program is damaged loads or is refused with an error; nothing is executed.
    #[test]
    fn damaged_pickles_never_panic(damage in damage()) {
        let dir = scratch("fuzz-pickle");
        let entries: Vec<(String, Vec<u8>)> = checkpoint_entries()
            .into_iter()
            .map(|(name, bytes)| {
                let bytes = if name.ends_with("data.pkl") { apply(&bytes, &damage, bytes.len()) } else { bytes };
                (name, bytes)
            })
            .collect();
        let path = dir.join("pytorch_model.bin");
        write_zip(&path, &entries);
        let _ = vene_checkpoint::pickle::read_torch_state_dict(&path);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Random configurations and unit locations bind and run, or give an error.
    #[test]
    fn random_configs_and_locations_never_panic(
        representations in prop::collection::vec(representation(), 1..3),
        mode in prop_oneof![12 => Just("parallel"), 6 => Just("serial"), 1 => Just("sideways")],
        locations in locations(),
        extra_sources in prop_oneof![8 => Just(0usize), 1 => Just(1), 1 => Just(2)],
    ) {
        let plugins = plugins(&["vene_gpt2", "vene_das"]);
        let config = json!({"mode": mode, "representations": representations});
        let Ok(config) = serde_json::from_value::<IntervenableConfig>(config) else { return Ok(()); };
        let Ok(mut model) = IntervenableModel::new(load_gpt2(&plugins), config, &plugins, 0) else { return Ok(()); };
        let ids = || ForwardInputs::from_ids(Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]));
        // One source per representation (each its own group), give or take.
        let count = (representations.len() + extra_sources) % 4;
        let sources: Vec<Option<ForwardInputs>> = (0..count).map(|_| Some(ids())).collect();
        let Ok(locations) = UnitLocations::parse((!locations.is_null()).then_some(&locations)) else { return Ok(()); };
        let _no_grad = tch::no_grad_guard();
        let _ = model.run(&ids(), &sources, &locations, &Subspaces::None);
    }
}
