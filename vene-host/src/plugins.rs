//! Finding, loading and indexing plugin libraries.
//!
//! Search order: the running executable's directory, every directory in `VENE_PLUGIN_PATH`, then each
//! `--plugin-dir`. In a directory, files named `libvene_*.so` (`.dylib`, `vene_*.dll`) are plugins. A library is
//! first opened with libloading to see whether it exports abi_stable's root-module symbol at all, then abi_stable
//! checks the layout of every type in the interface, then [`BuildInfo::check_plugin`] compares the vene-api, tch and
//! libtorch versions. Libraries are never unloaded. Two plugins that claim one type name are an error naming both.

use std::{
    collections::BTreeMap,
    env,
    path::{Path, PathBuf},
};

use abi_stable::{
    library::{lib_header_from_path, ROOT_MODULE_LOADER_NAME_WITH_NUL},
    std_types::RBox,
};
use vene_api::{
    handshake::BuildInfo, intervention::InterventionFactoryAbi_TO, model::AdapterAbi_TO, plugin::PluginRootRef,
};

use crate::{
    error::{Result, VeneError},
    interventions::builtin_types,
};

/// Where to look for plugins, and which to load.
#[derive(Debug, Clone, Default)]
pub struct PluginSearch {
    /// Directories to scan, in order.
    pub dirs: Vec<PathBuf>,
    /// Load only these: plugin names (`gpt2`, `vene-gpt2`) found in `dirs`, or paths to library files.
    pub only: Vec<String>,
}

impl PluginSearch {
    /// The executable's directory and `VENE_PLUGIN_PATH`, then `extra_dirs`.
    pub fn standard(extra_dirs: &[PathBuf], only: &[String]) -> Self {
        let mut dirs = Vec::new();
        if let Some(dir) = env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
            dirs.push(dir);
        }
        if let Some(paths) = env::var_os("VENE_PLUGIN_PATH") {
            dirs.extend(env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
        }
        dirs.extend(extra_dirs.iter().cloned());
        Self { dirs, only: only.to_vec() }
    }

    /// Only the given directories (no executable directory, no environment).
    pub fn in_dirs(dirs: &[PathBuf]) -> Self {
        Self { dirs: dirs.to_vec(), only: Vec::new() }
    }
}

/// A loaded plugin library and what it provides.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub path: PathBuf,
    pub build: BuildInfo,
    pub model_types: Vec<String>,
    pub intervention_types: Vec<String>,
}

