//! Tokenizers: from GGUF metadata (byte-level BPE and SentencePiece, token for token what
//! llama.cpp produces) and from a Hugging Face `tokenizer.json` (through the `tokenizers`
//! crate), behind one API.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use lantern_lm::gguf::GgufFile;
//! use lantern_lm::tokenizer::Tokenizer;
//!
//! let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = Tokenizer::from_gguf(&gguf)?;
//! let prompt = tok.apply_chat_template(&[("user", "What is 2+2?")], true)?;
//! let ids = tok.encode(&prompt, false)?; // `<|im_start|>` etc. become their special ids
//! assert_eq!(tok.decode(&ids)?, prompt);
//! # Ok(()) }
//! ```
//!
//! # GGUF tokenizers
//! `tokenizer.ggml.model` picks the algorithm: `gpt2` is byte-level BPE, whose pre-tokenizer
//! (how text is split into words before merging) is named by `tokenizer.ggml.pre`; `llama` is
//! SentencePiece. Encoding follows llama.cpp's `llama-vocab.cpp` step by step: special tokens
//! are cut out of the raw text first (longest first), then each text fragment is split and
//! merged. The pre-tokenizers implemented are those llama.cpp maps to the GPT-2, Llama-3,
//! Qwen2, Qwen3.5, StarCoder, Falcon, DeepSeek-LLM, DeepSeek-Coder and default splits (see
//! [`Tokenizer::supported_pre_tokenizers`]); any other value is an error, never a silent
//! fallback. A missing `tokenizer.ggml.pre` means llama.cpp's `default` split.

mod bpe;
mod cache;
mod chat;
mod hf;
mod pretokenize;
mod special;
mod spm;
#[cfg(test)]
mod tests;
mod unicode;
mod unicode_data;
mod vocab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use chat::ChatFormat;

use crate::gguf::{GgufFile, Value};
use bpe::Bpe;
use hf::HfTokenizer;
use pretokenize::{pre_info, PreTokenizer};
use special::Fragment;
use vocab::{Meta, Vocab, VocabType};

/// What went wrong building or running a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata has no `{0}`")]
    MissingKey(&'static str),
    /// A GGUF metadata key has the wrong type or shape.
    #[error("GGUF metadata `{key}` is not {expected}")]
    BadKey { key: String, expected: &'static str },
    /// `tokenizer.ggml.model` names an algorithm that is not implemented.
    #[error("unsupported tokenizer.ggml.model `{0}` (supported: gpt2 = byte-level BPE, llama = SentencePiece)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer that is not implemented.
    #[error("unsupported tokenizer.ggml.pre `{name}` (supported: {supported})")]
    UnsupportedPreTokenizer { name: String, supported: String },
    /// A token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    /// SentencePiece byte fallback found no `<0xXX>` token for a byte.
    #[error("the vocabulary has no byte-fallback token for byte 0x{0:02X}")]
    NoByteToken(u8),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `tokenizer.json` (or `tokenizer_config.json`) could not be loaded.
    #[error("{path}: {message}")]
    HuggingFace { path: PathBuf, message: String },
    /// The `tokenizers` crate failed to encode or decode.
    #[error("tokenizer: {0}")]
    Encode(String),
    /// The model has no chat template (and no ChatML tokens to fall back on).
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// The chat template is not one of the formats Lantern renders.
    #[error("chat template not recognised (Lantern renders ChatML, Llama 3 and Llama 2 templates); it starts: {0:?}")]
    UnsupportedChatTemplate(String),
    /// The messages do not fit the chat format.
    #[error("chat messages: {0}")]
    ChatRoles(String),
}

impl TokenizerError {
    pub(crate) fn bad_key(key: &str, expected: &'static str) -> TokenizerError {
        TokenizerError::BadKey {
            key: key.to_string(),
            expected,
        }
    }
}

/// Which kind of tokenizer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE from GGUF metadata.
    GgufBpe,
    /// SentencePiece from GGUF metadata.
    GgufSpm,
    /// A Hugging Face `tokenizer.json`.
    HuggingFace,
}

/// The algorithm of a GGUF tokenizer.
#[derive(Debug)]
enum GgufModel {
    Bpe(Box<Bpe>),
    Spm(Box<spm::Spm>),
}

/// A tokenizer read from GGUF metadata.
#[derive(Debug)]
struct GgufTokenizer {
    vocab: Vocab,
    model: GgufModel,
    pre: Option<String>,
    chat_template: Option<String>,
}

#[derive(Debug)]
enum Inner {
    Gguf(Box<GgufTokenizer>),
    Hf(Box<HfTokenizer>),
}

