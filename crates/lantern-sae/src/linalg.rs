//! Dense matrix products on row-major f32 slices: the `gemm` crate on the rayon pool, and a packed
//! AVX2 kernel for the encoder's `a · bᵀ` shape.

use rayon::prelude::*;

/// A row-major matrix view: `rows x cols`, optionally read transposed.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    /// Elements, row-major.
    pub data: &'a [f32],
    /// Rows as stored.
    pub rows: usize,
    /// Columns as stored.
    pub cols: usize,
    /// Read as its transpose.
    pub t: bool,
}

impl<'a> Mat<'a> {
    /// `data` as a `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        assert_eq!(data.len(), rows * cols, "matrix data is not {rows}x{cols}");
        Mat {
            data,
            rows,
            cols,
            t: false,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Mat<'a> {
        Mat { t: !self.t, ..self }
    }

    /// Shape as read.
    fn shape(&self) -> (usize, usize) {
        if self.t {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (column stride, row stride) as read.
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (self.cols as isize, 1)
        } else {
            (1, self.cols as isize)
        }
    }
}

/// `c = alpha * c + a b` (`alpha = 0` overwrites), `c` row-major `m x n`.
pub fn matmul_into(a: Mat<'_>, b: Mat<'_>, c: &mut [f32], alpha: f32) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "inner dimensions differ: {k} vs {k2}");
    assert_eq!(c.len(), m * n, "output is not {m}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|x| *x *= alpha);
        return;
    }
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every pointer covers the matrix its shape and strides describe (checked above by
    // the slice lengths), and `c` does not alias `a` or `b` (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            alpha != 0.0,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            alpha,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `a b` as a new row-major matrix.
pub fn matmul(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
    let mut c = vec![0f32; a.shape().0 * b.shape().1];
    matmul_into(a, b, &mut c, 0.0);
    c
}

/// Dot product, with four independent 8-lane sums so the additions do not wait on each other
/// (a backward pass takes hundreds of thousands of these, 576 long).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_and_axpy(a, b, 0.0, None)
}

/// `a · x`, and `y += c x` in the same pass over `x` when `y` is given (the backward pass reads
/// each output-gradient row once for both).
pub fn dot_and_axpy(a: &[f32], x: &[f32], c: f32, mut y: Option<&mut [f32]>) -> f32 {
    let len = a.len().min(x.len());
    if let Some(y) = &y {
        assert!(y.len() >= len, "axpy target shorter than its source");
    }
    let mut acc = [[0f32; 8]; 4];
    let whole = len / 32 * 32;
    for base in (0..whole).step_by(32) {
        for (u, lanes) in acc.iter_mut().enumerate() {
            let o = base + 8 * u;
            let (av, xv) = (&a[o..o + 8], &x[o..o + 8]);
            for i in 0..8 {
                lanes[i] += av[i] * xv[i];
            }
            if let Some(y) = y.as_deref_mut() {
                let yv = &mut y[o..o + 8];
                for i in 0..8 {
                    yv[i] += c * xv[i];
                }
            }
        }
    }
    let mut tail = 0f32;
    for i in whole..len {
        tail += a[i] * x[i];
        if let Some(y) = y.as_deref_mut() {
            y[i] += c * x[i];
        }
    }
    let lanes: f32 = (0..8)
        .map(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]))
        .sum();
    lanes + tail
}

/// `y += a x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Asks for every cache line of `v` to be brought into L1 ahead of use: the training step
/// reads rows (576 floats, 36 lines) picked by latent or by token, whose addresses the
/// hardware prefetcher cannot guess. A no-op off x86-64.
#[inline]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch never faults, and the pointer is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n)
            .map(|ij| (0..k).map(|l| a[ij / n * k + l] * b[l * n + ij % n]).sum())
            .collect()
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        (0..r * c).map(|ij| x[ij % r * c + ij / r]).collect()
    }

    #[test]
    fn dot_and_axpy_match_plain_loops_on_every_length() {
        for len in [0, 1, 7, 8, 31, 32, 33, 100, 576] {
            let a: Vec<f32> = (0..len).map(|i| (i % 13) as f32 * 0.25 - 1.0).collect();
            let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
            let want: f64 = a.iter().zip(&x).map(|(p, q)| (p * q) as f64).sum();
            assert!(
                (dot(&a, &x) as f64 - want).abs() < 1e-3,
                "dot, length {len}"
            );
            let mut y: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let got = dot_and_axpy(&a, &x, 2.0, Some(&mut y));
            assert!((got as f64 - want).abs() < 1e-3, "fused dot, length {len}");
            for (i, v) in y.iter().enumerate() {
                assert_eq!(*v, i as f32 + 2.0 * x[i], "fused axpy, length {len} at {i}");
            }
        }
    }

    #[test]
    fn every_transpose_combination_matches_naive() {
        let (m, k, n) = (37, 19, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let want = naive(&a, &b, m, k, n);
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        let cases = [
            (Mat::new(&a, m, k), Mat::new(&b, k, n)),
            (Mat::new(&at, k, m).t(), Mat::new(&b, k, n)),
            (Mat::new(&a, m, k), Mat::new(&bt, n, k).t()),
            (Mat::new(&at, k, m).t(), Mat::new(&bt, n, k).t()),
        ];
        for (i, (x, y)) in cases.into_iter().enumerate() {
            assert_eq!(matmul(x, y), want, "case {i}");
        }
        let mut c = want.clone();
        matmul_into(Mat::new(&a, m, k), Mat::new(&b, k, n), &mut c, 1.0);
        assert!(c.iter().zip(&want).all(|(x, w)| *x == 2.0 * w));
    }
}

