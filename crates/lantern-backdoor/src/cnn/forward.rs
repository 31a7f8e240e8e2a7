//! Forward pass: layer kernels (shared with the backward pass), the caches of a chunk of
//! samples run together, [`forward`], [`predict`] and [`accuracy`].

use super::conv::{conv3x3, lane_sum, lane_sum_of};
use super::grid::Grid;
use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G};
use super::{CnnConfig, Params};
use rayon::prelude::*;

/// LayerNorm variance epsilon (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// Images per chunk of [`forward`] (see `backward::TRAIN_CHUNK`).
const FORWARD_CHUNK: usize = 8;

/// Logits of a batch, row-major `[batch, classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Row-major values, `batch * classes` long.
    pub data: Vec<f32>,
    /// Number of rows (images).
    pub batch: usize,
    /// Number of columns (classes).
    pub classes: usize,
}

impl Logits {
    /// Logits of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }
}

/// Calls `f(tap, out_offset, in_offset, len)` for every contiguous row segment of every 3×3
/// tap of a padded convolution on an unpadded `h × w` image: output pixels
/// `out_offset..+len` of one plane meet input pixels `in_offset..+len` through weight `tap`.
#[cfg(test)]
pub(crate) fn for_each_tap_row(h: usize, w: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let range = |n: usize, d: isize| (usize::from(d < 0), if d > 0 { n - 1 } else { n });
    for ky in 0..3 {
        let dy = ky as isize - 1;
        let (y0, y1) = range(h, dy);
        for kx in 0..3 {
            let dx = kx as isize - 1;
            let (x0, x1) = range(w, dx);
            if x1 <= x0 {
                continue;
            }
            for y in y0..y1 {
                let iy = (y as isize + dy) as usize;
                let ix0 = (x0 as isize + dx) as usize;
                f(ky * 3 + kx, y * w + x0, iy * w + ix0, x1 - x0);
            }
        }
    }
}

/// Direct-loop 3×3 convolution with padding 1 of one unpadded `[c_in, h, w]` image
/// (reference for the shifted-sum version in tests).
#[cfg(test)]
pub(crate) fn conv3x3_direct(
    input: &[f32],
    c_in: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let c_out = bias.len();
    let hw = h * w;
    let mut out = vec![0.0f32; c_out * hw];
    for (o, plane) in out.chunks_exact_mut(hw).enumerate() {
        plane.fill(bias[o]);
        for i in 0..c_in {
            let src = &input[i * hw..(i + 1) * hw];
            let k = &weight[(o * c_in + i) * 9..(o * c_in + i + 1) * 9];
            for_each_tap_row(h, w, |t, oo, io, len| {
                let wv = k[t];
                for (d, s) in plane[oo..oo + len].iter_mut().zip(&src[io..io + len]) {
                    *d += wv * s;
                }
            });
        }
    }
    out
}

