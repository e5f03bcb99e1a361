//! The pickle stack machine: containers, numbers, strings and the handful of torch globals that describe tensors.
//! Any other global is refused before anything is built, so nothing in a file is ever executed.

use std::{collections::HashMap, path::Path};

use tch::Kind;

use crate::{CheckpointError, Result};
#[derive(Debug, Clone)]
pub(super) enum Value {
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
pub(super) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    StorageType(Kind),
}

#[derive(Debug, Clone)]
pub(super) struct TensorDesc {
    pub kind: Kind,
    pub key: String,
    pub numel: i64,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
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

/// Runs one pickle from `data[pos..]`; `pos` is left just past its STOP, where a legacy file's next pickle starts.
pub(super) struct Machine<'a> {
    path: &'a Path,
    data: &'a [u8],
    pub pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// The element type of every storage the pickles referenced, by key.
    pub storage_kinds: HashMap<String, Kind>,
}

impl<'a> Machine<'a> {
    pub fn new(path: &'a Path, data: &'a [u8], pos: usize) -> Self {
        Self { path, data, pos, stack: Vec::new(), memo: HashMap::new(), storage_kinds: HashMap::new() }
    }

    pub fn fail(&self, message: impl Into<String>) -> CheckpointError {
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

    /// Runs to the pickle's STOP and returns its value.
    pub fn run(&mut self) -> Result<Value> {
        self.stack.clear();
        self.memo.clear();
        loop {
            let op = self.u8()?;
            if op == b'.' {
                return self.pop();
            }
            if !self.literal(op)? {
                self.structural(op)?;
            }
        }
    }

    /// Opcodes that push one value read from the stream; false for any other opcode.
    fn literal(&mut self, op: u8) -> Result<bool> {
        let value = match op {
            b'}' => Value::Dict(Vec::new()),
            b']' => Value::List(Vec::new()),
            b')' => Value::Tuple(Vec::new()),
            b'(' => Value::Mark,
            b'N' => Value::None,
            0x88 | 0x89 => Value::Scalar,
            b'X' => {
                let len = self.u32()? as usize;
                self.string(len)?
            }
            0x8c => {
                let len = self.u8()? as usize;
                self.string(len)?
            }
            b'C' | b'B' => {
                let len = if op == b'C' { self.u8()? as usize } else { self.u32()? as usize };
                self.take(len)?;
                Value::Scalar
            }
            b'G' => {
                self.take(8)?;
                Value::Scalar
            }
            b'J' => Value::Int(i64::from(self.u32()? as i32)),
            b'K' => Value::Int(i64::from(self.u8()?)),
            b'M' => {
                let bytes = self.take(2)?;
                Value::Int(i64::from(u16::from_le_bytes([bytes[0], bytes[1]])))
            }
            0x8a => {
                let len = self.u8()? as usize;
                if len > 8 {
                    return Err(self.fail("integer wider than 64 bits"));
                }
                let bytes = self.take(len)?;
                let mut buffer = [if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 8];
                buffer[..len].copy_from_slice(bytes);
                Value::Int(i64::from_le_bytes(buffer))
            }
            b'h' | b'j' => {
                let key = if op == b'h' { u32::from(self.u8()?) } else { self.u32()? };
                self.memo.get(&key).cloned().ok_or_else(|| self.fail(format!("memo key {key} is unset")))?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)?
            }
            _ => return Ok(false),
        };
        self.stack.push(value);
        Ok(true)
    }

    /// Opcodes that frame, memoize, or combine what is on the stack.
    fn structural(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                self.u8()?;
            }
            0x95 => {
                self.take(8)?;
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
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(self.fail("STACK_GLOBAL needs two strings"));
                };
                let value = self.global(&module, &name)?;
                self.stack.push(value);
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
            other => return Err(self.fail(format!("unsupported pickle opcode 0x{other:02x}"))),
        }
        Ok(())
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

    fn persistent(&mut self, id: Value) -> Result<Value> {
        match id {
            Value::Tuple(parts) => match parts.as_slice() {
                [Value::Str(tag), Value::Global(Global::StorageType(kind)), Value::Str(key), _location, Value::Int(numel)]
                | [Value::Str(tag), Value::Global(Global::StorageType(kind)), Value::Str(key), _location, Value::Int(numel), Value::None]
                    if tag == "storage" =>
                {
                    self.storage_kinds.insert(key.clone(), *kind);
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
