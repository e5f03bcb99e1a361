//! The demo's HTML report, written to read as a short paper: per study the question, the paper's claim, what vene
//! measured, the figures, a table of the key numbers and the command that reproduces it; the studies on models vene
//! trained itself come last, marked as such.

use std::path::Path;

use super::plan::Section;
use crate::error::{Result, VeneError};

const STYLE: &str = "body{font-family:Georgia,serif;max-width:62rem;margin:2rem auto;padding:0 1rem;line-height:1.45;\
color:#222}h1{font-size:1.7rem}h2{margin-top:2.5rem;border-bottom:1px solid #ccc}section{margin-bottom:2rem}\
.label{font-weight:bold}.measured{white-space:pre-line}.toy{background:#fff3cd;border:1px solid #e0c870;padding:.1rem .4rem;font-size:.8rem;\
font-family:sans-serif;margin-left:.5rem}figure{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0}\
figure div{flex:0 1 calc(50% - .5rem);min-width:24rem}figure img{width:100%}figure a{font-size:.8rem;font-family:sans-serif}\
table{border-collapse:collapse;font-size:.9rem;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;\
vertical-align:top;text-align:left}th{background:#f0f0f0}pre{background:#f4f4f4;padding:.6rem;white-space:pre-wrap;\
font-size:.85rem}.warning{background:#f8d7da;border:1px solid #c66;padding:.5rem}";

/// Once the page has loaded, says so at the top if a figure did not load (a report moved without its folders), and
/// records the counts on `<body>` for a headless browser to read.
const CHECK_IMAGES: &str = "<script>addEventListener('load',()=>{const broken=[...document.images]\
.filter(i=>!i.complete||i.naturalWidth===0).map(i=>i.getAttribute('src'));document.body.dataset.images=\
document.images.length;document.body.dataset.brokenImages=broken.length;if(broken.length){const p=\
document.createElement('p');p.className='warning';p.textContent=broken.length+' figure(s) did not load: '+\
broken.join(', ');document.body.prepend(p);}});</script>";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A heading's anchor: lower-case words joined by dashes.
fn anchor(heading: &str) -> String {
    heading.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-").to_lowercase()
}

fn section_html(section: &Section) -> String {
    let paper = &section.paper;
    let badge = if paper.toy { "<span class=\"toy\">vene-trained toy model</span>" } else { "" };
    let mut html = format!(
        "<section id=\"{}\">\n<h2>{}{badge}</h2>\n<p><span class=\"label\">Question.</span> {}</p>\n",
        anchor(&section.heading),
        escape(&section.heading),
        escape(&paper.question)
    );
    if !paper.claim.is_empty() {
        html.push_str(&format!("<p><span class=\"label\">The paper.</span> {}</p>\n", escape(&paper.claim)));
    }
    html.push_str(&format!(
        "<p class=\"measured\"><span class=\"label\">Measured here.</span> {}</p>\n",
        escape(&section.body)
    ));
    if !section.figures.is_empty() {
        html.push_str("<figure>\n");
        for png in &section.figures {
            let svg = png.trim_end_matches(".png").to_string() + ".svg";
            html.push_str(&format!(
                "<div><img src=\"{png}\" alt=\"{png}\"><br><a href=\"{svg}\">{svg} (hover for each value)</a></div>\n"
            ));
        }
        html.push_str("</figure>\n");
    }
    if let Some((header, rows)) = paper.table.split_first() {
        html.push_str("<table>\n<tr>");
        header.iter().for_each(|cell| html.push_str(&format!("<th>{}</th>", escape(cell))));
        html.push_str("</tr>\n");
        for row in rows {
            html.push_str("<tr>");
            row.iter().for_each(|cell| html.push_str(&format!("<td>{}</td>", escape(cell))));
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    html.push_str(&format!("<p class=\"label\">Reproduce</p>\n<pre>{}</pre>\n</section>\n", escape(&paper.command)));
    html
}

/// Writes `dir/report.html` (atomically): the real-model studies, then the toy-model ones under their own heading.
pub fn write_report(dir: &Path, title: &str, sections: &[Section]) -> Result<()> {
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>{STYLE}</style>\
         </head><body>\n<h1>{0}</h1>\n<p>The studies of the pyvene paper (Wu et al., 2024) rerun with vene. The first \
         ones run on a real pretrained language model, Gemma 3 270M (google/gemma-3-270m, llama.cpp's Q4_K_M GGUF, \
         under the Gemma Terms of Use), the next on real convolutional and recurrent models (EasyOCR's English \
         CRNN, EfficientNet-Lite0, Silero VAD); the last one on a small model vene trains itself, for an \
         architecture no real weights exist for. Each figure links its SVG, whose cells carry their values as \
         tooltips.</p>\n<ul>\n",
        escape(title)
    );
    for section in sections {
        html.push_str(&format!(
            "<li><a href=\"#{}\">{}</a></li>\n",
            anchor(&section.heading),
            escape(&section.heading)
        ));
    }
    html.push_str("</ul>\n");
    let (real, toy): (Vec<&Section>, Vec<&Section>) = sections.iter().partition(|s| !s.paper.toy);
    real.iter().for_each(|section| html.push_str(&section_html(section)));
    if !toy.is_empty() {
        html.push_str(
            "<h2>On models vene trained itself</h2>\n<p>No pretrained weights exist for these architectures here; \
             their models are trained by the demo on a generated corpus or Fashion-MNIST and cached.</p>\n",
        );
        toy.iter().for_each(|section| html.push_str(&section_html(section)));
    }
    html.push_str(CHECK_IMAGES);
    html.push_str("</body></html>\n");
    let path = dir.join("report.html");
    vene_checkpoint::write_atomic(&path, html.as_bytes()).map_err(|source| VeneError::Io { path, source })
}
