//! Running the `lantern` binary from the CLI tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `lantern ARGS...` and waits for it.
pub fn lantern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .output()
        .unwrap()
}

/// The one JSON object a successful `--json` command printed.
pub fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

/// The stderr of a command that had to fail.
pub fn err_of(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A small but real run: layer 3 of SmolLM2, 1152 latents, k 8.
pub fn small_train(out: &Path, extra: &[&str]) -> Output {
    let o = out.to_str().unwrap();
    let mut args = vec![
        "sae",
        "train",
        "--json",
        "--hookpoint",
        "blocks.3.resid_post",
        "--latents",
        "1152",
        "--k",
        "8",
        "--tokens",
        "12000",
        "--batch",
        "1000",
        "--ctx-len",
        "64",
        "--eval-tokens",
        "2000",
        "--splice-windows",
        "2",
        "--buffer",
        "4000",
        "--lr",
        "2e-3",
        "--out",
        o,
    ];
    args.extend_from_slice(extra);
    lantern(&args)
}
