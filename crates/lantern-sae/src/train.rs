//! Training: a hand-written forward and backward pass, Adam, dead-latent tracking, checkpoints.
//!
//! For TopK and BatchTopK only the encoder product is dense: every selected latent touches one
//! encoder row and one decoder row, so the backward pass gathers per latent the few
//! (row, activation, gradient) triples that name it and updates only those rows. The loss is
//! sparsify's: `FVU(k)`, plus `FVU(4k) / 8` with Multi-TopK, plus `auxk_alpha` times the AuxK
//! loss — the dead latents' top `d_in / 2` reconstructing the detached residual, without
//! `b_dec`, scaled by `min(dead / k_aux, 1)`. ReLU SAEs train on `FVU + l1_coef * L1` where the L1
//! term is the mean code mass per row divided by the rows' RMS distance to their mean (both terms
//! are then free of the activations' scale), with dense products.
//!
//! Decoder rows stay unit-norm: the gradient's component along each row is removed before the
//! step and the rows are renormalised after it.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SaeError};
use crate::linalg::{axpy, dot, dot_and_axpy, matmul, matmul_into, prefetch, Mat};
use crate::sae::{
    normalize_row, read_safetensors, write_atomic, write_safetensors, Activation, Pick, Sae,
};
use crate::topk::{batch_candidates, batch_top_k_of, Codes};

/// Optimiser and schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate; `None`: `base_lr / sqrt(num_latents / 2^14)` (sparsify's scaling).
    /// sparsify's base is 2e-4 for batches of 32 x 2048 tokens; Lantern's default batch is 1024
    /// rows, where 7.5e-4 trains faster (1e-3 at 9216 latents: FVU 0.35 vs 0.45 after 300k
    /// tokens of SmolLM2's layer-15 residual stream).
    pub lr: Option<f32>,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AuxK coefficient (OpenAI's 1/32; 0 turns AuxK off).
    pub auxk_alpha: f32,
    /// A latent that has not fired for this many tokens is dead.
    pub dead_tokens: u64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: None,
            warmup_steps: 1000,
            auxk_alpha: 1.0 / 32.0,
            dead_tokens: 10_000_000,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl TrainConfig {
    /// The peak learning rate for an SAE of `num_latents` latents.
    pub fn peak_lr(&self, num_latents: usize) -> f32 {
        self.lr
            .unwrap_or_else(|| 7.5e-4 / (num_latents as f32 / 16384.0).sqrt())
    }

    /// The learning rate of step `step` (0-based): the peak after a linear warm-up.
    pub fn lr_at(&self, step: u64, num_latents: usize) -> f32 {
        let warm = self.warmup_steps.max(1) as f32;
        self.peak_lr(num_latents) * ((step + 1) as f32 / warm).min(1.0)
    }

    /// Which latents are dead, from each one's tokens since it last fired.
    pub fn dead_mask(&self, since_fired: &[u64]) -> Vec<bool> {
        since_fired.iter().map(|&s| s >= self.dead_tokens).collect()
    }

    /// The fraction of latents that are dead.
    pub fn dead_frac(&self, since_fired: &[u64]) -> f32 {
        let dead = since_fired
            .iter()
            .filter(|&&s| s >= self.dead_tokens)
            .count();
        dead as f32 / since_fired.len().max(1) as f32
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f32,
    pub fvu: f32,
    pub auxk_loss: f32,
    pub multi_topk_fvu: f32,
    pub l1: f32,
    /// Mean non-zero latents per row.
    pub l0: f32,
    /// Fraction of latents dead after this step.
    pub dead_frac: f32,
    pub lr: f32,
}

/// Gradients, laid out like the parameters.
#[derive(Debug, Clone)]
struct Grads {
    w_enc: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
}

impl Grads {
    fn zeros(n: usize, d: usize) -> Grads {
        Grads {
            w_enc: vec![0.0; n * d],
            b_enc: vec![0.0; n],
            w_dec: vec![0.0; n * d],
            b_dec: vec![0.0; d],
        }
    }
}

/// Adam moments for one tensor.
#[derive(Debug, Clone)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    fn zeros(len: usize) -> Moments {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// One bias-corrected Adam update of `p` with gradient `g`.
    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, c: &TrainConfig, t: u64) {
        let k = AdamStep::new(lr, c, t);
        let chunk = 4096;
        p.par_chunks_mut(chunk)
            .zip(g.par_chunks(chunk))
            .zip(self.m.par_chunks_mut(chunk))
            .zip(self.v.par_chunks_mut(chunk))
            .for_each(|(((p, g), m), v)| k.apply(p, g, m, v));
    }
}

/// The constants of one Adam step (bias corrections folded in), applied slice by slice: the CPU
/// trainer's and, through [`crate::sparse_ops::adam_step`], the device trainer's.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    /// The learning rate over the first moment's bias correction.
    pub(crate) step: f32,
    /// The second moment's bias correction.
    pub(crate) bc2: f32,
}

impl AdamStep {
    /// Step `t` (1-based) at learning rate `lr`.
    pub fn new(lr: f32, c: &TrainConfig, t: u64) -> AdamStep {
        let bc1 = 1.0 - c.beta1.powi(t as i32);
        AdamStep {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            step: lr / bc1,
            bc2: 1.0 - c.beta2.powi(t as i32),
        }
    }

