//! Dense matrix products on row-major f32 slices, through the `gemm` crate on the rayon pool.

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

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
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
