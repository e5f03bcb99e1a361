//! The real-model studies' items (facts, wording × layer combinations, continuations, DAS cells, path-patching
//! senders) through the demo's
//! item cache: a second `vene demo` with the same model and grid reads them back instead of computing them again,
//! and reports how many it reused. Each study's items and options are the ones its sharded command uses.

use super::plan::Progress;
use crate::{
    error::Result,
    model::LoadedModel,
    plugins::PluginSet,
    sharding::ItemCache,
    studies::{
        facts::{self, Fact, FactsTrace},
        interchange_search::{self, InterchangeSearch, SearchItem, SearchSetup},
        path_patching::{self, Baseline, PathBatch, PathOptions, PathPatching},
        probe::{self, DasProbe, ProbeCell, ProbeSetup},
        sentiment::{self, SentimentSetup, SentimentSteering, SteeringRun},
        tracing::{self, TraceOptions},
        SweepOptions,
    },
    text::TextTokenizer,
};

/// What a cached study needs besides its own inputs.
pub struct Context<'a> {
    pub plugins: &'a PluginSet,
    pub tokenizer: &'a TextTokenizer,
    pub cache: &'a ItemCache,
}

/// `items` of `study` through the cache, with progress and, at the end, how many were read back.
fn run<I, R>(
    context: &Context,
    (study, options): (&'static str, SweepOptions),
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
    let (cached, model) = context.cache.run(study, &options, items, model, compute, step)?;
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
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, fact: &Fact| facts::trace_fact(model, plugins, tokenizer, fact, level, options);
    let settings = (study, facts::sweep_options(facts, options)?);
    let (results, model) = run(context, settings, &facts::sweep_items(facts), model, compute, progress)?;
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
    let items = interchange_search::search_items(setup.wordings.len(), model.catalog().num_layers as usize);
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, item: &SearchItem| interchange_search::try_item(model, plugins, tokenizer, setup, *item);
    let (results, model) = run(context, (study, setup.sweep_options()?), &items, model, compute, progress)?;
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
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, cell: &ProbeCell| probe::measure_cell(model, plugins, tokenizer, setup, &plan, *cell);
    let settings = (study, setup.sweep_options()?);
    let (results, model) = run(context, settings, &plan.sweep_items(), model, compute, progress)?;
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
    let inputs = sentiment::steering_inputs(&model, context.tokenizer, setup)?;
    let (plugins, tokenizer) = (context.plugins, context.tokenizer);
    let compute = |model, run: &SteeringRun| sentiment::steer_once(model, plugins, tokenizer, (setup, &inputs), *run);
    let settings = (study, setup.sweep_options()?);
    let (results, model) = run(context, settings, &sentiment::steering_runs(setup), model, compute, progress)?;
    Ok((sentiment::assemble(setup, results), model))
}

/// [`path_patching::sender_effects`], one item per sender head.
pub fn path_patching(
    model: LoadedModel,
    context: &Context,
    (batch, options): (&PathBatch, &PathOptions),
    senders: &[(u32, u32)],
    study: &'static str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(PathPatching, LoadedModel)> {
    let baseline = Baseline::measure(&model, batch)?;
    let plugins = context.plugins;
    let compute = |model: LoadedModel, sender: &(u32, u32)| {
        let effects = path_patching::sender_effects(&model, plugins, batch, &baseline, *sender, options)?;
        Ok((effects, model))
    };
    let settings = (study, path_patching::sweep_options(batch, options)?);
    let (results, model) = run(context, settings, &path_patching::items(senders), model, compute, progress)?;
    Ok((path_patching::assemble(path_patching::Shape::of(&model, batch), options, baseline, results), model))
}
