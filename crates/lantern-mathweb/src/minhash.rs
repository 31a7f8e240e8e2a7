//! MinHash signatures of Markdown+LaTeX documents and the LSH banding that finds near duplicates.
//!
//! The steps, each its own function so that tests and the sharded [`crate::dedup`] stages can
//! reuse them:
//!
//! 1. [`normalize`] / [`word_hashes`]: the text is lowercased and split on whitespace, *nothing
//!    else* — LaTeX such as `$\frac{1}{2}|300$` stays one intact token (datatrove's normaliser
//!    strips punctuation and maps digits to `0`, which turns different formulas into the same
//!    shingles).
//! 2. [`shingle_hashes`]: word n-grams (default 5), each a 64-bit xxh3 of the n per-word xxh3
//!    hashes; no allocation per shingle.
//! 3. [`MinHasher::signature`]: `num_perm` 64-bit minimums of random permutations of the shingle
//!    hashes (see [`MinHasher`] for the permutation family).
//! 4. [`Lsh`]: `bands x rows` banding; documents that agree on every row of some band land in
//!    the same bucket.

use std::collections::HashSet;

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

/// Default word n-gram length of a shingle (as in OpenWebMath / datatrove).
pub const DEFAULT_NGRAM: usize = 5;
/// Default number of LSH bands.
pub const DEFAULT_BANDS: usize = 14;
/// Default rows per LSH band; 14 x 8 = 112 permutations, threshold ≈ (1/14)^(1/8) ≈ 0.72.
pub const DEFAULT_ROWS: usize = 8;
/// Default seed of the permutation parameters (any fixed value; signatures depend on it).
pub const DEFAULT_SEED: u64 = 0x6c61_6e74_6572_6e31; // "lantern1"

/// Permutations handled together in the signature kernel: their minimums stay in registers
/// while every shingle streams past (16 x u64 = four AVX2 registers each for min, xor, mul).
const LANES: usize = 16;

/// Whether ASCII byte `b` separates words: the ASCII part of Unicode `White_Space` (`\t \n \x0b \x0c \r` and space).
#[inline]
fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Calls `on_word` with each normalised word of `text`, reusing one buffer.
///
/// The rule (the same as [`normalize`]): a word is a maximal run of non-whitespace characters
/// (whitespace = Unicode `White_Space`, `char::is_whitespace`), with every character replaced
/// by its Unicode lowercase (`char::to_lowercase`, so `É` → `é`, `\Gamma` → `\gamma`). Nothing
/// else changes: punctuation, digits, `$`, `\`, braces and every other symbol stay as they are.
/// One pass over the bytes, ASCII handled without decoding.
pub fn for_each_word(text: &str, mut on_word: impl FnMut(&[u8])) {
    let bytes = text.as_bytes();
    let mut word: Vec<u8> = Vec::with_capacity(64);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if is_space_byte(b) {
                flush_word(&mut word, &mut on_word);
            } else {
                word.push(b.to_ascii_lowercase());
            }
            i += 1;
            continue;
        }
        // Non-ASCII: decode one char. `i` is always on a char boundary (ASCII bytes and whole
        // chars are consumed), so `get` succeeds; stop defensively if it ever did not.
        let Some(c) = text.get(i..).and_then(|s| s.chars().next()) else {
            break;
        };
        i += c.len_utf8();
        if c.is_whitespace() {
            flush_word(&mut word, &mut on_word);
        } else {
            let mut buf = [0u8; 4];
            for lc in c.to_lowercase() {
                word.extend_from_slice(lc.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    flush_word(&mut word, &mut on_word);
}

/// Hands a non-empty word to the callback and clears the buffer.
#[inline]
fn flush_word(word: &mut Vec<u8>, on_word: &mut impl FnMut(&[u8])) {
    if !word.is_empty() {
        on_word(word);
        word.clear();
    }
}

/// The normalised text: the words of [`for_each_word`] joined by single spaces.
///
/// Lowercase, whitespace runs collapsed to one space, no leading/trailing space, everything
/// else (punctuation, digits, LaTeX) untouched. Used for the exact-duplicate content hash.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for_each_word(text, |w| {
        if !out.is_empty() {
            out.push(' ');
        }
        // Words are built from whole UTF-8 chars of a `&str`, so they are valid UTF-8.
        out.push_str(std::str::from_utf8(w).unwrap_or_default());
    });
    out
}

