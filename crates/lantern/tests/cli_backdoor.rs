//! `lantern backdoor zoo` on real Fashion-MNIST: a tiny zoo, its index, resume, bad input.

mod common;

use common::{err_of, json_of, lantern};
use serde_json::Value;

/// A zoo of corner-patch backdoors and clean models, 2 blocks, batch 64, no augmentation,
/// with the size settings in `extra`.
fn run_zoo(out: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "backdoor",
        "zoo",
        "--json",
        "--out",
        out,
        "--families",
        "corner",
        "--blocks",
        "2",
        "--batch",
        "64",
        "--no-augment",
    ];
    args.extend_from_slice(extra);
    json_of(&lantern(&args))
}

fn tiny_zoo(out: &str) -> Value {
    run_zoo(
        out,
        &[
            "--models",
            "4",
            "--width",
            "4",
            "--epochs",
            "6",
            "--train-subset",
            "2000",
            "--test-subset",
            "500",
            "--seed",
            "3",
        ],
    )
}

#[test]
fn zoo_trains_indexes_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let v = tiny_zoo(out);
    assert_eq!(v["models"], 4);
    assert_eq!(v["backdoored"], 2);
    let index: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
    let models = index["models"].as_array().unwrap();
    assert_eq!(models.len(), 4);
    for m in models {
        assert!(tmp.path().join(m["file"].as_str().unwrap()).is_file());
        let family = m["family"].as_str().unwrap();
        assert!(family == "clean" || family == "corner", "{family}");
    }
    // The backdoor took: backdoored models' ASR far above the clean models' on the same trigger.
    let asr_b = v["asr_mean_backdoored"].as_f64().unwrap();
    let asr_c = v["asr_mean_clean"].as_f64().unwrap();
    assert!(
        asr_b > 0.8 && asr_c < 0.3,
        "ASR backdoored {asr_b}, clean {asr_c}"
    );
    // Resume: nothing is retrained, the same models come back.
    let again = tiny_zoo(out);
    assert!(again["seconds"].as_f64().unwrap() < v["seconds"].as_f64().unwrap() / 5.0 + 1.0);
    assert_eq!(again["asr_mean_backdoored"], v["asr_mean_backdoored"]);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let e = err_of(&lantern(&[
        "backdoor",
        "zoo",
        "--out",
        out,
        "--families",
        "corner,sparkles",
    ]));
    assert!(e.contains("sparkles") && e.contains("checkerboard"), "{e}");
    let e = err_of(&lantern(&[
        "backdoor",
        "zoo",
        "--out",
        out,
        "--dataset",
        "cifar10:/no/such/dir",
    ]));
    assert!(e.contains("/no/such/dir"), "{e}");
}

/// A zoo of `models` small CNNs (half backdoored with the corner patch) of channel width
/// `width`, trained briefly.
fn small_zoo(out: &str, models: &str, width: &str) -> Value {
    run_zoo(
        out,
        &[
            "--models",
            models,
            "--width",
            width,
            "--poison-rate",
            "0.2",
            "--epochs",
            "3",
            "--train-subset",
            "1000",
            "--test-subset",
            "300",
            "--seed",
            "11",
        ],
    )
}

#[test]
fn meta_model_pipeline_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let zoo = tmp.path().join("zoo");
    let meta = tmp.path().join("meta");
    let (zoo_s, meta_s) = (zoo.to_str().unwrap(), meta.to_str().unwrap());
    small_zoo(zoo_s, "16", "4");
    let t = json_of(&lantern(&[
        "backdoor",
        "meta",
        "train",
        "--json",
        "--zoo",
        zoo_s,
        "--out",
        meta_s,
        "--epochs",
        "3",
        "--chunk",
        "32",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--batch",
        "8",
        "--test-frac",
        "0.3",
        "--val-frac",
        "0.2",
        "--stats-readout",
    ]));
    assert_eq!(t["epochs"], 3);
    assert_eq!(t["history"].as_array().unwrap().len(), 3);
    let (n_train, n_test) = (
        t["train_models"].as_u64().unwrap(),
        t["test_models"].as_u64().unwrap(),
    );
    assert!(n_train >= 6 && n_test >= 2, "{t}");
    for f in [
        "meta.safetensors",
        "meta.json",
        "train.json",
        "baseline_weight_stats.json",
    ] {
        assert!(meta.join(f).is_file(), "{f}");
    }
    // Statistics tokens (one per CNN tensor) and their read-out are in the saved shape.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(meta.join("meta.json")).unwrap()).unwrap();
    assert!(
        saved["arch"]["stat_tokens"].as_u64().unwrap() > 0,
        "{saved}"
    );
    assert_eq!(saved["arch"]["stats_readout"], true);
    let e = json_of(&lantern(&[
        "backdoor", "meta", "eval", "--json", "--meta", meta_s, "--zoo", zoo_s, "--tta", "2",
    ]));
    // Only the models that neither trained nor validated are scored.
    assert_eq!(e["n"].as_u64().unwrap(), n_test);
    let auroc = e["auroc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auroc));
    assert!(e["by_family"]["corner"]["n"].as_u64().unwrap() >= 2);
    assert!(e["baselines"]["weight_stats"]["auroc"].as_f64().is_some());
    assert!(e["baselines"]["mntd"]["auroc"].as_f64().is_some());
    let report = meta.join("report");
    assert!(std::fs::read_to_string(report.join("table.md"))
        .unwrap()
        .contains("meta-model"));
    assert!(std::fs::read_to_string(report.join("roc.svg"))
        .unwrap()
        .starts_with("<svg"));
    let lines: Vec<Value> = std::fs::read_to_string(report.join("scores.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n_test);
    for key in ["meta-model", "weight-stats", "mntd-queries", "clean_acc"] {
        assert!(lines.iter().all(|l| l[key].is_number()), "{key}");
    }

    // A zoo of another architecture (wider CNNs) is refused with a clear error.
    let wide = tmp.path().join("wide");
    small_zoo(wide.to_str().unwrap(), "2", "8");
    let err = err_of(&lantern(&[
        "backdoor",
        "meta",
        "eval",
        "--meta",
        meta_s,
        "--zoo",
        wide.to_str().unwrap(),
    ]));
    assert!(err.contains("shape") && err.contains("index.json"), "{err}");

    // A zoo index naming a missing model file: the error names the file.
    let index: Value =
        serde_json::from_slice(&std::fs::read(zoo.join("index.json")).unwrap()).unwrap();
    let first = index["models"][0]["file"].as_str().unwrap().to_string();
    std::fs::remove_file(zoo.join(&first)).unwrap();
    let err = err_of(&lantern(&[
        "backdoor", "meta", "train", "--zoo", zoo_s, "--out", meta_s,
    ]));
    assert!(err.contains(&first) && err.contains("missing"), "{err}");
}
