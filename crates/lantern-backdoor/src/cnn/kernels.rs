//! The two products behind every padded 3×3 convolution of a chunk ([`super::grid`]):
//! [`shifted_sum`] (forward pass and input gradient) and [`tap_grad`] (weight gradient).
//!
//! Both run over one contiguous range of positions per channel, so the inner loops are
//! plain vector loads and fused multiply-adds. On x86-64 with AVX2 and FMA (checked at
//! run time) register tiles of 4 output channels × 24 positions (12 accumulators) do the
//! work; the scalar loops below do the rest and serve other CPUs.

use std::ops::Range;

/// Shapes shared by both products: `c_in` input and `c_out` output channels of `cs`
/// values each, nine tap offsets, and the range of positions computed in every channel.
#[derive(Debug, Clone)]
pub(crate) struct Taps {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Values per channel.
    pub cs: usize,
    /// Offset of each tap from the output position.
    pub off: [isize; 9],
    /// Positions computed (every `r + off[t]` stays inside `0..cs`).
    pub span: Range<usize>,
}

impl Taps {
    /// Panics unless every tap from the span stays inside its channel, the `c_out`-channel
    /// buffer holds `outputs` values and the `c_in`-channel one `inputs` (at least).
    fn check(&self, outputs: usize, inputs: usize) {
        let reach = self.off.iter().map(|o| o.unsigned_abs()).max().unwrap_or(0);
        assert!(
            self.span.start >= reach && self.span.end + reach <= self.cs,
            "taps reach outside the channel"
        );
        assert!(
            outputs >= self.c_out * self.cs && inputs >= self.c_in * self.cs,
            "buffer sizes"
        );
    }
}

/// `out[o][r] = bias[o] + Σ_i Σ_t w[(o·c_in + i)·9 + t] · x[i][r + off[t]]` for `r` in the
/// span; positions outside it are left as they are.
pub(crate) fn shifted_sum(out: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], taps: &Taps) {
    taps.check(out.len(), x.len());
    assert!(
        w.len() == taps.c_out * taps.c_in * 9 && bias.len() == taps.c_out,
        "weight sizes"
    );
    let mut done = taps.span.start;
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA are present; the asserts above bound every access.
        done = unsafe { simd::shifted_sum(out, x, w, bias, taps) };
    }
    shifted_sum_scalar(out, x, w, bias, taps, done);
}

/// [`shifted_sum`] by scalar loops for the positions of the span from `from` on.
fn shifted_sum_scalar(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    taps: &Taps,
    from: usize,
) {
    let Taps {
        c_in, c_out, cs, ..
    } = *taps;
    for o in 0..c_out {
        for r in from..taps.span.end {
            let mut acc = bias[o];
            for i in 0..c_in {
                let wi = &w[(o * c_in + i) * 9..(o * c_in + i + 1) * 9];
                for (wv, &off) in wi.iter().zip(&taps.off) {
                    acc += wv * x[i * cs + (r as isize + off) as usize];
                }
            }
            out[o * cs + r] = acc;
        }
    }
}

/// `dw[(o·c_in + i)·9 + t] += Σ_r dy[o][r] · x[i][r + off[t]]` over the span.
pub(crate) fn tap_grad(dw: &mut [f32], dy: &[f32], x: &[f32], taps: &Taps) {
    taps.check(dy.len(), x.len());
    assert_eq!(dw.len(), taps.c_out * taps.c_in * 9, "weight gradient size");
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA are present; the asserts above bound every access.
        unsafe { simd::tap_grad(dw, dy, x, taps) };
        return;
    }
    tap_grad_scalar(dw, dy, x, taps);
}

