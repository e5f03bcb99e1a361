//! Fitting concept erasers from activations and labels, for the `vene_erasure` plugin's `leace` and
//! `nullspace_projection` types.
//!
//! LEACE (Belrose et al. 2023) in closed form: with Σ_xx the activations' covariance and Σ_xz their
//! cross-covariance with the one-hot labels, W = (Σ_xx^½)⁺ whitens, P projects onto the column space of W·Σ_xz,
//! and the eraser E = W⁺PW. Erasing x ↦ x − E(x − μ) leaves every class the same mean (no linear probe can do
//! better than chance) while moving x as little as possible in the Mahalanobis sense.

use tch::{Kind, Tensor};

use crate::error::{Result, VeneError};

/// Checks activations (N × n, N ≥ 2) and one integer class label each (0, 1, …, two classes or more present);
/// returns the labels as CPU int64 and the number of classes.
fn checked_labels(activations: &Tensor, labels: &Tensor, method: &str) -> Result<(Tensor, i64)> {
    let size = activations.size();
    if size.len() != 2 || size[0] < 2 {
        return Err(VeneError::Inputs(format!(
            "activations for {method} must be examples × width with 2 or more examples, got shape {size:?}"
        )));
    }
    if labels.size() != [size[0]] {
        return Err(VeneError::Inputs(format!(
            "{method} needs one label per example: {} examples, labels of shape {:?}",
            size[0],
            labels.size()
        )));
    }
    let labels = labels.to_kind(Kind::Int64).to_device(tch::Device::Cpu);
    let distinct = labels.unique_dim(0, true, false, false).0.size()[0];
    if labels.min().int64_value(&[]) < 0 || distinct < 2 {
        return Err(VeneError::Inputs(format!(
            "{method} needs class labels 0, 1, … with at least two classes present; found {distinct} distinct label(s)"
        )));
    }
    let classes = labels.max().int64_value(&[]) + 1;
    Ok((labels, classes))
}

/// A fitted LEACE eraser: `out = x − (x − mean)·eraserᵀ`.
pub struct Leace {
    pub eraser: Tensor,
    pub mean: Tensor,
}

/// Eigenvalues below this fraction of the largest are treated as zero (a rank-deficient covariance).
const RELATIVE_TOLERANCE: f64 = 1e-10;

/// Fits LEACE on `activations` (N × n) with integer class `labels` (N).
pub fn fit_leace(activations: &Tensor, labels: &Tensor) -> Result<Leace> {
    let (labels, classes) = checked_labels(activations, labels, "LEACE")?;
    let size = activations.size();
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

/// Fitted INLP directions (Ravfogel et al. 2020): orthonormal rows whose span the `nullspace_projection` type
/// removes, and the held-out accuracy of the linear probe trained at each iteration (before its directions went).
pub struct Inlp {
    pub directions: Tensor,
    pub accuracies: Vec<f64>,
}

/// Iterated nullspace projection: `iterations` times, a multinomial logistic probe is trained on the activations
/// with the directions found so far projected out, and its weight directions (class differences) join them. Every
/// fifth example is held out to measure each probe (the probes start from zero, so the fit is deterministic).
pub fn fit_inlp(activations: &Tensor, labels: &Tensor, iterations: usize) -> Result<Inlp> {
    let (labels, classes) = checked_labels(activations, labels, "INLP")?;
    if iterations == 0 {
        return Err(VeneError::Inputs("INLP needs at least one iteration".to_string()));
    }
    let x = activations.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let x = &x - x.mean_dim(0, true, Kind::Float);
    // One scale for every dimension keeps the probe's directions those of the activations' space.
    let x = &x / (x.std(true).double_value(&[]) + 1e-6);
    let count = x.size()[0];
    let held_out: Vec<i64> = (0..count).filter(|i| i % 5 == 4).collect();
    let trained: Vec<i64> = (0..count).filter(|i| i % 5 != 4).collect();
    let (held_out, trained) = (Tensor::from_slice(&held_out), Tensor::from_slice(&trained));
    let width = x.size()[1];
    let mut basis: Option<Tensor> = None;
    let mut accuracies = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let projected = match &basis {
            Some(q) => &x - x.matmul(&q.tr()).matmul(q),
            None => x.shallow_clone(),
        };
        let weights = train_probe(&projected.index_select(0, &trained), &labels.index_select(0, &trained), classes)?;
        let _no_grad = tch::no_grad_guard();
        let predicted = projected.index_select(0, &held_out).matmul(&weights.tr()).argmax(-1, false);
        let right = predicted.eq_tensor(&labels.index_select(0, &held_out)).to_kind(Kind::Float);
        accuracies.push(right.mean(Kind::Float).double_value(&[]));
        // Class differences span what the probe separates (one direction for two classes).
        let differences = weights.narrow(0, 1, classes - 1) - weights.narrow(0, 0, 1);
        let stacked = match &basis {
            Some(q) => Tensor::cat(&[q.shallow_clone(), differences], 0),
            None => differences,
        };
        let (q, _) = Tensor::linalg_qr(&stacked.to_kind(Kind::Double).tr(), "reduced");
        basis = Some(q.tr().to_kind(Kind::Float).narrow(0, 0, stacked.size()[0].min(width)));
    }
    let directions = basis.unwrap_or_else(|| Tensor::zeros([0, width], (Kind::Float, tch::Device::Cpu)));
    Ok(Inlp { directions, accuracies })
}

/// A multinomial logistic probe without bias on centred activations: `classes × width` weights.
fn train_probe(x: &Tensor, labels: &Tensor, classes: i64) -> Result<Tensor> {
    // Trained with gradients on even when the caller measures under `no_grad`.
    tch::with_grad(|| {
        let weights = Tensor::zeros([classes, x.size()[1]], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut optimizer = tch::COptimizer::adam(0.05, 0.9, 0.999, 0.0, 1e-8, false)?;
        optimizer.add_parameters(&weights, 0)?;
        for _ in 0..300 {
            optimizer.zero_grad()?;
            x.matmul(&weights.tr()).cross_entropy_for_logits(labels).f_backward()?;
            optimizer.step()?;
        }
        Ok(weights.detach())
    })
}

/// The held-out accuracy of a multinomial logistic probe trained on `train` (activations, labels) and tested on
/// `test`, both centred and scaled by the training activations' mean and spread (a constant feature gives it a bias,
/// so unbalanced classes are fitted too).
pub fn probe_accuracy(train: (&Tensor, &Tensor), test: (&Tensor, &Tensor), classes: i64) -> Result<f64> {
    let x = train.0.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu);
    let mean = x.mean_dim(0, true, Kind::Float);
    let scale = (&x - &mean).std(true).double_value(&[]) + 1e-6;
    let with_bias = |x: Tensor| Tensor::cat(&[x.ones_like().narrow(1, 0, 1), x], 1);
    let labels = train.1.to_kind(Kind::Int64).to_device(tch::Device::Cpu);
    let weights = train_probe(&with_bias((&x - &mean) / scale), &labels, classes)?;
    let _no_grad = tch::no_grad_guard();
    let test_x = with_bias((test.0.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu) - &mean) / scale);
    let predicted = test_x.matmul(&weights.tr()).argmax(-1, false);
    let right = predicted.eq_tensor(&test.1.to_kind(Kind::Int64).to_device(tch::Device::Cpu)).to_kind(Kind::Float);
    Ok(right.mean(Kind::Float).double_value(&[]))
}
