//! Binding a config to a model: each representation resolved against the catalog, checked, and given its
//! intervention instance (shared between linked representations).

use tch::Tensor;
use vene_api::{DTypeSpec, DeviceSpec, Intervention, InterventionSpec, InterventionTraits, ModelCatalog};

use super::IntervenableModel;
use crate::{
    config::{IntervenableConfig, Representation},
    error::{Result, VeneError},
    interventions,
    locations::expand_partition,
    model::LoadedModel,
    plugins::PluginSet,
    units::{constant_vector, unit_kind, UnitKind},
};

/// A representation resolved against the model's catalog.
pub(super) struct Bound {
    pub(super) key: String,
    /// "vanilla on block_output at layer 1", for messages.
    pub(super) description: String,
    pub(super) component: u32,
    pub(super) layer: u32,
    pub(super) unit: UnitKind,
    pub(super) instance: usize,
    pub(super) traits: InterventionTraits,
    /// Size of the axis subspaces index: the component dimension, times the units for distributed interventions.
    pub(super) subspace_width: i64,
    pub(super) partition: Option<Vec<Vec<i64>>>,
    pub(super) constant_source: Option<Tensor>,
    /// For `skip`: the component whose tensor is this site's input.
    pub(super) skip_input: Option<u32>,
}

impl Bound {
    /// Whether this representation reads a source run (rather than a constant, the site input, or nothing).
    pub(super) fn reads_source_run(&self) -> bool {
        self.traits.needs_source && self.constant_source.is_none() && self.skip_input.is_none()
    }
}

/// Resolves a catalog name or a pyvene module path (`h[3].mlp.output`, `transformer.h.3.mlp.output`).
pub fn resolve_component(catalog: &ModelCatalog, rep: &Representation) -> Result<(u32, u32)> {
    if let Some(index) = catalog.component_index(&rep.component) {
        return Ok((index as u32, rep.layer));
    }
    let path = normalise_module_path(&rep.component);
    for (index, component) in catalog.components.iter().enumerate() {
        for template in component.module_paths.iter() {
            let Some((prefix, suffix)) = template.as_str().split_once("{layer}") else {
                continue;
            };
            let layer = path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|number| number.parse::<u32>().ok());
            if let Some(layer) = layer {
                return Ok((index as u32, layer));
            }
        }
    }
    Err(VeneError::UnknownComponent {
        component: rep.component.clone(),
        model_type: catalog.model_type.to_string(),
        known: catalog.component_names().iter().map(|s| s.to_string()).collect(),
    })
}

/// `transformer.h.3.mlp.output` → `h[3].mlp.output`.
fn normalise_module_path(path: &str) -> String {
    let trimmed = ["transformer.", "model.", "gpt_neox.", "gru.", "mlp."]
        .iter()
        .find_map(|p| path.strip_prefix(p))
        .unwrap_or(path);
    trimmed.split('.').fold(String::new(), |mut out, part| {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
        out
    })
}

impl IntervenableModel {
    /// Binds `config` to `model`, creating every intervention (`seed` seeds their initialisation).
    pub fn new(model: LoadedModel, config: IntervenableConfig, plugins: &PluginSet, seed: u64) -> Result<Self> {
        let catalog = model.catalog().clone();
        let keys = config.keys();
        let groups = config.groups()?;
        let mut reps = Vec::new();
        let mut instances: Vec<Box<dyn Intervention>> = Vec::new();
        let mut links: Vec<(i64, usize)> = Vec::new();
        for (index, rep) in config.representations.iter().enumerate() {
            let site = Site::resolve(&catalog, rep)?;
            let spec = InterventionSpec {
                embed_dim: site.dim as u32 * rep.max_number_of_units,
                unit_dim: site.dim as u32,
                max_units: rep.max_number_of_units,
                low_rank_dimension: rep.low_rank_dimension.into(),
                device: DeviceSpec::from_device(model.device()),
                dtype: dtype_spec(model.kind()),
                seed: seed.wrapping_add(index as u64),
            };
            let linked =
                rep.intervention_link_key.and_then(|k| links.iter().find(|(key, _)| *key == k).map(|(_, i)| *i));
            let instance = match linked {
                Some(shared) => shared,
                None => {
                    instances.push(interventions::create(&rep.intervention, &spec, plugins)?);
                    if let Some(link) = rep.intervention_link_key {
                        links.push((link, instances.len() - 1));
                    }
                    instances.len() - 1
                }
            };
            let traits = instances[instance].traits();
            // Distributed interventions see the units flattened, so their subspaces index all units' dimensions.
            let subspace_width =
                if traits.distributed { site.dim * i64::from(rep.max_number_of_units) } else { site.dim };
            let partition = checked_partition(rep, subspace_width, &site.description)?;
            let constant_source = constant_source(rep, &site, i64::from(spec.embed_dim), &model)?;
            let skip_input = skip_input(&catalog, &site, rep)?;
            reps.push(Bound {
                key: keys[index].clone(),
                description: site.description,
                component: site.component,
                layer: site.layer,
                unit: site.unit,
                instance,
                traits,
                subspace_width,
                partition,
                constant_source,
                skip_input,
            });
        }
        Ok(Self { model, config, reps, instances, groups, finite_checks: false })
    }
}

