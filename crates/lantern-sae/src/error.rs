//! The error type of the SAE crate.

use std::path::PathBuf;

/// Everything that can go wrong training, loading or evaluating an SAE.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    #[error(transparent)]
    Lm(#[from] lantern_lm::LmError),
    #[error(transparent)]
    Asset(#[from] lantern_assets::AssetError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    #[error("corpus {spec}: {what}")]
    Corpus { spec: String, what: String },
    #[error("{0}")]
    Config(String),
}

impl SaeError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SaeError {
        SaeError::Io {
            path: path.into(),
            source,
        }
    }

    /// A file whose content is wrong.
    pub fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> SaeError {
        SaeError::BadFile {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Result alias for the SAE crate.
pub type Result<T, E = SaeError> = std::result::Result<T, E>;