    /// Adam on one decoder row; with `unit` the gradient's component along the row is removed
    /// first and the row is put back to unit norm after.
    pub(crate) fn decoder_row(
        &self,
        unit: bool,
        w: &mut [f32],
        g: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        if unit {
            axpy(-dot(g, w), w, g);
        }
        self.apply(w, g, m, v);
        if unit {
            normalize_row(w);
        }
    }

    pub(crate) fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for i in 0..p.len() {
            m[i] = self.beta1 * m[i] + (1.0 - self.beta1) * g[i];
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g[i] * g[i];
            p[i] -= self.step * m[i] / ((v[i] / self.bc2).sqrt() + self.eps);
        }
    }
}

/// One selected latent of one row, on its way through the backward pass.
#[derive(Debug, Clone, Copy)]
struct Entry {
    row: u32,
    latent: u32,
    /// The activation.
    act: f32,
    /// Which decoded set it belongs to: its position in the list of sets (main first, then
    /// Multi-TopK and AuxK when they run), which is also its output gradient's.
    set: u8,
}

/// An SAE with its optimiser state.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub sae: Sae,
    pub cfg: TrainConfig,
    /// Steps taken.
    pub step: u64,
    /// Activation vectors trained on.
    pub tokens: u64,
    /// Tokens since each latent last fired.
    pub since_fired: Vec<u64>,
    adam: [Moments; 4],
    grads: Grads,
}

impl Trainer {
    /// A trainer for `sae` (already initialised, `b_dec` set).
    pub fn new(sae: Sae, cfg: TrainConfig) -> Trainer {
        let (n, d) = (sae.cfg.num_latents, sae.cfg.d_in);
        Trainer {
            adam: [
                Moments::zeros(n * d),
                Moments::zeros(n),
                Moments::zeros(n * d),
                Moments::zeros(d),
            ],
            grads: Grads::zeros(0, 0),
            since_fired: vec![0; n],
            step: 0,
            tokens: 0,
            sae,
            cfg,
        }
    }

    /// Adam's first and second moments of parameter `i` (`w_enc`, `b_enc`, `w_dec`, `b_dec`).
    pub(crate) fn moments(&self, i: usize) -> (&[f32], &[f32]) {
        (&self.adam[i].m, &self.adam[i].v)
    }

    /// Replaces parameter `i`'s Adam moments (the device trainer hands its state back).
    pub(crate) fn set_moments(&mut self, i: usize, m: Vec<f32>, v: Vec<f32>) {
        self.adam[i] = Moments { m, v };
    }

    /// The dead mask: latents that have not fired for `dead_tokens` tokens.
    pub fn dead_mask(&self) -> Vec<bool> {
        self.cfg.dead_mask(&self.since_fired)
    }

    /// Fraction of latents currently dead.
    pub fn dead_frac(&self) -> f32 {
        self.cfg.dead_frac(&self.since_fired)
    }

    /// The learning rate at the current step.
    pub fn lr(&self) -> f32 {
        self.cfg.lr_at(self.step, self.sae.cfg.num_latents)
    }

    /// One optimisation step on a batch `x` `[rows, d_in]`.
    ///
    /// TopK and BatchTopK SAEs take the step latent by latent inside the backward pass (each
    /// latent's encoder and decoder rows get their Adam update as soon as their gradients are
    /// known, so the gradients never go to memory); ReLU SAEs compute every gradient first.
    pub fn train_step(&mut self, x: &[f32]) -> StepStats {
        let d = self.sae.cfg.d_in;
        let rows = x.len() / d;
        let lr = self.lr();
        let mut stats = match self.sae.cfg.activation {
            Activation::Relu => {
                let stats = self.compute_grads(x);
                self.apply(lr);
                stats
            }
            _ => {
                let tv = total_variance(x, d).max(1e-12);
                self.backward_sparse(x, rows, tv, Some(lr))
            }
        };
        stats.lr = lr;
        self.tokens += rows as u64;
        stats.dead_frac = self.dead_frac();
        stats
    }

    /// The loss on `x` and its gradients (into `self.grads`); updates the firing counters.
    fn compute_grads(&mut self, x: &[f32]) -> StepStats {
        let (n, d) = (self.sae.cfg.num_latents, self.sae.cfg.d_in);
        if self.grads.w_enc.len() != n * d {
            self.grads = Grads::zeros(n, d);
        }
        let rows = x.len() / d;
        let tv = total_variance(x, d).max(1e-12);
        match self.sae.cfg.activation {
            Activation::Relu => self.backward_dense(x, rows, tv),
            _ => self.backward_sparse(x, rows, tv, None),
        }
    }

