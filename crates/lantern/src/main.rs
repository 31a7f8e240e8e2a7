//! `lantern`: argument parsing and printing; the work lives in the library crates.

mod assets_cmd;
mod backdoor_cmd;
mod backdoor_meta;
mod lm_cmd;
mod mathweb_cmd;
mod mathweb_run_cmd;
mod output;
mod sae_cmd;
mod sae_interp_cmd;
mod sae_patch_cmd;

use clap::{Parser, Subcommand};

/// Lantern: LM interpretability, math web data and alignment research in one binary.
#[derive(Parser)]
#[command(name = "lantern", version, about)]
struct Cli {
    /// Print one JSON object on stdout (progress and logs go to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch and verify the real models and data sets (cached under $LANTERN_HOME).
    #[command(subcommand)]
    Assets(assets_cmd::AssetsCmd),
    /// Run a language model: info, tokenize, logits, perplexity, generate, bench.
    #[command(subcommand)]
    Lm(lm_cmd::LmCmd),
    /// Sparse autoencoders: train, eval, bench.
    #[command(subcommand)]
    Sae(sae_cmd::SaeCmd),
    /// Math web data (OpenWebMath): extract pages, run the pipeline, train its filters.
    #[command(subcommand)]
    Mathweb(mathweb_cmd::MathwebCmd),
    /// Backdoor detection: a zoo of clean and backdoored CNNs, a meta-model that reads their
    /// weights, and baselines.
    #[command(subcommand)]
    Backdoor(backdoor_cmd::BackdoorCmd),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Assets(c) => assets_cmd::run(c, cli.json),
        Cmd::Lm(c) => lm_cmd::run(c, cli.json),
        Cmd::Sae(c) => sae_cmd::run(c, cli.json),
        Cmd::Mathweb(c) => mathweb_cmd::run(c, cli.json),
        Cmd::Backdoor(c) => backdoor_cmd::run(c, cli.json),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
