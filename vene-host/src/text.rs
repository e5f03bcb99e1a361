//! Text in, text out: a model directory's `tokenizer.json` or the tokenizer in a GGUF file's metadata (tokenizers
//! crate), or GPT-2's BPE built in (tiktoken-rs `r50k_base`) for GPT-2-style models without a tokenizer file.

use std::path::Path;

use tch::Tensor;

use crate::error::{Result, VeneError};

/// GPT-2's `<|endoftext|>`, also used to pad GPT-2 batches.
pub const GPT2_END_OF_TEXT: i64 = 50256;

/// Model types that use GPT-2's byte-level BPE when no tokenizer file is shipped.
const GPT2_STYLE: [&str; 2] = ["gpt2", "backpack-gpt2"];

pub enum TextTokenizer {
    HuggingFace(Box<tokenizers::Tokenizer>),
    /// A GGUF file's tokenizer, with the end-of-text id its metadata names.
    Gguf {
        tokenizer: Box<tokenizers::Tokenizer>,
        end_of_text: Option<i64>,
    },
    Gpt2Bpe(&'static tiktoken_rs::CoreBPE),
}

impl TextTokenizer {
    /// The tokenizer of the model at `dir`: a GGUF file's own, a directory's `tokenizer.json`, else GPT-2's BPE
    /// for GPT-2-style models.
    pub fn for_model(dir: &Path, model_type: &str) -> Result<Option<Self>> {
        if vene_checkpoint::gguf::is_gguf(dir) {
            let file = vene_checkpoint::gguf::GgufFile::open(dir)?;
            let end_of_text = file.integer("tokenizer.ggml.eos_token_id")?;
            let tokenizer = vene_checkpoint::gguf::tokenizer(&file)?;
            return Ok(tokenizer.map(|t| TextTokenizer::Gguf { tokenizer: Box::new(t), end_of_text }));
        }
        let file = dir.join("tokenizer.json");
        if file.exists() {
            let tokenizer = tokenizers::Tokenizer::from_file(&file)
                .map_err(|e| VeneError::Config(format!("{} is not a valid tokenizer: {e}", file.display())))?;
            return Ok(Some(TextTokenizer::HuggingFace(Box::new(tokenizer))));
        }
        if GPT2_STYLE.contains(&model_type) {
            return Ok(Some(TextTokenizer::Gpt2Bpe(tiktoken_rs::r50k_base_singleton())));
        }
        Ok(None)
    }

    fn huggingface(&self) -> Option<&tokenizers::Tokenizer> {
        match self {
            TextTokenizer::HuggingFace(tokenizer) | TextTokenizer::Gguf { tokenizer, .. } => Some(tokenizer),
            TextTokenizer::Gpt2Bpe(_) => None,
        }
    }

    /// The ids of a whole text, with the special tokens the tokenizer adds around one (Gemma's BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        self.encode_with(text, true)
    }

    /// The ids of `text` without the special tokens a tokenizer adds around a whole text: for a word, a subject or
    /// a target inside a prompt.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special_tokens: bool) -> Result<Vec<i64>> {
        match self {
            TextTokenizer::HuggingFace(tokenizer) | TextTokenizer::Gguf { tokenizer, .. } => tokenizer
                .encode(text, special_tokens)
                .map(|encoding| encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
                .map_err(|e| VeneError::Inputs(format!("cannot tokenize {text:?}: {e}"))),
            TextTokenizer::Gpt2Bpe(bpe) => Ok(bpe.encode_ordinary(text).into_iter().map(i64::from).collect()),
        }
    }

    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        match self {
            TextTokenizer::HuggingFace(tokenizer) | TextTokenizer::Gguf { tokenizer, .. } => {
                tokenizer.decode(&ids, false).unwrap_or_default()
            }
            TextTokenizer::Gpt2Bpe(bpe) => bpe.decode(&ids).unwrap_or_default(),
        }
    }

    /// The end-of-text token, where the tokenizer has one.
    pub fn end_of_text(&self) -> Option<i64> {
        match self {
            TextTokenizer::Gguf { end_of_text, .. } => *end_of_text,
            TextTokenizer::HuggingFace(tokenizer) => {
                ["<|endoftext|>", "</s>", "<eos>"].iter().find_map(|t| tokenizer.token_to_id(t)).map(i64::from)
            }
            TextTokenizer::Gpt2Bpe(_) => Some(GPT2_END_OF_TEXT),
        }
    }

    /// The id used to pad shorter texts of a batch (masked out by the attention mask).
    pub fn pad_id(&self) -> i64 {
        let Some(tokenizer) = self.huggingface() else { return GPT2_END_OF_TEXT };
        tokenizer
            .get_padding()
            .map(|p| i64::from(p.pad_id))
            .or_else(|| ["<|endoftext|>", "</s>", "<pad>"].iter().find_map(|t| tokenizer.token_to_id(t)).map(i64::from))
            .unwrap_or(0)
    }

    /// Token ids `(batch, longest)` right-padded, and the attention mask (1 for real tokens).
    pub fn encode_batch(&self, texts: &[String]) -> Result<(Tensor, Tensor)> {
        let encoded = texts.iter().map(|t| self.encode(t)).collect::<Result<Vec<_>>>()?;
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Err(VeneError::Inputs("the texts tokenize to nothing".to_string()));
        }
        let mut ids = Vec::with_capacity(texts.len() * longest);
        let mut mask = Vec::with_capacity(texts.len() * longest);
        for tokens in &encoded {
            ids.extend(tokens.iter().copied().chain(std::iter::repeat_n(self.pad_id(), longest - tokens.len())));
            mask.extend((0..longest).map(|i| i64::from(i < tokens.len())));
        }
        let shape = [texts.len() as i64, longest as i64];
        Ok((Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape)))
    }
}
