//! The paper's multi-source interchange searched over wordings and layers: a real model answers a mixed prompt only
//! at some layers and for some wordings, so every combination tried is recorded with its top-5 next tokens, and the
//! best and a failure are named.

use serde::{Deserialize, Serialize};

use super::{
    interchange::{parallel_interchange, serial_interchange, InterchangeSetup, SerialSetup},
    TopWords,
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
#[derive(Debug, Clone, Serialize)]
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

/// Tries every wording at every layer of `component` in parallel, and in series with the second hop at each later
/// layer in steps of `serial_stride`; `progress(done, total)` after each wording.
pub fn search(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    (wordings, target, component): (&[Wording], &str, &str),
    serial_stride: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(InterchangeSearch, LoadedModel)> {
    let layers = model.catalog().num_layers as usize;
    let mut model = model;
    let mut attempts = Vec::new();
    let mut base_top = Vec::new();
    let mut positions = Vec::new();
    for (index, wording) in wordings.iter().enumerate() {
        let (attribute, length) = changed_position(tokenizer, &wording.base, &wording.attribute_source)?;
        let (entity, _) = changed_position(tokenizer, &wording.base, &wording.entity_source)?;
        let last = length as i64 - 1;
        positions.push([attribute, entity, length - 1]);
        let scored = |top: TopWords| {
            let target_probability = top.iter().find(|(word, _)| word == target).map_or(0.0, |(_, p)| *p);
            (top, target_probability)
        };
        for layer in 0..layers {
            let setup = InterchangeSetup {
                base: wording.base.clone(),
                sources: vec![
                    (wording.attribute_source.clone(), attribute as i64),
                    (wording.entity_source.clone(), entity as i64),
                ],
                layer: layer as i64,
                component: component.to_string(),
            };
            let (plain, top, returned) = parallel_interchange(model, plugins, tokenizer, &setup)?;
            model = returned;
            if layer == 0 {
                base_top.push(plain);
            }
            let (top, target_probability) = scored(top);
            attempts.push(Attempt {
                wording: index,
                mode: "parallel".to_string(),
                layer,
                second_layer: None,
                top,
                target_probability,
            });
            for second in (layer + 1..layers).step_by(serial_stride.max(1)) {
                let setup = SerialSetup {
                    base: wording.base.clone(),
                    sources: vec![
                        (wording.attribute_source.clone(), attribute as i64),
                        (wording.entity_source.clone(), last),
                    ],
                    hops: vec![(layer as i64, component.to_string()), (second as i64, component.to_string())],
                };
                let (_, top, returned) = serial_interchange(model, plugins, tokenizer, &setup)?;
                model = returned;
                let (top, target_probability) = scored(top);
                attempts.push(Attempt {
                    wording: index,
                    mode: "serial".to_string(),
                    layer,
                    second_layer: Some(second),
                    top,
                    target_probability,
                });
            }
        }
        progress(index + 1, wordings.len());
    }
    let found = InterchangeSearch {
        target: target.to_string(),
        component: component.to_string(),
        wordings: wordings.to_vec(),
        base_top,
        positions,
        attempts,
    };
    Ok((found, model))
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
