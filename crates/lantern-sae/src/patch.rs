//! Feature patching on indirect object identification (IOI; Wang et al. 2022, and the SAE paper's
//! section on it): which directions at one hook point carry the name the model is about to say?
//!
//! A clean prompt ("When Mary and John went to the store, John gave a drink to") makes the model
//! prefer the indirect object (" Mary") over the subject (" John"); its corrupted twin repeats the
//! other name ("..., Mary gave a drink to") and flips the preference. The metric is the logit
//! difference `logit(IO) - logit(S)` at the last position, averaged over prompts. Patching the
//! coefficients of a set of directions from the corrupted run into the clean one moves the metric;
//! a greedy search finds the smallest set that moves it most, for SAE latents and baselines alike.

use std::collections::BTreeMap;

use candle_core::Tensor;
use lantern_lm::runtime::{pad_batch, Lm};
use lantern_lm::{BlockSite, HookPoint, Hooks, LogitsFor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::basis::Basis;
use crate::{Result, SaeError};

/// First names tried as single tokens (with their leading space); those the tokenizer splits
/// are dropped.
const NAMES: &[&str] = &[
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Sarah", "Michael", "David", "Emma", "Anna",
    "Paul", "Kate", "Mark", "Lisa", "Peter", "Jack", "Laura", "Daniel", "Rachel", "Chris", "Steve",
    "Linda", "Brian", "Karen", "Kevin", "Susan", "Jason", "Emily", "Ryan", "Tim", "Sam", "Jessica",
    "Andrew", "Julia", "George", "Helen", "Frank", "Amy", "Eric",
];

/// Sentence templates: `{A}` and `{B}` are introduced, then `{S}` (the repeated name) acts and
/// the sentence stops before the indirect object.
const TEMPLATES: &[&str] = &[
    "When {A} and {B} went to the store, {S} gave a drink to",
    "When {A} and {B} went to the park, {S} gave a ball to",
    "After {A} and {B} went to the restaurant, {S} gave a gift to",
    "Then, {A} and {B} were working at the office. {S} decided to give a book to",
    "While {A} and {B} were walking in the garden, {S} handed a flower to",
    "Friends {A} and {B} found a key at the school. {S} gave it to",
];

/// One clean / corrupted prompt pair, tokenized to the same length.
#[derive(Debug, Clone, Serialize)]
pub struct IoiPair {
    pub text: String,
    pub clean: Vec<u32>,
    pub corrupt: Vec<u32>,
    /// The indirect object's token (the clean answer).
    pub io: u32,
    /// The subject's token (the corrupted answer).
    pub s: u32,
}

/// `n` IOI pairs from the built-in names and templates (half with the names in ABBA order, half
/// BABA), drawn with `seed`.
pub fn ioi_pairs(lm: &Lm, n: usize, seed: u64) -> Result<Vec<IoiPair>> {
    let tok = &lm.tokenizer;
    let bos = tok.add_bos_default();
    let one_token = |name: &str| -> Option<u32> {
        match tok.encode(&format!(" {name}"), false).ok()?.as_slice() {
            [id] => Some(*id),
            _ => None,
        }
    };
    let names: Vec<(&str, u32)> = NAMES
        .iter()
        .filter_map(|&nm| one_token(nm).map(|id| (nm, id)))
        .collect();
    if names.len() < 2 {
        return Err(SaeError::Config(
            "IOI: fewer than two built-in names are single tokens for this tokenizer".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n && tries < 100 * n.max(1) {
        tries += 1;
        let tpl = TEMPLATES[out.len() % TEMPLATES.len()];
        let two: Vec<&(&str, u32)> = names.choose_multiple(&mut rng, 2).collect();
        let ((io, io_id), (s, s_id)) = (*two[0], *two[1]);
        let (first, second) = if rng.gen_bool(0.5) { (io, s) } else { (s, io) };
        let fill = |repeat: &str| {
            tpl.replace("{A}", first)
                .replace("{B}", second)
                .replace("{S}", repeat)
        };
        let (clean_text, corrupt_text) = (fill(s), fill(io));
        let clean = tok
            .encode(&clean_text, bos)
            .map_err(lantern_lm::LmError::from)?;
        let corrupt = tok
            .encode(&corrupt_text, bos)
            .map_err(lantern_lm::LmError::from)?;
        let differing = clean.iter().zip(&corrupt).filter(|(a, b)| a != b).count();
        if clean.len() != corrupt.len() || differing != 1 {
            continue;
        }
        out.push(IoiPair {
            text: clean_text,
            clean,
            corrupt,
            io: io_id,
            s: s_id,
        });
    }
    if out.len() < n {
        return Err(SaeError::Config(format!(
            "IOI: only {} of {n} prompt pairs tokenize to equal lengths",
            out.len()
        )));
    }
    Ok(out)
}

/// Search settings.
#[derive(Debug, Clone, Serialize)]
pub struct PatchConfig {
    /// Directions with the largest coefficient change whose single patch is measured.
    pub candidates: usize,
    /// Of those, the ones with the largest single effect that the greedy search draws from.
    pub pool: usize,
    /// Directions the greedy search adds.
    pub steps: usize,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig {
            candidates: 96,
            pool: 24,
            steps: 12,
        }
    }
}

/// One point of a curve: the first `n` directions the search picked, patched together.
#[derive(Debug, Clone, Serialize)]
pub struct PatchStep {
    pub n: usize,
    /// The direction added at this step (`None` for the unpatched start).
    pub direction: Option<usize>,
    /// Mean logit difference with the set patched.
    pub metric: f64,
    /// `(clean - metric) / (clean - corrupt)`: 0 unpatched, 1 as far as the corrupted run.
    pub recovered: f64,
    /// Size of the edit: ‖patched − clean‖ / ‖corrupt − clean‖ over all positions.
    pub edit: f64,
}

/// The greedy search's result for one basis.
#[derive(Debug, Clone, Serialize)]
pub struct PatchCurve {
    pub basis: String,
    pub directions: usize,
    /// Directions whose coefficient differs between the runs anywhere.
    pub changed: usize,
    /// Every changed direction patched at once.
    pub all_metric: f64,
    pub all_recovered: f64,
    pub all_edit: f64,
    pub steps: Vec<PatchStep>,
}

/// Tokens per forward pass when rerunning (rows of several candidate sets go together).
const MAX_TOKENS: usize = 2048;

/// A direction whose coefficient differs between the runs, with that change per pair and
/// position.
struct Candidate<'b> {
    /// Its index in the basis.
    dir: usize,
    /// The direction itself (`[d]`).
    vector: &'b [f32],
    /// Per pair, `[T_p]`: corrupted minus clean coefficient.
    diffs: Vec<Vec<f32>>,
    /// Size of the change as an edit: ‖Δcoef‖ · ‖direction‖.
    norm: f64,
}

/// Clean and corrupted activations at one hook point, and a way to rerun the model from there.
pub struct Ioi<'a> {
    lm: &'a Lm,
    point: HookPoint,
    pub pairs: Vec<IoiPair>,
    /// Pair indices grouped by token length (one forward pass per group, no padding).
    groups: Vec<Vec<usize>>,
    clean: Vec<Vec<f32>>,
    corrupt: Vec<Vec<f32>>,
    d: usize,
    pub metric_clean: f64,
    pub metric_corrupt: f64,
    /// The clean metric recomputed through the patching path (a self-check; equals `metric_clean`
    /// up to rounding).
    pub metric_replayed: f64,
    /// ‖corrupt − clean‖ over all positions.
    diff_norm: f64,
}

impl<'a> Ioi<'a> {
    /// Runs every pair clean and corrupted, keeping the activations at `point` and the metric.
    pub fn new(lm: &'a Lm, point: HookPoint, pairs: Vec<IoiPair>) -> Result<Ioi<'a>> {
        crate::source::check_points(lm, &[point])?;
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, p) in pairs.iter().enumerate() {
            by_len.entry(p.clean.len()).or_default().push(i);
        }
        let groups: Vec<Vec<usize>> = by_len.into_values().collect();
        let mut clean = vec![Vec::new(); pairs.len()];
        let mut corrupt = vec![Vec::new(); pairs.len()];
        let (mut mc, mut mr) = (0.0, 0.0);
        let mut d = 0;
        for g in &groups {
            let (acts, width, ld) = run_group(lm, point, &pairs, g, |p| &p.clean)?;
            g.iter().zip(acts).for_each(|(&i, a)| clean[i] = a);
            let (acts, _, lr) = run_group(lm, point, &pairs, g, |p| &p.corrupt)?;
            g.iter().zip(acts).for_each(|(&i, a)| corrupt[i] = a);
            (d, mc, mr) = (width, mc + ld, mr + lr);
        }
        let n = pairs.len() as f64;
        let diff_norm = clean
            .iter()
            .zip(&corrupt)
            .flat_map(|(c, r)| c.iter().zip(r))
            .map(|(&c, &r)| ((r - c) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut ioi = Ioi {
            lm,
            point,
            pairs,
            groups,
            clean,
            corrupt,
            d,
            metric_clean: mc / n,
            metric_corrupt: mr / n,
            metric_replayed: f64::NAN,
            diff_norm,
        };
        ioi.metric_replayed = ioi.evaluate(&[], &[vec![]])?[0];
        Ok(ioi)
    }

    /// Width of the activations at the point.
    pub fn d(&self) -> usize {
        self.d
    }

    fn recovered(&self, metric: f64) -> f64 {
        (self.metric_clean - metric) / (self.metric_clean - self.metric_corrupt)
    }

    /// Mean logit difference for each set of candidates patched into the clean run.
    fn evaluate(&self, cands: &[Candidate<'_>], sets: &[Vec<usize>]) -> Result<Vec<f64>> {
        let mut sums = vec![0.0; sets.len()];
        for g in &self.groups {
            let t = self.pairs[g[0]].clean.len();
            let rows_per_pass = (MAX_TOKENS / t).max(g.len());
            let sets_per_pass = (rows_per_pass / g.len()).max(1);
            for (chunk_i, chunk) in sets.chunks(sets_per_pass).enumerate() {
                let mut acts = Vec::with_capacity(chunk.len() * g.len() * t * self.d);
                for set in chunk {
                    for &p in g {
                        acts.extend(self.patched(p, cands, set));
                    }
                }
                let lds = self.run_patched(g, chunk.len(), acts)?;
                for (s, ld) in lds.chunks(g.len()).enumerate() {
                    sums[chunk_i * sets_per_pass + s] += ld.iter().sum::<f64>();
                }
            }
        }
        let n = self.pairs.len() as f64;
        Ok(sums.into_iter().map(|s| s / n).collect())
    }

    /// Pair `p`'s clean activations with the set's coefficient changes added.
    fn patched(&self, p: usize, cands: &[Candidate<'_>], set: &[usize]) -> Vec<f32> {
        let mut x = self.clean[p].clone();
        for &c in set {
            let cand = &cands[c];
            for (row, &k) in x.chunks_exact_mut(self.d).zip(&cand.diffs[p]) {
                if k != 0.0 {
                    row.iter_mut()
                        .zip(cand.vector)
                        .for_each(|(v, &u)| *v += k * u);
                }
            }
        }
        x
    }

    /// ‖Σ edits‖ / ‖corrupt − clean‖ for one set.
    fn edit_size(&self, cands: &[Candidate<'_>], set: &[usize]) -> f64 {
        let mut total = 0.0;
        for p in 0..self.pairs.len() {
            let x = self.patched(p, cands, set);
            total += x
                .iter()
                .zip(&self.clean[p])
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
        }
        total.sqrt() / self.diff_norm.max(1e-12)
    }

    /// Reruns the model from the hook point on `acts` (`sets` copies of group `g`'s pairs) and
    /// returns each row's logit difference.
    fn run_patched(&self, g: &[usize], sets: usize, acts: Vec<f32>) -> Result<Vec<f64>> {
        let t = self.pairs[g[0]].clean.len();
        let rows = sets * g.len();
        let x = Tensor::from_vec(acts, (rows, t, self.d), self.lm.model.device())?;
        let start = match self.point {
            HookPoint::Embed => Some(0),
            HookPoint::Block {
                layer,
                site: BlockSite::ResidPre,
            } => Some(layer),
            HookPoint::Block {
                layer,
                site: BlockSite::ResidPost,
            } => Some(layer + 1),
            _ => None,
        };
        let logits = match start {
            Some(layer) => {
                self.lm
                    .model
                    .forward_from_layer(layer, &x, &mut Hooks::new(), LogitsFor::Last)?
            }
            None => {
                let seqs: Vec<Vec<u32>> = (0..sets)
                    .flat_map(|_| g.iter().map(|&i| self.pairs[i].clean.clone()))
                    .collect();
                let ids = pad_batch(&self.lm.model, &seqs)?;
                let mut hooks = Hooks::new().replace(self.point, x);
                self.lm
                    .model
                    .forward(&ids, None, &mut hooks, LogitsFor::Last)?
            }
        };
        let pairs = (0..sets).flat_map(|_| g.iter().map(|&i| &self.pairs[i]));
        logit_diffs(&logits.expect("logits"), pairs)
    }

    /// The greedy search over `basis`.
    pub fn search(&self, basis: &Basis<'_>, cfg: &PatchConfig) -> Result<PatchCurve> {
        if basis.d_in() != self.d {
            return Err(SaeError::Config(format!(
                "basis {} reads width {}, the hook point {} has {}",
                basis.name(),
                basis.d_in(),
                self.point,
                self.d
            )));
        }
        let cands = self.candidates(basis);
        let mut order: Vec<usize> = (0..cands.len()).collect();
        order.sort_by(|&a, &b| cands[b].norm.total_cmp(&cands[a].norm));
        order.truncate(cfg.candidates);
        let every: Vec<usize> = (0..cands.len()).collect();
        let all_metric = self.evaluate(&cands, std::slice::from_ref(&every))?[0];
        let all_edit = self.edit_size(&cands, &every);
        // Single effects of the largest changes, then the greedy search over the strongest.
        let singles: Vec<Vec<usize>> = order.iter().map(|&c| vec![c]).collect();
        let single = self.evaluate(&cands, &singles)?;
        let mut pool: Vec<(usize, f64)> = order.iter().copied().zip(single).collect();
        pool.sort_by(|a, b| a.1.total_cmp(&b.1));
        pool.truncate(cfg.pool);
        let mut chosen: Vec<usize> = Vec::new();
        let mut steps = vec![PatchStep {
            n: 0,
            direction: None,
            metric: self.metric_replayed,
            recovered: self.recovered(self.metric_replayed),
            edit: 0.0,
        }];
        for n in 1..=cfg.steps.min(pool.len()) {
            let rest: Vec<usize> = pool
                .iter()
                .map(|p| p.0)
                .filter(|c| !chosen.contains(c))
                .collect();
            let sets: Vec<Vec<usize>> = rest
                .iter()
                .map(|&c| chosen.iter().copied().chain([c]).collect())
                .collect();
            let ms = self.evaluate(&cands, &sets)?;
            let (best, &metric) = ms
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .expect("non-empty pool");
            chosen.push(rest[best]);
            steps.push(PatchStep {
                n,
                direction: Some(cands[rest[best]].dir),
                metric,
                recovered: self.recovered(metric),
                edit: self.edit_size(&cands, &chosen),
            });
        }
        Ok(PatchCurve {
            basis: basis.name().to_string(),
            directions: basis.len(),
            changed: cands.len(),
            all_metric,
            all_recovered: self.recovered(all_metric),
            all_edit,
            steps,
        })
    }

    /// Directions whose coefficient changes between the runs anywhere.
    fn candidates<'b>(&self, basis: &'b Basis<'_>) -> Vec<Candidate<'b>> {
        let m = basis.len();
        let per_pair: Vec<(Vec<f32>, Vec<f32>)> = (0..self.pairs.len())
            .map(|p| {
                (
                    basis.coefficients(&self.clean[p]),
                    basis.coefficients(&self.corrupt[p]),
                )
            })
            .collect();
        let mut sq = vec![0.0f64; m];
        for (c, r) in &per_pair {
            for (k, (&a, &b)) in c.iter().zip(r).enumerate() {
                sq[k % m] += ((b - a) as f64).powi(2);
            }
        }
        (0..m)
            .filter(|&i| sq[i] > 0.0)
            .map(|i| {
                let vector = basis.direction(i);
                let u: f64 = vector.iter().map(|&v| (v as f64).powi(2)).sum();
                Candidate {
                    dir: i,
                    vector,
                    diffs: per_pair
                        .iter()
                        .map(|(c, r)| {
                            c.chunks_exact(m)
                                .zip(r.chunks_exact(m))
                                .map(|(a, b)| b[i] - a[i])
                                .collect()
                        })
                        .collect(),
                    norm: (sq[i] * u).sqrt(),
                }
            })
            .collect()
    }
}

/// Runs one side (clean or corrupted, picked by `side`) of the equal-length pairs `g`: their
/// activations at `point` (`[T, d]` each), the width `d`, and the summed logit difference.
fn run_group(
    lm: &Lm,
    point: HookPoint,
    pairs: &[IoiPair],
    g: &[usize],
    side: fn(&IoiPair) -> &Vec<u32>,
) -> Result<(Vec<Vec<f32>>, usize, f64)> {
    let seqs: Vec<Vec<u32>> = g.iter().map(|&i| side(&pairs[i]).clone()).collect();
    let ids = pad_batch(&lm.model, &seqs)?;
    let mut hooks = Hooks::new().read(point);
    let logits = lm.model.forward(&ids, None, &mut hooks, LogitsFor::Last)?;
    let act = hooks.take(point).expect("hook point read");
    let (_, t, d) = act.dims3()?;
    let flat = act.flatten_all()?.to_vec1::<f32>()?;
    let acts = flat.chunks_exact(t * d).map(<[f32]>::to_vec).collect();
    let lds = logit_diffs(&logits.expect("logits"), g.iter().map(|&i| &pairs[i]))?;
    Ok((acts, d, lds.iter().sum()))
}

/// `logit(IO) - logit(S)` per row of last-position logits `[rows, 1, vocab]`.
fn logit_diffs<'p>(logits: &Tensor, pairs: impl Iterator<Item = &'p IoiPair>) -> Result<Vec<f64>> {
    let rows = logits.squeeze(1)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(pairs)
        .map(|(r, p)| (r[p.io as usize] - r[p.s as usize]) as f64)
        .collect())
}