    /// The codes a TopK / BatchTopK step decodes, from one pass over the encoder product. One
    /// pick of each row's top `4k` serves three selections when any of them needs it: Multi-TopK
    /// decodes it whole, BatchTopK takes its batch threshold among it, and the main top k is its
    /// first k (rows come out largest first).
    fn select(&self, x: &[f32], dead: &[bool], num_dead: usize) -> Selection {
        let c = &self.sae.cfg;
        let (n, k) = (c.num_latents, c.k);
        let batch = c.activation == Activation::BatchTopK;
        // BatchTopK's candidates per row: also Multi-TopK's 4k.
        let wide = batch_candidates(n, k);
        let main_k = if batch || c.multi_topk { wide } else { k };
        let mut picks = vec![Pick {
            k: main_k,
            allowed: None,
        }];
        let with_aux = self.cfg.auxk_alpha > 0.0 && num_dead > 0;
        if with_aux {
            picks.push(Pick {
                k: aux_k(c.d_in).min(num_dead),
                allowed: Some(dead),
            });
        }
        let (centered, mut picked) = self.sae.encode_picks(x, &picks);
        let aux = if with_aux { picked.pop() } else { None };
        let main = picked.pop().expect("the main pick");
        let (codes, multi) = match (batch, c.multi_topk) {
            (true, multi) => (batch_top_k_of(&main, k), multi.then_some(main)),
            (false, true) => (main.first(k), Some(main)),
            (false, false) => (main, None),
        };
        Selection {
            centered,
            codes,
            multi,
            aux,
        }
    }

    /// Forward and backward for TopK / BatchTopK: fills `self.grads`, or, given the learning
    /// rate, takes the Adam step in place.
    fn backward_sparse(&mut self, x: &[f32], rows: usize, tv: f32, lr: Option<f32>) -> StepStats {
        let (n, d) = (self.sae.cfg.num_latents, self.sae.cfg.d_in);
        let dead = self.dead_mask();
        let num_dead = dead.iter().filter(|&&m| m).count();
        let k_aux = aux_k(d);
        let Selection {
            centered,
            codes,
            multi,
            aux,
        } = self.select(x, &dead, num_dead);
        let sae = &self.sae;
        let recon = sae.decode(&codes, true);
        let mut stats = StepStats {
            l0: codes.nnz() as f32 / rows.max(1) as f32,
            ..StepStats::default()
        };
        // Output gradients, one per decoded set: d loss / d output.
        let err = diff(&recon, x);
        stats.fvu = sum_sq(&err) / tv;
        let mut outs = vec![scaled(&err, 2.0 / tv)];
        // (codes, whether their decode adds b_dec), in the order of `outs`.
        let mut sets = vec![(&codes, true)];
        if let Some(multi) = &multi {
            let e4 = diff(&sae.decode(multi, true), x);
            stats.multi_topk_fvu = sum_sq(&e4) / tv;
            outs.push(scaled(&e4, 2.0 / tv / 8.0));
            sets.push((multi, true));
        }
        if let Some(aux) = &aux {
            let scale = (num_dead as f32 / k_aux as f32).min(1.0);
            // The residual the dead latents should explain, detached: x - x̂.
            let neg_err = scaled(&err, -1.0);
            let gap = diff(&sae.decode(aux, false), &neg_err);
            let c = self.cfg.auxk_alpha * scale;
            stats.auxk_loss = sum_sq(&gap) / tv;
            stats.loss += c * stats.auxk_loss;
            outs.push(scaled(&gap, 2.0 * c / tv));
            sets.push((aux, false));
        }
        stats.loss += stats.fvu + stats.multi_topk_fvu / 8.0;
        self.mark_fired(&codes);
        // b_dec's gradient: + Σ G over the decodes that add b_dec (not AuxK's), - Σ_j
        // g_b_enc[j] W_enc[j] (that part summed by the latent pass, before it moves W_enc).
        let mut g_b_dec = vec![0f32; d];
        for (out, &(_, adds_b_dec)) in outs.iter().zip(&sets) {
            if adds_b_dec {
                let part = column_sums(out, d);
                g_b_dec.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
        }
        let outs: Vec<&[f32]> = outs.iter().map(|o| o.as_slice()).collect();
        let pass = LatentPass {
            d,
            outs: &outs,
            centered: &centered,
            by_latent: ByLatent::new(&collect_entries(&sets), n),
        };
        let enc_part = match lr {
            None => pass.store(&self.sae, &mut self.grads),
            Some(lr) => {
                self.step += 1;
                let adam = AdamStep::new(lr, &self.cfg, self.step);
                let [m_we, m_be, m_wd, _] = &mut self.adam;
                pass.step(&mut self.sae, [m_we, m_be, m_wd], adam)
            }
        };
        g_b_dec.iter_mut().zip(&enc_part).for_each(|(a, b)| *a -= b);
        match lr {
            None => self.grads.b_dec = g_b_dec,
            Some(lr) => {
                let m_bd = &mut self.adam[3];
                m_bd.step(&mut self.sae.b_dec, &g_b_dec, lr, &self.cfg, self.step);
            }
        }
        stats
    }

    /// Forward and backward for ReLU + L1, with dense products.
    fn backward_dense(&mut self, x: &[f32], rows: usize, tv: f32) -> StepStats {
        let sae = &self.sae;
        let (n, d) = (sae.cfg.num_latents, sae.cfg.d_in);
        let enc = sae.encode(x, true);
        let acts: Vec<f32> = enc.pre.par_iter().map(|&v| v.max(0.0)).collect();
        let recon = sae.decode_dense(&acts);
        let err: Vec<f32> = recon.iter().zip(x).map(|(r, x)| r - x).collect();
        let fvu = err.iter().map(|e| e * e).sum::<f32>() / tv;
        // L1 per row, relative to the rows' RMS distance to their mean.
        let rms = (tv / rows.max(1) as f32).sqrt();
        let l1_scale = 1.0 / (rows.max(1) as f32 * rms);
        let l1 = acts.par_iter().sum::<f32>() * l1_scale;
        let lambda = sae.cfg.l1_coef;
        let g_out: Vec<f32> = err.iter().map(|e| 2.0 * e / tv).collect();
        let mut g_pre = matmul(Mat::new(&g_out, rows, d), Mat::new(&sae.w_dec, n, d).t());
        g_pre
            .par_iter_mut()
            .zip(&enc.pre)
            .for_each(|(g, &p)| *g = if p > 0.0 { *g + lambda * l1_scale } else { 0.0 });
        let g = &mut self.grads;
        matmul_into(
            Mat::new(&acts, rows, n).t(),
            Mat::new(&g_out, rows, d),
            &mut g.w_dec,
            0.0,
        );
        matmul_into(
            Mat::new(&g_pre, rows, n).t(),
            Mat::new(&enc.centered, rows, d),
            &mut g.w_enc,
            0.0,
        );
        g.b_enc.iter_mut().for_each(|v| *v = 0.0);
        for r in g_pre.chunks_exact(n) {
            g.b_enc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        let g_xc = matmul(Mat::new(&g_pre, rows, n), Mat::new(&sae.w_enc, n, d));
        let mut g_b_dec = vec![0f32; d];
        for (go, gx) in g_out.chunks_exact(d).zip(g_xc.chunks_exact(d)) {
            for i in 0..d {
                g_b_dec[i] += go[i] - gx[i];
            }
        }
        g.b_dec = g_b_dec;
        let l0 = acts.iter().filter(|&&a| a > 0.0).count() as f32 / rows.max(1) as f32;
        let fired = Codes::from_rows(
            acts.chunks_exact(n)
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .filter(|(_, &a)| a > 0.0)
                        .map(|(i, &a)| (i as u32, a))
                        .collect()
                })
                .collect(),
        );
        self.mark_fired(&fired);
        StepStats {
            loss: fvu + lambda * l1,
            fvu,
            l1,
            l0,
            ..StepStats::default()
        }
    }

