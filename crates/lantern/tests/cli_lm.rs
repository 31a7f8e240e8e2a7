//! The `lantern lm` and `lantern assets` command contracts (JSON keys, files, errors), run as a
//! user would run them.

mod common;

use common::{json_of, lantern};

#[test]
fn info_reports_the_architecture_and_hook_points() {
    let v = json_of(&lantern(&["lm", "info", "--json"]));
    assert_eq!(v["arch"], "llama");
    assert_eq!(v["n_layers"], 30);
    assert_eq!(v["d_model"], 576);
    assert_eq!(v["n_heads"], 9);
    assert_eq!(v["n_kv_heads"], 3);
    assert_eq!(v["vocab_size"], 49152);
    let hooks = v["hook_points"].as_array().unwrap();
    assert_eq!(hooks.len(), 1 + 30 * 6 + 2);
    assert!(hooks.iter().any(|h| h == "blocks.29.mlp_act"));
}

#[test]
fn tokenize_has_no_bos_unless_asked_and_parses_special_tokens() {
    let v = json_of(&lantern(&[
        "lm",
        "tokenize",
        "--text",
        "Hello world",
        "--json",
    ]));
    let ids: Vec<u64> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert!(!ids.is_empty() && ids[0] != 1);
    let v = json_of(&lantern(&[
        "lm",
        "tokenize",
        "--text",
        "Hello world",
        "--bos",
        "--json",
    ]));
    let with_bos: Vec<u64> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], &ids[..]);
    let v = json_of(&lantern(&[
        "lm", "tokenize", "--text", "hi", "--chat", "--json",
    ]));
    let chat: Vec<u64> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(chat[0], 1, "chat template starts with <|im_start|>");
    assert!(chat.contains(&2), "chat template holds <|im_end|>");
}

#[test]
fn logits_writes_raw_f32_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.json");
    let out = dir.path().join("logits.f32");
    std::fs::write(&ids, "[504, 3458, 282, 4649, 314]").unwrap();
    let v = json_of(&lantern(&[
        "lm",
        "logits",
        "--ids-file",
        ids.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["n_tokens"], 5);
    assert_eq!(v["vocab_size"], 49152);
    assert!(v["mean_ce"].as_f64().unwrap() > 0.0);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 5 * 49152 * 4);
}

#[test]
fn perplexity_and_generate_report_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(8),
    )
    .unwrap();
    let v = json_of(&lantern(&[
        "lm",
        "perplexity",
        "--text-file",
        text.to_str().unwrap(),
        "--json",
    ]));
    let ce = v["mean_ce"].as_f64().unwrap();
    assert!((v["perplexity"].as_f64().unwrap() - ce.exp()).abs() < 1e-6);
    assert!(
        ce < 2.0,
        "a repeated sentence should be easy to predict: {ce}"
    );
    let v = json_of(&lantern(&[
        "lm",
        "generate",
        "--prompt",
        "1, 2, 3, 4,",
        "--max-tokens",
        "4",
        "--json",
    ]));
    assert_eq!(v["tokens"], 4);
    assert!(v["text"].as_str().unwrap().contains('5'));
    assert!(v["tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_models_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0\x05").unwrap();
    let out = lantern(&["lm", "info", "--model", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let out = lantern(&["lm", "info", "--model", "no-such-model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-model") && err.contains("not a model"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.json");
    std::fs::write(&ids, serde_json::to_string(&vec![42u32; 8193]).unwrap()).unwrap();
    let dst = dir.path().join("l.f32");
    let out = lantern(&[
        "lm",
        "logits",
        "--ids-file",
        ids.to_str().unwrap(),
        "--out",
        dst.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("longer than the model's context"), "{err}");
}

#[test]
fn assets_list_names_every_asset() {
    let v = json_of(&lantern(&["assets", "list", "--json"]));
    let names: Vec<&str> = v["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for n in [
        "smollm2-135m",
        "sotu",
        "austen",
        "vocab-vectors",
        "gpt2-tokenizer",
        "scipy-doc",
        "sympy-doc",
        "mathjax-samples",
        "lid176",
        "fashion-mnist",
        "mnist-5k",
        "champ",
        "profanity",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}
