//! Example collection for automated interpretability: runs a corpus through the LM once and
//! picks, for a sample of SAE latents and of each baseline's directions (MLP neurons of the same
//! block, PCA directions, random directions), the windows an explainer and scorers read.

use lantern_lm::runtime::Lm;
use lantern_lm::{BlockSite, HookPoint};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::basis::Basis;
use crate::examples::{self, pick, quantile, Corpus, ExampleConfig, Record};
use crate::report::token_text;
use crate::sae::Sae;
use crate::source::{keep_position, run_windows};
use crate::{Result, SaeError};

/// What to collect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectConfig {
    /// Directions per basis.
    pub per_basis: usize,
    /// Baselines besides the SAE: `neurons`, `pca`, `random`.
    pub baselines: Vec<String>,
    pub examples: ExampleConfig,
    /// Quantile above which a dense direction counts as active.
    pub dense_quantile: f64,
    /// Rows the PCA is fitted to.
    pub pca_rows: usize,
    pub seed: u64,
}

/// Activations at the SAE's point (and MLP neurons) for every window position.
struct Pass {
    tokens: Vec<String>,
    kept: Vec<bool>,
    /// `[positions, d]` at the SAE's hook point.
    x: Vec<f32>,
    d: usize,
    /// Sampled MLP neurons and their activations per position.
    neurons: Vec<(usize, Vec<f32>)>,
}

/// Runs `contexts` (each `1 + k * window` tokens; position 0 is left out) and collects records
/// for the SAE and every baseline.
pub fn collect(
    lm: &Lm,
    sae: &Sae,
    point: HookPoint,
    contexts: &[Vec<u32>],
    cfg: &CollectConfig,
) -> Result<Vec<Record>> {
    let w = cfg.examples.window;
    if contexts.is_empty() || !(contexts[0].len() - 1).is_multiple_of(w) {
        return Err(SaeError::Config(format!(
            "contexts must be 1 + a multiple of the {w}-token window long"
        )));
    }
    let mut rng = examples::rng(cfg.seed);
    let pass = run(lm, point, contexts, cfg, &mut rng)?;
    if pass.d != sae.cfg.d_in {
        return Err(SaeError::Config(format!(
            "SAE reads width {}, {point} has width {}",
            sae.cfg.d_in, pass.d
        )));
    }
    let corpus = Corpus {
        tokens: &pass.tokens,
        kept: &pass.kept,
        window: w,
    };
    let mut out = sae_records(sae, &pass, &corpus, cfg, &mut rng);
    for b in &cfg.baselines {
        let columns: Vec<(usize, Vec<f32>)> = match b.as_str() {
            "neurons" => pass.neurons.clone(),
            "pca" => {
                let n = pass.x.len() / pass.d;
                let step = n.div_ceil(cfg.pca_rows.max(2)).max(1);
                let rows: Vec<f32> = pass
                    .x
                    .chunks_exact(pass.d)
                    .step_by(step)
                    .flatten()
                    .copied()
                    .collect();
                let basis = Basis::pca(&rows, pass.d)?;
                dense_columns(&basis, &pass, cfg.per_basis * 3, &mut rng)
            }
            "random" => {
                let basis = Basis::random(cfg.per_basis * 3, pass.d, rng.gen());
                dense_columns(&basis, &pass, cfg.per_basis * 3, &mut rng)
            }
            other => {
                return Err(SaeError::Config(format!(
                    "unknown baseline {other:?} (neurons, pca, random)"
                )))
            }
        };
        let mut got = 0;
        for (i, col) in columns {
            if got == cfg.per_basis {
                break;
            }
            let t = quantile(&col, &pass.kept, cfg.dense_quantile);
            if let Some(r) = pick(b, i, &col, t, &corpus, &cfg.examples, &mut rng) {
                out.push(r);
                got += 1;
            }
        }
    }
    Ok(out)
}

