//! llama.cpp's own tokenizer test vectors: every `ggml-vocab-*.gguf.inp` / `.out` pair of the
//! `vocab-vectors` asset (the llama-cpp-python 0.3.36 sdist's `vendor/llama.cpp/models`) must
//! be reproduced id for id.
//!
//! The vectors were made the way llama.cpp's `tests/test-tokenizer-0.cpp` checks them:
//! `common_tokenize(ctx, text, add_special = false, parse_special = false)`, i.e.
//! `encode_with(text, false, false)` here. The `.inp` file holds the texts separated by
//! `\n__ggml_vocab_test__\n`; the `.out` file one line of space-separated ids per text.
//!
//! The folder comes from `LANTERN_VOCAB_DIR` if set, else from `lantern_assets::fetch`.
//!
//! Not covered, because the tokenizer algorithm is not implemented: `bert-bge` (WordPiece),
//! `nomic-bert-moe` (Unigram / T5), `gemma-4` (SentencePiece-style BPE over raw UTF-8);
//! `aquila` and `baichuan` ship no vectors.

mod tokenizer_common;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::{Tokenizer, TokenizerKind};
use tokenizer_common::{load_vocab as load, read_vectors, vocab_gguf};

/// Checks every vector of `name`; also that decoding gives the text back.
fn check(name: &str) {
    let tok = load(name);
    let vectors = read_vectors(name);
    assert!(vectors.len() > 30, "{name}: only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for (text, want) in &vectors {
        let got = tok.encode_with(text, false, false).expect("encode");
        if &got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
            continue;
        }
        // Byte-level BPE decodes every text back exactly; SentencePiece too, except that the
        // vocabulary may lack characters (then byte fallback still round-trips).
        let back = tok.decode(&got).expect("decode");
        if &back != text {
            failures.push(format!("{text:?}: decodes to {back:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
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
fn starcoder() {
    check("starcoder");
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

#[test]
fn unsupported_vocabularies_are_clear_errors() {
    for (name, what) in [
        ("bert-bge", "bert"),
        ("nomic-bert-moe", "t5"),
        ("gemma-4", "gemma4"),
    ] {
        let gguf = GgufFile::open(vocab_gguf(name)).expect("open vocab gguf");
        let err = Tokenizer::from_gguf(&gguf).expect_err(name).to_string();
        assert!(err.contains(what), "{name}: {err}");
    }
}

#[test]
fn kinds_and_special_ids() {
    let spm = load("llama-spm");
    assert_eq!(spm.kind(), TokenizerKind::GgufSpm);
    assert_eq!(spm.bos_id(), Some(1));
    assert_eq!(spm.eos_ids(), vec![2]);
    assert!(spm.add_bos_default());
    assert_eq!(spm.encode("Hello", true).unwrap(), [1, 15043]);
    assert_eq!(spm.token_to_piece(15043), b" Hello");
    assert_eq!(spm.decode(&[1, 15043]).unwrap(), "<s> Hello");
    assert_eq!(spm.decode_with(&[1, 15043], true).unwrap(), " Hello");

    let gpt2 = load("gpt-2");
    assert_eq!(gpt2.kind(), TokenizerKind::GgufBpe);
    assert_eq!(gpt2.pre_tokenizer(), Some("gpt-2"));
    assert_eq!(gpt2.vocab_size(), 50257);
    assert_eq!(gpt2.bos_id(), Some(50256));
    assert_eq!(gpt2.eos_ids(), vec![50256]);
    assert!(!gpt2.add_bos_default());
    assert_eq!(gpt2.token_text(15496), Some("Hello"));
    // `<|endoftext|>` is parsed as the special token by default, and as text when asked.
    let text = "a<|endoftext|>b";
    assert_eq!(gpt2.encode(text, false).unwrap(), [64, 50256, 65]);
    assert_ne!(
        gpt2.encode_with(text, false, false).unwrap(),
        [64, 50256, 65]
    );
    assert_eq!(gpt2.decode_with(&[64, 50256, 65], true).unwrap(), "ab");
    assert!(gpt2.decode(&[50257]).is_err());
}
