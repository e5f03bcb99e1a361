//! The demo's circuit study on the real model: path patching of every attention head to the logits on the committed
//! IOI-style prompts (Wang et al.'s name movers), through the demo's item cache.

use crate::{
    error::Result,
    model::LoadedModel,
    studies::{
        parse_json_lines,
        path_patching::{self, PathBatch, PathOptions, PathPrompt, Receivers},
    },
};

use super::{
    cached::{self, Context},
    plan::{Finding, Paper, Progress},
};

/// The committed IOI-style prompts: clean, ABC-corrupted, the indirect object and the subject.
const IOI: &str = include_str!("../../../examples/path_patching/ioi.jsonl");

/// Path patching of `senders` (every head when `None`) to the logits on the IOI prompts.
pub fn path_patching(
    model: LoadedModel,
    context: &Context,
    senders: Option<&[(u32, u32)]>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Finding, LoadedModel)> {
    let shape = r#"{"clean", "corrupted", "target", "distractor"}"#;
    let prompts: Vec<PathPrompt> = parse_json_lines(IOI, "examples/path_patching/ioi.jsonl", shape)?;
    let batch = PathBatch::new(context.tokenizer, &prompts, model.device())?;
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
