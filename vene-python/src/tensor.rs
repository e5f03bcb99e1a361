//! Zero-copy conversion between Python `torch.Tensor` objects and tch tensors.
//!
//! One libtorch serves the process (the one `import torch` loaded), so a tensor crosses by sharing its
//! `at::TensorImpl`: Python to Rust takes a new reference to the `at::Tensor` a `THPVariable` holds right after its
//! object header; Rust to Python calls torch's exported `THPVariable_Wrap`, which hands back the tensor's existing
//! Python object when it has one. The struct layout and the mangled name are facts of torch 2.13.0; [`check`] proves
//! them on a real tensor when the module is imported, so a mismatched torch is refused instead of misread.

use std::ffi::c_void;

use pyo3::{exceptions::PyTypeError, ffi, prelude::*};
use tch::Tensor;

extern "C" {
    /// `torch.Tensor`, set when torch's Python module initialises.
    static THPVariableClass: *mut ffi::PyObject;
    /// `PyObject* THPVariable_Wrap(const at::TensorBase&)`: a new reference.
    #[link_name = "_Z16THPVariable_WrapRKN2at10TensorBaseE"]
    fn thp_variable_wrap(tensor: *const c_void) -> *mut ffi::PyObject;
}

fn tensor_class() -> PyResult<*mut ffi::PyObject> {
    // SAFETY: a plain read of a pointer-sized global that torch sets once at import.
    let class = unsafe { THPVariableClass };
    if class.is_null() {
        return Err(PyTypeError::new_err("torch is not initialised: `import torch` before `import vene._native`"));
    }
    Ok(class)
}

/// Whether `object` is a `torch.Tensor` (or a subclass, such as `nn.Parameter`).
pub fn is_tensor(object: &Bound<'_, PyAny>) -> PyResult<bool> {
    let class = tensor_class()?;
    // SAFETY: both pointers are live Python objects while the GIL is held.
    match unsafe { ffi::PyObject_IsInstance(object.as_ptr(), class) } {
        -1 => Err(PyErr::fetch(object.py())),
        found => Ok(found == 1),
    }
}

/// The tensor `object` holds, sharing its storage (and autograd identity).
pub fn from_py(object: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    if !is_tensor(object)? {
        let type_name = object.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_string());
        return Err(PyTypeError::new_err(format!("{what} must be a torch.Tensor, got {type_name}")));
    }
    // SAFETY: `object` is a THPVariable, whose `at::Tensor cdata` follows the object header; cloning it takes a new
    // reference to the same TensorImpl.
    unsafe {
        let cdata = (object.as_ptr() as *mut u8).add(std::mem::size_of::<ffi::PyObject>());
        Ok(Tensor::clone_from_ptr(cdata as *mut torch_sys::C_tensor))
    }
}

/// `tensor` as a Python `torch.Tensor` (the same object if Python made it).
pub fn to_py(py: Python<'_>, tensor: Tensor) -> PyResult<Bound<'_, PyAny>> {
    tensor_class()?;
    // SAFETY: `tensor` is a defined tensor of the libtorch torch loaded; Wrap copies the reference it needs.
    let object = unsafe { thp_variable_wrap(tensor.as_ptr() as *const c_void) };
    drop(tensor);
    if object.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: Wrap returned a new, owned reference.
    Ok(unsafe { Bound::from_owned_ptr(py, object) })
}

/// An optional tensor argument.
pub fn optional(object: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Tensor>> {
    match object {
        Some(object) if !object.is_none() => from_py(object, what).map(Some),
        _ => Ok(None),
    }
}

/// Proves the layout assumptions on one tensor: unpacking sees its data pointer and shape, and wrapping gives the
/// very object back.
pub fn check(py: Python<'_>) -> PyResult<()> {
    let torch = py.import("torch")?;
    let probe = torch.call_method1("arange", (6,))?.call_method1("view", (2, 3))?;
    let tensor = from_py(&probe, "the probe")?;
    let data_ptr: usize = probe.call_method0("data_ptr")?.extract()?;
    let version: String = torch.getattr("__version__")?.extract()?;
    if tensor.size() != [2, 3] || tensor.data_ptr() as usize != data_ptr {
        return Err(pyo3::exceptions::PyImportError::new_err(format!(
            "vene was built for torch 2.13.0's tensor layout, but torch {version} is loaded: install torch==2.13.0"
        )));
    }
    let back = to_py(py, tensor)?;
    if !back.is(&probe) {
        return Err(pyo3::exceptions::PyImportError::new_err(format!(
            "torch {version}'s THPVariable_Wrap did not return the original tensor: install torch==2.13.0"
        )));
    }
    Ok(())
}

/// `tensor` taken into vene and handed back, with the data pointer vene saw: a check that nothing is copied.
#[pyfunction]
pub fn roundtrip<'py>(tensor: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, usize)> {
    let inside = from_py(tensor, "the tensor")?;
    let data_ptr = inside.data_ptr() as usize;
    Ok((to_py(tensor.py(), inside)?, data_ptr))
}