/// `c += a · bᵀ` for row-major `a [m, k]`, `b [n, k]`, `c [m, n]`: the SAE encoder's product
/// (activations times the encoder's rows). A packed 6x16 AVX2/FMA kernel where the CPU has
/// one, 6x32 in 512-bit registers where it has AVX-512F (faster than the generic `gemm` crate
/// on this shape: `cargo bench -p lantern-sae --bench encoder`), else [`matmul_into`].
pub fn matmul_nt_acc(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    matmul_nt(a, b, m, n, k, c, None);
}

/// `c = a · bᵀ + bias` (bias broadcast over rows; `c`'s old content is ignored): the encoder's
/// pre-activations in one pass over `c`.
pub fn matmul_nt_bias(
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
) {
    assert_eq!(bias.len(), n, "bias is not {n} long");
    matmul_nt(a, b, m, n, k, c, Some(bias));
}

/// `a · bᵀ + bias` one block of rows at a time: `f(first_row, block)` gets each block of the
/// product (`[rows, n]`, row-major) while it is still in cache and its results are returned in
/// row order. The product never goes to memory whole: for the SAE encoder it is the step's
/// largest matrix (4096 x 9216 floats), and a top-k over each block is all a training step
/// needs of it.
pub fn matmul_nt_bias_blocks<T, F>(
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    (m, n, k): (usize, usize, usize),
    f: F,
) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &[f32]) -> T + Sync,
{
    assert_eq!(a.len(), m * k, "a is not {m}x{k}");
    assert_eq!(b.len(), n * k, "b is not {n}x{k}");
    assert_eq!(bias.len(), n, "bias is not {n} long");
    assert!(k > 0, "empty inner dimension");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return nt::blocks(a, b, n, k, bias, f);
    }
    let mb = block_rows(m);
    a.par_chunks(mb * k)
        .enumerate()
        .map(|(i, ab)| {
            let rows = ab.len() / k;
            let mut c = bias.repeat(rows);
            matmul_into(Mat::new(ab, rows, k), Mat::new(b, n, k).t(), &mut c, 1.0);
            f(i * mb, &c)
        })
        .collect()
}

/// The most rows of `a` in one block of [`matmul_nt_bias_blocks`] (and in one task of the
/// packed product): 288 rows of a 288-deep k-slice fill 330 KB of a 512 KB L2, and every
/// block streams all of `b` once, so larger blocks mean less traffic (130-150 GFLOP/s on the
/// encoder's shape with two threads, against 115-135 with 96-row blocks).
pub const MAX_BLOCK_ROWS: usize = 288;

/// Rows per block for an `m`-row product: as large as [`MAX_BLOCK_ROWS`] allows while giving
/// every thread the same number of blocks, a multiple of 6 (the kernel's row panel).
pub fn block_rows(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks = m.div_ceil(MAX_BLOCK_ROWS).div_ceil(threads) * threads;
    m.div_ceil(blocks.max(1))
        .next_multiple_of(6)
        .clamp(6, MAX_BLOCK_ROWS)
}

fn matmul_nt(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    bias: Option<&[f32]>,
) {
    assert_eq!(a.len(), m * k, "a is not {m}x{k}");
    assert_eq!(b.len(), n * k, "b is not {n}x{k}");
    assert_eq!(c.len(), m * n, "c is not {m}x{n}");
    #[cfg(target_arch = "x86_64")]
    if m * n * k >= 1 << 16
        && k > 0
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        nt::matmul(a, b, n, k, c, bias);
        return;
    }
    if let Some(bias) = bias {
        c.par_chunks_mut(n.max(1))
            .for_each(|r| r.copy_from_slice(bias));
    }
    matmul_into(Mat::new(a, m, k), Mat::new(b, n, k).t(), c, 1.0);
}

