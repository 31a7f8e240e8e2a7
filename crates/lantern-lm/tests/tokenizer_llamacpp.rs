//! Token ids recorded from llama.cpp itself (`tokenizer_fixtures/llamacpp_ids.json`, made by
//! `tokenizer_fixtures/make_llamacpp_ids.py` with llama-cpp-python 0.3.36, the llama.cpp
//! version followed) for 374 texts per vocabulary: hand-written cases (spaces, newlines,
//! digits, accents, CJK, emoji, chat markup, a State of the Union excerpt), llama.cpp's gpt-2
//! test inputs and seeded random mixtures of awkward characters, each with special tokens
//! parsed and not. This covers `gpt-neox` (which has a vocabulary but no test vectors) and the
//! real SmolLM2-135M-Instruct tokenizer.
//!
//! Vocabularies come from `LANTERN_VOCAB_DIR` (else the `vocab-vectors` asset); SmolLM2 from
//! `LANTERN_SMOLLM2_GGUF` (else the `smollm2-135m` asset).

mod tokenizer_common;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::Tokenizer;
use tokenizer_common::{smollm2_gguf, vocab_gguf, LlamaCppIds};

fn check(name: &str) {
    let path = if name == "smollm2" {
        smollm2_gguf()
    } else {
        vocab_gguf(name)
    };
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).expect("open gguf")).expect("tokenizer");
    let fx = LlamaCppIds::load();
    let mut failures = Vec::new();
    for parse_special in [false, true] {
        let want = fx.ids(name, parse_special);
        assert_eq!(want.len(), fx.texts.len());
        for (text, want) in fx.texts.iter().zip(want) {
            let got = tok.encode_with(text, false, parse_special).expect("encode");
            if got != want {
                failures.push(format!(
                    "parse_special={parse_special} {text:?}\n  want {want:?}\n  got  {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} encodings differ from llama.cpp:\n{}",
        failures.len(),
        2 * fx.texts.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2() {
    check("smollm2");
}

#[test]
fn gpt_neox() {
    check("gpt-neox");
}

#[test]
fn gpt_2() {
    check("gpt-2");
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
fn qwen35() {
    check("qwen35");
}

#[test]
fn starcoder() {
    check("starcoder");
}

#[test]
fn falcon() {
    check("falcon");
}

#[test]
fn deepseek_llm() {
    check("deepseek-llm");
}

#[test]
fn deepseek_coder() {
    check("deepseek-coder");
}

#[test]
fn mpt() {
    check("mpt");
}

#[test]
fn refact() {
    check("refact");
}

#[test]
fn command_r() {
    check("command-r");
}

#[test]
fn phi_3() {
    check("phi-3");
}
