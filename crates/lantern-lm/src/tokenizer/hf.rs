//! Tokenizers from a Hugging Face `tokenizer.json`, through the `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use super::unicode::char_to_byte;
use super::vocab::parse_byte_token;
use super::TokenizerError;

/// How token texts map back to bytes, from the `decoder` section of `tokenizer.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte characters (`ByteLevel` decoder).
    ByteLevel,
    /// SentencePiece: `▁` is a space and `<0xXX>` a byte (`Metaspace`, `ByteFallback`, ...).
    Metaspace,
    /// Token texts are the text (`WordPiece` and others).
    Plain,
}

/// A `tokenizer.json` tokenizer and what Lantern needs around it.
pub(crate) struct HfTokenizer {
    /// Splits special tokens out of the text.
    tok: tokenizers::Tokenizer,
    /// The same with special tokens encoded as plain text.
    tok_literal: tokenizers::Tokenizer,
    pub tokens: Vec<String>,
    special: Vec<bool>,
    style: PieceStyle,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eog: Vec<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("style", &self.style)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// Texts that end a turn or a document, as in llama.cpp's end-of-generation list.
const END_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<|eom_id|>",
    "<eos>",
];

/// Texts that are a beginning-of-sequence token, most specific first.
const BOS_TEXTS: &[&str] = &[
    "<|begin_of_text|>",
    "<s>",
    "<bos>",
    "<|startoftext|>",
    "<|endoftext|>",
];

fn hf_err(path: &Path, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::HuggingFace {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The text of a `tokenizer_config.json` token entry (a string or `{"content": ...}`).
fn config_token(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v.get("content")?.as_str().map(str::to_string),
    }
}

fn piece_style(json: &serde_json::Value) -> PieceStyle {
    let decoder = json
        .get("decoder")
        .map(|d| d.to_string())
        .unwrap_or_default();
    if decoder.contains("\"ByteLevel\"") {
        PieceStyle::ByteLevel
    } else if decoder.contains("\"Metaspace\"")
        || decoder.contains("\"ByteFallback\"")
        || decoder.contains('\u{2581}')
    {
        PieceStyle::Metaspace
    } else {
        PieceStyle::Plain
    }
}

impl HfTokenizer {
    /// Loads `path` (a `tokenizer.json`) and, if present, `tokenizer_config.json` beside it.
    pub(crate) fn from_file(path: &Path) -> Result<HfTokenizer, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(b) => Some(
                serde_json::from_slice::<serde_json::Value>(&b)
                    .map_err(|e| hf_err(&config_path, e))?,
            ),
            Err(_) => None,
        };
        HfTokenizer::from_bytes(path, &bytes, config.as_ref())
    }

    /// Builds from the bytes of a `tokenizer.json`; `origin` names it in errors.
    pub(crate) fn from_bytes(
        origin: &Path,
        bytes: &[u8],
        config: Option<&serde_json::Value>,
    ) -> Result<HfTokenizer, TokenizerError> {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| hf_err(origin, e))?;
        let tok = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| hf_err(origin, e))?;
        let mut tok_literal = tok.clone();
        tok_literal.set_encode_special_tokens(true);
        let vocab: HashMap<String, u32> = tok.get_vocab(true);
        let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut tokens = vec![String::new(); n];
        for (t, &i) in &vocab {
            tokens[i as usize] = t.clone();
        }
        let mut special = vec![false; n];
        for (i, t) in tok.get_added_tokens_decoder() {
            if let Some(s) = special.get_mut(i as usize) {
                *s = true;
            }
            if let Some(slot) = tokens.get_mut(i as usize) {
                *slot = t.content;
            }
        }
        let id_of = |t: &str| vocab.get(t).copied();
        let bos = config
            .and_then(|c| config_token(c, "bos_token"))
            .and_then(|t| id_of(&t))
            .or_else(|| BOS_TEXTS.iter().find_map(|t| id_of(t)));
        let eos = config
            .and_then(|c| config_token(c, "eos_token"))
            .and_then(|t| id_of(&t))
            .or_else(|| END_TEXTS.iter().find_map(|t| id_of(t)));
        let mut eog: Vec<u32> = END_TEXTS.iter().filter_map(|t| id_of(t)).collect();
        eog.extend(eos);
        eog.sort_unstable();
        eog.dedup();
        let add_bos = config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let chat_template = config
            .and_then(|c| c.get("chat_template"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Ok(HfTokenizer {
            style: piece_style(&json),
            tok,
            tok_literal,
            tokens,
            special,
            bos,
            eos,
            eog,
            add_bos,
            chat_template,
        })
    }

    pub(crate) fn encode(
        &self,
        text: &str,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let t = if parse_special {
            &self.tok
        } else {
            &self.tok_literal
        };
        let enc = t
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.tok
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// The bytes of one token, for streaming output.
    pub(crate) fn piece(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        if self.special[id as usize] {
            return text.as_bytes().to_vec();
        }
        match self.style {
            PieceStyle::ByteLevel => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match char_to_byte(c) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.to_string().as_bytes()),
                    }
                }
                out
            }
            PieceStyle::Metaspace => match parse_byte_token(text) {
                Some(b) => vec![b],
                None => text.replace('\u{2581}', " ").into_bytes(),
            },
            PieceStyle::Plain => text.as_bytes().to_vec(),
        }
    }
}