/// [`tap_grad`] by scalar loops.
fn tap_grad_scalar(dw: &mut [f32], dy: &[f32], x: &[f32], taps: &Taps) {
    let Taps {
        c_in, c_out, cs, ..
    } = *taps;
    for o in 0..c_out {
        let d = &dy[o * cs..(o + 1) * cs];
        for i in 0..c_in {
            for (t, &off) in taps.off.iter().enumerate() {
                let xs = &x[i * cs..(i + 1) * cs];
                let s: f32 = taps
                    .span
                    .clone()
                    .map(|r| d[r] * xs[(r as isize + off) as usize])
                    .sum();
                dw[(o * c_in + i) * 9 + t] += s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Taps;
    use std::arch::x86_64::*;

    /// Whether the AVX2 + FMA kernels can run on this CPU.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// [`super::shifted_sum`] by vector tiles; returns where the scalar loop must start
    /// (the span's end, unless the span is shorter than one vector).
    ///
    /// # Safety
    /// AVX2 and FMA present; sizes as `shifted_sum` asserts.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn shifted_sum(
        out: &mut [f32],
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        taps: &Taps,
    ) -> usize {
        let (start, end) = (taps.span.start, taps.span.end);
        if end - start < 8 {
            return start;
        }
        let wide = start + (end - start) / 24 * 24;
        let narrow = wide + (end - wide) / 8 * 8;
        // The last few positions: one more vector ending at `end`, overlapping the one
        // before (each position's value is written whole, so recomputing some is harmless).
        let last = (narrow < end).then_some(end - 8);
        let (o_ptr, x_ptr, w_ptr) = (out.as_mut_ptr(), x.as_ptr(), w.as_ptr());
        let mut o = 0;
        while o < taps.c_out {
            let ob = if taps.c_out - o >= 4 { 4 } else { 1 };
            let wo = w_ptr.add(o * taps.c_in * 9);
            let bo = bias.as_ptr().add(o);
            let oo = o_ptr.add(o * taps.cs);
            for r in (start..wide).step_by(24) {
                match ob {
                    4 => sum_tile::<4, 3>(oo, x_ptr, wo, bo, taps, r),
                    _ => sum_tile::<1, 3>(oo, x_ptr, wo, bo, taps, r),
                }
            }
            for r in (wide..narrow).step_by(8).chain(last) {
                match ob {
                    4 => sum_tile::<4, 1>(oo, x_ptr, wo, bo, taps, r),
                    _ => sum_tile::<1, 1>(oo, x_ptr, wo, bo, taps, r),
                }
            }
            o += ob;
        }
        end
    }

    /// `OB` output channels × `NV` vectors of 8 positions from `r`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_tile<const OB: usize, const NV: usize>(
        out: *mut f32,
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        taps: &Taps,
        r: usize,
    ) {
        let (c_in, cs) = (taps.c_in, taps.cs);
        let mut acc = [[_mm256_setzero_ps(); NV]; OB];
        for (j, row) in acc.iter_mut().enumerate() {
            *row = [_mm256_set1_ps(*bias.add(j)); NV];
        }
        for i in 0..c_in {
            let xi = x.add(i * cs + r);
            let wi = w.add(i * 9);
            for t in 0..9 {
                let p = xi.offset(taps.off[t]);
                let mut xv = [_mm256_setzero_ps(); NV];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(p.add(8 * v));
                }
                for (j, row) in acc.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*wi.add(j * c_in * 9 + t));
                    for (a, xv) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(wv, *xv, *a);
                    }
                }
            }
        }
        for (j, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                _mm256_storeu_ps(out.add(j * cs + r + 8 * v), *a);
            }
        }
    }

    /// [`super::tap_grad`], whole.
    ///
    /// # Safety
    /// AVX2 and FMA present; sizes as `tap_grad` asserts.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tap_grad(dw: &mut [f32], dy: &[f32], x: &[f32], taps: &Taps) {
        let mut o = 0;
        while o < taps.c_out {
            let ob = if taps.c_out - o >= 4 { 4 } else { 1 };
            for i in 0..taps.c_in {
                for ky in 0..3 {
                    let sums = match ob {
                        4 => grad_row::<4>(dy, x, taps, o, i, ky),
                        _ => grad_row::<1>(dy, x, taps, o, i, ky),
                    };
                    for (j, s) in sums.iter().take(ob).enumerate() {
                        let at = ((o + j) * taps.c_in + i) * 9 + ky * 3;
                        for (d, v) in dw[at..at + 3].iter_mut().zip(s) {
                            *d += v;
                        }
                    }
                }
            }
            o += ob;
        }
    }

    /// For output channels `o..o+OB`, input channel `i` and tap row `ky`: the three sums
    /// `Σ_r dy[o+j][r] · x[i][r + off[ky·3 + kx]]`, `[j][kx]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_row<const OB: usize>(
        dy: &[f32],
        x: &[f32],
        taps: &Taps,
        o: usize,
        i: usize,
        ky: usize,
    ) -> [[f32; 3]; 4] {
        let (cs, start, end) = (taps.cs, taps.span.start, taps.span.end);
        let body = start + (end - start) / 8 * 8;
        let d_ptr = dy.as_ptr().add(o * cs);
        let x_ptr = x.as_ptr().add(i * cs);
        let off = [taps.off[ky * 3], taps.off[ky * 3 + 1], taps.off[ky * 3 + 2]];
        let mut acc = [[_mm256_setzero_ps(); 3]; OB];
        for r in (start..body).step_by(8) {
            let xv: [__m256; 3] =
                std::array::from_fn(|k| _mm256_loadu_ps(x_ptr.offset(r as isize + off[k])));
            for (j, row) in acc.iter_mut().enumerate() {
                let d = _mm256_loadu_ps(d_ptr.add(j * cs + r));
                for (a, xv) in row.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(d, *xv, *a);
                }
            }
        }
        if body == end {
            // Whole vectors covered the span.
        } else if end - start >= 8 {
            // The last few positions: the vector ending at `end`, its lanes before `body`
            // (already summed) masked to zero.
            let r = end - 8;
            let keep: [i32; 8] = std::array::from_fn(|l| -i32::from(r + l >= body));
            let mask = _mm256_castsi256_ps(_mm256_loadu_si256(keep.as_ptr().cast()));
            let xv: [__m256; 3] =
                std::array::from_fn(|k| _mm256_loadu_ps(x_ptr.offset(r as isize + off[k])));
            for (j, row) in acc.iter_mut().enumerate() {
                let d = _mm256_and_ps(mask, _mm256_loadu_ps(d_ptr.add(j * cs + r)));
                for (a, xv) in row.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(d, *xv, *a);
                }
            }
        } else {
            // A span shorter than one vector: scalar sums.
            for (j, row) in acc.iter_mut().enumerate() {
                for (k, a) in row.iter_mut().enumerate() {
                    let s: f32 = (body..end)
                        .map(|r| dy[(o + j) * cs + r] * x[i * cs + (r as isize + off[k]) as usize])
                        .sum();
                    *a = _mm256_add_ps(*a, _mm256_set_ps(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, s));
                }
            }
        }
        let mut sums = [[0.0f32; 3]; 4];
        for (j, row) in acc.iter().enumerate() {
            for (k, a) in row.iter().enumerate() {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                sums[j][k] = lanes.iter().sum();
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn setup(c_in: usize, c_out: usize, cs: usize) -> (Taps, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(3);
        let mut rand =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
        let off = [-12, -11, -10, -1, 0, 1, 10, 11, 12];
        let taps = Taps {
            c_in,
            c_out,
            cs,
            off,
            span: 12..cs - 12,
        };
        (taps, rand(c_in * cs), rand(c_out * c_in * 9), rand(c_out))
    }

    #[test]
    fn vector_tiles_match_scalar_sums() {
        // 6 outputs: one tile of 4 and two single channels. Spans of 4·24 + 8 + 3 positions
        // (wide, narrow and overlapping last vector), 2·24 (wide only) and 5 (shorter
        // than a vector: scalar only); the channel adds 12 on each side.
        for span in [4 * 24 + 8 + 3, 48, 5] {
            check_against_f64(3, 6, span + 24);
        }
    }

    fn check_against_f64(c_in: usize, c_out: usize, cs: usize) {
        let (taps, x, w, b) = setup(c_in, c_out, cs);
        let mut out = vec![7.0f32; c_out * cs];
        shifted_sum(&mut out, &x, &w, &b, &taps);
        let dy: Vec<f32> = out.iter().map(|v| v * 0.5 - 0.1).collect();
        let mut dw = vec![1.0f32; w.len()];
        tap_grad(&mut dw, &dy, &x, &taps);
        // The scalar loops (what other CPUs run) give the same values.
        let mut out_scalar = vec![7.0f32; c_out * cs];
        shifted_sum_scalar(&mut out_scalar, &x, &w, &b, &taps, taps.span.start);
        let mut dw_scalar = vec![1.0f32; w.len()];
        tap_grad_scalar(&mut dw_scalar, &dy, &x, &taps);
        for (p, q) in out.iter().zip(&out_scalar).chain(dw.iter().zip(&dw_scalar)) {
            assert!((p - q).abs() < 1e-3, "vector {p} vs scalar {q}");
        }
        for o in 0..c_out {
            for r in 0..cs {
                let want = if taps.span.contains(&r) {
                    let mut acc = b[o] as f64;
                    for i in 0..c_in {
                        for t in 0..9 {
                            let xv = x[i * cs + (r as isize + taps.off[t]) as usize];
                            acc += w[(o * c_in + i) * 9 + t] as f64 * xv as f64;
                        }
                    }
                    acc as f32
                } else {
                    7.0
                };
                let got = out[o * cs + r];
                assert!((got - want).abs() < 1e-4, "out[{o}][{r}] {got} vs {want}");
            }
            for i in 0..c_in {
                for t in 0..9 {
                    let want: f64 = 1.0
                        + taps
                            .span
                            .clone()
                            .map(|r| {
                                dy[o * cs + r] as f64
                                    * x[i * cs + (r as isize + taps.off[t]) as usize] as f64
                            })
                            .sum::<f64>();
                    let got = dw[(o * c_in + i) * 9 + t];
                    assert!((got as f64 - want).abs() < 1e-3, "dw {got} vs {want}");
                }
            }
        }
    }
}
