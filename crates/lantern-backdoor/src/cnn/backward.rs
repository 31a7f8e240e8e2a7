//! Hand-written backward pass and [`loss_and_grad`].

use super::conv::{conv3x3_backward, Wants};
use super::forward::{block_grid, check_batch, chunk_forward, ChunkCache, LnOut};
use super::grid::Grid;
use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G, PER_BLOCK};
use super::{CnnConfig, Params};
use rayon::prelude::*;

/// Backward of ReLU ∘ per-channel affine ∘ LayerNorm for the chunk on `g`: takes `dout`
/// (gradient w.r.t. the ReLU output; its zero places may hold junk), accumulates `dγ`,
/// `dβ` and returns the gradient w.r.t. the LN input (zeros in place). Works on whole
/// planes: the cached output is zero in the zero places, so the ReLU mask drops them.
fn layer_norm_relu_backward(
    ln: &LnOut,
    dout: &[f32],
    g: Grid,
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Vec<f32> {
    let (c, n) = (gamma.len(), g.n);
    let mut dxhat = vec![0.0f32; ln.out.len()];
    // Per sample: Σ dxhat and Σ dxhat·xhat over all its planes.
    let mut sum_d = vec![0.0f64; n];
    let mut sum_dx = vec![0.0f64; n];
    for ch in 0..c {
        for s in 0..n {
            let r = g.plane_range(ch, s);
            let [sg, sb] = relu_affine_backward(
                &mut dxhat[r.clone()],
                &ln.out[r.clone()],
                &dout[r.clone()],
                &ln.xhat[r],
                gamma[ch],
            );
            dgamma[ch] += sg;
            dbeta[ch] += sb;
            sum_d[s] += sb as f64 * gamma[ch] as f64;
            sum_dx[s] += sg as f64 * gamma[ch] as f64;
        }
    }
    let count = (c * g.area()) as f64;
    for ch in 0..c {
        for s in 0..n {
            let (md, mdx) = ((sum_d[s] / count) as f32, (sum_dx[s] / count) as f32);
            let is = ln.inv_std[s];
            let r = g.plane_range(ch, s);
            for (d, &x) in dxhat[r.clone()].iter_mut().zip(&ln.xhat[r]) {
                *d = is * (*d - md - x * mdx);
            }
        }
    }
    g.zero_pads(&mut dxhat, c);
    dxhat
}

/// One plane of the ReLU and affine backward: `dxhat = γ·dy` with `dy = dout` where the
/// ReLU passed, 0 elsewhere; returns `[Σ dy·xhat, Σ dy]` (summed in eight lanes).
fn relu_affine_backward(
    dxhat: &mut [f32],
    out: &[f32],
    dout: &[f32],
    xhat: &[f32],
    gamma: f32,
) -> [f32; 2] {
    let (mut sg, mut sb) = ([0.0f32; 8], [0.0f32; 8]);
    let body = dxhat.len() / 8 * 8;
    let (d_body, d_tail) = dxhat.split_at_mut(body);
    let lanes = d_body
        .chunks_exact_mut(8)
        .zip(out.chunks_exact(8))
        .zip(dout.chunks_exact(8))
        .zip(xhat.chunks_exact(8));
    for (((d, o), g), x) in lanes {
        let d: &mut [f32; 8] = d.try_into().expect("chunks of 8");
        let (o, g, x): (&[f32; 8], &[f32; 8], &[f32; 8]) = (
            o.try_into().expect("chunks of 8"),
            g.try_into().expect("chunks of 8"),
            x.try_into().expect("chunks of 8"),
        );
        for l in 0..8 {
            // The ReLU mask as a bit mask (a select of loaded values does not vectorise).
            let pass = u32::from(o[l] > 0.0).wrapping_neg();
            let dy = f32::from_bits(g[l].to_bits() & pass);
            sg[l] += dy * x[l];
            sb[l] += dy;
            d[l] = dy * gamma;
        }
    }
    for (k, d) in d_tail.iter_mut().enumerate() {
        let dy = if out[body + k] > 0.0 {
            dout[body + k]
        } else {
            0.0
        };
        sg[k] += dy * xhat[body + k];
        sb[k] += dy;
        *d = dy * gamma;
    }
    [sg.iter().sum(), sb.iter().sum()]
}

/// Backward of block `b` for a chunk given the gradient w.r.t. its output (zeros in place);
/// returns the gradient w.r.t. its input (junk in the zero places) when `wants.input`.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    p: &Params,
    cfg: &CnnConfig,
    b: usize,
    cache: &ChunkCache,
    input: &[f32],
    dout: &[f32],
    g: &mut Params,
    wants: Wants,
) -> Option<Vec<f32>> {
    let grid = block_grid(cfg, b, cache.n);
    let (c_in, width) = (cfg.block_in(b), cfg.widths[b]);
    let bc = &cache.blocks[b];
    let base = b * PER_BLOCK;
    let [dg2, db2] = two(g, base + LN2_G, base + LN2_B);
    let dpool = layer_norm_relu_backward(&bc.ln2, dout, grid.pooled(), p.block(b, LN2_G), dg2, db2);
    // Each pooled gradient goes to the input value that won its window.
    let mut da2 = vec![0.0f32; width * grid.channel()];
    let mut winners = bc.pool_idx.iter();
    for r in grid.pooled().all_rows(width) {
        for &d in &dpool[r] {
            let j = *winners.next().expect("one winner per pooled value");
            da2[j as usize] += d;
        }
    }
    let [dw2, dbias2] = two(g, base + CONV2_W, base + CONV2_B);
    let w2 = p.block(b, CONV2_W);
    let inner = Wants {
        input: true,
        ..wants
    };
    let dr1 = conv3x3_backward(&bc.ln1.out, width, grid, w2, &da2, dw2, dbias2, inner)
        .expect("requested input gradient");
    let [dg1, db1] = two(g, base + LN1_G, base + LN1_B);
    let da1 = layer_norm_relu_backward(&bc.ln1, &dr1, grid, p.block(b, LN1_G), dg1, db1);
    let [dw1, dbias1] = two(g, base + CONV1_W, base + CONV1_B);
    let w1 = p.block(b, CONV1_W);
    conv3x3_backward(input, c_in, grid, w1, &da1, dw1, dbias1, wants)
}