/// Every loaded plugin, and the adapters and intervention factories they provide by name.
#[derive(Default)]
pub struct PluginSet {
    plugins: Vec<PluginInfo>,
    adapters: Vec<(usize, AdapterAbi_TO<'static, RBox<()>>)>,
    factories: Vec<(usize, InterventionFactoryAbi_TO<'static, RBox<()>>)>,
    /// model type → index into `adapters`.
    adapter_by_type: BTreeMap<String, usize>,
    /// intervention type → index into `factories`.
    factory_by_type: BTreeMap<String, usize>,
    /// Libraries found by scanning that could not be used, with the reason; the rest stay usable.
    failures: Vec<VeneError>,
    warnings: Vec<String>,
    /// Files and directories the scan passed over without trying to load them, with the reason.
    skipped: Vec<Skipped>,
}

/// A library file (or a whole directory) that a plugin scan did not try to load.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Whether `name` looks like a shared library of any name (`libfoo.so`, `libfoo.so.1`, `foo.dylib`, `foo.dll`).
fn file_is_library(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.") || name.ends_with(".dylib") || name.ends_with(".dll")
}

fn file_is_plugin(name: &str) -> bool {
    let stem = name.strip_prefix("lib").unwrap_or(name);
    stem.starts_with("vene_") && [".so", ".dylib", ".dll"].iter().any(|ext| stem.ends_with(ext))
}

/// `libvene_gpt2.so` → `gpt2`.
fn short_name(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let stem = name.strip_prefix("lib").unwrap_or(name);
    let stem = stem.split('.').next().unwrap_or(stem);
    stem.strip_prefix("vene_").unwrap_or(stem).to_string()
}

fn matches_request(path: &Path, request: &str) -> bool {
    let wanted = request.replace('-', "_");
    let wanted = wanted.strip_prefix("vene_").unwrap_or(&wanted);
    short_name(path) == wanted
}

impl PluginSet {
    /// Loads the plugins `search` selects.
    pub fn load(search: &PluginSearch) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        let mut explicit: Vec<PathBuf> = Vec::new();
        for request in &search.only {
            let path = Path::new(request);
            if path.is_file() {
                explicit.push(path.to_path_buf());
            }
        }
        let mut warnings = Vec::new();
        let mut skipped = Vec::new();
        for dir in &search.dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(error) => {
                    skipped.push(Skipped { path: dir.clone(), reason: format!("cannot read the directory: {error}") });
                    continue;
                }
            };
            warnings.extend(writable_by_others(dir, "plugin directory"));
            let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            found.sort();
            for path in found {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if file_is_plugin(name) {
                    candidates.push(path);
                } else if file_is_library(name) {
                    let reason = "not named libvene_*.so (or .dylib, vene_*.dll), so not taken for a vene plugin: \
                                  rename it, or load it by path with --plugin PATH"
                        .to_string();
                    skipped.push(Skipped { path, reason });
                }
            }
        }
        if !search.only.is_empty() {
            let names: Vec<&String> = search.only.iter().filter(|r| !Path::new(r.as_str()).is_file()).collect();
            for name in &names {
                if !candidates.iter().any(|p| matches_request(p, name)) {
                    let dirs: Vec<String> = search.dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(VeneError::Plugin {
                        path: PathBuf::from(name.as_str()),
                        message: format!("no plugin named '{name}' in {}", dirs.join(", ")),
                    });
                }
            }
            candidates.retain(|p| names.iter().any(|n| matches_request(p, n)));
            candidates.extend(explicit);
        }
        // A library the user asked for by name must load; one found by scanning may fail without stopping the rest.
        let strict = !search.only.is_empty();
        let mut set = PluginSet { warnings, skipped, ..PluginSet::default() };
        let mut seen = Vec::new();
        for path in candidates {
            set.warnings.extend(writable_by_others(&path, "plugin"));
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            if seen.contains(&canonical) {
                continue;
            }
            seen.push(canonical);
            if let Err(error) = set.add_library(&path) {
                if strict {
                    return Err(error);
                }
                set.failures.push(error);
            }
        }
        Ok(set)
    }

    /// Loads one library and registers what it provides.
    pub fn add_library(&mut self, path: &Path) -> Result<()> {
        let fail = |message: String| VeneError::Plugin { path: path.to_path_buf(), message };
        let root = open_root(path)?;
        let build = (root.build_info())();
        BuildInfo::current("vene", env!("CARGO_PKG_VERSION")).check_plugin(&build).map_err(fail)?;
        let adapters = (root.adapters())().into_result().map_err(|e| fail(e.to_string()))?;
        let factories = (root.interventions())().into_result().map_err(|e| fail(e.to_string()))?;
        let index = self.plugins.len();
        let mut info =
            PluginInfo { path: path.to_path_buf(), build, model_types: Vec::new(), intervention_types: Vec::new() };
        for adapter in adapters {
            let types = adapter.model_types().into_result().map_err(|e| fail(e.to_string()))?;
            for model_type in types {
                let model_type = model_type.into_string();
                if let Some(&other) = self.adapter_by_type.get(&model_type) {
                    return Err(fail(format!(
                        "model type '{model_type}' is already provided by {}",
                        self.plugins[self.adapters[other].0].path.display()
                    )));
                }
                info.model_types.push(model_type.clone());
                self.adapter_by_type.insert(model_type, self.adapters.len());
            }
            self.adapters.push((index, adapter));
        }
        for factory in factories {
            let types = factory.type_names().into_result().map_err(|e| fail(e.to_string()))?;
            for name in types {
                let name = name.into_string();
                if builtin_types().iter().any(|t| t.name == name) {
                    return Err(fail(format!("intervention type '{name}' is built into vene; choose another name")));
                }
                if let Some(&other) = self.factory_by_type.get(&name) {
                    return Err(fail(format!(
                        "intervention type '{name}' is already provided by {}",
                        self.plugins[self.factories[other].0].path.display()
                    )));
                }
                info.intervention_types.push(name.clone());
                self.factory_by_type.insert(name, self.factories.len());
            }
            self.factories.push((index, factory));
        }
        self.plugins.push(info);
        Ok(())
    }

    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// Libraries found by scanning that were skipped, with the reason.
    pub fn failures(&self) -> &[VeneError] {
        &self.failures
    }

    /// Plugin directories and libraries that users other than their owner may write to: whoever can write there can
    /// run code in every vene process that loads plugins from them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What the directory scan passed over, in scan order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    pub fn model_types(&self) -> Vec<String> {
        self.adapter_by_type.keys().cloned().collect()
    }

    pub fn intervention_types(&self) -> Vec<String> {
        self.factory_by_type.keys().cloned().collect()
    }

    pub fn adapter(&self, model_type: &str) -> Option<(&AdapterAbi_TO<'static, RBox<()>>, &Path)> {
        let (plugin, adapter) = &self.adapters[*self.adapter_by_type.get(model_type)?];
        Some((adapter, self.plugins[*plugin].path.as_path()))
    }

    pub fn factory(&self, name: &str) -> Option<(&InterventionFactoryAbi_TO<'static, RBox<()>>, &Path)> {
        let (plugin, factory) = &self.factories[*self.factory_by_type.get(name)?];
        Some((factory, self.plugins[*plugin].path.as_path()))
    }
}

