//! The CRNN (EasyOCR's recogniser), EfficientNet-Lite and Silero VAD adapters against their PyTorch references
//! (scripts/gen_fixtures_cnn_rnn.py): the output and every site, on seeded weights saved in the real layouts — a
//! zip `pytorch_model.bin` with EasyOCR's `module.` prefix, torch's legacy format for EfficientNet, safetensors for
//! Silero.

use std::collections::BTreeMap;

use serde_json::json;
use tch::Tensor;
use vene_api::{DTypeSpec, DeviceSpec, SiteLayout};
use vene_host::{
    config::IntervenableConfig,
    engine::IntervenableModel,
    locations::{Subspaces, UnitLocations},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
};

use crate::common::*;

const TOLERANCE: f64 = 1e-4;

/// Runs `input` collecting `sites` (`(component, layer)`), whole tensors or (recurrent) every step.
fn collect(
    model: LoadedModel,
    plugins: &PluginSet,
    input: &Tensor,
    sites: &[(String, u32)],
    steps: Option<i64>,
) -> (Tensor, Vec<Tensor>, LoadedModel) {
    let representations: Vec<_> = sites
        .iter()
        .map(|(component, layer)| {
            let mut rep = json!({"layer": layer, "component": component, "intervention": {"type": "collect"}});
            if component == "pooled" {
                rep["unit"] = json!("feature");
            }
            if let Some(steps) = steps {
                rep["unit"] = json!("t");
                rep["max_number_of_units"] = json!(steps);
            }
            rep
        })
        .collect();
    let config: IntervenableConfig = serde_json::from_value(json!({"representations": representations})).unwrap();
    let mut intervenable = IntervenableModel::new(model, config, plugins, 0).expect("collect config binds");
    let locations = match steps {
        Some(steps) => {
            let all: Vec<Vec<i64>> = (0..input.size()[0]).map(|_| (0..steps).collect()).collect();
            let base = vec![json!(all); sites.len()];
            UnitLocations::parse(Some(&json!({"base": base}))).unwrap()
        }
        None => UnitLocations::parse(None).unwrap(),
    };
    let output = intervenable
        .run(&ForwardInputs::from_features(input.shallow_clone()), &[], &locations, &Subspaces::None)
        .expect("collect run");
    (output.output, output.collected, intervenable.into_model())
}

/// Compares the model in `fixtures/<family>/model` with `sites.safetensors`, site by site.
fn matches_reference_at_every_site(plugin: &str, family: &str) {
    let plugins = plugins(&[plugin]);
    let model = LoadedModel::load(&plugins, &fixtures().join(family).join("model"), DeviceSpec::CPU, DTypeSpec::F32)
        .unwrap_or_else(|e| panic!("{family} loads: {e}"));
    let expected: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(fixtures().join(family).join("sites.safetensors")).unwrap().into_iter().collect();
    let layouts: BTreeMap<String, SiteLayout> =
        model.catalog().components.iter().map(|c| (c.name.to_string(), c.layout)).collect();
    let (mut recurrent, mut whole) = (Vec::new(), Vec::new());
    for key in expected.keys().filter(|k| k.contains('.')) {
        let (component, layer) = key.rsplit_once('.').unwrap();
        let layout = layouts.get(component).unwrap_or_else(|| panic!("{family} has no site {component}"));
        let site = (component.to_string(), layer.parse::<u32>().unwrap());
        if *layout == SiteLayout::Recurrent {
            recurrent.push(site)
        } else {
            whole.push(site)
        }
    }
    let input = &expected["input"];
    let (output, collected, model) = collect(model, &plugins, input, &whole, None);
    let difference = max_abs_diff(&output, &expected["output"]);
    assert!(difference < TOLERANCE, "{family} output differs by {difference}");
    for ((component, layer), value) in whole.iter().zip(&collected) {
        let value = if value.dim() == 4 { value.flatten(2, 3).transpose(1, 2) } else { value.shallow_clone() };
        let difference = max_abs_diff(&value, &expected[&format!("{component}.{layer}")]);
        assert!(difference < TOLERANCE, "{family} {component} layer {layer} differs by {difference}");
    }
    let catalog_sites = layouts.len();
    if !recurrent.is_empty() {
        let steps = expected[&format!("{}.{}", recurrent[0].0, recurrent[0].1)].size()[1];
        let (_, collected, _) = collect(model, &plugins, input, &recurrent, Some(steps));
        for ((component, layer), value) in recurrent.iter().zip(&collected) {
            let difference = max_abs_diff(value, &expected[&format!("{component}.{layer}")]);
            assert!(difference < TOLERANCE, "{family} {component} layer {layer} differs by {difference}");
        }
    }
    let checked: std::collections::BTreeSet<_> = whole.iter().chain(&recurrent).map(|(c, _)| c.clone()).collect();
    assert_eq!(checked.len(), catalog_sites, "{family}: every catalog site has a reference");
}

#[test]
fn crnn_matches_easyocr_at_every_site() {
    matches_reference_at_every_site("vene_crnn", "crnn");
}

#[test]
fn efficientnet_lite_matches_its_reference_at_every_site() {
    matches_reference_at_every_site("vene_efficientnet", "efficientnet");
}

#[test]
fn silero_vad_matches_its_reference_at_every_site() {
    matches_reference_at_every_site("vene_silero", "silero");
}

#[test]
fn lstm_sites_report_the_sequence_position_in_both_directions() {
    // In the last BiLSTM, zeroing the forward direction's state at the last column moves only that column's output;
    // the reverse direction starts at the last column, so zeroing its state there moves every column.
    let plugins = plugins(&["vene_crnn"]);
    let model = LoadedModel::load(&plugins, &fixtures().join("crnn/model"), DeviceSpec::CPU, DTypeSpec::F32).unwrap();
    let input = Tensor::read_safetensors(fixtures().join("crnn/sites.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "input")
        .unwrap()
        .1;
    let plain = model.forward_plain(&ForwardInputs::from_features(input.shallow_clone())).unwrap().output;
    let steps = plain.size()[1];
    let zero_at = |model: LoadedModel, component: &str| {
        let config: IntervenableConfig = serde_json::from_value(json!({"representations": [{
            "layer": 1, "component": component, "unit": "t", "max_number_of_units": 1,
            "intervention": {"type": "zero"}}]}))
        .unwrap();
        let mut intervenable = IntervenableModel::new(model, config, &plugins, 0).unwrap();
        let locations = UnitLocations::parse(Some(&json!({"base": [[[steps - 1], [steps - 1]]]}))).unwrap();
        let out = intervenable
            .run(&ForwardInputs::from_features(input.shallow_clone()), &[], &locations, &Subspaces::None)
            .unwrap();
        (out.output, intervenable.into_model())
    };
    let moved = |a: &Tensor, b: &Tensor| -> Vec<bool> {
        (0..steps).map(|t| max_abs_diff(&a.select(1, t), &b.select(1, t)) > 1e-6).collect()
    };
    let (forward, model) = zero_at(model, "cell_output");
    let (reverse, _) = zero_at(model, "cell_output_reverse");
    let mut only_last = vec![false; steps as usize];
    only_last[steps as usize - 1] = true;
    assert_eq!(moved(&forward, &plain), only_last, "forward state at the last column feeds nothing earlier");
    assert!(moved(&reverse, &plain).iter().all(|&m| m), "the reverse state at the last column feeds every column");
}
