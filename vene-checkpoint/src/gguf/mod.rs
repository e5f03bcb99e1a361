//! GGUF files, llama.cpp's single-file checkpoints: metadata, tensors dequantized into tch tensors, and (in the
//! submodules) the Hugging Face config, weight names and tokenizer they stand for.
//!
//! The container and the block formats are candle-core's `quantized` module: it is maintained beside llama.cpp's
//! formats (F32, F16, BF16, Q4_0 … Q8_0, Q2_K … Q6_K), checks every declared length against the file before it
//! allocates, and its block decoders are the ones candle's own quantized models run on. Tensors are dequantized a
//! few rows at a time straight into the destination tensor, so loading holds the weights once plus one chunk.

mod config;
mod names;
mod tokenizer;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use candle_core::quantized::{gguf_file, GgmlDType};
use tch::{Device, Kind, Tensor};

pub use config::{hf_config, model_type, ARCHITECTURES};
pub use names::hf_weights;
pub use tokenizer::tokenizer;

use crate::{CheckpointError, Result};

/// Values dequantized per chunk: bounds the transient memory of a load.
const CHUNK_VALUES: usize = 1 << 20;

/// The block formats vene dequantizes, as llama.cpp names them.
pub const QUANTIZATIONS: &str = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// An opened GGUF file: its parsed header and a read-only map of its tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    map: memmap2::Mmap,
}

/// True when `path` names a GGUF file by its extension.
pub fn is_gguf(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The `.gguf` files directly inside `dir`, in name order.
pub fn files_in_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_gguf(p)).collect();
    found.sort();
    found
}

