//! Helpers shared by the tokenizer tests: where the real assets are, and llama.cpp's vector
//! files.
#![allow(dead_code)]

use std::path::PathBuf;

use lantern_lm::gguf::{GgufFile, Value};
use lantern_lm::tokenizer::Tokenizer;
use serde_json::json;

/// An asset's main path: `env` if that variable is set (to use files already on disk), else
/// fetched (once) by `lantern_assets`.
pub fn asset(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    lantern_assets::fetch(name).unwrap_or_else(|e| panic!("fetch asset {name}: {e}"))
}

/// The folder of llama.cpp's `ggml-vocab-*` files (`LANTERN_VOCAB_DIR` or `vocab-vectors`).
pub fn vocab_dir() -> PathBuf {
    asset("vocab-vectors", "LANTERN_VOCAB_DIR")
}

/// The SmolLM2-135M-Instruct GGUF (`LANTERN_SMOLLM2_GGUF` or `smollm2-135m`).
pub fn smollm2_gguf() -> PathBuf {
    asset("smollm2-135m", "LANTERN_SMOLLM2_GGUF")
}

/// GPT-2's `tokenizer.json` (`LANTERN_GPT2_TOKENIZER_JSON` or `gpt2-tokenizer`).
pub fn gpt2_tokenizer_json() -> PathBuf {
    asset("gpt2-tokenizer", "LANTERN_GPT2_TOKENIZER_JSON")
}

/// The path of `ggml-vocab-{name}.gguf`.
pub fn vocab_gguf(name: &str) -> PathBuf {
    vocab_dir().join(format!("ggml-vocab-{name}.gguf"))
}

/// The tokenizer of `ggml-vocab-{name}.gguf`.
pub fn load_vocab(name: &str) -> Tokenizer {
    let gguf = GgufFile::open(vocab_gguf(name)).expect("open vocab gguf");
    Tokenizer::from_gguf(&gguf).expect("build tokenizer")
}

/// The texts and expected ids of one vocabulary, read as llama.cpp's
/// `tests/test-tokenizer-0.cpp` reads them: texts separated by `\n__ggml_vocab_test__\n`, one
/// line of ids per text.
pub fn read_vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let base = vocab_gguf(name);
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of tests"
    );
    texts.into_iter().zip(ids).collect()
}

/// The llama.cpp fixture: texts, and per vocabulary the ids without and with special-token
/// parsing.
pub struct LlamaCppIds {
    pub texts: Vec<String>,
    json: serde_json::Value,
}

impl LlamaCppIds {
    pub fn load() -> LlamaCppIds {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tokenizer_fixtures/llamacpp_ids.json"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("read fixture"))
                .expect("parse fixture");
        let texts = json["texts"]
            .as_array()
            .expect("texts")
            .iter()
            .map(|t| t.as_str().expect("text").to_string())
            .collect();
        LlamaCppIds { texts, json }
    }

    /// The expected ids of every text for `vocab`, with or without special-token parsing.
    pub fn ids(&self, vocab: &str, parse_special: bool) -> Vec<Vec<u32>> {
        let mode = if parse_special { "special" } else { "plain" };
        self.json["vocabs"][vocab][mode]
            .as_array()
            .unwrap_or_else(|| panic!("fixture has no {vocab}/{mode}"))
            .iter()
            .map(|l| {
                l.as_array()
                    .expect("id list")
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect()
            })
            .collect()
    }
}

/// The strings of GGUF array `key`.
pub fn strings(g: &GgufFile, key: &str) -> Vec<String> {
    g.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{key}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

/// A `tokenizer.json` with a GGUF file's byte-level BPE vocabulary and merges, control and
/// user-defined tokens as added tokens, and the given pre-tokenizer.
pub fn tokenizer_json_from_gguf(
    path: &std::path::Path,
    pre_tokenizer: serde_json::Value,
) -> Vec<u8> {
    let g = GgufFile::open(path).expect("open gguf");
    let tokens = strings(&g, "tokenizer.ggml.tokens");
    let types: Vec<u64> = g
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .expect("token types")
        .iter()
        .map(|v| v.as_u64().expect("type"))
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, _)| types[i] == 3 || types[i] == 4)
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": types[i] == 4, "special": types[i] == 3})
        })
        .collect();
    let j = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab,
            "merges": strings(&g, "tokenizer.ggml.merges"),
        },
    });
    serde_json::to_vec(&j).unwrap()
}

/// GPT-2's byte-level pre-tokenizer, as `tokenizer.json` writes it.
pub fn byte_level() -> serde_json::Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// SmolLM2's Hugging Face pre-tokenizer: digits one by one, then GPT-2 byte-level.
pub fn smollm2_pre_tokenizer() -> serde_json::Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true},
        byte_level(),
    ]})
}
