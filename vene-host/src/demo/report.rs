//! The demo's own study (the paper's interchange, in parallel and in series) and its HTML report.

use std::path::Path;

use serde::Serialize;

use super::plan::Section;
use crate::{
    error::{Result, VeneError},
    model::LoadedModel,
    plugins::PluginSet,
    studies::{
        interchange::{parallel_interchange, serial_interchange, InterchangeSetup, SerialSetup},
        TopWords,
    },
    text::TextTokenizer,
};

/// The multi-source interchange of the paper: "the capital of spain is" with "language" from "the language of
/// spain is" and "italy" from "the capital of italy is".
#[derive(Debug, Clone, Serialize)]
pub struct Interchange {
    pub base: TopWords,
    pub parallel: TopWords,
    pub serial: TopWords,
}

/// The paper's interchange: "the capital of spain is" with "language" from "the language of spain is" and "italy"
/// from "the capital of italy is", in parallel and in series.
pub fn interchange(
    model: LoadedModel,
    plugins: &PluginSet,
    tokenizer: &TextTokenizer,
) -> Result<(Interchange, LoadedModel)> {
    let setup = InterchangeSetup {
        base: "the capital of spain is".to_string(),
        sources: vec![("the language of spain is".to_string(), 1), ("the capital of italy is".to_string(), 3)],
        layer: 0,
        component: "block_input".to_string(),
    };
    let (base_top, parallel_top, model) = parallel_interchange(model, plugins, tokenizer, &setup)?;
    // Serial: "language" goes into the Italy prompt, whose final state then goes into the base.
    let layers = model.catalog().num_layers as i64;
    let serial_setup = SerialSetup {
        base: setup.base.clone(),
        sources: vec![(setup.sources[0].0.clone(), 1), (setup.sources[1].0.clone(), 4)],
        hops: vec![(0, "block_input".to_string()), (layers - 1, "block_output".to_string())],
    };
    let (_, serial_top, model) = serial_interchange(model, plugins, tokenizer, &serial_setup)?;
    Ok((Interchange { base: base_top, parallel: parallel_top, serial: serial_top }, model))
}

/// A minimal HTML report: sections of text and figures (paths relative to the report).
pub fn write_report(dir: &Path, title: &str, sections: &[Section]) -> Result<()> {
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>body{{font-family:sans-serif;\
         max-width:60rem;margin:2rem auto}} img{{max-width:30rem;margin:.5rem}} pre{{background:#f4f4f4;padding:1rem}}\
         </style></head><body>\n<h1>{0}</h1>\n",
        escape(title)
    );
    for Section { heading, body, figures } in sections {
        html.push_str(&format!("<h2>{}</h2>\n<pre>{}</pre>\n", escape(heading), escape(body)));
        for figure in figures {
            html.push_str(&format!("<img src=\"{figure}\" alt=\"{figure}\">\n"));
        }
    }
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    vene_checkpoint::write_atomic(&path, html.as_bytes()).map_err(|source| VeneError::Io { path, source })
}
