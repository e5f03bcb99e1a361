//! The demo's circuit studies on the real model, on the committed IOI-style prompts: path patching of every attention
//! head to the logits (Wang et al.'s name movers), through the demo's item cache; attribution patching of every
//! node, its top estimates re-patched exactly; and edge attribution with circuits evaluated exactly.

use crate::{
    error::Result,
    model::LoadedModel,
    plugins::PluginSet,
    studies::{
        attribution::{self, AttributionOptions, Metric},
        circuit::{find_circuit, CircuitOptions, Graph},
        output::StudyOutput,
        parse_json_lines,
        path_patching::{self, PathBatch, PathOptions, PathPrompt, Receivers},
    },
    text::TextTokenizer,
};

use super::{
    cached::{self, Context},
    plan::{Finding, Paper, Progress},
};

/// The committed IOI-style prompts: clean, ABC-corrupted, the indirect object and the subject.
const IOI: &str = include_str!("../../../examples/path_patching/ioi.jsonl");

fn ioi_prompts() -> Result<Vec<PathPrompt>> {
    let shape = r#"{"clean", "corrupted", "target", "distractor"}"#;
    parse_json_lines(IOI, "examples/path_patching/ioi.jsonl", shape)
}

/// Attribution patching (AtP) of every block, attention, MLP and head output × position on the IOI prompts; the top
/// 10 by |estimate| and 5 others re-patched exactly.
pub fn attribution(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
) -> Result<(Finding, LoadedModel)> {
    let (inputs, tokens) = attribution::prompt_inputs(tokenizer, &ioi_prompts()?, model.device())?;
    let options = AttributionOptions {
        components: attribution::default_components(&model),
        metric: Metric::LogitDiff,
        ig_steps: 0,
        qk_fix: false,
        grad_drop: false,
        top_k: 10,
        random_k: 5,
        verify_all: false,
        seed: 0,
    };
    let (found, model) = attribution::attribute(model, plugins, &inputs, &options, tokens)?;
    let mut table = vec![["node", "chosen", "AtP estimate", "exact patching"].map(String::from).to_vec()];
    for node in &found.verified {
        let head = node.head.map_or(String::new(), |h| format!(".H{h}"));
        let token = found.tokens.get(node.position).map_or("", String::as_str);
        table.push(vec![
            format!("{} L{}{head} @ {} ({token:?})", node.component, node.layer, node.position),
            node.chosen.clone(),
            format!("{:+.3}", node.estimate),
            format!("{:+.3}", node.exact),
        ]);
    }
    let paper = Paper {
        question: "Can every node's patching effect be estimated from one clean pass, one corrupted pass and one \
                   backward, and where is the estimate wrong?"
            .to_string(),
        claim: "Nanda (2023) and Kramár et al. (2024, AtP): (a_corrupted − a_clean) · ∂metric/∂a estimates activation \
                patching for all nodes at once; it can miss nodes whose effect is far from linear (saturated \
                attention, large changes), so the top estimates are checked by exact patching and a random sample \
                serves as a control."
            .to_string(),
        table,
        command: "vene attribute --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf --prompts \
                  examples/path_patching/ioi.jsonl --top-k 10 --random-k 5 --out attribution"
            .to_string(),
        toy: false,
    };
    let output = StudyOutput::combined(&found, found.figures(), found.summary())?;
    let finding = Finding {
        heading: "Attribution patching: every node at once",
        subdir: "attribution",
        output,
        key: "attribution",
        paper,
    };
    Ok((finding, model))
}

