//! The OpenWebMath pipeline in Rust: WARC records in, math-preserving Markdown documents out.
//!
//! Stages, each its own module: [`warc`] reads (gzip) WARC files leniently and [`charset`]
//! decodes their HTML; [`html`] parses a page into a small DOM; [`extract`] turns it into
//! Markdown with every piece of math kept as LaTeX (with [`mathml`] and [`asciimath`] converting
//! the math that is not LaTeX yet) and [`boilerplate`] drops navigation and link farms; the
//! filters are [`prefilter`] (cheap math test on raw HTML), [`langid`] (fastText `lid.176`),
//! [`classifier`] (hashed n-gram math score), [`ngram`] (Kneser-Ney perplexity) and [`rules`];
//! [`minhash`] and [`dedup`] remove near duplicates; [`pipeline`] runs it all over shards.

pub mod asciimath;
pub mod boilerplate;
pub mod charset;
pub mod classifier;
pub mod dedup;
pub mod extract;
pub mod html;
mod html_entities;
pub mod langid;
pub mod mathml;
pub mod minhash;
pub mod models;
pub mod ngram;
pub mod pipeline;
pub mod prefilter;
pub mod rules;
pub mod warc;
