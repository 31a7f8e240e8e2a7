//! Byte-level BPE (GPT-2 style), merging exactly as llama.cpp's `llm_tokenizer_bpe_session`.
//!
//! Each pre-token's bytes start as one symbol per byte (its GPT-2 byte character); the pair
//! with the lowest merge rank (leftmost on ties) is merged until no pair has a rank. Symbols
//! are ids: vocabulary ids, plus extra ids for the few merge strings that are not tokens
//! themselves, so a merge is one hash lookup of an id pair. Results for repeated words are
//! cached.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::cache::{FxMap, WordCache, MAX_WORD};
use super::pretokenize::PreTokenizer;
use super::unicode::{byte_encode_into, byte_to_char_table};
use super::vocab::Vocab;
use super::TokenizerError;

/// A symbol id that can never merge (a byte character missing from vocabulary and merges).
const NO_SYMBOL: u32 = u32::MAX;

/// A byte-level BPE model with its pre-tokenizer.
pub(crate) struct Bpe {
    pre: PreTokenizer,
    ignore_merges: bool,
    /// `(left, right)` symbol ids to `(rank, merged symbol id)`.
    merges: FxMap<(u32, u32), (u32, u32)>,
    /// The symbol of each byte's GPT-2 character.
    byte_symbol: [u32; 256],
    n_vocab: u32,
    cache: WordCache,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpe")
            .field("n_merges", &self.merges.len())
            .field("ignore_merges", &self.ignore_merges)
            .finish()
    }
}

/// Splits a merge line `"first second"` the way llama.cpp does (at the first space after the
/// first byte). `None` for a line without one.
fn split_merge(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    let pos = 1 + b.get(1..)?.iter().position(|&c| c == b' ')?;
    Some((&line[..pos], &line[pos + 1..]))
}

impl Bpe {
    /// Builds the model from the vocabulary and `tokenizer.ggml.merges`.
    pub(crate) fn new(
        vocab: &Vocab,
        merges: &[&str],
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Result<Bpe, TokenizerError> {
        let n_vocab = vocab.tokens.len() as u32;
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut symbol = |s: &str| -> u32 {
            if let Some(&id) = vocab.ids.get(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_string()).or_insert(next)
        };
        let mut table: FxMap<(u32, u32), (u32, u32)> = FxMap::default();
        table.reserve(merges.len());
        let mut joined = String::new();
        for (rank, line) in merges.iter().enumerate() {
            let Some((a, b)) = split_merge(line) else {
                continue;
            };
            let (ia, ib) = (symbol(a), symbol(b));
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let merged = symbol(&joined);
            table.entry((ia, ib)).or_insert((rank as u32, merged));
        }
        let chars = byte_to_char_table();
        let mut byte_symbol = [NO_SYMBOL; 256];
        let mut buf = [0u8; 4];
        for (b, slot) in byte_symbol.iter_mut().enumerate() {
            let s: &str = chars[b].encode_utf8(&mut buf);
            if let Some(&id) = vocab.ids.get(s) {
                *slot = id;
            } else if let Some(&id) = extra.get(s) {
                *slot = id;
            }
        }
        Ok(Bpe {
            pre,
            ignore_merges,
            merges: table,
            byte_symbol,
            n_vocab,
            cache: WordCache::default(),
        })
    }

    /// Tokenizes a fragment of text without special tokens.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let bytes = text.as_bytes();
        let mut scratch = Scratch::default();
        for r in self.pre.split(text) {
            self.encode_word(vocab, &bytes[r], out, &mut scratch);
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        if self.ignore_merges {
            s.text.clear();
            byte_encode_into(word, &mut s.text);
            if let Some(&id) = vocab.ids.get(s.text.as_str()) {
                out.push(id);
                return;
            }
        }
        if word.len() == 1 {
            self.emit(vocab, word, self.byte_symbol[word[0] as usize], out, s);
            return;
        }
        if word.len() > MAX_WORD {
            self.merge_word(vocab, word, out, s);
            return;
        }
        if self.cache.get_into(word, out) {
            return;
        }
        let start = out.len();
        self.merge_word(vocab, word, out, s);
        self.cache.insert(word, &out[start..]);
    }

    /// Runs the merges over one word and appends its tokens.
    fn merge_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        let syms = &mut s.syms;
        syms.clear();
        let n = word.len();
        for (i, &b) in word.iter().enumerate() {
            syms.push(Symbol {
                id: self.byte_symbol[b as usize],
                start: i as u32,
                len: 1,
                prev: i as i32 - 1,
                next: if i + 1 == n { -1 } else { i as i32 + 1 },
            });
        }
        let heap = &mut s.heap;
        heap.clear();
        for i in 1..n {
            self.push_pair(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_, left, right, lid, rid, merged))) = heap.pop() {
            let (l, r) = (left as usize, right as usize);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].id != lid || syms[r].id != rid {
                continue;
            }
            let next = syms[r].next;
            syms[l].id = merged;
            syms[l].len += syms[r].len;
            syms[l].next = next;
            syms[r].len = 0;
            if next >= 0 {
                syms[next as usize].prev = left as i32;
            }
            let prev = syms[l].prev;
            if prev >= 0 {
                self.push_pair(syms, heap, prev as usize, l);
            }
            if next >= 0 {
                self.push_pair(syms, heap, l, next as usize);
            }
        }
        for i in 0..n {
            let sym = s.syms[i];
            if sym.len > 0 {
                let piece = &word[sym.start as usize..(sym.start + sym.len) as usize];
                self.emit(vocab, piece, sym.id, out, s);
            }
        }
    }

    #[inline]
    fn push_pair(&self, syms: &[Symbol], heap: &mut BinaryHeap<Reverse<Pair>>, l: usize, r: usize) {
        let (a, b) = (syms[l].id, syms[r].id);
        if let Some(&(rank, merged)) = self.merges.get(&(a, b)) {
            heap.push(Reverse((rank, l as u32, r as u32, a, b, merged)));
        }
    }

    /// Appends a finished symbol: its token, or (for text that is not a token) llama.cpp's
    /// fallback of one token per byte of the encoded text where such a token exists.
    #[inline]
    fn emit(&self, vocab: &Vocab, piece: &[u8], id: u32, out: &mut Vec<u32>, s: &mut Scratch) {
        if id < self.n_vocab {
            out.push(id);
            return;
        }
        s.text.clear();
        byte_encode_into(piece, &mut s.text);
        let mut buf = [0u8; 4];
        for &b in s.text.as_bytes() {
            if b < 0x80 {
                let one: &str = (b as char).encode_utf8(&mut buf);
                if let Some(&t) = vocab.ids.get(one) {
                    out.push(t);
                }
            }
        }
    }
}

/// A bigram in the merge queue: rank, left and right symbol index, their ids when queued, and
/// the merged id. Ordered by rank, then left index (llama.cpp `llm_bigram_bpe::comparator`).
type Pair = (u32, u32, u32, u32, u32, u32);

#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

/// Buffers reused across the words of one call.
#[derive(Default)]
struct Scratch {
    syms: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Pair>>,
    text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_lines_split_like_llama_cpp() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  "), Some((" ", "")));
        assert_eq!(split_merge("a  b"), Some(("a", " b")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge(""), None);
    }
}