/// Mutable borrows of two distinct tensors `i < j` of `g`.
fn two(g: &mut Params, i: usize, j: usize) -> [&mut [f32]; 2] {
    let (lo, hi) = g.tensors.split_at_mut(j);
    [&mut lo[i], &mut hi[0]]
}

/// Backward from the logits' gradient `dz` (`[n, classes]`) through the head and every
/// block; accumulates parameter gradients into `g` (the convolutions' only when
/// `wants.weights`) and returns the input gradient in the padded layout (junk in the zero
/// places) when `wants.input`.
fn chunk_backward(
    p: &Params,
    cfg: &CnnConfig,
    cache: &ChunkCache,
    dz: &[f32],
    g: &mut Params,
    wants: Wants,
) -> Option<Vec<f32>> {
    let c = *cfg.widths.last().expect("validated config has blocks");
    let hi = p.head_index();
    let mut dfeat = vec![0.0f32; cache.n * c];
    for ((dzs, f), dfs) in dz
        .chunks_exact(cfg.classes)
        .zip(cache.feat.chunks_exact(c))
        .zip(dfeat.chunks_exact_mut(c))
    {
        for (k, &d) in dzs.iter().enumerate() {
            let gw = &mut g.tensors[hi][k * c..(k + 1) * c];
            let w = &p.tensors[hi][k * c..(k + 1) * c];
            for (((gj, fj), df), wj) in gw.iter_mut().zip(f).zip(dfs.iter_mut()).zip(w) {
                *gj += d * fj;
                *df += d * wj;
            }
            g.tensors[hi + 1][k] += d;
        }
    }
    let nb = cfg.widths.len();
    let mut dout = vec![0.0f32; cache.blocks[nb - 1].ln2.out.len()];
    for (&j, &d) in cache.feat_idx.iter().zip(&dfeat) {
        dout[j as usize] += d;
    }
    for b in (0..nb).rev() {
        let input = if b == 0 {
            &cache.input
        } else {
            &cache.blocks[b - 1].ln2.out
        };
        let block_wants = Wants {
            input: wants.input || b > 0,
            ..wants
        };
        dout = block_backward(p, cfg, b, cache, input, &dout, g, block_wants)?;
    }
    Some(dout)
}

