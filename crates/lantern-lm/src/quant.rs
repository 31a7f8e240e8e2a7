//! Weight formats of GGUF checkpoints (ggml's Q4_0, Q4_1, Q8_0 blocks and F16, BF16, F32) and
//! the CPU kernels that multiply activations by them.
//!
//! Generation multiplies one (or a few) activation rows by every weight matrix, so it is bound
//! by how fast the weights stream from memory. [`QMatrix::matmul_t`] therefore keeps the
//! weights in their file format and, like llama.cpp, quantizes the activation row to 8-bit
//! blocks so each 32-element block is an integer dot product (`vpmaddubsw`) plus a float
//! scale, prefetching the weights ahead of the kernel. Q4_0/Q4_1 weights are re-laid once into
//! 8-row panels ([`PackedQ4`]) whose kernel applies the scales as vectors; it serves every
//! batch size, prompts included. The AVX2 kernels are chosen at run time; the scalar kernels
//! compute the *same* floating-point result (they follow the SIMD lanes and the order of the
//! additions), so results do not depend on the machine.
//!
//! For f32 weights with many rows (prompts, `--dtype f32`), [`PackedF32`] is a packed,
//! register-tiled f32 GEMM that beats candle's on this machine.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::gguf::{GgmlType, GgufFile, TensorInfo};

/// Elements per quantized block (all ggml block formats Lantern reads use 32).
pub const QK: usize = 32;

/// Why a weight buffer cannot be read or multiplied.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("unsupported tensor type {0} (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)")]
    Unsupported(GgmlType),
    #[error("{ty}: {elements} elements need {expected} bytes, got {got}")]
    Length {
        ty: GgmlType,
        elements: usize,
        expected: usize,
        got: usize,
    },
    #[error("{ty}: {elements} elements are not a whole number of {block}-element blocks")]
    PartialBlock {
        ty: GgmlType,
        elements: usize,
        block: usize,
    },
    #[error("tensor {name}: expected a 2-D weight matrix, got dims {dims:?}")]
    NotMatrix { name: String, dims: Vec<u64> },
}

/// The weight types the kernels handle; a [`GgmlType`] that has passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl WType {
    fn from_ggml(ty: GgmlType) -> Result<WType, QuantError> {
        Ok(match ty {
            GgmlType::F32 => WType::F32,
            GgmlType::F16 => WType::F16,
            GgmlType::BF16 => WType::BF16,
            GgmlType::Q4_0 => WType::Q4_0,
            GgmlType::Q4_1 => WType::Q4_1,
            GgmlType::Q8_0 => WType::Q8_0,
            GgmlType::Other(_) => return Err(QuantError::Unsupported(ty)),
        })
    }

    /// (elements per block, bytes per block).
    fn layout(self) -> (usize, usize) {
        match self {
            WType::F32 => (1, 4),
            WType::F16 | WType::BF16 => (1, 2),
            WType::Q4_0 => (QK, 18),
            WType::Q4_1 => (QK, 20),
            WType::Q8_0 => (QK, 34),
        }
    }

    /// The byte length of `elements` values, or an error if they are not whole blocks.
    fn byte_len(self, ty: GgmlType, elements: usize) -> Result<usize, QuantError> {
        let (per, bytes) = self.layout();
        if !elements.is_multiple_of(per) {
            return Err(QuantError::PartialBlock {
                ty,
                elements,
                block: per,
            });
        }
        Ok(elements / per * bytes)
    }

    fn is_quantized(self) -> bool {
        matches!(self, WType::Q4_0 | WType::Q4_1 | WType::Q8_0)
    }
}

/// Little-endian f16 at `b[0..2]`, widened to f32 (exact).
#[inline]
fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Decodes `bytes` of type `ty` into `out`; `out.len()` is the number of elements.
///
/// Errors (never panics) if `ty` is not one Lantern computes with, if `out.len()` is not a
/// whole number of blocks, or if `bytes` has the wrong length for that many elements.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let wt = WType::from_ggml(ty)?;
    let expected = wt.byte_len(ty, out.len())?;
    if bytes.len() != expected {
        return Err(QuantError::Length {
            ty,
            elements: out.len(),
            expected,
            got: bytes.len(),
        });
    }
    dequantize_checked(wt, bytes, out);
    Ok(())
}

/// [`dequantize`] after validation: `bytes` holds exactly `out.len()` elements of `wt`.
fn dequantize_checked(wt: WType, bytes: &[u8], out: &mut [f32]) {
    let (per, bb) = wt.layout();
    let pairs = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(per));
    match wt {
        WType::F32 => pairs.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        WType::F16 => pairs.for_each(|(b, o)| o[0] = f16_at(b)),
        WType::BF16 => pairs.for_each(|(b, o)| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        WType::Q4_0 => {
            pairs.for_each(|(b, o)| nibble_block(&b[2..], f16_at(b), -8.0 * f16_at(b), o))
        }
        WType::Q4_1 => {
            pairs.for_each(|(b, o)| nibble_block(&b[4..], f16_at(b), f16_at(&b[2..]), o))
        }
        WType::Q8_0 => pairs.for_each(|(b, o)| {
            let d = f16_at(b);
            for (v, &q) in o.iter_mut().zip(&b[2..]) {
                *v = q as i8 as f32 * d;
            }
        }),
    }
}

/// One Q4 block: element `j` is the low nibble of byte `j`, element `j + 16` the high nibble;
/// value = q * d + m (Q4_0 is m = -8 d, which equals ggml's (q - 8) * d exactly).
#[inline]
fn nibble_block(qs: &[u8], d: f32, m: f32, out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(QK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&qs[..QK / 2]) {
        *l = (q & 0x0F) as f32 * d + m;
        *h = (q >> 4) as f32 * d + m;
    }
}

// ---------------------------------------------------------------------------------------------
// Activations

/// Activation rows in the form a kernel reads: 8-bit blocks for quantized weights (ggml's Q8_1:
/// per block a scale `d` and `s = d * sum(q)` for the Q4 minimum term), f32 otherwise.
enum Acts<'a> {
    Q8 {
        qs: Vec<i8>,
        d: Vec<f32>,
        s: Vec<f32>,
        blocks: usize,
    },
    F32 {
        x: &'a [f32],
        cols: usize,
    },
}

/// One activation row quantized to 8-bit blocks.
#[derive(Clone, Copy)]
struct Q8Row<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

impl<'a> Acts<'a> {
    fn new(kernel: Kernel, wt: WType, x: &'a [f32], cols: usize) -> Acts<'a> {
        if !wt.is_quantized() {
            return Acts::F32 { x, cols };
        }
        let blocks = x.len() / QK;
        let mut qs = vec![0i8; x.len()];
        let mut d = vec![0f32; blocks];
        let mut s = vec![0f32; blocks];
        quantize_q8(kernel, x, &mut qs, &mut d, &mut s);
        Acts::Q8 {
            qs,
            d,
            s,
            blocks: cols / QK,
        }
    }

    fn q8_row(&self, j: usize) -> Q8Row<'_> {
        match self {
            Acts::Q8 { qs, d, s, blocks } => Q8Row {
                qs: &qs[j * blocks * QK..(j + 1) * blocks * QK],
                d: &d[j * blocks..(j + 1) * blocks],
                s: &s[j * blocks..(j + 1) * blocks],
            },
            Acts::F32 { .. } => unreachable!("f32 activations asked for as Q8"),
        }
    }

    fn f32_row(&self, j: usize) -> &[f32] {
        match self {
            Acts::F32 { x, cols } => &x[j * cols..(j + 1) * cols],
            Acts::Q8 { .. } => unreachable!("Q8 activations asked for as f32"),
        }
    }
}

/// Quantizes `x` (a whole number of 32-blocks) like ggml's `quantize_row_q8_1`: per block
/// `d = max|x| / 127`, `q = round(x / d)` (ties to even, as ggml's SIMD code), and
/// `s = d * sum(q)`. The AVX2 version gives the same bytes for finite inputs.
fn quantize_q8(kernel: Kernel, x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        // SAFETY: Kernel::Avx2 is only constructed after detecting AVX2, FMA and F16C.
        return unsafe { avx2::quantize_q8(x, qs, d, s) };
    }
    let _ = kernel;
    let blocks = x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK));
    for (((xb, qb), db), sb) in blocks.zip(d.iter_mut()).zip(s.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let dd = amax / 127.0;
        let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        *db = dd;
        *sb = sum as f32 * dd;
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
//
// Every dot product accumulates in four 8-lane accumulators (block or 32-element chunk `b`
// goes to accumulator `b % 4`, lane `u` of a quantized block holds elements `4u..4u+4`), then
// adds them as `(a0 + a1) + (a2 + a3)` and reduces the 8 lanes in the order of `hsum8`. The
// scalar kernels follow the same order with fused multiply-adds, so both give the same bits.

/// Which implementation runs the dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }
}

