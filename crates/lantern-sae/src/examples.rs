//! Examples of what a direction responds to, for automated interpretability: short token windows
//! with the direction's activation at every token, picked the way delphi and the SAE paper do —
//! the top-activating windows to explain from, held-out activating windows sampled across
//! activation quantiles and non-activating windows to score against.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One window of tokens with the direction's activation at each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub tokens: Vec<String>,
    pub acts: Vec<f32>,
}

impl Example {
    /// The largest activation in the window.
    pub fn max(&self) -> f32 {
        self.acts.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// The text with every token whose activation is above `threshold` in `<<..>>` (runs of
    /// such tokens share one pair of marks).
    pub fn highlighted(&self, threshold: f32) -> String {
        let marks: Vec<bool> = self.acts.iter().map(|&a| a > threshold).collect();
        mark(&self.tokens, &marks)
    }
}

/// The tokens joined, with the marked ones in `<<..>>`.
pub fn mark(tokens: &[String], marks: &[bool]) -> String {
    let mut s = String::new();
    let mut open = false;
    for (t, &m) in tokens.iter().zip(marks) {
        if m && !open {
            // Keep a token's leading space outside the marks: "the <<cat>>", not "the<< cat>>".
            let trimmed = t.trim_start();
            s.push_str(&t[..t.len() - trimmed.len()]);
            s.push_str("<<");
            s.push_str(trimmed);
            open = true;
            continue;
        }
        if !m && open {
            s.push_str(">>");
            open = false;
        }
        s.push_str(t);
    }
    if open {
        s.push_str(">>");
    }
    s
}

/// A direction's examples (and, once explained, its explanation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `sae`, `neurons`, `pca` or `random`.
    pub basis: String,
    pub index: usize,
    /// A token counts as active above this (0 for SAE latents; a high quantile for dense
    /// directions, whose activations are never exactly zero).
    pub threshold: f32,
    /// Fraction of all windows in which the direction is active.
    pub active_frac: f64,
    /// The top-activating windows the explainer reads.
    pub explain: Vec<Example>,
    /// Held-out activating windows, one per activation quantile bin.
    pub activating: Vec<Example>,
    /// Windows where the direction is not active anywhere.
    pub non_activating: Vec<Example>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// How many windows of which size each record takes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExampleConfig {
    /// Tokens per window.
    pub window: usize,
    /// Top-activating windows shown to the explainer.
    pub n_explain: usize,
    /// Activating and (as many) non-activating windows for scoring.
    pub n_score: usize,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        ExampleConfig {
            window: 32,
            n_explain: 10,
            n_score: 10,
        }
    }
}

/// Token strings and kept-position flags of all windows, laid end to end: window `w` is
/// positions `w * window .. (w + 1) * window`.
pub struct Corpus<'a> {
    pub tokens: &'a [String],
    /// Positions that may count as active (not BOS / EOS).
    pub kept: &'a [bool],
    pub window: usize,
}

