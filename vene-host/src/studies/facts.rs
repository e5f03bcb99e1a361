//! Causal tracing over many facts, averaged the way Meng et al. (2022) average their Figure 2: each fact's restored
//! probabilities grouped by position class (first / middle / last subject token, first token after the subject,
//! further tokens, last token) × layer, then the mean over the facts that have the class. Only facts the model knows
//! (its top-1 next token is the target's first token) are traced; the others are listed with their top-1.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    output::StudyOutput,
    tracing::{self, Trace, TraceOptions, TracePrompt},
    SweepOptions,
};
use crate::{
    error::{Result, VeneError},
    model::{ForwardInputs, LoadedModel},
    plugins::PluginSet,
    text::TextTokenizer,
};

/// One line of a facts file: `{"prompt": …, "subject": …, "target": …}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fact {
    pub prompt: String,
    pub subject: String,
    pub target: String,
}

/// The position classes of Meng et al.'s averaged figures, in row order.
pub const POSITION_CLASSES: [&str; 6] = [
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
];

/// A fact that was traced, with its trace.
#[derive(Debug, Clone, Serialize)]
pub struct TracedFact {
    #[serde(flatten)]
    pub fact: Fact,
    pub trace: Trace,
}

/// A fact that was not traced, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFact {
    #[serde(flatten)]
    pub fact: Fact,
    pub reason: String,
}

/// The mean over facts of one class × layer grid per sweep.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMeans {
    pub classes: Vec<String>,
    /// How many facts have each class (a one-token subject has no middle tokens).
    pub facts_per_class: Vec<usize>,
    pub clean: f64,
    pub corrupted: f64,
    pub block_output: Vec<Vec<f64>>,
    pub mlp_output: Vec<Vec<f64>>,
    pub attention_output: Vec<Vec<f64>>,
}

/// Everything `vene trace --facts` writes to trace.json.
#[derive(Debug, Clone, Serialize)]
pub struct FactsTrace {
    pub by_class: ClassMeans,
    pub traced: Vec<TracedFact>,
    pub skipped: Vec<SkippedFact>,
}

/// Reads a JSON-lines facts file; a bad line is an error naming its number.
pub fn read_facts(path: &Path) -> Result<Vec<Fact>> {
    let text = std::fs::read_to_string(path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })?;
    parse_facts(&text, &path.display().to_string())
}

/// Parses JSON-lines facts; `origin` names where they came from in errors.
pub fn parse_facts(text: &str, origin: &str) -> Result<Vec<Fact>> {
    let facts =
        super::parse_numbered_json_lines::<Fact>(text, origin, "{\"prompt\": …, \"subject\": …, \"target\": …}")?;
    for (line, fact) in &facts {
        if !fact.prompt.contains(fact.subject.trim()) || fact.subject.trim().is_empty() {
            return Err(VeneError::Inputs(format!(
                "{origin} line {line}: the subject {:?} is not in the prompt {:?} (the subject is the prompt's words \
                 that name the entity, e.g. \"The Eiffel Tower\")",
                fact.subject, fact.prompt
            )));
        }
    }
    Ok(facts.into_iter().map(|(_, fact)| fact).collect())
}

/// The positions of each class in a `seq`-token prompt whose subject is `[start, end)`. A one-token subject is both
/// its first and its last token; a subject followed directly by the last token has no subsequent tokens.
pub fn position_classes(seq: usize, (start, end): (usize, usize)) -> [Vec<usize>; 6] {
    let last = seq - 1;
    let after: Vec<usize> = (end..last).collect();
    [
        vec![start],
        (start + 1..end.saturating_sub(1)).collect(),
        vec![end - 1],
        after.first().copied().into_iter().collect(),
        after.iter().skip(1).copied().collect(),
        vec![last],
    ]
}

/// What became of one fact: traced, or skipped with the reason (the model does not know it, or the subject is not a
/// token span of the prompt).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactOutcome {
    Traced(Trace),
    Skipped(String),
}

