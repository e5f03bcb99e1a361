//! The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata, built with the tokenizers crate the way
//! transformers 5 builds it from the same file, so the same text gives the same ids:
//! - `llama` vocabularies (SentencePiece BPE, no merges stored): a byte-fallback BPE whose merges are recovered
//!   from the vocabulary — ranked by score, or for Gemma by file order, since Gemma's scores do not follow its merge
//!   order; Gemma spells runs of spaces as `▁`s and turns spaces into `▁` before splitting, Llama prepends `▁`.
//! - `gpt2` vocabularies (Llama 3, Qwen): byte-level BPE with the file's merges, split first by the regex of the
//!   pre-tokenizer llama.cpp names.
//!
//! Control tokens (type 3) match whole as special tokens, user-defined ones (type 4) as plain added tokens; BOS is
//! prepended when `tokenizer.ggml.add_bos_token` says so; padding uses the metadata's padding id.
//! (transformers 4.x built Gemma's as a Unigram over the scores, which splits real words into pieces.)

use std::collections::HashMap;

use serde_json::{json, Value};
use tokenizers::{
    models::bpe::{Vocab, BPE},
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
};

use super::GgufFile;
use crate::Result;

/// SentencePiece's word-boundary marker.
const SPACE: &str = "\u{2581}";
/// The longest piece (in bytes) whose merges are recovered.
const MAX_MERGED_PIECE: usize = 256;
/// llama.cpp's token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Llama 3's pre-tokenizer split (llama.cpp `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pre-tokenizer split (llama.cpp `qwen2`).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Builds the tokenizer of `file`, or `None` when its metadata holds none.
pub fn tokenizer(file: &GgufFile) -> Result<Option<Tokenizer>> {
    let Some(kind) = file.string("tokenizer.ggml.model")? else { return Ok(None) };
    let tokens = file
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| super::invalid(file.path(), "has tokenizer.ggml.model but no tokenizer.ggml.tokens"))?;
    let types = file.integers("tokenizer.ggml.token_type")?.unwrap_or_default();
    let id = |key: &str| -> Result<Option<u32>> {
        let value = file.integer(&format!("tokenizer.ggml.{key}"))?;
        Ok(value.and_then(|v| u32::try_from(v).ok()).filter(|&v| (v as usize) < tokens.len()))
    };
    let gemma = file.architecture()?.starts_with("gemma");
    let fail =
        |e: String| super::invalid(file.path(), format!("its tokenizer metadata does not make a tokenizer: {e}"));
    let mut built = match kind {
        "llama" if gemma => gemma_tokenizer(&tokens).map_err(fail)?,
        "llama" => sentencepiece_tokenizer(file, &tokens)?,
        "gpt2" => byte_level_tokenizer(file, &tokens)?,
        other => {
            return Err(super::invalid(
                file.path(),
                format!("has a '{other}' tokenizer; vene builds 'llama' (SentencePiece) and 'gpt2' (BPE) ones"),
            ))
        }
    };
    let of_type = |wanted: i64| types.iter().enumerate().filter(move |(_, &t)| t == wanted).map(|(i, _)| i);
    let control = of_type(CONTROL).map(|i| AddedToken::from(tokens[i], true).normalized(false));
    built.add_special_tokens(control.collect::<Vec<_>>()).map_err(|e| fail(e.to_string()))?;
    let user_defined = of_type(USER_DEFINED)
        .filter(|&i| built.token_to_id(tokens[i]).is_some())
        .map(|i| AddedToken::from(tokens[i], false).normalized(false))
        .collect::<Vec<_>>();
    built.add_tokens(user_defined).map_err(|e| fail(e.to_string()))?;
    let bos = id("bos_token_id")?;
    if let (true, Some(bos)) = (file.boolean("tokenizer.ggml.add_bos_token")?.unwrap_or(kind == "llama"), bos) {
        let template: PostProcessorWrapper =
            component(bos_template(&built.id_to_token(bos).unwrap_or_default(), bos)).map_err(fail)?;
        built.with_post_processor(Some(template));
    }
    if let Some(pad) = id("padding_token_id")? {
        let pad_token = built.id_to_token(pad).unwrap_or_default();
        built.with_padding(Some(tokenizers::PaddingParams { pad_id: pad, pad_token, ..Default::default() }));
    }
    Ok(Some(built))
}

/// Gemma: runs of spaces respelled as `▁`s, merges in file order, spaces to `▁` before a split on spaces.
fn gemma_tokenizer(tokens: &[&str]) -> std::result::Result<Tokenizer, String> {
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| if t.contains(' ') && t.trim().is_empty() { SPACE.repeat(t.chars().count()) } else { t.to_string() })
        .collect();
    let positions: Vec<f64> = (0..respelled.len()).map(|i| -(i as f64)).collect();
    let mut tokenizer = bpe(&respelled, &positions, Some("<unk>"))?;
    tokenizer.with_normalizer(Some(component::<NormalizerWrapper>(replace(" ", SPACE))?)).map_err(|e| e.to_string())?;
    tokenizer.with_pre_tokenizer(Some(component::<PreTokenizerWrapper>(
        json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
    )?));
    tokenizer.with_decoder(Some(component::<DecoderWrapper>(
        json!({"type": "Sequence", "decoders": [replace(SPACE, " "), {"type": "ByteFallback"}, {"type": "Fuse"}]}),
    )?));
    Ok(tokenizer)
}

