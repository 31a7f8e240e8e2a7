//! `lantern mathweb` end to end on a real crawl: scipy and sympy documentation pages served on
//! 127.0.0.1 and recorded by Debian's wget into WARC files, then run through the pipeline
//! (resume, shards, a damaged WARC) and single-page extraction.

mod common;
#[path = "../../lantern-mathweb/tests/common/recorder.rs"]
mod recorder;

use common::{err_of, json_of, lantern};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Sorted HTML pages under `root/sub`, as paths relative to `root`.
fn pages(root: &Path, sub: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(sub))
        .unwrap()
        .map(|e| format!("{sub}/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".html"))
        .collect();
    v.sort();
    v
}

/// Two WARCs of scipy pages: `a` with 24 math pages and 12 without, `b` with 20 more of each.
fn record_crawls(dir: &Path) -> (PathBuf, PathBuf, usize, usize) {
    let root = lantern_assets::fetch("scipy-doc").unwrap();
    let all = pages(&root, "reference/generated");
    let has_math = |p: &String| {
        std::fs::read_to_string(root.join(p))
            .unwrap()
            .contains("class=\"math")
    };
    let math: Vec<String> = all
        .iter()
        .filter(|p| has_math(p))
        .take(44)
        .cloned()
        .collect();
    let plain: Vec<String> = all
        .iter()
        .filter(|p| !has_math(p))
        .take(32)
        .cloned()
        .collect();
    let a: Vec<String> = math[..24].iter().chain(&plain[..12]).cloned().collect();
    let b: Vec<String> = math[24..].iter().chain(&plain[12..]).cloned().collect();
    let da = dir.join("a");
    let db = dir.join("b");
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (wa, _) = recorder::record_with_wget(&root, &a, &da);
    let (wb, _) = recorder::record_with_wget(&root, &b, &db);
    let crawls = dir.join("crawls");
    std::fs::create_dir_all(&crawls).unwrap();
    let (pa, pb) = (crawls.join("a.warc.gz"), crawls.join("b.warc.gz"));
    std::fs::rename(wa, &pa).unwrap();
    std::fs::rename(wb, &pb).unwrap();
    (pa, pb, a.len() + b.len(), 44)
}

/// The documents of every `.jsonl.zst` file in `dir` whose name starts with `prefix`.
fn docs_in(dir: &Path, prefix: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    files.sort();
    for f in files {
        let raw = zstd::decode_all(std::fs::File::open(&f).unwrap()).unwrap();
        for line in String::from_utf8(raw).unwrap().lines() {
            docs.push(serde_json::from_str(line).unwrap());
        }
    }
    docs
}

/// The dataset documents of a finished run.
fn read_docs(out: &Path) -> Vec<Value> {
    docs_in(out, "data-")
}

/// `lantern mathweb dedup STEP --json --out OUT --partitions 3 [--shard S]`.
fn dedup(step: &str, out: &str, shard: Option<&str>) -> Value {
    let mut args = vec![
        "mathweb",
        "dedup",
        step,
        "--json",
        "--out",
        out,
        "--partitions",
        "3",
    ];
    if let Some(s) = shard {
        args.extend(["--shard", s]);
    }
    json_of(&lantern(&args))
}

fn run(input: &[&Path], out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "mathweb",
        "run",
        "--json",
        "--no-perplexity",
        "--out",
        out.to_str().unwrap(),
        "--input",
    ];
    args.extend(input.iter().map(|p| p.to_str().unwrap()));
    args.extend(extra);
    json_of(&lantern(&args))
}

