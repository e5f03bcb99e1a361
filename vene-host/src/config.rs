//! Intervention configs: a list of representations plus a mode, as in pyvene, serialisable as JSON.
//!
//! ```json
//! {"mode": "parallel",
//!  "representations": [{"layer": 1, "component": "block_output", "unit": "pos",
//!                       "intervention": {"type": "vanilla"}}]}
//! ```
//! The `intervention` object is `"type"`-tagged and resolved when the config is bound to a model: built-in types
//! through typetag, plugin types through the plugin registry.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VeneError};

/// How multiple sources feed the base run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every group reads its own source run; all setters act in one base run.
    #[default]
    Parallel,
    /// source_0 → source_1 → … → base: group i's setters act on the run that reads group i+1's source.
    Serial,
}

/// Where and how to intervene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Representation {
    #[serde(default)]
    pub layer: u32,
    /// A catalog name (`block_output`) or a pyvene module path (`h[3].mlp.output`).
    pub component: String,
    #[serde(default = "default_unit")]
    pub unit: String,
    #[serde(default = "default_units", deserialize_with = "at_least_one_unit")]
    pub max_number_of_units: u32,
    /// The `"type"`-tagged intervention declaration.
    pub intervention: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_rank_dimension: Option<u32>,
    /// Ranges `[start, end)` or explicit index lists of the last axis; subspace ids index this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subspace_partition: Option<Vec<Vec<i64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention_link_key: Option<i64>,
    /// A constant source vector used instead of a source run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_representation: Option<Vec<f32>>,
}

fn default_unit() -> String {
    "pos".to_string()
}

fn default_units() -> u32 {
    1
}

/// `max_number_of_units` selects at least one unit: 0 would declare an intervention that can never act.
fn at_least_one_unit<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<u32, D::Error> {
    let units = u32::deserialize(deserializer)?;
    if units == 0 {
        return Err(serde::de::Error::custom("max_number_of_units is 0 (valid: 1 or more)"));
    }
    Ok(units)
}

impl Representation {
    /// The `"type"` of the intervention declaration.
    pub fn intervention_type(&self) -> Result<&str> {
        self.intervention.get("type").and_then(|t| t.as_str()).ok_or_else(|| {
            VeneError::Config(format!(
                "representation on '{}' needs \"intervention\": {{\"type\": ...}}, got {}",
                self.component, self.intervention
            ))
        })
    }

    /// pyvene's key: `layer_{l}_comp_{c}_unit_{u}_nunit_{n}` (module paths drop the layer).
    fn key_proposal(&self) -> String {
        let unit = self.unit.replace('.', "_");
        if self.component.contains('.') {
            format!("comp_{}_unit_{unit}_nunit_{}", self.component.replace('.', "_"), self.max_number_of_units)
        } else {
            format!("layer_{}_comp_{}_unit_{unit}_nunit_{}", self.layer, self.component, self.max_number_of_units)
        }
    }
}

/// A whole intervention config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervenableConfig {
    #[serde(default)]
    pub mode: Mode,
    pub representations: Vec<Representation>,
}

impl IntervenableConfig {
    /// No representations: runs are plain forward passes (training the model on its task alone).
    pub fn empty() -> Self {
        Self { mode: Mode::default(), representations: Vec::new() }
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text).map_err(|source| VeneError::Json {
            path: path.to_path_buf(),
            what: "a vene config",
            source,
        })
    }

    /// One key per representation, in config order (pyvene's `sorted_keys`).
    pub fn keys(&self) -> Vec<String> {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        self.representations
            .iter()
            .map(|r| {
                let proposal = r.key_proposal();
                let count = seen.entry(proposal.clone()).and_modify(|c| *c += 1).or_insert(0);
                format!("{proposal}#{count}")
            })
            .collect()
    }

    /// Representation indices per group, groups in ascending `group_key` order (one group each without keys).
    pub fn groups(&self) -> Result<Vec<Vec<usize>>> {
        let keyed = self.representations.iter().filter(|r| r.group_key.is_some()).count();
        if keyed == 0 {
            return Ok((0..self.representations.len()).map(|i| vec![i]).collect());
        }
        if keyed != self.representations.len() {
            return Err(VeneError::Config("either every representation has a group_key or none does".to_string()));
        }
        let keys: Vec<i64> = self.representations.iter().filter_map(|r| r.group_key).collect();
        if keys.windows(2).any(|w| w[0] > w[1]) {
            return Err(VeneError::Config(format!(
                "group keys must be in ascending order in the config, got {keys:?}"
            )));
        }
        let mut groups: Vec<(i64, Vec<usize>)> = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            match groups.last_mut() {
                Some((last, members)) if last == key => members.push(index),
                _ => groups.push((*key, vec![index])),
            }
        }
        Ok(groups.into_iter().map(|(_, members)| members).collect())
    }
}
