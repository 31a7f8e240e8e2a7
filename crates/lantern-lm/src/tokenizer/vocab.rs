//! The vocabulary of a GGUF tokenizer: token texts, types and the special tokens, loaded the way
//! llama.cpp's `llama_vocab::impl::load` does.

use std::collections::BTreeMap;

use super::cache::FxMap;
use super::TokenizerError;
use crate::gguf::Value;

/// Token attributes (llama.cpp `llama_token_attr`).
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

/// Typed access to GGUF metadata, with errors that name the key.
pub(crate) struct Meta<'a>(pub &'a BTreeMap<String, Value>);

impl<'a> Meta<'a> {
    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| TokenizerError::bad_key(key, "a string")),
        }
    }

    pub(crate) fn u32(&self, key: &str) -> Result<Option<u32>, TokenizerError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| TokenizerError::bad_key(key, "an unsigned 32-bit integer")),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| TokenizerError::bad_key(key, "a bool")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| TokenizerError::bad_key(key, "an array")),
        }
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| TokenizerError::bad_key(key, "an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn numbers(&self, key: &str) -> Result<Option<Vec<f64>>, TokenizerError> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| TokenizerError::bad_key(key, "an array of numbers"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Which tokenizer algorithm a vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VocabType {
    /// Byte-level BPE (`tokenizer.ggml.model = gpt2`).
    Bpe,
    /// SentencePiece with byte fallback (`tokenizer.ggml.model = llama`).
    Spm,
}

/// Texts llama.cpp treats as end of generation (`special_eog_ids`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Special-token kinds llama.cpp finds by text when their key is missing, with the texts.
const AUTO_DETECT: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.eot_token_id",
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    ("tokenizer.ggml.eom_token_id", &["<|eom_id|>"]),
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// A GGUF vocabulary.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabType,
    pub tokens: Vec<String>,
    pub ids: FxMap<String, u32>,
    pub attrs: Vec<u16>,
    pub scores: Vec<f32>,
    /// Tokens matched in raw text before tokenizing, longest first (`cache_special_tokens`).
    pub specials: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// End-of-generation tokens, sorted.
    pub eog: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