/// Result of a LayerNorm over each sample's `(C, H, W)` activation, for a chunk of
/// samples in the padded layout of [`Grid`] (zeros in place).
#[derive(Debug, Clone)]
pub(crate) struct LnOut {
    /// Normalised values `(a - mean_s) * inv_std_s` (empty when no backward pass follows).
    pub xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)` of each sample.
    pub inv_std: Vec<f32>,
    /// After the per-channel affine and ReLU.
    pub out: Vec<f32>,
}

/// LayerNorm of each sample of `g` over its `c` planes' interiors, per-channel affine,
/// then ReLU; `keep` keeps the normalised values for the backward pass. `a` must hold
/// zeros in place: each plane is then one contiguous run whose zeros add nothing to the
/// sum and a known `pads·mean²` to the squared deviations. Runs sum in `f32` lanes and add
/// up in `f64` (the gradient check's finite differences need the statistics that exact).
pub(crate) fn layer_norm_relu(
    a: &[f32],
    g: Grid,
    gamma: &[f32],
    beta: &[f32],
    keep: bool,
) -> LnOut {
    let (c, n) = (gamma.len(), g.n);
    let count = (c * g.area()) as f64;
    let mut mean = vec![0.0f64; n];
    let mut var = vec![0.0f64; n];
    for (s, (m, v)) in mean.iter_mut().zip(&mut var).enumerate() {
        *m = (0..c)
            .map(|ch| lane_sum(&a[g.plane_range(ch, s)]) as f64)
            .sum::<f64>()
            / count;
        let mf = *m as f32;
        let sq: f64 = (0..c)
            .map(|ch| lane_sum_of(&a[g.plane_range(ch, s)], |v| (v - mf) * (v - mf)) as f64)
            .sum();
        *v = sq - (c * g.pads()) as f64 * *m * *m;
    }
    let inv_std: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v.max(0.0) / count + LN_EPS).sqrt()) as f32)
        .collect();
    let mut xhat = if keep {
        vec![0.0f32; a.len()]
    } else {
        Vec::new()
    };
    let mut out = vec![0.0f32; a.len()];
    for ch in 0..c {
        let (gm, b) = (gamma[ch], beta[ch]);
        for s in 0..n {
            let (m, is) = (mean[s] as f32, inv_std[s]);
            let r = g.plane_range(ch, s);
            if keep {
                let planes = xhat[r.clone()].iter_mut().zip(&mut out[r.clone()]);
                for ((x, o), &v) in planes.zip(&a[r]) {
                    *x = (v - m) * is;
                    *o = (gm * *x + b).max(0.0);
                }
            } else {
                for (o, &v) in out[r.clone()].iter_mut().zip(&a[r]) {
                    *o = (gm * ((v - m) * is) + b).max(0.0);
                }
            }
        }
    }
    g.zero_pads(&mut out, c);
    if keep {
        g.zero_pads(&mut xhat, c);
    }
    LnOut { xhat, inv_std, out }
}

/// 2×2 max-pool with stride 2 (flooring odd sizes) of the `c` channels of `g`: the pooled
/// values on `g.pooled()` (zeros in place) and, for each pooled interior pixel in row
/// order, the index of the winning input value (the first of equal maxima).
pub(crate) fn maxpool2(a: &[f32], c: usize, g: Grid) -> (Vec<f32>, Vec<u32>) {
    let pg = g.pooled();
    let st = g.stride();
    let mut out = vec![0.0f32; c * pg.channel()];
    let mut idx = Vec::with_capacity(c * g.n * pg.area());
    for ch in 0..c {
        for s in 0..g.n {
            for y in 0..pg.h {
                let top = g.at(ch, s, 2 * y, 0);
                let rows = &a[top..top + st + 2 * pg.w];
                let dst = pg.at(ch, s, y, 0);
                for (x, o) in out[dst..dst + pg.w].iter_mut().enumerate() {
                    let k = 2 * x;
                    let cand = [rows[k], rows[k + 1], rows[st + k], rows[st + k + 1]];
                    // Branch-free argmax: the winner is as random as the data.
                    let (mut best, mut at) = (cand[0], 0usize);
                    for (q, &v) in cand.iter().enumerate().skip(1) {
                        let gt = v > best;
                        best = if gt { v } else { best };
                        at = if gt { q } else { at };
                    }
                    *o = best;
                    idx.push((top + k + (at & 1) + (at >> 1) * st) as u32);
                }
            }
        }
    }
    (out, idx)
}

/// Everything one block keeps for the backward pass (for a chunk of samples).
#[derive(Debug, Clone)]
pub(crate) struct BlockCache {
    /// First LayerNorm (its `out` is the second conv's input).
    pub ln1: LnOut,
    /// Argmax indices of the max-pool into the second conv's output.
    pub pool_idx: Vec<u32>,
    /// Second LayerNorm (its `out` is the block output).
    pub ln2: LnOut,
}

/// Everything a chunk of samples keeps for the backward pass.
#[derive(Debug, Clone)]
pub(crate) struct ChunkCache {
    /// Samples in the chunk.
    pub n: usize,
    /// The input images in the padded layout (the first conv's input).
    pub input: Vec<f32>,
    /// Per-block caches.
    pub blocks: Vec<BlockCache>,
    /// Global max-pool features (head input), `[n, c_last]`.
    pub feat: Vec<f32>,
    /// Index into the last block output of each feature's maximum, `[n, c_last]`.
    pub feat_idx: Vec<u32>,
    /// Output logits, `[n, classes]`.
    pub logits: Vec<f32>,
}

/// The grid of block `b`'s input for a chunk of `n` samples.
pub(crate) fn block_grid(cfg: &CnnConfig, b: usize, n: usize) -> Grid {
    let (h, w) = cfg.block_hw(b);
    Grid { n, h, w }
}

/// Runs block `b` on a chunk in the padded layout `[c_in, n, plane]`; the output is
/// `[width, n, pooled plane]` in `ln2.out`. `keep` keeps what the backward pass needs.
fn block_forward(
    p: &Params,
    cfg: &CnnConfig,
    b: usize,
    x: &[f32],
    n: usize,
    keep: bool,
) -> BlockCache {
    let g = block_grid(cfg, b, n);
    let (c_in, width) = (cfg.block_in(b), cfg.widths[b]);
    let a1 = conv3x3(x, c_in, g, p.block(b, CONV1_W), p.block(b, CONV1_B));
    let ln1 = layer_norm_relu(&a1, g, p.block(b, LN1_G), p.block(b, LN1_B), keep);
    let a2 = conv3x3(&ln1.out, width, g, p.block(b, CONV2_W), p.block(b, CONV2_B));
    let (pooled, pool_idx) = maxpool2(&a2, width, g);
    let ln2 = layer_norm_relu(
        &pooled,
        g.pooled(),
        p.block(b, LN2_G),
        p.block(b, LN2_B),
        keep,
    );
    BlockCache { ln1, pool_idx, ln2 }
}

/// Forward pass of `n` images `[n, C, H, W]` at once; `keep` keeps what the backward pass
/// needs.
pub(crate) fn chunk_forward(
    p: &Params,
    cfg: &CnnConfig,
    images: &[f32],
    n: usize,
    keep: bool,
) -> ChunkCache {
    let input = block_grid(cfg, 0, n).pad(images, cfg.in_channels);
    let mut blocks: Vec<BlockCache> = Vec::with_capacity(cfg.widths.len());
    for b in 0..cfg.widths.len() {
        let x = blocks.last().map_or(&input[..], |c| c.ln2.out.as_slice());
        let cache = block_forward(p, cfg, b, x, n, keep);
        blocks.push(cache);
    }
    let nb = cfg.widths.len();
    let last = &blocks[nb - 1].ln2.out;
    let g = block_grid(cfg, nb, n);
    let c = cfg.widths[nb - 1];
    let mut feat = vec![0.0f32; n * c];
    let mut feat_idx = vec![0u32; n * c];
    for ch in 0..c {
        for s in 0..n {
            let best = g
                .rows(ch, s)
                .flatten()
                .reduce(|b, j| if last[j] > last[b] { j } else { b })
                .expect("validated config leaves pixels");
            feat[s * c + ch] = last[best];
            feat_idx[s * c + ch] = best as u32;
        }
    }
    let hi = p.head_index();
    let (hw_, hb) = (&p.tensors[hi], &p.tensors[hi + 1]);
    let mut logits = Vec::with_capacity(n * cfg.classes);
    for f in feat.chunks_exact(c) {
        logits.extend((0..cfg.classes).map(|k| {
            hb[k]
                + hw_[k * c..(k + 1) * c]
                    .iter()
                    .zip(f)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
        }));
    }
    ChunkCache {
        n,
        input,
        blocks,
        feat,
        feat_idx,
        logits,
    }
}

/// Panics with a clear message if `images` does not hold `batch` images of `cfg`.
pub(crate) fn check_batch(cfg: &CnnConfig, images: &[f32], batch: usize) {
    if let Err(e) = cfg.validate() {
        panic!("{e}");
    }
    assert_eq!(
        images.len(),
        batch * cfg.image_len(),
        "images must hold batch * C*H*W values"
    );
}

/// Logits for `batch` images stored back to back as `[C, H, W]` planes.
///
/// # Panics
/// If the config is invalid or `images.len() != batch * cfg.image_len()`.
pub fn forward(params: &Params, cfg: &CnnConfig, images: &[f32], batch: usize) -> Logits {
    check_batch(cfg, images, batch);
    let len = cfg.image_len();
    let chunk = FORWARD_CHUNK;
    let rows: Vec<Vec<f32>> = images
        .par_chunks(chunk * len)
        .map(|x| chunk_forward(params, cfg, x, x.len() / len, false).logits)
        .collect();
    Logits {
        data: rows.concat(),
        batch,
        classes: cfg.classes,
    }
}

/// Predicted class (argmax logit, first on ties) of each image.
///
/// # Panics
/// As [`forward`].
pub fn predict(params: &Params, cfg: &CnnConfig, images: &[f32], batch: usize) -> Vec<u8> {
    let logits = forward(params, cfg, images, batch);
    (0..batch)
        .map(|i| {
            let r = logits.row(i);
            (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b }) as u8
        })
        .collect()
}

/// Fraction of images whose prediction equals the label (0 for an empty batch).
///
/// # Panics
/// As [`forward`], or if `labels.len() != batch`.
pub fn accuracy(
    params: &Params,
    cfg: &CnnConfig,
    images: &[f32],
    labels: &[u8],
    batch: usize,
) -> f32 {
    assert_eq!(labels.len(), batch, "one label per image");
    if batch == 0 {
        return 0.0;
    }
    let pred = predict(params, cfg, images, batch);
    pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f32 / batch as f32
}
