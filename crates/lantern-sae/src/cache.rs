//! An on-disk activation cache: LM activations at hook points written once as f16 safetensors
//! shards, so many SAEs (a sweep, a longer run, another seed) train on the same activations
//! without running the LM again.
//!
//! Layout: `dir/cache.json` (model, corpus, hook points and widths, context length, windows and
//! rows per shard) and `dir/<hookpoint>/shard-00000.safetensors` with one tensor `activations`
//! `[rows, width]` f16. Rows are in corpus order (training shuffles them in its mixing buffer).
//! Shards are written atomically and a rerun skips the shards already on disk.

use std::path::{Path, PathBuf};

use lantern_lm::runtime::Lm;
use lantern_lm::HookPoint;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SaeError};
use crate::sae::write_atomic;
use crate::source::{kept_activations, MixingBuffer};

/// What a cache holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub model: String,
    pub corpus: String,
    pub hookpoints: Vec<String>,
    pub widths: Vec<usize>,
    pub ctx_len: usize,
    pub include_special: bool,
    /// Windows per shard, and the windows of the corpus the cache used (held-out data starts
    /// after them).
    pub windows_per_shard: usize,
    pub windows: usize,
    /// Rows in each finished shard.
    pub shard_rows: Vec<usize>,
}

impl CacheInfo {
    /// Reads `dir/cache.json`.
    pub fn load(dir: &Path) -> Result<CacheInfo> {
        let p = dir.join("cache.json");
        let b = std::fs::read(&p).map_err(|e| SaeError::io(&p, e))?;
        serde_json::from_slice(&b)
            .map_err(|e| SaeError::bad_file(&p, format!("not a cache index: {e}")))
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        self.shard_rows.iter().sum()
    }
}

fn shard_path(dir: &Path, point: &str, i: usize) -> PathBuf {
    dir.join(point).join(format!("shard-{i:05}.safetensors"))
}

/// Runs `windows` through the LM and writes their activations at `points` to `dir`, shard by
/// shard, calling `progress(rows_so_far)` after each.
#[allow(clippy::too_many_arguments)]
pub fn write(
    lm: &Lm,
    model: &str,
    corpus: &str,
    points: &[HookPoint],
    windows: &[Vec<u32>],
    windows_per_shard: usize,
    include_special: bool,
    dir: &Path,
    mut progress: impl FnMut(usize),
) -> Result<CacheInfo> {
    std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
    let names: Vec<String> = points.iter().map(|p| p.to_string()).collect();
    let mut info = CacheInfo {
        model: model.to_string(),
        corpus: corpus.to_string(),
        hookpoints: names.clone(),
        widths: vec![0; points.len()],
        ctx_len: windows.first().map_or(0, Vec::len),
        include_special,
        windows_per_shard,
        windows: windows.len(),
        shard_rows: Vec::new(),
    };
    if let Ok(old) = CacheInfo::load(dir) {
        let same = old.model == info.model
            && old.corpus == info.corpus
            && old.hookpoints == info.hookpoints
            && old.ctx_len == info.ctx_len
            && old.windows_per_shard == windows_per_shard;
        if !same {
            return Err(SaeError::Config(format!(
                "{} holds a cache of other activations (model, corpus, hook points or shard size differ)",
                dir.display()
            )));
        }
        info.shard_rows = old.shard_rows;
        info.widths = old.widths;
    }
    for (i, chunk) in windows.chunks(windows_per_shard.max(1)).enumerate() {
        if i < info.shard_rows.len() {
            progress(info.shard_rows[..=i].iter().sum());
            continue;
        }
        let mut per_point: Vec<Vec<half::f16>> = vec![Vec::new(); points.len()];
        let mut rows = 0;
        for pass in chunk.chunks(8) {
            let (kept, widths, added) = kept_activations(lm, pass, points, include_special)?;
            for ((dst, src), (w, &d)) in per_point
                .iter_mut()
                .zip(&kept)
                .zip(info.widths.iter_mut().zip(&widths))
            {
                dst.extend(src.iter().map(|&v| half::f16::from_f32(v)));
                *w = d;
            }
            rows += added;
        }
        for (k, name) in names.iter().enumerate() {
            let path = shard_path(dir, name, i);
            std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| SaeError::io(dir, e))?;
            let bytes: Vec<u8> = per_point[k].iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F16,
                vec![rows, info.widths[k]],
                &bytes,
            )
            .map_err(|e| SaeError::bad_file(&path, e.to_string()))?;
            let data = safetensors::serialize([("activations".to_string(), view)], None)
                .map_err(|e| SaeError::bad_file(&path, e.to_string()))?;
            write_atomic(&path, &data)?;
        }
        info.shard_rows.push(rows);
        let json = serde_json::to_vec_pretty(&info).expect("index serialises");
        write_atomic(&dir.join("cache.json"), &json)?;
        progress(info.rows());
    }
    Ok(info)
}

