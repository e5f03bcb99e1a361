//! The generated corpus the demo GPT-2 learns: country facts (capital, language), name → pronoun sentences and facts
//! about invented places with three-word names, over a small word-level vocabulary.
//!
//! The places are what causal tracing needs. A one-word subject can be read straight from its embedding by the last
//! position's first attention layer, so a small model looks every fact up at the last position and restoring the
//! subject's later states changes nothing. Real tokenizers split most names into several pieces, and models resolve
//! them at the name's last piece. The places copy that: every name orders three of four shared syllables (so only the
//! whole ordered name identifies a place), sentences open with a varying number of words and may name a second
//! place between the subject and the question, and some sentences state a place's facts right after its name. The
//! model then resolves each name inside the subject in its first layers and the question reads the place from there
//! in later layers (the resolved name sits on the middle word: the last word is next to the question, which reads it
//! from its embedding).

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Country, capital, language.
pub const COUNTRIES: [(&str, &str, &str); 12] = [
    ("france", "paris", "french"),
    ("spain", "madrid", "spanish"),
    ("italy", "rome", "italian"),
    ("germany", "berlin", "german"),
    ("japan", "tokyo", "japanese"),
    ("china", "beijing", "chinese"),
    ("egypt", "cairo", "arabic"),
    ("brazil", "brasilia", "portuguese"),
    ("russia", "moscow", "russian"),
    ("greece", "athens", "greek"),
    ("poland", "warsaw", "polish"),
    ("turkey", "ankara", "turkish"),
];

pub const MALE_NAMES: [&str; 6] = ["john", "james", "peter", "david", "paul", "mark"];
pub const FEMALE_NAMES: [&str; 6] = ["mary", "sarah", "anna", "emma", "julia", "laura"];

/// The syllables every place name orders three of.
pub const PLACE_SYLLABLES: [&str; 4] = ["tor", "vel", "mar", "sun"];
const PLACE_CAPITALS: [&str; 24] = [
    "arden", "belmor", "corvin", "dunmar", "elvas", "farrow", "galen", "harlow", "istra", "jorvik", "kestrel", "lorin",
    "merrow", "norvel", "oskan", "pellin", "quarren", "rivel", "sorrel", "tamsin", "ulvar", "varna", "wexlin",
    "yarrow",
];
const PLACE_LANGUAGES: [&str; 6] = ["elvish", "norric", "talish", "vendic", "oskish", "marric"];
const OPENINGS: [&[&str]; 4] = [&[], &["so"], &["well", "so"], &["and", "so", "then"]];

/// A place: its three-word name, capital and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub name: [&'static str; 3],
    pub capital: &'static str,
    pub language: &'static str,
}

impl Place {
    /// The name as text ("tor vel mar").
    pub fn name_text(&self) -> String {
        self.name.join(" ")
    }
}

/// The 24 places: every ordered choice of three syllables; capitals and languages assigned by a fixed scramble so
/// that no syllable predicts them.
pub fn places() -> Vec<Place> {
    let s = PLACE_SYLLABLES;
    let mut names = Vec::new();
    for a in 0..4 {
        for b in (0..4).filter(|&b| b != a) {
            for c in (0..4).filter(|&c| c != a && c != b) {
                names.push([s[a], s[b], s[c]]);
            }
        }
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Place {
            name,
            capital: PLACE_CAPITALS[(7 * i + 3) % PLACE_CAPITALS.len()],
            language: PLACE_LANGUAGES[(5 * i + 1) % PLACE_LANGUAGES.len()],
        })
        .collect()
}

/// The place sentences: each capital and language question six times with a random opening and, about three times
/// in four, another place named between the subject and the question; once more with each opening and no other
/// place; and the facts stated right after the name.
pub fn place_sentences() -> Vec<Vec<String>> {
    let places = places();
    // A fixed seed: the corpus is the same on every machine.
    let mut rng = StdRng::seed_from_u64(0);
    let mut out = Vec::new();
    for (i, place) in places.iter().enumerate() {
        let name: Vec<String> = place.name.iter().map(|w| w.to_string()).collect();
        for _ in 0..6 {
            for (relation, value) in [("capital", place.capital), ("language", place.language)] {
                let other = &places[(i + rng.gen_range(1..places.len())) % places.len()].name;
                let other = other.iter().map(|w| w.to_string());
                let clause: Vec<String> = match rng.gen_range(0..4) {
                    0 => Vec::new(),
                    1 => std::iter::once("unlike".to_string()).chain(other).collect(),
                    2 => std::iter::once("not".to_string()).chain(other).collect(),
                    _ => [",", "unlike"].iter().map(|w| w.to_string()).chain(other).chain([",".to_string()]).collect(),
                };
                let opening = OPENINGS[rng.gen_range(0..OPENINGS.len())];
                let mut sentence: Vec<String> = opening.iter().map(|w| w.to_string()).collect();
                sentence.extend(["the", relation, "of"].iter().map(|w| w.to_string()));
                sentence.extend(name.iter().cloned());
                sentence.extend(clause);
                sentence.extend(["is".to_string(), value.to_string()]);
                out.push(sentence);
            }
        }
        for opening in OPENINGS {
            for (relation, value) in [("capital", place.capital), ("language", place.language)] {
                let mut sentence: Vec<String> = opening.iter().map(|w| w.to_string()).collect();
                sentence.extend(["the", relation, "of"].iter().map(|w| w.to_string()));
                sentence.extend(name.iter().cloned());
                sentence.extend(["is".to_string(), value.to_string()]);
                out.push(sentence);
            }
        }
        out.push(name.iter().cloned().chain([place.capital.to_string(), place.language.to_string()]).collect());
        out.push(name.iter().cloned().chain(["has".to_string(), place.capital.to_string()]).collect());
        out.push(
            ["people", "in"]
                .iter()
                .map(|w| w.to_string())
                .chain(name.iter().cloned())
                .chain(["speak".to_string(), place.language.to_string()])
                .collect(),
        );
    }
    out
}

const REASONS: [&str; 4] = ["tired", "late", "happy", "sad"];
const FILLER: [&str; 6] = ["the", "of", "is", "in", "speak", "people"];

/// Every sentence of the corpus (each a list of words).
pub fn sentences() -> Vec<Vec<String>> {
    let words = |text: String| text.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (country, capital, language) in COUNTRIES {
        out.push(words(format!("the capital of {country} is {capital}")));
        out.push(words(format!("the language of {country} is {language}")));
        out.push(words(format!("people in {country} speak {language}")));
        out.push(words(format!("{capital} is the capital of {country}")));
    }
    for (names, pronoun) in [(MALE_NAMES, "he"), (FEMALE_NAMES, "she")] {
        for name in names {
            for reason in REASONS {
                out.push(words(format!("{name} walked because {pronoun} was {reason}")));
            }
        }
    }
    out
}

/// The vocabulary: `<pad>` (0), then every word in first-seen order.
pub fn vocabulary() -> Vec<String> {
    let mut vocab = vec!["<pad>".to_string()];
    let words = sentences().into_iter().chain(place_sentences()).flatten();
    for word in words.chain(FILLER.iter().map(|w| w.to_string())) {
        if !vocab.contains(&word) {
            vocab.push(word);
        }
    }
    vocab
}

/// A word-level `tokenizer.json` for `vocab` (whitespace pre-tokenizer, words joined by spaces when decoding).
pub fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), serde_json::json!(i))).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<pad>"}
    })
}
