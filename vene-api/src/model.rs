//! Model adapters: loading a model and running its forward pass with hook sites that call back into the host.
//!
//! At every hook site the adapter asks [`Hooks::site`]; when no intervention touches that site this is one flag
//! read, with no tensor operation and no boundary crossing.

use abi_stable::{
    sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use tch::{Device, Kind, Tensor};

use crate::{
    catalog::ModelCatalog,
    error::{PluginError, PluginResult},
    tensor::{NamedTensor, OwnedTensor, TensorRef},
};

#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// Where a model or intervention lives.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub index: u32,
}

impl DeviceSpec {
    pub const CPU: DeviceSpec = DeviceSpec { kind: DeviceKind::Cpu, index: 0 };

    pub fn to_device(self) -> Device {
        match self.kind {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => Device::Cuda(self.index as usize),
        }
    }

    pub fn from_device(device: Device) -> Self {
        match device {
            Device::Cuda(index) => DeviceSpec { kind: DeviceKind::Cuda, index: index as u32 },
            _ => DeviceSpec::CPU,
        }
    }
}

/// Floating-point type of weights and activations.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeSpec {
    F32,
    F16,
    BF16,
    F64,
}

impl DTypeSpec {
    pub fn to_kind(self) -> Kind {
        match self {
            DTypeSpec::F32 => Kind::Float,
            DTypeSpec::F16 => Kind::Half,
            DTypeSpec::BF16 => Kind::BFloat16,
            DTypeSpec::F64 => Kind::Double,
        }
    }
}

/// Which model to load and where to put it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// A directory in Hugging Face layout (config.json + weights).
    pub dir: RStr<'a>,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
}

/// One forward pass's inputs.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ModelInputs<'a> {
    /// `(batch, seq)` int64 token ids, for [`crate::InputKind::TokenIds`] models.
    pub input_ids: ROption<TensorRef<'a>>,
    /// Float inputs, for [`crate::InputKind::Features`] models.
    pub features: ROption<TensorRef<'a>>,
    /// `(batch, past + seq)`, 1 for tokens to attend to.
    pub attention_mask: ROption<TensorRef<'a>>,
    /// Key/value cache returned as `present` by the previous call (empty on the first).
    pub past: RSlice<'a, TensorRef<'a>>,
    /// Return the key/value cache for incremental decoding.
    pub use_cache: bool,
    /// `(batch,)` int64: the one position per example whose output the host reads (the last token's, for a training
    /// loss or a traced probability). An adapter may then compute its output head there only and return
    /// `(batch, 1, …)`; one that ignores it returns every position, and the host handles both.
    pub output_positions: ROption<TensorRef<'a>>,
}

impl<'a> ModelInputs<'a> {
    /// Token ids alone: no mask, no cache.
    pub fn token_ids(input_ids: &'a Tensor) -> Self {
        Self {
            input_ids: ROption::RSome(TensorRef::new(input_ids)),
            features: ROption::RNone,
            attention_mask: ROption::RNone,
            past: RSlice::from_slice(&[]),
            use_cache: false,
            output_positions: ROption::RNone,
        }
    }

    /// Float inputs alone (images, feature sequences): no mask, no cache.
    pub fn features(features: &'a Tensor) -> Self {
        Self {
            input_ids: ROption::RNone,
            features: ROption::RSome(TensorRef::new(features)),
            attention_mask: ROption::RNone,
            past: RSlice::from_slice(&[]),
            use_cache: false,
            output_positions: ROption::RNone,
        }
    }
}

/// Identifies one call of a hook site.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteCall {
    /// Index into [`ModelCatalog::components`].
    pub component: u32,
    pub layer: u32,
    /// Timestep of a recurrent model (0 for models without one).
    pub timestep: u32,
    /// Position of the tensor's first sequence element (past length with a key/value cache).
    pub position_offset: u32,
}

/// The host's side of a hook site, implemented by the host and called by adapters.
#[sabi_trait]
pub trait HookSink {
    /// Sees the site's tensor; returns a replacement, or nothing to leave it unchanged.
    fn visit(&mut self, call: SiteCall, value: TensorRef<'_>) -> RResult<ROption<OwnedTensor>, PluginError>;
}

struct NoSink;

impl HookSink for NoSink {
    fn visit(&mut self, _call: SiteCall, _value: TensorRef<'_>) -> RResult<ROption<OwnedTensor>, PluginError> {
        RResult::ROk(ROption::RNone)
    }
}

/// The hook sites of one forward pass: which are active, and where to send their tensors.
#[repr(C)]
#[derive(StableAbi)]
pub struct Hooks<'a> {
    /// `active[layer * components + component]`.
    active: RSlice<'a, bool>,
    components: u32,
    position_offset: u32,
    sink: HookSink_TO<'a, RBox<()>>,
}