#[test]
fn run_on_recorded_warcs_resumes_and_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, served, math_pages) = record_crawls(tmp.path());
    let crawls = a.parent().unwrap();
    let out = tmp.path().join("out");
    let v = run(&[crawls], &out, &[]);
    assert_eq!(v["inputs"], 2);
    let stages = &v["stages"];
    assert_eq!(
        stages["prefilter"]["docs_in"].as_u64().unwrap() as usize,
        served
    );
    assert_eq!(
        stages["prefilter"]["docs_out"].as_u64().unwrap() as usize,
        math_pages
    );
    let docs = read_docs(&out);
    assert_eq!(docs.len() as u64, v["docs"].as_u64().unwrap());
    // Every math page is extracted; the math score and near-dedup (sibling API pages share most
    // of their text) account for every later drop.
    assert_eq!(
        stages["extract"]["docs_out"].as_u64().unwrap() as usize,
        math_pages
    );
    assert!(
        docs.len() >= math_pages / 2,
        "only {} of {math_pages} math pages kept: {stages:#}",
        docs.len()
    );
    let out_of = |s: &str| stages[s]["docs_out"].as_u64().unwrap();
    assert_eq!(out_of("dedup_near"), docs.len() as u64);
    assert!(
        out_of("math_score") <= out_of("language") && out_of("dedup_near") <= out_of("dedup_exact")
    );
    for d in &docs {
        let url = d["url"].as_str().unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(d["text"].as_str().unwrap().contains('$'), "{url}: no math");
        assert!(d["metadata"]["warc_offset"].is_u64());
        assert!(d["metadata"]["math"]["delimited"].as_u64().unwrap() > 0);
        assert_eq!(d["metadata"]["language"], "en");
        assert!(d["metadata"]["math_score"].as_f64().unwrap() >= 0.17);
    }
    let stats: Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(
        stats["stages"]["prefilter"]["docs_in"].as_u64().unwrap() as usize,
        served
    );

    // Resume: finished inputs are not redone (their stage-1 files are untouched).
    let extracted: Vec<_> = std::fs::read_dir(out.join("extracted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let before: Vec<_> = extracted
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let again = run(&[crawls], &out, &[]);
    assert_eq!(again["docs"], v["docs"]);
    let after: Vec<_> = extracted
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after);

    // Shards: 0/2 and 1/2 then a plain run give the same documents as one run.
    let sharded = tmp.path().join("sharded");
    let s0 = run(&[&a, &b], &sharded, &["--shard", "0/2"]);
    let s1 = run(&[&a, &b], &sharded, &["--shard", "1/2"]);
    assert_eq!(s0["inputs_this_shard"], 1);
    assert_eq!(s1["inputs_this_shard"], 1);
    assert!(!sharded.join("stats.json").exists());
    run(&[&a, &b], &sharded, &[]);
    let urls = |d: &[Value]| {
        d.iter()
            .map(|x| x["url"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(urls(&read_docs(&sharded)), urls(&docs));

    // Stage 2 as four sharded dedup steps keeps the same documents as the one-machine run.
    let sh = sharded.to_str().unwrap();
    for step in ["signatures", "buckets"] {
        for shard in ["0/2", "1/2"] {
            dedup(step, sh, Some(shard));
        }
    }
    let c = dedup("cluster", sh, None);
    assert!(c["removed"].as_u64().unwrap() > 0, "{c}");
    let kept: u64 = ["0/2", "1/2"]
        .iter()
        .map(|s| dedup("filter", sh, Some(s))["docs_out"].as_u64().unwrap())
        .sum();
    assert_eq!(kept as usize, docs.len());
    let dd = docs_in(&sharded.join("deduped"), "");
    assert_eq!(urls(&dd), urls(&docs));

    // A damaged WARC (cut in the middle) is read up to the damage, counted, and the run goes on.
    let bytes = std::fs::read(&a).unwrap();
    let cut = tmp.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::write(cut.join("cut.warc.gz"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let v = run(&[&cut], &tmp.path().join("out-cut"), &[]);
    assert!(v["read_errors"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["stages"]["prefilter"]["docs_in"].as_u64().unwrap() > 0);
}

#[test]
fn extract_prints_the_contract_keys() {
    let root = lantern_assets::fetch("mathjax-samples").unwrap();
    let page = root.join("sample-mml.html");
    let v = json_of(&lantern(&[
        "mathweb",
        "extract",
        "--json",
        page.to_str().unwrap(),
    ]));
    assert_eq!(v["math_count"], 3);
    assert_eq!(v["title"], "MathJax MathML Test Page");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("\\frac{-b \\pm \\sqrt{b^{2} - 4ac}}{2a}"),
        "{v}"
    );
    assert_eq!(v["path"], page.to_str().unwrap());

    let out = lantern(&["mathweb", "extract", root.to_str().unwrap()]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20, "one JSON line per page of the folder");
    assert!(lines
        .iter()
        .all(|l| l["text"].is_string() && l["math_count"].is_u64()));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let e = err_of(&lantern(&[
        "mathweb",
        "run",
        "--input",
        "/no/such/crawl",
        "--out",
        "/tmp/x",
    ]));
    assert!(e.contains("/no/such/crawl"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let e = err_of(&lantern(&[
        "mathweb",
        "run",
        "--input",
        tmp.path().to_str().unwrap(),
        "--out",
        "/tmp/x",
        "--shard",
        "2/2",
    ]));
    assert!(e.contains("2/2"), "{e}");
    let e = err_of(&lantern(&[
        "mathweb",
        "run",
        "--input",
        tmp.path().to_str().unwrap(),
        "--out",
        "/tmp/x",
    ]));
    assert!(e.contains("no WARC or HTML"), "{e}");
}
