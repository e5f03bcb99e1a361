//! torch's legacy layout (`torch.save(..., _use_new_zipfile_serialization=False)` and everything saved before torch
//! 1.6): five pickles in a row — the magic number, the protocol version, system info, the object itself, and the list
//! of storage keys in the order they follow — then each storage as a little-endian `u64` element count and its raw
//! bytes.

use std::{collections::HashMap, path::Path};

use super::{element_size, invalid, machine::Machine, machine::Value, materialize, tensor_entries};
use crate::{CheckpointError, Result};

/// The first pickle: protocol 2, LONG1 of 10 bytes, 0x1950a86a20f9469cfc6c, STOP.
const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
const PROTOCOL_VERSION: i64 = 1001;

pub(super) fn read(path: &Path) -> Result<Vec<(String, tch::Tensor)>> {
    let data = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    if !data.starts_with(&MAGIC) {
        return Err(invalid(
            path,
            "it is a pickle but not torch's legacy format (the magic number 0x1950a86a20f9469cfc6c is missing)",
        ));
    }
    let mut machine = Machine::new(path, &data, MAGIC.len());
    match machine.run()? {
        Value::Int(PROTOCOL_VERSION) => {}
        Value::Int(other) => {
            return Err(invalid(path, format!("legacy protocol version {other}, expected {PROTOCOL_VERSION}")))
        }
        _ => return Err(invalid(path, "the legacy protocol version is not an integer")),
    }
    machine.run()?;
    let root = machine.run()?;
    let keys = match machine.run()? {
        Value::List(keys) => keys
            .into_iter()
            .map(|key| match key {
                Value::Str(key) => Ok(key),
                _ => Err(invalid(path, "a storage key is not a string")),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(invalid(path, "the storage key list is missing after the object")),
    };
    let entries = tensor_entries(path, root)?;
    let mut storages = HashMap::new();
    let mut pos = machine.pos;
    for key in keys {
        let kind = machine.storage_kinds.get(&key).ok_or_else(|| {
            invalid(path, format!("storage {key} is listed after the object but no tensor in it uses that storage"))
        })?;
        let size = element_size(*kind) as u64;
        let header = data.get(pos..pos + 8).ok_or_else(|| invalid(path, format!("storage {key} is truncated")))?;
        let numel = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        let end = numel
            .checked_mul(size)
            .and_then(|bytes| (pos as u64 + 8).checked_add(bytes))
            .filter(|&end| end <= data.len() as u64)
            .ok_or_else(|| {
                invalid(path, format!("storage {key} declares {numel} elements but the file ends before them"))
            })? as usize;
        storages.insert(key, &data[pos + 8..end]);
        pos = end;
    }
    materialize(path, entries, &storages)
}