/// Traces `fact` if the model knows it, with noise of standard deviation `level` ([`tracing::noise_level`]).
pub fn trace_fact(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    fact: &Fact,
    level: f64,
    options: &TraceOptions,
) -> Result<(FactOutcome, LoadedModel)> {
    let prompt = match TracePrompt::from_text(tokenizer, &fact.prompt, &fact.subject, &fact.target)? {
        Ok(prompt) => prompt,
        Err(reason) => return Ok((FactOutcome::Skipped(reason), model)),
    };
    let top = top_token(&model, &prompt.tokens)?;
    if top != prompt.target {
        let reason = format!("the model's top-1 next token is {:?}, not the target", tokenizer.decode(&[top]));
        return Ok((FactOutcome::Skipped(reason), model));
    }
    let (trace, model) = tracing::trace_at_level(model, plugins, &prompt, level, options, |_, _| {})?;
    Ok((FactOutcome::Traced(trace), model))
}

/// Traces every fact the model knows; `progress(done, total)` after each fact.
pub fn trace_facts(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
    facts: &[Fact],
    options: &TraceOptions,
    progress: impl FnMut(usize, usize),
) -> Result<(FactsTrace, LoadedModel)> {
    let level = tracing::noise_level(&model, options)?;
    let compute = |model, fact: &Fact| trace_fact(model, plugins, tokenizer, fact, level, options);
    let (outcomes, model) = super::run_items(&sweep_items(facts), model, compute, progress)?;
    Ok((assemble(facts.iter().cloned().zip(outcomes).collect())?, model))
}

/// The facts as a sweep's items: `fact-NNNN` by their place in the list.
pub fn sweep_items(facts: &[Fact]) -> Vec<(String, Fact)> {
    facts.iter().enumerate().map(|(i, fact)| (format!("fact-{i:04}"), fact.clone())).collect()
}

/// What decides the facts' traces besides the model.
pub fn sweep_options(facts: &[Fact], options: &TraceOptions) -> Result<SweepOptions> {
    Ok(vec![
        ("--samples", json!(options.samples)),
        ("--noise", json!(options.noise_scale)),
        ("--window", json!(options.window)),
        ("--seed", json!(options.seed)),
        ("the facts' sha256", json!(crate::sharding::json_sha256(&facts)?)),
    ])
}

/// The facts' outcomes, in the facts' order, as one result: the traced facts, the skipped ones and the means by
/// position class. An error if no fact was traced.
pub fn assemble(outcomes: Vec<(Fact, FactOutcome)>) -> Result<FactsTrace> {
    let total = outcomes.len();
    let mut traced = Vec::new();
    let mut skipped = Vec::new();
    for (fact, outcome) in outcomes {
        match outcome {
            FactOutcome::Traced(trace) => traced.push(TracedFact { fact, trace }),
            FactOutcome::Skipped(reason) => skipped.push(SkippedFact { fact, reason }),
        }
    }
    if traced.is_empty() {
        let reasons: Vec<String> =
            skipped.iter().take(3).map(|s| format!("{:?}: {}", s.fact.prompt, s.reason)).collect();
        let more = if total > 3 { format!("; and {} more", total - 3) } else { String::new() };
        return Err(VeneError::Inputs(format!(
            "none of the {total} facts could be traced: {}{more}",
            reasons.join("; ")
        )));
    }
    let traces: Vec<Trace> = traced.iter().map(|t| t.trace.clone()).collect();
    Ok(FactsTrace { by_class: class_means(&traces), traced, skipped })
}

