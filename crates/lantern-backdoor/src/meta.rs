//! The meta-model: a transformer that reads a CNN's parameters and says whether it carries a
//! backdoor (Langosco et al. 2023).
//!
//! A model's parameters are flattened in [`Params`](crate::cnn::Params)'s fixed order, each
//! tensor standardised with the training set's per-tensor mean and deviation
//! ([`Normaliser`]) and cut into chunks of [`MetaArch::chunk`] values, each tensor on its own
//! (its last chunk zero-padded, so a token never mixes two tensors): one token per chunk. Tokens are embedded linearly, a learned classification token is prepended,
//! learned positions are added, and a pre-LayerNorm transformer encoder (GELU MLP) with a
//! final LayerNorm reads them; the classification token's output goes through a linear layer
//! to one logit, trained with binary cross-entropy ([`train`]) by AdamW with linear warm-up
//! and cosine decay. Training augments every model each epoch by a random permutation of its
//! hidden units ([`permute_hidden_units`](crate::cnn::permute_hidden_units)), a symmetry
//! that leaves its function unchanged.
//!
//! Optionally ([`MetaArch::stat_tokens`]) the sequence also carries one token per CNN tensor
//! holding that tensor's weight statistics (mean, deviation, extremes, quantiles, kurtosis,
//! norm; standardised over the training models), embedded by their own linear map, and
//! ([`MetaArch::stats_readout`]) a linear read-out of those statistics is added to the logit:
//! at our zoo's scale (about a thousand training models) the transformer alone reads the
//! footprint such statistics capture less well than a logistic regression on them does, and
//! with both paths it learns what the linear trend misses. Scores can average over random
//! hidden-unit permutations of each model ([`MetaDetector::score_all_tta`]).
//!
//! The paper normalises all parameters by one global scalar; at our small scale the tensors
//! differ by orders of magnitude (LayerNorm gains near 1, conv weights near 0.1), so one
//! scale per tensor keeps every token informative.
//!
//! [`split_zoo`] assigns the models of a zoo to train / validation / test, holding whole
//! trigger families out of training when asked.

mod model;
mod split;
mod tokens;
mod train;

pub use model::{MetaArch, MetaModel};
pub use split::{split_zoo, Role, ZooSplit};
pub use tokens::Normaliser;
pub use train::{train, Epoch, MetaDetector, TrainConfig};

use std::path::PathBuf;

/// Errors from building, training, saving or applying the meta-model.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A candle tensor operation failed.
    #[error("meta-model tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A meta-model file is malformed.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model does not have the architecture the meta-model was trained on.
    #[error("{what}: the meta-model reads CNNs with tensors {expected}, this model has {found}")]
    Architecture {
        /// Which model (file or position).
        what: String,
        /// The layout the meta-model expects.
        expected: String,
        /// The layout found.
        found: String,
    },
    /// Training data or settings are unusable.
    #[error("meta-model training: {0}")]
    BadSetup(String),
}