/// The LM pass: tokens, kept flags, activations at `point`, and a sample of MLP neurons.
fn run(
    lm: &Lm,
    point: HookPoint,
    contexts: &[Vec<u32>],
    cfg: &CollectConfig,
    rng: &mut impl Rng,
) -> Result<Pass> {
    let mlp = match point {
        HookPoint::Block { layer, .. } if cfg.baselines.iter().any(|b| b == "neurons") => {
            Some(HookPoint::block(layer, BlockSite::MlpAct))
        }
        _ => None,
    };
    let points: Vec<HookPoint> = [Some(point), mlp].into_iter().flatten().collect();
    let d_ff = lm.model.cfg.d_ff;
    let mut chosen: Vec<usize> = if mlp.is_some() {
        (0..d_ff).collect()
    } else {
        Vec::new()
    };
    chosen.shuffle(rng);
    chosen.truncate(cfg.per_basis * 3);
    let mut pass = Pass {
        tokens: Vec::new(),
        kept: Vec::new(),
        x: Vec::new(),
        d: 0,
        neurons: chosen.iter().map(|&i| (i, Vec::new())).collect(),
    };
    for chunk in contexts.chunks(8) {
        let acts = run_windows(lm, chunk, &points)?;
        let t = chunk[0].len();
        pass.d = acts[0].dim(2)?;
        let x = acts[0].flatten_all()?.to_vec1::<f32>()?;
        let m = match acts.get(1) {
            Some(a) => a.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        for (c, ctx) in chunk.iter().enumerate() {
            for p in 1..t {
                pass.tokens.push(token_text(lm, ctx[p]));
                pass.kept.push(keep_position(lm, ctx, p, false));
                let row = c * t + p;
                pass.x
                    .extend_from_slice(&x[row * pass.d..(row + 1) * pass.d]);
                for (i, col) in pass.neurons.iter_mut() {
                    col.push(m[row * d_ff + *i]);
                }
            }
        }
    }
    Ok(pass)
}

/// Records for SAE latents that fire in enough windows (and miss enough), sampled at random.
fn sae_records(
    sae: &Sae,
    pass: &Pass,
    corpus: &Corpus<'_>,
    cfg: &CollectConfig,
    rng: &mut impl Rng,
) -> Vec<Record> {
    let n = sae.cfg.num_latents;
    let w = cfg.examples.window;
    let positions = pass.x.len() / pass.d;
    let n_windows = positions / w;
    let mut codes = Vec::new();
    for chunk in pass.x.chunks(4096 * pass.d) {
        codes.push(sae.encode(chunk, false).codes);
    }
    let mut windows_fired = vec![0usize; n];
    let mut last = vec![usize::MAX; n];
    let mut pos = 0;
    for c in &codes {
        for r in 0..c.rows() {
            for (i, v) in c.row(r) {
                if v > 0.0 && pass.kept[pos] && last[i] != pos / w {
                    last[i] = pos / w;
                    windows_fired[i] += 1;
                }
            }
            pos += 1;
        }
    }
    let need = cfg.examples.n_explain + cfg.examples.n_score;
    let mut eligible: Vec<usize> = (0..n)
        .filter(|&i| {
            windows_fired[i] >= need && n_windows - windows_fired[i] >= cfg.examples.n_score
        })
        .collect();
    eligible.shuffle(rng);
    eligible.truncate(cfg.per_basis);
    let mut cols = vec![vec![0.0f32; positions]; eligible.len()];
    let slot: std::collections::HashMap<usize, usize> =
        eligible.iter().enumerate().map(|(s, &i)| (i, s)).collect();
    let mut pos = 0;
    for c in &codes {
        for r in 0..c.rows() {
            for (i, v) in c.row(r) {
                if let Some(&s) = slot.get(&i) {
                    cols[s][pos] = v;
                }
            }
            pos += 1;
        }
    }
    eligible
        .iter()
        .zip(cols)
        .filter_map(|(&i, col)| pick("sae", i, &col, 0.0, corpus, &cfg.examples, rng))
        .collect()
}

/// Activations of `want` randomly chosen directions of a dense basis at every position.
fn dense_columns(
    basis: &Basis<'_>,
    pass: &Pass,
    want: usize,
    rng: &mut impl Rng,
) -> Vec<(usize, Vec<f32>)> {
    let mut idx: Vec<usize> = (0..basis.len()).collect();
    idx.shuffle(rng);
    idx.truncate(want);
    idx.into_iter()
        .map(|i| (i, basis.coefficient(i, &pass.x)))
        .collect()
}