/// The study's figures (the averaged heatmaps), numbers and summary, for `vene trace --facts` and its merge alike.
pub fn study_output(result: &FactsTrace, out: &Path) -> Result<StudyOutput> {
    let means = &result.by_class;
    let title = |name: &str| format!("restored p(target), mean over {} known facts — {name}", result.traced.len());
    let figures = tracing::heatmaps(means.sweeps(), &means.classes, title, means.clean.max(1e-9));
    let peaks: Vec<String> = means
        .peaks()
        .iter()
        .map(|(sweep, class, layer, value)| format!("{sweep} peaks at the {class}, layer {layer} ({value:.3})"))
        .collect();
    let summary = format!(
        "{} of {} facts known and traced (clean p {:.3}, corrupted {:.3} on average); {}; wrote trace.json and the \
         averaged heatmaps to {}",
        result.traced.len(),
        result.traced.len() + result.skipped.len(),
        means.clean,
        means.corrupted,
        peaks.join("; "),
        out.display()
    );
    StudyOutput::new("trace.json", result, figures, summary)
}

fn top_token(model: &LoadedModel, tokens: &[i64]) -> Result<i64> {
    let _no_grad = tch::no_grad_guard();
    let ids = tch::Tensor::from_slice(tokens).view([1, -1]).to_device(model.device());
    let output = model.forward_plain(&ForwardInputs::from_ids(ids).reading_last_position())?.output;
    Ok(output.view([-1]).argmax(0, false).int64_value(&[]))
}

/// Each trace's cells averaged within each position class, then over the traces that have the class.
pub fn class_means(traces: &[Trace]) -> ClassMeans {
    let layers = traces.first().map_or(0, |t| t.block_output.first().map_or(0, Vec::len));
    let count = traces.len().max(1) as f64;
    let mut facts_per_class = vec![0; POSITION_CLASSES.len()];
    let mut sums = vec![vec![vec![0.0; layers]; POSITION_CLASSES.len()]; 3];
    for trace in traces {
        let classes = position_classes(trace.tokens.len(), trace.subject);
        for (class, positions) in classes.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            facts_per_class[class] += 1;
            for (sweep, (_, grid)) in trace.sweeps().iter().enumerate() {
                for (layer, sum) in sums[sweep][class].iter_mut().enumerate() {
                    *sum += positions.iter().map(|&p| grid[p][layer]).sum::<f64>() / positions.len() as f64;
                }
            }
        }
    }
    for grids in &mut sums {
        for (class, row) in grids.iter_mut().enumerate() {
            row.iter_mut().for_each(|cell| *cell /= facts_per_class[class].max(1) as f64);
        }
    }
    let attention_output = sums.pop().unwrap_or_default();
    let mlp_output = sums.pop().unwrap_or_default();
    let block_output = sums.pop().unwrap_or_default();
    ClassMeans {
        classes: POSITION_CLASSES.iter().map(|c| c.to_string()).collect(),
        facts_per_class,
        clean: traces.iter().map(|t| t.clean).sum::<f64>() / count,
        corrupted: traces.iter().map(|t| t.corrupted).sum::<f64>() / count,
        block_output,
        mlp_output,
        attention_output,
    }
}

impl ClassMeans {
    pub fn sweeps(&self) -> tracing::Sweeps<'_> {
        [
            ("block_output", &self.block_output),
            ("mlp_output", &self.mlp_output),
            ("attention_output", &self.attention_output),
        ]
    }

    /// Per sweep, where the mean restoration peaks: `(sweep, class, layer, value)`.
    pub fn peaks(&self) -> Vec<(&'static str, &str, usize, f64)> {
        self.sweeps()
            .iter()
            .map(|(sweep, grid)| {
                let (class, layer, value) = grid
                    .iter()
                    .enumerate()
                    .flat_map(|(c, row)| row.iter().enumerate().map(move |(l, &v)| (c, l, v)))
                    .filter(|&(c, _, _)| self.facts_per_class[c] > 0)
                    .fold((0, 0, f64::MIN), |best, cell| if cell.2 > best.2 { cell } else { best });
                (*sweep, self.classes[class].as_str(), layer, value)
            })
            .collect()
    }
}
