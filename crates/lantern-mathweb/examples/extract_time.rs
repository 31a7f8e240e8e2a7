//! Times extraction of every .html under a folder; prints the slowest pages.
use std::time::Instant;
fn main() {
    let dir = std::env::args().nth(1).expect("usage: extract_time DIR");
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else if p.extension().is_some_and(|x| x == "html") {
                files.push(p)
            }
        }
    }
    files.sort();
    let mut times = Vec::new();
    let t0 = Instant::now();
    let mut bytes = 0;
    for f in &files {
        let html = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        bytes += html.len();
        let t = Instant::now();
        let _ = lantern_mathweb::extract::extract(&html, &Default::default());
        times.push((t.elapsed().as_secs_f64(), f.clone()));
    }
    let total = t0.elapsed().as_secs_f64();
    times.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    println!(
        "{} pages, {:.1} MB, {:.2} s, {:.0} pages/s, {:.1} MB/s",
        files.len(),
        bytes as f64 / 1e6,
        total,
        files.len() as f64 / total,
        bytes as f64 / 1e6 / total
    );
    for (t, f) in times.iter().take(5) {
        println!("{t:.3} s {}", f.display());
    }
}
