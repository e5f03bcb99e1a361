//! Reads PyTorch checkpoints (`torch.save`: `pytorch_model.bin`, pyvene's `intkey_*.bin`, older `.pth` files) as data
//! only, in both of torch's layouts: the zip archive (torch ≥ 1.6, [`zip`]) and the legacy stream of pickles followed by
//! raw storages ([`legacy`]).
//!
//! The pickles are interpreted by a small stack machine ([`machine`]) that knows containers, numbers, strings and the
//! handful of torch globals that describe tensors. Any other global (the classic `os.system` payload,
//! `builtins.eval`, …) is refused before anything is built: nothing in the file is ever executed. Sizes from the
//! pickle are checked against the bytes present before tensors are allocated.

mod legacy;
mod machine;
mod zip;

use std::{collections::HashMap, fs::File, io::Read, path::Path};

use tch::{Kind, Tensor};

use crate::{CheckpointError, Result};
use machine::{TensorDesc, Value};

/// Largest storage accepted (guards allocations against hostile headers).
const MAX_STORAGE_BYTES: u64 = 64 << 30;

const WHAT: &str = "PyTorch checkpoint";

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid { path: path.to_path_buf(), what: WHAT, message: message.into() }
}

/// The tensors of a `torch.save`d state dict, by name, in the order the file lists them. Non-tensor entries are
/// skipped.
pub fn read_torch_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut head = [0u8; 4];
    let read = File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    if read == 4 && head == *b"PK\x03\x04" {
        zip::read(path)
    } else if read >= 2 && head[0] == 0x80 {
        legacy::read(path)
    } else {
        Err(invalid(
            path,
            format!(
                "it starts with bytes {:02x?}, which is neither a zip archive (torch.save since 1.6) nor a pickle \
                 stream (torch's legacy format)",
                &head[..read]
            ),
        ))
    }
}

pub(crate) fn element_size(kind: Kind) -> i64 {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

/// The tensor entries of an unpickled state dict, in file order.
fn tensor_entries(path: &Path, root: Value) -> Result<Vec<(String, TensorDesc)>> {
    let Value::Dict(entries) = root else {
        return Err(invalid(path, "the checkpoint is not a dict of tensors"));
    };
    Ok(entries
        .into_iter()
        .filter_map(|(key, value)| match (key, value) {
            (Value::Str(name), Value::Tensor(desc)) => Some((name, *desc)),
            _ => None,
        })
        .collect())
}

/// Checks that a storage of `bytes` bytes can hold what the pickle declares for `desc`.
fn check_storage(path: &Path, desc: &TensorDesc, bytes: u64) -> Result<()> {
    let needed = desc.numel.checked_mul(element_size(desc.kind)).filter(|&n| n >= 0).unwrap_or(i64::MAX);
    if bytes > MAX_STORAGE_BYTES || (bytes as i64) < needed {
        return Err(invalid(
            path,
            format!(
                "storage {} holds {bytes} bytes but the pickle declares {} elements of {:?}",
                desc.key, desc.numel, desc.kind
            ),
        ));
    }
    Ok(())
}

/// Builds each tensor from its storage's bytes (a view into them, made contiguous).
fn materialize(
    path: &Path,
    entries: Vec<(String, TensorDesc)>,
    storages: &HashMap<String, &[u8]>,
) -> Result<Vec<(String, Tensor)>> {
    entries
        .into_iter()
        .map(|(name, desc)| {
            let bytes =
                storages.get(&desc.key).ok_or_else(|| invalid(path, format!("missing storage {}", desc.key)))?;
            check_storage(path, &desc, bytes.len() as u64)?;
            let last =
                desc.size.iter().zip(&desc.stride).map(|(&s, &st)| (s - 1).max(0) * st).sum::<i64>() + desc.offset;
            if desc.size.iter().any(|&s| s < 0)
                || desc.stride.iter().any(|&s| s < 0)
                || desc.offset < 0
                || (desc.size.iter().all(|&s| s > 0) && last >= desc.numel)
            {
                return Err(invalid(path, format!("tensor '{name}' reaches outside its storage")));
            }
            let used = (desc.numel * element_size(desc.kind)) as usize;
            let storage = Tensor::f_from_data_size(&bytes[..used], &[desc.numel], desc.kind)?;
            let tensor = storage.f_as_strided(&desc.size, &desc.stride, Some(desc.offset))?.contiguous();
            Ok((name, tensor))
        })
        .collect()
}