    /// Updates the tokens-since-fired counters.
    fn mark_fired(&mut self, codes: &Codes) {
        let rows = codes.rows() as u64;
        self.since_fired
            .iter_mut()
            .for_each(|s| *s = s.saturating_add(rows));
        for &j in &codes.idx {
            self.since_fired[j as usize] = 0;
        }
    }

    /// Adam on every parameter, keeping decoder rows unit-norm (and tied weights tied).
    fn apply(&mut self, lr: f32) {
        self.step += 1;
        let d = self.sae.cfg.d_in;
        let g = &mut self.grads;
        if self.sae.cfg.tied {
            let enc = std::mem::take(&mut g.w_enc);
            g.w_dec.par_iter_mut().zip(&enc).for_each(|(a, b)| *a += b);
            g.w_enc = enc;
        }
        let (c, t) = (&self.cfg, self.step);
        let [m_we, m_be, m_wd, m_bd] = &mut self.adam;
        if !self.sae.cfg.tied {
            m_we.step(&mut self.sae.w_enc, &g.w_enc, lr, c, t);
        }
        m_be.step(&mut self.sae.b_enc, &g.b_enc, lr, c, t);
        if self.sae.cfg.normalize_decoder {
            // One pass per decoder row: drop the gradient's component along the row, Adam,
            // back to unit norm.
            let k = AdamStep::new(lr, c, t);
            self.sae
                .w_dec
                .par_chunks_mut(d)
                .zip(g.w_dec.par_chunks_mut(d))
                .zip(m_wd.m.par_chunks_mut(d))
                .zip(m_wd.v.par_chunks_mut(d))
                .for_each(|(((w, g), m), v)| k.decoder_row(true, w, g, m, v));
        } else {
            m_wd.step(&mut self.sae.w_dec, &g.w_dec, lr, c, t);
        }
        m_bd.step(&mut self.sae.b_dec, &g.b_dec, lr, c, t);
        if self.sae.cfg.tied {
            self.sae.w_enc.copy_from_slice(&self.sae.w_dec);
        }
    }

