//! The demo's studies on the real pretrained model, Gemma 3 270M: causal tracing of the committed facts, the
//! multi-source interchange searched over wordings and layers, sentiment steering of story openings, and DAS versus
//! a probe on the committed name lists. Each returns its finding for the report with the paper's claim beside it.

use crate::{
    error::Result,
    model::LoadedModel,
    studies::{
        facts,
        image_das::{ImageDasOptions, IMAGENET_ANIMALS},
        interchange_search::{self, InterchangeSearch, Wording},
        output::{format_top, Figure, StudyOutput},
        probe::{DasBudget, ProbeSetup},
        sentiment::SentimentSetup,
        tracing::{self, TraceOptions},
    },
};

use super::{
    cached::{self, Context},
    plan::{Finding, Paper, Progress},
};

/// The committed inputs, embedded so the demo runs from any directory.
const FACTS: &str = include_str!("../../../examples/facts/known_facts.jsonl");
const MALE_NAMES: &str = include_str!("../../../examples/das/male_names.txt");
const FEMALE_NAMES: &str = include_str!("../../../examples/das/female_names.txt");
const OPENINGS: &str = include_str!("../../../examples/steering/story_openings.txt");
const POSITIVE: &str = include_str!("../../../examples/steering/positive_words.txt");
const NEGATIVE: &str = include_str!("../../../examples/steering/negative_words.txt");

/// Where steering adds its vector: Gemma's MLP output after its post-feed-forward norm, the MLP's contribution to
/// the residual stream (what GPT-2's `mlp_output` is). Before that norm the added vector would be rescaled away.
const STEERING_SITE: &str = "mlp_post_norm_output";
/// The paper's 0.3 leaves Gemma's text unchanged (its residual stream is about √640 larger than the raw
/// embeddings, which it scales by √d on input); the sweep shows where steering starts to act, and 10 is the
/// side-by-side's coefficient.
const STEERING_COEFFICIENT: f64 = 10.0;

/// Meng et al.'s window is 10 of GPT-2 XL's 48 layers; the same fifth of Gemma 3 270M's 18 is 4 (3.75 rounded).
pub const WINDOW: usize = 4;

/// How much of each study the demo runs on the real model.
#[derive(Debug, Clone)]
pub struct RealGrid {
    /// The first this many facts of the committed list are checked; those the model knows are traced.
    pub facts: usize,
    pub samples: usize,
    pub eiffel_samples: usize,
    pub serial_stride: usize,
    pub openings: usize,
    pub sweep: Vec<f64>,
    pub max_new_tokens: usize,
    pub das: DasBudget,
    /// The path-patching senders (every head when `None`).
    pub path_senders: Option<Vec<(u32, u32)>>,
    /// Noise draws of the EfficientNet trace.
    pub cnn_samples: usize,
    /// EfficientNet's "animal" DAS versus probe.
    pub image_das: ImageDasOptions,
}

/// "Animal" on ImageNet's animal classes, with the given budget.
fn animal_das(crops_per_photo: usize, blocks: Option<Vec<usize>>, pairs: usize, epochs: usize) -> ImageDasOptions {
    ImageDasOptions {
        attribute: "animal".to_string(),
        positive_classes: IMAGENET_ANIMALS.collect(),
        crops_per_photo,
        blocks,
        pairs,
        epochs,
        seed: 0,
    }
}

impl RealGrid {
    /// The demo's grid: fits the 15-minute budget of a 2-core CPU.
    pub fn demo() -> Self {
        Self {
            facts: 12,
            samples: 1,
            eiffel_samples: 2,
            serial_stride: 4,
            openings: 3,
            sweep: vec![0.3, 3.0, 10.0, 30.0],
            max_new_tokens: 20,
            das: DasBudget { positions: Some(vec![1, 3]), pairs: Some(96), epochs: 2 },
            path_senders: None,
            cnn_samples: 2,
            image_das: animal_das(12, None, 48, 2),
        }
    }