/// Opens `path` and returns its vene root module, refusing libraries that are not vene plugins.
fn open_root(path: &Path) -> Result<PluginRootRef> {
    let fail = |message: String| VeneError::Plugin { path: path.to_path_buf(), message };
    // SAFETY: loading a library runs its initialisers; plugins are trusted native code (see the trust model in the
    // README), and only files from the configured plugin directories or named explicitly get here.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| fail(format!("cannot be loaded: {e}")))?;
    // SAFETY: only the symbol's presence is checked; it is not called through this handle.
    let exported = unsafe { library.get::<*const ()>(ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes()) }.is_ok();
    // Plugins are never unloaded: their code may be referenced by tensors, vtables and thread-locals.
    std::mem::forget(library);
    if !exported {
        return Err(fail("is not a vene plugin (it exports no abi_stable root module)".to_string()));
    }
    let header = lib_header_from_path(path).map_err(|e| fail(one_line(&e.to_string())))?;
    header.init_root_module::<PluginRootRef>().map_err(|e| {
        fail(format!(
            "its plugin interface does not match this vene (vene-api {}; rebuild the plugin against it): {}",
            vene_api::handshake::VENE_API_VERSION,
            layout_mismatch_summary(&one_line(&e.to_string()))
        ))
    })
}

/// A warning if `path` is writable by its group or by every user (Unix permissions).
fn writable_by_others(path: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    let who = match (mode & 0o002 != 0, mode & 0o020 != 0) {
        (true, _) => "every user",
        (false, true) => "its group",
        (false, false) => return None,
    };
    Some(format!(
        "{what} {} is writable by {who} (mode {mode:o}): anyone who can write there can run code in vene; \
         `chmod go-w {}` unless you trust them",
        path.display(),
        path.display()
    ))
}

/// abi_stable's layout error prints both full type trees (tens of kilobytes); the type that differs is the last
/// "Layout of expected type" and the verdict comes after the last "Error:".
fn layout_mismatch_summary(report: &str) -> String {
    const KEEP: usize = 300;
    let type_name = report
        .rsplit_once("Layout of expected type: --- Type Layout --- type:")
        .and_then(|(_, rest)| rest.split_whitespace().next());
    let summary = match (type_name, report.rsplit_once("Error:")) {
        (Some(name), Some((_, verdict))) => format!("{name} differs: {}", verdict.trim()),
        _ => report.to_string(),
    };
    match summary.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}…", &summary[..cut]),
        None => summary,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
