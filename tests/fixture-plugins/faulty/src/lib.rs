//! A plugin whose interventions misbehave on purpose, for vene's plugin-isolation tests:
//! `fixture_panic` panics inside `apply`; `fixture_wrong_shape` returns a tensor of the wrong shape.

use tch::Tensor;
use vene_api::{Intervention, InterventionFactory, InterventionSpec, InterventionTraits, PluginResult};

vene_api::export_plugin! {
    adapters: [],
    interventions: [FaultyFactory],
}

pub struct FaultyFactory;

struct Faulty {
    panics: bool,
}

impl Intervention for Faulty {
    fn traits(&self) -> InterventionTraits {
        InterventionTraits { needs_source: false, ..Default::default() }
    }

    fn apply(
        &mut self,
        base: &Tensor,
        _source: Option<&Tensor>,
        _subspaces: Option<&[Vec<i64>]>,
    ) -> PluginResult<Tensor> {
        if self.panics {
            panic!("fixture_panic always panics");
        }
        Ok(base.narrow(-1, 0, 1))
    }
}

impl InterventionFactory for FaultyFactory {
    fn type_names(&self) -> Vec<String> {
        vec!["fixture_panic".to_string(), "fixture_wrong_shape".to_string()]
    }

    fn create(
        &self,
        type_name: &str,
        _config_json: &str,
        _spec: &InterventionSpec,
    ) -> PluginResult<Box<dyn Intervention>> {
        Ok(Box::new(Faulty { panics: type_name == "fixture_panic" }))
    }
}
