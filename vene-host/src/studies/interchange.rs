//! Multi-source interchange: tokens of several sources replace the base's at their positions, in parallel, or pass
//! along a chain of sources into the base, in series.

use serde_json::json;

use super::{bind, ids, top_words, TopWords};
use crate::{
    error::{Result, VeneError},
    locations::{Subspaces, UnitLocations},
    model::LoadedModel,
    plugins::PluginSet,
    text::TextTokenizer,
};

/// A parallel interchange: each source's token at its position replaces the base's token representation at the
/// same position (`component` at `layer`).
#[derive(Debug, Clone)]
pub struct InterchangeSetup {
    pub base: String,
    /// Source text and the token position taken from it.
    pub sources: Vec<(String, i64)>,
    pub layer: i64,
    pub component: String,
}

/// The base's and the intervened run's top-5 next words.
pub fn parallel_interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &InterchangeSetup,
) -> Result<(TopWords, TopWords, LoadedModel)> {
    let device = model.device();
    let _no_grad = tch::no_grad_guard();
    let base = ids(tokenizer, &setup.base, device)?;
    let base_top = top_words(tokenizer, &model.forward_plain(&base)?.output)?;
    let representations: Vec<_> = (0..setup.sources.len())
        .map(|group| {
            json!({"layer": setup.layer, "component": setup.component, "group_key": group,
                            "intervention": {"type": "vanilla"}})
        })
        .collect();
    let mut parallel = bind(model, plugins, json!({"mode": "parallel", "representations": representations}))?;
    let positions: Vec<_> = setup.sources.iter().map(|(_, p)| json!([[p]])).collect();
    let locations = UnitLocations::parse(Some(&json!({"sources->base": [positions, positions]})))?;
    let sources =
        setup.sources.iter().map(|(text, _)| ids(tokenizer, text, device).map(Some)).collect::<Result<Vec<_>>>()?;
    let output = parallel.run(&base, &sources, &locations, &Subspaces::None)?.output;
    Ok((base_top, top_words(tokenizer, &output)?, parallel.into_model()))
}

/// A serial interchange: hop `i` takes `sources[i]`'s token at its position and writes it into the next prompt of
/// the chain (`sources[i + 1]`, already changed by the hops before, or the base after the last) at the same position,
/// at hop `i`'s layer and component.
#[derive(Debug, Clone)]
pub struct SerialSetup {
    pub base: String,
    /// Source text and the token position taken from it (and written in the next prompt).
    pub sources: Vec<(String, i64)>,
    /// Layer and component of each hop, one per source.
    pub hops: Vec<(i64, String)>,
}

/// The base's and the chained run's top-5 next words.
pub fn serial_interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SerialSetup,
) -> Result<(TopWords, TopWords, LoadedModel)> {
    if setup.hops.len() != setup.sources.len() {
        return Err(VeneError::Config(format!(
            "a serial interchange needs one hop (layer and component) per source: {} source(s), {} hop(s)",
            setup.sources.len(),
            setup.hops.len()
        )));
    }
    let device = model.device();
    let _no_grad = tch::no_grad_guard();
    let base = ids(tokenizer, &setup.base, device)?;
    let base_top = top_words(tokenizer, &model.forward_plain(&base)?.output)?;
    let representations: Vec<_> = setup
        .hops
        .iter()
        .enumerate()
        .map(|(group, (layer, component))| {
            json!({"layer": layer, "component": component, "group_key": group, "intervention": {"type": "vanilla"}})
        })
        .collect();
    let mut serial = bind(model, plugins, json!({"mode": "serial", "representations": representations}))?;
    let hops: serde_json::Map<String, serde_json::Value> = setup
        .sources
        .iter()
        .enumerate()
        .map(|(i, (_, position))| {
            let next = if i + 1 == setup.sources.len() { "base".to_string() } else { format!("source_{}", i + 1) };
            (format!("source_{i}->{next}"), json!([[[[position]]], [[[position]]]]))
        })
        .collect();
    let locations = UnitLocations::parse(Some(&serde_json::Value::Object(hops)))?;
    let sources =
        setup.sources.iter().map(|(text, _)| ids(tokenizer, text, device).map(Some)).collect::<Result<Vec<_>>>()?;
    let output = serial.run(&base, &sources, &locations, &Subspaces::None)?.output;
    Ok((base_top, top_words(tokenizer, &output)?, serial.into_model()))
}
