//! `unit_locations` and `subspaces` in pyvene's formats, with every shorthand.
//!
//! Full form: `{"sources->base": [source_side, base_side]}` where each side lists, per intervention, `[batch][units]`
//! (or `[[first level per batch], [second level per batch]]` for two-level units such as `h.pos`). Shorthands: an
//! int (the same position everywhere), `[i, j]` (source position i into base position j), `[null, j]` / `[i, null]`,
//! a flat list (the same positions for every example), `{"base": ...}` (base locations only, for source-less
//! interventions) and no `unit_locations` at all (the whole tensor). Serial mode uses the keys
//! `source_0->source_1`, …, `source_{n-1}->base`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Result, VeneError};

/// Selected units of one intervention on one side, per batch example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitLocs {
    /// `[batch][units]` along the unit's axis.
    One(Vec<Vec<i64>>),
    /// `[batch][first-level units]`, `[batch][second-level units]` (e.g. heads, then positions).
    Two(Vec<Vec<i64>>, Vec<Vec<i64>>),
}

impl UnitLocs {
    pub fn levels(&self) -> Vec<&Vec<Vec<i64>>> {
        match self {
            UnitLocs::One(a) => vec![a],
            UnitLocs::Two(a, b) => vec![a, b],
        }
    }
}

/// What a representation gets on one side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No location filter: the whole tensor.
    Whole,
    Units(UnitLocs),
}

#[derive(Debug, Clone, PartialEq)]
enum Side {
    Absent,
    /// The same unit list for every example and every intervention.
    Broadcast(Vec<i64>),
    /// One entry per intervention.
    PerIntervention(Vec<Value>),
}

#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    sources: Side,
    base: Side,
}

/// Parsed `unit_locations` of one call, or of several calls stacked into one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitLocations {
    /// `None`: no `unit_locations` were given, every representation acts on the whole tensor.
    Parsed(Option<BTreeMap<String, KeySpec>>),
    /// Per part: its locations and its batch size, examples in order.
    Stacked(Vec<(UnitLocations, usize)>),
}

fn as_int(value: &Value) -> Option<i64> {
    value.as_i64()
}

fn int_list(value: &Value) -> Option<Vec<i64>> {
    value.as_array()?.iter().map(as_int).collect()
}

impl UnitLocations {
    pub fn whole() -> Self {
        UnitLocations::Parsed(None)
    }

    /// The locations of several batches as one batch (e.g. training examples with their own locations).
    pub fn stack(parts: Vec<(UnitLocations, usize)>) -> Self {
        UnitLocations::Stacked(parts)
    }

