//! `vene._native`: the PyO3 extension behind the `vene` Python package. A thin layer: it converts Python values
//! (torch tensors shared without copying, JSON text for configs and unit locations) and calls vene-host; the
//! pyvene-shaped API is written in Python on top of it (`python/vene`).

mod attribution;
mod causal;
mod erasure;
mod errors;
mod intervenable;
mod model;
mod plugins;
mod real_studies;
mod studies;
mod tensor;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    tensor::check(py)?;
    module.add("VeneError", py.get_type::<errors::VeneError>())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<model::Model>()?;
    module.add_class::<intervenable::Intervenable>()?;
    module.add_function(wrap_pyfunction!(plugins::plugins, module)?)?;
    module.add_function(wrap_pyfunction!(plugins::builtin_types, module)?)?;
    module.add_function(wrap_pyfunction!(plugins::set_num_threads, module)?)?;
    module.add_function(wrap_pyfunction!(tensor::roundtrip, module)?)?;
    module.add_function(wrap_pyfunction!(erasure::fit_leace, module)?)?;
    module.add_function(wrap_pyfunction!(erasure::fit_inlp, module)?)?;
    module.add_function(wrap_pyfunction!(causal::causal_check, module)?)?;
    module.add_function(wrap_pyfunction!(causal::causal_factual, module)?)?;
    module.add_function(wrap_pyfunction!(causal::causal_counterfactual, module)?)?;
    for study in [
        wrap_pyfunction!(studies::trace, module)?,
        wrap_pyfunction!(studies::trace_facts, module)?,
        wrap_pyfunction!(studies::das_probe, module)?,
        wrap_pyfunction!(studies::interchange_search, module)?,
        wrap_pyfunction!(studies::steer_sentiment, module)?,
        wrap_pyfunction!(studies::path_patch, module)?,
        wrap_pyfunction!(attribution::attribute, module)?,
        wrap_pyfunction!(attribution::circuit, module)?,
        wrap_pyfunction!(real_studies::ocr_steps, module)?,
        wrap_pyfunction!(real_studies::cnn_trace, module)?,
        wrap_pyfunction!(real_studies::image_das, module)?,
        wrap_pyfunction!(real_studies::vad_state, module)?,
    ] {
        module.add_function(study)?;
    }
    Ok(())
}