    /// Saves the SAE (sparsify layout) and the optimiser state beside it, so a run resumes.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.sae.save(dir)?;
        let [a, b, c, d] = &self.adam;
        let since: Vec<f32> = self.since_fired.iter().map(|&s| s as f32).collect();
        let t = [
            ("m.w_enc", vec![a.m.len()], &a.m),
            ("v.w_enc", vec![a.v.len()], &a.v),
            ("m.b_enc", vec![b.m.len()], &b.m),
            ("v.b_enc", vec![b.v.len()], &b.v),
            ("m.w_dec", vec![c.m.len()], &c.m),
            ("v.w_dec", vec![c.v.len()], &c.v),
            ("m.b_dec", vec![d.m.len()], &d.m),
            ("v.b_dec", vec![d.v.len()], &d.v),
            ("since_fired", vec![since.len()], &since),
        ];
        write_safetensors(&dir.join("optimizer.safetensors"), &t)?;
        let state = serde_json::json!({
            "step": self.step, "tokens": self.tokens, "train": self.cfg,
        });
        write_atomic(
            &dir.join("trainer.json"),
            &serde_json::to_vec_pretty(&state).expect("state serialises"),
        )
    }

    /// Loads an SAE and its optimiser state written by [`Trainer::save`].
    pub fn load(dir: &Path) -> Result<Trainer> {
        let sae = Sae::load(dir)?;
        let path = dir.join("trainer.json");
        let text = std::fs::read(&path).map_err(|e| SaeError::io(&path, e))?;
        let state: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| SaeError::bad_file(&path, format!("not JSON: {e}")))?;
        let cfg: TrainConfig = serde_json::from_value(state["train"].clone())
            .map_err(|e| SaeError::bad_file(&path, format!("bad train config: {e}")))?;
        let mut tr = Trainer::new(sae, cfg);
        tr.step = state["step"].as_u64().unwrap_or(0);
        tr.tokens = state["tokens"].as_u64().unwrap_or(0);
        let opt = dir.join("optimizer.safetensors");
        let mut t = read_safetensors(&opt)?;
        let mut take = |name: &str, want: usize| -> Result<Vec<f32>> {
            match t.remove(name) {
                Some((_, v)) if v.len() == want => Ok(v),
                _ => Err(SaeError::bad_file(
                    &opt,
                    format!("missing or mis-sized {name}"),
                )),
            }
        };
        let (n, d) = (tr.sae.cfg.num_latents, tr.sae.cfg.d_in);
        for (i, (name, len)) in [
            ("w_enc", n * d),
            ("b_enc", n),
            ("w_dec", n * d),
            ("b_dec", d),
        ]
        .into_iter()
        .enumerate()
        {
            tr.adam[i].m = take(&format!("m.{name}"), len)?;
            tr.adam[i].v = take(&format!("v.{name}"), len)?;
        }
        tr.since_fired = take("since_fired", n)?.iter().map(|&s| s as u64).collect();
        Ok(tr)
    }
}

/// `a - b`, elementwise, in parallel.
fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = a.to_vec();
    out.par_chunks_mut(4096)
        .zip(b.par_chunks(4096))
        .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(o, b)| *o -= b));
    out
}

/// `c a`, elementwise, in parallel.
fn scaled(a: &[f32], c: f32) -> Vec<f32> {
    a.par_iter().map(|v| c * v).collect()
}

/// Σ a², in parallel (f64 partial sums).
fn sum_sq(a: &[f32]) -> f32 {
    a.par_chunks(4096)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .sum::<f64>() as f32
}

