//! Evaluation: reconstruction metrics on activations, and the LM's loss with the SAE spliced in.
//!
//! FVU is Σ‖x − x̂‖² / Σ‖x − mean(x)‖² with the mean over every evaluated row (predicting the mean
//! gives 1). The CE loss score is (CE_ablate − CE_sae) / (CE_ablate − CE_clean): 1 when splicing
//! the reconstruction in costs nothing, 0 when it is as bad as zeroing the activation. Splicing
//! replaces the positions the SAE was trained on (not position 0 / special tokens, where the
//! activation is kept), as does zero-ablation, so the two are comparable.

use candle_core::{Device, Tensor};
use lantern_lm::runtime::Lm;
use lantern_lm::{HookPoint, Hooks, LogitsFor};
use serde::Serialize;

use crate::error::{Result, SaeError};
use crate::sae::Sae;
use crate::source::keep_position;

/// Running reconstruction statistics over many batches.
#[derive(Debug, Clone)]
pub struct Recon {
    d: usize,
    rows: u64,
    sum: Vec<f64>,
    sum_sq: f64,
    err_sq: f64,
    nnz: u64,
    fired: Vec<u64>,
}

/// Reconstruction metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ReconMetrics {
    pub tokens: u64,
    pub fvu: f64,
    pub l0: f64,
    /// Latents that never fired on the evaluated tokens.
    pub dead_frac: f64,
    /// Latents firing on more than 10% of tokens.
    pub dense_frac: f64,
    /// Histogram of log10(firing frequency): counts per bin of `density_bins` (edges, the first
    /// bin holding never-firing latents at -inf).
    pub density_hist: Vec<u64>,
    pub density_edges: Vec<f64>,
}

impl Recon {
    /// Empty statistics for an SAE.
    pub fn new(sae: &Sae) -> Recon {
        Recon {
            d: sae.cfg.d_in,
            rows: 0,
            sum: vec![0.0; sae.cfg.d_in],
            sum_sq: 0.0,
            err_sq: 0.0,
            nnz: 0,
            fired: vec![0; sae.cfg.num_latents],
        }
    }

    /// Adds a batch `x` `[rows, d_in]`.
    pub fn add(&mut self, sae: &Sae, x: &[f32]) {
        let (out, codes) = sae.reconstruct(x);
        self.add_reconstruction(x, &out, &codes.idx);
    }

    /// Adds rows with their reconstruction and the latents that fired.
    pub fn add_reconstruction(&mut self, x: &[f32], out: &[f32], fired: &[u32]) {
        for (r, o) in x.chunks_exact(self.d).zip(out.chunks_exact(self.d)) {
            for i in 0..self.d {
                let v = r[i] as f64;
                self.sum[i] += v;
                self.sum_sq += v * v;
                self.err_sq += (r[i] as f64 - o[i] as f64).powi(2);
            }
            self.rows += 1;
        }
        self.nnz += fired.len() as u64;
        for &j in fired {
            self.fired[j as usize] += 1;
        }
    }

    /// The metrics so far.
    pub fn finish(&self) -> ReconMetrics {
        let n = self.rows.max(1) as f64;
        let mean_sq: f64 = self.sum.iter().map(|s| s * s / n).sum();
        let tv = (self.sum_sq - mean_sq).max(1e-30);
        let freq: Vec<f64> = self.fired.iter().map(|&c| c as f64 / n).collect();
        let latents = freq.len().max(1) as f64;
        let edges: Vec<f64> = (0..=12).map(|i| -6.0 + 0.5 * i as f64).collect();
        let mut hist = vec![0u64; edges.len() + 1];
        for &f in &freq {
            let bin = if f == 0.0 {
                0
            } else {
                1 + edges
                    .iter()
                    .filter(|&&e| f.log10() >= e)
                    .count()
                    .saturating_sub(1)
            };
            hist[bin.min(edges.len())] += 1;
        }
        ReconMetrics {
            tokens: self.rows,
            fvu: self.err_sq / tv,
            l0: self.nnz as f64 / n,
            dead_frac: freq.iter().filter(|&&f| f == 0.0).count() as f64 / latents,
            dense_frac: freq.iter().filter(|&&f| f > 0.1).count() as f64 / latents,
            density_hist: hist,
            density_edges: edges,
        }
    }
}

/// The LM's loss with the activation at the SAE's hook point left alone, reconstructed, or zeroed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Splice {
    pub tokens: u64,
    pub ce_clean: f64,
    pub ce_with_sae: f64,
    pub ce_zero_ablation: f64,
    pub ce_loss_score: f64,
    /// Mean KL(clean || with SAE) per position, nats.
    pub kl: f64,
    /// Mean KL(clean || zero-ablated).
    pub kl_zero_ablation: f64,
}