/// Summed cross-entropy of a chunk of `labels.len()` images; accumulates its gradients
/// scaled by `scale` into `g`.
fn chunk_loss_grad(
    p: &Params,
    cfg: &CnnConfig,
    images: &[f32],
    labels: &[u8],
    scale: f32,
    g: &mut Params,
) -> f64 {
    let cache = chunk_forward(p, cfg, images, labels.len(), true);
    let mut loss = 0.0f64;
    let mut dz = vec![0.0f32; cache.logits.len()];
    for ((z, d), &label) in cache
        .logits
        .chunks_exact(cfg.classes)
        .zip(dz.chunks_exact_mut(cfg.classes))
        .zip(labels)
    {
        let label = label as usize;
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        loss += sum.ln() + (m - z[label]) as f64;
        for (k, (dk, &v)) in d.iter_mut().zip(z).enumerate() {
            let prob = (((v - m) as f64).exp() / sum) as f32;
            *dk = scale * (prob - f32::from(u8::from(k == label)));
        }
    }
    let wants = Wants {
        weights: true,
        input: false,
    };
    chunk_backward(p, cfg, &cache, &dz, g, wants);
    loss
}

/// Gradient of `Σ_k dlogits[k] · logits[k]` w.r.t. the input image, parameters fixed: the
/// backward pass the MNTD query detector (`crate::query`) needs for its learned images.
pub(crate) fn input_grad(p: &Params, cfg: &CnnConfig, image: &[f32], dlogits: &[f32]) -> Vec<f32> {
    let cache = chunk_forward(p, cfg, image, 1, true);
    // Scratch for the few parameter gradients the backward pass still accumulates (head and
    // LayerNorm affines; discarded); the convolutions' are skipped.
    let mut g = Params::zeros(cfg);
    let wants = Wants {
        weights: false,
        input: true,
    };
    let din =
        chunk_backward(p, cfg, &cache, dlogits, &mut g, wants).expect("input gradient requested");
    block_grid(cfg, 0, 1).unpad(&din, cfg.in_channels)
}

/// Samples per chunk of [`loss_and_grad`]. Measured on the 1×28×28, 8/16/32 network at
/// batch 128 on one thread (30 steps, best of two runs; the step is timed by `cargo bench
/// -p lantern-backdoor --bench train_step`): 44 ms per step for chunks of 1, 44 for 2, 35
/// for 4, 36 for 8 — longer runs per channel keep the vector tiles busy, and beyond 4
/// samples the chunk's activations outgrow the core's cache.
const TRAIN_CHUNK: usize = 4;

/// Mean cross-entropy over the batch and its gradient w.r.t. every parameter.
///
/// The batch runs as chunks of a few samples (`TRAIN_CHUNK`) in parallel (rayon), each chunk
/// through one set of batched products, accumulating into a per-thread gradient buffer.
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
    let chunk = TRAIN_CHUNK.min(batch);
    let (loss, grads) = images
        .par_chunks(chunk * cfg.image_len())
        .zip(labels.par_chunks(chunk))
        .fold(
            || (0.0f64, Params::zeros(cfg)),
            |(loss, mut g), (x, l)| (loss + chunk_loss_grad(params, cfg, x, l, scale, &mut g), g),
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
