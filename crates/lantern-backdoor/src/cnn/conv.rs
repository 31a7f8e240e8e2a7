//! Padded 3×3 convolution of a whole chunk of samples as im2col + one `gemm` product
//! (forward and backward).
//!
//! Activations are channel-major, `[c, n, h·w]`: plane `(c, s)` of sample `s` starts at
//! `(c·n + s)·h·w` ([`plane`]). The im2col matrix is `[c_in·9, n·h·w]`, so one product
//! covers the chunk and the weight gradient is one product with `n·h·w` as its inner
//! dimension; the forward pass keeps the matrix for the backward pass. Chunks stay small
//! (a few samples, see `backward::TRAIN_CHUNK`): larger matrices fall out of the core's
//! cache and cost more in memory traffic than the larger products gain.

use super::forward::{for_each_tap_row, plane};
use std::mem::MaybeUninit;

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, all row-major; `lhs_t` / `rhs_t` say the operand
/// is stored transposed (`[k, m]` / `[n, k]`). Single-threaded: chunks parallelise outside.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    acc: bool,
) {
    assert!(
        dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n,
        "matmul sizes"
    );
    let (lhs_rs, lhs_cs) = if lhs_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rhs_rs, rhs_cs) = if rhs_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the assert above bounds every index the strides reach; dst does not alias
    // lhs or rhs (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Sum of `x` in eight interleaved partial sums (a plain `sum` is a serial chain of adds the
/// compiler may not reorder; this one vectorises).
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// `dst.copy_from_slice(src)` for the short rows of im2col (an image row, tens of values)
/// as fixed-size blocks, the last one overlapping its predecessor: they compile to inline
/// vector moves, where a copy of unknown length calls the C library's `memmove` (11% of a
/// zoo's time at 26–28-value rows).
#[inline]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    fn block<T: Copy, const N: usize>(dst: &mut [T], src: &[T], at: usize) {
        let d: &mut [T; N] = (&mut dst[at..at + N]).try_into().expect("block");
        *d = *<&[T; N]>::try_from(&src[at..at + N]).expect("block");
    }
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_short lengths");
    if n >= 8 {
        for at in (0..n - 8).step_by(8) {
            block::<T, 8>(dst, src, at);
        }
        block::<T, 8>(dst, src, n - 8);
    } else if n >= 4 {
        block::<T, 4>(dst, src, 0);
        block::<T, 4>(dst, src, n - 4);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// im2col of `n` samples `[c_in, n, h·w]`: `[c_in·9, n·h·w]`, row `i·9 + tap` holding, for
/// every output pixel of every sample, the input pixel it reads through that tap (0 in
/// the padding).
///
/// Written front to back, every value exactly once (an image row of the input, shifted
/// by the tap, or zeros), so the matrix needs no zero-filled allocation first (zeroing
/// it cost 4% of a zoo's time).
pub(crate) fn im2col(input: &[f32], c_in: usize, n: usize, h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let len = c_in * 9 * n * hw;
    let mut cols: Vec<f32> = Vec::with_capacity(len);
    let out = &mut cols.spare_capacity_mut()[..len];
    let mut at = 0;
    for i in 0..c_in {
        for t in 0..9 {
            let (dy, dx) = (t as isize / 3 - 1, t as isize % 3 - 1);
            for s in 0..n {
                let plane = &input[plane(i, s, n, hw)];
                for y in 0..h {
                    let row = &mut out[at..at + w];
                    at += w;
                    let iy = y as isize + dy;
                    if iy < 0 || iy >= h as isize {
                        row.fill(MaybeUninit::new(0.0));
                        continue;
                    }
                    let src = as_uninit(&plane[iy as usize * w..(iy as usize + 1) * w]);
                    match dx {
                        -1 => {
                            row[0] = MaybeUninit::new(0.0);
                            copy_short(&mut row[1..], &src[..w - 1]);
                        }
                        0 => copy_short(row, src),
                        _ => {
                            copy_short(&mut row[..w - 1], &src[1..]);
                            row[w - 1] = MaybeUninit::new(0.0);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(at, len, "im2col covers its matrix");
    // SAFETY: the loops above wrote every one of the `len` values (checked just above).
    unsafe { cols.set_len(len) };
    cols
}

/// `f32` values viewed as possibly-uninitialised ones (always sound: every `f32` is a
/// valid `MaybeUninit<f32>`), so [`copy_short`] can fill spare capacity.
fn as_uninit(x: &[f32]) -> &[MaybeUninit<f32>] {
    // SAFETY: same size and alignment; the view is read-only.
    unsafe { &*(x as *const [f32] as *const [MaybeUninit<f32>]) }
}

/// 3×3 convolution with padding 1 of `n` samples: `[c_in, n, h, w] -> [c_out, n, h, w]`.
/// Returns the output and the im2col matrix (the backward pass reuses it).
pub(crate) fn conv3x3(
    input: &[f32],
    c_in: usize,
    n: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let nhw = n * h * w;
    let cols = im2col(input, c_in, n, h, w);
    let mut out: Vec<f32> = bias
        .iter()
        .flat_map(|&b| std::iter::repeat_n(b, nhw))
        .collect();
    matmul(
        &mut out,
        bias.len(),
        nhw,
        c_in * 9,
        weight,
        false,
        &cols,
        false,
        true,
    );
    (out, cols)
}

/// Backward of [`conv3x3`] from its im2col matrix `cols`: accumulates `dw`, `db` and
/// returns the input gradient `[c_in, n, h, w]` when `need_din`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3_backward(
    cols: &[f32],
    c_in: usize,
    n: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    dout: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    need_din: bool,
) -> Option<Vec<f32>> {
    let hw = h * w;
    let nhw = n * hw;
    let c_out = db.len();
    for (o, g) in dout.chunks_exact(nhw).enumerate() {
        db[o] += lane_sum(g);
    }
    // dW[c_out, c_in·9] += dout[c_out, n·hw] · cols^T
    matmul(dw, c_out, c_in * 9, nhw, dout, false, cols, true, true);
    if !need_din {
        return None;
    }
    // dcols[c_in·9, n·hw] = W^T · dout, then col2im.
    let mut dcols = vec![0.0f32; c_in * 9 * nhw];
    matmul(
        &mut dcols,
        c_in * 9,
        nhw,
        c_out,
        weight,
        true,
        dout,
        false,
        false,
    );
    let mut din = vec![0.0f32; c_in * nhw];
    for i in 0..c_in {
        for s in 0..n {
            let plane = &mut din[plane(i, s, n, hw)];
            for_each_tap_row(h, w, |t, oo, io, len| {
                let at = (i * 9 + t) * nhw + s * hw + oo;
                for (d, g) in plane[io..io + len].iter_mut().zip(&dcols[at..at + len]) {
                    *d += g;
                }
            });
        }
    }
    Some(din)
}
