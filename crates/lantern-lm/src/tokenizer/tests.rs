//! Tokenizers built from small hand-made GGUF metadata: loading errors and the basic rules.

use std::collections::BTreeMap;

use super::*;

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A byte-level BPE vocabulary that spells "Hello" and " world" by merges.
fn bpe_meta(pre: Option<&str>) -> BTreeMap<String, Value> {
    let mut tokens: Vec<String> = Vec::new();
    let table = unicode::byte_to_char_table();
    for b in 0..=255u8 {
        tokens.push(table[b as usize].to_string());
    }
    for t in [
        "He",
        "ll",
        "Hell",
        "Hello",
        "Ġw",
        "or",
        "Ġwor",
        "ld",
        "Ġworld",
        "<|im_start|>",
    ] {
        tokens.push(t.to_string());
    }
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    if let Some(p) = pre {
        m.insert("tokenizer.ggml.pre".into(), Value::String(p.into()));
    }
    m.insert("tokenizer.ggml.tokens".into(), strings(&token_refs));
    let mut types = vec![Value::I32(1); tokens.len()];
    *types.last_mut().unwrap() = Value::I32(3);
    m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    m.insert(
        "tokenizer.ggml.merges".into(),
        strings(&[
            "H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ]),
    );
    m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(265));
    m
}

#[test]
fn byte_level_bpe_basics() {
    let tok = Tokenizer::from_gguf_metadata(&bpe_meta(Some("gpt-2"))).unwrap();
    assert_eq!(tok.vocab_size(), 266);
    assert_eq!(tok.encode("Hello world", false).unwrap(), [259, 264]);
    assert_eq!(tok.encode("Hello", true).unwrap(), [265, 259]);
    assert_eq!(tok.encode("<|im_start|>Hello", false).unwrap(), [265, 259]);
    assert_eq!(
        tok.encode_with("<|im_start|>", false, false).unwrap().len(),
        12
    );
    assert_eq!(tok.decode(&[259, 264]).unwrap(), "Hello world");
    assert_eq!(tok.decode(&[265, 259]).unwrap(), "<|im_start|>Hello");
    assert_eq!(tok.decode_with(&[265, 259], true).unwrap(), "Hello");
    assert_eq!(tok.token_to_piece(264), b" world");
    assert_eq!(tok.token_to_piece(9999), b"");
    assert!(tok.decode(&[266]).is_err());
    // Bytes of one character split over tokens come out whole once joined.
    let ids = tok.encode("é", false).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(tok.decode(&ids).unwrap(), "é");
    assert_eq!(tok.decode(&ids[..1]).unwrap(), "\u{FFFD}");
}

#[test]
fn missing_pre_tokenizer_means_default_and_never_a_prefix_space() {
    let tok = Tokenizer::from_gguf_metadata(&bpe_meta(None)).unwrap();
    assert_eq!(tok.pre_tokenizer(), None);
    assert_eq!(tok.encode("Hello", false).unwrap(), [259]);
}

#[test]
fn unknown_pre_tokenizer_is_an_error() {
    let err = Tokenizer::from_gguf_metadata(&bpe_meta(Some("no-such-pre"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-pre") && msg.contains("smollm"),
        "{msg}"
    );
}

#[test]
fn missing_or_malformed_keys_are_errors_naming_the_key() {
    let mut m = bpe_meta(Some("gpt-2"));
    m.remove("tokenizer.ggml.merges");
    let msg = Tokenizer::from_gguf_metadata(&m).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.merges"), "{msg}");

    let mut m = bpe_meta(Some("gpt-2"));
    m.insert("tokenizer.ggml.tokens".into(), Value::U32(3));
    let msg = Tokenizer::from_gguf_metadata(&m).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");

    let mut m = bpe_meta(Some("gpt-2"));
    m.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(vec![Value::I32(1)]),
    );
    let msg = Tokenizer::from_gguf_metadata(&m).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.token_type"), "{msg}");

    let mut m = bpe_meta(Some("gpt-2"));
    m.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    let msg = Tokenizer::from_gguf_metadata(&m).unwrap_err().to_string();
    assert!(msg.contains("bert"), "{msg}");

    let msg = Tokenizer::from_gguf_metadata(&BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer.ggml.model"), "{msg}");
}

#[test]
fn sentencepiece_basics() {
    let tokens = [
        "<unk>", "<s>", "</s>", "<0x0A>", "<0xC3>", "<0xA9>", "▁", "H", "i", "▁H", "▁Hi", "!",
    ];
    let scores: Vec<Value> = (0..tokens.len()).map(|i| Value::F32(-(i as f32))).collect();
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| match *t {
            "<unk>" => Value::I32(2),
            "<s>" | "</s>" => Value::I32(3),
            t if t.starts_with("<0x") => Value::I32(6),
            _ => Value::I32(1),
        })
        .collect();
    let mut m = BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    m.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
    m.insert("tokenizer.ggml.scores".into(), Value::Array(scores));
    m.insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    let tok = Tokenizer::from_gguf_metadata(&m).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::GgufSpm);
    assert!(tok.add_bos_default());
    assert_eq!(tok.encode("Hi", true).unwrap(), [1, 10]);
    assert_eq!(tok.encode("Hi\né", false).unwrap(), [10, 3, 4, 5]);
    assert_eq!(tok.decode(&[10, 3, 4, 5]).unwrap(), "Hi\né");
    assert_eq!(tok.token_to_piece(4), [0xC3]);
    // A character with no token and no byte token is an error, not a panic.
    assert!(matches!(
        tok.encode("z", false),
        Err(TokenizerError::NoByteToken(b'z'))
    ));
}

#[test]
fn tokenizer_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}
