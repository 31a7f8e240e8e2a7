//! SentencePiece (BPE with scores and byte fallback), exactly as llama.cpp's
//! `llm_tokenizer_spm_session`.
//!
//! The text (spaces already replaced by `▁`) starts as one symbol per UTF-8 character; the
//! adjacent pair whose concatenation is a token with the highest score (leftmost on ties) is
//! merged until none is. Symbols that are not tokens become `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

/// The token for each byte: `<0xXX>`, else the one-byte text itself (llama.cpp
/// `byte_to_token`).
pub(crate) fn byte_tokens(vocab: &Vocab) -> [Option<u32>; 256] {
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

/// Tokenizes `text` (already escaped) and appends the ids.
pub(crate) fn encode(
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