/// xxh3-128 of [`normalize`]d text: the key of exact deduplication.
pub fn content_hash(text: &str) -> u128 {
    xxh3_128(normalize(text).as_bytes())
}

/// Appends the xxh3-64 of every normalised word of `text` to `out` as 8 little-endian bytes.
///
/// Bytes rather than `u64`s so that the n words of a shingle are one contiguous byte slice that
/// [`shingle_hashes`] can hash without copying (and the result is the same on every platform).
pub fn word_hashes(text: &str, out: &mut Vec<u8>) {
    for_each_word(text, |w| out.extend_from_slice(&xxh3_64(w).to_le_bytes()));
}

/// Appends the hash of every word `ngram`-gram of `text` to `out` (cleared first).
///
/// A shingle's hash is the xxh3-64 of its words' hashes (see [`word_hashes`]); a document with
/// fewer than `ngram` words (even zero) gives one shingle of all its words. `scratch` holds the
/// word hashes and is reused between calls. `ngram` 0 is treated as 1.
pub fn shingle_hashes(text: &str, ngram: usize, scratch: &mut Vec<u8>, out: &mut Vec<u64>) {
    let n = ngram.max(1);
    scratch.clear();
    out.clear();
    word_hashes(text, scratch);
    let words = scratch.len() / 8;
    if words < n {
        out.push(xxh3_64(scratch));
        return;
    }
    out.extend(scratch.windows(8 * n).step_by(8).map(xxh3_64));
}

/// The set of shingle hashes of `text` (for exact Jaccard in tests and checks).
pub fn shingle_set(text: &str, ngram: usize) -> HashSet<u64> {
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    shingle_hashes(text, ngram, &mut scratch, &mut out);
    out.into_iter().collect()
}

/// Exact Jaccard similarity |A ∩ B| / |A ∪ B| of two shingle sets (1 when both are empty).
pub fn exact_jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// MinHash estimate of the Jaccard similarity: the fraction of equal positions of two
/// signatures (compared over the shorter length; 0 for empty signatures).
pub fn estimate_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    equal as f64 / n as f64
}

/// SplitMix64: expands the seed into the permutation parameters (deterministic everywhere).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce5_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Computes MinHash signatures: `num_perm` minimums over a document's shingle hashes.
///
/// Permutation family: `h_i(x) = (x ^ s_i) * m_i mod 2^64` with random 64-bit `s_i` and random
/// odd `m_i` (seeded SplitMix64); the minimum is taken with the values read as `i64` (see
/// `min_block`) and stored back as `u64` bits. Each `h_i` is a bijection of `u64` (xor, then multiplication by
/// an odd number), so equal minimums mean the same argmin shingle — the MinHash property — and
/// the shingle hashes are already uniform xxh3 outputs, so the random xor/multiply decorrelates
/// the permutations. We use it instead of datasketch's `(a x + b) mod (2^61 - 1)` because it
/// needs no 128-bit product or modular reduction and vectorises (AVX2: 4 lanes); the estimates
/// are as accurate (see the tests against exact Jaccard).
#[derive(Clone, Debug)]
pub struct MinHasher {
    ngram: usize,
    num_perm: usize,
    /// `s_i`, padded with extra permutations up to a multiple of [`LANES`].
    xors: Vec<u64>,
    /// `m_i` (odd), padded like `xors`.
    muls: Vec<u64>,
}

