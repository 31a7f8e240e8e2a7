//! Runs the registries' own clients (`pip`, `npm`, `apt-get`) to download one package file.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::Registry;
use crate::error::{AssetError, IoContext};

/// Set once this process has run `apt-get update`, so it runs at most once.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Finds `program` in the directories of a `PATH`-style list.
///
/// Takes the list as an argument so tests can pass an empty one instead of changing the
/// environment.
pub fn find_on_path(program: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// Resolves the client for `registry` on `path_var`, or explains how to install it.
pub fn resolve_client(
    registry: Registry,
    package_label: &str,
    path_var: &OsStr,
) -> Result<PathBuf, AssetError> {
    let (names, hint): (&[&str], &str) = match registry {
        Registry::Pypi | Registry::PypiSdist => {
            (&["pip", "pip3"], "e.g. `apt-get install python3-pip`")
        }
        Registry::Npm => (&["npm"], "e.g. `apt-get install npm`"),
        Registry::Debian => (&["apt-get"], "it ships with Debian and Ubuntu"),
    };
    names
        .iter()
        .find_map(|n| find_on_path(n, path_var))
        .ok_or_else(|| AssetError::MissingClient {
            package: package_label.to_string(),
            client: registry.client().to_string(),
            hint: hint.to_string(),
        })
}

/// Downloads `package` at `version` from `registry` into the empty folder `dest` with the
/// registry's own client, and returns the path of the one file it saved.
///
/// Uses the process's `PATH` to find the client.
pub fn download_package(
    registry: Registry,
    package: &str,
    version: &str,
    dest: &Path,
) -> Result<PathBuf, AssetError> {
    let label = format!("{registry} {}", registry.package_spec(package, version));
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let client = resolve_client(registry, &label, &path_var)?;
    fs::create_dir_all(dest).ctx(|| format!("cannot create {}", dest.display()))?;
    let spec = registry.package_spec(package, version);
    match registry {
        Registry::Pypi => run_client(pip_command(&client, &spec, dest, None), &label, "pip")?,
        Registry::PypiSdist => run_client(
            pip_command(&client, &spec, dest, Some(package)),
            &label,
            "pip",
        )?,
        Registry::Npm => run_client(npm_command(&client, &spec, dest), &label, "npm")?,
        Registry::Debian => apt_download(&client, &spec, dest, &label)?,
    }
    single_file(dest, &label)
}

/// `pip download --no-deps [--no-binary PKG | --only-binary :all:] SPEC -d DEST`.
fn pip_command(client: &Path, spec: &str, dest: &Path, sdist_of: Option<&str>) -> Command {
    let mut cmd = Command::new(client);
    cmd.args(["download", "--no-deps", "--disable-pip-version-check"]);
    match sdist_of {
        Some(pkg) => cmd.args(["--no-binary", pkg]),
        None => cmd.args(["--only-binary", ":all:"]),
    };
    cmd.arg(spec).arg("-d").arg(dest);
    cmd.env("PIP_NO_INPUT", "1");
    cmd
}

/// `npm pack SPEC --pack-destination DEST`, run inside DEST.
fn npm_command(client: &Path, spec: &str, dest: &Path) -> Command {
    let mut cmd = Command::new(client);
    cmd.args(["pack", "--loglevel=error", spec, "--pack-destination"])
        .arg(dest)
        .current_dir(dest);
    cmd
}

/// `apt-get download SPEC` inside DEST; on "unknown package/version" runs `apt-get update` once
/// and retries.
fn apt_download(client: &Path, spec: &str, dest: &Path, label: &str) -> Result<(), AssetError> {
    let download = || {
        let mut cmd = Command::new(client);
        cmd.args(["-q", "-o", "APT::Sandbox::User=root", "download", spec])
            .current_dir(dest);
        cmd
    };
    match run_client(download(), label, "apt-get") {
        Err(AssetError::Registry { last_line, .. })
            if needs_apt_update(&last_line) && !APT_UPDATED.swap(true, Ordering::SeqCst) =>
        {
            eprintln!("lantern-assets: running `apt-get update` once ({last_line})");
            let mut update = Command::new(client);
            update.args(["-q", "update"]);
            run_client(update, label, "apt-get update")?;
            run_client(download(), label, "apt-get")
        }
        other => other,
    }
}

/// Whether an apt-get error line means the package lists are missing or stale.
fn needs_apt_update(line: &str) -> bool {
    [
        "Unable to locate",
        "Can't select",
        "was not found",
        "no installation candidate",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// Runs a client with captured output; a non-zero exit becomes [`AssetError::Registry`].
fn run_client(mut cmd: Command, label: &str, client: &str) -> Result<(), AssetError> {
    cmd.stdin(Stdio::null());
    let out: Output = cmd
        .output()
        .ctx(|| format!("cannot run {client} to fetch {label}"))?;
    if out.status.success() {
        return Ok(());
    }
    let last = last_line(&out.stderr)
        .or_else(|| last_line(&out.stdout))
        .unwrap_or_else(|| format!("exited with {}", out.status));
    Err(AssetError::Registry {
        package: label.to_string(),
        client: client.to_string(),
        last_line: last,
    })
}

/// Lines clients print after the real error that say nothing about it (npm).
const NOISE: [&str; 2] = [
    "A complete log of this run",
    "In most cases you or one of your dependencies",
];

/// The last informative non-blank line of some output, trimmed.
fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !NOISE.iter().any(|n| l.contains(n)))
        .map(str::to_string)
}

/// The one regular file a client left in `dir`.
fn single_file(dir: &Path, label: &str) -> Result<PathBuf, AssetError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.ctx(|| format!("cannot list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(AssetError::Unpack {
            package: label.to_string(),
            reason: format!("expected the client to save one file, found {n}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_blanks() {
        assert_eq!(last_line(b"a\nE: boom \n\n").as_deref(), Some("E: boom"));
        assert_eq!(last_line(b"  \n"), None);
        let npm = b"npm error notarget No matching version\nnpm error A complete log of this run x";
        assert_eq!(
            last_line(npm).as_deref(),
            Some("npm error notarget No matching version")
        );
    }

    #[test]
    fn apt_update_markers() {
        assert!(needs_apt_update("E: Unable to locate package foo"));
        assert!(needs_apt_update("E: Version '1' for 'x' was not found"));
        assert!(!needs_apt_update("E: Failed to fetch"));
    }
}
