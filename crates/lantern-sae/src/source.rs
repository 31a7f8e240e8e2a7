//! The activation source: a corpus streamed through the LM in context windows, activations at
//! any set of hook points from one pass (stopping after the deepest), shuffled in a mixing
//! buffer so a batch mixes many documents and positions.
//!
//! Windows are `[BOS] + ctx_len - 1` tokens of the document stream (documents joined by EOS;
//! no BOS when the vocabulary has none). Position 0 (BOS, the attention sink with its outsized
//! norm) and EOS/BOS tokens are left out unless asked for.

use candle_core::Tensor;
use lantern_lm::runtime::Lm;
use lantern_lm::{HookPoint, Hooks, LogitsFor};
use rand::{Rng, SeedableRng};

use crate::corpus::{Corpus, Skipped};
use crate::error::{Result, SaeError};

/// How the corpus becomes windows and batches.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Tokens per window, BOS included.
    pub ctx_len: usize,
    /// Windows per LM pass.
    pub windows_per_pass: usize,
    /// Keep position 0 and special tokens.
    pub include_special: bool,
    /// Rows the mixing buffer holds before batches are drawn from it.
    pub buffer_rows: usize,
    pub seed: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            ctx_len: 256,
            windows_per_pass: 8,
            include_special: false,
            buffer_rows: 65_536,
            seed: 0,
        }
    }
}

/// Token windows cut from a corpus.
#[derive(Debug, Clone)]
pub struct Windows {
    pub windows: Vec<Vec<u32>>,
    pub skipped: Skipped,
    /// Documents read.
    pub docs: usize,
}

