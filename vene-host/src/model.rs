//! A model loaded through an adapter plugin, and the inputs of one forward pass.

use std::{
    path::{Path, PathBuf},
    rc::Rc,
};

use abi_stable::std_types::{RBox, RSlice, RStr};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};
use vene_api::{
    model::ModelAbi_TO, DTypeSpec, DeviceSpec, Hooks, LoadRequest, ModelCatalog, ModelInputs, PluginError, TensorRef,
};

use crate::{
    error::{Result, VeneError},
    plugins::PluginSet,
};

/// The inputs of one forward pass, as host tensors.
#[derive(Debug)]
pub struct ForwardInputs {
    pub input_ids: Option<Tensor>,
    pub features: Option<Tensor>,
    pub attention_mask: Option<Tensor>,
    pub past: Vec<Tensor>,
    pub use_cache: bool,
    /// `(batch,)`: the one position per example whose output will be read; the adapter may compute its output head
    /// there only (see [`vene_api::ModelInputs::output_positions`]).
    pub output_positions: Option<Tensor>,
}

impl ForwardInputs {
    pub fn from_ids(input_ids: Tensor) -> Self {
        Self {
            input_ids: Some(input_ids),
            features: None,
            attention_mask: None,
            past: Vec::new(),
            use_cache: false,
            output_positions: None,
        }
    }

    /// Float inputs (images, feature sequences) alone.
    pub fn from_features(features: Tensor) -> Self {
        Self {
            input_ids: None,
            features: Some(features),
            attention_mask: None,
            past: Vec::new(),
            use_cache: false,
            output_positions: None,
        }
    }

    /// These inputs with only the last position's output computed (or each example's last unpadded one).
    pub fn reading_last_position(mut self) -> Self {
        let last = match (&self.attention_mask, &self.input_ids) {
            (Some(mask), _) => Some(mask.sum_dim_intlist(-1, false, tch::Kind::Int64) - 1),
            (None, Some(ids)) => {
                let (batch, seq) = (ids.size()[0], ids.size()[1]);
                Some(Tensor::full([batch], seq - 1, (tch::Kind::Int64, ids.device())))
            }
            (None, None) => None,
        };
        self.output_positions = last;
        self
    }

    /// Another handle on the same tensors.
    pub fn shallow_clone(&self) -> Self {
        let share = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        Self {
            input_ids: share(&self.input_ids),
            features: share(&self.features),
            attention_mask: share(&self.attention_mask),
            past: self.past.iter().map(Tensor::shallow_clone).collect(),
            use_cache: self.use_cache,
            output_positions: share(&self.output_positions),
        }
    }

    /// The batch `times` times over, copy after copy (no key/value cache).
    pub fn repeat(&self, times: i64) -> Self {
        let along_batch = |t: &Option<Tensor>| {
            t.as_ref().map(|t| {
                let mut shape = vec![1; t.dim()];
                shape[0] = times;
                t.repeat(&shape)
            })
        };
        Self {
            input_ids: along_batch(&self.input_ids),
            features: along_batch(&self.features),
            attention_mask: along_batch(&self.attention_mask),
            past: Vec::new(),
            use_cache: false,
            output_positions: along_batch(&self.output_positions),
        }
    }

    pub fn batch_size(&self) -> i64 {
        self.input_ids.as_ref().or(self.features.as_ref()).map_or(0, |t| t.size().first().copied().unwrap_or(0))
    }