/// Splices the SAE into the LM over `windows` and measures the losses.
pub fn splice(
    lm: &Lm,
    sae: &Sae,
    point: HookPoint,
    windows: &[Vec<u32>],
    per_pass: usize,
) -> Result<Splice> {
    let mut s = Splice::default();
    let (mut clean_sum, mut sae_sum, mut zero_sum, mut kl_sum, mut klz_sum) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    for batch in windows.chunks(per_pass.max(1)) {
        let t = batch[0].len();
        let flat: Vec<u32> = batch.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (batch.len(), t), lm.model.device())?;
        let keep: Vec<bool> = batch
            .iter()
            .flat_map(|w| (0..t).map(move |p| (w, p)))
            .map(|(w, p)| keep_position(lm, w, p, false))
            .collect();
        let run = |mode: Option<bool>| -> Result<Vec<Vec<f32>>> {
            let mut hooks = Hooks::new();
            if let Some(zero) = mode {
                let keep = keep.clone();
                hooks = hooks.with_fn(point, move |x| {
                    Ok(Some(replace_rows(x, &keep, |rows| {
                        if zero {
                            vec![0.0; rows.len()]
                        } else {
                            sae.reconstruct(rows).0
                        }
                    })?))
                });
            }
            let logits = lm
                .model
                .forward(&ids, None, &mut hooks, LogitsFor::All)?
                .ok_or_else(|| SaeError::Config("forward pass returned no logits".into()))?;
            log_probs(&logits)
        };
        let clean = run(None)?;
        let with_sae = run(Some(false))?;
        let zero = run(Some(true))?;
        for (w, window) in batch.iter().enumerate() {
            for p in 0..t - 1 {
                let (row, next) = (w * t + p, window[p + 1] as usize);
                clean_sum -= clean[row][next] as f64;
                sae_sum -= with_sae[row][next] as f64;
                zero_sum -= zero[row][next] as f64;
                kl_sum += kl(&clean[row], &with_sae[row]);
                klz_sum += kl(&clean[row], &zero[row]);
                s.tokens += 1;
            }
        }
    }
    let n = s.tokens.max(1) as f64;
    s.ce_clean = clean_sum / n;
    s.ce_with_sae = sae_sum / n;
    s.ce_zero_ablation = zero_sum / n;
    s.kl = kl_sum / n;
    s.kl_zero_ablation = klz_sum / n;
    let gap = s.ce_zero_ablation - s.ce_clean;
    s.ce_loss_score = if gap.abs() > 1e-12 {
        (s.ce_zero_ablation - s.ce_with_sae) / gap
    } else {
        f64::NAN
    };
    Ok(s)
}

/// Applies `f` to the rows of `x` `[b, t, d]` whose `keep` flag is set; other rows pass through.
fn replace_rows(
    x: &Tensor,
    keep: &[bool],
    f: impl Fn(&[f32]) -> Vec<f32>,
) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let d = *dims.last().unwrap_or(&1);
    let mut data = x.flatten_all()?.to_vec1::<f32>()?;
    let picked: Vec<f32> = data
        .chunks_exact(d)
        .zip(keep)
        .filter(|(_, &k)| k)
        .flat_map(|(r, _)| r.iter().copied())
        .collect();
    let new = f(&picked);
    let mut rows = new.chunks_exact(d);
    for (r, &k) in data.chunks_exact_mut(d).zip(keep) {
        if k {
            r.copy_from_slice(rows.next().expect("one output row per kept row"));
        }
    }
    Tensor::from_vec(data, dims, &Device::Cpu)
}

/// Log-probabilities per position from logits `[b, t, vocab]`, rows flattened.
fn log_probs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let vocab = logits.dim(2)?;
    let data = logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(data
        .chunks_exact(vocab)
        .map(|row| {
            let lse = lantern_lm::runtime::log_sum_exp(row) as f32;
            row.iter().map(|&v| v - lse).collect()
        })
        .collect())
}

/// KL(p || q) from log-probabilities.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&lp, &lq)| (lp as f64).exp() * (lp as f64 - lq as f64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::SaeConfig;

    #[test]
    fn predicting_the_mean_gives_fvu_one_and_exact_gives_zero() {
        let sae = Sae::init(SaeConfig::topk(3, 6, 1), 0).unwrap();
        let x = [1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 2.0, 5.0, 0.0, 6.0, 3.0, 0.0];
        let mean = [3.0, 3.0, 1.0];
        let out: Vec<f32> = mean.iter().cycle().take(12).copied().collect();
        let mut r = Recon::new(&sae);
        r.add_reconstruction(&x, &out, &[0, 1, 1]);
        let m = r.finish();
        assert!((m.fvu - 1.0).abs() < 1e-9, "{}", m.fvu);
        assert!((m.l0 - 0.75).abs() < 1e-12);
        assert!((m.dead_frac - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.density_hist.iter().sum::<u64>(), 6);
        let mut r = Recon::new(&sae);
        r.add_reconstruction(&x, &x, &[]);
        assert_eq!(r.finish().fvu, 0.0);
    }

    #[test]
    fn kl_of_equal_distributions_is_zero() {
        let p = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        assert!(kl(&p, &p).abs() < 1e-12);
        let q = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
        assert!(kl(&p, &q) > 0.1);
    }
}
