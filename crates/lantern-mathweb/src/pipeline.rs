//! `lantern mathweb run`: WARC files or HTML folders in, a deduplicated math dataset out.
//!
//! Stage 1 runs per input (one WARC file, one HTML file or folder): decode, prefilter,
//! extract, LaTeX check, language, math score, perplexity and the final rules; its survivors go
//! to `OUT/extracted/<input>.jsonl.zst` and its counts to `<input>.stats.json`, both written
//! atomically, so a stopped run resumes where it was and `--shard I/N` splits the inputs across
//! machines. Stage 2 (the whole run, on one machine) applies the final math-score and
//! perplexity thresholds, removes exact and MinHash near duplicates and writes
//! `OUT/data-NNNNN.jsonl.zst` and `OUT/stats.json`.

mod sharded;
mod stage1;
mod stage2;
mod stats;

pub use sharded::{dedup_buckets, dedup_cluster, dedup_filter, dedup_signatures, extracted_files};
pub use stage1::{process_input, process_page, Filters, Input, Page};
pub use stage2::finalize;
pub use stats::{StageStats, Stats};

use crate::extract::{ExtractOptions, MathCounts};
use crate::rules::Rules;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every threshold of the pipeline; OpenWebMath's values by default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Extraction options.
    pub extract: ExtractOptions,
    /// Final length / accent / block-list rules.
    pub rules: Rules,
    /// Least English probability from lid.176 (0.5).
    pub min_english: f32,
    /// Least math score for a page where math was found (0.15).
    pub math_score_with_math: f32,
    /// Least math score for a page without math (0.8).
    pub math_score_without_math: f32,
    /// Least math score in the final pass (0.17).
    pub final_math_score: f32,
    /// Pages without math markup but with `\word` need a LaTeX command, or this math score
    /// (0.8) and over `latex_check_min_chars` characters (500).
    pub latex_check_score: f32,
    /// See `latex_check_score`.
    pub latex_check_min_chars: usize,
    /// Most perplexity at extraction (30,000).
    pub max_perplexity: f64,
    /// Most perplexity in the final pass (15,000).
    pub final_max_perplexity: f64,
    /// MinHash near-duplicate removal.
    pub near_dedup: bool,
    /// Documents per output file.
    pub docs_per_file: usize,
    /// Pages larger than this many bytes are skipped (a guard against pathological pages in
    /// place of OpenWebMath's per-file timeout; 8 MiB).
    pub max_page_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            extract: ExtractOptions::default(),
            rules: Rules::default(),
            min_english: 0.5,
            math_score_with_math: 0.15,
            math_score_without_math: 0.8,
            final_math_score: 0.17,
            latex_check_score: 0.8,
            latex_check_min_chars: 500,
            max_perplexity: 30_000.0,
            final_max_perplexity: 15_000.0,
            near_dedup: true,
            docs_per_file: 50_000,
            max_page_bytes: 8 << 20,
        }
    }
}

/// One output document (OpenWebMath's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Markdown with LaTeX math.
    pub text: String,
    /// The page's URL (a `file://` path for local HTML).
    pub url: String,
    /// Fetch date from the WARC (empty for local files).
    pub date: String,
    /// Scores and provenance.
    pub metadata: Metadata,
}

/// Per-document scores and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Page title.
    pub title: String,
    /// Top language of lid.176 (`en`), when language id ran.
    pub language: Option<String>,
    /// Its probability.
    pub language_score: Option<f32>,
    /// Math classifier score, when it ran.
    pub math_score: Option<f32>,
    /// Perplexity under the n-gram LM, when it ran.
    pub perplexity: Option<f64>,
    /// Formulas by source.
    pub math: MathCounts,
    /// The input file the page came from.
    pub source_file: String,
    /// Byte offset of its WARC record (gzip member offset for per-record gzip).
    pub warc_offset: Option<u64>,
}

/// Errors of a pipeline run (naming the file).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A WARC file could not be opened.
    #[error(transparent)]
    Warc(#[from] crate::warc::WarcError),
    /// A line of an intermediate file is not a document.
    #[error("{path}: line {line}: {what}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A filter model failed.
    #[error("{0}")]
    Filter(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (never a half file).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PipelineError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Documents as zstd-compressed JSON lines.
pub(crate) fn encode_docs(docs: &[Doc]) -> Result<Vec<u8>, PipelineError> {
    let mut raw = Vec::new();
    for d in docs {
        serde_json::to_writer(&mut raw, d).map_err(|e| PipelineError::Filter(e.to_string()))?;
        raw.push(b'\n');
    }
    zstd::encode_all(raw.as_slice(), 3).map_err(io_err(Path::new("zstd")))
}

/// Reads a `.jsonl.zst` file of documents.
pub fn read_docs(path: &Path) -> Result<Vec<Doc>, PipelineError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let raw = zstd::decode_all(bytes.as_slice()).map_err(io_err(path))?;
    let text = String::from_utf8_lossy(&raw);
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let doc = serde_json::from_str(line).map_err(|e| PipelineError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            what: e.to_string(),
        })?;
        out.push(doc);
    }
    Ok(out)
}

/// `I/N` shard of a sorted input list: every input whose index is `I` modulo `N`.
pub fn shard_inputs<T: Clone>(inputs: &[T], shard: Option<(usize, usize)>) -> Vec<T> {
    match shard {
        None => inputs.to_vec(),
        Some((i, n)) => inputs
            .iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, x)| x.clone())
            .collect(),
    }
}