/// A text tokenizer: encode text to token ids and back.
///
/// Cheap to share between threads (`&Tokenizer` is `Sync`); the BPE word cache is internal.
#[derive(Debug)]
pub struct Tokenizer {
    inner: Inner,
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_gguf_metadata(&gguf.metadata)
    }

    /// [`Tokenizer::from_gguf`] from the metadata map alone.
    pub fn from_gguf_metadata(
        metadata: &BTreeMap<String, Value>,
    ) -> Result<Tokenizer, TokenizerError> {
        let meta = Meta(metadata);
        let model = meta
            .str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let pre = meta.str("tokenizer.ggml.pre")?;
        let chat_template = meta.str("tokenizer.chat_template")?.map(str::to_string);
        let tok = match model {
            "gpt2" => {
                let info =
                    pre_info(pre).ok_or_else(|| TokenizerError::UnsupportedPreTokenizer {
                        name: pre.unwrap_or_default().to_string(),
                        supported: pretokenize::SUPPORTED_PRE.join(", "),
                    })?;
                let vocab = Vocab::load(&meta, VocabType::Bpe, info.add_bos)?;
                let merges = meta
                    .strings("tokenizer.ggml.merges")?
                    .ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
                let bpe = Bpe::new(
                    &vocab,
                    &merges,
                    PreTokenizer::new(info.kind),
                    info.ignore_merges,
                )?;
                GgufTokenizer {
                    vocab,
                    model: GgufModel::Bpe(Box::new(bpe)),
                    pre: pre.map(str::to_string),
                    chat_template,
                }
            }
            "llama" => {
                let vocab = Vocab::load(&meta, VocabType::Spm, true)?;
                let spm = Box::new(spm::Spm::new(&vocab));
                GgufTokenizer {
                    vocab,
                    model: GgufModel::Spm(spm),
                    pre: pre.map(str::to_string),
                    chat_template,
                }
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        Ok(Tokenizer {
            inner: Inner::Gguf(Box::new(tok)),
        })
    }

    /// Loads a Hugging Face `tokenizer.json`; a `tokenizer_config.json` next to it, if any,
    /// supplies the BOS/EOS tokens, `add_bos_token` and the chat template.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer {
            inner: Inner::Hf(Box::new(HfTokenizer::from_file(path)?)),
        })
    }

    /// [`Tokenizer::from_file`] from the contents of a `tokenizer.json` (and optionally of a
    /// `tokenizer_config.json`).
    pub fn from_json(
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Tokenizer, TokenizerError> {
        let origin = Path::new("<tokenizer.json>");
        let config = match tokenizer_config_json {
            Some(b) => Some(serde_json::from_slice::<serde_json::Value>(b).map_err(|e| {
                TokenizerError::HuggingFace {
                    path: PathBuf::from("<tokenizer_config.json>"),
                    message: e.to_string(),
                }
            })?),
            None => None,
        };
        Ok(Tokenizer {
            inner: Inner::Hf(Box::new(HfTokenizer::from_bytes(
                origin,
                tokenizer_json,
                config.as_ref(),
            )?)),
        })
    }

    /// The `tokenizer.ggml.pre` values this crate implements.
    pub fn supported_pre_tokenizers() -> &'static [&'static str] {
        pretokenize::SUPPORTED_PRE
    }

    /// Which kind of tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        match &self.inner {
            Inner::Gguf(g) => match g.model {
                GgufModel::Bpe(_) => TokenizerKind::GgufBpe,
                GgufModel::Spm(_) => TokenizerKind::GgufSpm,
            },
            Inner::Hf(_) => TokenizerKind::HuggingFace,
        }
    }

    /// The GGUF `tokenizer.ggml.pre` value, if any.
    pub fn pre_tokenizer(&self) -> Option<&str> {
        match &self.inner {
            Inner::Gguf(g) => g.pre.as_deref(),
            Inner::Hf(_) => None,
        }
    }

    /// Encodes `text`, with BOS first if `add_bos` (and the vocabulary has one). Special-token
    /// texts in `text` (`<|im_start|>`, `<|endoftext|>`, ...) become their ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_bos, true)
    }

    /// [`Tokenizer::encode`] choosing whether control tokens in the text are parsed
    /// (`parse_special`) or tokenized as plain text. User-defined added tokens are always
    /// matched, as in llama.cpp and `tokenizers`. llama.cpp's tokenizer test vectors are
    /// `encode_with(text, false, false)`.
    pub fn encode_with(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.bos_id());
        }
        match &self.inner {
            Inner::Gguf(g) => g.encode(text, parse_special, &mut out)?,
            Inner::Hf(h) => out.extend(h.encode(text, parse_special)?),
        }
        Ok(out)
    }

    /// Decodes ids to text, special tokens written out. The bytes of all tokens are joined
    /// first, so characters split across tokens come out whole; invalid UTF-8 left at the end
    /// becomes U+FFFD. For SentencePiece the leading space of the first token is dropped (the
    /// space encoding added). No clean-up of spaces before punctuation is done.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// [`Tokenizer::decode`], leaving out control tokens (BOS, EOS, `<|im_start|>`, ...) when
    /// `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let n = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(TokenizerError::TokenOutOfRange { id, vocab_size: n });
        }
        match &self.inner {
            Inner::Gguf(g) => {
                Ok(String::from_utf8_lossy(&g.decode(ids, skip_special)).into_owned())
            }
            Inner::Hf(h) => h.decode(ids, skip_special),
        }
    }

    /// The bytes one token stands for, special tokens written out: join these for streaming
    /// output and convert to text only when a character is complete. Empty for ids outside the
    /// vocabulary. (A SentencePiece piece keeps its leading space.)
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.piece(id, true),
            Inner::Hf(h) => h.piece(id),
        }
    }

    /// Number of token ids (the embedding rows the vocabulary needs).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.tokens.len(),
            Inner::Hf(h) => h.tokens.len(),
        }
    }

    /// The beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.bos,
            Inner::Hf(h) => h.bos,
        }
    }

    /// The end-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.eos,
            Inner::Hf(h) => h.eos,
        }
    }

    /// Every token that ends generation, sorted: EOS plus end-of-turn tokens such as
    /// `<|im_end|>`, `<|eot_id|>` or `<|endoftext|>` (llama.cpp's end-of-generation set).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eog().to_vec()
    }

    fn eog(&self) -> &[u32] {
        match &self.inner {
            Inner::Gguf(g) => &g.vocab.eog,
            Inner::Hf(h) => &h.eog,
        }
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog().binary_search(&id).is_ok()
    }

    /// Whether the model expects a BOS token in front of its input (GGUF
    /// `tokenizer.ggml.add_bos_token`, or llama.cpp's default for the tokenizer type).
    pub fn add_bos_default(&self) -> bool {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.add_bos,
            Inner::Hf(h) => h.add_bos,
        }
    }

    /// The stored text of a token (byte-level BPE tokens in GPT-2's byte alphabet, e.g.
    /// `ĠHello`; SentencePiece pieces with `▁`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.tokens.get(id as usize).map(String::as_str),
            Inner::Hf(h) => h.tokens.get(id as usize).map(String::as_str),
        }
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.ids.get(text).copied(),
            Inner::Hf(h) => h.tokens.iter().position(|t| t == text).map(|i| i as u32),
        }
    }

    /// The model's Jinja chat template, if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        match &self.inner {
            Inner::Gguf(g) => g.chat_template.as_deref(),
            Inner::Hf(h) => h.chat_template.as_deref(),
        }
    }

    /// The chat format of the model's template (ChatML when it has none but has
    /// `<|im_start|>`).
    pub fn chat_format(&self) -> Result<ChatFormat, TokenizerError> {
        let text = |id: Option<u32>| {
            id.and_then(|i| self.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        match self.chat_template() {
            Some(t) => ChatFormat::detect(t, &text(self.bos_id()), &text(self.eos_id())),
            None if self.token_id("<|im_start|>").is_some() => Ok(ChatFormat::ChatMl {
                default_system: None,
            }),
            None => Err(TokenizerError::NoChatTemplate),
        }
    }

    /// Renders a conversation of `(role, content)` messages with the model's chat template
    /// (ChatML, Llama 3 or Llama 2, recognised from the template text). With
    /// `add_generation_prompt` the result ends with the opening of an assistant turn. Encode
    /// the result with [`Tokenizer::encode`] and `add_bos = false`: templates that want a BOS
    /// write it themselves.
    pub fn apply_chat_template<R: AsRef<str>, C: AsRef<str>>(
        &self,
        messages: &[(R, C)],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.chat_format()?.render(messages, add_generation_prompt)
    }
}

impl GgufTokenizer {
    fn encode(
        &self,
        text: &str,
        parse_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let frags = special::partition(&self.vocab, text, parse_special);
        match &self.model {
            GgufModel::Bpe(bpe) => {
                for f in frags {
                    match f {
                        Fragment::Text(r) => bpe.encode(&self.vocab, &text[r], out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            GgufModel::Spm(spm) => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Fragment::Text(r) => {
                            buf.clear();
                            if self.vocab.add_space_prefix && prev_special {
                                buf.push('\u{2581}');
                            }
                            for c in text[r].chars() {
                                buf.push(if c == ' ' { '\u{2581}' } else { c });
                            }
                            spm.encode(&self.vocab, &buf, out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// llama.cpp `detokenize` without space clean-up.
    fn decode(&self, ids: &[u32], skip_special: bool) -> Vec<u8> {
        let v = &self.vocab;
        let mut ids = ids;
        let mut remove_space = v.add_space_prefix;
        if skip_special && v.add_bos && !ids.is_empty() && Some(ids[0]) == v.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if skip_special && v.add_eos && ids.last().is_some_and(|&l| Some(l) == v.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let piece = v.piece(id, !skip_special);
            let piece = match piece.first() {
                Some(b' ') if remove_space => &piece[1..],
                _ => &piece[..],
            };
            out.extend_from_slice(piece);
            remove_space = false;
        }
        out
    }
}
