//! The generated corpus the demo GPT-2 learns: country facts (capital, language) and name → pronoun sentences,
//! over a small word-level vocabulary.

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
    for word in sentences().into_iter().flatten().chain(FILLER.iter().map(|w| w.to_string())) {
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