    pub fn to_device(&self, device: Device) -> Self {
        let move_to = |t: &Option<Tensor>| t.as_ref().map(|t| t.to_device(device));
        Self {
            input_ids: move_to(&self.input_ids),
            features: move_to(&self.features),
            attention_mask: move_to(&self.attention_mask),
            past: self.past.iter().map(|t| t.to_device(device)).collect(),
            use_cache: self.use_cache,
            output_positions: move_to(&self.output_positions),
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> Result<DeviceSpec> {
    match text {
        "cpu" => Ok(DeviceSpec::CPU),
        "cuda" => Ok(DeviceSpec { kind: vene_api::model::DeviceKind::Cuda, index: 0 }),
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(index) => Ok(DeviceSpec { kind: vene_api::model::DeviceKind::Cuda, index }),
            None => Err(VeneError::Inputs(format!("unknown device '{other}': use cpu, cuda or cuda:N"))),
        },
    }
}

/// `f32`, `f16`, `bf16` or `f64` (or their `float32`-style names).
pub fn parse_dtype(text: &str) -> Result<DTypeSpec> {
    Ok(match text {
        "f32" | "float32" => DTypeSpec::F32,
        "f16" | "float16" => DTypeSpec::F16,
        "bf16" | "bfloat16" => DTypeSpec::BF16,
        "f64" | "float64" => DTypeSpec::F64,
        other => return Err(VeneError::Inputs(format!("unknown dtype '{other}': use f32, f16, bf16 or f64"))),
    })
}

/// Refuses a CUDA device that this libtorch cannot reach, before any weights move (libtorch would fail deep inside
/// the adapter).
fn check_device(device: DeviceSpec) -> Result<()> {
    if device.kind != vene_api::model::DeviceKind::Cuda {
        return Ok(());
    }
    let available = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
    if i64::from(device.index) >= available {
        return Err(VeneError::Inputs(format!(
            "device cuda:{} was asked for, but this libtorch sees {available} CUDA device(s){}",
            device.index,
            if available == 0 {
                " (a CPU-only build, or no GPU): use --device cpu".to_string()
            } else {
                format!(": use cuda:0 to cuda:{}", available - 1)
            }
        )));
    }
    Ok(())
}

/// A forward pass's results.
pub struct ForwardOutput {
    pub output: Tensor,
    pub present: Vec<Tensor>,
}

/// A model held by an adapter plugin. Clones share the plugin's model (its weights are loaded once): several
/// intervenable models, or a study and the caller, can use one model.
#[derive(Clone)]
pub struct LoadedModel {
    inner: Rc<ModelAbi_TO<'static, RBox<()>>>,
    catalog: ModelCatalog,
    dir: PathBuf,
    plugin: PathBuf,
    device: Device,
    kind: Kind,
}

#[derive(Deserialize)]
struct ModelKind {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
}

/// A GGUF file stands for itself; so does a directory with a config.json. A directory with no config.json and
/// exactly one `.gguf` file stands for that file; one with several is refused, naming them.
fn model_location(path: &Path) -> Result<PathBuf> {
    if path.is_dir() && !path.join("config.json").exists() {
        let files = vene_checkpoint::gguf::files_in_dir(path);
        match files.as_slice() {
            [file] => return Ok(file.clone()),
            [] => {}
            several => {
                let names: Vec<String> =
                    several.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
                return Err(VeneError::Inputs(format!(
                    "{} holds {} GGUF files ({}) and no config.json: give the file to load, e.g. {}",
                    path.display(),
                    several.len(),
                    names.join(", "),
                    several[0].display()
                )));
            }
        }
    }
    Ok(path.to_path_buf())
}

/// The model type (and architectures) of a Hugging Face directory or a GGUF file.
fn model_kind(path: &Path) -> Result<ModelKind> {
    if !vene_checkpoint::gguf::is_gguf(path) {
        return Ok(vene_checkpoint::read_config(path)?);
    }
    let file = vene_checkpoint::gguf::GgufFile::open(path)?;
    let model_type = vene_checkpoint::gguf::model_type(&file)?;
    Ok(ModelKind { model_type: Some(model_type.to_string()), architectures: Vec::new() })
}

impl LoadedModel {
    /// Loads the model at `path`: a Hugging Face directory, with the adapter that provides one of its
    /// `architectures` or else its `model_type`; a GGUF file (or a directory holding one and no config.json), with
    /// the adapter of the `model_type` its architecture stands for.
    pub fn load(plugins: &PluginSet, path: &Path, device: DeviceSpec, dtype: DTypeSpec) -> Result<Self> {
        crate::runtime::check_loaded_libtorch()?;
        check_device(device)?;
        let dir = model_location(path)?;
        let config = model_kind(&dir)?;
        let model_type = config
            .model_type
            .ok_or_else(|| VeneError::Config(format!("{} has no \"model_type\"", dir.join("config.json").display())))?;
        // An adapter may claim an architecture (`BackpackGPT2LMHeadModel`) whose config reuses another model_type.
        let claimed = config.architectures.iter().find_map(|a| plugins.adapter(a));
        let (adapter, plugin) = claimed.or_else(|| plugins.adapter(&model_type)).ok_or_else(|| {
            let known = plugins.model_types();
            VeneError::Config(format!(
                "no loaded plugin provides model type '{model_type}' (loaded: {}); add its plugin with --plugin-dir",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })?;
        let dir = dir.as_path();
        let dir_text = dir.to_string_lossy();
        let request = LoadRequest { dir: RStr::from(dir_text.as_ref()), device, dtype };
        let inner = adapter
            .load(request)
            .into_result()
            .map_err(|error| VeneError::Model { context: format!("loading {}", dir.display()), error })?;
        let catalog = inner
            .catalog()
            .into_result()
            .map_err(|error| VeneError::Model { context: "reading the model's catalog".to_string(), error })?;
        Ok(Self {
            inner: Rc::new(inner),
            catalog,
            dir: dir.to_path_buf(),
            plugin: plugin.to_path_buf(),
            device: device.to_device(),
            kind: dtype.to_kind(),
        })
    }

    pub fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }

    /// Where the model was loaded from: its directory, or its GGUF file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn plugin_path(&self) -> &Path {
        &self.plugin
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// One forward pass; `hooks` decides which sites call back.
    pub fn forward(&self, inputs: &ForwardInputs, hooks: Hooks<'_>) -> std::result::Result<ForwardOutput, PluginError> {
        let past: Vec<TensorRef<'_>> = inputs.past.iter().map(TensorRef::new).collect();
        let abi_inputs = ModelInputs {
            input_ids: inputs.input_ids.as_ref().map(TensorRef::new).into(),
            features: inputs.features.as_ref().map(TensorRef::new).into(),
            attention_mask: inputs.attention_mask.as_ref().map(TensorRef::new).into(),
            past: RSlice::from_slice(&past),
            use_cache: inputs.use_cache,
            output_positions: inputs.output_positions.as_ref().map(TensorRef::new).into(),
        };
        let output = self.inner.forward(abi_inputs, hooks).into_result()?;
        Ok(ForwardOutput {
            output: output.output.into_tensor(),
            present: output.present.into_iter().map(|t| t.into_tensor()).collect(),
        })
    }

    /// The model's own weights by their checkpoint names (sharing storage with the model), for training it; an error
    /// names the model type when its adapter does not offer them.
    pub fn parameters(&self) -> Result<Vec<(String, Tensor)>> {
        let named = self
            .inner
            .parameters()
            .into_result()
            .map_err(|error| VeneError::Model { context: "reading the model's weights".to_string(), error })?;
        if named.is_empty() {
            return Err(VeneError::Config(format!(
                "the {} adapter does not offer its weights for training (the mlp and gru adapters do)",
                self.catalog.model_type
            )));
        }
        Ok(named.into_iter().map(vene_api::tensor::NamedTensor::into_pair).collect())
    }

    /// A plain forward pass with no hook site active.
    pub fn forward_plain(&self, inputs: &ForwardInputs) -> Result<ForwardOutput> {
        self.forward(inputs, Hooks::none())
            .map_err(|error| VeneError::Model { context: "forward pass".to_string(), error })
    }
}
