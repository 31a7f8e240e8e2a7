//! The "MathScore" filter: a fast linear classifier over hashed word and character n-grams.
//!
//! OpenWebMath scores every page with a small fastText-like classifier on *normalised* text
//! ([`normalize`]: each `$..$` / `$$..$$` span becomes one ` <math> ` token, then lower-case and
//! digits to `0`) and keeps a page when the math probability is at least
//! [`THRESHOLD_WITH_MATH`] (0.15) if math was found on it, or [`THRESHOLD_WITHOUT_MATH`] (0.8)
//! otherwise ([`keep`]); the final pass of the pipeline uses [`FINAL_THRESHOLD`] (0.17).
//!
//! # Model
//!
//! Binary logistic regression `p = σ(b + Σ w[h(f)]·x_f)` where the features `f` of a text are its
//! word unigrams, word bigrams and the character n-grams (`min_n..=max_n`, default 3–5) of each
//! word wrapped as `<word>` (as fastText does), hashed with xxh3 into `2^bits` buckets. Feature
//! values are counts scaled by `1/sqrt(total count)` so long and short texts score on the same
//! scale. Training is plain sequential AdaGrad with L2 on the touched weights, several epochs,
//! examples shuffled by a seeded generator: the same data and [`TrainParams`] give bit-identical
//! models. After training the weights are rounded to `f16`, which is what the file stores, so a
//! saved and reloaded model scores exactly like the one in memory.
//!
//! # Size
//!
//! `bits = 20` (the default, 1 Mi buckets) stores 2 MiB of `f16` before compression; buckets no
//! training feature reached stay exactly 0 and zstd squeezes them away, so a model trained on tens
//! of thousands of paragraphs is well under 2 MB on disk. Fewer bits make a smaller file and
//! more collisions; 18 is still fine for small training sets.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Keep a page with math found on it when its score is at least this (OpenWebMath).
pub const THRESHOLD_WITH_MATH: f32 = 0.15;
/// Keep a page with no math found on it when its score is at least this (OpenWebMath).
pub const THRESHOLD_WITHOUT_MATH: f32 = 0.8;
/// The pipeline's last MathScore filter threshold (OpenWebMath).
pub const FINAL_THRESHOLD: f32 = 0.17;
/// The token each math span becomes in [`normalize`] (spaces included).
pub const MATH_TOKEN: &str = " <math> ";

/// File magic of a saved classifier.
const MAGIC: &[u8; 8] = b"LNTMSCR\x01";
/// File format version.
const VERSION: u32 = 1;
/// Header length: magic, version, payload length, payload checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Payload length before the weights: bits, min_n, max_n, flags, bias.
const PAYLOAD_FIXED: usize = 4 + 4;
/// zstd level of saved models.
const ZSTD_LEVEL: i32 = 12;
/// Largest `bits` accepted (a 512 MiB weight table): bounds what a corrupt file can allocate.
const MAX_BITS: u8 = 28;
/// Seeds keeping the three feature families apart in the hash space.
const SEED_WORD: u64 = 0x5745_4f52_4431;
const SEED_CHAR: u64 = 0x4348_4152_4e47;

/// Errors from training, saving and loading, each naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// A file could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file is not a classifier, is truncated or is corrupt.
    #[error("classifier model {path}: {reason}")]
    Format {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A training file has a bad line.
    #[error("training data {path}:{line}: {reason}")]
    Data {
        /// The training file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Training was asked for with bad parameters or data lacking one class.
    #[error("cannot train the classifier: {0}")]
    Train(String),
}

/// Labelled examples: `(text, is_math)`.
pub type Examples<S = String> = Vec<(S, bool)>;

/// Result alias for this module.
pub type Result<T, E = ClassifierError> = std::result::Result<T, E>;

/// Which features a model hashes; saved with the model so scoring matches training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `log2` of the number of hash buckets (weights).
    pub bits: u8,
    /// Shortest character n-gram (0 disables character n-grams).
    pub min_n: u8,
    /// Longest character n-gram.
    pub max_n: u8,
    /// Whether word bigrams are features (unigrams always are).
    pub word_bigrams: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            bits: 20,
            min_n: 3,
            max_n: 5,
            word_bigrams: true,
        }
    }
}

