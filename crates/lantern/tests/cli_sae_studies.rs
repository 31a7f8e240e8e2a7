//! The SAE studies on a small SAE trained once on the real SmolLM2: IOI feature patching,
//! automated interpretability through our own chat server, and `lantern lm serve`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;
use common::{err_of, json_of, lantern, small_train};

use serde_json::Value;

/// One small SAE (layer 3, 1152 latents, k 8) for every test here. It lives in cargo's per-target
/// temp dir under a fixed name (a `TempDir` in a static is never dropped, so it would leak one
/// run per test process); a stale copy from an earlier process is removed first.
fn trained_sae() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_sae_studies_run");
        if run.exists() {
            std::fs::remove_dir_all(&run).unwrap();
        }
        json_of(&small_train(&run, &["--report-windows", "0"]));
        run.join("blocks.3.resid_post")
    })
}

#[test]
fn ioi_patching_moves_the_logit_difference_and_complete_bases_recover_it() {
    let sae = trained_sae();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("patch");
    let v = json_of(&lantern(&[
        "sae",
        "patch",
        "--json",
        "--sae",
        sae.to_str().unwrap(),
        "--prompts",
        "6",
        "--candidates",
        "12",
        "--pool",
        "4",
        "--steps",
        "3",
        "--pca-tokens",
        "1200",
        "--out",
        out.to_str().unwrap(),
    ]));
    // SmolLM2 does IOI: it prefers the indirect object, and the corrupted prompts flip that.
    let clean = v["metric_clean"].as_f64().unwrap();
    let corrupt = v["metric_corrupt"].as_f64().unwrap();
    assert!(clean > 1.0 && corrupt < 0.0, "{clean} {corrupt}");
    let curves = v["curves"].as_array().unwrap();
    let names: Vec<&str> = curves
        .iter()
        .map(|c| c["basis"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sae", "neurons", "pca", "random"]);
    for c in curves {
        let steps = c["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 4, "{c}");
        // The unpatched start replays the clean run through the patching path exactly.
        let m0 = steps[0]["metric"].as_f64().unwrap();
        assert!((m0 - clean).abs() < 1e-3, "{m0} vs {clean}");
        // Each greedy step picks the best addition: the first beats doing nothing.
        assert!(steps[1]["recovered"].as_f64().unwrap() > 0.0, "{c}");
        let edits: Vec<f64> = steps.iter().map(|s| s["edit"].as_f64().unwrap()).collect();
        if c["basis"] != "sae" {
            // Orthonormal and complete: every direction changes, patching them all is the
            // corrupted run, and edits grow with each direction added.
            assert_eq!(c["changed"], 576, "{c}");
            let all = c["all_recovered"].as_f64().unwrap();
            assert!((all - 1.0).abs() < 0.02, "{} recovers {all}", c["basis"]);
            assert!((c["all_edit"].as_f64().unwrap() - 1.0).abs() < 1e-3);
            assert!(edits.windows(2).all(|w| w[1] > w[0]), "{edits:?}");
        }
    }
    assert!(out.join("patch.json").exists());
    let svg = std::fs::read_to_string(out.join("patch.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("pca"));
}

#[test]
fn explain_and_score_run_through_the_local_server_for_the_sae_and_a_baseline() {
    let sae = trained_sae();
    let dir = tempfile::tempdir().unwrap();
    let expl = dir.path().join("explanations.json");
    let v = json_of(&lantern(&[
        "sae",
        "explain",
        "--json",
        "--sae",
        sae.to_str().unwrap(),
        "--latents",
        "1",
        "--baselines",
        "random",
        "--tokens",
        "4096",
        "--explain-examples",
        "3",
        "--score-examples",
        "2",
        "--out",
        expl.to_str().unwrap(),
    ]));
    assert_eq!(v["per_basis"]["sae"], 1, "{v}");
    assert_eq!(v["per_basis"]["random"], 1, "{v}");
    let file: Value = serde_json::from_slice(&std::fs::read(&expl).unwrap()).unwrap();
    for r in file["records"].as_array().unwrap() {
        let t = r["threshold"].as_f64().unwrap();
        if r["basis"] == "sae" {
            assert_eq!(t, 0.0);
        }
        let maxes = |k: &str| -> Vec<f64> {
            r[k].as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    assert_eq!(e["tokens"].as_array().unwrap().len(), 32);
                    e["acts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_f64().unwrap())
                        .fold(f64::MIN, f64::max)
                })
                .collect()
        };
        let (top, act, non) = (
            maxes("explain"),
            maxes("activating"),
            maxes("non_activating"),
        );
        assert_eq!((top.len(), act.len(), non.len()), (3, 2, 2));
        // The explainer reads the strongest windows; scoring windows are held out below them.
        assert!(top.windows(2).all(|w| w[0] >= w[1]), "{top:?}");
        assert!(act.iter().all(|&a| a > t && a <= top[2]), "{act:?} {top:?}");
        assert!(non.iter().all(|&a| a <= t), "{non:?} {t}");
        assert!(!r["explanation"].as_str().unwrap().is_empty());
    }
    let v = json_of(&lantern(&[
        "sae",
        "score",
        "--json",
        "--explanations",
        expl.to_str().unwrap(),
    ]));
    // 2 records x (4 detection + 2 fuzzing + 4 simulation) requests, every answer read from the
    // server's log-probabilities.
    assert_eq!(v["requests"], 20, "{v}");
    let scores: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("scores.json")).unwrap()).unwrap();
    for r in scores["records"].as_array().unwrap() {
        assert_eq!(r["unparsed"], 0, "{r}");
        for k in ["detection", "detection_auc", "fuzzing", "fuzzing_auc"] {
            let x = r[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{k} {x}");
        }
        assert!(r["simulation"].as_f64().unwrap().abs() <= 1.0);
    }
    for b in ["sae", "random"] {
        assert_eq!(v["summary"][b]["n"], 1, "{v}");
    }
    // An endpoint that is not there: a clear error naming it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let err = err_of(&lantern(&[
        "sae",
        "score",
        "--explanations",
        expl.to_str().unwrap(),
        "--llm-url",
        &url,
        "--out",
        dir.path().join("s2.json").to_str().unwrap(),
    ]));
    assert!(err.contains(&url), "{err}");
}

#[test]
fn lm_serve_answers_chat_completions() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["lm", "serve", "--json", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    let client = lantern_chat::Client::new(&url, "any").unwrap();
    let reply = client.chat(&[lantern_chat::Message::new("user", "Say hello.")], 8, 0.0);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!reply.unwrap().trim().is_empty());
}