impl GgufFile {
    /// Reads the header, metadata and tensor table of `path`; tensor data is only mapped.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| invalid(path, describe_read_error(&e)))?;
        // SAFETY: read-only map; tensors are copied out of it and it lives as long as this value.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self { path: path.to_path_buf(), content, map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture`, e.g. `gemma3`.
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")?.ok_or_else(|| invalid(&self.path, "has no general.architecture"))
    }

    fn value(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(key)
    }

    /// An integer entry of any width, or `None` when the key is absent.
    pub fn integer(&self, key: &str) -> Result<Option<i64>> {
        use gguf_file::Value::*;
        let Some(value) = self.value(key) else { return Ok(None) };
        let number = match value {
            U8(v) => i64::from(*v),
            I8(v) => i64::from(*v),
            U16(v) => i64::from(*v),
            I16(v) => i64::from(*v),
            U32(v) => i64::from(*v),
            I32(v) => i64::from(*v),
            U64(v) => i64::try_from(*v).map_err(|_| self.wrong_type(key, "an integer below 2^63"))?,
            I64(v) => *v,
            _ => return Err(self.wrong_type(key, "an integer")),
        };
        Ok(Some(number))
    }

    /// A float (or integer) entry as f64.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::F32(v)) => Ok(Some(f64::from(*v))),
            Some(gguf_file::Value::F64(v)) => Ok(Some(*v)),
            Some(_) => self.integer(key).map(|v| v.map(|v| v as f64)),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(v)) => Ok(Some(*v)),
            Some(_) => Err(self.wrong_type(key, "a boolean")),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(v)) => Ok(Some(v)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&[gguf_file::Value]>> {
        match self.value(key) {
            None => Ok(None),
            Some(gguf_file::Value::Array(values)) => Ok(Some(values)),
            Some(_) => Err(self.wrong_type(key, "an array")),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(values) = self.array(key)? else { return Ok(None) };
        let strings = values.iter().map(|v| match v {
            gguf_file::Value::String(s) => Ok(s.as_str()),
            _ => Err(self.wrong_type(key, "an array of strings")),
        });
        strings.collect::<Result<Vec<_>>>().map(Some)
    }

    /// An array of numbers as f32.
    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        use gguf_file::Value::*;
        let Some(values) = self.array(key)? else { return Ok(None) };
        let numbers = values.iter().map(|v| match v {
            F32(x) => Ok(*x),
            F64(x) => Ok(*x as f32),
            I32(x) => Ok(*x as f32),
            _ => Err(self.wrong_type(key, "an array of numbers")),
        });
        numbers.collect::<Result<Vec<_>>>().map(Some)
    }

    /// An array of integers.
    pub fn integers(&self, key: &str) -> Result<Option<Vec<i64>>> {
        use gguf_file::Value::*;
        let Some(values) = self.array(key)? else { return Ok(None) };
        let numbers = values.iter().map(|v| match v {
            I32(x) => Ok(i64::from(*x)),
            U32(x) => Ok(i64::from(*x)),
            I8(x) => Ok(i64::from(*x)),
            U8(x) => Ok(i64::from(*x)),
            I64(x) => Ok(*x),
            _ => Err(self.wrong_type(key, "an array of integers")),
        });
        numbers.collect::<Result<Vec<_>>>().map(Some)
    }

    fn wrong_type(&self, key: &str, expected: &str) -> CheckpointError {
        invalid(&self.path, format!("metadata '{key}' is not {expected}"))
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor's shape in row-major order (`[out, in]` for a linear layer), as the file declares it.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        let info = self.content.tensor_infos.get(name)?;
        Some(info.shape.dims().iter().map(|&d| d as i64).collect())
    }

    /// Dequantizes tensor `name` into a new tensor of `kind` on `device`.
    pub fn dequantize(&self, name: &str, kind: Kind, device: Device) -> Result<Tensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| CheckpointError::MissingWeight { dir: self.path.clone(), name: name.to_string() })?;
        let dims: Vec<usize> = info.shape.dims().to_vec();
        // Counted here with overflow checks: the header's dimensions are whatever the file says.
        let elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
            invalid(&self.path, format!("tensor '{name}' declares dimensions {dims:?}, more values than memory holds"))
        })?;
        let row = dims.last().copied().unwrap_or(1).max(1);
        let (block, block_bytes) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
        if row % block != 0 {
            return Err(invalid(
                &self.path,
                format!("tensor '{name}' has rows of {row} values, not a whole number of {block}-value blocks"),
            ));
        }
        let rows = elements / row;
        let row_bytes = (row / block).checked_mul(block_bytes);
        let start = self.content.tensor_data_offset.checked_add(info.offset).map(|s| s as usize);
        let end = start.zip(row_bytes).and_then(|(s, r)| rows.checked_mul(r).and_then(|n| s.checked_add(n)));
        let (Some(start), Some(row_bytes), true) = (start, row_bytes, end.is_some_and(|e| e <= self.map.len())) else {
            return Err(invalid(
                &self.path,
                format!(
                    "tensor '{name}' ({:?}, {dims:?}) runs past the end of the file ({} bytes): the file is truncated",
                    info.ggml_dtype,
                    self.map.len()
                ),
            ));
        };
        let shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let out = Tensor::f_empty(&shape, (kind, Device::Cpu))?;
        let flat = out.view([rows as i64, row as i64]);
        let chunk_rows = (CHUNK_VALUES / row).max(1);
        let mut aligned: Vec<u64> = Vec::new();
        for first in (0..rows).step_by(chunk_rows) {
            let count = chunk_rows.min(rows - first);
            let bytes = &self.map[start + first * row_bytes..start + (first + count) * row_bytes];
            let values = self.dequantize_rows(name, info.ggml_dtype, bytes, count, row, &mut aligned)?;
            let mut target = flat.narrow(0, first as i64, count as i64);
            target.f_copy_(&Tensor::from_slice(&values).view([count as i64, row as i64]))?;
        }
        Ok(out.to_device(device))
    }

    /// One chunk of rows decoded by candle's block decoders. The bytes are copied into an 8-byte-aligned buffer
    /// first: candle reads blocks in place, and a file's alignment is whatever its header says.
    fn dequantize_rows(
        &self,
        name: &str,
        dtype: GgmlDType,
        bytes: &[u8],
        rows: usize,
        row: usize,
        aligned: &mut Vec<u64>,
    ) -> Result<Vec<f32>> {
        aligned.clear();
        aligned.resize(bytes.len().div_ceil(8), 0);
        let buffer: &mut [u8] = bytemuck::cast_slice_mut(aligned.as_mut_slice());
        buffer[..bytes.len()].copy_from_slice(bytes);
        let cpu = candle_core::Device::Cpu;
        let decode = || -> candle_core::Result<Vec<f32>> {
            let quantized = candle_core::quantized::ggml_file::qtensor_from_ggml(
                dtype,
                &buffer[..bytes.len()],
                vec![rows, row],
                &cpu,
            )?;
            quantized.dequantize(&cpu)?.flatten_all()?.to_vec1::<f32>()
        };
        decode().map_err(|e| {
            invalid(&self.path, format!("cannot dequantize tensor '{name}' ({dtype:?}): {}", candle_message(&e)))
        })
    }
}

/// candle's message without the backtrace it may carry.
fn candle_message(error: &candle_core::Error) -> String {
    error.to_string().lines().next().unwrap_or_default().to_string()
}

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid { path: path.to_path_buf(), what: "GGUF file", message: message.into() }
}

/// candle's read errors, with what a user can do about the common ones.
fn describe_read_error(error: &candle_core::Error) -> String {
    let text = candle_message(error);
    if let Some(rest) = text.split("unknown dtype for tensor ").nth(1) {
        let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
        return format!("a tensor uses ggml type {code}, which vene cannot dequantize (it reads {QUANTIZATIONS})");
    }
    if text.contains("unknown magic") {
        return format!("{text}: a GGUF file starts with the bytes 'GGUF'");
    }
    if text.contains("failed to fill whole buffer") || text.contains("UnexpectedEof") {
        return format!("it ends inside its header ({text}): the file is truncated");
    }
    if text.contains("remaining") {
        return format!("{text}: the file is truncated or damaged");
    }
    text
}
