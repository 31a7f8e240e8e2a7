//! Checks the estimated model against a naive, independent implementation of interpolated
//! modified Kneser-Ney, and checks normalisation and the file round trips.

use std::collections::{HashMap, HashSet};

use super::*;

/// A deterministic pseudo-random corpus over a small vocabulary with skewed frequencies, so
/// that every order has n-grams seen 1, 2, 3 and 4 times.
fn corpus() -> Vec<String> {
    let words = [
        "the", "a", "x", "=", "of", "y", "+", "1", "2", "is", "and", "\\frac",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    (0..400)
        .map(|_| {
            let len = 1 + next(8);
            let mut s: Vec<&str> = Vec::new();
            for _ in 0..len {
                // Squaring skews towards the first words.
                let r = next(words.len() * words.len());
                s.push(words[(r as f64).sqrt() as usize % words.len()]);
            }
            s.join(" ")
        })
        .collect()
}

/// Interpolated modified Kneser-Ney computed the slow, obvious way from the sentences.
struct Naive {
    order: usize,
    adj: HashMap<Vec<String>, u64>,
    vocab: Vec<String>,
    discounts: Vec<Discount>,
}

impl Naive {
    fn new(order: usize, docs: &[String]) -> Naive {
        let mut raw: HashMap<Vec<String>, u64> = HashMap::new();
        let mut vocab: HashSet<String> = [UNK, EOS].iter().map(|s| s.to_string()).collect();
        for d in docs {
            for s in sentences(d) {
                let mut t = vec![BOS.to_string()];
                t.extend(s.iter().map(|w| w.to_string()));
                t.push(EOS.to_string());
                vocab.extend(t[1..].iter().cloned());
                for end in 1..t.len() {
                    for n in 1..=order.min(end + 1) {
                        *raw.entry(t[end + 1 - n..=end].to_vec()).or_default() += 1;
                    }
                }
            }
        }
        // Adjusted counts: raw at the top order and after <s>, else distinct left neighbours.
        let mut adj: HashMap<Vec<String>, u64> = HashMap::new();
        for (g, &c) in &raw {
            if g.len() == order || g[0] == BOS {
                *adj.entry(g.clone()).or_default() += c;
            }
            if g.len() > 1 && g[1] != BOS {
                *adj.entry(g[1..].to_vec()).or_default() += 1;
            }
        }
        let discounts = (1..=order)
            .map(|n| {
                let mut coc = [0u64; 4];
                for (_, &a) in adj.iter().filter(|(g, _)| g.len() == n) {
                    if (1..=4).contains(&a) {
                        coc[a as usize - 1] += 1;
                    }
                }
                Discount::from_count_of_counts(coc).unwrap_or(Discount {
                    d: KneserNey::default().fallback,
                    fallback: true,
                })
            })
            .collect();
        Naive {
            order,
            adj,
            vocab: vocab.into_iter().collect(),
            discounts,
        }
    }

    fn adjusted(&self, g: &[String]) -> u64 {
        self.adj.get(g).copied().unwrap_or(0)
    }

    fn prob(&self, h: &[String], w: &str) -> f64 {
        let h = &h[h.len().saturating_sub(self.order - 1)..];
        let lower = if h.is_empty() {
            1.0 / self.vocab.len() as f64
        } else {
            self.prob(&h[1..], w)
        };
        let d = &self.discounts[h.len()];
        let (mut total, mut discounted) = (0u64, 0.0);
        for v in &self.vocab {
            let mut g = h.to_vec();
            g.push(v.clone());
            let a = self.adjusted(&g);
            total += a;
            discounted += d.for_count(a);
        }
        if total == 0 {
            return lower;
        }
        let mut g = h.to_vec();
        g.push(w.to_string());
        let a = self.adjusted(&g);
        (a as f64 - d.for_count(a)) / total as f64 + discounted / total as f64 * lower
    }
}

fn model(order: usize, docs: &[String]) -> Model {
    let mut counts = NgramCounts::new(order).unwrap();
    counts.add_documents(docs);
    KneserNey::estimate(order, &counts).unwrap()
}

/// Contexts of length 0..=2 over the vocabulary and `<s>`, plus unseen words.
fn contexts(m: &Model) -> Vec<Vec<String>> {
    let mut firsts: Vec<String> = m.words().filter(|w| *w != EOS).map(str::to_owned).collect();
    firsts.push("never-seen".into());
    let mut out = vec![vec![]];
    for a in &firsts {
        out.push(vec![a.clone()]);
        for b in firsts.iter().filter(|b| *b != BOS) {
            out.push(vec![a.clone(), b.clone()]);
        }
    }
    out
}

#[test]
fn matches_the_naive_interpolated_estimate() {
    let docs = corpus();
    let m = model(3, &docs);
    let naive = Naive::new(3, &docs);
    // The 13-word vocabulary is too small for unigram discounts; the other orders have them.
    assert!(
        m.discounts()[1..].iter().all(|d| !d.fallback),
        "{:?}",
        m.discounts()
    );
    for (got, want) in m.discounts().iter().zip(&naive.discounts) {
        assert_eq!(got.d, want.d);
    }
    for h in contexts(&m) {
        let hs: Vec<&str> = h.iter().map(String::as_str).collect();
        for w in m.words().filter(|w| *w != BOS) {
            let got = m.log10_prob(&hs, w);
            let want = naive.prob(&h, w).log10();
            assert!(
                (got - want).abs() < 1e-5,
                "p({w} | {hs:?}) = {got} vs {want}"
            );
        }
    }
}

#[test]
fn every_context_sums_to_one() {
    let m = model(3, &corpus());
    for h in contexts(&m) {
        let hs: Vec<&str> = h.iter().map(String::as_str).collect();
        let sum: f64 = m
            .words()
            .filter(|w| *w != BOS)
            .map(|w| 10f64.powf(m.log10_prob(&hs, w)))
            .sum();
        assert!((sum - 1.0).abs() < 1e-6, "{hs:?}: {sum}");
    }
}

#[test]
fn arpa_and_binary_round_trips() {
    let m = model(3, &corpus());
    let dir = tempfile::tempdir().unwrap();
    let (arpa, bin) = (dir.path().join("m.arpa"), dir.path().join("m.bin"));
    m.write_arpa(&arpa).unwrap();
    m.save(&bin).unwrap();
    let from_arpa = Model::load_arpa(&arpa).unwrap();
    let from_bin = Model::load(&bin).unwrap();
    assert_eq!(from_bin.discounts(), m.discounts());
    for n in 1..=3 {
        assert_eq!(from_arpa.num_ngrams(n), m.num_ngrams(n));
    }
    for h in contexts(&m) {
        let hs: Vec<&str> = h.iter().map(String::as_str).collect();
        for w in m.words().chain(["never-seen"]) {
            let p = m.log10_prob(&hs, w);
            assert_eq!(from_arpa.log10_prob(&hs, w), p, "{hs:?} {w}");
            assert_eq!(from_bin.log10_prob(&hs, w), p, "{hs:?} {w}");
        }
    }
}

#[test]
fn bad_binary_files_are_errors() {
    let m = model(2, &corpus());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    m.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let body = zstd::decode_all(&bytes[8..]).unwrap();
    let truncated = [
        &bytes[..8],
        &zstd::encode_all(&body[..body.len() - 3], 3).unwrap(),
    ]
    .concat();
    for (data, msg) in [
        (&b"nonsense"[..], "magic"),
        (&bytes[..bytes.len() / 2], "decompress"),
        (&truncated, "truncated"),
    ] {
        std::fs::write(&path, data).unwrap();
        let e = Model::load(&path).unwrap_err().to_string();
        assert!(e.contains("m.bin") && e.contains(msg), "{e}");
    }
    let e = Model::load(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn perplexity_counts_end_of_sentence() {
    let m = model(3, &corpus());
    let (sum, n) = m.score_text("the x = 1\n\nthe y");
    assert_eq!(n, 4 + 1 + 2 + 1);
    let direct = m.score_sentence(&["the", "x", "=", "1"]) + m.score_sentence(&["the", "y"]);
    assert!((sum - direct).abs() < 1e-12);
    let ppl = m.perplexity("the x = 1\n\nthe y");
    assert!((ppl - 10f64.powf(-sum / 8.0)).abs() < 1e-9);
    assert!(m.perplexity("  \n").is_nan());
}

#[test]
fn orders_are_checked() {
    assert!(matches!(NgramCounts::new(0), Err(NgramError::Order(0))));
    assert!(NgramCounts::new(MAX_ORDER + 1).is_err());
    let c = NgramCounts::new(2).unwrap();
    assert!(matches!(
        KneserNey::estimate(3, &c),
        Err(NgramError::CountsOrder { .. })
    ));
    // Empty counts still give a (uniform) model.
    let m = KneserNey::estimate(2, &c).unwrap();
    assert!((m.log10_prob(&[], "</s>") - 0.5f64.log10()).abs() < 1e-6);
}
