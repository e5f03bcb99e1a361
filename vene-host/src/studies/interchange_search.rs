//! The paper's multi-source interchange searched over wordings and layers: a real model answers a mixed prompt only
//! at some layers and for some wordings, so every combination tried is recorded with its top-5 next tokens, and the
//! best and a failure are named.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    interchange::{parallel_interchange, serial_interchange, InterchangeSetup, SerialSetup},
    SweepOptions, TopWords,
};
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One wording of the study: the base prompt, the source giving the attribute ("language") and the source giving
/// the entity ("Italy"); each source differs from the base in one token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wording {
    pub base: String,
    pub attribute_source: String,
    pub entity_source: String,
}

/// One combination tried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub wording: usize,
    /// "parallel" or "serial".
    pub mode: String,
    /// Parallel: both sources at this layer. Serial: the attribute enters the entity prompt at `layer`, whose last
    /// position goes into the base at `second_layer`.
    pub layer: usize,
    pub second_layer: Option<usize>,
    pub top: TopWords,
    /// p(target) when the target is among the top 5, else 0.
    pub target_probability: f64,
}

/// Everything the search found.
#[derive(Debug, Clone, Serialize)]
pub struct InterchangeSearch {
    pub target: String,
    pub component: String,
    pub wordings: Vec<Wording>,
    /// Each wording's base prompt's top 5, unchanged.
    pub base_top: Vec<TopWords>,
    /// Per wording, the token positions of the attribute and the entity, and of the last token.
    pub positions: Vec<[usize; 3]>,
    pub attempts: Vec<Attempt>,
}

/// The position at which `source` differs from `base` (same token count, one token changed).
fn changed_position(tokenizer: &TextTokenizer, base: &str, source: &str) -> Result<(usize, usize)> {
    let (b, s) = (tokenizer.encode(base)?, tokenizer.encode(source)?);
    let differing: Vec<usize> = (0..b.len().min(s.len())).filter(|&i| b[i] != s[i]).collect();
    match (b.len() == s.len(), differing.as_slice()) {
        (true, [position]) => Ok((*position, b.len())),
        _ => Err(VeneError::Inputs(format!(
            "the source {source:?} must differ from the base {base:?} in exactly one token ({} vs {} tokens, {} \
             differing)",
            s.len(),
            b.len(),
            differing.len()
        ))),
    }
}

/// What the search tries: the wordings, the token the mix should produce, the component swapped, and the stride of
/// the serial chains' second hop.
#[derive(Debug, Clone)]
pub struct SearchSetup<'a> {
    pub wordings: &'a [Wording],
    pub target: &'a str,
    pub component: &'a str,
    pub serial_stride: usize,
}

/// One item of the search: a wording and the layer of the first (or only) swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchItem {
    pub wording: usize,
    pub layer: usize,
}

impl SearchItem {
    /// The item's stable id in a sweep, e.g. `wording-000-layer-004`.
    pub fn id(&self) -> String {
        format!("wording-{:03}-layer-{:03}", self.wording, self.layer)
    }
}

/// What one item found: the parallel attempt at its layer and every serial chain starting there, the wording's
/// token positions and, at layer 0, the base prompt's own top 5.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemAttempts {
    pub attempts: Vec<Attempt>,
    pub positions: [usize; 3],
    pub base_top: Option<TopWords>,
}

/// Every item of the search, with its id, on a model with `layers` layers: wording by wording and layer by layer.
pub fn search_items(wordings: usize, layers: usize) -> Vec<(String, SearchItem)> {
    (0..wordings)
        .flat_map(|wording| (0..layers).map(move |layer| SearchItem { wording, layer }))
        .map(|item| (item.id(), item))
        .collect()
}

impl SearchSetup<'_> {
    /// What decides the items' results besides the model.
    pub fn sweep_options(&self) -> Result<SweepOptions> {
        Ok(vec![
            ("the wordings' sha256", json!(crate::sharding::json_sha256(&self.wordings)?)),
            ("--target", json!(self.target)),
            ("--component", json!(self.component)),
            ("--serial-stride", json!(self.serial_stride)),
        ])
    }
}

