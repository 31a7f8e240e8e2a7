//! From a CNN's parameters to meta-model tokens: per-tensor standardisation and chunking,
//! and per-tensor statistics tokens.

use super::MetaError;
use crate::baseline::{standardisation, tensor_features, STATS_PER_TENSOR};
use crate::cnn::Params;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Standardised statistics are clamped to ± this many training deviations (an outlier
/// kurtosis must not swamp the embedding).
const STAT_CLAMP: f32 = 10.0;

/// Per-tensor mean and standard deviation of a training set of models, and the tensor layout
/// (names and lengths) every model fed to the meta-model must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normaliser {
    /// Tensor names and lengths, in order.
    pub layout: Vec<(String, usize)>,
    /// Mean of each tensor's values over all training models.
    pub mean: Vec<f32>,
    /// Standard deviation of each tensor's values over all training models (1 where 0).
    pub std: Vec<f32>,
    /// Training-set mean of each tensor's statistics ([`tensor_features`]), tensor by tensor,
    /// `STATS_PER_TENSOR` each; empty in files written before statistics tokens existed.
    #[serde(default)]
    pub stats_mean: Vec<f32>,
    /// Training-set deviation of the same statistics (1 where 0).
    #[serde(default)]
    pub stats_std: Vec<f32>,
}

/// The raw statistics of every tensor of `p`, concatenated.
fn stats_of(p: &Params) -> Vec<f64> {
    p.tensors.iter().flat_map(|t| tensor_features(t)).collect()
}

/// Names and lengths of `p`'s tensors.
fn layout_of(p: &Params) -> Vec<(String, usize)> {
    p.names()
        .iter()
        .zip(&p.tensors)
        .map(|(n, t)| (n.clone(), t.len()))
        .collect()
}

/// A layout as `name[len], ...` for error messages (first few tensors only).
fn describe(layout: &[(String, usize)]) -> String {
    let total: usize = layout.iter().map(|(_, n)| n).sum();
    let head: Vec<String> = layout
        .iter()
        .take(4)
        .map(|(n, l)| format!("{n}[{l}]"))
        .collect();
    format!(
        "{} tensors, {total} values ({}, ...)",
        layout.len(),
        head.join(", ")
    )
}

