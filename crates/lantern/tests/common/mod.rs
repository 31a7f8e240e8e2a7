//! Running the `lantern` binary from the CLI tests.

#![allow(dead_code)]

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