impl MinHasher {
    /// A hasher with `num_perm` permutations of `ngram`-word shingles, parameters from `seed`.
    pub fn new(num_perm: usize, ngram: usize, seed: u64) -> Self {
        let padded = num_perm.div_ceil(LANES) * LANES;
        let mut state = seed;
        let mut xors = Vec::with_capacity(padded);
        let mut muls = Vec::with_capacity(padded);
        for _ in 0..padded {
            xors.push(splitmix64(&mut state));
            muls.push(splitmix64(&mut state) | 1);
        }
        Self {
            ngram: ngram.max(1),
            num_perm,
            xors,
            muls,
        }
    }

    /// The hasher for [`MinHashParams`].
    pub fn from_params(p: &MinHashParams) -> Self {
        Self::new(p.num_perm(), p.ngram, p.seed)
    }

    /// Number of permutations (the signature length).
    pub fn num_perm(&self) -> usize {
        self.num_perm
    }

    /// Shingle length in words.
    pub fn ngram(&self) -> usize {
        self.ngram
    }

    /// The signature of `text`.
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let (mut scratch, mut shingles) = (Vec::new(), Vec::new());
        self.signature_with(text, &mut scratch, &mut shingles)
    }

    /// [`signature`](Self::signature) reusing caller-owned buffers (one pair per thread).
    pub fn signature_with(
        &self,
        text: &str,
        scratch: &mut Vec<u8>,
        shingles: &mut Vec<u64>,
    ) -> Vec<u64> {
        shingle_hashes(text, self.ngram, scratch, shingles);
        self.signature_of_shingles(shingles)
    }

    /// The signature of a list of shingle hashes (`i64::MAX as u64` everywhere when empty).
    pub fn signature_of_shingles(&self, shingles: &[u64]) -> Vec<u64> {
        let mut sig = vec![i64::MAX; self.xors.len()];
        for ((out, xs), ms) in sig
            .chunks_exact_mut(LANES)
            .zip(self.xors.chunks_exact(LANES))
            .zip(self.muls.chunks_exact(LANES))
        {
            // Fixed-size arrays: the compiler keeps the 16 minimums in registers and vectorises.
            let (Ok(out), Ok(xs), Ok(ms)) = (
                <&mut [i64; LANES]>::try_from(out),
                <&[u64; LANES]>::try_from(xs),
                <&[u64; LANES]>::try_from(ms),
            ) else {
                continue; // unreachable: chunks_exact yields LANES-long chunks
            };
            min_block(shingles, xs, ms, out);
        }
        sig.truncate(self.num_perm);
        sig.into_iter().map(|v| v as u64).collect()
    }

    /// Signatures of many documents, in parallel with rayon (order kept).
    pub fn signatures<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u64>> {
        texts
            .par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(scratch, shingles), t| self.signature_with(t.as_ref(), scratch, shingles),
            )
            .collect()
    }
}

/// The kernel: `out[j] = min(out[j], min over x of (x ^ xs[j]) * ms[j])` for one block of
/// [`LANES`] permutations; shingles outer, permutations inner on fixed-size arrays (SIMD).
///
/// The minimum is taken in two's-complement (`i64`) order: any fixed total order gives a valid
/// MinHash, and AVX2 has a signed 64-bit compare but no unsigned one (which would cost two
/// extra sign-flips per value).
#[inline]
fn min_block(shingles: &[u64], xs: &[u64; LANES], ms: &[u64; LANES], out: &mut [i64; LANES]) {
    let mut acc = *out;
    for &x in shingles {
        for j in 0..LANES {
            acc[j] = acc[j].min((x ^ xs[j]).wrapping_mul(ms[j]) as i64);
        }
    }
    *out = acc;
}

/// Locality-sensitive hashing by banding: `bands` bands of `rows` signature rows each.
///
/// Two documents with Jaccard `s` share at least one band with probability
/// `1 - (1 - s^rows)^bands`, an S-curve whose steepest point is near the threshold
/// [`Lsh::threshold`] ≈ `(1/bands)^(1/rows)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lsh {
    /// Number of bands.
    pub bands: usize,
    /// Signature rows per band.
    pub rows: usize,
}

