//! Code point classes as llama.cpp sees them, and GPT-2's byte-to-unicode mapping.
//!
//! The pre-tokenizers must classify characters exactly as llama.cpp's `unicode.cpp` does, so the
//! category table is llama.cpp's own (generated into `unicode_data.rs`), not the standard
//! library's `char` methods, which follow a different Unicode version and definitions.

use std::sync::OnceLock;

use super::unicode_data::{FLAG_RANGES, WHITESPACE};

/// Unassigned code point (`\p{Cn}`).
pub(crate) const UNDEFINED: u16 = 0x0001;
/// `\p{N}`.
pub(crate) const NUMBER: u16 = 0x0002;
/// `\p{L}`.
pub(crate) const LETTER: u16 = 0x0004;
/// `\p{M}`.
pub(crate) const ACCENT_MARK: u16 = 0x0010;
/// `\p{P}`.
pub(crate) const PUNCTUATION: u16 = 0x0020;
/// `\p{S}`.
pub(crate) const SYMBOL: u16 = 0x0040;
/// The general-category bits.
pub(crate) const MASK_CATEGORIES: u16 = 0x00FF;
/// `\s` in llama.cpp's sense (its own whitespace set).
pub(crate) const WHITESPACE_FLAG: u16 = 0x0100;

/// One past the largest code point.
const MAX_CODEPOINTS: usize = 0x110000;

fn table() -> &'static [u16] {
    static TABLE: OnceLock<Box<[u16]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![UNDEFINED; MAX_CODEPOINTS].into_boxed_slice();
        for w in FLAG_RANGES.windows(2) {
            let (start, flags) = w[0];
            let end = (w[1].0 as usize).min(MAX_CODEPOINTS);
            for slot in &mut t[start as usize..end] {
                *slot = flags;
            }
        }
        for &cp in &WHITESPACE {
            t[cp as usize] |= WHITESPACE_FLAG;
        }
        t
    })
}

/// llama.cpp's flags for a code point (categories plus the whitespace bit).
#[cfg(test)]
pub(crate) fn flags(cp: u32) -> u16 {
    table().get(cp as usize).copied().unwrap_or(UNDEFINED)
}

/// Flags for every code point of `cps`.
pub(crate) fn flags_of(cps: &[u32]) -> Vec<u16> {
    let t = table();
    cps.iter()
        .map(|&c| t.get(c as usize).copied().unwrap_or(UNDEFINED))
        .collect()
}

/// Lower-cases a code point for the contraction patterns (`'s`, `'RE`, ...).
///
/// Only the result's equality with an ASCII letter matters there; in llama.cpp's lower-case
/// table the only code points that map into ASCII are `A`-`Z`, U+0130 (to `i`) and U+212A (to
/// `k`), none of which the contractions test, so ASCII lower-casing is exact.
#[inline]
pub(crate) fn to_lower_ascii(cp: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&cp) {
        cp + 32
    } else {
        cp
    }
}

/// GPT-2's reversible mapping from bytes to printable characters (`bytes_to_unicode`).
pub(crate) fn byte_to_char_table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            t[b as usize] = if printable {
                char::from_u32(b).unwrap_or('\0')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\0')
            };
        }
        t
    })
}

/// The inverse of [`byte_to_char_table`]: `None` for characters that encode no byte.
#[inline]
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    static INVERSE: OnceLock<[Option<u8>; 324]> = OnceLock::new();
    let inv = INVERSE.get_or_init(|| {
        let mut inv = [None; 324];
        for (b, &ch) in byte_to_char_table().iter().enumerate() {
            inv[ch as usize] = Some(b as u8);
        }
        inv
    });
    inv.get(c as usize).copied().flatten()
}

/// Appends the GPT-2 byte-level encoding of `bytes` to `out`.
pub(crate) fn byte_encode_into(bytes: &[u8], out: &mut String) {
    let t = byte_to_char_table();
    for &b in bytes {
        out.push(t[b as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_round_trips() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('Ā').map(|b| t[b as usize]), Some('Ā'));
        assert_eq!(char_to_byte('中'), None);
    }

    #[test]
    fn flags_match_llama_cpp_classes() {
        assert_ne!(flags('a' as u32) & LETTER, 0);
        assert_ne!(flags('7' as u32) & NUMBER, 0);
        assert_ne!(flags(' ' as u32) & WHITESPACE_FLAG, 0);
        assert_ne!(flags(0x3000) & WHITESPACE_FLAG, 0);
        assert_ne!(flags('$' as u32) & SYMBOL, 0);
        assert_ne!(flags('_' as u32) & PUNCTUATION, 0);
        assert_ne!(flags('中' as u32) & LETTER, 0);
        assert_ne!(flags(0x0301) & ACCENT_MARK, 0);
        assert_eq!(flags(0x0378), UNDEFINED);
        assert_ne!(flags(0x10_FFFF) & MASK_CATEGORIES, 0);
    }
}
