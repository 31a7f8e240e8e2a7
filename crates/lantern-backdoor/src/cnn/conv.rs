//! Padded 3×3 convolution of a whole chunk of samples in the padded layout of
//! [`super::grid`] (forward and backward), as sums of shifted channels
//! ([`super::kernels`]).
//!
//! The forward pass reads every tap as a constant offset into the zero-bordered input, so
//! it needs no im2col matrix; the backward pass computes the weight gradient from the
//! layer's input (which the caches keep anyway) and the input gradient as the same
//! shifted sum with the taps mirrored and the weights transposed.

use super::grid::Grid;
use super::kernels::{shifted_sum, tap_grad, Taps};

/// Sum of `x` in eight interleaved partial sums (a plain `sum` is a serial chain of adds the
/// compiler may not reorder; this one vectorises).
pub(crate) fn lane_sum(x: &[f32]) -> f32 {
    lane_sum_of(x, |v| v)
}

/// `Σ f(x_i)` in eight interleaved partial sums (see [`lane_sum`]).
#[inline]
pub(crate) fn lane_sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// The product shapes of a convolution from `c_in` to `c_out` channels on `g`.
fn taps(g: Grid, c_in: usize, c_out: usize, mirrored: bool) -> Taps {
    let mut off = g.taps();
    if mirrored {
        off.iter_mut().for_each(|o| *o = -*o);
    }
    Taps {
        c_in,
        c_out,
        cs: g.channel(),
        off,
        span: g.span(),
    }
}

/// 3×3 convolution with padding 1 of a chunk in the layout of `g` (zeros in place):
/// `c_out` channels in the same layout, zeros in place.
pub(crate) fn conv3x3(
    input: &[f32],
    c_in: usize,
    g: Grid,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let c_out = bias.len();
    let mut out = vec![0.0f32; c_out * g.channel()];
    shifted_sum(&mut out, input, weight, bias, &taps(g, c_in, c_out, false));
    g.zero_pads(&mut out, c_out);
    out
}

/// What a backward pass must produce besides the gradients of the activations in between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wants {
    /// The convolutions' weight and bias gradients (an input gradient alone skips them: they
    /// are a third of the backward pass).
    pub weights: bool,
    /// The gradient w.r.t. the input.
    pub input: bool,
}

/// Backward of [`conv3x3`] given its input and the gradient w.r.t. its output (`dout`,
/// zeros in place): accumulates `dw`, `db` when `wants.weights` and returns the input
/// gradient (interior exact, junk in the zero places) when `wants.input`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3_backward(
    input: &[f32],
    c_in: usize,
    g: Grid,
    weight: &[f32],
    dout: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    wants: Wants,
) -> Option<Vec<f32>> {
    let c_out = db.len();
    if wants.weights {
        for (o, d) in dout.chunks_exact(g.channel()).enumerate() {
            db[o] += lane_sum(d);
        }
        tap_grad(dw, dout, input, &taps(g, c_in, c_out, false));
    }
    if !wants.input {
        return None;
    }
    // din[i][r] = Σ_o Σ_t W[o][i][t] · dout[o][r − off[t]]: a shifted sum from the c_out
    // channels of dout with mirrored taps and the weight transposed to [c_in][c_out][9].
    let mut wt = vec![0.0f32; weight.len()];
    for o in 0..c_out {
        for i in 0..c_in {
            let src = (o * c_in + i) * 9;
            let dst = (i * c_out + o) * 9;
            wt[dst..dst + 9].copy_from_slice(&weight[src..src + 9]);
        }
    }
    let mut din = vec![0.0f32; c_in * g.channel()];
    let zero = vec![0.0f32; c_in];
    shifted_sum(&mut din, dout, &wt, &zero, &taps(g, c_out, c_in, true));
    Some(din)
}