/// Edge attribution (EAP-IG, 5 steps) over the head-level residual-stream graph on the IOI prompts: the top 10 edges
/// and 5 others patched alone exactly, a faithfulness curve of circuits of the top n edges, and the smallest of them
/// recovering 80% drawn.
pub fn circuit(model: LoadedModel, plugins: &PluginSet, tokenizer: &TextTokenizer) -> Result<(Finding, LoadedModel)> {
    let (inputs, _) = attribution::prompt_inputs(tokenizer, &ioi_prompts()?, model.device())?;
    let total = Graph::of(&model, true)?.edges().len();
    let ladder = [0, 10, 50, 100, 200, 500, 1000, 2000];
    let mut sizes: Vec<usize> = ladder.into_iter().filter(|&n| n < total).collect();
    sizes.push(total);
    let options = CircuitOptions {
        metric: Metric::LogitDiff,
        ig_steps: 5,
        top_k: 10,
        random_k: 5,
        verify_all: false,
        seed: 0,
        sizes,
        keep: None,
        faithfulness: 0.8,
        per_head: true,
    };
    let (found, model) = find_circuit(model, plugins, &inputs, &options)?;
    let mut table = vec![["edge", "chosen", "EAP-IG score", "exact patching"].map(String::from).to_vec()];
    for edge in found.edges.iter().filter(|e| e.exact.is_some()) {
        table.push(vec![
            format!("{} → {}", edge.sender, edge.receiver),
            edge.chosen.clone().unwrap_or_default(),
            format!("{:+.3}", edge.score),
            format!("{:+.3}", edge.exact.unwrap_or(f64::NAN)),
        ]);
    }
    let paper = Paper {
        question: "Which edges between the input, the attention heads, the MLPs and the logits carry the indirect \
                   object, and how much of the behaviour does a circuit of them keep?"
            .to_string(),
        claim:
            "Syed et al. (2023, EAP) and Hanna et al. (2024, EAP-IG): (c_corrupted − c_clean) · ∂metric/∂x_receiver \
                scores every edge at once; integrated gradients over the input embeddings rank edges more faithfully \
                than the clean gradient alone. Heads send what they write into the residual stream and receive through \
                their own query, key and value inputs. A circuit is checked by running it with every other edge \
                patched from the corrupted prompts."
                .to_string(),
        table,
        command: "vene circuit --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf --prompts \
                  examples/path_patching/ioi.jsonl --ig-steps 5 --per-head --top-k 10 --random-k 5 --out circuit"
            .to_string(),
        toy: false,
    };
    let output = StudyOutput::combined(&found, found.figures(), found.summary())?;
    let finding = Finding {
        heading: "Circuits: edge attribution, checked exactly",
        subdir: "circuit",
        output,
        key: "circuit",
        paper,
    };
    Ok((finding, model))
}

/// Path patching of `senders` (every head when `None`) to the logits on the IOI prompts.
pub fn path_patching(
    model: LoadedModel,
    context: &Context,
    senders: Option<&[(u32, u32)]>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let batch = PathBatch::new(context.tokenizer, &ioi_prompts()?, model.device())?;
    let options = PathOptions { receivers: Receivers::Logits, freeze_mlps: false };
    let senders = senders.map_or_else(|| path_patching::all_heads(&model), <[_]>::to_vec);
    let study = "path patching";
    let (found, model) = cached::path_patching(model, context, (&batch, &options), &senders, study, progress)?;
    progress(Progress::Done);
    let mut table = vec![vec!["head".to_string(), "effect on the logit difference".to_string(), "role".to_string()]];
    for (opposing, role) in [(false, "carries the indirect object"), (true, "works against it")] {
        for (head, effect) in path_patching::strongest(&found, 3, opposing) {
            table.push(vec![head, format!("{effect:+.3}"), role.to_string()]);
        }
    }
    let paper = Paper {
        question: "Which attention heads move the indirect object's name to the output (\"When Mary and John went to \
                   the store, John gave a drink to\" → Mary)?"
            .to_string(),
        claim: "Wang et al. (2022), on GPT-2 small: path patching from each head to the logits singles out name mover \
                heads in the last layers (9.6, 9.9, 10.0) that copy the indirect object, and negative name movers \
                (10.7, 11.10) that write against it."
            .to_string(),
        table,
        command: "vene path-patch --model ~/.cache/vene/models/gemma-3-270m-q4_k_m.gguf --prompts \
                  examples/path_patching/ioi.jsonl --out path_patching"
            .to_string(),
        toy: false,
    };
    let output = path_patching::study_output(&found, std::path::Path::new("path_patching"))?;
    let finding =
        Finding { heading: "Path patching: name movers", subdir: "path_patching", output, key: "path_patching", paper };
    Ok((finding, model))
}
