//! Prints the extraction of one HTML file (a quick look while developing).
fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: extract_page FILE.html");
    let bytes = std::fs::read(&path).expect("read");
    let html = String::from_utf8_lossy(&bytes);
    match lantern_mathweb::extract::extract(&html, &Default::default()) {
        Ok(e) => {
            println!("# title: {}\n# math: {:?}\n", e.title, e.math);
            println!("{}", e.text);
        }
        Err(e) => eprintln!("{path}: {e}"),
    }
}
