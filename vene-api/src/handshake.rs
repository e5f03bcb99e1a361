//! What a plugin was built against, and the rule for loading it into this host.
//!
//! abi_stable already refuses a plugin whose vene-api types have a different layout. A plugin must also share this
//! host's tch and libtorch builds, since tensors cross as raw libtorch handles: the versions are compared here.

use abi_stable::{std_types::RString, StableAbi};

/// vene-api's own version.
pub const VENE_API_VERSION: &str = env!("CARGO_PKG_VERSION");
/// tch version: vene-api pins `tch = "=0.26.0"`.
pub const TCH_VERSION: &str = "0.26.0";
/// libtorch version seen at build time (`2.13.0+cu130` from the PyPI wheel).
pub const LIBTORCH_VERSION: &str = env!("VENE_LIBTORCH_VERSION");

/// The versions one side was compiled against.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub plugin_name: RString,
    pub plugin_version: RString,
    pub vene_api: RString,
    pub tch: RString,
    pub libtorch: RString,
}

impl BuildInfo {
    /// The build info of the crate calling this (plugins pass their own package name and version).
    pub fn current(plugin_name: &str, plugin_version: &str) -> Self {
        Self {
            plugin_name: plugin_name.into(),
            plugin_version: plugin_version.into(),
            vene_api: VENE_API_VERSION.into(),
            tch: TCH_VERSION.into(),
            libtorch: LIBTORCH_VERSION.into(),
        }
    }

    /// Whether a plugin built as `plugin` may be used by a host built as `self`.
    /// vene-api must be semver-compatible; tch and libtorch must match exactly.
    pub fn check_plugin(&self, plugin: &BuildInfo) -> Result<(), String> {
        let mut problems = Vec::new();
        if !semver_compatible(&self.vene_api, &plugin.vene_api) {
            problems.push(format!("vene-api {} (host has {})", plugin.vene_api, self.vene_api));
        }
        if self.tch != plugin.tch {
            problems.push(format!("tch {} (host has {})", plugin.tch, self.tch));
        }
        if self.libtorch != plugin.libtorch {
            problems.push(format!("libtorch {} (host has {})", plugin.libtorch, self.libtorch));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "plugin '{}' {} was built against {}; rebuild it against this vene",
                plugin.plugin_name,
                plugin.plugin_version,
                problems.join(", ")
            ))
        }
    }
}

/// `0.x.y` and `0.x.z` are compatible; from 1.0 on, the same major version is.
fn semver_compatible(host: &str, plugin: &str) -> bool {
    let parts = |v: &str| v.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (h, p) = (parts(host), parts(plugin));
    match (h.first(), p.first()) {
        (Some(hm), Some(pm)) if hm == "0" && pm == "0" => h.get(1) == p.get(1),
        (Some(hm), Some(pm)) => hm == pm,
        _ => false,
    }
}
