//! Forward pass: layer kernels (shared with the backward pass), per-sample caches,
//! [`forward`], [`predict`] and [`accuracy`].

use super::conv::conv3x3;
use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G};
use super::{CnnConfig, Params};
use rayon::prelude::*;

/// LayerNorm variance epsilon (PyTorch default).
const LN_EPS: f64 = 1e-5;

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

/// Result of a LayerNorm over one sample's `(C, H, W)` activation.
#[derive(Debug, Clone)]
pub(crate) struct LnOut {
    /// Normalised values `(a - mean) * inv_std`.
    pub xhat: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: f32,
    /// After the per-channel affine and ReLU.
    pub out: Vec<f32>,
}

/// LayerNorm over all of `a` (`c` planes of `hw`), per-channel affine, then ReLU.
pub(crate) fn layer_norm_relu(a: &[f32], hw: usize, gamma: &[f32], beta: &[f32]) -> LnOut {
    let n = a.len() as f64;
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv_std = (1.0 / (var + LN_EPS).sqrt()) as f32;
    let mean = mean as f32;
    let xhat: Vec<f32> = a.iter().map(|&v| (v - mean) * inv_std).collect();
    let out = xhat
        .chunks_exact(hw)
        .enumerate()
        .flat_map(|(c, plane)| {
            plane
                .iter()
                .map(move |&x| (gamma[c] * x + beta[c]).max(0.0))
        })
        .collect();
    LnOut { xhat, inv_std, out }
}

/// 2×2 max-pool with stride 2 (flooring odd sizes); returns the pooled values and, for each,
/// the index of the winning input element.
pub(crate) fn maxpool2(a: &[f32], c: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u32>) {
    let (ph, pw) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(c * ph * pw);
    let mut idx = Vec::with_capacity(c * ph * pw);
    for ch in 0..c {
        for y in 0..ph {
            for x in 0..pw {
                let base = ch * h * w + 2 * y * w + 2 * x;
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

/// Everything one block keeps for the backward pass.
#[derive(Debug, Clone)]
pub(crate) struct BlockCache {
    /// First LayerNorm (its `out` is the second conv's input).
    pub ln1: LnOut,
    /// Argmax indices of the max-pool into the second conv's output.
    pub pool_idx: Vec<u32>,
    /// Second LayerNorm (its `out` is the block output).
    pub ln2: LnOut,
}

/// Everything one sample keeps for the backward pass.
#[derive(Debug, Clone)]
pub(crate) struct SampleCache {
    /// Per-block caches.
    pub blocks: Vec<BlockCache>,
    /// Global max-pool features (head input).
    pub feat: Vec<f32>,
    /// Index into the last block output of each feature's maximum.
    pub feat_idx: Vec<usize>,
    /// Output logits.
    pub logits: Vec<f32>,
}

/// Runs one block on `[c_in, h, w]`; the output is `[width, h/2, w/2]` in `ln2.out`.
fn block_forward(p: &Params, cfg: &CnnConfig, b: usize, x: &[f32]) -> BlockCache {
    let (h, w) = cfg.block_hw(b);
    let c_in = cfg.block_in(b);
    let width = cfg.widths[b];
    let a1 = conv3x3(x, c_in, h, w, p.block(b, CONV1_W), p.block(b, CONV1_B));
    let ln1 = layer_norm_relu(&a1, h * w, p.block(b, LN1_G), p.block(b, LN1_B));
    let a2 = conv3x3(
        &ln1.out,
        width,
        h,
        w,
        p.block(b, CONV2_W),
        p.block(b, CONV2_B),
    );
    let (pooled, pool_idx) = maxpool2(&a2, width, h, w);
    let ln2 = layer_norm_relu(
        &pooled,
        (h / 2) * (w / 2),
        p.block(b, LN2_G),
        p.block(b, LN2_B),
    );
    BlockCache { ln1, pool_idx, ln2 }
}

/// Full forward pass of one image, keeping what the backward pass needs.
pub(crate) fn sample_forward(p: &Params, cfg: &CnnConfig, image: &[f32]) -> SampleCache {
    let mut blocks: Vec<BlockCache> = Vec::with_capacity(cfg.widths.len());
    for b in 0..cfg.widths.len() {
        let x = blocks.last().map_or(image, |c| c.ln2.out.as_slice());
        let cache = block_forward(p, cfg, b, x);
        blocks.push(cache);
    }
    let last = &blocks[blocks.len() - 1].ln2.out;
    let c = *cfg.widths.last().expect("validated config has blocks");
    let hw = last.len() / c;
    let mut feat = Vec::with_capacity(c);
    let mut feat_idx = Vec::with_capacity(c);
    for ch in 0..c {
        let plane = &last[ch * hw..(ch + 1) * hw];
        let best = (0..hw).fold(0, |b, j| if plane[j] > plane[b] { j } else { b });
        feat.push(plane[best]);
        feat_idx.push(ch * hw + best);
    }
    let hi = p.head_index();
    let (hw_, hb) = (&p.tensors[hi], &p.tensors[hi + 1]);
    let logits = (0..cfg.classes)
        .map(|k| {
            hb[k]
                + hw_[k * c..(k + 1) * c]
                    .iter()
                    .zip(&feat)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
        })
        .collect();
    SampleCache {
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
    let rows: Vec<Vec<f32>> = images
        .par_chunks_exact(cfg.image_len().max(1))
        .map(|img| sample_forward(params, cfg, img).logits)
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