/// The packed kernel behind [`matmul_nt_acc`]: `b` is packed once into panels of 16 rows
/// (k-major), each thread takes blocks of rows of `a`, packs them into panels of 6 and runs
/// the 6x16 register tile (6x32 over two panels with AVX-512F) over k-blocks that keep a slice
/// of packed `b` in L2.
#[cfg(target_arch = "x86_64")]
mod nt {
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    const MR: usize = 6;
    const NR: usize = 16;
    /// Rows of `b` per L2 block (16 panels).
    const NB: usize = 128;
    /// Largest k-block.
    const KC: usize = 320;

    /// `c (+)= a bᵀ`: accumulates, or overwrites with `bias` added when one is given.
    pub fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, c: &mut [f32], bias: Option<&[f32]>) {
        let kb = k.div_ceil(k.div_ceil(KC));
        let bp = pack_b(b, n, k);
        let mb = super::block_rows(a.len() / k);
        c.par_chunks_mut(mb * n)
            .zip(a.par_chunks(mb * k))
            .for_each(|(cb, ab)| block(ab, &bp, cb, (ab.len() / k, n, k, kb), bias));
    }

    thread_local! {
        /// One block of the product per thread, kept between calls (9.5 MB for the encoder).
        static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// `a bᵀ + bias` block by block into a per-thread buffer, `f` reading each block.
    pub fn blocks<T: Send, F: Fn(usize, &[f32]) -> T + Sync>(
        a: &[f32],
        b: &[f32],
        n: usize,
        k: usize,
        bias: &[f32],
        f: F,
    ) -> Vec<T> {
        let kb = k.div_ceil(k.div_ceil(KC));
        let bp = pack_b(b, n, k);
        let mb = super::block_rows(a.len() / k);
        a.par_chunks(mb * k)
            .enumerate()
            .map(|(i, ab)| {
                let rows = ab.len() / k;
                BLOCK.with_borrow_mut(|c| {
                    c.resize(rows * n, 0.0);
                    let c = &mut c[..rows * n];
                    block(ab, &bp, c, (rows, n, k, kb), Some(bias));
                    f(i * mb, c)
                })
            })
            .collect()
    }

    /// `b` packed as panels of 16 rows, k-major (`bp[panel][kk][16]`), zero-padded past `n`.
    fn pack_b(b: &[f32], n: usize, k: usize) -> Vec<f32> {
        let panels = n.div_ceil(NR);
        let mut bp = vec![0f32; panels * k * NR];
        bp.par_chunks_mut(k * NR).enumerate().for_each(|(p, dst)| {
            for r in 0..NR.min(n - p * NR) {
                let row = &b[(p * NR + r) * k..(p * NR + r + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    dst[kk * NR + r] = v;
                }
            }
        });
        bp
    }

    /// One block of rows of `a` against all of `b`.
    fn block(
        a: &[f32],
        bp: &[f32],
        c: &mut [f32],
        (rows, n, k, kb): (usize, usize, usize, usize),
        bias: Option<&[f32]>,
    ) {
        let apanels = rows.div_ceil(MR);
        // ap[panel][kk][6], zero-padded past `rows`.
        let mut ap = vec![0f32; apanels * k * MR];
        for p in 0..apanels {
            for r in 0..MR.min(rows - p * MR) {
                let row = &a[(p * MR + r) * k..(p * MR + r + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    ap[p * k * MR + kk * MR + r] = v;
                }
            }
        }
        let bpanels = n.div_ceil(NR);
        // Two panels at a time in 512-bit registers where the CPU has AVX-512F.
        let wide = std::arch::is_x86_feature_detected!("avx512f");
        let mut tile = [0f32; MR * 2 * NR];
        for j0 in (0..bpanels).step_by(NB / NR) {
            let j1 = bpanels.min(j0 + NB / NR);
            for k0 in (0..k).step_by(kb) {
                let kc = kb.min(k - k0);
                let first = k0 == 0 && bias.is_some();
                for p in 0..apanels {
                    let ai = &ap[p * k * MR + k0 * MR..];
                    let rs = MR.min(rows - p * MR);
                    let mut q = j0;
                    while q < j1 {
                        let bi = &bp[q * k * NR + k0 * NR..];
                        let panels = if wide && q + 1 < j1 { 2 } else { 1 };
                        // SAFETY: the CPU has AVX2 and FMA (checked by the caller) and AVX-512F
                        // where `wide`; `ai` holds at least kc * MR floats, `bi` kc * NR and,
                        // for two panels, the next panel's k * NR after its own.
                        unsafe {
                            if panels == 2 {
                                let next = bi.as_ptr().add(k * NR);
                                kernel2(kc, ai.as_ptr(), bi.as_ptr(), next, &mut tile);
                            } else {
                                kernel(kc, ai.as_ptr(), bi.as_ptr(), &mut tile);
                            }
                        }
                        let width = panels * NR;
                        for (i, q) in (q..q + panels).enumerate() {
                            let cs = NR.min(n - q * NR);
                            for r in 0..rs {
                                let dst = &mut c[(p * MR + r) * n + q * NR..][..cs];
                                let t = &tile[r * width + i * NR..][..cs];
                                match bias {
                                    Some(b) if first => {
                                        let b = &b[q * NR..];
                                        for ((d, t), b) in dst.iter_mut().zip(t).zip(b) {
                                            *d = t + b;
                                        }
                                    }
                                    _ => dst.iter_mut().zip(t).for_each(|(d, t)| *d += t),
                                }
                            }
                        }
                        q += panels;
                    }
                }
            }
        }
    }

    /// `tile = ap · [bp0 bp1]` over `kc` steps: 6 rows x two panels of 16 columns, in 12
    /// 512-bit accumulators (row r's 32 values at `tile[32 r..]`).
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel2(
        kc: usize,
        a: *const f32,
        b0: *const f32,
        b1: *const f32,
        tile: &mut [f32; MR * 2 * NR],
    ) {
        let mut c = [_mm512_setzero_ps(); 12];
        for p in 0..kc {
            let w0 = _mm512_loadu_ps(b0.add(p * NR));
            let w1 = _mm512_loadu_ps(b1.add(p * NR));
            let ar = a.add(p * MR);
            for r in 0..MR {
                let x = _mm512_set1_ps(*ar.add(r));
                c[2 * r] = _mm512_fmadd_ps(x, w0, c[2 * r]);
                c[2 * r + 1] = _mm512_fmadd_ps(x, w1, c[2 * r + 1]);
            }
        }
        for r in 0..MR {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR), c[2 * r]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + NR), c[2 * r + 1]);
        }
    }

    /// `tile = ap · bp` over `kc` steps: 6 rows x 16 columns in 12 accumulators.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, tile: &mut [f32; MR * 2 * NR]) {
        let mut c = [_mm256_setzero_ps(); 12];
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            let ar = a.add(p * MR);
            for r in 0..MR {
                let x = _mm256_broadcast_ss(&*ar.add(r));
                c[2 * r] = _mm256_fmadd_ps(x, b0, c[2 * r]);
                c[2 * r + 1] = _mm256_fmadd_ps(x, b1, c[2 * r + 1]);
            }
        }
        // Row r at tile[r * NR..]: the one-panel layout.
        for r in 0..MR {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), c[2 * r]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), c[2 * r + 1]);
        }
    }
}

