//! Trains an order-4 Kneser-Ney model on every State of the Union speech and reports training
//! time, model size, save/load times and query throughput.
//!
//! `cargo run --release -p lantern-mathweb --example ngram_bench [order]`

use std::time::Instant;

use lantern_mathweb::ngram::{KneserNey, Model, NgramCounts, DEFAULT_ORDER};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let order = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => DEFAULT_ORDER,
    };
    let dir = lantern_assets::fetch("sotu")?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<Vec<_>, _>>()?;
    files.sort_by_key(|e| e.path());
    let docs: Vec<String> = files
        .iter()
        .map(|e| std::fs::read_to_string(e.path()))
        .collect::<Result<_, _>>()?;

    let t = Instant::now();
    let mut counts = NgramCounts::new(order)?;
    for batch in docs.chunks(32) {
        counts.add_documents(batch);
    }
    let counted = t.elapsed();
    let model = KneserNey::estimate(order, &counts)?;
    let total = t.elapsed();
    println!(
        "order {order}: {} tokens, vocab {}, n-grams {:?}",
        counts.tokens(),
        counts.vocab_size(),
        (1..=order).map(|n| model.num_ngrams(n)).collect::<Vec<_>>()
    );
    println!(
        "counting {:.2}s, estimation {:.2}s, total {:.2}s; counts {} MiB, model {} MiB",
        counted.as_secs_f64(),
        (total - counted).as_secs_f64(),
        total.as_secs_f64(),
        counts.heap_bytes() >> 20,
        model.heap_bytes() >> 20
    );
    drop(counts);

    let tmp = std::env::temp_dir().join(format!("ngram_bench_{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let (arpa, bin) = (tmp.join("sotu.arpa"), tmp.join("sotu.bin"));
    let t = Instant::now();
    model.write_arpa(&arpa)?;
    let w_arpa = t.elapsed().as_secs_f64();
    let t = Instant::now();
    model.save(&bin)?;
    let w_bin = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let from_arpa = Model::load_arpa(&arpa)?;
    let r_arpa = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let from_bin = Model::load(&bin)?;
    let r_bin = t.elapsed().as_secs_f64();
    println!(
        "ARPA {} MiB written {w_arpa:.2}s read {r_arpa:.2}s; binary {} MiB written {w_bin:.2}s read {r_bin:.2}s",
        std::fs::metadata(&arpa)?.len() >> 20,
        std::fs::metadata(&bin)?.len() >> 20
    );

    let t = Instant::now();
    let (mut sum, mut n) = (0.0, 0);
    for d in &docs {
        let (s, k) = model.score_text(d);
        sum += s;
        n += k;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "scoring (one thread): {n} tokens in {secs:.2}s = {:.2} M tokens/s; training-set perplexity {:.1}",
        n as f64 / secs / 1e6,
        10f64.powf(-sum / n as f64)
    );
    let same = docs.iter().take(5).all(|d| {
        let (a, b, c) = (
            model.perplexity(d),
            from_arpa.perplexity(d),
            from_bin.perplexity(d),
        );
        (a - b).abs() < 1e-9 * a && (a - c).abs() < 1e-9 * a
    });
    println!("reloaded models agree: {same}");
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
