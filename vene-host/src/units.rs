//! Gathering the selected units of a site's tensor and scattering intervened values back (pyvene's
//! `gather_neurons` / `scatter_neurons`), out of place so gradients flow through both.

use tch::{Device, Kind, Tensor};
use vene_api::SiteLayout;

use crate::{
    error::{Result, VeneError},
    locations::UnitLocs,
};

/// How a unit selects in a site's tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKind {
    /// Along these axes, outermost level first (`h.pos` on `(b, h, s, d)` → heads on 1, then positions on 2).
    Axes(Vec<i64>),
    /// Flattened spatial positions of a `(b, c, h, w)` feature map; selected units are `(b, units, c)`.
    Spatial,
    /// Timesteps of a recurrent site: the locations say at which calls of the site to act.
    Timestep,
}

impl UnitKind {
    /// How many location levels the unit takes (`h.pos` takes two).
    pub fn levels(&self) -> usize {
        match self {
            UnitKind::Axes(axes) => axes.len().max(1),
            UnitKind::Spatial | UnitKind::Timestep => 1,
        }
    }
}

/// What `unit` means on a site of `layout`, or `None` when the site does not support it.
pub fn unit_kind(layout: SiteLayout, unit: &str) -> Option<UnitKind> {
    let axes = match (layout, unit) {
        (SiteLayout::Sequence, "pos") => vec![1],
        (SiteLayout::Heads | SiteLayout::AttentionWeights, "h") => vec![1],
        (SiteLayout::Heads | SiteLayout::AttentionWeights, "h.pos") => vec![1, 2],
        (SiteLayout::Senses, "sense") => vec![1],
        (SiteLayout::Senses, "sense.pos") => vec![1, 2],
        (SiteLayout::FeatureMap, "channel") => vec![1],
        (SiteLayout::Flat, "feature") => vec![1],
        (SiteLayout::FeatureMap, "pos") => return Some(UnitKind::Spatial),
        (SiteLayout::Recurrent, "t") => return Some(UnitKind::Timestep),
        _ => return None,
    };
    Some(UnitKind::Axes(axes))
}

/// Unit locations of one side, ready to index: one `(batch, units)` int64 tensor per level.
pub struct Indexer {
    axes: Vec<i64>,
    spatial: bool,
    indices: Vec<Tensor>,
    /// Largest location per level, for the range check.
    max: Vec<i64>,
}

/// `(b, c, h, w)` → `(b, h·w, c)`, so spatial positions are the unit axis.
fn positions_major(tensor: &Tensor) -> Tensor {
    let size = tensor.size();
    tensor.reshape([size[0], size[1], -1]).permute([0, 2, 1])
}

impl Indexer {
    pub fn new(kind: &UnitKind, locations: &UnitLocs, device: Device) -> Result<Self> {
        let (axes, spatial) = match kind {
            UnitKind::Axes(axes) => (axes.clone(), false),
            UnitKind::Spatial => (vec![1], true),
            UnitKind::Timestep => {
                return Err(VeneError::Locations("timestep locations do not index a tensor".to_string()))
            }
        };
        let levels = locations.levels();
        if levels.len() != axes.len() {
            return Err(VeneError::Locations(format!(
                "{} location levels given for a unit with {} levels",
                levels.len(),
                axes.len()
            )));
        }
        let mut indices = Vec::new();
        let mut max = Vec::new();
        for level in levels {
            let flat: Vec<i64> = level.iter().flatten().copied().collect();
            let units = level.first().map_or(0, Vec::len) as i64;
            indices.push(Tensor::from_slice(&flat).view([level.len() as i64, units]).to_device(device));
            max.push(flat.iter().copied().max().unwrap_or(0));
        }
        Ok(Self { axes, spatial, indices, max })
    }

