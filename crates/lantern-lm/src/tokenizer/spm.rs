//! SentencePiece (BPE with scores and byte fallback), exactly as llama.cpp's
//! `llm_tokenizer_spm_session`.
//!
//! The text (spaces already replaced by `▁`) starts as one symbol per UTF-8 character; the
//! adjacent pair whose concatenation is a token with the highest score (leftmost on ties) is
//! merged until none is. Symbols that are not tokens become `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::cache::{WordCache, MAX_WORD};
use super::vocab::Vocab;
use super::TokenizerError;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: isize,
    next: isize,
}

/// A candidate merge (llama.cpp `llm_bigram_spm`): best score first, then leftmost.
#[derive(Debug, Clone, Copy)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then(other.left.cmp(&self.left))
    }
}

/// A SentencePiece model: byte-fallback tokens and a word cache.
pub(crate) struct Spm {
    byte_tokens: [Option<u32>; 256],
    /// No token has `▁` right after another character (true of Llama's vocabulary), so no merge
    /// can cross the start of a `▁`-led word: words are then tokenized (and cached) one by one,
    /// with the same result as tokenizing the whole text at once.
    split_words: bool,
    cache: WordCache,
}

impl std::fmt::Debug for Spm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spm")
            .field("split_words", &self.split_words)
            .finish()
    }
}

impl Spm {
    pub(crate) fn new(vocab: &Vocab) -> Spm {
        let split_words = !vocab.tokens.iter().any(|t| {
            let mut prev: Option<char> = None;
            t.chars().any(|c| {
                let crosses = c == SPACE && prev.is_some_and(|p| p != SPACE);
                prev = Some(c);
                crosses
            })
        });
        Spm {
            byte_tokens: byte_tokens(vocab),
            split_words,
            cache: WordCache::default(),
        }
    }

    /// Tokenizes `text` (spaces already replaced by `▁`) and appends the ids.
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if !self.split_words {
            return encode_piece(vocab, &self.byte_tokens, text, out);
        }
        let mut start = 0;
        let mut prev_space = true;
        for (i, c) in text.char_indices() {
            let space = c == SPACE;
            if space && !prev_space {
                self.encode_word(vocab, &text[start..i], out)?;
                start = i;
            }
            prev_space = space;
        }
        self.encode_word(vocab, &text[start..], out)
    }

    fn encode_word(
        &self,
        vocab: &Vocab,
        word: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        if word.is_empty() {
            return Ok(());
        }
        if word.len() > MAX_WORD {
            return encode_piece(vocab, &self.byte_tokens, word, out);
        }
        if self.cache.get_into(word.as_bytes(), out) {
            return Ok(());
        }
        let start = out.len();
        encode_piece(vocab, &self.byte_tokens, word, out)?;
        self.cache.insert(word.as_bytes(), &out[start..]);
        Ok(())
    }
}

/// SentencePiece's space.
const SPACE: char = '\u{2581}';

/// The token for each byte: `<0xXX>`, else the one-byte text itself (llama.cpp
/// `byte_to_token`).
fn byte_tokens(vocab: &Vocab) -> [Option<u32>; 256] {
    let mut t = [None; 256];
    for (b, slot) in t.iter_mut().enumerate() {
        *slot = vocab.ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
            (b < 0x80)
                .then(|| vocab.ids.get(&(b as u8 as char).to_string()).copied())
                .flatten()
        });
    }
    t
}

/// Tokenizes `text` as one piece (llama.cpp `llm_tokenizer_spm_session::tokenize`).
fn encode_piece(
    vocab: &Vocab,
    bytes_tok: &[Option<u32>; 256],
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
    let n_chars = text.chars().count();
    for (i, (start, c)) in text.char_indices().enumerate() {
        syms.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i as isize - 1,
            next: if i + 1 == n_chars { -1 } else { i as isize + 1 },
        });
    }
    let mut queue = BinaryHeap::new();
    let try_add = |syms: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: isize, right: isize| {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (syms[left as usize], syms[right as usize]);
        let piece = &text[l.start..l.start + l.len + r.len];
        if let Some(&id) = vocab.ids.get(piece) {
            queue.push(Bigram {
                left: left as usize,
                right: right as usize,
                score: vocab.scores[id as usize],
                size: piece.len(),
            });
        }
    };
    for i in 1..syms.len() {
        try_add(&syms, &mut queue, i as isize - 1, i as isize);
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (syms[b.left], syms[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        syms[b.left].len += r.len;
        syms[b.right].len = 0;
        syms[b.left].next = r.next;
        if r.next >= 0 {
            syms[r.next as usize].prev = b.left as isize;
        }
        try_add(&syms, &mut queue, syms[b.left].prev, b.left as isize);
        try_add(&syms, &mut queue, b.left as isize, syms[b.left].next);
    }
    let mut i = if syms.is_empty() { -1 } else { 0 };
    while i >= 0 {
        let s = syms[i as usize];
        let piece = &text[s.start..s.start + s.len];
        match vocab.ids.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    out.push(bytes_tok[byte as usize].ok_or(TokenizerError::NoByteToken(byte))?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}
