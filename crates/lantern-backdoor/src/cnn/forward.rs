//! Forward pass: layer kernels (shared with the backward pass), the caches of a chunk of
//! samples run together, [`forward`], [`predict`] and [`accuracy`].

use super::conv::conv3x3;
use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G};
use super::{CnnConfig, Params};
use rayon::prelude::*;

/// LayerNorm variance epsilon (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// Images per chunk of [`forward`]: small enough that the chunk's im2col matrices stay in
/// the core's cache (see `backward::TRAIN_CHUNK`).
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

/// The values of plane `(c, s)` — channel `c` of sample `s` — in the channel-major layout
/// `[C, n, hw]` a chunk of `n` samples uses (see `conv.rs`).
#[inline]
pub(crate) fn plane(c: usize, s: usize, n: usize, hw: usize) -> std::ops::Range<usize> {
    (c * n + s) * hw..(c * n + s + 1) * hw
}

/// Rows (or columns) `start..end` of the output that a 3×3 tap with offset `d ∈ {-1,0,1}`
/// reads from inside an image of size `n` (padding 1 makes the rest read zeros).
pub(crate) fn tap_range(n: usize, d: isize) -> (usize, usize) {
    let start = usize::from(d < 0);
    let end = if d > 0 { n.saturating_sub(1) } else { n };
    (start, end)
}