    pub fn parse(value: Option<&Value>) -> Result<Self> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(Self::whole());
        };
        let object = value.as_object().ok_or_else(|| {
            VeneError::Locations(format!("expected an object such as {{\"sources->base\": [1, 2]}}, got {value}"))
        })?;
        let mut keys = BTreeMap::new();
        for (key, spec) in object {
            let base_only = key == "base";
            let name = if base_only { "sources->base".to_string() } else { key.clone() };
            if !base_only && !key.contains("->") {
                return Err(VeneError::Locations(format!(
                    "unknown key '{key}': use \"sources->base\", \"base\" or (serial) \"source_0->source_1\" …"
                )));
            }
            keys.insert(name, Self::parse_key(key, spec, base_only)?);
        }
        Ok(UnitLocations::Parsed(Some(keys)))
    }

    fn parse_key(key: &str, spec: &Value, base_only: bool) -> Result<KeySpec> {
        let both = |side: Side| KeySpec { sources: if base_only { Side::Absent } else { side.clone() }, base: side };
        if let Some(position) = as_int(spec) {
            return Ok(both(Side::Broadcast(vec![position])));
        }
        let list = spec
            .as_array()
            .ok_or_else(|| VeneError::Locations(format!("'{key}' must be an int or a list, got {spec}")))?;
        if list.len() == 2 && !base_only {
            let (a, b) = (&list[0], &list[1]);
            match (as_int(a), as_int(b)) {
                (Some(i), Some(j)) => {
                    return Ok(KeySpec { sources: Side::Broadcast(vec![i]), base: Side::Broadcast(vec![j]) })
                }
                (None, Some(j)) if a.is_null() => {
                    return Ok(KeySpec { sources: Side::Absent, base: Side::Broadcast(vec![j]) })
                }
                (Some(i), None) if b.is_null() => {
                    return Ok(KeySpec { sources: Side::Broadcast(vec![i]), base: Side::Absent })
                }
                _ => {}
            }
        }
        if let Some(positions) = int_list(spec) {
            return Ok(both(Side::Broadcast(positions)));
        }
        if base_only {
            return Ok(KeySpec { sources: Side::Absent, base: Side::PerIntervention(list.clone()) });
        }
        if list.len() != 2 {
            return Err(VeneError::Locations(format!(
                "'{key}' must be [source_locations, base_locations] (2 entries), got {} entries",
                list.len()
            )));
        }
        let side = |value: &Value, which: &str| -> Result<Side> {
            match value {
                Value::Null => Ok(Side::Absent),
                Value::Array(entries) => Ok(Side::PerIntervention(entries.clone())),
                other => Err(VeneError::Locations(format!("the {which} side of '{key}' must be a list, got {other}"))),
            }
        };
        Ok(KeySpec { sources: side(&list[0], "source")?, base: side(&list[1], "base")? })
    }

    /// The locations of intervention `index` (of `count` that this key addresses) on one side of `key`.
    /// `Ok(None)`: this side was not given for the key.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve(
        &self,
        key: &str,
        source_side: bool,
        index: usize,
        count: usize,
        levels: usize,
        batch: usize,
        what: &str,
    ) -> Result<Option<Selection>> {
        let keys = match self {
            UnitLocations::Parsed(None) => return Ok(Some(Selection::Whole)),
            UnitLocations::Parsed(Some(keys)) => keys,
            UnitLocations::Stacked(parts) => {
                let resolved = parts
                    .iter()
                    .map(|(part, batch)| part.resolve(key, source_side, index, count, levels, *batch, what))
                    .collect::<Result<Vec<_>>>()?;
                return stack_selections(resolved, what);
            }
        };
        let Some(spec) = keys.get(key) else {
            let known: Vec<&str> = keys.keys().map(String::as_str).collect();
            return Err(VeneError::Locations(format!("no '{key}' entry (given: {})", known.join(", "))));
        };
        let side = if source_side { &spec.sources } else { &spec.base };
        match side {
            Side::Absent => Ok(None),
            Side::Broadcast(units) => {
                if levels != 1 {
                    return Err(VeneError::Locations(format!(
                        "{what} uses a two-level unit and needs [[first level per example], [second level per example]] \
                         locations, not the shorthand {units:?}"
                    )));
                }
                Ok(Some(Selection::Units(UnitLocs::One(vec![units.clone(); batch]))))
            }
            Side::PerIntervention(entries) => {
                if entries.len() != count {
                    return Err(VeneError::Locations(format!(
                        "'{key}' lists {} interventions on the {} side, the config has {count}",
                        entries.len(),
                        if source_side { "source" } else { "base" }
                    )));
                }
                parse_selection(&entries[index], levels, batch, what).map(Some)
            }
        }
    }
}

/// Concatenates the selections of stacked parts along the batch.
fn stack_selections(parts: Vec<Option<Selection>>, what: &str) -> Result<Option<Selection>> {
    if parts.iter().all(Option::is_none) {
        return Ok(None);
    }
    let parts: Vec<Selection> = parts.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
        VeneError::Locations(format!("{what}: some examples of the batch give locations for this side, others not"))
    })?;
    if parts.iter().all(|p| *p == Selection::Whole) {
        return Ok(Some(Selection::Whole));
    }
    let mut first: Vec<Vec<i64>> = Vec::new();
    let mut second: Vec<Vec<i64>> = Vec::new();
    let mut two_level = None;
    for part in parts {
        match part {
            Selection::Units(UnitLocs::One(rows)) if two_level != Some(true) => {
                two_level = Some(false);
                first.extend(rows);
            }
            Selection::Units(UnitLocs::Two(a, b)) if two_level != Some(false) => {
                two_level = Some(true);
                first.extend(a);
                second.extend(b);
            }
            _ => {
                return Err(VeneError::Locations(format!(
                    "{what}: examples of one batch must all give unit locations of the same form"
                )))
            }
        }
    }
    for level in [&first, &second] {
        if level.iter().any(|row| row.len() != level[0].len()) {
            return Err(VeneError::Locations(format!(
                "{what}: every example of a batch must select the same number of units"
            )));
        }
    }
    Ok(Some(Selection::Units(if two_level == Some(true) {
        UnitLocs::Two(first, second)
    } else {
        UnitLocs::One(first)
    })))
}