    /// Fails with a message naming `what` when a location is outside `tensor`.
    pub fn check(&self, tensor: &Tensor, what: &str) -> Result<()> {
        let size = if self.spatial { positions_major(tensor).size() } else { tensor.size() };
        for ((&axis, &max), index) in self.axes.iter().zip(&self.max).zip(&self.indices) {
            let extent = size.get(axis as usize).copied().unwrap_or(0);
            if max >= extent {
                let unit = match (self.spatial, axis, size.len()) {
                    (true, _, _) => "spatial positions",
                    (false, 1, 3) => "sequence length",
                    _ => "axis size",
                };
                return Err(VeneError::Locations(format!(
                    "{what}: unit location {max} is out of range ({unit} {extent} on axis {axis} of shape {size:?})"
                )));
            }
            if index.size()[0] != size[0] {
                return Err(VeneError::Locations(format!(
                    "{what}: locations are given for {} examples, the batch has {}",
                    index.size()[0],
                    size[0]
                )));
            }
        }
        Ok(())
    }

    /// Examples the locations are given for.
    pub fn examples(&self) -> i64 {
        self.indices.first().map_or(0, |index| index.size()[0])
    }

    pub fn gather(&self, tensor: &Tensor) -> Tensor {
        let source = if self.spatial { positions_major(tensor) } else { tensor.shallow_clone() };
        self.axes.iter().zip(&self.indices).fold(source, |acc, (&axis, index)| gather_axis(&acc, axis, index))
    }

    /// `tensor` with the selected units replaced by `values` (shaped as [`Indexer::gather`] returns).
    pub fn scatter(&self, tensor: &Tensor, values: &Tensor) -> Tensor {
        if self.spatial {
            let written = scatter_levels(&positions_major(tensor), &self.axes, &self.indices, values);
            return written.permute([0, 2, 1]).reshape(tensor.size().as_slice());
        }
        scatter_levels(tensor, &self.axes, &self.indices, values)
    }
}

/// `index` `(batch, units)` viewed and expanded to index `tensor` along `axis`.
fn expand_index(tensor: &Tensor, axis: i64, index: &Tensor) -> Tensor {
    let mut view = vec![1i64; tensor.dim()];
    view[0] = index.size()[0];
    view[axis as usize] = index.size()[1];
    let mut target = tensor.size();
    target[axis as usize] = index.size()[1];
    index.view(view.as_slice()).expand(target.as_slice(), false)
}

fn gather_axis(tensor: &Tensor, axis: i64, index: &Tensor) -> Tensor {
    tensor.gather(axis, &expand_index(tensor, axis, index), false)
}

fn scatter_levels(tensor: &Tensor, axes: &[i64], indices: &[Tensor], values: &Tensor) -> Tensor {
    match (axes, indices) {
        ([axis], [index]) => tensor.scatter(*axis, &expand_index(tensor, *axis, index), values),
        ([axis, inner_axes @ ..], [index, inner_indices @ ..]) => {
            let slab = gather_axis(tensor, *axis, index);
            let slab = scatter_levels(&slab, inner_axes, inner_indices, values);
            tensor.scatter(*axis, &expand_index(tensor, *axis, index), &slab)
        }
        _ => values.shallow_clone(),
    }
}

/// pyvene's flattening for distributed interventions: `(b, u, d)` → `(b, u·d)`; `(b, u_h, u_s, d)` → `(b, u_s, u_h·d)`.
pub fn flatten_units(tensor: &Tensor) -> Tensor {
    let size = tensor.size();
    match size.as_slice() {
        [b, u, d] => tensor.reshape([*b, u * d]),
        [b, h, s, d] => tensor.permute([0, 2, 1, 3]).reshape([*b, *s, h * d]),
        _ => tensor.shallow_clone(),
    }
}

/// Inverse of [`flatten_units`] for a tensor gathered with shape `like`.
pub fn unflatten_units(tensor: &Tensor, like: &[i64]) -> Tensor {
    match like {
        [_, _, _] => tensor.reshape(like),
        [b, h, s, d] => tensor.reshape([*b, *s, *h, *d]).permute([0, 2, 1, 3]),
        _ => tensor.shallow_clone(),
    }
}

/// A float tensor holding `values`, shaped to broadcast over the last axis.
pub fn constant_vector(values: &[f32], kind: Kind, device: Device) -> Tensor {
    Tensor::from_slice(values).to_kind(kind).to_device(device)
}