#[cfg(test)]
mod nt_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn packed_nt_product_matches_a_naive_one_on_ragged_shapes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for (m, n, k) in [(101, 37, 700), (6, 16, 64), (200, 300, 33), (13, 515, 1)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut c: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.01).collect();
            let start = c.clone();
            matmul_nt_acc(&a, &b, m, n, k, &mut c);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 - 3.0).collect();
            let mut cb = vec![f32::NAN; m * n];
            matmul_nt_bias(&a, &b, &bias, m, n, k, &mut cb);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                        .sum();
                    let got = (c[i * n + j] - start[i * n + j]) as f64;
                    assert!(
                        (got - want).abs() < 1e-3,
                        "({m},{n},{k}) at {i},{j}: {got} vs {want}"
                    );
                    let got = (cb[i * n + j] - bias[j]) as f64;
                    assert!((got - want).abs() < 1e-3, "bias ({m},{n},{k}) at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn blockwise_product_gives_every_row_once_in_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (m, n, k) in [(200, 37, 50), (96, 16, 700), (5, 300, 3)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
            let mut want = vec![0f32; m * n];
            matmul_nt_bias(&a, &b, &bias, m, n, k, &mut want);
            let blocks =
                matmul_nt_bias_blocks(&a, &b, &bias, (m, n, k), |first, c| (first, c.to_vec()));
            let mut next = 0;
            for (first, c) in blocks {
                assert_eq!(first, next, "({m},{n},{k}) blocks out of order");
                let rows = c.len() / n;
                assert!(rows > 0 && rows <= MAX_BLOCK_ROWS);
                for (got, want) in c.iter().zip(&want[first * n..(first + rows) * n]) {
                    assert!((got - want).abs() < 1e-4, "({m},{n},{k}) row block {first}");
                }
                next += rows;
            }
            assert_eq!(next, m, "({m},{n},{k}) rows covered");
        }
    }
}