impl<'a> Hooks<'a> {
    /// `active[layer * components + component]` says whether `sink` wants that site.
    pub fn new(active: &'a [bool], components: u32, sink: impl HookSink + 'a) -> Self {
        let sink = HookSink_TO::from_value(sink, TD_Opaque);
        Self { active: active.into(), components, position_offset: 0, sink }
    }

    /// Hooks with no active site.
    pub fn none() -> Self {
        Self::new(&[], 0, NoSink)
    }

    pub fn set_position_offset(&mut self, offset: u32) {
        self.position_offset = offset;
    }

    /// Whether any intervention reads or writes `component` at `layer`.
    #[inline]
    pub fn is_active(&self, component: u32, layer: u32) -> bool {
        let index = (layer * self.components + component) as usize;
        self.active.get(index).copied().unwrap_or(false)
    }

    /// Passes `value` through the site `component` at `layer`.
    #[inline]
    pub fn site(&mut self, component: u32, layer: u32, value: Tensor) -> PluginResult<Tensor> {
        self.site_at(component, layer, 0, value)
    }

    /// Like [`Hooks::site`], for a recurrent model's `timestep`.
    #[inline]
    pub fn site_at(&mut self, component: u32, layer: u32, timestep: u32, value: Tensor) -> PluginResult<Tensor> {
        if !self.is_active(component, layer) {
            return Ok(value);
        }
        let call = SiteCall { component, layer, timestep, position_offset: self.position_offset };
        match self.sink.visit(call, TensorRef::new(&value)) {
            RResult::ROk(ROption::RSome(replacement)) => Ok(replacement.into_tensor()),
            RResult::ROk(ROption::RNone) => Ok(value),
            RResult::RErr(error) => Err(error),
        }
    }
}

/// A model's forward output: the final output (logits for language models) and the key/value cache.
pub struct ModelOutput {
    pub output: Tensor,
    pub present: Vec<Tensor>,
}

/// A loaded model, as its adapter implements it.
///
/// A tensor passed through a hook site may be kept by the host (a getter stores it), so the forward pass must not
/// modify it in place afterwards: use out-of-place operations (`&h + x`, not tch's in-place `h += x`).
pub trait Model: Send + 'static {
    fn catalog(&self) -> ModelCatalog;
    fn forward(&self, inputs: &ModelInputs<'_>, hooks: &mut Hooks<'_>) -> PluginResult<ModelOutput>;

    /// The weights, named as in the checkpoint the model was loaded from (shallow handles that share storage with
    /// the model's own), for training the model itself; empty when the adapter does not offer them.
    fn parameters(&self) -> PluginResult<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
}

/// A model family's loader, as its adapter implements it.
pub trait ModelAdapter: Send + Sync + 'static {
    /// The `model_type` values of config.json this adapter loads.
    fn model_types(&self) -> Vec<String>;
    fn load(&self, request: &LoadRequest<'_>) -> PluginResult<Box<dyn Model>>;
}

/// [`ModelOutput`] across the boundary.
#[repr(C)]
#[derive(StableAbi)]
pub struct ModelOutputAbi {
    pub output: OwnedTensor,
    pub present: RVec<OwnedTensor>,
}

/// A loaded model across the boundary.
#[sabi_trait]
pub trait ModelAbi: Send {
    fn catalog(&self) -> RResult<ModelCatalog, PluginError>;
    fn forward(&self, inputs: ModelInputs<'_>, hooks: Hooks<'_>) -> RResult<ModelOutputAbi, PluginError>;
    fn parameters(&self) -> RResult<RVec<NamedTensor>, PluginError>;
}

/// A model adapter across the boundary.
#[sabi_trait]
pub trait AdapterAbi: Send + Sync {
    fn model_types(&self) -> RResult<RVec<RString>, PluginError>;
    fn load(&self, request: LoadRequest<'_>) -> RResult<ModelAbi_TO<'static, RBox<()>>, PluginError>;
}
