//! sha256 of downloaded package files.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{AssetError, IoContext};

/// The sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that the file at `path` has sha256 `expected` (hex, any case).
///
/// `package` only names the package in the error, which is [`AssetError::Checksum`] on a
/// mismatch so the caller can tell a replaced upstream file from an I/O failure.
pub fn verify_sha256(path: &Path, expected: &str, package: &str) -> Result<(), AssetError> {
    let actual = sha256_file(path).ctx(|| format!("cannot read {}", path.display()))?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(AssetError::Checksum {
            package: package.to_string(),
            expected: expected.trim().to_ascii_lowercase(),
            actual,
        })
    }
}
