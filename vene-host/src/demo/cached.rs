//! The real-model studies' items (facts, wording × layer combinations, continuations, DAS cells) through the demo's
//! item cache:
//! a second `vene demo` with the same model and grid reads them back instead of computing them again, and reports
//! how many it reused.

use std::collections::BTreeMap;

use serde_json::json;

use super::plan::Progress;
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    sharding::{sha256_hex, ItemCache},
    studies::{
        facts::{self, Fact, FactsTrace},
        interchange_search::{self, InterchangeSearch, SearchSetup},
        probe::{self, DasProbe, ProbeSetup},
        sentiment::{self, SentimentSetup, SentimentSteering},
        tracing::{self, TraceOptions},
    },
    text::TextTokenizer,
};

/// What a cached study needs besides its own inputs.
pub struct Context<'a> {
    pub plugins: &'a PluginSet,
    pub tokenizer: &'a TextTokenizer,
    pub cache: &'a ItemCache,
}

fn digest(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    let bytes = serde_json::to_vec(value).map_err(|e| VeneError::Config(e.to_string()))?;
    Ok(json!(sha256_hex(&bytes)))
}

fn named(options: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
    options.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
}

/// `items` of `study` through the cache, with progress and, at the end, how many were read back.
fn run<I, R>(
    context: &Context,
    (study, settings): (&'static str, BTreeMap<String, serde_json::Value>),
    items: &[(String, I)],
    model: LoadedModel,
    compute: impl FnMut(LoadedModel, &I) -> Result<(R, LoadedModel)>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Vec<R>, LoadedModel)>
where
    I: serde::Serialize + serde::de::DeserializeOwned + Clone,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let step = |done, total| progress(Progress::Study { study, done, total });
    let (cached, model) = context.cache.run(study, settings, items, model, compute, step)?;
    progress(Progress::Reused { study, reused: cached.reused, total: items.len() });
    Ok((cached.results, model))
}

/// [`facts::trace_facts`], one item per fact.
pub fn trace_facts(
    model: LoadedModel,
    context: &Context,
    facts: &[Fact],
    options: &TraceOptions,
    study: &'static str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(FactsTrace, LoadedModel)> {
    let level = tracing::noise_level(&model, options)?;
    let items: Vec<(String, Fact)> =
        facts.iter().enumerate().map(|(i, f)| (format!("fact-{i:04}"), f.clone())).collect();
    let settings = named(&[
        ("--samples", json!(options.samples)),
        ("--noise", json!(options.noise_scale)),
        ("--window", json!(options.window)),
        ("--seed", json!(options.seed)),
        ("the facts' sha256", digest(&facts)?),
    ]);
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, fact: &Fact| facts::trace_fact(model, plugins, tokenizer, fact, level, options);
    let (results, model) = run(context, (study, settings), &items, model, compute, progress)?;
    Ok((facts::assemble(facts.iter().cloned().zip(results).collect())?, model))
}

/// [`interchange_search::search`], one item per wording × first layer.
pub fn search(
    model: LoadedModel,
    context: &Context,
    setup: &SearchSetup,
    study: &'static str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(InterchangeSearch, LoadedModel)> {
    let layers = model.catalog().num_layers as usize;
    let items: Vec<_> = interchange_search::search_items(setup.wordings.len(), layers)
        .into_iter()
        .map(|item| (item.id(), item))
        .collect();
    let settings = named(&[
        ("the wordings' sha256", digest(&setup.wordings)?),
        ("--target", json!(setup.target)),
        ("--component", json!(setup.component)),
        ("--serial-stride", json!(setup.serial_stride)),
    ]);
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, item: &_| interchange_search::try_item(model, plugins, tokenizer, setup, *item);
    let (results, model) = run(context, (study, settings), &items, model, compute, progress)?;
    Ok((interchange_search::assemble(setup, results), model))
}

/// [`probe::das_vs_probe`], one item per layer × position cell.
pub fn das_vs_probe(
    model: LoadedModel,
    context: &Context,
    setup: &ProbeSetup,
    study: &'static str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(DasProbe, LoadedModel)> {
    let plan = probe::plan(context.tokenizer, setup, model.catalog().num_layers as usize)?;
    let items: Vec<_> = plan.cells().into_iter().map(|cell| (cell.id(), cell)).collect();
    let settings = named(&[
        ("--template", json!(setup.template)),
        ("the classes' sha256", digest(&setup.classes)?),
        ("--positions", json!(setup.budget.positions)),
        ("--pairs", json!(setup.budget.pairs)),
        ("--epochs", json!(setup.budget.epochs)),
    ]);
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, cell: &_| probe::measure_cell(model, plugins, tokenizer, setup, &plan, *cell);
    let (results, model) = run(context, (study, settings), &items, model, compute, progress)?;
    Ok((plan.assemble(&results)?, model))
}

/// [`sentiment::sentiment_steering`], one item per continuation.
pub fn steering(
    model: LoadedModel,
    context: &Context,
    setup: &SentimentSetup,
    study: &'static str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(SentimentSteering, LoadedModel)> {
    let items: Vec<_> = sentiment::steering_runs(setup)
        .into_iter()
        .enumerate()
        .map(|(i, run)| (format!("continuation-{i:04}"), run))
        .collect();
    let settings = named(&[("the study's sha256", digest(setup)?)]);
    let inputs = sentiment::steering_inputs(&model, context.tokenizer, setup)?;
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, run: &_| sentiment::steer_once(model, plugins, tokenizer, (setup, &inputs), *run);
    let (results, model) = run(context, (study, settings), &items, model, compute, progress)?;
    Ok((sentiment::assemble(setup, results), model))
}
