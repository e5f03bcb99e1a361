//! Fitting concept erasers (LEACE, INLP) from Python tensors (`vene_host::erasure`).

use pyo3::prelude::*;

use crate::{
    errors::{released, OrRaise},
    tensor,
};

/// LEACE fitted on `activations` (N × n) and integer `labels` (N): `(eraser, mean)`.
#[pyfunction]
pub fn fit_leace<'py>(
    py: Python<'py>,
    activations: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let activations = tensor::from_py(activations, "activations")?;
    let labels = tensor::from_py(labels, "labels")?;
    let fitted = released(py, "fitting LEACE", || vene_host::erasure::fit_leace(&activations, &labels).or_raise())?;
    Ok((tensor::to_py(py, fitted.eraser)?, tensor::to_py(py, fitted.mean)?))
}

/// INLP fitted on `activations` (N × n) and integer `labels` (N) over `iterations`: `(directions, accuracies)`.
#[pyfunction]
pub fn fit_inlp<'py>(
    py: Python<'py>,
    activations: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    iterations: usize,
) -> PyResult<(Bound<'py, PyAny>, Vec<f64>)> {
    let activations = tensor::from_py(activations, "activations")?;
    let labels = tensor::from_py(labels, "labels")?;
    let fitted =
        released(py, "fitting INLP", || vene_host::erasure::fit_inlp(&activations, &labels, iterations).or_raise())?;
    Ok((tensor::to_py(py, fitted.directions)?, fitted.accuracies))
}
