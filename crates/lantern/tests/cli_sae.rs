//! The `lantern sae` command contracts: training on the real SmolLM2 with a small budget, the
//! sparsify and SAELens files read back independently, resume after a kill, and bad input.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{err_of, json_of, lantern, small_train};
use std::time::{Duration, Instant};

use serde_json::Value;

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, safetensors::Dtype)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), t.dtype()))
        .collect();
    v.sort();
    v
}

#[test]
fn train_reports_metrics_and_writes_sparsify_and_saelens_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let v = json_of(&small_train(&out, &["--saelens"]));
    let s = &v["saes"][0];
    assert_eq!(s["hookpoint"], "blocks.3.resid_post");
    let fvu = s["fvu"].as_f64().unwrap();
    assert!(fvu > 0.0 && fvu < 0.9, "fvu {fvu}");
    assert!((s["l0"].as_f64().unwrap() - 8.0).abs() < 1e-9);
    assert!(s["dead_frac"].as_f64().unwrap() < 0.5);
    let score = s["ce_loss_score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0, "ce_loss_score {score}");
    assert!(s["ce_with_sae"].as_f64() > s["ce_clean"].as_f64());
    assert!(s["ce_zero_ablation"].as_f64() > s["ce_with_sae"].as_f64());

    // The feature report: metrics, the density histogram, latents with highlighted contexts.
    let report = std::fs::read_to_string(s["report"].as_str().unwrap()).unwrap();
    assert!(report.contains("<svg") && report.contains("Feature density"));
    assert!(report.matches("class=\"lat\"").count() >= 10);
    assert!(report.contains("promotes:") && report.contains("rgba(255,140,0,1.00)"));

    // sparsify's layout, read back with the safetensors crate alone.
    let sae_dir = out.join("blocks.3.resid_post");
    let f32 = safetensors::Dtype::F32;
    assert_eq!(
        tensors(&sae_dir.join("sae.safetensors")),
        vec![
            ("W_dec".to_string(), vec![1152, 576], f32),
            ("b_dec".to_string(), vec![576], f32),
            ("encoder.bias".to_string(), vec![1152], f32),
            ("encoder.weight".to_string(), vec![1152, 576], f32),
        ]
    );
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(sae_dir.join("cfg.json")).unwrap()).unwrap();
    for key in [
        "activation",
        "expansion_factor",
        "normalize_decoder",
        "num_latents",
        "k",
        "multi_topk",
        "skip_connection",
        "transcode",
        "d_in",
    ] {
        assert!(cfg.get(key).is_some(), "cfg.json lacks {key}");
    }
    assert_eq!(
        (
            cfg["d_in"].as_u64(),
            cfg["num_latents"].as_u64(),
            cfg["k"].as_u64()
        ),
        (Some(576), Some(1152), Some(8))
    );
    assert_eq!(cfg["activation"], "topk");
    let lens = sae_dir.join("saelens");
    assert_eq!(
        tensors(&lens.join("sae_weights.safetensors")),
        vec![
            ("W_dec".to_string(), vec![1152, 576], f32),
            ("W_enc".to_string(), vec![576, 1152], f32),
            ("b_dec".to_string(), vec![576], f32),
            ("b_enc".to_string(), vec![1152], f32),
        ]
    );
    let lcfg: Value =
        serde_json::from_slice(&std::fs::read(lens.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(
        (lcfg["d_in"].as_u64(), lcfg["d_sae"].as_u64()),
        (Some(576), Some(1152))
    );

    // `sae eval` on the saved folder agrees on the kind of numbers.
    let e = json_of(&lantern(&[
        "sae",
        "eval",
        "--json",
        "--sae",
        sae_dir.to_str().unwrap(),
        "--tokens",
        "2000",
        "--ctx-len",
        "64",
        "--skip-windows",
        "400",
        "--splice-windows",
        "2",
    ]));
    assert!(e["fvu"].as_f64().unwrap() < 0.95);
    assert!((e["l0"].as_f64().unwrap() - 8.0).abs() < 1e-9);

    // The same folder again without --resume is refused.
    let err = err_of(&small_train(&out, &[]));
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let args = [
        "sae",
        "train",
        "--json",
        "--hookpoint",
        "blocks.1.resid_post",
        "--latents",
        "1152",
        "--k",
        "8",
        "--tokens",
        "40000",
        "--batch",
        "500",
        "--ctx-len",
        "64",
        "--eval-tokens",
        "1000",
        "--splice-windows",
        "0",
        "--buffer",
        "1000",
        "--checkpoint-every",
        "2",
        "--out",
        o,
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a checkpoint is on disk and before it finishes.
    let state = out.join("run.json");
    let start = Instant::now();
    let mut killed_at = None;
    while start.elapsed() < Duration::from_secs(300) {
        if let Ok(b) = std::fs::read(&state) {
            let v: Value = serde_json::from_slice(&b).unwrap();
            if v["finished"] == false && v["steps"].as_u64().unwrap() >= 4 {
                child.kill().unwrap();
                killed_at = v["steps"].as_u64();
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let killed_at = killed_at.expect("the run reached a checkpoint before finishing");
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let v = json_of(&lantern(&resumed));
    let s = &v["saes"][0];
    assert!(s["tokens"].as_u64().unwrap() >= 40000);
    // Steps continue from the checkpoint: none were redone from zero.
    let steps = s["steps"].as_u64().unwrap();
    assert!(
        steps >= killed_at && steps <= 40000 / 500 + 2,
        "steps {steps}"
    );
    assert!(s["fvu"].as_f64().unwrap() < 1.0);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = out.to_str().unwrap();
    let err = err_of(&lantern(&[
        "sae",
        "train",
        "--hookpoint",
        "blocks.99.resid_post",
        "--out",
        o,
    ]));
    assert!(
        err.contains("blocks.99.resid_post") && err.contains("does not exist"),
        "{err}"
    );
    let err = err_of(&lantern(&[
        "sae",
        "train",
        "--hookpoint",
        "blocks.2.nowhere",
        "--out",
        o,
    ]));
    assert!(err.contains("blocks.2.nowhere"), "{err}");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = err_of(&lantern(&[
        "sae",
        "train",
        "--corpus",
        empty.to_str().unwrap(),
        "--out",
        o,
    ]));
    assert!(err.contains("empty"), "{err}");
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"na\xefve caf\xe9").unwrap();
    let err = err_of(&lantern(&[
        "sae",
        "train",
        "--corpus",
        latin1.to_str().unwrap(),
        "--out",
        o,
    ]));
    assert!(err.contains("latin1.txt") && err.contains("UTF-8"), "{err}");
    // An SAE for another model width.
    let other = dir.path().join("other");
    let mut cfg = lantern_sae::SaeConfig::topk(100, 200, 4);
    cfg.hookpoint = "blocks.3.resid_post".into();
    lantern_sae::Sae::init(cfg, 0)
        .unwrap()
        .save(&other)
        .unwrap();
    let err = err_of(&lantern(&[
        "sae",
        "eval",
        "--sae",
        other.to_str().unwrap(),
        "--tokens",
        "500",
        "--ctx-len",
        "64",
    ]));
    assert!(
        err.contains("100 dimensions") && err.contains("576"),
        "{err}"
    );
    let err = err_of(&lantern(&[
        "sae",
        "eval",
        "--sae",
        dir.path().join("missing").to_str().unwrap(),
    ]));
    assert!(err.contains("cfg.json"), "{err}");
}

/// `lantern sae bench` on a small SAE (d_in 64, 512 latents, k 8, 256 rows, 3 timed steps).
fn small_bench(extra: &[&str]) -> Value {
    let mut args = vec![
        "sae",
        "bench",
        "--json",
        "--d-in",
        "64",
        "--latents",
        "512",
        "--k",
        "8",
        "--batch",
        "256",
        "--steps",
        "3",
        "--warmup",
        "1",
    ];
    args.extend_from_slice(extra);
    json_of(&lantern(&args))
}

#[test]
fn bench_reports_throughput() {
    let v = small_bench(&[]);
    let tok_s = v["tok_s"].as_f64().unwrap();
    assert!(tok_s > 0.0);
    assert!(v["threads"].as_u64().unwrap() >= 1);
    // The figures describe the steps that ran: k codes per row, a sane FVU on Gaussian input,
    // batch / seconds per step = tok/s, and the encoder rate derived from it.
    assert_eq!(v["l0"].as_f64().unwrap(), 8.0);
    let fvu = v["fvu"].as_f64().unwrap();
    assert!(fvu > 0.0 && fvu < 1.5, "fvu {fvu}");
    let per_step = v["seconds_per_step"].as_f64().unwrap();
    assert!((tok_s * per_step - 256.0).abs() < 1e-6 * 256.0);
    let gflop = tok_s * 2.0 * 64.0 * 512.0 / 1e9;
    assert!((v["encoder_gflop_s"].as_f64().unwrap() - gflop).abs() < 1e-9 * gflop.max(1.0));
}

/// `--device tensor-cpu` trains through the GPU's code path (dense tensor steps) on the CPU: the
/// same run as the CPU trainer's, step for step, so the held-out metrics agree.
#[test]
fn the_tensor_trainer_trains_the_same_sae_as_the_cpu_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--report-windows", "0"];
    let cpu = json_of(&small_train(&dir.path().join("cpu"), &quick));
    let mut args = quick.to_vec();
    args.extend(["--device", "tensor-cpu"]);
    let out = dir.path().join("tensor");
    let tensor = json_of(&small_train(&out, &args));
    let (a, b) = (&cpu["saes"][0], &tensor["saes"][0]);
    let (fa, fb) = (a["fvu"].as_f64().unwrap(), b["fvu"].as_f64().unwrap());
    assert!(fa < 0.9 && (fa - fb).abs() < 0.01 * fa, "fvu {fa} vs {fb}");
    assert_eq!(a["steps"], b["steps"]);
    assert_eq!(b["l0"].as_f64().unwrap(), 8.0);
    // What it saved is an SAE in sparsify's layout, like the CPU trainer's.
    assert_eq!(
        tensors(&out.join("blocks.3.resid_post/sae.safetensors")),
        tensors(&dir.path().join("cpu/blocks.3.resid_post/sae.safetensors"))
    );
    // What it does not train is refused before any LM work, with the reason.
    args.extend(["--activation", "relu"]);
    let err = err_of(&small_train(&dir.path().join("relu"), &args));
    assert!(err.contains("TopK") && err.contains("relu"), "{err}");
    let err = err_of(&small_train(&dir.path().join("x"), &["--device", "tpu"]));
    assert!(err.contains("unknown device"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = err_of(&small_train(&dir.path().join("y"), &["--device", "cuda"]));
        assert!(err.contains("--features cuda"), "{err}");
    }
}

#[test]
fn bench_on_the_tensor_trainer_agrees_with_the_cpu_trainer() {
    let run = |device: &str| small_bench(&["--device", device]);
    let (cpu, tensor) = (run("cpu"), run("tensor-cpu"));
    assert_eq!(tensor["device"], "tensor-cpu");
    assert_eq!(tensor["l0"].as_f64().unwrap(), 8.0);
    assert!(tensor["tok_s"].as_f64().unwrap() > 0.0);
    let (a, b) = (
        cpu["fvu"].as_f64().unwrap(),
        tensor["fvu"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-3 * a, "fvu {a} vs {b}");
}
