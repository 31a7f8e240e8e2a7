//! Times MinHash signatures for `bench/minhash_speed.py`.
//!
//! `minhash_bench CHUNKS_FILE [--num-perm 128] [--repeat 5]`: one document per line; computes
//! the 5-gram signatures of every line (rayon: `RAYON_NUM_THREADS` sets the cores), best of
//! `--repeat` timed passes after one warm-up, and prints `{"docs", "bytes", "seconds", ...}`.

use std::error::Error;
use std::time::Instant;

use lantern_mathweb::minhash::{MinHasher, DEFAULT_NGRAM, DEFAULT_SEED};

/// The value after `--name`, parsed, or `default`.
fn flag(args: &[String], name: &str, default: usize) -> Result<usize, Box<dyn Error>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: minhash_bench CHUNKS_FILE [--num-perm N] [--repeat K]")?;
    let num_perm = flag(&args, "--num-perm", 128)?;
    let repeat = flag(&args, "--repeat", 5)?.max(1);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let hasher = MinHasher::new(num_perm, DEFAULT_NGRAM, DEFAULT_SEED);
    let mut checksum = hasher
        .signatures(&docs)
        .iter()
        .map(|s| s.first().copied().unwrap_or(0))
        .fold(0u64, |a, b| a ^ b);
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let t = Instant::now();
        let sigs = hasher.signatures(&docs);
        best = best.min(t.elapsed().as_secs_f64());
        checksum ^= sigs.len() as u64;
    }
    println!(
        "{{\"docs\": {}, \"bytes\": {bytes}, \"seconds\": {best}, \"num_perm\": {num_perm}, \
         \"threads\": {}, \"checksum\": {checksum}}}",
        docs.len(),
        rayon::current_num_threads()
    );
    Ok(())
}