/// Tokenizes `corpus` into windows until `max_windows` are cut (all of it when `None`), skipping
/// the first `skip_windows` (a held-out split reads past the training windows).
pub fn windows(
    lm: &Lm,
    corpus: &Corpus,
    ctx_len: usize,
    skip_windows: usize,
    max_windows: Option<usize>,
) -> Result<Windows> {
    if ctx_len < 2 || ctx_len > lm.model.cfg.ctx_len {
        return Err(SaeError::Config(format!(
            "context length {ctx_len} must be between 2 and the model's {}",
            lm.model.cfg.ctx_len
        )));
    }
    let tok = &lm.tokenizer;
    let bos = tok.bos_id();
    let eos = tok.eos_id().or(bos);
    let body = ctx_len - usize::from(bos.is_some());
    let want = max_windows.map(|m| (m + skip_windows) * body);
    let mut stream: Vec<u32> = Vec::new();
    let mut docs = 0usize;
    let mut err = None;
    let skipped = corpus.for_each(|text| match tok.encode_with(text, false, false) {
        Ok(ids) => {
            docs += 1;
            stream.extend(ids);
            stream.extend(eos);
            want.is_none_or(|w| stream.len() < w)
        }
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    if let Some(e) = err {
        return Err(SaeError::Lm(e.into()));
    }
    let out: Vec<Vec<u32>> = stream
        .chunks_exact(body)
        .skip(skip_windows)
        .take(max_windows.unwrap_or(usize::MAX))
        .map(|c| bos.into_iter().chain(c.iter().copied()).collect())
        .collect();
    if out.is_empty() {
        return Err(SaeError::Corpus {
            spec: corpus.spec.clone(),
            what: format!(
                "too short: {} tokens make no window of {ctx_len} after skipping {skip_windows}",
                stream.len()
            ),
        });
    }
    Ok(Windows {
        windows: out,
        skipped,
        docs,
    })
}

/// Which positions of a window give training rows.
pub fn keep_position(lm: &Lm, window: &[u32], pos: usize, include_special: bool) -> bool {
    if include_special {
        return true;
    }
    let id = window[pos];
    pos > 0 && Some(id) != lm.tokenizer.bos_id() && Some(id) != lm.tokenizer.eos_id()
}

/// Checks every point exists in the model.
pub fn check_points(lm: &Lm, points: &[HookPoint]) -> Result<()> {
    let all = HookPoint::all(lm.model.cfg.n_layers);
    match points.iter().find(|p| !all.contains(p)) {
        Some(bad) => Err(SaeError::Config(format!(
            "hook point {bad} does not exist in this {}-layer model (see `lantern lm info`)",
            lm.model.cfg.n_layers
        ))),
        None => Ok(()),
    }
}

/// Runs `windows` through the LM and returns, per hook point, the activations `[b, t, d]`.
pub fn run_windows(lm: &Lm, windows: &[Vec<u32>], points: &[HookPoint]) -> Result<Vec<Tensor>> {
    check_points(lm, points)?;
    let t = windows[0].len();
    let flat: Vec<u32> = windows.iter().flatten().copied().collect();
    let ids = Tensor::from_vec(flat, (windows.len(), t), lm.model.device())?;
    let mut hooks = points
        .iter()
        .fold(Hooks::new(), |h, &p| h.read(p))
        .stop_early(true);
    lm.model.forward(&ids, None, &mut hooks, LogitsFor::Last)?;
    points
        .iter()
        .map(|&p| {
            hooks
                .take(p)
                .ok_or_else(|| SaeError::Config(format!("hook point {p} was not reached")))
        })
        .collect()
}

/// Runs `windows` through the LM and keeps the rows of the positions that train an SAE (see
/// [`keep_position`]): per point the rows `[rows, width]`, the widths, and the row count.
pub fn kept_activations(
    lm: &Lm,
    windows: &[Vec<u32>],
    points: &[HookPoint],
    include_special: bool,
) -> Result<(Vec<Vec<f32>>, Vec<usize>, usize)> {
    let acts = run_windows(lm, windows, points)?;
    let t = windows[0].len();
    let keep: Vec<usize> = windows
        .iter()
        .enumerate()
        .flat_map(|(w, window)| {
            (0..t)
                .filter(move |&p| keep_position(lm, window, p, include_special))
                .map(move |p| w * t + p)
        })
        .collect();
    let mut kept = Vec::with_capacity(acts.len());
    let mut widths = Vec::with_capacity(acts.len());
    for a in &acts {
        let d = a.dim(2)?;
        let data = a.flatten_all()?.to_vec1::<f32>()?;
        let mut rows = Vec::with_capacity(keep.len() * d);
        for &at in &keep {
            rows.extend_from_slice(&data[at * d..(at + 1) * d]);
        }
        kept.push(rows);
        widths.push(d);
    }
    Ok((kept, widths, keep.len()))
}

/// Rows of several aligned matrices (one per hook point) from which batches are drawn at random
/// without replacement: the shuffling buffer of both activation sources.
#[derive(Debug)]
pub struct MixingBuffer {
    buffers: Vec<Vec<f32>>,
    widths: Vec<usize>,
    rows: usize,
    rng: rand::rngs::StdRng,
}

impl MixingBuffer {
    /// An empty buffer for `points` matrices.
    pub fn new(points: usize, seed: u64) -> MixingBuffer {
        MixingBuffer {
            buffers: vec![Vec::new(); points],
            widths: vec![0; points],
            rows: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Widths of the matrices (0 before the first push).
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// Appends `rows` rows to each matrix (`data[k]` holds `rows x widths[k]` values).
    pub fn push(&mut self, data: &[&[f32]], widths: &[usize], rows: usize) {
        for ((buf, w), (d, &width)) in self
            .buffers
            .iter_mut()
            .zip(&mut self.widths)
            .zip(data.iter().zip(widths))
        {
            buf.extend_from_slice(d);
            *w = width;
        }
        self.rows += rows;
    }

    /// Draws up to `n` random rows (the same rows of every matrix); `None` when empty.
    pub fn draw(&mut self, n: usize) -> Option<Vec<Vec<f32>>> {
        let take = n.min(self.rows);
        if take == 0 {
            return None;
        }
        let mut out: Vec<Vec<f32>> = self
            .widths
            .iter()
            .map(|&d| Vec::with_capacity(take * d))
            .collect();
        for _ in 0..take {
            let i = self.rng.gen_range(0..self.rows);
            let last = self.rows - 1;
            for ((buf, &d), o) in self.buffers.iter_mut().zip(&self.widths).zip(&mut out) {
                o.extend_from_slice(&buf[i * d..(i + 1) * d]);
                if i != last {
                    buf.copy_within(last * d..(last + 1) * d, i * d);
                }
                buf.truncate(last * d);
            }
            self.rows -= 1;
        }
        Some(out)
    }
}

/// Shuffled activation batches, one matrix per hook point, rows aligned across points.
pub struct ActivationSource<'a> {
    lm: &'a Lm,
    points: Vec<HookPoint>,
    windows: Vec<Vec<u32>>,
    next: usize,
    cfg: SourceConfig,
    mix: MixingBuffer,
    /// LM positions run so far.
    pub positions_run: u64,
}

impl<'a> ActivationSource<'a> {
    /// A source over `windows` for `points` (validated against the model).
    pub fn new(
        lm: &'a Lm,
        points: Vec<HookPoint>,
        windows: Vec<Vec<u32>>,
        cfg: SourceConfig,
    ) -> Result<ActivationSource<'a>> {
        check_points(lm, &points)?;
        Ok(ActivationSource {
            mix: MixingBuffer::new(points.len(), cfg.seed),
            lm,
            points,
            windows,
            next: 0,
            cfg,
            positions_run: 0,
        })
    }

    /// Windows consumed so far.
    pub fn windows_done(&self) -> usize {
        self.next
    }

    /// Total windows.
    pub fn windows_total(&self) -> usize {
        self.windows.len()
    }

    /// Skips the first `n` windows (resuming a run).
    pub fn skip_windows(&mut self, n: usize) {
        self.next = n.min(self.windows.len());
    }

    /// The next batch of up to `rows` rows per point; `None` when the corpus is used up.
    pub fn next_batch(&mut self, rows: usize) -> Result<Option<Vec<Vec<f32>>>> {
        while self.mix.rows() < self.cfg.buffer_rows.max(rows) && self.next < self.windows.len() {
            self.fill()?;
        }
        Ok(self.mix.draw(rows))
    }

    /// Runs the next windows through the LM into the buffer.
    fn fill(&mut self) -> Result<()> {
        let end = (self.next + self.cfg.windows_per_pass).min(self.windows.len());
        let batch = &self.windows[self.next..end];
        let (kept, widths, added) =
            kept_activations(self.lm, batch, &self.points, self.cfg.include_special)?;
        self.positions_run += (batch.len() * batch[0].len()) as u64;
        let views: Vec<&[f32]> = kept.iter().map(|v| v.as_slice()).collect();
        self.mix.push(&views, &widths, added);
        self.next = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MixingBuffer;

    #[test]
    fn mixing_buffer_draws_every_row_once_aligned_across_matrices() {
        let mut m = MixingBuffer::new(2, 7);
        let a: Vec<f32> = (0..10).map(|i| i as f32).collect(); // 10 rows of width 1
        let b: Vec<f32> = (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect(); // width 2
        m.push(&[&a, &b], &[1, 2], 10);
        let mut seen = Vec::new();
        while let Some(batch) = m.draw(3) {
            for (r, x) in batch[0].iter().enumerate() {
                assert_eq!(batch[1][2 * r], *x);
                assert_eq!(batch[1][2 * r + 1], -*x);
                seen.push(*x as i32);
            }
        }
        let in_order = seen.windows(2).all(|w| w[0] < w[1]);
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(!in_order, "rows came out unshuffled");
    }
}
