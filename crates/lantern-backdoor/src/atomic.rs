//! Atomic file replacement: write a temporary file next to the target, then rename it into
//! place, so a reader (or a resumed zoo) never sees half a file.

use std::path::{Path, PathBuf};

/// The temporary name for `path`: hidden, in the same folder (so the rename stays on one file
/// system), tagged with the process id.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.tmp{}",
        name.unwrap_or_default(),
        std::process::id()
    ))
}

/// Replaces `path` with what `write` puts at the temporary path it is given; `io` turns an
/// I/O error on a file into the caller's error. The temporary file is removed when the rename
/// fails.
pub(crate) fn replace_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io: impl Fn(PathBuf, std::io::Error) -> E,
) -> Result<(), E> {
    let tmp = tmp_path(path);
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path.to_path_buf(), e)
    })
}

/// Replaces `path` with `bytes` atomically; `io` as in [`replace_with`].
pub(crate) fn write_atomic<E>(
    path: &Path,
    bytes: &[u8],
    io: impl Fn(PathBuf, std::io::Error) -> E,
) -> Result<(), E> {
    replace_with(
        path,
        |tmp| std::fs::write(tmp, bytes).map_err(|e| io(tmp.to_path_buf(), e)),
        &io,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        let io = |p: PathBuf, e: std::io::Error| format!("{}: {e}", p.display());
        write_atomic(&path, b"old", io).unwrap();
        write_atomic(&path, b"new", io).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let e = write_atomic(&dir.path().join("no/such/dir/x"), b"x", io).unwrap_err();
        assert!(e.contains("no/such/dir"), "{e}");
    }
}
