//! Matching special tokens in raw text before tokenizing (llama.cpp
//! `tokenizer_st_partition`).

use std::ops::Range;

use super::vocab::{attr, Vocab};

/// A piece of the input: text still to tokenize, or a special token found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// C `isspace` in the C locale.
fn c_space(b: u8) -> bool {
    b == b' ' || (0x09..=0x0D).contains(&b)
}

/// Splits `text` around special tokens, longest tokens first, each over every remaining text
/// fragment from left to right. Control and unknown tokens count only with `parse_special`;
/// user-defined tokens always do (as in llama.cpp and Hugging Face `tokenizers`).
pub(crate) fn partition(vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0..text.len()));
    let bytes = text.as_bytes();
    let mut next = Vec::new();
    for &id in &vocab.specials {
        let a = vocab.attrs[id as usize];
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let tok = vocab.tokens[id as usize].as_str();
        if !text.contains(tok) {
            continue;
        }
        next.clear();
        for f in &frags {
            let Fragment::Text(r) = f else {
                next.push(f.clone());
                continue;
            };
            split_fragment(bytes, r.clone(), tok, id, a, &mut next);
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}

/// Splits one text fragment at every occurrence of `tok`.
fn split_fragment(
    bytes: &[u8],
    mut r: Range<usize>,
    tok: &str,
    id: u32,
    a: u16,
    out: &mut Vec<Fragment>,
) {
    let t = tok.as_bytes();
    loop {
        let Some(at) = find(&bytes[r.clone()], t).map(|i| r.start + i) else {
            if !r.is_empty() {
                out.push(Fragment::Text(r));
            }
            return;
        };
        let mut left_end = at;
        if a & attr::LSTRIP != 0 {
            while left_end > r.start && c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > r.start {
            out.push(Fragment::Text(r.start..left_end));
        }
        out.push(Fragment::Token(id));
        let mut right = at + t.len();
        if a & attr::RSTRIP != 0 {
            while right < r.end && c_space(bytes[right]) {
                right += 1;
            }
        }
        r = right..r.end;
    }
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    // Special tokens are short; a first-byte scan is fast enough and simple.
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(k) => {
                i += k;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}