/// Σ‖x − mean(x)‖² over the rows of `x` `[rows, d]` (f64 sums, in parallel).
pub fn total_variance(x: &[f32], d: usize) -> f32 {
    let rows = x.len() / d.max(1);
    if rows == 0 {
        return 0.0;
    }
    const BLOCK: usize = 256;
    let mut mean = x
        .par_chunks(BLOCK * d)
        .map(|block| {
            let mut acc = vec![0f64; d];
            for r in block.chunks_exact(d) {
                acc.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
            }
            acc
        })
        .reduce(
            || vec![0f64; d],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    x.par_chunks(BLOCK * d)
        .map(|block| {
            block
                .chunks_exact(d)
                .map(|r| {
                    r.iter()
                        .zip(&mean)
                        .map(|(&v, m)| (v as f64 - m).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
        })
        .sum::<f64>() as f32
}

/// Column sums of a `[rows, d]` matrix, in parallel.
fn column_sums(m: &[f32], d: usize) -> Vec<f32> {
    m.par_chunks(64 * d)
        .map(|block| {
            let mut acc = vec![0f32; d];
            for r in block.chunks_exact(d) {
                acc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
            }
            acc
        })
        .reduce(|| vec![0f32; d], add_vecs)
}

fn add_vecs(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// AuxK's k, the dead latents each row may use: `d_in / 2`, as OpenAI's TopK SAEs.
pub(crate) fn aux_k(d_in: usize) -> usize {
    d_in / 2
}

/// What [`Trainer::select`] picked for a step.
struct Selection {
    /// The encoder's input, `x - b_dec`.
    centered: Vec<f32>,
    /// The SAE's codes.
    codes: Codes,
    /// Multi-TopK's top 4k per row, when it is on.
    multi: Option<Codes>,
    /// AuxK's top dead latents per row, when AuxK is on and some latent is dead.
    aux: Option<Codes>,
}

/// Every selected latent of every set, as backward-pass entries.
fn collect_entries<T>(sets: &[(&Codes, T)]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(sets.iter().map(|(c, _)| c.nnz()).sum());
    for (set, &(codes, _)) in sets.iter().enumerate() {
        let set = set as u8;
        for r in 0..codes.rows() {
            for (j, a) in codes.row(r) {
                out.push(Entry {
                    row: r as u32,
                    latent: j as u32,
                    act: a,
                    set,
                });
            }
        }
    }
    out
}

/// The entries grouped by latent (a stable counting sort): latent `j`'s are
/// `entries[starts[j]..starts[j + 1]]`, in their original order.
struct ByLatent {
    starts: Vec<usize>,
    entries: Vec<Entry>,
}

impl ByLatent {
    fn new(entries: &[Entry], n: usize) -> ByLatent {
        let mut starts = vec![0usize; n + 1];
        for e in entries {
            starts[e.latent as usize + 1] += 1;
        }
        for j in 0..n {
            starts[j + 1] += starts[j];
        }
        let mut fill = starts.clone();
        let mut sorted = entries.to_vec();
        for e in entries {
            let j = e.latent as usize;
            sorted[fill[j]] = *e;
            fill[j] += 1;
        }
        ByLatent {
            starts,
            entries: sorted,
        }
    }

    fn of(&self, j: usize) -> &[Entry] {
        &self.entries[self.starts[j]..self.starts[j + 1]]
    }
}

/// The sparse backward pass, latent by latent: each latent's entries give the gradients of its
/// encoder row, decoder row and encoder bias, and its share of b_dec's gradient.
struct LatentPass<'a> {
    d: usize,
    /// d loss / d output, one `[rows, d]` matrix per decoded set.
    outs: &'a [&'a [f32]],
    /// The encoder's input, `x - b_dec`.
    centered: &'a [f32],
    by_latent: ByLatent,
}

impl LatentPass<'_> {
    /// Latent `j`'s gradients from its entries into `ge` (encoder row) and `gd` (decoder row,
    /// read at `w_dec`); returns the encoder bias's. Each entry's d loss / d pre-activation is
    /// `W_dec[j] · G_set[row]`.
    fn grads(&self, j: usize, w_dec: &[f32], ge: &mut [f32], gd: &mut [f32]) -> f32 {
        let d = self.d;
        ge.fill(0.0);
        gd.fill(0.0);
        let mut gb = 0.0;
        let entries = self.by_latent.of(j);
        for (i, e) in entries.iter().enumerate() {
            // The rows two entries ahead are fetched while this one's are used.
            if let Some(ahead) = entries.get(i + 2) {
                let r = ahead.row as usize;
                prefetch(&self.outs[ahead.set as usize][r * d..(r + 1) * d]);
                prefetch(&self.centered[r * d..(r + 1) * d]);
            }
            let r = e.row as usize;
            let out = &self.outs[e.set as usize][r * d..(r + 1) * d];
            let grad = dot_and_axpy(w_dec, out, e.act, Some(&mut *gd));
            axpy(grad, &self.centered[r * d..(r + 1) * d], ge);
            gb += grad;
        }
        gb
    }

    /// Writes every latent's gradients into `g`; returns Σ_j g_b_enc[j] W_enc[j].
    fn store(&self, sae: &Sae, g: &mut Grads) -> Vec<f32> {
        let d = self.d;
        let (w_enc, w_dec) = (&sae.w_enc, &sae.w_dec);
        g.w_enc
            .par_chunks_mut(d)
            .zip(g.w_dec.par_chunks_mut(d))
            .zip(g.b_enc.par_iter_mut())
            .enumerate()
            .fold(
                || vec![0f32; d],
                |mut acc, (j, ((ge, gd), gb))| {
                    *gb = self.grads(j, &w_dec[j * d..(j + 1) * d], ge, gd);
                    axpy(*gb, &w_enc[j * d..(j + 1) * d], &mut acc);
                    acc
                },
            )
            .reduce(|| vec![0f32; d], add_vecs)
    }

    /// Takes the Adam step on every latent's encoder row, encoder bias and decoder row as soon
    /// as its gradients are known (what [`Trainer::apply`] does, row by row); returns
    /// Σ_j g_b_enc[j] W_enc[j] with the encoder rows as they were before the step.
    fn step(&self, sae: &mut Sae, [m_we, m_be, m_wd]: [&mut Moments; 3], k: AdamStep) -> Vec<f32> {
        let d = self.d;
        let (tied, unit) = (sae.cfg.tied, sae.cfg.normalize_decoder);
        let enc = sae.w_enc.par_chunks_mut(d).zip(m_we.m.par_chunks_mut(d));
        let enc = enc.zip(m_we.v.par_chunks_mut(d));
        let dec = sae.w_dec.par_chunks_mut(d).zip(m_wd.m.par_chunks_mut(d));
        let dec = dec.zip(m_wd.v.par_chunks_mut(d));
        let bias = sae.b_enc.par_iter_mut().zip(&mut m_be.m).zip(&mut m_be.v);
        enc.zip(dec)
            .zip(bias)
            .enumerate()
            .fold(
                || (vec![0f32; d], vec![0f32; 2 * d]),
                |(mut acc, mut scratch), (j, ((((we, me), ve), ((wd, md), vd)), ((b, mb), vb)))| {
                    let (ge, gd) = scratch.split_at_mut(d);
                    let gb = self.grads(j, wd, ge, gd);
                    axpy(gb, we, &mut acc);
                    k.apply(
                        std::slice::from_mut(b),
                        &[gb],
                        std::slice::from_mut(mb),
                        std::slice::from_mut(vb),
                    );
                    if tied {
                        axpy(1.0, ge, gd);
                    } else {
                        k.apply(we, ge, me, ve);
                    }
                    k.decoder_row(unit, wd, gd, md, vd);
                    if tied {
                        we.copy_from_slice(wd);
                    }
                    (acc, scratch)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(|| vec![0f32; d], add_vecs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::SaeConfig;
    use rand::{Rng, SeedableRng};

    fn data(rows: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    /// Compares analytic gradients with central differences of the loss.
    ///
    /// With `aux`, even latents are dead and start below the live ones (small encoder weights,
    /// biases 1.0 live and 0.3 dead), so the main codes use live latents only; AuxK's residual is detached by design, so live latents are checked
    /// against the loss without the AuxK term and dead ones against the whole loss.
    fn check_gradients(cfg: SaeConfig, aux: bool) {
        let (d, rows) = (cfg.d_in, 6);
        let x = data(rows, d, 5);
        let mut sae = Sae::init(cfg, 3).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for (j, b) in sae.b_enc.iter_mut().enumerate() {
            *b = match (aux, j % 2) {
                (true, 0) => 0.3,
                (true, _) => 1.0,
                _ => rng.gen_range(0.0..0.3),
            };
        }
        sae.b_dec
            .iter_mut()
            .for_each(|b| *b = rng.gen_range(-0.2..0.2));
        if !sae.cfg.tied {
            let shrink = if aux { 0.1 } else { 1.0 };
            sae.w_enc
                .iter_mut()
                .for_each(|w| *w = shrink * (*w + rng.gen_range(-0.2..0.2)));
        }
        let dead_tokens = if aux { 1 } else { u64::MAX };
        let train = TrainConfig {
            dead_tokens,
            ..TrainConfig::default()
        };
        let mut tr = Trainer::new(sae, train);
        if aux {
            for j in (0..tr.since_fired.len()).step_by(2) {
                tr.since_fired[j] = dead_tokens;
            }
        }
        let base = tr.clone();
        let stats = tr.compute_grads(&x);
        if aux {
            assert!(stats.auxk_loss > 0.0);
        }
        let d_in = d;
        // (whole loss, loss without AuxK)
        let loss_at = |f: &dyn Fn(&mut Sae)| -> (f64, f64) {
            let mut t = base.clone();
            f(&mut t.sae);
            if t.sae.cfg.tied {
                t.sae.w_enc = t.sae.w_dec.clone();
            }
            let s = t.compute_grads(&x);
            (
                s.loss as f64,
                s.loss as f64 - (s.loss - s.fvu - s.multi_topk_fvu / 8.0) as f64 * f64::from(aux),
            )
        };
        let eps = 1e-3f32;
        let pick = |latent: usize, l: (f64, f64)| if aux && latent % 2 == 1 { l.1 } else { l.0 };
        let diff = |latent: usize, plus: &dyn Fn(&mut Sae), minus: &dyn Fn(&mut Sae)| {
            (pick(latent, loss_at(plus)) - pick(latent, loss_at(minus))) / (2.0 * eps as f64)
        };
        let mut worst = 0f64;
        for i in (0..tr.sae.w_dec.len()).step_by(5) {
            let j = i / d_in;
            let num = diff(j, &|s| s.w_dec[i] += eps, &|s| s.w_dec[i] -= eps);
            let mut ana = tr.grads.w_dec[i] as f64;
            if tr.sae.cfg.tied {
                ana += tr.grads.w_enc[i] as f64;
            } else {
                let ne = diff(j, &|s| s.w_enc[i] += eps, &|s| s.w_enc[i] -= eps);
                let a = tr.grads.w_enc[i] as f64;
                worst = worst.max((ne - a).abs() / (1.0 + a.abs()));
            }
            worst = worst.max((num - ana).abs() / (1.0 + ana.abs()));
        }
        for j in 0..tr.sae.b_enc.len() {
            let num = diff(j, &|s| s.b_enc[j] += eps, &|s| s.b_enc[j] -= eps);
            let a = tr.grads.b_enc[j] as f64;
            worst = worst.max((num - a).abs() / (1.0 + a.abs()));
        }
        if !aux {
            for i in 0..d {
                let num = diff(0, &|s| s.b_dec[i] += eps, &|s| s.b_dec[i] -= eps);
                let a = tr.grads.b_dec[i] as f64;
                worst = worst.max((num - a).abs() / (1.0 + a.abs()));
            }
        }
        assert!(worst < 2e-3, "largest relative gradient error {worst}");
    }

    #[test]
    fn topk_gradients_match_finite_differences() {
        check_gradients(SaeConfig::topk(6, 16, 3), false);
        let mut cfg = SaeConfig::topk(6, 16, 2);
        cfg.multi_topk = true;
        check_gradients(cfg, false);
    }

    #[test]
    fn multi_topk_and_auxk_gradients_match_finite_differences() {
        // AuxK alone (its output gradient is then the second, not the third).
        check_gradients(SaeConfig::topk(6, 16, 2), true);
        let mut cfg = SaeConfig::topk(6, 16, 2);
        cfg.multi_topk = true;
        check_gradients(cfg, true);
    }

    #[test]
    fn relu_l1_and_tied_gradients_match_finite_differences() {
        let mut cfg = SaeConfig::topk(6, 12, 0);
        cfg.activation = Activation::Relu;
        cfg.l1_coef = 0.3;
        check_gradients(cfg.clone(), false);
        cfg.tied = true;
        check_gradients(cfg, false);
    }

    /// The in-place step of TopK-style SAEs (Adam row by row inside the backward pass) must move
    /// every parameter as stored gradients followed by [`Trainer::apply`] do.
    #[test]
    fn in_place_step_matches_gradients_then_adam() {
        let topk = SaeConfig::topk(10, 40, 3);
        let mut multi = SaeConfig::topk(10, 40, 2);
        multi.multi_topk = true;
        let mut tied = SaeConfig::topk(10, 40, 3);
        tied.tied = true;
        let mut batch = SaeConfig::topk(10, 40, 3);
        batch.activation = Activation::BatchTopK;
        let mut free = SaeConfig::topk(10, 40, 3);
        free.normalize_decoder = false;
        for (i, cfg) in [topk, multi, tied, batch, free].into_iter().enumerate() {
            let mut sae = Sae::init(cfg, 7).unwrap();
            sae.b_dec.iter_mut().for_each(|b| *b = 0.05);
            // Half the latents dead, so AuxK takes part too.
            let train = TrainConfig {
                dead_tokens: 100,
                lr: Some(1e-2),
                warmup_steps: 1,
                ..TrainConfig::default()
            };
            let mut a = Trainer::new(sae, train);
            for j in (0..a.since_fired.len()).step_by(2) {
                a.since_fired[j] = 100;
            }
            let mut b = a.clone();
            for step in 0..3 {
                let x = data(24, 10, 11 + step);
                let sa = a.train_step(&x);
                let lr = b.lr();
                let sb = b.compute_grads(&x);
                b.apply(lr);
                assert_eq!(sa.loss, sb.loss, "config {i} step {step}");
                let pairs = [
                    (&a.sae.w_enc, &b.sae.w_enc),
                    (&a.sae.b_enc, &b.sae.b_enc),
                    (&a.sae.w_dec, &b.sae.w_dec),
                    (&a.sae.b_dec, &b.sae.b_dec),
                ];
                for (t, (p, q)) in pairs.into_iter().enumerate() {
                    let worst = p
                        .iter()
                        .zip(q)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    assert!(worst < 1e-5, "config {i} step {step} tensor {t}: {worst}");
                }
                assert_eq!(a.step, b.step);
            }
            assert_ne!(a.sae.w_enc, Sae::init(a.sae.cfg.clone(), 7).unwrap().w_enc);
        }
    }

    #[test]
    fn training_lowers_fvu_and_keeps_decoder_rows_unit_norm() {
        // Data made of 3-sparse combinations of 24 directions in 12 dimensions.
        let (d, n, rows) = (12, 48, 256);
        let dirs = data(24, d, 1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut x = vec![0f32; rows * d];
        for r in 0..rows {
            for _ in 0..3 {
                let j = rng.gen_range(0..24);
                let a = rng.gen_range(0.5..2.0);
                axpy(a, &dirs[j * d..(j + 1) * d], &mut x[r * d..(r + 1) * d]);
            }
        }
        let mut sae = Sae::init(SaeConfig::topk(d, n, 3), 4).unwrap();
        sae.b_dec = crate::median::geometric_median(&x, d, 50);
        let mut tr = Trainer::new(
            sae,
            TrainConfig {
                lr: Some(3e-3),
                warmup_steps: 10,
                ..TrainConfig::default()
            },
        );
        let first = tr.train_step(&x).fvu;
        let mut last = first;
        for _ in 0..400 {
            last = tr.train_step(&x).fvu;
        }
        assert!(last < 0.25 * first, "fvu {first} -> {last}");
        for r in tr.sae.w_dec.chunks(d) {
            let norm: f32 = r.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn total_variance_is_the_squared_distance_to_the_mean() {
        // 700 rows span several parallel blocks; the rows sit far from the origin.
        let (rows, d) = (700, 5);
        let x: Vec<f32> = data(rows, d, 4).iter().map(|v| v + 100.0).collect();
        let mean: Vec<f64> = (0..d)
            .map(|i| (0..rows).map(|r| x[r * d + i] as f64).sum::<f64>() / rows as f64)
            .collect();
        let want: f64 = (0..rows * d)
            .map(|i| (x[i] as f64 - mean[i % d]).powi(2))
            .sum();
        let got = total_variance(&x, d) as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
        assert_eq!(total_variance(&x[..d], d), 0.0);
        assert_eq!(total_variance(&[], d), 0.0);
    }

    #[test]
    fn state_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut tr = Trainer::new(
            Sae::init(SaeConfig::topk(8, 16, 2), 1).unwrap(),
            TrainConfig::default(),
        );
        let x = data(32, 8, 3);
        tr.train_step(&x);
        tr.save(dir.path()).unwrap();
        let mut back = Trainer::load(dir.path()).unwrap();
        assert_eq!(back.sae, tr.sae);
        assert_eq!((back.step, back.tokens), (tr.step, tr.tokens));
        assert_eq!(back.since_fired, tr.since_fired);
        // The next step is the same whether or not the run was interrupted.
        let (a, b) = (tr.train_step(&x), back.train_step(&x));
        assert_eq!(a.loss, b.loss);
        assert_eq!(back.sae, tr.sae);
    }
}
