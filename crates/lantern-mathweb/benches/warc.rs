//! WARC reading throughput on a crawl of ~1000 scipy documentation pages, written here with one
//! gzip member per record (as Common Crawl writes) and uncompressed, against bare gzip
//! decompression of the same file: `cargo bench -p lantern-mathweb --bench warc`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use lantern_mathweb::warc::html_pages;

/// The scipy documentation's html folder (cached asset).
fn scipy_html() -> PathBuf {
    lantern_assets::fetch("scipy-doc").expect("the scipy-doc asset is needed for this bench")
}

fn main() {
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
