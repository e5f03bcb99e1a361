//! Reads PyTorch's zip checkpoints (`torch.save`: `pytorch_model.bin`, pyvene's `intkey_*.bin`) as data only.
//!
//! The pickle inside is interpreted by a small stack machine that knows containers, numbers, strings and the handful
//! of torch globals that describe tensors. Any other global (the classic `os.system` payload, `builtins.eval`, …) is
//! refused before anything is built: nothing in the file is ever executed. Sizes from the pickle are checked against
//! the archive before tensors are allocated.

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use tch::{Kind, Tensor};

use crate::{CheckpointError, Result};

/// Largest storage accepted from one archive entry (guards allocations against hostile headers).
const MAX_ENTRY_BYTES: u64 = 64 << 30;

#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool, float or bytes value: parsed, but no tensor description needs its contents.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage {
        kind: Kind,
        key: String,
        numel: i64,
    },
    Tensor(Box<TensorDesc>),
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    StorageType(Kind),
}

#[derive(Debug, Clone)]
struct TensorDesc {
    kind: Kind,
    key: String,
    numel: i64,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", storage) => storage_kind(storage).map(Global::StorageType),
        _ => None,
    }
}

struct Machine<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn fail(&self, message: impl Into<String>) -> CheckpointError {
        CheckpointError::Invalid { path: self.path.to_path_buf(), what: "PyTorch checkpoint", message: message.into() }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(count)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.fail("the pickle is truncated"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        let end =
            self.data[start..].iter().position(|&b| b == b'\n').ok_or_else(|| self.fail("unterminated GLOBAL"))?;
        self.pos = start + end + 1;
        Ok(String::from_utf8_lossy(&self.data[start..start + end]).into_owned())
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| self.fail("pickle stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark =
            self.stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| self.fail("MARK missing"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn string(&mut self, len: usize) -> Result<Value> {
        let bytes = self.take(len)?;
        Ok(Value::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn global(&self, module: &str, name: &str) -> Result<Value> {
        resolve_global(module, name).map(Value::Global).ok_or_else(|| {
            self.fail(format!(
                "it references '{module}.{name}', which is not a tensor or container type; refusing to load it \
                 (vene never executes code from checkpoint files)"
            ))
        })
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'(' => self.stack.push(Value::Mark),
                b'X' => {
                    let len = self.u32()? as usize;
                    let value = self.string(len)?;
                    self.stack.push(value);
                }
                0x8c => {
                    let len = self.u8()? as usize;
                    let value = self.string(len)?;
                    self.stack.push(value);
                }
                b'C' => {
                    let len = self.u8()? as usize;
                    self.take(len)?;
                    self.stack.push(Value::Scalar);
                }
                b'B' => {
                    let len = self.u32()? as usize;
                    self.take(len)?;
                    self.stack.push(Value::Scalar);
                }
                b'q' => {
                    let key = u32::from(self.u8()?);
                    self.memoize(key)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memoize(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u32;
                    self.memoize(key)?;
                }
                b'h' | b'j' => {
                    let key = if op == b'h' { u32::from(self.u8()?) } else { self.u32()? };
                    let value =
                        self.memo.get(&key).cloned().ok_or_else(|| self.fail(format!("memo key {key} is unset")))?;
                    self.stack.push(value);
                }
                b'J' => {
                    let raw = self.u32()?;
                    self.stack.push(Value::Int(i64::from(raw as i32)));
                }
                b'K' => {
                    let value = self.u8()?;
                    self.stack.push(Value::Int(i64::from(value)));
                }
                b'M' => {
                    let bytes = self.take(2)?;
                    self.stack.push(Value::Int(i64::from(u16::from_le_bytes([bytes[0], bytes[1]]))));
                }
                0x8a => {
                    let len = self.u8()? as usize;
                    if len > 8 {
                        return Err(self.fail("integer wider than 64 bits"));
                    }
                    let bytes = self.take(len)?;
                    let mut buffer = [if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 8];
                    buffer[..len].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(buffer)));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Scalar);
                }
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::Scalar),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let count = usize::from(op - 0x84);
                    if self.stack.len() < count {
                        return Err(self.fail("pickle stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - count);
                    self.stack.push(Value::Tuple(items));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let value = self.global(&module, &name)?;
                    self.stack.push(value);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            let value = self.global(&module, &name)?;
                            self.stack.push(value);
                        }
                        _ => return Err(self.fail("STACK_GLOBAL needs two strings")),
                    }
                }
                b'Q' => {
                    let id = self.pop()?;
                    let storage = self.persistent(id)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.stack.push(value);
                }
                b'b' => {
                    // BUILD sets an object's state; containers and tensors here carry none that matters.
                    self.pop()?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_insert(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.dict_insert(items)?;
                }
                b'a' => {
                    let value = self.pop()?;
                    self.list_extend(vec![value])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?;
                }
                b'.' => return self.pop(),
                other => return Err(self.fail(format!("unsupported pickle opcode 0x{other:02x}"))),
            }
        }
    }

    fn memoize(&mut self, key: u32) -> Result<()> {
        let top = self.stack.last().cloned().ok_or_else(|| self.fail("memoize on an empty stack"))?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn dict_insert(&mut self, items: Vec<Value>) -> Result<()> {
        let fail = self.fail("SETITEM(S) on something that is not a dict");
        match self.stack.last_mut() {
            Some(Value::Dict(entries)) => {
                let mut iter = items.into_iter();
                while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                    entries.push((k, v));
                }
                Ok(())
            }
            _ => Err(fail),
        }
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Result<()> {
        let fail = self.fail("APPEND(S) on something that is not a list");
        match self.stack.last_mut() {
            Some(Value::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(fail),
        }
    }

    fn persistent(&self, id: Value) -> Result<Value> {
        match id {
            Value::Tuple(parts) => match parts.as_slice() {
                [Value::Str(tag), Value::Global(Global::StorageType(kind)), Value::Str(key), _location, Value::Int(numel)]
                    if tag == "storage" =>
                {
                    Ok(Value::Storage { kind: *kind, key: key.clone(), numel: *numel })
                }
                _ => Err(self.fail("unsupported persistent id (expected a torch storage)")),
            },
            _ => Err(self.fail("unsupported persistent id")),
        }
    }

    fn ints(&self, value: &Value) -> Result<Vec<i64>> {
        match value {
            Value::Tuple(items) | Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    _ => Err(self.fail("tensor sizes must be integers")),
                })
                .collect(),
            _ => Err(self.fail("tensor sizes must be a tuple")),
        }
    }

    fn reduce(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else {
            return Err(self.fail("REDUCE arguments must be a tuple"));
        };
        match callable {
            Value::Global(Global::OrderedDict) => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::RebuildTensor) => match args.as_slice() {
                [Value::Storage { kind, key, numel }, Value::Int(offset), size, stride, ..] => {
                    Ok(Value::Tensor(Box::new(TensorDesc {
                        kind: *kind,
                        key: key.clone(),
                        numel: *numel,
                        offset: *offset,
                        size: self.ints(size)?,
                        stride: self.ints(stride)?,
                    })))
                }
                _ => Err(self.fail("malformed _rebuild_tensor_v2 call")),
            },
            Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
                Some(tensor @ Value::Tensor(_)) => Ok(tensor),
                _ => Err(self.fail("malformed _rebuild_parameter call")),
            },
            Value::Global(Global::StorageType(_)) => Err(self.fail("storage types cannot be called")),
            _ => Err(self.fail("REDUCE on something that is not an allowed callable")),
        }
    }
}

