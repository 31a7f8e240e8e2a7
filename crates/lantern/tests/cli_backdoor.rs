//! `lantern backdoor zoo` on real Fashion-MNIST: a tiny zoo, its index, resume, bad input.

mod common;

use common::{err_of, json_of, lantern};
use serde_json::Value;

fn tiny_zoo(out: &str) -> Value {
    json_of(&lantern(&[
        "backdoor",
        "zoo",
        "--json",
        "--out",
        out,
        "--models",
        "4",
        "--families",
        "corner",
        "--width",
        "4",
        "--blocks",
        "2",
        "--epochs",
        "6",
        "--batch",
        "64",
        "--train-subset",
        "2000",
        "--test-subset",
        "500",
        "--no-augment",
        "--seed",
        "3",
    ]))
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
