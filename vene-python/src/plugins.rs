//! What is loaded: plugins with their versions and types, the built-in intervention types, libtorch's threads.

use std::path::PathBuf;

use pyo3::{prelude::*, types::PyDict};

use crate::model::plugin_set;

/// The plugins found in `plugin_dirs`: one dict per library (path, versions, model and intervention types), plus
/// the libraries that were skipped and why.
#[pyfunction]
pub fn plugins(py: Python<'_>, plugin_dirs: Vec<PathBuf>) -> PyResult<(Vec<Bound<'_, PyDict>>, Vec<String>)> {
    let set = plugin_set(plugin_dirs)?;
    let loaded = set
        .plugins()
        .iter()
        .map(|info| {
            let dict = PyDict::new(py);
            dict.set_item("path", info.path.display().to_string())?;
            let build = &info.build;
            dict.set_item("name", build.plugin_name.as_str())?;
            dict.set_item("version", build.plugin_version.as_str())?;
            dict.set_item("vene_api", build.vene_api.as_str())?;
            dict.set_item("libtorch", build.libtorch.as_str())?;
            dict.set_item("model_types", info.model_types.clone())?;
            dict.set_item("intervention_types", info.intervention_types.clone())?;
            Ok(dict)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let mut problems: Vec<String> = set.failures().iter().map(ToString::to_string).collect();
    problems.extend(set.warnings().iter().cloned());
    Ok((loaded, problems))
}

/// The host's built-in intervention types as `(name, summary)`.
#[pyfunction]
pub fn builtin_types() -> Vec<(&'static str, &'static str)> {
    vene_host::interventions::builtin_types().into_iter().map(|t| (t.name, t.summary)).collect()
}

/// libtorch's CPU threads (torch.set_num_threads sets the same, as both sides share one libtorch).
#[pyfunction]
pub fn set_num_threads(threads: i32) {
    tch::set_num_threads(threads);
}
