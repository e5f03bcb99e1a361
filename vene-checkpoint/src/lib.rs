//! Reading checkpoints made elsewhere: Hugging Face model directories (`config.json` and weights from
//! `model.safetensors` or sharded `model.safetensors.index.json`, PyTorch zip checkpoints read as data only
//! ([`pickle`])), llama.cpp GGUF files ([`gguf`]), and atomic safetensors writing. Used by model adapters and by
//! the host.
//!
//! Every failure names the file and, where there is one, the weight, so a user can tell a wrong directory from a
//! truncated download.

pub mod gguf;
pub mod pickle;

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::de::DeserializeOwned;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid {what}: {message}")]
    Invalid { path: PathBuf, what: &'static str, message: String },
    #[error(
        "{dir} has no weights: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or \
         pytorch_model.bin.index.json"
    )]
    NoWeights { dir: PathBuf },
    #[error("the checkpoint in {dir} is missing weight '{name}'")]
    MissingWeight { dir: PathBuf, name: String },
    #[error("weight '{name}' in {dir} has shape {actual:?}, expected {expected:?}")]
    WrongShape { dir: PathBuf, name: String, actual: Vec<i64>, expected: Vec<i64> },
    #[error("weight '{name}' in {path} has unsupported dtype {dtype}")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, CheckpointError>;

/// Reads and parses `dir/config.json`.
pub fn read_config<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path,
        what: "model config",
        message: e.to_string(),
    })
}

/// All weights of a checkpoint, loaded onto one device in one dtype (floating-point weights only are cast).
pub struct Weights {
    dir: PathBuf,
    /// By the name the adapter asks for: the name in the file and the tensor.
    tensors: HashMap<String, (String, Tensor)>,
    /// What was taken, by the name in the file (shallow handles), so a model can offer its weights for training.
    taken: Vec<(String, Tensor)>,
}

fn by_name(tensors: HashMap<String, Tensor>) -> HashMap<String, (String, Tensor)> {
    tensors.into_iter().map(|(name, tensor)| (name.clone(), (name, tensor))).collect()
}

impl Weights {
    /// Loads `model.safetensors`, every shard listed in `model.safetensors.index.json`, or (read as data, never
    /// executed) `pytorch_model.bin` and the shards of `pytorch_model.bin.index.json`. Safetensors is preferred.
    pub fn load(dir: &Path, device: Device, float_kind: Kind) -> Result<Self> {
        let candidates = [
            ("model.safetensors.index.json", true, true),
            ("model.safetensors", false, true),
            ("pytorch_model.bin.index.json", true, false),
            ("pytorch_model.bin", false, false),
        ];
        let (name, sharded, safetensors) = candidates
            .into_iter()
            .find(|(name, _, _)| dir.join(name).exists())
            .ok_or_else(|| CheckpointError::NoWeights { dir: dir.to_path_buf() })?;
        let files = if sharded { shard_files(dir, &dir.join(name))? } else { vec![dir.join(name)] };
        let mut tensors = HashMap::new();
        for file in files {
            if safetensors {
                read_safetensors(&file, device, float_kind, &mut tensors)?;
            } else {
                for (name, tensor) in pickle::read_torch_state_dict(&file)? {
                    tensors.insert(name, cast(tensor, device, float_kind));
                }
            }
        }
        Ok(Self { dir: dir.to_path_buf(), tensors: by_name(tensors), taken: Vec::new() })
    }

