//! Stage 2, the whole run: final thresholds, exact and near-duplicate removal, dataset files.

use super::{encode_docs, io_err, read_docs, write_atomic, Config, Doc, PipelineError, Stats};
use crate::dedup::{dedup_in_memory, exact_dedup, DedupParams};
use std::path::{Path, PathBuf};

/// Reads every stage-1 file under `out/extracted`, applies the final filters and dedup, writes
/// `out/data-NNNNN.jsonl.zst` and `out/stats.json` (stage-1 counts of every input merged in).
/// Returns the merged stats and the data files.
pub fn finalize(out: &Path, cfg: &Config) -> Result<(Stats, Vec<PathBuf>), PipelineError> {
    let names = super::extracted_files(out)?;
    let mut stats = Stats::default();
    let mut docs: Vec<Doc> = Vec::new();
    for data in &names {
        let stats_path = PathBuf::from(data.to_string_lossy().replace(".jsonl.zst", ".stats.json"));
        let s = std::fs::read(&stats_path).map_err(io_err(&stats_path))?;
        let s: Stats = serde_json::from_slice(&s).map_err(|e| PipelineError::BadLine {
            path: stats_path.clone(),
            line: 1,
            what: e.to_string(),
        })?;
        stats.merge(&s);
        docs.extend(read_docs(data)?);
    }
    let docs = final_filters(docs, cfg, &mut stats);
    let docs = dedup(docs, cfg, &mut stats);
    let files = write_dataset(out, &docs, cfg.docs_per_file)?;
    let js = serde_json::to_vec_pretty(&stats).map_err(|e| PipelineError::Filter(e.to_string()))?;
    write_atomic(&out.join("stats.json"), &js)?;
    Ok((stats, files))
}

pub(crate) fn final_filters(docs: Vec<Doc>, cfg: &Config, stats: &mut Stats) -> Vec<Doc> {
    docs.into_iter()
        .filter(|d| {
            if d.metadata
                .math_score
                .is_some_and(|s| s < cfg.final_math_score)
            {
                stats.drop("final", "math_score");
                return false;
            }
            if d.metadata
                .perplexity
                .is_some_and(|p| p > cfg.final_max_perplexity)
            {
                stats.drop("final", "perplexity");
                return false;
            }
            stats.pass("final");
            true
        })
        .collect()
}

fn dedup(docs: Vec<Doc>, cfg: &Config, stats: &mut Stats) -> Vec<Doc> {
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let keep = exact_dedup(&texts);
    let docs: Vec<Doc> = count_keep(docs, &keep, "dedup_exact", "duplicate", stats);
    if !cfg.near_dedup {
        return docs;
    }
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let params = DedupParams {
        exact: false,
        ..DedupParams::default()
    };
    let keep = dedup_in_memory(&texts, &params);
    count_keep(docs, &keep, "dedup_near", "near_duplicate", stats)
}

fn count_keep(
    docs: Vec<Doc>,
    keep: &[bool],
    stage: &str,
    reason: &str,
    stats: &mut Stats,
) -> Vec<Doc> {
    docs.into_iter()
        .zip(keep)
        .filter_map(|(d, &k)| {
            if k {
                stats.pass(stage);
                Some(d)
            } else {
                stats.drop(stage, reason);
                None
            }
        })
        .collect()
}

fn write_dataset(out: &Path, docs: &[Doc], per_file: usize) -> Result<Vec<PathBuf>, PipelineError> {
    let mut files = Vec::new();
    for (i, chunk) in docs.chunks(per_file.max(1)).enumerate() {
        let path = out.join(format!("data-{i:05}.jsonl.zst"));
        write_atomic(&path, &encode_docs(chunk)?)?;
        files.push(path);
    }
    if docs.is_empty() {
        let path = out.join("data-00000.jsonl.zst");
        write_atomic(&path, &encode_docs(&[])?)?;
        files.push(path);
    }
    Ok(files)
}
