//! A loaded model's hook-site catalog: which components exist, their shapes and the units they support.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// The shape of the tensor a site hands to the host, which decides what units can be selected in it.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteLayout {
    /// `(batch, seq, dim)`: units `pos`.
    Sequence,
    /// `(batch, heads, seq, head_dim)`: units `h`, `h.pos`.
    Heads,
    /// `(batch, heads, seq, seq)` attention probabilities: units `h`, `h.pos`.
    AttentionWeights,
    /// `(batch, dim)` once per timestep of a recurrent model: unit `t`.
    Recurrent,
    /// `(batch, dim)` with no sequence axis (a pooled vector): unit `feature` selects coordinates, like pyvene's
    /// dim-1 selection on 2-D tensors.
    Flat,
    /// `(batch, channels, height, width)`: units `channel`, `pos` (flattened spatial position).
    FeatureMap,
    /// `(batch, senses, seq, dim)` (Backpack sense vectors): units `sense`, `sense.pos`.
    Senses,
}

impl SiteLayout {
    /// The units a representation on a site of this layout may use.
    pub fn units(self) -> &'static [&'static str] {
        match self {
            SiteLayout::Sequence => &["pos"],
            SiteLayout::Heads | SiteLayout::AttentionWeights => &["h", "h.pos"],
            SiteLayout::Recurrent => &["t"],
            SiteLayout::Flat => &["feature"],
            SiteLayout::FeatureMap => &["channel", "pos"],
            SiteLayout::Senses => &["sense", "sense.pos"],
        }
    }
}

/// One kind of hook site, present once per layer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ComponentInfo {
    /// Catalog name, e.g. `block_output`.
    pub name: RString,
    pub layout: SiteLayout,
    /// Size of the last axis (the per-unit dimension pyvene calls the component dimension).
    pub dim: u32,
    /// How many layers have this site (usually [`ModelCatalog::num_layers`]; 1 for a site such as a CNN's stem).
    pub layers: u32,
    /// The dimension at each layer when it varies (a CNN's channels per stage); empty when `dim` holds everywhere.
    pub layer_dims: RVec<u32>,
    /// The component whose tensor is this site's input, for the `skip` intervention (`block_output` → `block_input`).
    pub skip_input: ROption<RString>,
    /// pyvene module paths naming this site, with `{layer}` for the layer, e.g. `h[{layer}].mlp.output`.
    pub module_paths: RVec<RString>,
}

impl ComponentInfo {
    /// The component dimension at `layer`.
    pub fn dim_at(&self, layer: u32) -> u32 {
        self.layer_dims.get(layer as usize).copied().unwrap_or(self.dim)
    }
}

/// What a model's forward pass takes.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Integer token ids `(batch, seq)`.
    TokenIds,
    /// Float features.
    Features,
}

/// Everything the host needs to validate and route interventions on a loaded model.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ModelCatalog {
    pub model_type: RString,
    pub num_layers: u32,
    pub num_heads: u32,
    pub hidden_size: u32,
    /// Vocabulary size for language models, 0 otherwise.
    pub vocab_size: u32,
    /// The longest sequence (cache included) the model takes; 0 when unbounded.
    pub max_positions: u32,
    pub input: InputKind,
    pub components: RVec<ComponentInfo>,
}

impl ModelCatalog {
    pub fn component_index(&self, name: &str) -> Option<usize> {
        self.components.iter().position(|c| c.name.as_str() == name)
    }

    pub fn component_names(&self) -> Vec<&str> {
        self.components.iter().map(|c| c.name.as_str()).collect()
    }

    /// The largest layer count of any component: hook sites are numbered `layer * components + component`.
    pub fn max_layers(&self) -> u32 {
        self.components.iter().map(|c| c.layers).chain([self.num_layers]).max().unwrap_or(0)
    }
}