/// Shuffled batches read from a cache (a mixing buffer over consecutive shards).
pub struct CacheSource {
    dir: PathBuf,
    pub info: CacheInfo,
    /// Which of the cache's hook points to read, and their widths.
    picks: Vec<usize>,
    next_shard: usize,
    mix: MixingBuffer,
    buffer_rows: usize,
}

impl CacheSource {
    /// Opens `dir` for the hook points `points` (all of which the cache must hold).
    pub fn open(
        dir: &Path,
        points: &[HookPoint],
        buffer_rows: usize,
        seed: u64,
    ) -> Result<CacheSource> {
        let info = CacheInfo::load(dir)?;
        let picks = points
            .iter()
            .map(|p| {
                let name = p.to_string();
                info.hookpoints
                    .iter()
                    .position(|h| *h == name)
                    .ok_or_else(|| {
                        SaeError::Config(format!(
                            "the cache in {} holds {:?}, not {name}",
                            dir.display(),
                            info.hookpoints
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CacheSource {
            dir: dir.to_path_buf(),
            mix: MixingBuffer::new(picks.len(), seed),
            picks,
            info,
            next_shard: 0,
            buffer_rows,
        })
    }

    /// Widths of the picked points.
    pub fn widths(&self) -> Vec<usize> {
        self.picks.iter().map(|&k| self.info.widths[k]).collect()
    }

    /// Shards consumed so far.
    pub fn shards_done(&self) -> usize {
        self.next_shard
    }

    /// Skips the first `n` shards (resuming).
    pub fn skip_shards(&mut self, n: usize) {
        self.next_shard = n.min(self.info.shard_rows.len());
    }

    fn fill(&mut self) -> Result<()> {
        let i = self.next_shard;
        let mut data = Vec::with_capacity(self.picks.len());
        for &k in &self.picks {
            let path = shard_path(&self.dir, &self.info.hookpoints[k], i);
            let mut t = crate::sae::read_safetensors(&path)?;
            let (shape, values) = t
                .remove("activations")
                .ok_or_else(|| SaeError::bad_file(&path, "no tensor `activations`"))?;
            if shape != [self.info.shard_rows[i], self.info.widths[k]] {
                return Err(SaeError::bad_file(
                    &path,
                    format!("shape {shape:?} disagrees with cache.json"),
                ));
            }
            data.push(values);
        }
        let views: Vec<&[f32]> = data.iter().map(|v| v.as_slice()).collect();
        self.mix
            .push(&views, &self.widths(), self.info.shard_rows[i]);
        self.next_shard += 1;
        Ok(())
    }

    /// The next batch of up to `rows` rows per point; `None` when the cache is used up.
    pub fn next_batch(&mut self, rows: usize) -> Result<Option<Vec<Vec<f32>>>> {
        while self.mix.rows() < self.buffer_rows.max(rows)
            && self.next_shard < self.info.shard_rows.len()
        {
            self.fill()?;
        }
        Ok(self.mix.draw(rows))
    }
}