    /// The tests' grid: every study, a few items each.
    pub fn small() -> Self {
        Self {
            facts: 3,
            samples: 1,
            eiffel_samples: 1,
            serial_stride: 6,
            openings: 1,
            sweep: vec![0.3, 10.0],
            max_new_tokens: 8,
            das: DasBudget { positions: Some(vec![3]), pairs: Some(48), epochs: 2 },
            path_senders: Some([11, 15].iter().flat_map(|&l| (0..4).map(move |h| (l, h))).collect()),
            cnn_samples: 1,
            image_das: animal_das(12, Some(vec![2, 15]), 48, 2),
        }
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The shell command that reruns a study on the installed model.
fn command(study: &str) -> String {
    format!("vene {study} --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf")
}

fn row(cells: &[&dyn std::fmt::Display]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Causal tracing of the committed facts the model knows, averaged by position class, and the Eiffel Tower's own
/// heatmaps.
pub fn tracing(
    model: LoadedModel,
    context: &Context,
    grid: &RealGrid,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, Finding, LoadedModel)> {
    let all = facts::parse_facts(FACTS, "examples/facts/known_facts.jsonl")?;
    let checked = &all[..grid.facts.min(all.len())];
    let options = TraceOptions { samples: grid.samples, window: WINDOW, ..TraceOptions::default() };
    let (found, model) = cached::trace_facts(model, context, checked, &options, "causal tracing (facts)", progress)?;
    progress(Progress::Done);
    let means = &found.by_class;
    let title = |name: &str| format!("restored p(target), mean of {} known facts — {name}", found.traced.len());
    let figures = tracing::heatmaps(means.sweeps(), &means.classes, title, means.clean.max(1e-9));
    let at = |grid: &[Vec<f64>], class: usize| {
        grid[class].iter().enumerate().fold((0, f64::MIN), |best, (l, &v)| if v > best.1 { (l, v) } else { best })
    };
    let mut table = vec![row(&[&"sweep", &"peak at the last subject token", &"peak at the last token"])];
    for (sweep, values) in means.sweeps() {
        let ((sl, sv), (ll, lv)) = (at(values, 2), at(values, 5));
        table.push(row(&[&sweep, &format!("layer {sl}: {sv:.3}"), &format!("layer {ll}: {lv:.3}")]));
    }
    let summary = format!(
        "{} of the first {} committed facts known (top-1 = target) and traced, {} noise sample(s) each, window {WINDOW}; \
         mean p(target) clean {:.3}, with the subject corrupted {:.3}. {}",
        found.traced.len(),
        checked.len(),
        grid.samples,
        means.clean,
        means.corrupted,
        means
            .peaks()
            .iter()
            .map(|(sweep, class, layer, value)| format!("{sweep} peaks at the {class}, layer {layer} ({value:.3})"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let paper = Paper {
        question: "Where in the network does the model recall a fact: which layers and token positions, if restored \
                   from a clean run into a run with the subject corrupted, bring the right answer back?"
            .to_string(),
        claim: "Meng et al. (2022), GPT-2 XL (48 layers), averaged over 1,000 known facts: two sites. The MLPs of \
                middle layers at the last subject token (an early site), and attention at the last token in late \
                layers; hidden states restore well at the last subject token up to the middle layers and at the last \
                token from there on."
            .to_string(),
        table,
        command: format!(
            "{} --facts examples/facts/known_facts.jsonl --samples 10 --window {WINDOW} --out trace",
            command("trace")
        ),
        toy: false,
    };
    let output = StudyOutput::new("trace.json", &found, figures, summary)?;
    let averaged =
        Finding { heading: "Causal tracing of known facts", subdir: "tracing", output, key: "tracing", paper };
    let (eiffel, model) = eiffel(model, context, &all[0], grid, progress)?;
    Ok((averaged, eiffel, model))
}

/// One fact's three heatmaps.
fn eiffel(
    model: LoadedModel,
    context: &Context,
    fact: &facts::Fact,
    grid: &RealGrid,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let options = TraceOptions { samples: grid.eiffel_samples, window: WINDOW, ..TraceOptions::default() };
    let one = std::slice::from_ref(fact);
    let (found, model) = cached::trace_facts(model, context, one, &options, "causal tracing (one fact)", progress)?;
    progress(Progress::Done);
    let tokenizer = context.tokenizer;
    let trace = &found.traced[0].trace;
    let span = trace.subject.0..trace.subject.1;
    let labels: Vec<String> = trace
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| format!("{}{}", tokenizer.decode(&[t]).trim(), if span.contains(&i) { "*" } else { "" }))
        .collect();
    let target = fact.target.trim();
    let title = |name: &str| format!("restored p({target}) — {name}");
    let figures = tracing::heatmaps(trace.sweeps(), &labels, title, trace.clean.max(1e-9));
    let summary = format!(
        "\"{}\" → \"{target}\": clean p {:.4}, subject corrupted {:.4} ({} noise samples); subject tokens marked *",
        fact.prompt, trace.clean, trace.corrupted, grid.eiffel_samples
    );
    let restored_last = trace.block_output.last().and_then(|row| row.last()).copied().unwrap_or(f64::NAN);
    let table = vec![
        row(&[&"", &"p(Paris)"]),
        row(&[&"clean", &format!("{:.4}", trace.clean)]),
        row(&[&"subject corrupted", &format!("{:.4}", trace.corrupted)]),
        row(&[&"last token, final block output restored", &format!("{restored_last:.4}")]),
    ];
    let paper = Paper {
        question: "The same sweeps for one fact, cell by cell.".to_string(),
        claim: "Meng et al.'s Figure 1 shows single facts with the same two sites as the average.".to_string(),
        table,
        command: format!(
            "{} --prompt \"{}\" --subject \"{}\" --target \"{}\" --samples 10 --window {WINDOW} --out eiffel",
            command("trace"),
            fact.prompt,
            fact.subject,
            fact.target
        ),
        toy: false,
    };
    let output = StudyOutput::new("trace.json", &found, figures, summary)?;
    Ok((
        Finding { heading: "Causal tracing of one fact", subdir: "tracing/eiffel", output, key: "eiffel", paper },
        model,
    ))
}

/// The wordings tried for the paper's "language of Spain" + "capital of Italy" mix.
fn wordings() -> Vec<Wording> {
    let wording = |base: &str, attribute: &str, entity: &str| Wording {
        base: base.to_string(),
        attribute_source: attribute.to_string(),
        entity_source: entity.to_string(),
    };
    vec![
        wording("The capital of Spain is", "The language of Spain is", "The capital of Italy is"),
        wording("The capital of Spain is called", "The language of Spain is called", "The capital of Italy is called"),
        wording("In Spain, the capital is", "In Spain, the language is", "In Italy, the capital is"),
    ]
}

pub fn interchange(
    model: LoadedModel,
    context: &Context,
    grid: &RealGrid,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let wordings = wordings();
    let setup = interchange_search::SearchSetup {
        wordings: &wordings,
        target: " Italian",
        component: "block_output",
        serial_stride: grid.serial_stride,
    };
    let (found, model) = cached::search(model, context, &setup, "multi-source interchange", progress)?;
    progress(Progress::Done);
    let figure = Figure::Heatmap {
        name: "parallel".to_string(),
        title: "parallel interchange: p(\" Italian\") in the top 5, by wording and layer".to_string(),
        row_labels: (1..=wordings.len()).map(|w| format!("wording {w}")).collect(),
        column_label: "layer (both sources' block output)".to_string(),
        scale_label: "p(\" Italian\") if in the top 5".to_string(),
        max: found.parallel_grid().iter().flatten().copied().fold(0.05, f64::max),
        values: found.parallel_grid(),
    };
    let (summary, table) = interchange_table(&found);
    let paper = Paper {
        question:
            "Can two sources be combined into one answer: \"language\" from \"the language of Spain\" and \
                   \"Italy\" from \"the capital of Italy\", swapped into \"the capital of Spain\", giving \" Italian\"?"
                .to_string(),
        claim:
            "Wu et al. (pyvene, 2024) show the mix yielding \" Italian\" on GPT-2, in parallel (both swaps at once) \
                and in series (the first swap feeds the second source, which feeds the base)."
                .to_string(),
        table,
        command: interchange_command(&found),
        toy: false,
    };
    let output = StudyOutput::new("interchange.json", &found, vec![figure], summary)?;
    Ok((
        Finding { heading: "Multi-source interchange", subdir: "interchange", output, key: "interchange", paper },
        model,
    ))
}

/// The command that reruns the best serial combination (else the best parallel one, else the first wording at
/// layer 0).
fn interchange_command(found: &InterchangeSearch) -> String {
    let best = found.best("serial").or_else(|| found.best("parallel")).or(found.attempts.first());
    let Some(best) = best else { return command("interchange") };
    let (wording, [attribute, entity, last]) = (&found.wordings[best.wording], found.positions[best.wording]);
    let mode = match best.second_layer {
        Some(second) => format!(
            "--source \"{}@{attribute}\" --source \"{}@{last}\" --mode serial --hop {}:{} --hop {second}:{}",
            wording.attribute_source, wording.entity_source, best.layer, found.component, found.component
        ),
        None => format!(
            "--source \"{}@{attribute}\" --source \"{}@{entity}\" --layer {} --component {}",
            wording.attribute_source, wording.entity_source, best.layer, found.component
        ),
    };
    format!("{} --base \"{}\" {mode} --out interchange", command("interchange"), wording.base)
}

fn interchange_table(found: &InterchangeSearch) -> (String, Vec<Vec<String>>) {
    let describe = |a: &interchange_search::Attempt| {
        let layers = match a.second_layer {
            Some(second) => format!("layers {} → {second}", a.layer),
            None => format!("layer {}", a.layer),
        };
        (format!("wording {} ({}), {layers}", a.wording + 1, found.wordings[a.wording].base), format_top(&a.top))
    };
    let mut table = vec![row(&[&"", &"what", &"top 5 next tokens"])];
    for (w, top) in found.base_top.iter().enumerate() {
        table.push(row(&[&"base", &format!("wording {}: {}", w + 1, found.wordings[w].base), &format_top(top)]));
    }
    let mut lines = Vec::new();
    for mode in ["parallel", "serial"] {
        let (hits, of) = found.hits(mode);
        lines.push(format!("{mode}: \" Italian\" in the top 5 in {hits} of {of} combinations"));
        match found.best(mode) {
            Some(best) => {
                let (what, top) = describe(best);
                table.push(row(&[&format!("best {mode}"), &what, &top]));
            }
            None => table.push(row(&[&format!("best {mode}"), &"none put \" Italian\" in the top 5", &""])),
        }
    }
    // The failure shown: the first wording at layer 0, the toy model's setting.
    if let Some(failure) = found.attempts.iter().find(|a| a.wording == 0 && a.mode == "parallel" && a.layer == 0) {
        let (what, top) = describe(failure);
        table.push(row(&[&"the toy model's setting (layer 0)", &what, &top]));
    }
    (lines.join("; "), table)
}

pub fn steering(
    model: LoadedModel,
    context: &Context,
    grid: &RealGrid,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let setup = SentimentSetup {
        openings: lines(OPENINGS).into_iter().take(grid.openings).collect(),
        words: vec![" happy".to_string(), " sad".to_string()],
        coefficient: STEERING_COEFFICIENT,
        sweep: grid.sweep.clone(),
        positive: lines(POSITIVE).iter().map(|w| format!(" {w}")).collect(),
        negative: lines(NEGATIVE).iter().map(|w| format!(" {w}")).collect(),
        component: STEERING_SITE.to_string(),
        max_new_tokens: grid.max_new_tokens,
    };
    let (found, model) = cached::steering(model, context, &setup, "steering", progress)?;
    progress(Progress::Done);
    let figures = vec![found.shift_lines("shift"), found.sweep_lines("sweep")];
    let happy = format!("+{STEERING_COEFFICIENT} × \" happy\"");
    let sad = format!("+{STEERING_COEFFICIENT} × \" sad\"");
    let mut table = vec![row(&[&"opening", &"unsteered", &happy, &sad])];
    for (index, opening) in found.openings.iter().enumerate() {
        let texts: Vec<String> =
            found.side_by_side.iter().filter(|c| c.opening == index).map(|c| c.text.replace('\n', " ")).collect();
        let mut cells = vec![opening.clone()];
        cells.extend(texts);
        table.push(cells);
    }
    for c in &found.sweep {
        let word = c.word.as_deref().unwrap_or("").trim();
        table.push(row(&[
            &format!("sweep: +{} × \"{word}\"", c.coefficient),
            &c.text.replace('\n', " "),
            &format!("mean shift {:+.4}", c.mean_shift()),
            &"",
        ]));
    }
    let unsteered: Vec<f64> = found.side_by_side.iter().filter(|c| c.word.is_none()).map(|c| c.mean_shift()).collect();
    let summary = format!(
        "greedy continuations of {} opening(s), {} tokens; mean p(positive) − p(negative) along the unsteered \
         continuations {:+.4}; sweep on the first opening: {}",
        found.openings.len(),
        grid.max_new_tokens,
        unsteered.iter().sum::<f64>() / unsteered.len().max(1) as f64,
        found
            .sweep
            .iter()
            .map(|c| format!("{} × {} → {:+.4}", c.word.as_deref().unwrap_or("").trim(), c.coefficient, c.mean_shift()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let paper = Paper {
        question: "Does adding a word's embedding to every MLP output at every decoding step steer what the model \
                   writes (inference-time intervention)?"
            .to_string(),
        claim:
            "Wu et al. (pyvene, 2024), on a TinyStories model: 0.3 × the embedding of \" happy\" or \" sad\" added to \
                every MLP output turns the stories happy or sad."
                .to_string(),
        table,
        command: format!(
            "{} --prompt \"{}\" --word \" sad\" --coefficient {STEERING_COEFFICIENT} --component {STEERING_SITE} --out \
             steer",
            command("steer"),
            found.openings[0]
        ),
        toy: false,
    };
    let output = StudyOutput::new("steering.json", &found, figures, summary)?;
    Ok((Finding { heading: "Steering during generation", subdir: "steering", output, key: "steering", paper }, model))
}

pub fn das_versus_probe(
    model: LoadedModel,
    context: &Context,
    grid: &RealGrid,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let setup = ProbeSetup {
        template: "{name} walked because".to_string(),
        classes: vec![(" he".to_string(), lines(MALE_NAMES)), (" she".to_string(), lines(FEMALE_NAMES))],
        budget: grid.das.clone(),
    };
    let (found, model) = cached::das_vs_probe(model, context, &setup, "DAS and probe", progress)?;
    progress(Progress::Done);
    let figures = found.heatmaps("rank-1 DAS held-out IIA (he / she)", "linear probe held-out accuracy (gender)");
    let count = |grid: &[f64]| grid.iter().filter(|&&v| v >= 0.9).count();
    let mut table = vec![row(&[&"position", &"DAS cells ≥ 0.9", &"best DAS", &"probe cells ≥ 0.9", &"worst probe"])];
    for (r, token) in found.tokens.iter().enumerate() {
        let (das, probe) = (&found.das_iia[r], &found.probe_accuracy[r]);
        let best = das.iter().enumerate().fold((0, f64::MIN), |b, (l, &v)| if v > b.1 { (l, v) } else { b });
        table.push(row(&[
            &format!("{token} ({})", found.positions[r]),
            &format!("{} of {}", count(das), das.len()),
            &format!("layer {}: {:.3}", best.0, best.1),
            &format!("{} of {}", count(probe), probe.len()),
            &format!("{:.3}", probe.iter().copied().fold(f64::MAX, f64::min)),
        ]));
    }
    let summary = format!(
        "\"NAME walked because\" → \" he\" / \" she\" with the committed {} male and {} female names; DAS trained on {} \
         counterfactual pairs, IIA on {} held out; probe accuracy on every third name (always answering \"male\" \
         scores {:.3})",
        setup.classes[0].1.len(),
        setup.classes[1].1.len(),
        found.train_pairs,
        found.eval_pairs,
        found.majority_baseline
    );
    let paper = Paper {
        question: "Is a variable that a linear probe can read from an activation also the one the model uses? The \
                   gender of a name, read by a probe, against a rank-1 DAS intervention that must change the pronoun \
                   the model predicts."
            .to_string(),
        claim:
            "Wu et al. (pyvene, 2024), Pythia-6.9B: the probe reaches near 100 % almost everywhere, while DAS finds \
                the causal variable only in a few cells (at the name in early layers, at the last token later)."
                .to_string(),
        table,
        command: format!(
            "{} --template \"{{name}} walked because\" --class \" he=$(paste -sd, examples/das/male_names.txt)\" \
             --class \" she=$(paste -sd, examples/das/female_names.txt)\" --out das_probe",
            command("das-probe")
        ),
        toy: false,
    };
    let output = StudyOutput::new("das_probe.json", &found, figures, summary)?;
    Ok((Finding { heading: "DAS versus a linear probe", subdir: "das_probe", output, key: "das_probe", paper }, model))
}
