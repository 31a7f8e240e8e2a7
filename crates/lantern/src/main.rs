//! `lantern`: argument parsing and printing; the work lives in the library crates.

fn main() {}
