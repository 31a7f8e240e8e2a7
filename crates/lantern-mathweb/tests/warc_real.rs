//! The WARC reader on a real crawl: Debian's wget records scipy documentation pages served from a
//! local HTTP server thread, and everything served must come back out, byte for byte.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// Throughput on a crawl of ~1000 scipy pages (per-record gzip, as Common Crawl writes, and the
/// same uncompressed). `cargo test --release -p lantern-mathweb --test warc_real -- --ignored
/// --nocapture`.
#[test]
#[ignore = "timing; run in release with --nocapture"]
fn throughput_of_html_pages() {
    use flate2::write::GzEncoder;
    let root = scipy_html();
    let dir = root.join("reference/generated");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .collect();
    names.sort();
    names.truncate(1000);
    let tmp = tempfile::tempdir().unwrap();
    let gz_path = tmp.path().join("big.warc.gz");
    let plain_path = tmp.path().join("big.warc");
    let mut gz_file = std::io::BufWriter::new(std::fs::File::create(&gz_path).unwrap());
    let mut plain_file = std::io::BufWriter::new(std::fs::File::create(&plain_path).unwrap());
    for (i, path) in names.iter().enumerate() {
        let body = std::fs::read(path).unwrap();
        let mut message = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        message.extend_from_slice(&body);
        let mut record = format!(
            "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://docs.test/{i}.html\r\n\
             WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:{i}>\r\n\
             Content-Type: application/http; msgtype=response\r\nContent-Length: {}\r\n\r\n",
            message.len()
        )
        .into_bytes();
        record.extend_from_slice(&message);
        record.extend_from_slice(b"\r\n\r\n");
        plain_file.write_all(&record).unwrap();
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&record).unwrap();
        gz_file.write_all(&enc.finish().unwrap()).unwrap();
    }
    gz_file.flush().unwrap();
    plain_file.flush().unwrap();
    drop((gz_file, plain_file));
    let raw = std::fs::metadata(&plain_path).unwrap().len() as f64 / 1e6;
    // Baseline: bare gzip decompression of the same file, nothing parsed.
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let file =
            std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&gz_path).unwrap());
        std::io::copy(
            &mut flate2::read::MultiGzDecoder::new(file),
            &mut std::io::sink(),
        )
        .unwrap();
        best = best.min(start.elapsed().as_secs_f64());
    }
    eprintln!(
        "baseline MultiGzDecoder to a sink: {best:.3} s = {:.0} MB/s uncompressed",
        raw / best
    );
    for path in [&gz_path, &plain_path] {
        let size = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
        let mut best = f64::MAX;
        let mut bytes = 0;
        for _ in 0..3 {
            let start = Instant::now();
            bytes = html_pages(path)
                .unwrap()
                .map(|p| p.unwrap().body.len())
                .sum::<usize>();
            best = best.min(start.elapsed().as_secs_f64());
        }
        eprintln!(
            "{}: {} pages, {size:.1} MB on disk, {raw:.1} MB of WARC, {:.1} MB of HTML: {best:.3} s = \
             {:.0} MB/s uncompressed WARC ({:.0} MB/s of file)",
            path.file_name().unwrap().to_string_lossy(),
            names.len(),
            bytes as f64 / 1e6,
            raw / best,
            size / best
        );
    }
}