/// SentencePiece Llama / Mistral: merges ranked by score, `▁` prepended to the text (unless the file says not).
fn sentencepiece_tokenizer(file: &GgufFile, tokens: &[&str]) -> Result<Tokenizer> {
    let scores = file
        .floats("tokenizer.ggml.scores")?
        .ok_or_else(|| super::invalid(file.path(), "has a 'llama' tokenizer without tokenizer.ggml.scores"))?;
    if scores.len() != tokens.len() {
        return Err(super::invalid(
            file.path(),
            format!("has {} token scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let prefix_space = file.boolean("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let fail =
        |e: String| super::invalid(file.path(), format!("its tokenizer metadata does not make a tokenizer: {e}"));
    let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let scores: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    let mut tokenizer = bpe(&owned, &scores, None).map_err(fail)?;
    let scheme = if prefix_space { "first" } else { "never" };
    let metaspace = json!({"type": "Metaspace", "replacement": SPACE, "prepend_scheme": scheme, "split": false});
    tokenizer.with_pre_tokenizer(Some(component::<PreTokenizerWrapper>(metaspace).map_err(fail)?));
    let mut decoders = vec![replace(SPACE, " "), json!({"type": "ByteFallback"}), json!({"type": "Fuse"})];
    if prefix_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let decoder = json!({"type": "Sequence", "decoders": decoders});
    tokenizer.with_decoder(Some(component::<DecoderWrapper>(decoder).map_err(fail)?));
    Ok(tokenizer)
}

/// Llama 3 / Qwen: byte-level BPE with the file's merges.
fn byte_level_tokenizer(file: &GgufFile, tokens: &[&str]) -> Result<Tokenizer> {
    let fail =
        |e: String| super::invalid(file.path(), format!("its tokenizer metadata does not make a tokenizer: {e}"));
    let merges: Vec<(String, String)> = file
        .strings("tokenizer.ggml.merges")?
        .ok_or_else(|| super::invalid(file.path(), "has a 'gpt2' tokenizer without tokenizer.ggml.merges"))?
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect::<Option<_>>()
        .ok_or_else(|| super::invalid(file.path(), "has a merge that is not two pieces separated by a space"))?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    let model = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| fail(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    let split = match file.string("tokenizer.ggml.pre")? {
        Some("llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx") => Some(LLAMA3_SPLIT),
        Some("qwen2" | "deepseek-r1-qwen") => Some(QWEN2_SPLIT),
        _ => None,
    };
    let pre_tokenizer = match split {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]}),
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
    };
    tokenizer.with_pre_tokenizer(Some(component::<PreTokenizerWrapper>(pre_tokenizer).map_err(fail)?));
    let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
    tokenizer.with_decoder(Some(component::<DecoderWrapper>(decoder).map_err(fail)?));
    Ok(tokenizer)
}

/// A byte-fallback BPE over `tokens` with merges recovered from them, best `scores` first.
fn bpe(tokens: &[String], scores: &[f64], unk: Option<&str>) -> std::result::Result<Tokenizer, String> {
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = recovered_merges(tokens, scores, &vocab);
    let unk = unk.filter(|u| vocab.contains_key(*u)).map(str::to_string);
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    Ok(Tokenizer::new(builder.build().map_err(|e| e.to_string())?))
}

/// Every split of a token into two tokens, for every token, ordered as transformers orders them: by the whole
/// token's score (best first), then by longer left and right halves; within a token by the halves' ids.
fn recovered_merges(tokens: &[String], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    // A token listed twice keeps its first place and its last score, as a Python dict built from the list does.
    let mut score: HashMap<&str, f64> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (token, &s) in tokens.iter().zip(scores) {
        if score.insert(token.as_str(), s).is_none() {
            order.push(token);
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    // Real pieces are a few characters long; longer ones (only in damaged files) are left unmergeable rather than
    // split at every one of their characters.
    for piece in order.into_iter().filter(|p| p.len() <= MAX_MERGED_PIECE) {
        let start = merges.len();
        for (cut, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(cut);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((left, right, score[piece]));
            }
        }
        merges[start..].sort_by_key(|(l, r, _)| (vocab[*l], vocab[*r]));
    }
    // Highest score first, then longer left and right parts. `+ 0.0` makes -0 equal 0 as Python compares them; a
    // NaN score (damaged files only) still sorts somewhere fixed, so the order stays total.
    let key = |m: &(&str, &str, f64)| (m.2 + 0.0, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (a, b) = (key(a), key(b));
        b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2))
    });
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

fn component<T: serde::de::DeserializeOwned>(value: Value) -> std::result::Result<T, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn replace(pattern: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": pattern}, "content": content})
}

fn bos_template(token: &str, id: u32) -> Value {
    json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": token, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {token: {"id": token, "ids": [id], "tokens": [token]}},
    })
}
