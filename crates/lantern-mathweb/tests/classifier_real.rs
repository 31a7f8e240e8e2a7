//! Trains the MathScore classifier on real data and checks it on a held-out 20%.
//!
//! Math: CHAMP competition problems, solutions, hints and concepts (their `@@..@@` math made
//! `$..$`), CHAMP model answers (math mostly without delimiters), and the paragraphs of SciPy
//! documentation pages with `\(..\)` math. Not math: State of the Union speeches cut into
//! paragraph-sized chunks, Jane Austen paragraphs, and paragraphs of SciPy pages without math.
//! The HTML handling here is a crude tag strip, enough for a test.

mod common;
use common::files_with;

use std::time::Instant;

use lantern_mathweb::classifier::{
    evaluate, normalize, split_holdout, Classifier, TrainParams, THRESHOLD_WITH_MATH,
};

/// At most this many examples from each source, taken evenly spaced (keeps the test fast).
const PER_SOURCE: usize = 1500;

/// Every `len / k`-th element so that at most `k` remain, spread over the whole input.
fn spread<T>(v: Vec<T>, k: usize) -> Vec<T> {
    let step = v.len().div_ceil(k).max(1);
    v.into_iter().step_by(step).collect()
}

/// CHAMP's `@@math@@` markup as Markdown `$math$`.
fn champ_math(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, part) in s.split("@@").enumerate() {
        if i > 0 {
            out.push('$');
        }
        out.push_str(part);
    }
    out
}

/// CHAMP examples: problem + solution steps, each hint and concept, and one model answer per
/// problem.
fn champ() -> Vec<String> {
    let path = lantern_assets::fetch("champ").expect("champ asset");
    let bytes = std::fs::read(&path).expect("champ v0.json");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("champ json");
    let raw = |x: &serde_json::Value| x["_raw_text"].as_str().map(champ_math);
    let mut out = Vec::new();
    for p in v["problems"].as_object().expect("problems").values() {
        let mut text = raw(p).unwrap_or_default();
        for step in p["solution"]["steps"].as_array().into_iter().flatten() {
            text.push(' ');
            text.push_str(&raw(step).unwrap_or_default());
        }
        out.push(text);
        let answer = p["conversations"]
            .as_object()
            .and_then(|c| c.values().next())
            .and_then(|c| c["messages"].as_array())
            .and_then(|m| m.last())
            .and_then(|m| m["text"].as_str());
        out.extend(answer.map(str::to_string));
    }
    for key in ["hints", "concepts"] {
        let items = v[key].as_object().expect("hints/concepts");
        out.extend(items.values().filter_map(raw));
    }
    out.retain(|t| t.split_whitespace().count() >= 4);
    out
}

/// Decodes the few HTML entities Sphinx pages use.
fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#8217;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// Text of an HTML fragment with tags removed.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode_entities(&out)
}