    /// Weights held in memory (e.g. a freshly initialised model); `dir` is only used in messages.
    pub fn from_tensors(dir: &Path, tensors: HashMap<String, Tensor>) -> Self {
        Self { dir: dir.to_path_buf(), tensors: by_name(tensors), taken: Vec::new() }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes every prefix in `prefixes` from names that start with it (`transformer.h.0` → `h.0`).
    pub fn strip_prefixes(&mut self, prefixes: &[&str]) {
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors
            .into_iter()
            .map(|(name, entry)| {
                let stripped = prefixes.iter().find_map(|p| name.strip_prefix(p)).map(str::to_string);
                (stripped.unwrap_or(name), entry)
            })
            .collect();
    }

    /// Replaces the first matching `from` prefix of each name with its `to` (`language_model.model.` → `model.`).
    pub fn rename_prefixes(&mut self, renames: &[(&str, &str)]) {
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors
            .into_iter()
            .map(|(name, entry)| {
                let renamed =
                    renames.iter().find_map(|(from, to)| name.strip_prefix(from).map(|rest| format!("{to}{rest}")));
                (renamed.unwrap_or(name), entry)
            })
            .collect();
    }

    /// Takes the weight `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let actual = self.tensors.get(name).map(|(_, tensor)| tensor.size());
        if actual.as_ref().is_some_and(|actual| actual != shape) {
            return Err(CheckpointError::WrongShape {
                dir: self.dir.clone(),
                name: name.to_string(),
                actual: actual.unwrap_or_default(),
                expected: shape.to_vec(),
            });
        }
        self.take_any(name)
    }

    /// Takes the weight `name`, whatever its shape.
    pub fn take_any(&mut self, name: &str) -> Result<Tensor> {
        let (file_name, tensor) = self
            .tensors
            .remove(name)
            .ok_or_else(|| CheckpointError::MissingWeight { dir: self.dir.clone(), name: name.to_string() })?;
        self.taken.push((file_name, tensor.shallow_clone()));
        Ok(tensor)
    }

    /// The weights taken so far, by their names in the file: for a model that uses them as they are, its
    /// trainable parameters.
    pub fn taken(&self) -> Vec<(String, Tensor)> {
        self.taken.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect()
    }

    /// Takes `name` if the checkpoint has it.
    pub fn take_optional(&mut self, name: &str, shape: &[i64]) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let text =
        std::fs::read_to_string(index).map_err(|source| CheckpointError::Io { path: index.to_path_buf(), source })?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path: index.to_path_buf(),
        what: "safetensors index",
        message: e.to_string(),
    })?;
    let mut files: Vec<String> = parsed.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    for file in &files {
        if file.contains('/') || file.contains("..") {
            return Err(CheckpointError::Invalid {
                path: index.to_path_buf(),
                what: "safetensors index",
                message: format!("shard name '{file}' leaves the model directory"),
            });
        }
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn read_safetensors(path: &Path, device: Device, float_kind: Kind, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let file = File::open(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    // SAFETY: the map is read-only and dropped before this function returns; tensors are copied out of it.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let parsed = SafeTensors::deserialize(&map).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        what: "safetensors file",
        message: e.to_string(),
    })?;
    for (name, view) in parsed.tensors() {
        let tensor = to_tensor(path, &name, &view)?;
        out.insert(name, cast(tensor, device, float_kind));
    }
    Ok(())
}

/// Floating-point tensors to `float_kind`; everything to `device`.
fn cast(tensor: Tensor, device: Device, float_kind: Kind) -> Tensor {
    let tensor = if tensor.is_floating_point() { tensor.to_kind(float_kind) } else { tensor };
    tensor.to_device(device)
}

fn to_tensor(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}

/// Writes `tensors` as a safetensors file (f32 tensors are written as f32, others as their own dtype), through a
/// temporary file in the same directory and a rename, so an interrupted write never leaves a partial file.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let io_error = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, tensor) in tensors {
        let tensor = tensor.to_device(Device::Cpu).contiguous();
        let (dtype, element) = match tensor.kind() {
            Kind::Float => (Dtype::F32, 4),
            Kind::Double => (Dtype::F64, 8),
            Kind::Half => (Dtype::F16, 2),
            Kind::BFloat16 => (Dtype::BF16, 2),
            Kind::Int64 => (Dtype::I64, 8),
            Kind::Int => (Dtype::I32, 4),
            Kind::Bool => (Dtype::BOOL, 1),
            other => {
                return Err(CheckpointError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let numel = tensor.numel();
        let mut bytes = vec![0u8; numel * element];
        tensor.f_copy_data_u8(&mut bytes, numel)?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.clone(), view)).map_err(|e| {
                CheckpointError::Invalid { path: path.to_path_buf(), what: "tensor", message: e.to_string() }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &None).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        what: "safetensors output",
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes).map_err(io_error)
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