/// Tries one item: its wording in parallel at its layer, and in series from its layer with the second hop at each
/// later layer in steps of the setup's stride.
pub fn try_item(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SearchSetup,
    item: SearchItem,
) -> Result<(ItemAttempts, LoadedModel)> {
    let layers = model.catalog().num_layers as usize;
    let wording = setup.wordings.get(item.wording).ok_or_else(|| {
        VeneError::Inputs(format!("wording {} of {} does not exist", item.wording, setup.wordings.len()))
    })?;
    let (attribute, length) = changed_position(tokenizer, &wording.base, &wording.attribute_source)?;
    let (entity, _) = changed_position(tokenizer, &wording.base, &wording.entity_source)?;
    let last = length as i64 - 1;
    let scored = |top: TopWords| {
        let target_probability = top.iter().find(|(word, _)| word == setup.target).map_or(0.0, |(_, p)| *p);
        (top, target_probability)
    };
    let component = setup.component.to_string();
    let parallel = InterchangeSetup {
        base: wording.base.clone(),
        sources: vec![
            (wording.attribute_source.clone(), attribute as i64),
            (wording.entity_source.clone(), entity as i64),
        ],
        layer: item.layer as i64,
        component: component.clone(),
    };
    let (plain, top, mut model) = parallel_interchange(model, plugins, tokenizer, &parallel)?;
    let (top, target_probability) = scored(top);
    let attempt = |mode: &str, second_layer, (top, target_probability)| Attempt {
        wording: item.wording,
        mode: mode.to_string(),
        layer: item.layer,
        second_layer,
        top,
        target_probability,
    };
    let mut attempts = vec![attempt("parallel", None, (top, target_probability))];
    for second in (item.layer + 1..layers).step_by(setup.serial_stride.max(1)) {
        let serial = SerialSetup {
            base: wording.base.clone(),
            sources: vec![(wording.attribute_source.clone(), attribute as i64), (wording.entity_source.clone(), last)],
            hops: vec![(item.layer as i64, component.clone()), (second as i64, component.clone())],
        };
        let (_, top, returned) = serial_interchange(model, plugins, tokenizer, &serial)?;
        model = returned;
        attempts.push(attempt("serial", Some(second), scored(top)));
    }
    let found = ItemAttempts {
        attempts,
        positions: [attribute, entity, length - 1],
        base_top: (item.layer == 0).then_some(plain),
    };
    Ok((found, model))
}

/// The search from every item's attempts, given in [`search_items`]' order.
pub fn assemble(setup: &SearchSetup, items: Vec<ItemAttempts>) -> InterchangeSearch {
    let mut found = InterchangeSearch {
        target: setup.target.to_string(),
        component: setup.component.to_string(),
        wordings: setup.wordings.to_vec(),
        base_top: Vec::new(),
        positions: Vec::new(),
        attempts: Vec::new(),
    };
    for item in items {
        if let Some(top) = item.base_top {
            found.base_top.push(top);
            found.positions.push(item.positions);
        }
        found.attempts.extend(item.attempts);
    }
    found
}

/// Tries every wording at every layer of `component` in parallel, and in series with the second hop at each later
/// layer in steps of `serial_stride`; `progress(done, total)` after each wording × layer.
pub fn search(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    setup: &SearchSetup,
    progress: impl FnMut(usize, usize),
) -> Result<(InterchangeSearch, LoadedModel)> {
    let items = search_items(setup.wordings.len(), model.catalog().num_layers as usize);
    let compute = |model, item: &SearchItem| try_item(model, plugins, tokenizer, setup, *item);
    let (found, model) = super::run_items(&items, model, compute, progress)?;
    Ok((assemble(setup, found), model))
}

impl InterchangeSearch {
    /// The attempt of `mode` with the highest p(target), if any put the target in its top 5.
    pub fn best(&self, mode: &str) -> Option<&Attempt> {
        self.attempts
            .iter()
            .filter(|a| a.mode == mode && a.target_probability > 0.0)
            .max_by(|a, b| a.target_probability.total_cmp(&b.target_probability))
    }

    /// How many attempts of `mode` put the target in the top 5, of how many.
    pub fn hits(&self, mode: &str) -> (usize, usize) {
        let of_mode = self.attempts.iter().filter(|a| a.mode == mode);
        (of_mode.clone().filter(|a| a.target_probability > 0.0).count(), of_mode.count())
    }

    /// Per wording and layer, p(target) of the parallel interchange: `[wording][layer]`.
    pub fn parallel_grid(&self) -> Vec<Vec<f64>> {
        (0..self.wordings.len())
            .map(|w| {
                self.attempts
                    .iter()
                    .filter(|a| a.wording == w && a.mode == "parallel")
                    .map(|a| a.target_probability)
                    .collect()
            })
            .collect()
    }
}

/// interchange-search's numbers and summary (the best combination of each mode).
pub fn study_output(found: &InterchangeSearch) -> Result<super::output::StudyOutput> {
    let mut lines = Vec::new();
    for mode in ["parallel", "serial"] {
        let (hits, of) = found.hits(mode);
        let best = found.best(mode).map_or("none".to_string(), |a| {
            let second = a.second_layer.map_or(String::new(), |s| format!(" → {s}"));
            format!("wording {}, layer {}{second}: {}", a.wording + 1, a.layer, super::output::format_top(&a.top))
        });
        lines.push(format!("{mode}: {:?} in the top 5 in {hits} of {of}; best {best}", found.target));
    }
    super::output::StudyOutput::new("interchange_search.json", found, Vec::new(), lines.join("\n"))
}
