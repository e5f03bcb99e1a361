//! Fitting concept erasers from activations and labels, for the `vene_erasure` plugin's `leace` type.
//!
//! LEACE (Belrose et al. 2023) in closed form: with Σ_xx the activations' covariance and Σ_xz their
//! cross-covariance with the one-hot labels, W = (Σ_xx^½)⁺ whitens, P projects onto the column space of W·Σ_xz,
//! and the eraser E = W⁺PW. Erasing x ↦ x − E(x − μ) leaves every class the same mean (no linear probe can do
//! better than chance) while moving x as little as possible in the Mahalanobis sense.

use tch::{Kind, Tensor};

use crate::error::{Result, VeneError};

/// A fitted LEACE eraser: `out = x − (x − mean)·eraserᵀ`.
pub struct Leace {
    pub eraser: Tensor,
    pub mean: Tensor,
}

/// Eigenvalues below this fraction of the largest are treated as zero (a rank-deficient covariance).
const RELATIVE_TOLERANCE: f64 = 1e-10;

/// Fits LEACE on `activations` (N × n) with integer class `labels` (N).
pub fn fit_leace(activations: &Tensor, labels: &Tensor) -> Result<Leace> {
    let size = activations.size();
    if size.len() != 2 || size[0] < 2 {
        return Err(VeneError::Inputs(format!(
            "activations for LEACE must be examples × width with 2 or more examples, got shape {size:?}"
        )));
    }
    if labels.size() != [size[0]] {
        return Err(VeneError::Inputs(format!(
            "LEACE needs one label per example: {} examples, labels of shape {:?}",
            size[0],
            labels.size()
        )));
    }
    let labels = labels.to_kind(Kind::Int64).to_device(tch::Device::Cpu);
    let classes = labels.max().int64_value(&[]) + 1;
    let distinct = labels.unique_dim(0, true, false, false).0.size()[0];
    if labels.min().int64_value(&[]) < 0 || distinct < 2 {
        return Err(VeneError::Inputs(format!(
            "LEACE needs class labels 0, 1, … with at least two classes present; found {distinct} distinct label(s)"
        )));
    }
    let x = activations.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let count = size[0] as f64;
    let mean = x.mean_dim(0, false, Kind::Double);
    let centred = &x - &mean;
    let onehot = labels.one_hot(classes).to_kind(Kind::Double);
    let onehot = &onehot - onehot.mean_dim(0, true, Kind::Double);
    let covariance = centred.tr().matmul(&centred) / count;
    let cross = centred.tr().matmul(&onehot) / count;
    let (values, vectors) = covariance.linalg_eigh("L");
    let keep = values.ge(values.max().double_value(&[]) * RELATIVE_TOLERANCE);
    let root = values.clamp_min(0.0).sqrt();
    let inverse_root = root.reciprocal().where_self(&keep, &values.zeros_like());
    let root = root.where_self(&keep, &values.zeros_like());
    let whiten = (&vectors * inverse_root.unsqueeze(0)).matmul(&vectors.tr());
    let unwhiten = (&vectors * root.unsqueeze(0)).matmul(&vectors.tr());
    // The orthogonal projection onto the column space of A = W·Σ_xz: A (AᵀA)⁺ Aᵀ (A has one column per class).
    let a = whiten.matmul(&cross);
    let projection = a.matmul(&a.tr().matmul(&a).pinverse(RELATIVE_TOLERANCE)).matmul(&a.tr());
    let eraser = unwhiten.matmul(&projection).matmul(&whiten);
    Ok(Leace { eraser: eraser.to_kind(Kind::Float), mean: mean.to_kind(Kind::Float) })
}
