//! Fetches the named assets (all of them with no argument) and prints each main path.
//!
//! `cargo run -p lantern-assets --example fetch -- profanity austen`

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = lantern_assets::catalog()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
    }
    let mut failed = false;
    for name in &names {
        let start = std::time::Instant::now();
        match lantern_assets::fetch(name) {
            Ok(path) => println!(
                "{name}\t{}\t{:.1}s",
                path.display(),
                start.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
