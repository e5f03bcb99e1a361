//! vene's errors as Python exceptions: `vene.VeneError`, a `ValueError` whose message is the CLI's, and panics
//! caught at the boundary (a plugin fault or a libtorch error deep inside stays an exception, never an abort).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::{create_exception, exceptions::PyValueError, PyErr, PyResult, Python};

create_exception!(
    _native,
    VeneError,
    PyValueError,
    "An error vene reports: bad input, a config that does not fit the model, a plugin's failure."
);

/// A vene-host error as a Python exception.
pub fn raise(error: impl std::fmt::Display) -> PyErr {
    VeneError::new_err(error.to_string())
}

/// Runs `body`, turning a panic into a `VeneError` that says what failed (libtorch reports through panics in tch's
/// non-`f_` methods).
pub fn guard<T>(what: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            let first_line = message.lines().next().unwrap_or_default();
            Err(VeneError::new_err(format!("{what} failed: {first_line}")))
        }
    }
}

/// `Result<T, E: Display>` into a Python result.
pub trait OrRaise<T> {
    fn or_raise(self) -> PyResult<T>;
}

impl<T, E: std::fmt::Display> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(raise)
    }
}

/// A value carried into and out of [`released`]'s closure, which runs on this same thread: what is not `Send`
/// (models share their plugin's model through an `Rc`) may cross.
struct SameThread<T>(T);

// SAFETY: `Python::allow_threads` runs its closure on the calling thread, so the value never changes threads.
unsafe impl<T> Send for SameThread<T> {}

impl<T> SameThread<T> {
    /// Takes the value out; a method, so that a closure captures the whole wrapper rather than its field.
    fn into_inner(self) -> T {
        self.0
    }
}

/// Runs `body` (guarded as [`guard`] does) with the GIL released: torch's autograd engine refuses to run a backward
/// pass while the GIL is held, and other Python threads go on meanwhile. `body` must not touch Python objects
/// except through `Python::with_gil`.
pub fn released<T>(py: Python<'_>, what: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let body = SameThread(body);
    let result = py.allow_threads(move || {
        let body = body.into_inner();
        SameThread(guard(what, body))
    });
    result.into_inner()
}
