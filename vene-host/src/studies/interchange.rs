//! Multi-source interchange: tokens of several sources replace the base's at their positions, in parallel.

use serde_json::json;

use super::{bind, ids, top_words, TopWords};
use crate::{
    error::Result,
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