fn element_size(kind: Kind) -> i64 {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Float | Kind::Int => 4,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        _ => 1,
    }
}

/// The tensors of a `torch.save`d state dict, by name. Non-tensor entries are skipped.
pub fn read_torch_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let invalid =
        |message: String| CheckpointError::Invalid { path: path.to_path_buf(), what: "PyTorch checkpoint", message };
    let file = File::open(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        invalid(format!("not a zip archive as torch.save writes ({e}); legacy non-zip checkpoints are not supported"))
    })?;
    let pickle_name = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| invalid("the archive has no data.pkl".to_string()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let pickle = read_entry(&mut archive, &pickle_name, path)?;
    let root = Machine { path, data: &pickle, pos: 0, stack: Vec::new(), memo: HashMap::new() }.run()?;
    let Value::Dict(entries) = root else {
        return Err(invalid("the checkpoint is not a dict of tensors".to_string()));
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::new();
    for (key, value) in entries {
        let (Value::Str(name), Value::Tensor(desc)) = (key, value) else {
            continue;
        };
        let entry_name = format!("{prefix}data/{}", desc.key);
        if !storages.contains_key(&desc.key) {
            let size =
                archive.by_name(&entry_name).map_err(|e| invalid(format!("missing storage {entry_name}: {e}")))?.size();
            let needed = desc.numel.checked_mul(element_size(desc.kind)).filter(|&n| n >= 0).unwrap_or(i64::MAX);
            if size > MAX_ENTRY_BYTES || (size as i64) < needed {
                return Err(invalid(format!(
                    "storage {} holds {size} bytes but the pickle declares {} elements of {:?}",
                    desc.key, desc.numel, desc.kind
                )));
            }
            storages.insert(desc.key.clone(), read_entry(&mut archive, &entry_name, path)?);
        }
        let bytes = &storages[&desc.key];
        let last = desc.size.iter().zip(&desc.stride).map(|(&s, &st)| (s - 1).max(0) * st).sum::<i64>() + desc.offset;
        if desc.size.iter().any(|&s| s < 0) || (desc.size.iter().all(|&s| s > 0) && last >= desc.numel) {
            return Err(invalid(format!("tensor '{name}' reaches outside its storage")));
        }
        let storage = Tensor::f_from_data_size(bytes, &[desc.numel], desc.kind)?;
        let tensor = storage.f_as_strided(&desc.size, &desc.stride, Some(desc.offset))?.contiguous();
        tensors.push((name, tensor));
    }
    Ok(tensors)
}

fn read_entry(archive: &mut zip::ZipArchive<File>, name: &str, path: &Path) -> Result<Vec<u8>> {
    let mut entry = archive.by_name(name).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        what: "PyTorch checkpoint",
        message: format!("missing {name}: {e}"),
    })?;
    if entry.size() > MAX_ENTRY_BYTES {
        return Err(CheckpointError::Invalid {
            path: path.to_path_buf(),
            what: "PyTorch checkpoint",
            message: format!("{name} declares {} bytes", entry.size()),
        });
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).map_err(|source| CheckpointError::Io { path: PathBuf::from(path), source })?;
    Ok(bytes)
}
