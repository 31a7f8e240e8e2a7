//! Hand-written backward pass and [`loss_and_grad`].

use super::conv::conv3x3_backward;
use super::forward::{check_batch, sample_forward, LnOut, SampleCache};
use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G, PER_BLOCK};
use super::{CnnConfig, Params};
use rayon::prelude::*;

/// Backward of ReLU ∘ per-channel affine ∘ LayerNorm: takes `dout` (gradient w.r.t. the
/// ReLU output), accumulates `dγ`, `dβ` and returns the gradient w.r.t. the LN input.
fn layer_norm_relu_backward(
    ln: &LnOut,
    dout: &[f32],
    hw: usize,
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Vec<f32> {
    let n = dout.len();
    let mut dxhat = vec![0.0f32; n];
    for c in 0..gamma.len() {
        let r = c * hw..(c + 1) * hw;
        let (mut sg, mut sb) = (0.0f32, 0.0f32);
        for j in r {
            let dy = if ln.out[j] > 0.0 { dout[j] } else { 0.0 };
            sg += dy * ln.xhat[j];
            sb += dy;
            dxhat[j] = dy * gamma[c];
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
    let mean_d = dxhat.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let mean_dx = dxhat
        .iter()
        .zip(&ln.xhat)
        .map(|(&d, &x)| (d * x) as f64)
        .sum::<f64>()
        / n as f64;
    let (mean_d, mean_dx) = (mean_d as f32, mean_dx as f32);
    dxhat
        .iter()
        .zip(&ln.xhat)
        .map(|(&d, &x)| ln.inv_std * (d - mean_d - x * mean_dx))
        .collect()
}

/// Backward of block `b` given the gradient w.r.t. its output; returns the gradient
/// w.r.t. its input when `need_din`.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    p: &Params,
    cfg: &CnnConfig,
    b: usize,
    input: &[f32],
    cache: &SampleCache,
    dout: &[f32],
    g: &mut Params,
    need_din: bool,
) -> Option<Vec<f32>> {
    let (h, w) = cfg.block_hw(b);
    let (c_in, width) = (cfg.block_in(b), cfg.widths[b]);
    let bc = &cache.blocks[b];
    let base = b * PER_BLOCK;
    let [dg2, db2] = two(g, base + LN2_G, base + LN2_B);
    let dpool = layer_norm_relu_backward(
        &bc.ln2,
        dout,
        (h / 2) * (w / 2),
        p.block(b, LN2_G),
        dg2,
        db2,
    );
    let mut da2 = vec![0.0f32; width * h * w];
    for (&j, &d) in bc.pool_idx.iter().zip(&dpool) {
        da2[j as usize] += d;
    }
    let [dw2, dbias2] = two(g, base + CONV2_W, base + CONV2_B);
    let dr1 = conv3x3_backward(
        &bc.ln1.out,
        width,
        h,
        w,
        p.block(b, CONV2_W),
        &da2,
        dw2,
        dbias2,
        true,
    )
    .expect("requested input gradient");
    let [dg1, db1] = two(g, base + LN1_G, base + LN1_B);
    let da1 = layer_norm_relu_backward(&bc.ln1, &dr1, h * w, p.block(b, LN1_G), dg1, db1);
    let [dw1, dbias1] = two(g, base + CONV1_W, base + CONV1_B);
    conv3x3_backward(
        input,
        c_in,
        h,
        w,
        p.block(b, CONV1_W),
        &da1,
        dw1,
        dbias1,
        need_din,
    )
}

/// Mutable borrows of two distinct tensors `i < j` of `g`.
fn two(g: &mut Params, i: usize, j: usize) -> [&mut [f32]; 2] {
    let (lo, hi) = g.tensors.split_at_mut(j);
    [&mut lo[i], &mut hi[0]]
}

/// Cross-entropy of one sample; accumulates its gradients scaled by `scale` into `g`.
fn sample_loss_grad(
    p: &Params,
    cfg: &CnnConfig,
    image: &[f32],
    label: usize,
    scale: f32,
    g: &mut Params,
) -> f64 {
    let cache = sample_forward(p, cfg, image);
    let z = &cache.logits;
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
    let loss = sum.ln() + (m - z[label]) as f64;
    let dz: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let prob = (((v - m) as f64).exp() / sum) as f32;
            scale * (prob - f32::from(u8::from(k == label)))
        })
        .collect();
    let c = cache.feat.len();
    let hi = p.head_index();
    let mut dfeat = vec![0.0f32; c];
    for (k, &d) in dz.iter().enumerate() {
        let gw = &mut g.tensors[hi][k * c..(k + 1) * c];
        let w = &p.tensors[hi][k * c..(k + 1) * c];
        for (((gj, fj), df), wj) in gw.iter_mut().zip(&cache.feat).zip(dfeat.iter_mut()).zip(w) {
            *gj += d * fj;
            *df += d * wj;
        }
        g.tensors[hi + 1][k] += d;
    }
    let nb = cfg.widths.len();
    let mut dout = vec![0.0f32; cache.blocks[nb - 1].ln2.out.len()];
    for (&j, &d) in cache.feat_idx.iter().zip(&dfeat) {
        dout[j] += d;
    }
    for b in (0..nb).rev() {
        let input = if b == 0 {
            image
        } else {
            &cache.blocks[b - 1].ln2.out
        };
        match block_backward(p, cfg, b, input, &cache, &dout, g, b > 0) {
            Some(d) => dout = d,
            None => break,
        }
    }
    loss
}