impl Default for Lsh {
    /// 14 bands x 8 rows (112 permutations, threshold ≈ 0.72).
    fn default() -> Self {
        Self {
            bands: DEFAULT_BANDS,
            rows: DEFAULT_ROWS,
        }
    }
}

impl Lsh {
    /// Permutations needed: `bands * rows`.
    pub fn num_perm(&self) -> usize {
        self.bands * self.rows
    }

    /// The approximate similarity threshold `(1/bands)^(1/rows)` (0 for a degenerate banding).
    pub fn threshold(&self) -> f64 {
        if self.bands == 0 || self.rows == 0 {
            return 0.0;
        }
        (1.0 / self.bands as f64).powf(1.0 / self.rows as f64)
    }

    /// Probability that two documents of Jaccard `s` share a bucket: `1 - (1 - s^r)^b`.
    pub fn collision_probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// The banding with `bands * rows <= num_perm` whose threshold is closest to `threshold`
    /// (ties: the one using more permutations). `num_perm` 0 gives 1 x 1.
    pub fn for_threshold(threshold: f64, num_perm: usize) -> Self {
        let mut best = Self { bands: 1, rows: 1 };
        let mut best_key = (f64::INFINITY, 0usize);
        for rows in 1..=num_perm {
            let bands = num_perm / rows;
            let lsh = Self { bands, rows };
            let err = (lsh.threshold() - threshold).abs();
            let key = (err, lsh.num_perm());
            if err < best_key.0 - 1e-12 || ((err - best_key.0).abs() <= 1e-12 && key.1 > best_key.1)
            {
                best = lsh;
                best_key = key;
            }
        }
        best
    }

    /// The 128-bit hash of each band of `sig` (xxh3-128 of the band's rows, little-endian).
    /// Bands beyond the signature's length are skipped.
    pub fn band_hashes(&self, sig: &[u64]) -> Vec<u128> {
        let mut buf = Vec::with_capacity(self.rows * 8);
        (0..self.bands)
            .map_while(|b| sig.get(b * self.rows..(b + 1) * self.rows))
            .map(|rows| {
                buf.clear();
                rows.iter()
                    .for_each(|r| buf.extend_from_slice(&r.to_le_bytes()));
                xxh3_128(&buf)
            })
            .collect()
    }
}

/// Everything that determines a document's signature and bands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinHashParams {
    /// Shingle length in words.
    pub ngram: usize,
    /// Banding; its `num_perm()` is the signature length.
    pub lsh: Lsh,
    /// Seed of the permutations.
    pub seed: u64,
}

impl Default for MinHashParams {
    /// 5-word shingles, 14 x 8 bands, [`DEFAULT_SEED`].
    fn default() -> Self {
        Self {
            ngram: DEFAULT_NGRAM,
            lsh: Lsh::default(),
            seed: DEFAULT_SEED,
        }
    }
}