/// Where a representation acts: its component and layer, unit kind and dimension, and how messages name it.
struct Site {
    component: u32,
    layer: u32,
    unit: UnitKind,
    dim: i64,
    /// "vanilla on block_output at layer 1".
    description: String,
}

impl Site {
    fn resolve(catalog: &ModelCatalog, rep: &Representation) -> Result<Self> {
        let type_name = rep.intervention_type()?;
        let (component, layer) = resolve_component(catalog, rep)?;
        let info = &catalog.components[component as usize];
        let description = format!("{type_name} on {} at layer {layer}", info.name);
        if rep.max_number_of_units == 0 {
            return Err(VeneError::Config(format!("{description}: max_number_of_units is 0 (valid: 1 or more)")));
        }
        if layer >= info.layers {
            return Err(VeneError::LayerOutOfRange {
                layer,
                component: info.name.to_string(),
                num_layers: info.layers,
            });
        }
        let unit = unit_kind(info.layout, &rep.unit).ok_or_else(|| {
            VeneError::Config(format!(
                "unit '{}' is not valid for {} ({:?} layout); valid units: {}",
                rep.unit,
                info.name,
                info.layout,
                info.layout.units().join(", ")
            ))
        })?;
        Ok(Self { component, layer, unit, dim: i64::from(info.dim_at(layer)), description })
    }
}

/// The representation's `subspace_partition` as index lists, each index inside the intervention's width.
fn checked_partition(rep: &Representation, width: i64, description: &str) -> Result<Option<Vec<Vec<i64>>>> {
    let partition = rep.subspace_partition.as_deref().map(expand_partition);
    if let Some(bad) = partition.iter().flatten().flatten().find(|&&d| d < 0 || d >= width) {
        return Err(VeneError::Config(format!(
            "{description}: subspace_partition index {bad} is outside the intervention's {width} dimensions"
        )));
    }
    Ok(partition)
}

/// The constant `source_representation` as a tensor: one unit's values, or every unit's.
fn constant_source(rep: &Representation, site: &Site, embed: i64, model: &LoadedModel) -> Result<Option<Tensor>> {
    let Some(values) = &rep.source_representation else {
        return Ok(None);
    };
    let (len, dim) = (values.len() as i64, site.dim);
    if len != dim && len != embed {
        return Err(VeneError::Config(format!(
            "{}: source_representation has {len} values, expected {dim} (or {embed})",
            site.description
        )));
    }
    Ok(Some(constant_vector(values, model.kind(), model.device())))
}

/// For `skip`: the component whose tensor is the site's input.
fn skip_input(catalog: &ModelCatalog, site: &Site, rep: &Representation) -> Result<Option<u32>> {
    if rep.intervention_type()? != "skip" {
        return Ok(None);
    }
    let info = &catalog.components[site.component as usize];
    let input = info.skip_input.as_ref().into_option().ok_or_else(|| {
        let with_inputs: Vec<&str> =
            catalog.components.iter().filter(|c| c.skip_input.is_some()).map(|c| c.name.as_str()).collect();
        VeneError::Config(format!(
            "skip needs a component whose input is a site of the same shape; {} has none (use one of: {})",
            info.name,
            with_inputs.join(", ")
        ))
    })?;
    Ok(Some(catalog.component_index(input).unwrap_or_default() as u32))
}

fn dtype_spec(kind: tch::Kind) -> DTypeSpec {
    match kind {
        tch::Kind::Half => DTypeSpec::F16,
        tch::Kind::BFloat16 => DTypeSpec::BF16,
        tch::Kind::Double => DTypeSpec::F64,
        _ => DTypeSpec::F32,
    }
}