fn batch_lists(value: &Value, batch: usize, what: &str) -> Result<Vec<Vec<i64>>> {
    let lists = ragged_batch_lists(value, batch, what)?;
    if lists.iter().any(|l| l.len() != lists[0].len()) {
        return Err(VeneError::Locations(format!(
            "{what}: every example must select the same number of units, got {:?}",
            lists.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(lists)
}

/// `[batch][ids]` lists of any lengths (subspaces may select different numbers of dimensions per example).
fn ragged_batch_lists(value: &Value, batch: usize, what: &str) -> Result<Vec<Vec<i64>>> {
    let rows = value
        .as_array()
        .ok_or_else(|| VeneError::Locations(format!("{what}: expected [batch][units] lists, got {value}")))?;
    if rows.len() != batch {
        return Err(VeneError::Locations(format!(
            "{what}: locations are given for {} examples, the batch has {batch}",
            rows.len()
        )));
    }
    let lists = rows
        .iter()
        .map(|row| {
            int_list(row)
                .ok_or_else(|| VeneError::Locations(format!("{what}: expected a list of ints per example, got {row}")))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(bad) = lists.iter().flatten().find(|&&i| i < 0) {
        return Err(VeneError::Locations(format!("{what}: negative unit location {bad}")));
    }
    Ok(lists)
}

fn parse_selection(value: &Value, levels: usize, batch: usize, what: &str) -> Result<Selection> {
    if value.is_null() {
        return Ok(Selection::Whole);
    }
    if levels == 1 {
        return Ok(Selection::Units(UnitLocs::One(batch_lists(value, batch, what)?)));
    }
    match value.as_array().map(Vec::as_slice) {
        Some([first, second]) => Ok(Selection::Units(UnitLocs::Two(
            batch_lists(first, batch, what)?,
            batch_lists(second, batch, what)?,
        ))),
        _ => Err(VeneError::Locations(format!(
            "{what} uses a two-level unit: expected [[first level per example], [second level per example]], got {value}"
        ))),
    }
}

/// Parsed `subspaces` of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Subspaces {
    None,
    /// The same ids for every example of every intervention.
    Broadcast(Vec<i64>),
    /// Per intervention: `null` or `[batch][ids]`.
    PerIntervention(Vec<Value>),
    /// Per part: its subspaces and its batch size, examples in order.
    Stacked(Vec<(Subspaces, usize)>),
}

impl Subspaces {
    pub fn parse(value: Option<&Value>) -> Result<Self> {
        match value {
            None | Some(Value::Null) => Ok(Subspaces::None),
            Some(v) if as_int(v).is_some() => Ok(Subspaces::Broadcast(vec![as_int(v).unwrap_or_default()])),
            Some(v) => {
                if let Some(ids) = int_list(v).filter(|ids| !ids.is_empty()) {
                    return Ok(Subspaces::Broadcast(ids));
                }
                v.as_array()
                    .map(|entries| Subspaces::PerIntervention(entries.clone()))
                    .ok_or_else(|| VeneError::Subspaces(format!("expected an int or a list, got {v}")))
            }
        }
    }

    /// Dimension indices per example for intervention `index`, after mapping ids through `partition`.
    pub fn resolve(
        &self,
        index: usize,
        count: usize,
        batch: usize,
        partition: Option<&[Vec<i64>]>,
        dim: i64,
        what: &str,
    ) -> Result<Option<Vec<Vec<i64>>>> {
        let ids = match self {
            Subspaces::None => return Ok(None),
            Subspaces::Stacked(parts) => {
                let resolved = parts
                    .iter()
                    .map(|(part, batch)| part.resolve(index, count, *batch, partition, dim, what).map(|r| (r, *batch)))
                    .collect::<Result<Vec<_>>>()?;
                if resolved.iter().all(|(r, _)| r.is_none()) {
                    return Ok(None);
                }
                // An example without subspaces acts on every dimension.
                let every: Vec<i64> = (0..dim).collect();
                return Ok(Some(
                    resolved
                        .into_iter()
                        .flat_map(|(r, batch)| r.unwrap_or_else(|| vec![every.clone(); batch]))
                        .collect(),
                ));
            }
            Subspaces::Broadcast(ids) => vec![ids.clone(); batch],
            Subspaces::PerIntervention(entries) => {
                if entries.len() != count {
                    return Err(VeneError::Subspaces(format!(
                        "{} entries given, the config has {count} interventions",
                        entries.len()
                    )));
                }
                if entries[index].is_null() {
                    return Ok(None);
                }
                ragged_batch_lists(&entries[index], batch, what).map_err(|e| VeneError::Subspaces(e.to_string()))?
            }
        };
        ids.into_iter()
            .map(|example| {
                let dims: Vec<i64> = match partition {
                    None => example,
                    Some(parts) => example
                        .iter()
                        .map(|&id| {
                            parts.get(id as usize).cloned().ok_or_else(|| {
                                VeneError::Subspaces(format!(
                                    "{what}: subspace id {id} is out of range: subspace_partition has {} subspaces",
                                    parts.len()
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                        .concat(),
                };
                if let Some(bad) = dims.iter().find(|&&d| d < 0 || d >= dim) {
                    return Err(VeneError::Subspaces(format!(
                        "{what}: dimension {bad} is out of range for a last axis of size {dim}"
                    )));
                }
                Ok(dims)
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// pyvene's partition entries: `[start, end)` pairs become ranges, longer lists are explicit indices.
pub fn expand_partition(partition: &[Vec<i64>]) -> Vec<Vec<i64>> {
    partition
        .iter()
        .map(|part| match part.as_slice() {
            [start, end] => (*start..*end).collect(),
            explicit => explicit.to_vec(),
        })
        .collect()
}
