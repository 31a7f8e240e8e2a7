//! Extraction throughput on a list of HTML files (one path per line in the file given as the
//! first argument), single thread, best of `--repeat` passes; prints one JSON object.
//! Used by `bench/extract_speed.py`.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let list = args.next().expect("usage: extract_bench LIST [REPEAT]");
    let repeat: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3);
    let paths: Vec<String> = std::fs::read_to_string(&list)
        .expect("reading the list")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let pages: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).expect("reading a page")).into_owned())
        .collect();
    let bytes: usize = pages.iter().map(String::len).sum();
    let opts = lantern_mathweb::extract::ExtractOptions::default();
    let mut best = f64::INFINITY;
    let mut chars = 0;
    let mut math = 0;
    for _ in 0..repeat {
        let t = Instant::now();
        chars = 0;
        math = 0;
        for html in &pages {
            if let Ok(e) = lantern_mathweb::extract::extract(html, &opts) {
                chars += e.text.len();
                math += e.math.total();
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"pages\": {}, \"bytes\": {bytes}, \"seconds\": {best}, \"text_bytes\": {chars}, \"formulas\": {math}}}",
        pages.len()
    );
}
