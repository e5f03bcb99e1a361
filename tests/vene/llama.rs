//! The Llama-family adapter (Llama, Mistral, Qwen 2/3, Gemma 1/2/3) on seeded random checkpoints in Hugging Face
//! layout, against transformers 4.57.1 and pyvene 0.1.8 (scripts/gen_fixtures_llama.py).

use crate::common::*;

/// Every family the fixture script builds, as `tests/fixtures/llama/<family>`.
pub const FAMILIES: [&str; 7] = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"];

pub fn family_dir(family: &str) -> std::path::PathBuf {
    fixtures().join("llama").join(family)
}

/// Plain logits equal transformers'; head-level interchange on grouped-query heads, zeroed key/value heads, a
/// q-projection swap, an addition on the MLP activation and a pyvene-saved low-rank DAS rotation equal pyvene's;
/// Gemma 2/3's post-attention norm output equals a torch hook's — all within 1e-4.
#[test]
fn every_llama_family_matches_transformers_and_pyvene() {
    for family in FAMILIES {
        let root = family_dir(family);
        let mut cases: Vec<_> = std::fs::read_dir(root.join("cases")).unwrap().map(|e| e.unwrap().path()).collect();
        cases.sort();
        assert!(cases.len() >= 6, "{family}: {} cases", cases.len());
        for case in cases {
            run_reference_case(&["vene_llama", "vene_das"], &root.join("model"), &case, 1e-4);
        }
    }
}