/// Training hyper-parameters. The defaults train a good MathScore model in a few epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// The features hashed.
    pub features: Features,
    /// Passes over the training data.
    pub epochs: usize,
    /// AdaGrad base learning rate.
    pub learning_rate: f32,
    /// L2 penalty applied to the weights an example touches.
    pub l2: f32,
    /// Seed of the per-epoch shuffles (and of the hold-out split in [`train_from_files`]).
    pub seed: u64,
    /// Weight the classes so each contributes equally, making 0.5 the natural threshold even
    /// when positives are scarce.
    pub balance_classes: bool,
    /// Fraction of the data [`train_from_files`] holds out for its [`Eval`].
    pub holdout: f32,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            features: Features::default(),
            epochs: 5,
            learning_rate: 0.2,
            l2: 1e-6,
            seed: 0x6d61_7468,
            balance_classes: true,
            holdout: 0.2,
        }
    }
}

/// A trained MathScore classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    features: Features,
    bias: f32,
    weights: Vec<f32>,
}

/// Quality of a classifier on labelled data (threshold 0.5 for the counts).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Eval {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Of those scored math, the fraction that are math (1 when none are scored math).
    pub precision: f64,
    /// Of the math ones, the fraction scored math (1 when there are none).
    pub recall: f64,
    /// Area under the ROC curve (probability a random positive outscores a random negative,
    /// ties counting half); 0.5 when one class is missing.
    pub auroc: f64,
    /// Number of examples.
    pub n: usize,
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// OpenWebMath's text normalisation for the classifier: each math span (`$$..$$` display,
/// `$..$` inline) becomes [`MATH_TOKEN`], then everything is lower-cased, every ASCII digit
/// becomes `0` and Unicode white space becomes a plain space (words are split on ASCII white
/// space, as fastText does). Normalising makes numbers and formulas generic so the model learns "there is
/// math here" rather than particular formulas.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut last = 0;
    for span in math_spans(text) {
        push_lower(&mut out, &text[last..span.start]);
        out.push_str(MATH_TOKEN);
        last = span.end;
    }
    push_lower(&mut out, &text[last..]);
    out
}

/// Whether the Markdown text contains at least one math span (see [`math_spans`]).
pub fn has_math(text: &str) -> bool {
    !math_spans(text).is_empty()
}

/// OpenWebMath's keep rule: `score ≥ 0.15` when math was found on the page, else `score ≥ 0.8`.
pub fn keep(score: f32, math_found: bool) -> bool {
    let threshold = if math_found {
        THRESHOLD_WITH_MATH
    } else {
        THRESHOLD_WITHOUT_MATH
    };
    score >= threshold
}

/// Byte ranges (delimiters included) of the math spans of Markdown text.
///
/// `$$..$$` is display math and may span lines. `$..$` is inline math with pandoc's rules, so
/// prices are not math: the opening `$` must be followed by a non-space, the closing one must
/// follow a non-space and not be followed by a digit, and the span cannot cross a blank line.
/// A backslash escapes the next character (`\$` is a dollar sign). An unclosed `$` is text.
pub fn math_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'$', b'\\', &b[i..]) {
        let at = i + off;
        if b[at] == b'\\' {
            i = at + 2;
            continue;
        }
        let end = if b.get(at + 1) == Some(&b'$') {
            display_end(b, at + 2)
        } else {
            inline_end(b, at + 1)
        };
        match end {
            Some(end) => {
                spans.push(at..end);
                i = end;
            }
            None => i = at + 1,
        }
        if i >= b.len() {
            break;
        }
    }
    spans
}