/// Gradient of `Σ_k dlogits[k] · logits[k]` w.r.t. the input image, parameters fixed: the
/// backward pass the MNTD query detector (`crate::query`) needs for its learned images.
pub(crate) fn input_grad(p: &Params, cfg: &CnnConfig, image: &[f32], dlogits: &[f32]) -> Vec<f32> {
    let cache = sample_forward(p, cfg, image);
    let c = cache.feat.len();
    let hw = &p.tensors[p.head_index()];
    let mut dfeat = vec![0.0f32; c];
    for (k, &d) in dlogits.iter().enumerate() {
        for (df, w) in dfeat.iter_mut().zip(&hw[k * c..(k + 1) * c]) {
            *df += d * w;
        }
    }
    let nb = cfg.widths.len();
    let mut dout = vec![0.0f32; cache.blocks[nb - 1].ln2.out.len()];
    for (&j, &d) in cache.feat_idx.iter().zip(&dfeat) {
        dout[j] += d;
    }
    // Scratch for the parameter gradients the block backward accumulates (discarded).
    let mut g = Params::zeros(cfg);
    for b in (0..nb).rev() {
        let input = if b == 0 {
            image
        } else {
            &cache.blocks[b - 1].ln2.out
        };
        dout = block_backward(p, cfg, b, input, &cache, &dout, &mut g, true)
            .expect("input gradient requested");
    }
    dout
}

/// Mean cross-entropy over the batch and its gradient w.r.t. every parameter.
///
/// Samples run in parallel (rayon), each accumulating into a per-thread gradient buffer.
///
/// # Panics
/// If the config is invalid, `images.len() != batch * cfg.image_len()`,
/// `labels.len() != batch`, a label is `>= cfg.classes`, or `batch == 0`.
pub fn loss_and_grad(
    params: &Params,
    cfg: &CnnConfig,
    images: &[f32],
    labels: &[u8],
    batch: usize,
) -> (f32, Params) {
    check_batch(cfg, images, batch);
    assert!(batch > 0, "empty batch");
    assert_eq!(labels.len(), batch, "one label per image");
    assert!(
        labels.iter().all(|&l| (l as usize) < cfg.classes),
        "label out of range"
    );
    let scale = 1.0 / batch as f32;
    let (loss, grads) = images
        .par_chunks_exact(cfg.image_len())
        .zip(labels.par_iter())
        .fold(
            || (0.0f64, Params::zeros(cfg)),
            |(l, mut g), (img, &lab)| {
                let li = sample_loss_grad(params, cfg, img, lab as usize, scale, &mut g);
                (l + li, g)
            },
        )
        .reduce(
            || (0.0f64, Params::zeros(cfg)),
            |(la, mut ga), (lb, gb)| {
                for (a, b) in ga.tensors.iter_mut().zip(&gb.tensors) {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                }
                (la + lb, ga)
            },
        );
    ((loss / batch as f64) as f32, grads)
}
