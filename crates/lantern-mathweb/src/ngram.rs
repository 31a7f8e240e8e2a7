//! An n-gram language model with interpolated modified Kneser-Ney smoothing, for perplexity
//! filtering.
//!
//! OpenWebMath drops pages whose perplexity under a KenLM model trained on math text is too high
//! (above 30,000 at extraction, 15,000 at the end). This module builds such a model without
//! KenLM, following what KenLM's `lmplz` does (Chen & Goodman 1998):
//!
//! * [`tokenize`] splits text into words and punctuation, keeping case and keeping LaTeX control
//!   words whole (`\frac{a}{b}` is `\frac { a } { b }`); every non-blank line is one sentence,
//!   wrapped in `<s>` … `</s>` (see [`sentences`]).
//! * [`NgramCounts`] counts every n-gram up to the order, streaming over batches of documents
//!   (in parallel with rayon, merged afterwards). N-grams are keyed by the xxh3 hash of their
//!   token ids in hash maps; the vocabulary is a word → id map.
//! * [`KneserNey::estimate`] turns the counts into a [`Model`]: adjusted counts (raw counts at
//!   the highest order and for n-grams starting with `<s>`, continuation counts below), three
//!   discounts per order from the count-of-counts, interpolation down to a uniform distribution
//!   over the vocabulary (which counts `</s>` and `<unk>` but not `<s>`).
//! * The model is stored in backoff form: the interpolated probability of each seen n-gram plus
//!   the backoff weight `gamma(h)` of each context. Queried with the ARPA rule (`p(w|h)` if
//!   `h w` was seen, else `backoff(h) · p(w|h')`), it gives exactly the interpolated
//!   probabilities, so [`Model::write_arpa`] writes a file that KenLM and SRILM read as the same
//!   model, and [`Model::load_arpa`] reads their files. [`Model::save`] / [`Model::load`] use a
//!   compact zstd-compressed binary format instead.
//! * [`Model::perplexity`] scores a text like KenLM: `10^(-Σ log10 p / n)` where `n` counts the
//!   words and one `</s>` per sentence; out-of-vocabulary words are scored as `<unk>` and counted.

mod arpa;
mod binary;
mod counts;
mod estimate;
mod model;
mod table;
mod tokenize;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use counts::NgramCounts;
pub use estimate::{Discount, KneserNey};
pub use model::Model;
pub use tokenize::{sentences, tokenize};

/// The unknown word: what every out-of-vocabulary word is scored as.
pub const UNK: &str = "<unk>";
/// The sentence-start marker: context only, never predicted.
pub const BOS: &str = "<s>";
/// The sentence-end marker: predicted (and counted in perplexity) once per sentence.
pub const EOS: &str = "</s>";

/// The order to use when there is no reason to pick another: 4-grams keep the hashed in-memory
/// counts affordable on large corpora (the 5-gram table would be the largest of all), at a small
/// cost in perplexity for filtering purposes.
pub const DEFAULT_ORDER: usize = 4;

/// The largest order supported (KenLM's default build stops at 6).
pub const MAX_ORDER: usize = 16;

/// What can go wrong when counting, estimating, saving or loading an n-gram model.
#[derive(Debug, thiserror::Error)]
pub enum NgramError {
    /// An order of 0 or above [`MAX_ORDER`].
    #[error("n-gram order {0} is not supported (use 1..={MAX_ORDER})")]
    Order(usize),
    /// Asked to estimate a model of a higher order than what was counted.
    #[error("cannot estimate an order-{wanted} model from counts of order {counted}")]
    CountsOrder {
        /// The order asked for.
        wanted: usize,
        /// The order of the counts.
        counted: usize,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A malformed ARPA file.
    #[error("{}:{line}: {msg}", path.display())]
    Arpa {
        /// The file (or the label given for an in-memory reader).
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        msg: String,
    },
    /// A malformed binary model file.
    #[error("{}: not a valid lantern n-gram model: {msg}", path.display())]
    Binary {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
}

/// Checks that `order` is within `1..=MAX_ORDER`.
fn check_order(order: usize) -> Result<(), NgramError> {
    if (1..=MAX_ORDER).contains(&order) {
        Ok(())
    } else {
        Err(NgramError::Order(order))
    }
}