impl Normaliser {
    /// Fits the per-tensor statistics on `models` (non-empty, all of one layout).
    pub fn fit(models: &[Params]) -> Result<Self, MetaError> {
        let first = models
            .first()
            .ok_or_else(|| MetaError::BadSetup("no models to fit the normaliser on".into()))?;
        let layout = layout_of(first);
        let mut sum = vec![0f64; layout.len()];
        let mut sq = vec![0f64; layout.len()];
        let mut count = vec![0f64; layout.len()];
        let probe = Self {
            layout: layout.clone(),
            mean: Vec::new(),
            std: Vec::new(),
            stats_mean: Vec::new(),
            stats_std: Vec::new(),
        };
        for (i, m) in models.iter().enumerate() {
            probe.check(m, &format!("training model {i}"))?;
            for (t, values) in m.tensors.iter().enumerate() {
                for &v in values {
                    sum[t] += f64::from(v);
                    sq[t] += f64::from(v) * f64::from(v);
                }
                count[t] += values.len() as f64;
            }
        }
        let mean: Vec<f64> = sum
            .iter()
            .zip(&count)
            .map(|(s, c)| s / c.max(1.0))
            .collect();
        let std = sq
            .iter()
            .zip(&count)
            .zip(&mean)
            .map(|((q, c), m)| {
                let var = (q / c.max(1.0) - m * m).max(0.0);
                if var > 1e-20 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        let stats: Vec<Vec<f64>> = models.par_iter().map(stats_of).collect();
        let (stats_mean, stats_std) = standardisation(&stats);
        let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        Ok(Self {
            layout,
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
            stats_mean: to_f32(stats_mean),
            stats_std: to_f32(stats_std),
        })
    }

    /// Whether the statistics tokens' standardisation was fitted.
    pub fn has_stats(&self) -> bool {
        self.stats_mean.len() == self.layout.len() * STATS_PER_TENSOR
            && self.stats_std.len() == self.stats_mean.len()
    }

    /// The standardised statistics of `p`'s tensors (one row of `STATS_PER_TENSOR` per
    /// tensor, clamped to ±10), appended to `out`. The layout must have been checked and
    /// [`has_stats`](Self::has_stats) must hold.
    pub fn push_stats(&self, p: &Params, out: &mut Vec<f32>) {
        out.extend(
            stats_of(p)
                .iter()
                .zip(self.stats_mean.iter().zip(&self.stats_std))
                .map(|(&v, (&m, &s))| ((v as f32 - m) / s).clamp(-STAT_CLAMP, STAT_CLAMP)),
        );
    }

    /// Values in one model.
    pub fn n_values(&self) -> usize {
        self.layout.iter().map(|(_, n)| n).sum()
    }

    /// Errors unless `p` has exactly this layout and only finite values; `what` names the
    /// model in the message.
    pub fn check(&self, p: &Params, what: &str) -> Result<(), MetaError> {
        let found = layout_of(p);
        if found != self.layout {
            return Err(MetaError::Architecture {
                what: what.to_string(),
                expected: describe(&self.layout),
                found: describe(&found),
            });
        }
        if let Some(i) = p
            .tensors
            .iter()
            .position(|t| t.iter().any(|v| !v.is_finite()))
        {
            return Err(MetaError::BadSetup(format!(
                "{what}: tensor {} holds a non-finite value",
                self.layout[i].0
            )));
        }
        Ok(())
    }

    /// Tokens per model in chunks of `chunk`: each tensor is cut on its own and its last
    /// chunk zero-padded, so no token mixes two tensors.
    pub fn n_tokens(&self, chunk: usize) -> usize {
        self.layout.iter().map(|(_, n)| n_tokens(*n, chunk)).sum()
    }

    /// The standardised values of `p` as [`n_tokens`](Self::n_tokens) rows of `chunk`,
    /// appended to `out`; each tensor starts a new token and its last one is zero-padded.
    /// The layout must have been checked.
    pub fn push_tokens(&self, p: &Params, chunk: usize, out: &mut Vec<f32>) {
        for (t, values) in p.tensors.iter().enumerate() {
            let (m, s) = (self.mean[t], self.std[t]);
            let start = out.len();
            out.extend(values.iter().map(|v| (v - m) / s));
            out.resize(start + n_tokens(values.len(), chunk) * chunk, 0.0);
        }
    }
}

/// Tokens for `values` parameters in chunks of `chunk` (the last one zero-padded).
pub fn n_tokens(values: usize, chunk: usize) -> usize {
    values.div_ceil(chunk.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnn::CnnConfig;
    use rand::{rngs::StdRng, SeedableRng};

    fn tiny() -> CnnConfig {
        crate::cnn::test_config(8, &[2, 4], 3)
    }

    #[test]
    fn standardises_per_tensor_and_pads() {
        let cfg = tiny();
        let mut rng = StdRng::seed_from_u64(1);
        let models: Vec<Params> = (0..5).map(|_| Params::init(&cfg, &mut rng)).collect();
        let norm = Normaliser::fit(&models).unwrap();
        // LayerNorm gains are all 1 at init: zero variance -> scale 1, mean 1.
        let g = norm
            .layout
            .iter()
            .position(|(n, _)| n == "blocks.0.ln1.weight")
            .unwrap();
        assert_eq!((norm.mean[g], norm.std[g]), (1.0, 1.0));
        let mut out = Vec::new();
        norm.push_tokens(&models[0], 16, &mut out);
        assert_eq!(out.len(), norm.n_tokens(16) * 16);
        // One token per started 16 values of each tensor: biases of 2 values take a token each.
        let expected: usize = norm.layout.iter().map(|(_, n)| n.div_ceil(16)).sum();
        assert_eq!(norm.n_tokens(16), expected);
        let g_start: usize = norm.layout[..g]
            .iter()
            .map(|(_, n)| n.div_ceil(16) * 16)
            .sum();
        assert_eq!(out[g_start], 0.0, "a LayerNorm gain of 1 standardises to 0");
        assert_eq!(&out[g_start + 2..g_start + 16], &[0.0; 14], "padding");
        // Pooled over the training set, each conv tensor is standardised to mean 0, std 1.
        let mut all = Vec::new();
        for m in &models {
            all.extend(
                m.tensors[0]
                    .iter()
                    .map(|v| (v - norm.mean[0]) / norm.std[0]),
            );
        }
        let mean = all.iter().sum::<f32>() / all.len() as f32;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / all.len() as f32;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }

    #[test]
    fn statistics_are_standardised_and_permutation_invariant() {
        let cfg = tiny();
        let mut rng = StdRng::seed_from_u64(3);
        let models: Vec<Params> = (0..6).map(|_| Params::init(&cfg, &mut rng)).collect();
        let norm = Normaliser::fit(&models).unwrap();
        assert!(norm.has_stats());
        let width = norm.layout.len() * STATS_PER_TENSOR;
        let rows: Vec<Vec<f32>> = models
            .iter()
            .map(|m| {
                let mut r = Vec::new();
                norm.push_stats(m, &mut r);
                r
            })
            .collect();
        assert!(rows.iter().all(|r| r.len() == width));
        // Over the training models each statistic has mean 0 (its deviation is 1, or the
        // statistic is constant and stays 0).
        for j in 0..width {
            let mean = rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32;
            assert!(mean.abs() < 1e-3, "statistic {j}: mean {mean}");
        }
        // Permuting hidden units reorders values within tensors: the statistics stay.
        let perm = crate::cnn::permute_hidden_units(&models[0], &cfg, &mut rng);
        assert_ne!(perm, models[0]);
        let mut r = Vec::new();
        norm.push_stats(&perm, &mut r);
        for (a, b) in r.iter().zip(&rows[0]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn other_architecture_is_a_clear_error() {
        let mut rng = StdRng::seed_from_u64(2);
        let norm = Normaliser::fit(&[Params::init(&tiny(), &mut rng)]).unwrap();
        let other = CnnConfig {
            widths: vec![2, 8],
            ..tiny()
        };
        let e = norm
            .check(
                &Params::init(&other, &mut rng),
                "zoo/model-00003.safetensors",
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("model-00003") && msg.contains("tensors"),
            "{msg}"
        );
    }
}