/// Picks a record's examples from `acts` (one activation per position of `corpus`), or `None`
/// when the direction is active in too few windows or in too many to find inactive ones.
pub fn pick(
    basis: &str,
    index: usize,
    acts: &[f32],
    threshold: f32,
    corpus: &Corpus<'_>,
    cfg: &ExampleConfig,
    rng: &mut impl Rng,
) -> Option<Record> {
    let floor = acts
        .iter()
        .zip(corpus.kept)
        .filter(|(_, &k)| k)
        .map(|(&a, _)| a)
        .fold(f32::INFINITY, f32::min)
        .min(threshold);
    let acts: Vec<f32> = acts
        .iter()
        .zip(corpus.kept)
        .map(|(&a, &k)| if k { a } else { floor })
        .collect();
    let n_windows = acts.len() / corpus.window;
    let maxes: Vec<f32> = acts
        .chunks_exact(corpus.window)
        .map(|w| w.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let mut active: Vec<usize> = (0..n_windows).filter(|&w| maxes[w] > threshold).collect();
    let inactive: Vec<usize> = (0..n_windows).filter(|&w| maxes[w] <= threshold).collect();
    if active.len() < cfg.n_explain + cfg.n_score || inactive.len() < cfg.n_score {
        return None;
    }
    active.sort_by(|&a, &b| maxes[b].total_cmp(&maxes[a]));
    let example = |w: usize| Example {
        tokens: corpus.tokens[w * corpus.window..(w + 1) * corpus.window].to_vec(),
        acts: acts[w * corpus.window..(w + 1) * corpus.window].to_vec(),
    };
    let explain = active[..cfg.n_explain]
        .iter()
        .map(|&w| example(w))
        .collect();
    // One window from each of n_score equal bins of the remaining activating windows.
    let rest = &active[cfg.n_explain..];
    let activating = (0..cfg.n_score)
        .map(|b| {
            let lo = b * rest.len() / cfg.n_score;
            let hi = ((b + 1) * rest.len() / cfg.n_score).max(lo + 1);
            example(rest[rng.gen_range(lo..hi)])
        })
        .collect();
    let non_activating = inactive
        .choose_multiple(rng, cfg.n_score)
        .map(|&w| example(w))
        .collect();
    Some(Record {
        basis: basis.to_string(),
        index,
        threshold,
        active_frac: active.len() as f64 / n_windows as f64,
        explain,
        activating,
        non_activating,
        explanation: None,
    })
}

/// The `q`-quantile (0..1) of the values at kept positions.
pub fn quantile(acts: &[f32], kept: &[bool], q: f64) -> f32 {
    let mut v: Vec<f32> = acts
        .iter()
        .zip(kept)
        .filter(|(_, &k)| k)
        .map(|(&a, _)| a)
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    let at = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
    *x
}

/// A seeded generator for example picking.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize) -> Vec<String> {
        (0..n).map(|i| format!(" t{i}")).collect()
    }

    #[test]
    fn marks_runs_of_active_tokens_outside_their_spaces() {
        let t = toks(5);
        let s = mark(&t, &[false, true, true, false, true]);
        assert_eq!(s, " t0 <<t1 t2>> t3 <<t4>>");
        let e = Example {
            tokens: t,
            acts: vec![0.0, 2.0, 0.0, 0.0, 0.0],
        };
        assert_eq!(e.highlighted(0.5), " t0 <<t1>> t2 t3 t4");
        assert_eq!(e.max(), 2.0);
    }

    #[test]
    fn picks_top_windows_to_explain_and_disjoint_ones_to_score() {
        // 40 windows of 4 tokens; window w peaks at w for even w, silent for odd w.
        let window = 4;
        let n = 40;
        let tokens = toks(n * window);
        let mut kept = vec![true; n * window];
        let mut acts = vec![0.0f32; n * window];
        for w in (0..n).step_by(2) {
            acts[w * window + 2] = w as f32 + 1.0;
        }
        // A masked position never counts, however large.
        acts[window + 1] = 100.0;
        kept[window + 1] = false;
        let corpus = Corpus {
            tokens: &tokens,
            kept: &kept,
            window,
        };
        let cfg = ExampleConfig {
            window,
            n_explain: 3,
            n_score: 4,
        };
        let r = pick("sae", 7, &acts, 0.0, &corpus, &cfg, &mut rng(1)).unwrap();
        let tops: Vec<f32> = r.explain.iter().map(Example::max).collect();
        assert_eq!(tops, [39.0, 37.0, 35.0]);
        assert_eq!(r.activating.len(), 4);
        assert!(r.activating.iter().all(|e| e.max() > 0.0 && e.max() < 35.0));
        // Quantile bins: the first scoring window is from the top bin, the last from the bottom.
        assert!(r.activating[0].max() > r.activating[3].max());
        assert!(r.non_activating.iter().all(|e| e.max() <= 0.0));
        assert_eq!(r.non_activating.len(), 4);
        assert!((r.active_frac - 0.5).abs() < 1e-9);
        // Too few activating windows: no record.
        let cfg = ExampleConfig {
            n_explain: 15,
            n_score: 10,
            ..cfg
        };
        assert!(pick("sae", 7, &acts, 0.0, &corpus, &cfg, &mut rng(1)).is_none());
    }

    #[test]
    fn quantile_reads_kept_values_only() {
        let acts = [5.0, 1.0, 2.0, 3.0, 100.0];
        let kept = [true, true, true, true, false];
        assert_eq!(quantile(&acts, &kept, 0.0), 1.0);
        assert_eq!(quantile(&acts, &kept, 1.0), 5.0);
        assert_eq!(quantile(&acts, &kept, 0.5), 3.0);
    }
}