impl MinHashParams {
    /// Signature length: `bands * rows`.
    pub fn num_perm(&self) -> usize {
        self.lsh.num_perm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_latex_and_digits() {
        assert_eq!(
            normalize("  The  Ratio\tIS\n$\\frac{1}{2}|300$,  ÉTÉ 42! "),
            "the ratio is $\\frac{1}{2}|300$, été 42!"
        );
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{a0}\u{2003} "), "");
        assert_eq!(normalize("a\u{a0}b\u{85}c\u{0b}d"), "a b c d");
    }

    #[test]
    fn latex_tokens_stay_distinct() {
        let a = shingle_set("we have $\\frac{1}{2}|300$ here", 5);
        let b = shingle_set("we have $\\frac{1}{3}|300$ here", 5);
        assert_eq!(a.len(), 1);
        assert_ne!(a, b);
        let c = shingle_set("x = 1|2|300$", 1);
        let d = shingle_set("x = 0|0|000$", 1);
        assert_ne!(c, d, "digits must not be collapsed");
        // Case and whitespace are all that normalisation removes.
        assert_eq!(
            shingle_set("A  $\\Frac{1}{2}$ b c d e", 5),
            shingle_set("a $\\frac{1}{2}$\nB c D e", 5)
        );
    }

    #[test]
    fn short_documents_give_one_shingle() {
        assert_eq!(shingle_set("one two", 5).len(), 1);
        assert_eq!(shingle_set("", 5).len(), 1);
        assert_eq!(shingle_set("a b c d e f", 5).len(), 2);
        assert_ne!(shingle_set("a b", 5), shingle_set("a b c", 5));
    }

    #[test]
    fn signature_matches_scalar_definition() {
        let h = MinHasher::new(20, 5, 7);
        let text = "the quick brown fox jumps over the lazy dog again and again";
        let sig = h.signature(text);
        assert_eq!(sig.len(), 20);
        let shingles: Vec<u64> = shingle_set(text, 5).into_iter().collect();
        for (i, &s) in sig.iter().enumerate() {
            let want = shingles
                .iter()
                .map(|&x| (x ^ h.xors[i]).wrapping_mul(h.muls[i]) as i64)
                .min()
                .unwrap_or(i64::MAX) as u64;
            assert_eq!(s, want);
        }
        assert_eq!(sig, MinHasher::new(20, 5, 7).signature(text));
        assert_ne!(sig, MinHasher::new(20, 5, 8).signature(text));
    }

    #[test]
    fn signatures_parallel_equal_serial() {
        let h = MinHasher::from_params(&MinHashParams::default());
        let texts: Vec<String> = (0..50)
            .map(|i| format!("doc {i} has some words in it and {} more", i * 7))
            .collect();
        let par = h.signatures(&texts);
        for (t, s) in texts.iter().zip(&par) {
            assert_eq!(&h.signature(t), s);
        }
    }

    #[test]
    fn lsh_threshold_helpers() {
        let d = Lsh::default();
        assert_eq!(d.num_perm(), 112);
        assert!((d.threshold() - 0.72).abs() < 0.01);
        assert_eq!(Lsh::for_threshold(0.72, 112), d);
        let l = Lsh::for_threshold(0.5, 128);
        assert!(l.num_perm() <= 128);
        assert!((l.threshold() - 0.5).abs() < 0.05);
        assert!(d.collision_probability(0.9) > 0.99);
        assert!(d.collision_probability(0.3) < 0.001);
        assert_eq!(Lsh::for_threshold(0.5, 0), Lsh { bands: 1, rows: 1 });
    }

    #[test]
    fn band_hashes_follow_rows() {
        let lsh = Lsh { bands: 3, rows: 2 };
        let a = lsh.band_hashes(&[1, 2, 3, 4, 5, 6]);
        let b = lsh.band_hashes(&[1, 2, 9, 4, 5, 6]);
        assert_eq!(a.len(), 3);
        assert_eq!((a[0], a[2]), (b[0], b[2]));
        assert_ne!(a[1], b[1]);
        assert_eq!(lsh.band_hashes(&[1, 2, 3]).len(), 1);
    }

    #[test]
    fn estimate_tracks_exact_on_synthetic_text() {
        // Documents sharing a prefix of words: exact Jaccard known by construction.
        let h = MinHasher::new(256, 5, DEFAULT_SEED);
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        for shared in [200usize, 500, 800] {
            let a = words[..1000].join(" ");
            let tail: Vec<String> = (shared..1000).map(|i| format!("v{i}")).collect();
            let b = format!("{} {}", words[..shared].join(" "), tail.join(" "));
            let exact = exact_jaccard(&shingle_set(&a, 5), &shingle_set(&b, 5));
            let est = estimate_jaccard(&h.signature(&a), &h.signature(&b));
            assert!(
                (est - exact).abs() < 0.1,
                "shared {shared}: {est} vs {exact}"
            );
        }
    }
}
