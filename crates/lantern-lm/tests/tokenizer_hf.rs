//! Hugging Face `tokenizer.json` tokenizers (through the `tokenizers` crate) against the GGUF
//! tokenizers:
//! - GPT-2's real `tokenizer.json` (the `gpt2-tokenizer` asset) gives llama.cpp's gpt-2 test
//!   vectors, like the GGUF gpt-2 vocabulary;
//! - a `tokenizer.json` built from the SmolLM2 GGUF's vocabulary and merges with SmolLM2's
//!   Hugging Face pre-tokenizer (digits isolated, then GPT-2 byte-level) agrees with the GGUF
//!   tokenizer on every llama.cpp fixture text;
//! - the same for gpt-neox, whose Hugging Face pre-tokenizer (GPT-2 byte-level) is not quite
//!   llama.cpp's `default` split: they agree on plain prose, and differ (as llama.cpp does
//!   from Hugging Face) on contractions, numbers and a space before punctuation; the
//!   llama.cpp fixture test checks gpt-neox against llama.cpp itself.

mod tokenizer_common;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::{Tokenizer, TokenizerKind};
use tokenizer_common::{
    byte_level, gpt2_tokenizer_json, load_vocab, read_vectors, smollm2_gguf, smollm2_pre_tokenizer,
    tokenizer_json_from_gguf, vocab_gguf, LlamaCppIds,
};

#[test]
fn gpt2_tokenizer_json_gives_the_gpt2_vectors() {
    let hf = Tokenizer::from_file(&gpt2_tokenizer_json()).expect("load tokenizer.json");
    let gguf = load_vocab("gpt-2");
    assert_eq!(hf.kind(), TokenizerKind::HuggingFace);
    assert_eq!(hf.vocab_size(), 50257);
    assert_eq!(hf.bos_id(), Some(50256));
    assert_eq!(hf.eos_ids(), vec![50256]);
    assert_eq!(hf.token_text(15496), Some("Hello"));
    assert_eq!(hf.token_id("ĠHello"), Some(18435));
    let mut failures = Vec::new();
    for (text, want) in read_vectors("gpt-2") {
        let got = hf.encode_with(&text, false, false).expect("encode");
        let from_gguf = gguf.encode_with(&text, false, false).expect("encode");
        if got != want || from_gguf != want {
            failures.push(format!(
                "{text:?}: want {want:?}, tokenizer.json {got:?}, gguf {from_gguf:?}"
            ));
        }
        assert_eq!(hf.decode(&got).unwrap(), text);
        let pieces: Vec<u8> = got.iter().flat_map(|&id| hf.token_to_piece(id)).collect();
        assert_eq!(pieces, text.as_bytes());
        let gguf_pieces: Vec<u8> = got.iter().flat_map(|&id| gguf.token_to_piece(id)).collect();
        assert_eq!(gguf_pieces, pieces);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Special tokens: parsed by default, plain text when asked.
    assert_eq!(
        hf.encode("a<|endoftext|>b", true).unwrap(),
        [50256, 64, 50256, 65]
    );
    assert_eq!(
        hf.encode_with("a<|endoftext|>b", false, false).unwrap(),
        gguf.encode_with("a<|endoftext|>b", false, false).unwrap()
    );
    assert_eq!(hf.decode_with(&[64, 50256, 65], true).unwrap(), "ab");
}

#[test]
fn smollm2_agrees_with_its_hugging_face_tokenizer() {
    let path = smollm2_gguf();
    let json = tokenizer_json_from_gguf(&path, smollm2_pre_tokenizer());
    let hf = Tokenizer::from_json(&json, None).expect("tokenizer.json");
    let gguf = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let fx = LlamaCppIds::load();
    let mut failures = Vec::new();
    for parse_special in [false, true] {
        for text in &fx.texts {
            let a = hf.encode_with(text, false, parse_special).unwrap();
            let b = gguf.encode_with(text, false, parse_special).unwrap();
            if a != b {
                failures.push(format!(
                    "{parse_special} {text:?}\n  hf   {a:?}\n  gguf {b:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gpt_neox_agrees_with_hugging_face_on_prose() {
    let path = vocab_gguf("gpt-neox");
    let hf = Tokenizer::from_json(&tokenizer_json_from_gguf(&path, byte_level()), None).unwrap();
    let gguf = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let prose = [
        "Hello world",
        " Hello world",
        "Hello  world   with    many     spaces",
        "line one\nline two\n\nline four\n\n\n",
        "The quick brown fox jumps over the lazy dog; is it?",
        "café naïve Ünïcödé résumé 中文字符 🦙🔥",
        "def f(x):\n    return x\n",
    ];
    for text in prose {
        let a = hf.encode_with(text, false, true).unwrap();
        let b = gguf.encode_with(text, false, true).unwrap();
        assert_eq!(a, b, "{text:?}");
        assert_eq!(gguf.decode(&b).unwrap(), text);
    }
    // Where llama.cpp's `default` split differs from Hugging Face's byte-level one: it cuts
    // punctuation (apostrophes included) and digit triples out first.
    for text in ["12345", "It's", " 42", "a ,b"] {
        let b = gguf.encode(text, false).unwrap();
        assert_ne!(hf.encode(text, false).unwrap(), b, "{text:?}");
        assert_eq!(gguf.decode(&b).unwrap(), text);
    }
}