impl Vocab {
    /// Loads the vocabulary; `kind` and `add_bos_default` come from the model and
    /// pre-tokenizer types.
    pub(crate) fn load(
        meta: &Meta,
        kind: VocabType,
        add_bos_default: bool,
    ) -> Result<Vocab, TokenizerError> {
        let key_tokens = "tokenizer.ggml.tokens";
        let raw = meta
            .strings(key_tokens)?
            .ok_or(TokenizerError::MissingKey(key_tokens))?;
        let n = raw.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(TokenizerError::bad_key(
                key_tokens,
                "a non-empty token list",
            ));
        }
        let scores = match meta.numbers("tokenizer.ggml.scores")? {
            Some(s) if s.len() < n => {
                return Err(TokenizerError::bad_key(
                    "tokenizer.ggml.scores",
                    "one score per token",
                ))
            }
            Some(s) => s[..n]
                .iter()
                .map(|&x| {
                    if x.is_nan() {
                        f32::NEG_INFINITY
                    } else {
                        x as f32
                    }
                })
                .collect(),
            None => vec![0.0; n],
        };
        let attrs = match meta.numbers("tokenizer.ggml.token_type")? {
            Some(t) if t.len() < n => {
                return Err(TokenizerError::bad_key(
                    "tokenizer.ggml.token_type",
                    "one type per token",
                ))
            }
            Some(t) => t[..n].iter().map(|&x| attr_of_type(x)).collect(),
            None => vec![attr::NORMAL; n],
        };
        let mut tokens = Vec::with_capacity(n);
        let mut ids = FxMap::default();
        ids.reserve(n);
        for (i, t) in raw.iter().enumerate() {
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.to_string()
            };
            ids.insert(text.clone(), i as u32);
            tokens.push(text);
        }
        let mut v = Vocab {
            kind,
            tokens,
            ids,
            attrs,
            scores,
            specials: Vec::new(),
            bos: None,
            eos: None,
            unk: None,
            pad: None,
            eog: Vec::new(),
            add_bos: add_bos_default,
            add_eos: false,
            add_space_prefix: kind == VocabType::Spm,
        };
        v.load_special_ids(meta)?;
        if let Some(b) = meta.bool("tokenizer.ggml.add_bos_token")? {
            v.add_bos = b;
        }
        if let Some(b) = meta.bool("tokenizer.ggml.add_eos_token")? {
            v.add_eos = b;
        }
        if let Some(b) = meta.bool("tokenizer.ggml.add_space_prefix")? {
            v.add_space_prefix = b;
        }
        v.mark_special_tokens(meta)?;
        v.build_special_cache();
        v.set_strip_attrs(meta)?;
        Ok(v)
    }

    /// An id from `key` if present and in range, else `default` if in range.
    fn id_key(
        &self,
        meta: &Meta,
        key: &str,
        default: Option<u32>,
    ) -> Result<Option<u32>, TokenizerError> {
        let n = self.tokens.len() as u32;
        let default = default.filter(|&d| d < n);
        Ok(match meta.u32(key)? {
            Some(id) if id < n => Some(id),
            _ => default,
        })
    }

    fn load_special_ids(&mut self, meta: &Meta) -> Result<(), TokenizerError> {
        let (bos, eos, unk) = match self.kind {
            VocabType::Spm => (Some(1), Some(2), Some(0)),
            VocabType::Bpe => (Some(11), Some(11), None),
        };
        self.bos = self.id_key(meta, "tokenizer.ggml.bos_token_id", bos)?;
        self.eos = self.id_key(meta, "tokenizer.ggml.eos_token_id", eos)?;
        self.unk = self.id_key(meta, "tokenizer.ggml.unknown_token_id", unk)?;
        self.pad = self.id_key(meta, "tokenizer.ggml.padding_token_id", None)?;
        Ok(())
    }

    /// llama.cpp's text-based detection of end-of-turn, FIM and end-of-generation tokens, which
    /// also turns them into control tokens.
    fn mark_special_tokens(&mut self, meta: &Meta) -> Result<(), TokenizerError> {
        let mut eog: Vec<u32> = Vec::new();
        let deprecated = |key: &str| match key {
            "tokenizer.ggml.fim_pre_token_id" => Some("tokenizer.ggml.prefix_token_id"),
            "tokenizer.ggml.fim_suf_token_id" => Some("tokenizer.ggml.suffix_token_id"),
            "tokenizer.ggml.fim_mid_token_id" => Some("tokenizer.ggml.middle_token_id"),
            _ => None,
        };
        for &(key, texts) in AUTO_DETECT {
            let mut id = self.id_key(meta, key, None)?;
            if let Some(old) = deprecated(key) {
                id = self.id_key(meta, old, id)?;
            }
            if id.is_none() {
                id = texts.iter().filter_map(|t| self.ids.get(*t).copied()).min();
                if let Some(i) = id {
                    self.attrs[i as usize] |= attr::CONTROL;
                }
            }
            let end_kind = matches!(
                key,
                "tokenizer.ggml.eot_token_id"
                    | "tokenizer.ggml.eom_token_id"
                    | "tokenizer.ggml.fim_pad_token_id"
                    | "tokenizer.ggml.fim_rep_token_id"
                    | "tokenizer.ggml.fim_sep_token_id"
            );
            if end_kind {
                eog.extend(id);
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let a = &mut self.attrs[i];
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        for t in EOG_TEXTS {
            if let Some(&i) = self.ids.get(*t) {
                eog.push(i);
                self.attrs[i as usize] |= attr::CONTROL;
            }
        }
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&i) = self.ids.get(t) {
                self.attrs[i as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(self.eos);
        eog.sort_unstable();
        eog.dedup();
        let has = |eog: &[u32], s: &str| eog.iter().any(|&i| self.tokens[i as usize] == s);
        let drop_end = (has(&eog, "<|return|>") && has(&eog, "<|call|>") && has(&eog, "<|end|>"))
            || ((has(&eog, "<|call|>") || has(&eog, "<|calls|>"))
                && has(&eog, "<|flush|>")
                && has(&eog, "<|end|>"));
        let drop_s = has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>");
        if drop_end {
            if let Some(&end) = self.ids.get("<|end|>") {
                eog.retain(|&i| i != end);
                self.attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if drop_s {
            if let Some(&s) = self.ids.get("</s>") {
                if eog.contains(&s) {
                    eog.retain(|&i| i != s);
                    self.attrs[s as usize] = attr::NORMAL;
                }
            }
        }
        self.eog = eog;
        Ok(())
    }

    fn build_special_cache(&mut self) {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut s: Vec<u32> = (0..self.tokens.len() as u32)
            .filter(|&i| self.attrs[i as usize] & mask != 0)
            .collect();
        s.sort_by(|&a, &b| {
            self.tokens[b as usize]
                .len()
                .cmp(&self.tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        self.specials = s;
    }

    /// Per-model left/right stripping around special tokens (llama.cpp sets these by name).
    fn set_strip_attrs(&mut self, meta: &Meta) -> Result<(), TokenizerError> {
        let name = meta.str("general.name")?.unwrap_or("").to_lowercase();
        let pre = meta.str("tokenizer.ggml.pre")?.unwrap_or("");
        let arch = meta.str("general.architecture")?.unwrap_or("");
        let mut set = |text: &str, flag: u16, on: bool| {
            if let Some(&i) = self.ids.get(text) {
                let a = &mut self.attrs[i as usize];
                *a = if on { *a | flag } else { *a & !flag };
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|p| arch.contains(p))
        {
            set("<mask>", attr::LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for &i in &self.specials {
                self.attrs[i as usize] |= attr::RSTRIP;
            }
            let mut set = |text: &str, on: bool| {
                if let Some(&i) = self.ids.get(text) {
                    let a = &mut self.attrs[i as usize];
                    *a = if on {
                        *a | attr::RSTRIP
                    } else {
                        *a & !attr::RSTRIP
                    };
                }
            };
            set("</s>", true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(t, false);
            }
        } else if name.contains("modern-bert") {
            set("[MASK]", attr::LSTRIP, true);
        }
        Ok(())
    }

    /// The raw bytes a token stands for (llama.cpp `token_to_piece`); control and unknown
    /// tokens give their text when `special`, else nothing.
    pub(crate) fn piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        let a = self.attrs[id as usize];
        if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return Vec::new();
        }
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.kind {
                VocabType::Spm => text.replace('\u{2581}', " ").into_bytes(),
                VocabType::Bpe => byte_decode(text),
            };
        }
        if a & attr::BYTE != 0 {
            return parse_byte_token(text).map(|b| vec![b]).unwrap_or_default();
        }
        Vec::new()
    }
}

/// Decodes a byte-level BPE token text to bytes; a character outside GPT-2's byte alphabet is
/// kept as its UTF-8 bytes.
fn byte_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match super::unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// The byte of a `<0xXX>` token.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Token type (GGUF `tokenizer.ggml.token_type`) to attributes.
fn attr_of_type(t: f64) -> u16 {
    match t as i64 {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("a"), None);
    }

    #[test]
    fn byte_level_decode() {
        assert_eq!(byte_decode("ĠHello"), b" Hello");
        assert_eq!(byte_decode("Ċ"), b"\n");
    }
}