/// One kernel call: whole weight rows times activation row `j`, or rows `j` and `j + 1`
/// (`pair`), which decodes each weight block once for both.
struct RowsJob<'a> {
    wt: WType,
    /// The weight rows, `rb` bytes each.
    w: &'a [u8],
    rb: usize,
    acts: &'a Acts<'a>,
    j: usize,
    pair: bool,
}

impl RowsJob<'_> {
    /// Activation rows this job multiplies.
    fn count(&self) -> usize {
        1 + self.pair as usize
    }
}

/// Runs `job`, writing row `i`'s result for activation `j + t` to `out[i * stride + t]`.
fn run_rows(kernel: Kernel, job: &RowsJob<'_>, out: &mut [f32], stride: usize) {
    check_job(job, out, stride);
    match kernel {
        Kernel::Scalar => scalar::rows(job, out, stride),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernel::Avx2` is only constructed by `Kernel::best` after detecting AVX2,
        // FMA and F16C on this CPU.
        Kernel::Avx2 => unsafe { avx2::rows(job, out, stride) },
    }
}

/// The lane-by-lane reduction of one 8-lane accumulator (see `avx2::hsum8`).
#[inline]
fn hsum8(v: [f32; 8]) -> f32 {
    let s4 = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// `(a0 + a1) + (a2 + a3)` lane-wise, then [`hsum8`].
#[inline]
fn reduce4(acc: &[[f32; 8]; 4]) -> f32 {
    let mut v = [0f32; 8];
    for (u, x) in v.iter_mut().enumerate() {
        *x = (acc[0][u] + acc[1][u]) + (acc[2][u] + acc[3][u]);
    }
    hsum8(v)
}

/// Checks that `rb`-byte rows of `wt` hold as many elements as the activation rows, that
/// the activation rows exist, and that `out` has a slot for every result; the SIMD kernels'
/// pointer reads rely on this.
fn check_job(job: &RowsJob<'_>, out: &mut [f32], stride: usize) {
    let (cols, n) = match job.acts {
        Acts::Q8 { blocks, qs, d, s } => {
            assert!(qs.len() == d.len() * QK && s.len() == d.len());
            (blocks * QK, d.len().checked_div(*blocks).unwrap_or(0))
        }
        Acts::F32 { cols, x } => (*cols, x.len().checked_div(*cols).unwrap_or(0)),
    };
    let (per, bb) = job.wt.layout();
    assert_eq!(
        job.rb,
        cols / per * bb,
        "weight row bytes do not match activation columns"
    );
    assert!(job.j + job.count() <= n, "activation row out of range");
    let rows = job.w.len() / job.rb.max(1);
    assert!(
        rows == 0 || (rows - 1) * stride + job.count() <= out.len(),
        "output too short"
    );
}

mod scalar {
    //! Portable kernels that reproduce the AVX2 kernels' arithmetic exactly.
    use super::*;

    pub(super) fn rows(job: &RowsJob<'_>, out: &mut [f32], stride: usize) {
        let rows = job.w.chunks_exact(job.rb).zip(out.chunks_mut(stride));
        for (r, o) in rows {
            for (t, o) in o.iter_mut().enumerate().take(job.count()) {
                let j = job.j + t;
                *o = match job.wt {
                    // Q4 weights go through `PackedQ4`.
                    WType::Q4_0 | WType::Q4_1 => unreachable!("Q4 rows are multiplied packed"),
                    WType::Q8_0 => dot_q8(r, job.acts.q8_row(j)),
                    WType::F32 => dot_float(r, 4, job.acts.f32_row(j), f32_at),
                    WType::F16 => dot_float(r, 2, job.acts.f32_row(j), f16_at),
                    WType::BF16 => dot_float(r, 2, job.acts.f32_row(j), bf16_at),
                };
            }
        }
    }

    /// One [`PackedQ4`] panel times one activation row, in the AVX2 kernel's order: per block
    /// the exact integer dot product, then `acc = fma(d_r dx, dot, acc)` and
    /// `acc = fma(m_r, sx, acc)`.
    pub(super) fn q4_panel(panel: &Q4Panel<'_>, a: Q8Row<'_>) -> [f32; 8] {
        let mut acc = [0f32; 8];
        for (b, rec) in panel.data.chunks_exact(panel.record_bytes()).enumerate() {
            let x = &a.qs[b * QK..(b + 1) * QK];
            for (r, acc) in acc.iter_mut().enumerate() {
                let mut dot = 0i32;
                for c in 0..4 {
                    for t in 0..4 {
                        let byte = rec[c * 32 + r * 4 + t];
                        dot += (byte & 0x0F) as i32 * x[8 * c + t] as i32;
                        dot += (byte >> 4) as i32 * x[8 * c + 4 + t] as i32;
                    }
                }
                let (d, m) = panel.scale_min(b, r);
                *acc = (d * a.d[b]).mul_add(dot as f32, *acc);
                *acc = m.mul_add(a.s[b], *acc);
            }
        }
        acc
    }

    /// Q8_0 row · Q8 row.
    pub(super) fn dot_q8(row: &[u8], a: Q8Row<'_>) -> f32 {
        let mut acc = [[0f32; 8]; 4];
        for (b, blk) in row.chunks_exact(34).enumerate() {
            let d = f16_at(blk) * a.d[b];
            let qs = &blk[2..];
            let x = &a.qs[b * QK..(b + 1) * QK];
            for (u, lane) in acc[b % 4].iter_mut().enumerate() {
                let mut sum = 0i32;
                for e in 4 * u..4 * u + 4 {
                    sum += qs[e] as i8 as i32 * x[e] as i32;
                }
                *lane = d.mul_add(sum as f32, *lane);
            }
        }
        reduce4(&acc)
    }

    /// A float row (`width` bytes per element, decoded by `load`) · f32 row.
    pub(super) fn dot_float(row: &[u8], width: usize, x: &[f32], load: fn(&[u8]) -> f32) -> f32 {
        let mut acc = [[0f32; 8]; 4];
        let main = x.len() / QK * QK;
        for (e, &xe) in x[..main].iter().enumerate() {
            let lane = &mut acc[(e / 8) % 4][e % 8];
            *lane = load(&row[e * width..]).mul_add(xe, *lane);
        }
        let mut tail = 0f32;
        for (e, &xe) in x.iter().enumerate().skip(main) {
            tail = load(&row[e * width..]).mul_add(xe, tail);
        }
        reduce4(&acc) + tail
    }
}

/// Little-endian f32 at `b[0..4]`.
#[inline]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Little-endian bf16 at `b[0..2]`, widened to f32 (exact).
#[inline]
fn bf16_at(b: &[u8]) -> f32 {
    bf16::from_le_bytes([b[0], b[1]]).to_f32()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 + FMA + F16C kernels. Every function here requires those three CPU features.
    use super::*;
    use std::arch::x86_64::*;

    /// See [`super::run_rows`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(job: &RowsJob<'_>, out: &mut [f32], stride: usize) {
        // `run_rows` checked the lengths: every pointer read below stays inside the weight
        // row and the activation rows.
        let (acts, j) = (job.acts, job.j);
        let one = || [acts.q8_row(j)];
        let two = || [acts.q8_row(j), acts.q8_row(j + 1)];
        match (job.wt, job.pair) {
            (WType::Q8_0, false) => each_row(job, out, stride, |r, a| dot_q8::<1>(r, a), one()),
            (WType::Q8_0, true) => each_row(job, out, stride, |r, a| dot_q8::<2>(r, a), two()),
            (wt, _) => {
                let rows = job.w.chunks_exact(job.rb).zip(out.chunks_mut(stride));
                let dot = match wt {
                    WType::F32 => dot_float::<0>,
                    WType::F16 => dot_float::<1>,
                    WType::BF16 => dot_float::<2>,
                    _ => unreachable!("quantized rows have their own kernels"),
                };
                for (r, o) in rows {
                    for (t, o) in o.iter_mut().enumerate().take(job.count()) {
                        *o = dot(r, acts.f32_row(j + t));
                    }
                }
            }
        }
    }

    /// Bytes ahead of the row being multiplied that are prefetched. Generation streams ~96 MB
    /// of weights per SmolLM2 token from DRAM; prefetching 4 KB ahead took one token's matvecs
    /// from 12.5 to 9.9 ms on one core (1, 2 and 8 KB were slower).
    const PREFETCH_AHEAD: usize = 4096;

    /// Calls `dot(row, acts)` for each weight row of `job` and stores its `R` results at
    /// `out[i * stride..]`, prefetching the weights `PREFETCH_AHEAD` bytes ahead.
    #[inline(always)]
    fn each_row<'a, const R: usize>(
        job: &RowsJob<'_>,
        out: &mut [f32],
        stride: usize,
        mut dot: impl FnMut(&[u8], [Q8Row<'a>; R]) -> [f32; R],
        acts: [Q8Row<'a>; R],
    ) {
        let rows = job.w.chunks_exact(job.rb).zip(out.chunks_mut(stride));
        for (i, (row, o)) in rows.enumerate() {
            let ahead = job.w.as_ptr().wrapping_add(i * job.rb + PREFETCH_AHEAD);
            for line in (0..job.rb).step_by(64) {
                // SAFETY: a prefetch is a hint that never faults, even past the end of `w`;
                // SSE is part of the x86_64 baseline.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8) };
            }
            o[..R].copy_from_slice(&dot(row, acts));
        }
    }

    /// See [`super::scalar::q4_panel`], for `R` activation rows at once.
    ///
    /// # Safety
    /// CPU features as for [`rows`]; `panel.data` is whole records and every activation row
    /// has as many blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_panel<const R: usize>(
        panel: &Q4Panel<'_>,
        a: [Q8Row<'_>; R],
    ) -> [[f32; 8]; R] {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let rec = panel.record_bytes();
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..panel.blocks() {
            let p = panel.data.as_ptr().add(b * rec);
            if panel.prefetch {
                // Spread over the blocks: a burst per panel overflows the miss queue.
                for line in (0..rec).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
                }
            }
            let mut s16 = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let chunk = _mm256_loadu_si256(p.add(c * 32) as *const __m256i);
                let lo = _mm256_and_si256(chunk, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(chunk, 4), mask);
                for (s16, a) in s16.iter_mut().zip(&a) {
                    // No overflow: 8 pairs of 15 * 127 per 16-bit lane.
                    let xp = a.qs.as_ptr().add(b * QK + 8 * c);
                    let x0 = _mm256_set1_epi32(std::ptr::read_unaligned(xp as *const i32));
                    let x1 = _mm256_set1_epi32(std::ptr::read_unaligned(xp.add(4) as *const i32));
                    *s16 = _mm256_add_epi16(*s16, _mm256_maddubs_epi16(lo, x0));
                    *s16 = _mm256_add_epi16(*s16, _mm256_maddubs_epi16(hi, x1));
                }
            }
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(128) as *const __m128i));
            let mv = if panel.has_min {
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(144) as *const __m128i))
            } else {
                _mm256_mul_ps(_mm256_set1_ps(-8.0), dv)
            };
            for ((acc, s16), a) in acc.iter_mut().zip(s16).zip(&a) {
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
                let d = _mm256_mul_ps(dv, _mm256_set1_ps(*a.d.get_unchecked(b)));
                *acc = _mm256_fmadd_ps(d, dot, *acc);
                *acc = _mm256_fmadd_ps(mv, _mm256_set1_ps(*a.s.get_unchecked(b)), *acc);
            }
        }
        let mut out = [[0f32; 8]; R];
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), acc);
        }
        out
    }

    /// See [`super::quantize_q8`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
        let nb = d.len();
        assert!(x.len() >= nb * QK && qs.len() >= nb * QK && s.len() >= nb);
        let sign = _mm256_set1_ps(-0.0);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..nb {
            let p = x.as_ptr().add(b * QK);
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
                _mm256_max_ps(m, _mm256_andnot_ps(sign, v))
            });
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            let dd = amax / 127.0;
            let id = _mm256_set1_ps(if dd != 0.0 { 1.0 / dd } else { 0.0 });
            const MODE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_round_ps::<MODE>(_mm256_mul_ps(v, id))));
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256(sum, 1),
            );
            let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
            // packs works within 128-bit lanes; the permutation restores element order.
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK) as *mut __m256i, bytes);
            d[b] = dd;
            s[b] = total as f32 * dd;
        }
    }

    /// Lane reduction in the order of [`super::hsum8`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum8(v: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
    }

    /// [`super::reduce4`] on registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn reduce4(acc: [__m256; 4]) -> f32 {
        hsum8(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// The i32 lanes `u` = sum of products of elements `4u..4u+4` of an unsigned-byte and a
    /// signed-byte vector (no saturation: |u8| <= 128, |i8| <= 127 in every caller).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    /// See [`super::scalar::dot_q8`].
    ///
    /// # Safety
    /// CPU features as for [`rows`]; `row` holds `a[t].d.len()` 34-byte blocks and every
    /// activation row as many.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q8<const R: usize>(row: &[u8], a: [Q8Row<'_>; R]) -> [f32; R] {
        let p = row.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); R]; 4];
        let nb = a[0].d.len();
        let mut b = 0;
        while b + 4 <= nb {
            for (k, acc) in acc.iter_mut().enumerate() {
                q8_block::<R>(p.add((b + k) * 34), &a, b + k, acc);
            }
            b += 4;
        }
        for (k, acc) in acc.iter_mut().enumerate().take(nb - b) {
            q8_block::<R>(p.add((b + k) * 34), &a, b + k, acc);
        }
        let mut out = [0f32; R];
        for (t, o) in out.iter_mut().enumerate() {
            *o = reduce4([acc[0][t], acc[1][t], acc[2][t], acc[3][t]]);
        }
        out
    }

    /// One Q8_0 block at `p` times block `b` of each activation row, added to `acc`. Safety:
    /// as for [`dot_q8`], `p` pointing at block `b`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_block<const R: usize>(
        p: *const u8,
        a: &[Q8Row<'_>; R],
        b: usize,
        acc: &mut [__m256; R],
    ) {
        let bits = std::ptr::read_unaligned(p as *const u16) as i32;
        let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
        let qw = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let aw = _mm256_sign_epi8(qw, qw);
        for (a, acc) in a.iter().zip(acc) {
            let d = _mm256_set1_ps(dw * *a.d.get_unchecked(b));
            let qx = _mm256_loadu_si256(a.qs.as_ptr().add(b * QK) as *const __m256i);
            *acc = _mm256_fmadd_ps(d, dot_u8_i8(aw, _mm256_sign_epi8(qx, qw)), *acc);
        }
    }

    /// 8 weights from `p` as f32: `KIND` 0 = f32, 1 = f16, 2 = bf16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<const KIND: u8>(p: *const u8) -> __m256 {
        match KIND {
            0 => _mm256_loadu_ps(p as *const f32),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            _ => {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
            }
        }
    }

    /// See [`super::scalar::dot_float`]. Safety: `row` holds `x.len()` elements of `KIND`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_float<const KIND: u8>(row: &[u8], x: &[f32]) -> f32 {
        let width = if KIND == 0 { 4 } else { 2 };
        let mut acc = [_mm256_setzero_ps(); 4];
        let main = x.len() / QK * QK;
        let (wp, xp) = (row.as_ptr(), x.as_ptr());
        let mut e = 0;
        while e < main {
            for (k, acc) in acc.iter_mut().enumerate() {
                let w = load8::<KIND>(wp.add((e + 8 * k) * width));
                *acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(e + 8 * k)), *acc);
            }
            e += QK;
        }
        let load = [f32_at, f16_at, bf16_at][KIND as usize];
        let mut tail = 0f32;
        for (e, &xe) in x.iter().enumerate().skip(main) {
            tail = load(&row[e * width..]).mul_add(xe, tail);
        }
        reduce4(acc) + tail
    }

    /// `c[r * ldc + j] = Σ_p a[p][r] b[p][j]` for r < 6, j < 16: twelve accumulators in
    /// registers, two weight loads and six broadcasts per step.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn micro_6x16(ap: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
        let kb = ap.len() / 6;
        assert!(
            b.len() >= kb * 16,
            "weight panel shorter than the activation panel"
        );
        assert!(c.len() >= 5 * ldc + 16, "output tile runs past the output");
        let (mut a, mut bp) = (ap.as_ptr(), b.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for _ in 0..kb {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
            a = a.add(6);
            bp = bp.add(16);
        }
        let cp = c.as_mut_ptr();
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(cp.add(r * ldc), acc[0]);
            _mm256_storeu_ps(cp.add(r * ldc + 8), acc[1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Weight matrices

/// Weight rows computed per pass over the activation rows: small enough that a tile of rows
/// stays in L1 while it is multiplied by each of a few activation rows.
const TILE_ROWS: usize = 16;

/// Weight bytes (times activation rows, up to 4) below which a matmul runs on the calling
/// thread. Measured on the 2-core VM over one SmolLM2 token (`kernels` bench, `token`):
/// splitting every matrix of at least this size across 2 threads took the token's matvecs
/// from ~10 ms to ~7 ms; splitting the 69 KB k/v projections as well gained nothing, since
/// each split costs a rayon hand-off (~1 µs from inside the pool, ~10 µs from outside).
const PAR_MIN_BYTES: usize = 128 << 10;

/// A weight matrix `[rows = out_features, cols = in_features]` kept in its file format, each
/// row a run of blocks. Cloning is cheap (the bytes are shared).
#[derive(Clone)]
pub struct QMatrix {
    ty: GgmlType,
    wt: WType,
    rows: usize,
    cols: usize,
    data: Arc<[u8]>,
    /// Q4_0/Q4_1 only: the panel layout the kernels read, built on the first product.
    packed: OnceLock<Arc<PackedQ4>>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

impl QMatrix {
    /// Wraps `data` as a `[rows, cols]` matrix of `ty`, checking the type is supported, that
    /// each row is whole blocks and that `data` has exactly the right length.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<QMatrix, QuantError> {
        let wt = WType::from_ggml(ty)?;
        let row_bytes = wt.byte_len(ty, cols)?;
        let data = data.into();
        let elements = rows.saturating_mul(cols);
        let expected = rows.saturating_mul(row_bytes);
        if data.len() != expected {
            return Err(QuantError::Length {
                ty,
                elements,
                expected,
                got: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            wt,
            rows,
            cols,
            data,
            packed: OnceLock::new(),
        })
    }

    /// Copies a 2-D tensor out of a GGUF file (GGML dims `[cols, rows]`).
    pub fn from_gguf(file: &GgufFile, info: &TensorInfo) -> Result<QMatrix, QuantError> {
        let [cols, rows] = info.dims[..] else {
            return Err(QuantError::NotMatrix {
                name: info.name.clone(),
                dims: info.dims.clone(),
            });
        };
        let too_big = |_| QuantError::NotMatrix {
            name: info.name.clone(),
            dims: info.dims.clone(),
        };
        let rows = usize::try_from(rows).map_err(too_big)?;
        let cols = usize::try_from(cols).map_err(too_big)?;
        QMatrix::new(info.dtype, rows, cols, file.tensor_bytes(info))
    }

    /// Converts an f32 matrix (row-major `[rows, cols]`) into `ty` (F32, F16 or BF16 only:
    /// Lantern reads quantized formats but does not write them).
    pub fn from_f32(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        w: &[f32],
    ) -> Result<QMatrix, QuantError> {
        let bytes: Vec<u8> = match ty {
            GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => w
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            GgmlType::BF16 => w
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
            other => return Err(QuantError::Unsupported(other)),
        };
        QMatrix::new(ty, rows, cols, bytes)
    }

    /// The storage type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes, row after row.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    fn row_bytes(&self) -> usize {
        self.data.len().checked_div(self.rows).unwrap_or(0)
    }

    /// The whole matrix as f32, row-major `[rows, cols]` (for `--dtype f32`, gradients, and
    /// prompt-sized matmuls).
    pub fn dequantize_all(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequantize_checked(self.wt, &self.data, &mut out);
        out
    }

    /// One row as f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.rows && out.len() == self.cols,
            "row {row} / len {}",
            out.len()
        );
        let rb = self.row_bytes();
        dequantize_checked(self.wt, &self.data[row * rb..(row + 1) * rb], out);
    }

    /// `y[n, rows] = x[n, cols] · Wᵀ`, for the few activation rows of generation.
    ///
    /// Quantized weights multiply 8-bit-quantized activations (integer dot products, as in
    /// llama.cpp); float weights multiply f32 activations. Q4_0/Q4_1 go through their
    /// [`PackedQ4`] form (built on the first call and kept: twice the weight memory, but 2.5x
    /// faster for one row and fast for any `n`, prompts included). Large matrices are split
    /// across the rayon pool's threads in one contiguous range each.
    ///
    /// # Panics
    /// If `x.len() != n * cols` or `y.len() != n * rows` (a caller bug, not a file problem).
    pub fn matmul_t(&self, x: &[f32], n: usize, y: &mut [f32]) {
        let threads = self.threads_for(n);
        self.matmul_with(Kernel::best(), threads, x, n, y);
    }

    /// [`QMatrix::matmul_t`] on exactly `threads` threads (for benchmarks and tuning).
    pub fn matmul_t_threads(&self, x: &[f32], n: usize, y: &mut [f32], threads: usize) {
        self.matmul_with(Kernel::best(), threads, x, n, y);
    }

    /// The packed form of a Q4_0/Q4_1 matrix (built once, on first use), else `None`.
    pub fn packed_q4(&self) -> Option<&PackedQ4> {
        let has_min = match self.wt {
            WType::Q4_0 => false,
            WType::Q4_1 => true,
            _ => return None,
        };
        Some(
            self.packed
                .get_or_init(|| Arc::new(PackedQ4::pack(self, has_min))),
        )
    }

    /// How many threads pay for `n` activation rows.
    fn threads_for(&self, n: usize) -> usize {
        if self.data.len().saturating_mul(n.min(4)) < PAR_MIN_BYTES {
            1
        } else {
            rayon::current_num_threads().max(1)
        }
    }

    fn matmul_with(&self, kernel: Kernel, threads: usize, x: &[f32], n: usize, y: &mut [f32]) {
        if let Some(packed) = self.packed_q4() {
            return packed.matmul_with(kernel, x, n, y, threads);
        }
        assert_eq!(x.len(), n * self.cols, "x is not [{n}, {}]", self.cols);
        assert_eq!(y.len(), n * self.rows, "y is not [{n}, {}]", self.rows);
        if n == 0 || self.rows == 0 {
            return;
        }
        let acts = Acts::new(kernel, self.wt, x, self.cols);
        if n == 1 {
            self.split_rows(kernel, threads, &acts, 1, y);
            return;
        }
        // Compute [rows, n] so each thread owns a contiguous range, then transpose.
        let mut yt = vec![0f32; n * self.rows];
        self.split_rows(kernel, threads, &acts, n, &mut yt);
        for (r, ys) in yt.chunks_exact(n).enumerate() {
            for (j, &v) in ys.iter().enumerate() {
                y[j * self.rows + r] = v;
            }
        }
    }

    /// Fills `out` (`[rows, n]`) splitting the rows into `threads` contiguous ranges.
    fn split_rows(
        &self,
        kernel: Kernel,
        threads: usize,
        acts: &Acts<'_>,
        n: usize,
        out: &mut [f32],
    ) {
        if threads <= 1 {
            self.rows_into(kernel, acts, n, 0, out);
            return;
        }
        let per = self.rows.div_ceil(threads).next_multiple_of(TILE_ROWS);
        out.par_chunks_mut(per * n)
            .enumerate()
            .for_each(|(i, chunk)| self.rows_into(kernel, acts, n, i * per, chunk));
    }

    /// Fills `out` (`[k, n]`) with rows `r0..r0 + k` of the product, tile by tile.
    fn rows_into(&self, kernel: Kernel, acts: &Acts<'_>, n: usize, r0: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        // One activation row: no reuse to gain from tiles, so one kernel call for all rows.
        let tile_rows = if n == 1 { out.len() } else { TILE_ROWS };
        for (t, tile) in out.chunks_mut(tile_rows * n).enumerate() {
            let first = r0 + t * tile_rows;
            let k = tile.len() / n;
            let w = &self.data[first * rb..(first + k) * rb];
            for j in (0..n).step_by(2) {
                let job = RowsJob {
                    wt: self.wt,
                    w,
                    rb,
                    acts,
                    j,
                    pair: j + 1 < n && self.wt.is_quantized(),
                };
                run_rows(kernel, &job, &mut tile[j..], n);
                if j + 1 < n && !job.pair {
                    run_rows(kernel, &RowsJob { j: j + 1, ..job }, &mut tile[j + 1..], n);
                }
            }
        }
    }
}

/// `x.apply_op1_no_bwd(&qmatrix)`: `[..., cols]` f32 → `[..., rows]` through
/// [`QMatrix::matmul_t`]. CPU only; a non-contiguous input is gathered first.
impl CustomOp1 for QMatrix {
    fn name(&self) -> &'static str {
        "qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        linear_fwd(
            self.name(),
            self.cols,
            self.rows,
            storage,
            layout,
            |x, n, y| self.matmul_t(x, n, y),
        )
    }
}

/// The CPU forward of every linear custom op here: `y[.., rows] = x[.., cols] Wᵀ` through
/// `matmul(x, n_rows_of_x, y)`.
fn linear_fwd(
    op: &str,
    cols: usize,
    rows: usize,
    storage: &CpuStorage,
    layout: &Layout,
    matmul: impl Fn(&[f32], usize, &mut [f32]),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = f32_input(op, cols, storage, layout)?;
    let n = x.len().checked_div(cols).unwrap_or(0);
    let mut y = vec![0f32; n * rows];
    matmul(&x, n, &mut y);
    Ok((CpuStorage::F32(y), out_shape(layout, rows)))
}

/// The f32 input of a linear op as a contiguous slice, checking its last dimension is `cols`.
fn f32_input<'a>(
    op: &str,
    cols: usize,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<std::borrow::Cow<'a, [f32]>> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected an f32 input, got {:?}", storage.dtype());
    };
    match layout.dims().last() {
        Some(&last) if last == cols => {}
        _ => candle_core::bail!(
            "{op}: input shape {:?} does not end in {cols}",
            layout.dims()
        ),
    }
    Ok(match layout.contiguous_offsets() {
        Some((start, end)) => std::borrow::Cow::Borrowed(&data[start..end]),
        None => std::borrow::Cow::Owned(gather_strided(op, data, layout)?),
    })
}

/// The elements of a strided view, in row-major order.
fn gather_strided(op: &str, data: &[f32], layout: &Layout) -> candle_core::Result<Vec<f32>> {
    let (dims, stride) = (layout.dims(), layout.stride());
    let count: usize = dims.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..count {
        let off: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
        match data.get(layout.start_offset() + off) {
            Some(&v) => out.push(v),
            None => candle_core::bail!("{op}: layout {layout:?} runs past its storage"),
        }
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// The input's shape with the last dimension replaced by `rows`.
fn out_shape(layout: &Layout, rows: usize) -> Shape {
    let mut dims = layout.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = rows;
    }
    Shape::from(dims)
}

// ---------------------------------------------------------------------------------------------
// f32 GEMM for prompts

/// Rows of the output a micro-kernel call computes.
const MR: usize = 6;
/// Columns (weight rows) a micro-kernel call computes: two AVX registers.
const NR: usize = 16;
/// Bytes of packed activations, and of weight panels, kept in L2 at once.
const L2_BLOCK: usize = 160 << 10;
/// Multiply-adds below which a GEMM runs on the calling thread.
const GEMM_PAR_MIN_MACS: usize = 4 << 20;

/// An f32 weight matrix `[n = out_features, k = in_features]` packed once, at load, into
/// 16-row panels (`[panel][k][16]`, zero-padded) so prompt-sized products stream it straight
/// into a 6x16 AVX2/FMA register tile without repacking.
#[derive(Clone)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    panels: Vec<f32>,
}

impl std::fmt::Debug for PackedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedF32([{}, {}])", self.n, self.k)
    }
}

impl PackedF32 {
    /// Packs row-major weights `w[n, k]`.
    ///
    /// # Panics
    /// If `w.len() != n * k`.
    pub fn new(w: &[f32], n: usize, k: usize) -> PackedF32 {
        assert_eq!(w.len(), n * k, "weights are not [{n}, {k}]");
        let n_panels = n.div_ceil(NR);
        let mut panels = vec![0f32; n_panels * k * NR];
        for (p, panel) in panels
            .chunks_exact_mut((k * NR).max(1))
            .enumerate()
            .take(n_panels)
        {
            for (r, row) in w.chunks_exact(k.max(1)).skip(p * NR).take(NR).enumerate() {
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + r] = v;
                }
            }
        }
        PackedF32 { n, k, panels }
    }

    /// Dequantizes and packs a weight matrix.
    pub fn from_qmatrix(q: &QMatrix) -> PackedF32 {
        PackedF32::new(&q.dequantize_all(), q.rows(), q.cols())
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// `c[m, n] = a[m, k] · Wᵀ`, split across the rayon pool's threads by rows of `a` when
    /// the product is large enough to pay for the wake-up.
    ///
    /// # Panics
    /// If `a.len() != m * k` or `c.len() != m * n`.
    pub fn matmul_t(&self, a: &[f32], m: usize, c: &mut [f32]) {
        let threads = if m * self.n * self.k < GEMM_PAR_MIN_MACS {
            1
        } else {
            rayon::current_num_threads()
        };
        self.matmul_t_threads(a, m, c, threads);
    }

    /// [`PackedF32::matmul_t`] on exactly `threads` threads (for benchmarks).
    pub fn matmul_t_threads(&self, a: &[f32], m: usize, c: &mut [f32], threads: usize) {
        assert_eq!(a.len(), m * self.k, "a is not [{m}, {}]", self.k);
        assert_eq!(c.len(), m * self.n, "c is not [{m}, {}]", self.n);
        if m == 0 || self.n == 0 {
            return;
        }
        let kernel = Kernel::best();
        if threads <= 1 {
            return self.gemm_rows(kernel, a, c);
        }
        let per = m.div_ceil(threads).next_multiple_of(MR);
        a.par_chunks(per * self.k)
            .zip(c.par_chunks_mut(per * self.n))
            .for_each(|(a, c)| self.gemm_rows(kernel, a, c));
    }

    /// `c = a · Wᵀ` for a block of rows. Each micro-kernel call runs over the whole depth
    /// (the 6x16 result stays in registers); activation rows and weight panels are taken in
    /// groups that fit L2 together.
    fn gemm_rows(&self, kernel: Kernel, a: &[f32], c: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        let m = a.len().checked_div(k).unwrap_or(0);
        if k == 0 {
            c.fill(0.0);
            return;
        }
        let mc = (L2_BLOCK / (4 * k) / MR).max(1) * MR;
        let nc = (L2_BLOCK / (4 * k * NR)).max(1);
        let mut apack = vec![0f32; mc.min(m.next_multiple_of(MR)) * k];
        let panels: Vec<&[f32]> = self.panels.chunks_exact(k * NR).collect();
        for i0 in (0..m).step_by(mc) {
            let mb = mc.min(m - i0);
            pack_a(&a[i0 * k..(i0 + mb) * k], k, &mut apack);
            for j0 in (0..panels.len()).step_by(nc) {
                for (ip, ap) in apack.chunks_exact(MR * k).take(mb.div_ceil(MR)).enumerate() {
                    for (jp, b) in panels.iter().enumerate().skip(j0).take(nc) {
                        let tile = Tile {
                            row: i0 + ip * MR,
                            col: jp * NR,
                            rows: MR.min(m - i0 - ip * MR),
                            cols: NR.min(n - jp * NR),
                        };
                        micro(kernel, ap, b, c, n, tile);
                    }
                }
            }
        }
    }
}

/// Packs the rows of `a` (`[mb, k]`) as `MR`-row panels `[panel][k][MR]`, zero-padding the
/// last panel.
fn pack_a(a: &[f32], k: usize, out: &mut [f32]) {
    for (ip, panel) in out
        .chunks_exact_mut(MR * k)
        .take((a.len() / k).div_ceil(MR))
        .enumerate()
    {
        for r in 0..MR {
            match a.chunks_exact(k).nth(ip * MR + r) {
                Some(row) => row
                    .iter()
                    .enumerate()
                    .for_each(|(p, &v)| panel[p * MR + r] = v),
                None => (0..k).for_each(|p| panel[p * MR + r] = 0.0),
            }
        }
    }
}

/// Where a micro-kernel's 6x16 result goes in `c`, and how much of it is real.
#[derive(Clone, Copy)]
struct Tile {
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

/// One 6x16 tile: `ap` is `[k][6]`, `b` is `[k][16]`; writes `tile` of `c` (row stride `ldc`).
fn micro(kernel: Kernel, ap: &[f32], b: &[f32], c: &mut [f32], ldc: usize, tile: Tile) {
    let origin = tile.row * ldc + tile.col;
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 && tile.rows == MR && tile.cols == NR {
        // SAFETY: Kernel::Avx2 is only constructed after detecting AVX2 and FMA; the kernel
        // checks that `c[origin..]` holds six rows of stride `ldc`.
        return unsafe { avx2::micro_6x16(ap, b, &mut c[origin..], ldc) };
    }
    let mut acc = [0f32; MR * NR];
    match kernel {
        Kernel::Scalar => {
            for (a, b) in ap.chunks_exact(MR).zip(b.chunks_exact(NR)) {
                for (row, &av) in acc.chunks_exact_mut(NR).zip(a) {
                    for (o, &bv) in row.iter_mut().zip(b) {
                        *o = av.mul_add(bv, *o);
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `acc` is six rows of stride NR.
        Kernel::Avx2 => unsafe { avx2::micro_6x16(ap, b, &mut acc, NR) },
    }
    for (r, row) in acc.chunks_exact(NR).enumerate().take(tile.rows) {
        c[origin + r * ldc..][..tile.cols].copy_from_slice(&row[..tile.cols]);
    }
}

/// `c[m, n] = a[m, k] · b_tᵀ` with `b_t` row-major `[n, k]` (packs `b_t` first: for weights
/// used more than once, keep a [`PackedF32`]).
pub fn gemm_f32(a: &[f32], m: usize, k: usize, b_t: &[f32], n: usize, c: &mut [f32]) {
    PackedF32::new(b_t, n, k).matmul_t(a, m, c);
}

/// `x.apply_op1_no_bwd(&packed)`: `[..., k]` f32 → `[..., n]`. CPU only.
impl CustomOp1 for PackedF32 {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        linear_fwd(self.name(), self.k, self.n, storage, layout, |x, m, y| {
            self.matmul_t(x, m, y)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Panel-packed Q4 weights: integer GEMM for every batch size

/// Weight rows per panel of a [`PackedQ4`]: one AVX register of i32/f32 lanes.
const Q4_PANEL: usize = 8;
/// Activation rows a [`PackedQ4`] micro-kernel call multiplies at once.
const Q4_ACT_ROWS: usize = 4;
/// Activation rows below which threads split the panels instead of the rows.
const Q4_SPLIT_ROWS_FROM: usize = 16;

/// Q4_0/Q4_1 weights `[n, k]` re-laid, at load, in panels of 8 rows. Per panel and 32-element
/// block one record holds the 8 rows' nibbles, interleaved so one `vpmaddubsw` multiplies 4
/// consecutive elements of all 8 rows by one broadcast group of 4 activation bytes, then the
/// 8 scales (f16) and, for Q4_1, the 8 minimums (f16): the same bytes per block as the file.
/// Each output lane is one weight row, so scales are applied as vectors and no horizontal sums
/// are needed; the 16-bit products of a whole block are added before widening. Activations are
/// quantized to 8 bits per 32-block as for [`QMatrix::matmul_t`].
///
/// Measured on the 2-core VM (`kernels` bench): about 2.5x the row-by-row matvec kernel for one
/// activation row and 1.3-1.5x the packed f32 GEMM for prompt-sized products.
#[derive(Clone)]
pub struct PackedQ4 {
    n: usize,
    k: usize,
    has_min: bool,
    /// `[panel][block]` records of [`PackedQ4::record_bytes`] bytes: 128 nibble bytes (chunk
    /// `c < 4`, byte `r * 4 + t`: element `8c + t` of row `r` in the low nibble, element
    /// `8c + 4 + t` in the high one), 8 f16 scales, then for Q4_1 8 f16 minimums.
    data: Vec<u8>,
}

impl std::fmt::Debug for PackedQ4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedQ4([{}, {}])", self.n, self.k)
    }
}

impl PackedQ4 {
    /// Re-lays a Q4_0 or Q4_1 matrix; other types are [`QuantError::Unsupported`].
    pub fn from_qmatrix(q: &QMatrix) -> Result<PackedQ4, QuantError> {
        match q.wt {
            WType::Q4_0 => Ok(PackedQ4::pack(q, false)),
            WType::Q4_1 => Ok(PackedQ4::pack(q, true)),
            _ => Err(QuantError::Unsupported(q.ty)),
        }
    }

    /// Re-lays `q`, which is Q4_1 if `has_min`, else Q4_0.
    fn pack(q: &QMatrix, has_min: bool) -> PackedQ4 {
        let (n, k, bb) = (q.rows, q.cols, q.wt.layout().1);
        let blocks = k / QK;
        let rec = Self::record_bytes(has_min);
        let mut data = vec![0u8; n.div_ceil(Q4_PANEL) * blocks * rec];
        for (row, bytes) in q
            .data
            .chunks_exact(q.row_bytes().max(1))
            .enumerate()
            .take(n)
        {
            let (p, r) = (row / Q4_PANEL, row % Q4_PANEL);
            for (b, blk) in bytes.chunks_exact(bb).enumerate() {
                let dst = &mut data[(p * blocks + b) * rec..][..rec];
                dst[128 + 2 * r..][..2].copy_from_slice(&blk[..2]);
                if has_min {
                    dst[144 + 2 * r..][..2].copy_from_slice(&blk[2..4]);
                }
                let qs = &blk[bb - QK / 2..];
                let q = |e: usize| {
                    if e < 16 {
                        qs[e] & 0x0F
                    } else {
                        qs[e - 16] >> 4
                    }
                };
                for c in 0..4 {
                    for t in 0..4 {
                        dst[c * 32 + r * 4 + t] = q(8 * c + t) | q(8 * c + 4 + t) << 4;
                    }
                }
            }
        }
        PackedQ4 {
            n,
            k,
            has_min,
            data,
        }
    }

    /// Bytes per (panel, block) record: 8 blocks of Q4_0 (18 bytes) or Q4_1 (20 bytes).
    fn record_bytes(has_min: bool) -> usize {
        if has_min {
            160
        } else {
            144
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// `y[m, n] = x[m, k] · Wᵀ` for any number of rows `m`, split across the rayon pool's
    /// threads (by panels for a few rows, by rows for many) when large enough to pay.
    ///
    /// # Panics
    /// If `x.len() != m * k` or `y.len() != m * n`.
    pub fn matmul_t(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let small = self.data.len().saturating_mul(m.min(4)) < PAR_MIN_BYTES;
        let threads = if small {
            1
        } else {
            rayon::current_num_threads()
        };
        self.matmul_t_threads(x, m, y, threads);
    }

    /// [`PackedQ4::matmul_t`] on exactly `threads` threads (for benchmarks).
    pub fn matmul_t_threads(&self, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
        self.matmul_with(Kernel::best(), x, m, y, threads);
    }

    fn matmul_with(&self, kernel: Kernel, x: &[f32], m: usize, y: &mut [f32], threads: usize) {
        assert_eq!(x.len(), m * self.k, "x is not [{m}, {}]", self.k);
        assert_eq!(y.len(), m * self.n, "y is not [{m}, {}]", self.n);
        if m == 0 || self.n == 0 {
            return;
        }
        let acts = Acts::new(kernel, WType::Q4_1, x, self.k);
        let panels = self.n.div_ceil(Q4_PANEL);
        if threads <= 1 {
            return self.block_into(kernel, &acts, 0..m, 0..panels, y);
        }
        if m >= Q4_SPLIT_ROWS_FROM {
            let per = m.div_ceil(threads).next_multiple_of(Q4_ACT_ROWS);
            return y
                .par_chunks_mut(per * self.n)
                .enumerate()
                .for_each(|(i, y)| {
                    let rows = i * per..i * per + y.len() / self.n;
                    self.block_into(kernel, &acts, rows, 0..panels, y)
                });
        }
        // Few rows: each thread takes a range of panels into its own [m, cols] buffer.
        let per = panels.div_ceil(threads);
        let ranges: Vec<_> = (0..panels)
            .step_by(per)
            .map(|p| p..(p + per).min(panels))
            .collect();
        let parts: Vec<(usize, Vec<f32>)> = ranges
            .into_par_iter()
            .map(|ps| {
                let cols = (ps.end * Q4_PANEL).min(self.n) - ps.start * Q4_PANEL;
                let mut part = vec![0f32; m * cols];
                self.block_into(kernel, &acts, 0..m, ps.clone(), &mut part);
                (ps.start * Q4_PANEL, part)
            })
            .collect();
        for (col, part) in parts {
            let cols = part.len() / m;
            for (dst, src) in y
                .chunks_exact_mut(self.n)
                .zip(part.chunks_exact(cols.max(1)))
            {
                dst[col..col + cols].copy_from_slice(src);
            }
        }
    }

    /// Fills `y` (`[rows.len(), columns of panels]`, row-major) with activation rows `rows`
    /// times weight panels `panels`, 4 activation rows by 8 weight rows at a time.
    fn block_into(
        &self,
        kernel: Kernel,
        acts: &Acts<'_>,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let rec = Self::record_bytes(self.has_min);
        let panel_bytes = self.k / QK * rec;
        let col0 = panels.start * Q4_PANEL;
        let width = (panels.end * Q4_PANEL).min(self.n) - col0;
        for j in rows.clone().step_by(Q4_ACT_ROWS) {
            let count = Q4_ACT_ROWS.min(rows.end - j);
            for p in panels.clone() {
                let panel = Q4Panel {
                    data: &self.data[p * panel_bytes..(p + 1) * panel_bytes],
                    has_min: self.has_min,
                    // Only worth it while the weights stream from memory, i.e. for few rows.
                    prefetch: rows.len() < Q4_SPLIT_ROWS_FROM,
                };
                let mut out = [[0f32; Q4_PANEL]; Q4_ACT_ROWS];
                q4_panel(kernel, &panel, acts, j, count, &mut out);
                let cols = Q4_PANEL.min(self.n - p * Q4_PANEL);
                for (t, o) in out.iter().enumerate().take(count) {
                    let at = (j - rows.start + t) * width + p * Q4_PANEL - col0;
                    y[at..at + cols].copy_from_slice(&o[..cols]);
                }
            }
        }
    }
}

/// One 8-row panel of a [`PackedQ4`]: its records, block after block.
struct Q4Panel<'a> {
    data: &'a [u8],
    has_min: bool,
    /// Prefetch 4 KB ahead (into the next panels) while computing.
    prefetch: bool,
}

impl Q4Panel<'_> {
    fn record_bytes(&self) -> usize {
        PackedQ4::record_bytes(self.has_min)
    }

    fn blocks(&self) -> usize {
        self.data.len() / self.record_bytes()
    }

    /// Scale and minimum of row `r` in block `b`, as the kernels use them.
    fn scale_min(&self, b: usize, r: usize) -> (f32, f32) {
        let rec = &self.data[b * self.record_bytes()..];
        let d = f16_at(&rec[128 + 2 * r..]);
        let m = if self.has_min {
            f16_at(&rec[144 + 2 * r..])
        } else {
            -8.0 * d
        };
        (d, m)
    }
}

/// `out[t][r] = row r of the panel · activation row j + t` for `t < count` (at most 4).
fn q4_panel(
    kernel: Kernel,
    panel: &Q4Panel<'_>,
    acts: &Acts<'_>,
    j: usize,
    count: usize,
    out: &mut [[f32; 8]; 4],
) {
    let a = |t: usize| acts.q8_row(j + t.min(count - 1));
    assert_eq!(panel.data.len() % panel.record_bytes(), 0);
    assert_eq!(
        a(0).d.len(),
        panel.blocks(),
        "activation and weight columns differ"
    );
    match kernel {
        Kernel::Scalar => {
            for (t, o) in out.iter_mut().enumerate().take(count) {
                *o = scalar::q4_panel(panel, a(t));
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Kernel::Avx2 is only constructed after detecting AVX2, FMA and F16C; the
        // lengths the kernel reads through pointers are checked above.
        Kernel::Avx2 => unsafe {
            match count {
                1 => out[0] = avx2::q4_panel::<1>(panel, [a(0)])[0],
                2 => out[..2].copy_from_slice(&avx2::q4_panel::<2>(panel, [a(0), a(1)])),
                3 => out[..3].copy_from_slice(&avx2::q4_panel::<3>(panel, [a(0), a(1), a(2)])),
                _ => *out = avx2::q4_panel::<4>(panel, [a(0), a(1), a(2), a(3)]),
            }
        },
    }
}

/// `x.apply_op1_no_bwd(&packed)`: `[..., k]` f32 → `[..., n]`. CPU only.
impl CustomOp1 for PackedQ4 {
    fn name(&self) -> &'static str {
        "packed-q4-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        linear_fwd(self.name(), self.k, self.n, storage, layout, |x, m, y| {
            self.matmul_t(x, m, y)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A small deterministic generator (xorshift64*), so tests need no RNG crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
    }

    /// Random but valid bytes for a `[rows, cols]` matrix of `ty`.
    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> QMatrix {
        let wt = WType::from_ggml(ty).unwrap();
        let (per, bb) = wt.layout();
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / per {
            let mut blk: Vec<u8> = (0..bb).map(|_| rng.byte()).collect();
            let scale = |rng: &mut Rng| f16::from_f32(rng.f32() * 0.1).to_le_bytes();
            match wt {
                WType::F32 => blk.copy_from_slice(&rng.f32().to_le_bytes()),
                WType::F16 => blk.copy_from_slice(&f16::from_f32(rng.f32()).to_le_bytes()),
                WType::BF16 => blk.copy_from_slice(&bf16::from_f32(rng.f32()).to_le_bytes()),
                WType::Q4_0 | WType::Q8_0 => blk[..2].copy_from_slice(&scale(rng)),
                WType::Q4_1 => {
                    blk[..2].copy_from_slice(&scale(rng));
                    blk[2..4].copy_from_slice(&scale(rng));
                }
            }
            bytes.extend(blk);
        }
        QMatrix::new(ty, rows, cols, bytes).unwrap()
    }

    const ALL: [GgmlType; 6] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
    ];

    #[test]
    fn q4_0_block_layout_matches_ggml() {
        let mut blk = f16::from_f32(0.5).to_le_bytes().to_vec();
        blk.extend((0..16u8).map(|j| (15 - j) << 4 | j));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &blk, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5, "low nibble {j}");
            assert_eq!(out[j + 16], (7.0 - j as f32) * 0.5, "high nibble {j}");
        }
    }

    #[test]
    fn q4_1_and_q8_0_blocks_match_ggml() {
        let mut blk = f16::from_f32(0.25).to_le_bytes().to_vec();
        blk.extend(f16::from_f32(-1.0).to_le_bytes());
        blk.extend((0..16u8).map(|j| (j << 4) | 3));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &blk, &mut out).unwrap();
        assert_eq!(out[5], 3.0 * 0.25 - 1.0);
        assert_eq!(out[16 + 9], 9.0 * 0.25 - 1.0);

        let mut blk = f16::from_f32(2.0).to_le_bytes().to_vec();
        blk.extend((0..32i8).map(|j| (j * 4 - 64) as u8));
        dequantize(GgmlType::Q8_0, &blk, &mut out).unwrap();
        assert_eq!(out[0], -128.0);
        assert_eq!(out[31], (31.0 * 4.0 - 64.0) * 2.0);
    }

    #[test]
    fn float_types_decode() {
        let mut out = [0f32; 2];
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &bytes, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0]);
        let bytes: Vec<u8> = [0.75f32, 3.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        dequantize(GgmlType::F16, &bytes, &mut out).unwrap();
        assert_eq!(out, [0.75, 3.0]);
        let bytes: Vec<u8> = [0.5f32, -4.0]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        dequantize(GgmlType::BF16, &bytes, &mut out).unwrap();
        assert_eq!(out, [0.5, -4.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut out = [0f32; 32];
        let e = dequantize(GgmlType::Other(10), &[0; 84], &mut out).unwrap_err();
        assert!(e.to_string().contains("Q2_K"), "{e}");
        let e = dequantize(GgmlType::Q4_1, &[0; 19], &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                QuantError::Length {
                    expected: 20,
                    got: 19,
                    ..
                }
            ),
            "{e}"
        );
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut out[..31]).unwrap_err();
        assert!(matches!(e, QuantError::PartialBlock { .. }), "{e}");
        assert!(QMatrix::new(GgmlType::Q4_0, 2, 32, vec![0u8; 35]).is_err());
        assert!(QMatrix::new(GgmlType::Q4_0, 2, 48, vec![0u8; 54]).is_err());
        assert!(QMatrix::new(GgmlType::Q4_0, usize::MAX, 64, vec![0u8; 36]).is_err());
    }

    fn random_x(n: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n * cols).map(|_| rng.f32() * 3.0).collect()
    }

    #[test]
    fn scalar_and_simd_agree_bit_for_bit() {
        let best = Kernel::best();
        let mut rng = Rng(7);
        for ty in ALL {
            let float = WType::from_ggml(ty).unwrap().layout().0 == 1;
            for cols in [32, 96, 160, 576] {
                let cols = if float { cols + 5 } else { cols };
                for (rows, n) in [(1, 1), (17, 3), (40, 1), (33, 6)] {
                    let w = random_matrix(ty, rows, cols, &mut rng);
                    let x = random_x(n, cols, &mut rng);
                    let mut ys = vec![0f32; n * rows];
                    let mut yv = vec![1f32; n * rows];
                    w.matmul_with(Kernel::Scalar, 1, &x, n, &mut ys);
                    w.matmul_with(best, 1, &x, n, &mut yv);
                    let (bs, bv): (Vec<u32>, Vec<u32>) = (
                        ys.iter().map(|v| v.to_bits()).collect(),
                        yv.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(bs, bv, "{ty} rows {rows} cols {cols} n {n}");
                }
            }
        }
    }

    #[test]
    fn activation_quantizers_agree_and_round_ties_to_even() {
        let mut rng = Rng(19);
        let mut x = random_x(1, 32 * 40, &mut rng);
        // Block 0: d = 1 exactly, so 2.5 and -3.5 are ties.
        x[..32].fill(0.0);
        (x[0], x[1], x[2]) = (127.0, 2.5, -3.5);
        x[32..64].fill(0.0); // an all-zero block: d = 0
        let run = |kernel| {
            let (mut q, mut d, mut s) = (vec![0i8; x.len()], vec![0f32; 40], vec![0f32; 40]);
            quantize_q8(kernel, &x, &mut q, &mut d, &mut s);
            (q, d, s)
        };
        let scalar = run(Kernel::Scalar);
        assert_eq!((scalar.0[1], scalar.0[2], scalar.1[0]), (2, -4, 1.0));
        assert_eq!((scalar.1[1], scalar.2[1]), (0.0, 0.0));
        assert_eq!(scalar, run(Kernel::best()));
    }

    #[test]
    fn kernels_match_dequantized_f32_within_quantization_error() {
        let mut rng = Rng(11);
        for ty in ALL {
            for kernel in [Kernel::Scalar, Kernel::best()] {
                let (rows, cols, n) = (24, 192, 3);
                let w = random_matrix(ty, rows, cols, &mut rng);
                let x = random_x(n, cols, &mut rng);
                let wf = w.dequantize_all();
                let mut y = vec![0f32; n * rows];
                w.matmul_with(kernel, 1, &x, n, &mut y);
                for j in 0..n {
                    let xr = &x[j * cols..(j + 1) * cols];
                    for r in 0..rows {
                        let wr = &wf[r * cols..(r + 1) * cols];
                        let exact: f64 =
                            wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let tol = tolerance(ty, wr, xr);
                        let got = y[j * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= tol,
                            "{ty} {kernel:?} {got} vs {exact} (tol {tol})"
                        );
                    }
                }
            }
        }
    }

    /// The largest error 8-bit activation blocks can cause (|x - q d| <= d / 2 per element)
    /// plus f32 rounding.
    fn tolerance(ty: GgmlType, w: &[f32], x: &[f32]) -> f64 {
        let abs: f64 = w
            .iter()
            .zip(x)
            .map(|(&a, &b)| (a as f64 * b as f64).abs())
            .sum();
        let rounding = abs * 1e-5 + 1e-6;
        if !WType::from_ggml(ty).unwrap().is_quantized() {
            return rounding;
        }
        let act: f64 = w
            .chunks(QK)
            .zip(x.chunks(QK))
            .map(|(wb, xb)| {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                wb.iter().map(|&v| v.abs() as f64).sum::<f64>() * amax / 254.0
            })
            .sum();
        act * 1.0001 + rounding
    }

    #[test]
    fn two_threads_give_the_same_bits() {
        let mut rng = Rng(3);
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16] {
            for n in [1, 4] {
                let w = random_matrix(ty, 301, 64, &mut rng);
                let x = random_x(n, 64, &mut rng);
                let (mut a, mut b) = (vec![0f32; n * 301], vec![0f32; n * 301]);
                w.matmul_with(Kernel::best(), 1, &x, n, &mut a);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap();
                pool.install(|| w.matmul_with(Kernel::best(), 2, &x, n, &mut b));
                assert_eq!(a, b, "{ty} n {n}");
            }
        }
    }

    #[test]
    fn custom_op_handles_leading_dims_and_strides() -> candle_core::Result<()> {
        let mut rng = Rng(5);
        let w = random_matrix(GgmlType::Q4_1, 10, 64, &mut rng);
        let x = random_x(6, 64, &mut rng);
        let mut want = vec![0f32; 60];
        w.matmul_t(&x, 6, &mut want);
        let t = Tensor::from_vec(x, (2, 3, 64), &Device::Cpu)?;
        let y = t.apply_op1_no_bwd(&w)?;
        assert_eq!(y.dims(), &[2, 3, 10]);
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, want);
        // The same rows, reached through a transposed (non-contiguous) view.
        let tt = t.transpose(0, 1)?.contiguous()?.transpose(0, 1)?;
        assert!(!tt.is_contiguous());
        assert_eq!(
            tt.apply_op1_no_bwd(&w)?.flatten_all()?.to_vec1::<f32>()?,
            want
        );
        let bad = Tensor::zeros((2, 63), candle_core::DType::F32, &Device::Cpu)?;
        assert!(bad.apply_op1_no_bwd(&w).is_err());
        Ok(())
    }

    #[test]
    fn packed_gemm_matches_naive() {
        let mut rng = Rng(13);
        for (m, k, n) in [
            (1, 1, 1),
            (7, 33, 17),
            (13, 300, 40),
            (100, 600, 35),
            (20, 2000, 40),
        ] {
            let a = random_x(m, k, &mut rng);
            let w = random_x(n, k, &mut rng);
            let packed = PackedF32::new(&w, n, k);
            for kernel in [Kernel::Scalar, Kernel::best()] {
                let mut c = vec![f32::NAN; m * n];
                packed.gemm_rows(kernel, &a, &mut c);
                check_gemm(&a, &w, m, k, n, &c);
            }
            let mut c = vec![0f32; m * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            pool.install(|| packed.matmul_t_threads(&a, m, &mut c, 2));
            check_gemm(&a, &w, m, k, n, &c);
            let mut c2 = vec![0f32; m * n];
            gemm_f32(&a, m, k, &w, n, &mut c2);
            assert_eq!(c, c2);
        }
    }

    fn check_gemm(a: &[f32], w: &[f32], m: usize, k: usize, n: usize, c: &[f32]) {
        for i in 0..m {
            for j in 0..n {
                let (ar, wr) = (&a[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                let exact: f64 = ar.iter().zip(wr).map(|(&x, &y)| x as f64 * y as f64).sum();
                let abs: f64 = ar
                    .iter()
                    .zip(wr)
                    .map(|(&x, &y)| (x as f64 * y as f64).abs())
                    .sum();
                let got = c[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= abs * 1e-5 + 1e-6,
                    "[{m},{k},{n}] ({i},{j}) {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn packed_op_matches_candle_matmul() -> candle_core::Result<()> {
        let mut rng = Rng(17);
        let (m, k, n) = (9, 70, 20);
        let w = random_x(n, k, &mut rng);
        let x = Tensor::from_vec(random_x(m, k, &mut rng), (1, m, k), &Device::Cpu)?;
        let packed = PackedF32::new(&w, n, k);
        let got = x.apply_op1_no_bwd(&packed)?;
        let want = x.broadcast_matmul(&Tensor::from_vec(w, (n, k), &Device::Cpu)?.t()?)?;
        assert_eq!(got.dims(), &[1, m, n]);
        let diff = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }

    #[test]
    fn packed_q4_same_bits_for_every_kernel_and_split() {
        let mut rng = Rng(23);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1] {
            for (m, k, n) in [
                (1, 32, 1),
                (5, 64, 13),
                (9, 576, 40),
                (4, 96, 8),
                (21, 64, 27),
            ] {
                let w = random_matrix(ty, n, k, &mut rng);
                let x = random_x(m, k, &mut rng);
                let packed = PackedQ4::from_qmatrix(&w).unwrap();
                let mut want = vec![0f32; m * n];
                w.matmul_with(Kernel::Scalar, 1, &x, m, &mut want);
                let mut scalar = vec![0f32; m * n];
                packed.matmul_with(Kernel::Scalar, &x, m, &mut scalar, 1);
                let mut simd = vec![0f32; m * n];
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap();
                pool.install(|| packed.matmul_with(Kernel::best(), &x, m, &mut simd, 2));
                assert_eq!(scalar, simd, "{ty} [{m},{k},{n}]");
                assert_eq!(
                    want, simd,
                    "QMatrix and PackedQ4 differ: {ty} [{m},{k},{n}]"
                );
            }
        }
        let f = random_matrix(GgmlType::Q8_0, 4, 32, &mut rng);
        assert!(matches!(
            PackedQ4::from_qmatrix(&f),
            Err(QuantError::Unsupported(_))
        ));
    }
}
