//! The WARC reader on a real crawl: Debian's wget records scipy documentation pages served from a
//! local HTTP server thread, and everything served must come back out, byte for byte.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use lantern_mathweb::warc::{html_pages, WarcReader};

mod common;
use common::recorder::record_with_wget;

/// The scipy documentation's html folder (cached asset).
fn scipy_html() -> PathBuf {
    lantern_assets::fetch("scipy-doc").expect("the scipy-doc asset is needed for this test")
}

/// The first `n` pages (sorted) under `reference/generated/` that contain math, as paths
/// relative to `root`.
fn math_pages(root: &Path, n: usize) -> Vec<String> {
    let dir = root.join("reference/generated");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".html"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| format!("reference/generated/{name}"))
        .filter(|rel| {
            let bytes = std::fs::read(root.join(rel)).unwrap();
            memchr::memmem::find(&bytes, b"class=\"math").is_some()
        })
        .take(n)
        .collect()
}

#[test]
fn wget_recorded_scipy_pages_read_back_exactly() {
    let root = scipy_html();
    let pages = math_pages(&root, 30);
    assert_eq!(
        pages.len(),
        30,
        "not enough math pages under {}",
        root.display()
    );
    let mut files = pages.clone();
    files.push("_static/basic.css".to_string());
    files.push("_static/file.png".to_string());
    let dir = tempfile::tempdir().unwrap();
    let (warc, port) = record_with_wget(&root, &files, dir.path());

    let mut reader = html_pages(&warc).unwrap();
    let got: BTreeMap<String, _> = reader
        .by_ref()
        .map(|p| p.unwrap_or_else(|e| panic!("{e}")))
        .map(|p| (p.url.clone(), p))
        .collect();
    let stats = *reader.stats();
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert_eq!(stats.html, 30, "{stats:?}");
    assert_eq!(stats.non_html, 2, "{stats:?}");
    assert_eq!(stats.responses, 32, "{stats:?}");
    // warcinfo, one request per response, wget's own metadata/resource records.
    assert!(stats.non_response >= 33, "{stats:?}");

    for rel in &pages {
        let url = format!("http://127.0.0.1:{port}/{rel}");
        let page = got
            .get(&url)
            .unwrap_or_else(|| panic!("{url} not read back"));
        let served = std::fs::read(root.join(rel)).unwrap();
        assert!(
            page.body == served,
            "{url}: body differs from the served file"
        );
        assert_eq!(page.http_status, 200);
        assert_eq!(page.http_content_type_charset.as_deref(), Some("utf-8"));
        assert!(!page.date.is_empty());

        // The offset is the gzip member start: a fresh decoder there yields this very record.
        let file = std::fs::read(&warc).unwrap();
        let mut member = Vec::new();
        flate2::read::GzDecoder::new(&file[page.warc_offset as usize..])
            .read_to_end(&mut member)
            .unwrap();
        assert!(
            member.starts_with(b"WARC/1"),
            "{url}: offset {} is no record",
            page.warc_offset
        );
        assert!(memchr::memmem::find(&member, url.as_bytes()).is_some());
        let record = WarcReader::open_at(&warc, page.warc_offset)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(record.warc_type, "response");
        assert_eq!(record.target_uri.as_deref(), Some(url.as_str()));
        assert!(record.gzip_member);
        assert_eq!(record.offset, page.warc_offset);
    }

    // wget writes one gzip member per record, and every record is found at one.
    let records: Vec<_> = WarcReader::open(&warc)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(records.iter().all(|r| r.gzip_member));
    assert_eq!(records[0].warc_type, "warcinfo");
    assert_eq!(
        records.iter().filter(|r| r.warc_type == "request").count(),
        32
    );
}
