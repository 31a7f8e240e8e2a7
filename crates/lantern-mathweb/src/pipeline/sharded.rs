//! Stage 2 split for many machines: MinHash dedup as four sharded steps over the stage-1 files
//! (signatures per file, buckets per partition, one cluster step, filter per file), each
//! idempotent and writing only its own files under `OUT/dedup` and `OUT/deduped`.
//!
//! The stage-1 files' sorted order numbers them; step 1 and 4 take the files whose number is
//! `I` modulo `N`, step 2 the partitions whose number is `I` modulo `N`. Exact and near
//! duplicates are removed in one union-find (the exact band joins identical texts), keeping the
//! smallest document id of each cluster — the same documents as [`super::finalize`] keeps.

use super::stage2::final_filters;
use super::{encode_docs, io_err, read_docs, write_atomic, Config, Doc, PipelineError, Stats};
use crate::dedup::{
    stage_buckets, stage_cluster, stage_filter, stage_signatures, DedupParams, Layout,
};
use std::path::{Path, PathBuf};

fn dedup_err(e: crate::dedup::DedupError) -> PipelineError {
    PipelineError::Filter(e.to_string())
}

/// The stage-1 data files of a run, sorted.
pub fn extracted_files(out: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let dir = out.join("extracted");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .collect();
    v.sort();
    Ok(v)
}

fn mine(n_items: usize, shard: (usize, usize)) -> impl Iterator<Item = usize> {
    (0..n_items).filter(move |k| k % shard.1 == shard.0)
}

/// A stage-1 file's documents after the final thresholds (the same view every step reads).
fn filtered_docs(path: &Path, cfg: &Config) -> Result<Vec<Doc>, PipelineError> {
    Ok(final_filters(read_docs(path)?, cfg, &mut Stats::default()))
}

/// The layout of a run's dedup; creates `OUT/dedup` for the step's files.
fn layout(out: &Path, partitions: u32) -> Result<Layout, PipelineError> {
    let dir = out.join("dedup");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    Ok(Layout {
        shards: extracted_files(out)?.len() as u32,
        partitions,
    })
}

/// Step 1: bucket records of this shard's files. Returns how many records were written.
pub fn dedup_signatures(
    out: &Path,
    shard: (usize, usize),
    partitions: u32,
    cfg: &Config,
) -> Result<u64, PipelineError> {
    let files = extracted_files(out)?;
    let layout = layout(out, partitions)?;
    let mut n = 0;
    for k in mine(files.len(), shard) {
        let docs = filtered_docs(&files[k], cfg)?;
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        n += stage_signatures(
            &out.join("dedup"),
            layout,
            k as u32,
            &texts,
            &DedupParams::default(),
        )
        .map_err(dedup_err)?;
    }
    Ok(n)
}

/// Step 2: duplicate edges of this shard's partitions. Returns how many edges were written.
pub fn dedup_buckets(
    out: &Path,
    shard: (usize, usize),
    partitions: u32,
) -> Result<u64, PipelineError> {
    let layout = layout(out, partitions)?;
    let mut n = 0;
    for p in mine(partitions as usize, shard) {
        n += stage_buckets(&out.join("dedup"), layout, p as u32).map_err(dedup_err)?;
    }
    Ok(n)
}

/// Step 3: clusters over every edge file. Returns (documents removed, clusters).
pub fn dedup_cluster(out: &Path, partitions: u32) -> Result<(usize, usize), PipelineError> {
    let c = stage_cluster(&out.join("dedup"), layout(out, partitions)?).map_err(dedup_err)?;
    Ok((c.remove.len(), c.clusters as usize))
}

/// Step 4: writes this shard's kept documents to `OUT/deduped/<file>`. Returns (kept, removed).
pub fn dedup_filter(
    out: &Path,
    shard: (usize, usize),
    cfg: &Config,
) -> Result<(usize, usize), PipelineError> {
    let files = extracted_files(out)?;
    layout(out, 1)?;
    let (mut kept, mut removed) = (0, 0);
    for k in mine(files.len(), shard) {
        let docs = filtered_docs(&files[k], cfg)?;
        let total = docs.len();
        let keep = stage_filter(&out.join("dedup"), k as u32, total as u32).map_err(dedup_err)?;
        let docs: Vec<Doc> = docs
            .into_iter()
            .zip(keep)
            .filter_map(|(d, k)| k.then_some(d))
            .collect();
        kept += docs.len();
        removed += total - docs.len();
        let name = files[k]
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_default();
        write_atomic(&out.join("deduped").join(name), &encode_docs(&docs)?)?;
    }
    Ok((kept, removed))
}