/// End (exclusive) of a `$$` span whose content starts at `from`: just past the next
/// unescaped `$$`, if any.
fn display_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'$' if b[i + 1] == b'$' => return (i > from).then_some(i + 2),
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of an inline `$` span whose content starts at `from`, pandoc-style.
fn inline_end(b: &[u8], from: usize) -> Option<usize> {
    if b.get(from).is_none_or(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\n' if b.get(i + 1) == Some(&b'\n') => return None,
            b'$' => {
                let closes = !b[i - 1].is_ascii_whitespace()
                    && !b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if closes {
                    return Some(i + 1);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Appends `s` lower-cased, ASCII digits mapped to `0` and non-ASCII white space (such as
/// the no-break spaces of HTML) to a plain space.
fn push_lower(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_ascii() {
            let c = c.to_ascii_lowercase();
            out.push(if c.is_ascii_digit() { '0' } else { c });
        } else if c.is_whitespace() {
            out.push(' ');
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Features

/// Reusable buffers for [`Features::char_ngrams`]: `<word>` bytes and its char offsets.
#[derive(Debug, Default)]
struct NgramScratch {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

/// A sparse feature vector: sorted distinct bucket indices and their values.
#[derive(Debug, Clone, Default)]
struct Sparse {
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Features {
    /// Checks the configuration can be used (bits in range, n-gram lengths ordered).
    fn validate(&self) -> std::result::Result<(), String> {
        if self.bits == 0 || self.bits > MAX_BITS {
            return Err(format!("bits must be in 1..={MAX_BITS}, got {}", self.bits));
        }
        if self.min_n > self.max_n {
            return Err(format!(
                "min_n {} is larger than max_n {}",
                self.min_n, self.max_n
            ));
        }
        Ok(())
    }

    /// Calls `f` with the bucket of every feature occurrence of already-normalised text.
    fn for_each_hash(&self, normalized: &str, mut f: impl FnMut(u32)) {
        let mask = (1u64 << self.bits) - 1;
        let mut prev: Option<u64> = None;
        let mut scratch = NgramScratch::default();
        for word in normalized.split_ascii_whitespace() {
            let h = xxh3_64_with_seed(word.as_bytes(), SEED_WORD);
            f((h & mask) as u32);
            if self.word_bigrams {
                if let Some(p) = prev {
                    f((xxh3_64_with_seed(word.as_bytes(), p) & mask) as u32);
                }
                prev = Some(h);
            }
            if self.min_n > 0 {
                self.char_ngrams(word, &mut scratch, |h| f((h & mask) as u32));
            }
        }
    }

    /// Calls `f` with the hash of each character n-gram of `<word>`, fastText-style (n counts
    /// characters, not bytes).
    fn char_ngrams(&self, word: &str, scratch: &mut NgramScratch, mut f: impl FnMut(u64)) {
        let NgramScratch { bytes, starts } = scratch;
        bytes.clear();
        bytes.push(b'<');
        bytes.extend_from_slice(word.as_bytes());
        bytes.push(b'>');
        // Char start offsets plus the end offset.
        starts.clear();
        starts.extend((0..bytes.len()).filter(|&i| (bytes[i] & 0xC0) != 0x80));
        starts.push(bytes.len());
        let chars = starts.len() - 1;
        for n in usize::from(self.min_n)..=usize::from(self.max_n) {
            if n > chars {
                break;
            }
            for s in 0..=(chars - n) {
                f(xxh3_64_with_seed(
                    &bytes[starts[s]..starts[s + n]],
                    SEED_CHAR,
                ));
            }
        }
    }

    /// The sparse feature vector of raw text (normalised here), values scaled by
    /// `1/sqrt(occurrences)`.
    fn extract(&self, text: &str) -> Sparse {
        let mut hashes = Vec::new();
        self.for_each_hash(&normalize(text), |h| hashes.push(h));
        if hashes.is_empty() {
            return Sparse::default();
        }
        let scale = 1.0 / (hashes.len() as f32).sqrt();
        hashes.sort_unstable();
        let mut out = Sparse::default();
        for h in hashes {
            if out.idx.last() == Some(&h) {
                if let Some(v) = out.val.last_mut() {
                    *v += scale;
                }
            } else {
                out.idx.push(h);
                out.val.push(scale);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Classifier

impl Classifier {
    /// Trains on `(text, is_math)` examples; deterministic for given data and params.
    ///
    /// Fails when the parameters are invalid or either class is missing.
    pub fn train<S: AsRef<str> + Sync>(data: &[(S, bool)], params: &TrainParams) -> Result<Self> {
        params.features.validate().map_err(ClassifierError::Train)?;
        let positives = data.iter().filter(|(_, y)| *y).count();
        if positives == 0 || positives == data.len() {
            return Err(ClassifierError::Train(format!(
                "need both classes, got {positives} math and {} non-math examples",
                data.len() - positives
            )));
        }
        let feats: Vec<Sparse> = data
            .par_iter()
            .map(|(t, _)| params.features.extract(t.as_ref()))
            .collect();
        let labels: Vec<bool> = data.iter().map(|(_, y)| *y).collect();
        let mut model = Self {
            features: params.features,
            bias: 0.0,
            weights: vec![0.0; 1usize << params.features.bits],
        };
        model.fit(&feats, &labels, params);
        model.quantize();
        Ok(model)
    }

    /// Runs the AdaGrad epochs over pre-extracted features.
    fn fit(&mut self, feats: &[Sparse], labels: &[bool], params: &TrainParams) {
        let n = labels.len() as f32;
        let pos = labels.iter().filter(|y| **y).count() as f32;
        let class_weight = |y: bool| {
            if !params.balance_classes {
                1.0
            } else if y {
                n / (2.0 * pos)
            } else {
                n / (2.0 * (n - pos))
            }
        };
        // Weight and AdaGrad accumulator side by side: one cache miss per feature, not two.
        let mut state: Vec<[f32; 2]> = self.weights.iter().map(|&w| [w, 0.0]).collect();
        let mut bias_sq = 0f32;
        let mut order: Vec<usize> = (0..labels.len()).collect();
        let mut rng = SplitMix64(params.seed);
        let lr = params.learning_rate;
        for _ in 0..params.epochs {
            rng.shuffle(&mut order);
            for &i in &order {
                let x = &feats[i];
                let y = labels[i];
                let dot: f32 = x
                    .idx
                    .iter()
                    .zip(&x.val)
                    .map(|(&j, &v)| state[j as usize][0] * v)
                    .sum();
                let p = sigmoid(self.bias + dot);
                let g = (p - if y { 1.0 } else { 0.0 }) * class_weight(y);
                bias_sq += g * g;
                self.bias -= lr * g / (bias_sq.sqrt() + 1e-8);
                for (&j, &v) in x.idx.iter().zip(&x.val) {
                    let [w, acc] = &mut state[j as usize];
                    let gj = g * v + params.l2 * *w;
                    *acc += gj * gj;
                    *w -= lr * gj / (acc.sqrt() + 1e-8);
                }
            }
        }
        for (w, [sw, _]) in self.weights.iter_mut().zip(state) {
            *w = sw;
        }
    }

    /// Rounds every parameter to `f16` precision, the precision of the saved file.
    fn quantize(&mut self) {
        self.bias = f16_to_f32(f32_to_f16(self.bias));
        for w in &mut self.weights {
            *w = f16_to_f32(f32_to_f16(*w));
        }
    }

    /// The probability that `text` (Markdown, math as `$..$`) is mathematical, in `[0, 1]`.
    ///
    /// Normalises the text itself; text without words scores `σ(bias)`. Sums the weights of
    /// the feature occurrences directly (no sparse vector is built), which is the same margin
    /// as in training up to float rounding.
    pub fn score(&self, text: &str) -> f32 {
        let mut sum = 0f32;
        let mut n = 0u32;
        self.features.for_each_hash(&normalize(text), |h| {
            sum += self.weights[h as usize];
            n += 1;
        });
        let dot = if n == 0 { 0.0 } else { sum / (n as f32).sqrt() };
        sigmoid(self.bias + dot)
    }

    /// The feature configuration the model was trained with.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Saves the model to `path` atomically (written to a temporary file in the same folder,
    /// synced, then renamed), so readers never see a half-written model.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes().map_err(|source| ClassifierError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomic(path, &bytes)
    }

    /// Loads a model saved by [`Classifier::save`]; bad, truncated or corrupt files are a
    /// [`ClassifierError::Format`] naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| ClassifierError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|reason| ClassifierError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Serialises: header (magic, version, payload length, xxh3 of payload) + zstd(payload).
    fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(PAYLOAD_FIXED + 2 * self.weights.len());
        let f = self.features;
        payload.extend_from_slice(&[f.bits, f.min_n, f.max_n, u8::from(f.word_bigrams)]);
        payload.extend_from_slice(&self.bias.to_le_bytes());
        for &w in &self.weights {
            payload.extend_from_slice(&f32_to_f16(w).to_le_bytes());
        }
        // Level 12: near the best ratio on mostly-zero f16 tables, a fraction of level 19's time.
        let compressed = zstd::bulk::compress(&payload, ZSTD_LEVEL)?;
        let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&compressed);
        Ok(out)
    }

    /// Parses [`Classifier::to_bytes`] output, checking every length and the checksum.
    fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err("not a lantern MathScore classifier (bad magic)".into());
        }
        let version = u32::from_le_bytes(le_array(&bytes[8..12]));
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let len = u64::from_le_bytes(le_array(&bytes[12..20]));
        let checksum = u64::from_le_bytes(le_array(&bytes[20..28]));
        let max_len = PAYLOAD_FIXED as u64 + 2 * (1u64 << MAX_BITS);
        if len > max_len {
            return Err(format!("payload length {len} is impossible"));
        }
        let payload = zstd::bulk::decompress(&bytes[HEADER_LEN..], len as usize)
            .map_err(|e| format!("truncated or corrupt compressed data: {e}"))?;
        if payload.len() as u64 != len || xxh3_64(&payload) != checksum {
            return Err("truncated or corrupt: payload length or checksum mismatch".into());
        }
        Self::from_payload(&payload)
    }

    /// Parses the decompressed payload.
    fn from_payload(p: &[u8]) -> std::result::Result<Self, String> {
        if p.len() < PAYLOAD_FIXED {
            return Err("payload too short".into());
        }
        let features = Features {
            bits: p[0],
            min_n: p[1],
            max_n: p[2],
            word_bigrams: p[3] & 1 == 1,
        };
        features.validate()?;
        let bias = f32::from_le_bytes(le_array(&p[4..8]));
        let weights_bytes = &p[PAYLOAD_FIXED..];
        let expected = 2usize << features.bits;
        if weights_bytes.len() != expected {
            return Err(format!(
                "{} weight bytes for bits = {}, expected {expected}",
                weights_bytes.len(),
                features.bits
            ));
        }
        let weights = weights_bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        Ok(Self {
            features,
            bias,
            weights,
        })
    }
}

/// Copies a slice of known length `N` into an array (callers slice exactly `N` bytes).
fn le_array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`; the
/// temporary file is removed on failure.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "classifier".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = write_synced(&tmp, bytes)
        .map_err(|source| ClassifierError::Io {
            path: tmp.clone(),
            source,
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|source| ClassifierError::Io {
                path: path.to_path_buf(),
                source,
            })
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `bytes` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The logistic function, stable for large `|x|`.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// IEEE 754 binary16 from f32, round to nearest even; overflow saturates to ±infinity, NaN
/// stays NaN.
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x007f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal: shift the mantissa (with its implicit 1) right, rounding to nearest even.
        let m = man | 0x0080_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut h = (m >> shift) as u16;
        if rest > half || (rest == half && (h & 1) == 1) {
            h += 1;
        }
        return sign | h;
    }
    let mut h = ((e as u32) << 10 | (man >> 13)) as u16;
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
        h += 1; // may carry into the exponent, which is the correct rounding (up to infinity)
    }
    sign | h
}

/// f32 from IEEE 754 binary16 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value m * 2^-24.
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// SplitMix64: a tiny deterministic generator for the shuffles (no `rand` dependency).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (bias negligible for these sizes).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Scores every example (in parallel) and measures accuracy, precision, recall at 0.5 and
/// AUROC.
pub fn evaluate<S: AsRef<str> + Sync>(model: &Classifier, data: &[(S, bool)]) -> Eval {
    let scored: Vec<(f32, bool)> = data
        .par_iter()
        .map(|(t, y)| (model.score(t.as_ref()), *y))
        .collect();
    Eval::from_scores(&scored, 0.5)
}

impl Eval {
    /// Metrics of `(score, is_math)` pairs, counting a score ≥ `threshold` as "math".
    pub fn from_scores(scored: &[(f32, bool)], threshold: f32) -> Self {
        let n = scored.len();
        let (mut tp, mut fp, mut tn, mut fneg) = (0usize, 0usize, 0usize, 0usize);
        for &(s, y) in scored {
            match (s >= threshold, y) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fneg += 1,
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        Self {
            accuracy: if n == 0 {
                0.0
            } else {
                (tp + tn) as f64 / n as f64
            },
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fneg),
            auroc: auroc(scored),
            n,
        }
    }
}

/// AUROC by the Mann–Whitney rank sum, ties sharing their average rank.
fn auroc(scored: &[(f32, bool)]) -> f64 {
    let pos = scored.iter().filter(|(_, y)| *y).count();
    let neg = scored.len() - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    let mut sorted: Vec<(f32, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let tied_pos = sorted[i..j].iter().filter(|(_, y)| *y).count();
        rank_sum += avg_rank * tied_pos as f64;
        i = j;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    u / (pos as f64 * neg as f64)
}

// ---------------------------------------------------------------------------------------------
// Training from files

/// Reads training examples from files and trains: the `train-classifier` command's engine.
///
/// Each file is `.jsonl` (one JSON object per line with a string `text` field; blank lines
/// skipped) or else plain text with one example per blank-line-separated block. A seeded
/// `params.holdout` fraction of each class is held out; the model is trained on the rest and
/// the returned [`Eval`] is on the held-out part (all zeros with `n = 0` when nothing is held
/// out).
pub fn train_from_files(
    pos: &[PathBuf],
    neg: &[PathBuf],
    params: &TrainParams,
) -> Result<(Classifier, Eval)> {
    let mut data = Vec::new();
    for (files, label) in [(pos, true), (neg, false)] {
        for path in files {
            data.extend(read_examples(path)?.into_iter().map(|t| (t, label)));
        }
    }
    let (train, held) = split_holdout(data, params.holdout, params.seed);
    let model = Classifier::train(&train, params)?;
    let eval = if held.is_empty() {
        Eval::default()
    } else {
        evaluate(&model, &held)
    };
    Ok((model, eval))
}

/// Splits examples into (train, held out), holding out `fraction` of each class, chosen by a
/// seeded shuffle so the split is reproducible.
pub fn split_holdout<S>(data: Examples<S>, fraction: f32, seed: u64) -> (Examples<S>, Examples<S>) {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (mut pos, mut neg): (Vec<_>, Vec<_>) = data.into_iter().partition(|(_, y)| *y);
    let mut rng = SplitMix64(seed ^ 0x686f_6c64);
    let mut train = Vec::new();
    let mut held = Vec::new();
    for class in [&mut pos, &mut neg] {
        rng.shuffle(class);
        let k = (class.len() as f32 * fraction).round() as usize;
        let rest = class.split_off(k.min(class.len()));
        held.append(class);
        train.extend(rest);
    }
    (train, held)
}

/// The examples of one training file (`.jsonl` objects' `text`, or blank-line-separated
/// blocks of a text file).
pub fn read_examples(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|source| ClassifierError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if is_jsonl {
        jsonl_texts(path, &text)
    } else {
        Ok(paragraphs(&text))
    }
}

/// The `text` field of every non-blank JSON line.
fn jsonl_texts(path: &Path, text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ClassifierError::Data {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        match value.get("text").and_then(|t| t.as_str()) {
            Some(t) => out.push(t.to_string()),
            None => return Err(bad("no string field `text`".into())),
        }
    }
    Ok(out)
}

/// Blank-line-separated blocks of `text` (lines right-trimmed, `\r\n` tolerated, empty
/// blocks dropped).
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            if !cur.is_empty() {
                cur.push('\n');
            }
            cur.push_str(line.trim_end());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_zeroes_digits() {
        assert_eq!(normalize("In 1984 THE Year"), "in 0000 the year");
        assert_eq!(normalize("ÉCOLE 42"), "école 00");
        assert_eq!(normalize("a\u{a0}B"), "a b");
    }

    #[test]
    fn normalize_replaces_math_spans() {
        assert_eq!(normalize("Let $x^2$ be"), "let  <math>  be");
        assert_eq!(normalize("see $$\\int_0^1 f$$ now"), "see  <math>  now");
        assert_eq!(normalize("$a$ and $b$"), " <math>  and  <math> ");
        // Math content is not lower-cased or digit-mapped: it is gone.
        assert!(!normalize("$X_1$").contains('x'));
    }

    #[test]
    fn prices_and_escapes_are_not_math() {
        assert!(math_spans("It costs $5 and $10.").is_empty());
        assert!(math_spans("a \\$x\\$ b").is_empty());
        assert!(math_spans("$ x$").is_empty());
        assert!(math_spans("$x $").is_empty());
        assert!(math_spans("$x\n\ny$").is_empty());
        assert!(math_spans("unclosed $x").is_empty());
        assert_eq!(math_spans("$x$"), vec![0..3]);
        assert_eq!(math_spans("$$a\nb$$"), vec![0..7]);
        assert!(has_math("Let $n$ be"));
        assert!(!has_math("plain"));
    }

    #[test]
    fn keep_rule_matches_openwebmath() {
        assert!(keep(0.15, true));
        assert!(!keep(0.14, true));
        assert!(!keep(0.79, false));
        assert!(keep(0.8, false));
    }

    #[test]
    fn f16_round_trip() {
        for &(x, h) in &[
            (0.0f32, 0u16),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (1e6, 0x7c00),
            (5.960_464_5e-8, 0x0001),
            (0.333_333_34, 0x3555),
        ] {
            assert_eq!(f32_to_f16(x), h, "{x}");
        }
        for h in 0u16..0x7c00 {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h);
            assert_eq!(f32_to_f16(-f16_to_f32(h)), h | 0x8000);
        }
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    /// A separable toy problem: math talk vs cooking talk.
    fn toy() -> Vec<(String, bool)> {
        let math = ["theorem", "integral", "lemma", "proof", "matrix", "prime"];
        let food = ["recipe", "butter", "oven", "garlic", "flour", "sauce"];
        let mut out = Vec::new();
        for i in 0..120 {
            let a = math[i % 6];
            let b = math[(i * 5 + 1) % 6];
            out.push((format!("The {a} follows from the {b} with $x_{i}$."), true));
            let c = food[i % 6];
            let d = food[(i * 5 + 1) % 6];
            out.push((format!("The {c} goes well with the {d}, {i} grams."), false));
        }
        out
    }

    fn small_params() -> TrainParams {
        TrainParams {
            features: Features {
                bits: 16,
                ..Features::default()
            },
            ..TrainParams::default()
        }
    }

    #[test]
    fn learns_a_separable_problem() {
        let data = toy();
        let (train, held) = split_holdout(data, 0.25, 7);
        let model = Classifier::train(&train, &small_params()).unwrap();
        let eval = evaluate(&model, &held);
        assert_eq!(eval.n, held.len());
        assert_eq!(eval.accuracy, 1.0, "{eval:?}");
        assert_eq!(eval.auroc, 1.0);
        assert!(model.score("a lemma about a prime matrix") > 0.5);
        assert!(model.score("garlic butter sauce in the oven") < 0.5);
    }

    #[test]
    fn training_is_deterministic() {
        let data = toy();
        let a = Classifier::train(&data, &small_params()).unwrap();
        let b = Classifier::train(&data, &small_params()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn one_class_or_bad_bits_is_an_error() {
        let data = vec![("x".to_string(), true)];
        assert!(Classifier::train(&data, &TrainParams::default()).is_err());
        let data = toy();
        let mut p = small_params();
        p.features.bits = 40;
        assert!(Classifier::train(&data, &p).is_err());
    }

    #[test]
    fn save_load_round_trip_scores_identically() {
        let data = toy();
        let model = Classifier::train(&data, &small_params()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.msc");
        model.save(&path).unwrap();
        let back = Classifier::load(&path).unwrap();
        assert_eq!(back, model);
        for (t, _) in &data {
            assert_eq!(back.score(t).to_bits(), model.score(t).to_bits());
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors_naming_the_file() {
        let data = toy();
        let model = Classifier::train(&data, &small_params()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.msc");
        model.save(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        for cut in [0, 5, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            let err = Classifier::load(&path).unwrap_err();
            assert!(matches!(err, ClassifierError::Format { .. }), "{err}");
            assert!(err.to_string().contains("m.msc"), "{err}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x55;
        fs::write(&path, &flipped).unwrap();
        assert!(Classifier::load(&path).is_err());
        fs::write(&path, b"hello world, definitely not a model file").unwrap();
        let err = Classifier::load(&path).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let err = Classifier::load(dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, ClassifierError::Io { .. }), "{err}");
    }

    #[test]
    fn auroc_handles_ties_and_one_class() {
        let s = [(0.1, false), (0.4, true), (0.35, false), (0.8, true)];
        assert_eq!(auroc(&s), 1.0);
        let s = [(0.5, false), (0.5, true)];
        assert_eq!(auroc(&s), 0.5);
        assert_eq!(auroc(&[(0.3, true)]), 0.5);
        let e = Eval::from_scores(&[(0.9, true), (0.2, false), (0.7, false)], 0.5);
        assert!((e.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.precision, 0.5);
        assert_eq!(e.recall, 1.0);
    }

    #[test]
    fn paragraphs_and_jsonl() {
        assert_eq!(
            paragraphs("a\nb\n\n\n c \r\n\r\nd"),
            vec!["a\nb".to_string(), " c".into(), "d".into()]
        );
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("x.jsonl");
        fs::write(
            &good,
            "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"id\": 3}\n",
        )
        .unwrap();
        assert_eq!(read_examples(&good).unwrap(), vec!["one", "two"]);
        let bad = dir.path().join("y.jsonl");
        fs::write(&bad, "{\"text\": \"one\"}\n{\"txt\": 1}\n").unwrap();
        let err = read_examples(&bad).unwrap_err();
        assert!(err.to_string().contains("y.jsonl:2"), "{err}");
    }

    #[test]
    fn train_from_files_holds_out_and_evaluates() {
        let dir = tempfile::tempdir().unwrap();
        let (pos, neg): (Vec<_>, Vec<_>) = toy().into_iter().partition(|(_, y)| *y);
        let join = |v: Vec<(String, bool)>| {
            v.into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        let p = dir.path().join("pos.txt");
        let n = dir.path().join("neg.txt");
        fs::write(&p, join(pos)).unwrap();
        fs::write(&n, join(neg)).unwrap();
        let (model, eval) = train_from_files(&[p], &[n], &small_params()).unwrap();
        assert_eq!(eval.n, 48);
        assert!(eval.auroc > 0.99, "{eval:?}");
        assert!(model.score("the integral of a matrix") > 0.5);
    }
}