/// The `<p>` paragraphs of a page as text, with `\(..\)` made `$..$` and `\[..\]` `$$..$$`.
fn html_paragraphs(html: &str) -> Vec<String> {
    html.split("<p>")
        .skip(1)
        .filter_map(|rest| rest.split("</p>").next())
        .map(|p| {
            strip_tags(p)
                .replace("\\(", "$")
                .replace("\\)", "$")
                .replace("\\[", "$$")
                .replace("\\]", "$$")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|p| p.split_whitespace().count() >= 6)
        .collect()
}

/// SciPy paragraphs: (with math from pages with math, all paragraphs of pages without).
fn scipy() -> (Vec<String>, Vec<String>) {
    let dir = lantern_assets::fetch("scipy-doc").expect("scipy-doc asset");
    let (mut math, mut plain) = (Vec::new(), Vec::new());
    // Every 3rd page: plenty of paragraphs, a third of the reading.
    for path in files_with(&dir, ".html").into_iter().step_by(3) {
        let Ok(html) = std::fs::read_to_string(&path) else {
            continue;
        };
        let page_has_math = html.contains("\\(") || html.contains("\\[");
        let paras = html_paragraphs(&html);
        if page_has_math {
            math.extend(paras.into_iter().filter(|p| p.contains('$')));
        } else {
            plain.extend(paras);
        }
    }
    (math, plain)
}

/// SOTU speeches (one line each) cut into 100-word chunks.
fn sotu() -> Vec<String> {
    let dir = lantern_assets::fetch("sotu").expect("sotu asset");
    let mut out = Vec::new();
    for path in files_with(&dir, ".txt") {
        let text = std::fs::read_to_string(&path).expect("speech");
        let words: Vec<&str> = text.split_whitespace().collect();
        out.extend(words.chunks(100).map(|c| c.join(" ")));
    }
    out
}

/// Austen paragraphs of at least 20 words.
fn austen() -> Vec<String> {
    let dir = lantern_assets::fetch("austen").expect("austen asset");
    let mut out = Vec::new();
    for path in files_with(&dir, ".txt") {
        let text = std::fs::read_to_string(&path).expect("novel");
        out.extend(
            lantern_mathweb::classifier::paragraphs(&text)
                .into_iter()
                .filter(|p| p.split_whitespace().count() >= 20),
        );
    }
    out
}

#[test]
fn learns_math_vs_prose_on_real_data() {
    let start = Instant::now();
    let (scipy_math, scipy_plain) = scipy();
    let sources: Vec<(&str, Vec<String>, bool)> = vec![
        ("champ", champ(), true),
        ("scipy math", scipy_math, true),
        ("sotu", sotu(), false),
        ("austen", austen(), false),
        ("scipy plain", scipy_plain, false),
    ];
    let mut data = Vec::new();
    for (name, texts, label) in sources {
        let n = texts.len();
        let texts = spread(texts, PER_SOURCE);
        eprintln!("{name}: {} of {n} examples (math = {label})", texts.len());
        assert!(texts.len() >= 80, "{name}: only {} examples", texts.len());
        data.extend(texts.into_iter().map(|t| (t, label)));
    }
    eprintln!("data loaded in {:.1} s", start.elapsed().as_secs_f64());

    let params = TrainParams::default();
    let (train, held) = split_holdout(data, 0.2, params.seed);
    let t = Instant::now();
    let model = Classifier::train(&train, &params).expect("train");
    let train_secs = t.elapsed().as_secs_f64();
    let train_mb = train.iter().map(|(s, _)| s.len()).sum::<usize>() as f64 / 1e6;
    eprintln!(
        "trained on {} examples ({train_mb:.1} MB) x {} epochs in {train_secs:.2} s",
        train.len(),
        params.epochs
    );

    let t = Instant::now();
    let eval = evaluate(&model, &held);
    let secs = t.elapsed().as_secs_f64();
    let held_mb = held.iter().map(|(s, _)| s.len()).sum::<usize>() as f64 / 1e6;
    eprintln!("held out: {eval:?}");
    eprintln!(
        "scoring (rayon): {held_mb:.2} MB in {secs:.3} s = {:.1} MB/s",
        held_mb / secs
    );
    let t = Instant::now();
    let total: f32 = held.iter().map(|(s, _)| model.score(s)).sum();
    let secs1 = t.elapsed().as_secs_f64();
    eprintln!(
        "scoring (1 thread): {:.1} MB/s (checksum {total:.3})",
        held_mb / secs1
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mathscore.bin");
    model.save(&path).expect("save");
    let size = std::fs::metadata(&path).expect("metadata").len();
    eprintln!("model file: {size} bytes");
    assert!(size < 2_500_000, "model file {size} bytes");
    let back = Classifier::load(&path).expect("load");
    for (s, _) in held.iter().take(50) {
        assert_eq!(back.score(s).to_bits(), model.score(s).to_bits());
    }

    assert!(eval.auroc >= 0.95, "{eval:?}");
    assert!(eval.accuracy >= 0.9, "{eval:?}");

    // The OpenWebMath thresholds behave sensibly on obvious cases.
    let math = "Let $G$ be a finite group and $H \\le G$. By Lagrange's theorem $|H|$ divides \
                $|G|$, so the index $[G:H] = |G|/|H|$ is an integer.";
    let prose = "The committee met on Tuesday to discuss the budget for the new library and \
                 agreed to reconvene after the holidays.";
    assert!(
        model.score(math) >= THRESHOLD_WITH_MATH,
        "{}",
        model.score(math)
    );
    assert!(model.score(prose) < 0.5, "{}", model.score(prose));
    assert!(normalize(math).contains("<math>"));
}