/// Calls `f(tap, out_offset, in_offset, len)` for every contiguous row segment of every 3×3
/// tap of a padded convolution on an `h × w` image: output pixels `out_offset..+len` of one
/// plane meet input pixels `in_offset..+len` of one plane through weight `tap`.
#[inline]
pub(crate) fn for_each_tap_row(h: usize, w: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for ky in 0..3 {
        let dy = ky as isize - 1;
        let (y0, y1) = tap_range(h, dy);
        for kx in 0..3 {
            let dx = kx as isize - 1;
            let (x0, x1) = tap_range(w, dx);
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

/// Direct-loop 3×3 convolution with padding 1 (reference for the gemm version in tests).
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
/// samples in the channel-major layout of `conv.rs`.
#[derive(Debug, Clone)]
pub(crate) struct LnOut {
    /// Normalised values `(a - mean_s) * inv_std_s`.
    pub xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)` of each sample.
    pub inv_std: Vec<f32>,
    /// After the per-channel affine and ReLU.
    pub out: Vec<f32>,
}

/// LayerNorm of each of `n` samples over its `c` planes of `hw` (layout `[c, n, hw]`),
/// per-channel affine, then ReLU. Statistics in two passes, accumulated in `f64` (the
/// gradient check's finite differences need them that exact).
pub(crate) fn layer_norm_relu(
    a: &[f32],
    n: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
) -> LnOut {
    let c = gamma.len();
    let count = (c * hw) as f64;
    let at = |ch: usize, s: usize| plane(ch, s, n, hw);
    let mut mean = vec![0.0f64; n];
    for ch in 0..c {
        for (s, m) in mean.iter_mut().enumerate() {
            *m += a[at(ch, s)].iter().map(|&x| x as f64).sum::<f64>();
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; n];
    for ch in 0..c {
        for (s, v) in var.iter_mut().enumerate() {
            let m = mean[s];
            *v += a[at(ch, s)]
                .iter()
                .map(|&x| (x as f64 - m).powi(2))
                .sum::<f64>();
        }
    }
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let inv_std: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v / count + LN_EPS).sqrt()) as f32)
        .collect();
    let mut xhat = vec![0.0f32; a.len()];
    let mut out = vec![0.0f32; a.len()];
    for ch in 0..c {
        let (g, b) = (gamma[ch], beta[ch]);
        for s in 0..n {
            let (m, is) = (mean[s], inv_std[s]);
            let r = at(ch, s);
            for ((x, o), &v) in xhat[r.clone()]
                .iter_mut()
                .zip(&mut out[r.clone()])
                .zip(&a[r])
            {
                *x = (v - m) * is;
                *o = (g * *x + b).max(0.0);
            }
        }
    }
    LnOut { xhat, inv_std, out }
}

/// 2×2 max-pool with stride 2 (flooring odd sizes) of `planes` planes of `h × w`; returns
/// the pooled values and, for each, the index of the winning input element.
pub(crate) fn maxpool2(a: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u32>) {
    let (ph, pw) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(planes * ph * pw);
    let mut idx = Vec::with_capacity(planes * ph * pw);
    for pl in 0..planes {
        for y in 0..ph {
            for x in 0..pw {
                let base = pl * h * w + 2 * y * w + 2 * x;
                let cand = [base, base + 1, base + w, base + w + 1];
                let best = cand
                    .into_iter()
                    .fold(base, |b, j| if a[j] > a[b] { j } else { b });
                out.push(a[best]);
                idx.push(best as u32);
            }
        }
    }
    (out, idx)
}

/// Everything one block keeps for the backward pass (for a chunk of samples).
#[derive(Debug, Clone)]
pub(crate) struct BlockCache {
    /// im2col of the first conv's input (empty when the pass keeps no gradients).
    pub cols1: Vec<f32>,
    /// First LayerNorm (its `out` is the second conv's input).
    pub ln1: LnOut,
    /// im2col of the second conv's input (empty when the pass keeps no gradients).
    pub cols2: Vec<f32>,
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
    /// Per-block caches.
    pub blocks: Vec<BlockCache>,
    /// Global max-pool features (head input), `[n, c_last]`.
    pub feat: Vec<f32>,
    /// Index into the last block output of each feature's maximum, `[n, c_last]`.
    pub feat_idx: Vec<u32>,
    /// Output logits, `[n, classes]`.
    pub logits: Vec<f32>,
}

/// Runs block `b` on `n` samples `[c_in, n, h, w]`; the output is `[width, n, h/2, w/2]`
/// in `ln2.out`. `keep` keeps the im2col matrices for the backward pass.
fn block_forward(
    p: &Params,
    cfg: &CnnConfig,
    b: usize,
    x: &[f32],
    n: usize,
    keep: bool,
) -> BlockCache {
    let (h, w) = cfg.block_hw(b);
    let c_in = cfg.block_in(b);
    let width = cfg.widths[b];
    let (a1, cols1) = conv3x3(x, c_in, n, h, w, p.block(b, CONV1_W), p.block(b, CONV1_B));
    let ln1 = layer_norm_relu(&a1, n, h * w, p.block(b, LN1_G), p.block(b, LN1_B));
    let (a2, cols2) = conv3x3(
        &ln1.out,
        width,
        n,
        h,
        w,
        p.block(b, CONV2_W),
        p.block(b, CONV2_B),
    );
    let (pooled, pool_idx) = maxpool2(&a2, width * n, h, w);
    let ln2 = layer_norm_relu(
        &pooled,
        n,
        (h / 2) * (w / 2),
        p.block(b, LN2_G),
        p.block(b, LN2_B),
    );
    let keep_cols = |c: Vec<f32>| if keep { c } else { Vec::new() };
    BlockCache {
        cols1: keep_cols(cols1),
        ln1,
        cols2: keep_cols(cols2),
        pool_idx,
        ln2,
    }
}

/// `n` images `[n, C, H, W]` as the channel-major `[C, n, H·W]` the layers use (a copy only
/// when `C > 1`: with one channel the two layouts agree).
pub(crate) fn channel_major(images: &[f32], c: usize, n: usize) -> std::borrow::Cow<'_, [f32]> {
    if c == 1 || n == 1 {
        return std::borrow::Cow::Borrowed(images);
    }
    let hw = images.len() / (c * n);
    let mut out = vec![0.0f32; images.len()];
    for s in 0..n {
        for ch in 0..c {
            out[plane(ch, s, n, hw)]
                .copy_from_slice(&images[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Forward pass of `n` images `[n, C, H, W]` at once; `keep` keeps what the backward pass
/// needs (the im2col matrices).
pub(crate) fn chunk_forward(
    p: &Params,
    cfg: &CnnConfig,
    images: &[f32],
    n: usize,
    keep: bool,
) -> ChunkCache {
    let input = channel_major(images, cfg.in_channels, n);
    let mut blocks: Vec<BlockCache> = Vec::with_capacity(cfg.widths.len());
    for b in 0..cfg.widths.len() {
        let x = blocks.last().map_or(&input[..], |c| c.ln2.out.as_slice());
        let cache = block_forward(p, cfg, b, x, n, keep);
        blocks.push(cache);
    }
    let last = &blocks[blocks.len() - 1].ln2.out;
    let c = *cfg.widths.last().expect("validated config has blocks");
    let hw = last.len() / (c * n);
    let mut feat = vec![0.0f32; n * c];
    let mut feat_idx = vec![0u32; n * c];
    for ch in 0..c {
        for s in 0..n {
            let r = plane(ch, s, n, hw);
            let start = r.start;
            let plane = &last[r];
            let best = (0..hw).fold(0, |b, j| if plane[j] > plane[b] { j } else { b });
            feat[s * c + ch] = plane[best];
            feat_idx[s * c + ch] = (start + best) as u32;
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
