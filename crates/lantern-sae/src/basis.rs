//! Sets of directions in activation space that experiments compare: an SAE's latents against the
//! baselines of the paper — neurons (the coordinate basis), PCA directions and random directions.
//!
//! A basis reads *coefficients* off activation rows and maps a coefficient back to an edit along
//! its *direction*; feature patching and automated interpretability treat every basis alike.

use rand::SeedableRng;
use rand_distr_free::standard_normal;

use crate::linalg::{matmul, Mat};
use crate::sae::Sae;
use crate::{Result, SaeError};

/// Directions in a `d`-dimensional activation space.
pub enum Basis<'a> {
    /// An SAE: coefficients are its latent activations, directions its decoder rows.
    Sae(&'a Sae),
    /// `m` directions stored as rows `[m, d]`; a coefficient is `direction · (x - center)`.
    Linear {
        /// `neurons`, `pca` or `random`.
        name: String,
        /// Row-major `[m, d]`.
        dirs: Vec<f32>,
        /// Subtracted before projecting (the data mean for PCA, zero otherwise).
        center: Vec<f32>,
        m: usize,
        d: usize,
    },
}

impl Basis<'_> {
    /// The coordinate basis: neuron `i` is dimension `i` of the activation.
    pub fn neurons(d: usize) -> Basis<'static> {
        let mut dirs = vec![0.0; d * d];
        for i in 0..d {
            dirs[i * d + i] = 1.0;
        }
        Basis::Linear {
            name: "neurons".into(),
            dirs,
            center: vec![0.0; d],
            m: d,
            d,
        }
    }

    /// Principal directions of `rows` `[n, d]`, by decreasing variance: a complete orthonormal
    /// basis centred on the rows' mean.
    pub fn pca(rows: &[f32], d: usize) -> Result<Basis<'static>> {
        let n = rows.len() / d.max(1);
        if n < 2 {
            return Err(SaeError::Config(format!(
                "PCA needs at least 2 activation rows, got {n}"
            )));
        }
        let mut mean = vec![0.0f64; d];
        for r in rows.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centered: Vec<f32> = rows
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(&mean).map(|(&v, &m)| v - m as f32))
            .collect();
        let c = Mat::new(&centered, n, d);
        let cov: Vec<f64> = matmul(c.t(), c).iter().map(|&v| v as f64).collect();
        let (_, vecs) = symmetric_eigen(cov, d);
        Ok(Basis::Linear {
            name: "pca".into(),
            dirs: vecs.iter().map(|&v| v as f32).collect(),
            center: mean.iter().map(|&m| m as f32).collect(),
            m: d,
            d,
        })
    }

    /// `m` random unit directions; orthonormal when `m <= d` (a random rotation's rows).
    pub fn random(m: usize, d: usize, seed: u64) -> Basis<'static> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut dirs: Vec<f32> = (0..m * d).map(|_| standard_normal(&mut rng)).collect();
        orthonormalize_rows(&mut dirs, d, m.min(d));
        for r in dirs.chunks_exact_mut(d).skip(d) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|v| *v /= n);
        }
        Basis::Linear {
            name: "random".into(),
            dirs,
            center: vec![0.0; d],
            m,
            d,
        }
    }

    /// The basis's name in reports: `sae`, `neurons`, `pca` or `random`.
    pub fn name(&self) -> &str {
        match self {
            Basis::Sae(_) => "sae",
            Basis::Linear { name, .. } => name,
        }
    }

    /// Number of directions.
    pub fn len(&self) -> usize {
        match self {
            Basis::Sae(s) => s.cfg.num_latents,
            Basis::Linear { m, .. } => *m,
        }
    }

    /// True when the basis has no directions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Width of the activations it reads.
    pub fn d_in(&self) -> usize {
        match self {
            Basis::Sae(s) => s.cfg.d_in,
            Basis::Linear { d, .. } => *d,
        }
    }

    /// Coefficients of rows `x` `[n, d_in]`, dense `[n, len]`.
    pub fn coefficients(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Basis::Sae(s) => {
                let n = x.len() / s.cfg.d_in;
                let codes = s.encode(x, false).codes;
                let mut out = vec![0.0; n * s.cfg.num_latents];
                for r in 0..n {
                    for (i, v) in codes.row(r) {
                        out[r * s.cfg.num_latents + i] = v;
                    }
                }
                out
            }
            Basis::Linear {
                dirs, center, m, d, ..
            } => {
                let n = x.len() / d;
                let c: Vec<f32> = x
                    .chunks_exact(*d)
                    .flat_map(|r| r.iter().zip(center).map(|(&v, &c)| v - c))
                    .collect();
                matmul(Mat::new(&c, n, *d), Mat::new(dirs, *m, *d).t())
            }
        }
    }

    /// Coefficient `i` alone for each row of `x` (`[n]`): for a linear basis, `n` dot products
    /// instead of all of [`Basis::coefficients`].
    pub fn coefficient(&self, i: usize, x: &[f32]) -> Vec<f32> {
        match self {
            Basis::Sae(s) => self
                .coefficients(x)
                .chunks_exact(s.cfg.num_latents)
                .map(|r| r[i])
                .collect(),
            Basis::Linear { center, d, .. } => {
                let dir = self.direction(i);
                x.chunks_exact(*d)
                    .map(|row| {
                        row.iter()
                            .zip(center)
                            .zip(dir)
                            .map(|((&x, &c), &u)| (x - c) * u)
                            .sum()
                    })
                    .collect()
            }
        }
    }

    /// Direction `i` (`[d_in]`): what one unit of coefficient `i` adds to an activation.
    pub fn direction(&self, i: usize) -> &[f32] {
        match self {
            Basis::Sae(s) => &s.w_dec[i * s.cfg.d_in..(i + 1) * s.cfg.d_in],
            Basis::Linear { dirs, d, .. } => &dirs[i * d..(i + 1) * d],
        }
    }
}

/// Modified Gram-Schmidt on the first `k` rows of `m` (row length `d`), in place.
pub fn orthonormalize_rows(m: &mut [f32], d: usize, k: usize) {
    for i in 0..k {
        let (done, rest) = m.split_at_mut(i * d);
        let row = &mut rest[..d];
        for j in 0..i {
            let q = &done[j * d..(j + 1) * d];
            let p: f64 = q
                .iter()
                .zip(row.iter())
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            row.iter_mut()
                .zip(q)
                .for_each(|(r, &qv)| *r -= (p as f32) * qv);
        }
        let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        let n = if n > 1e-12 { n as f32 } else { 1.0 };
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Eigen-decomposition of a symmetric `n x n` matrix (row-major): Householder reduction to
/// tridiagonal form, then the implicit QL algorithm (the EISPACK `tred2` / `tql2` pair), O(n³).
/// Returns the eigenvalues in decreasing order and the matching unit eigenvectors as rows.
pub fn symmetric_eigen(a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "matrix is not {n}x{n}");
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v = a;
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tridiagonalize(&mut v, &mut d, &mut e, n);
    ql_implicit(&mut v, &mut d, &mut e, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[y].total_cmp(&d[x]));
    let vals = order.iter().map(|&i| d[i]).collect();
    // `v`'s columns are the eigenvectors; return them as rows.
    let vecs = order
        .iter()
        .flat_map(|&c| (0..n).map(move |r| (r, c)))
        .map(|(r, c)| v[r * n + c])
        .collect();
    (vals, vecs)
}

/// Householder reduction of the symmetric matrix in `v` to tridiagonal form: diagonal in `d`,
/// sub-diagonal in `e[1..]`, the accumulated orthogonal transform left in `v`.
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |r: usize, c: usize| r * n + c;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in d[..i].iter_mut() {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].iter_mut().for_each(|x| *x = 0.0);
            for j in 0..i {
                let f = d[j];
                v[at(j, i)] = f;
                let mut g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[at(k, i + 1)] * v[at(k, j)]).sum();
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iterations on the tridiagonal matrix (`d`, `e`), rotating `v`'s columns into
/// the eigenvectors; `d` ends as the eigenvalues.
fn ql_implicit(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |r: usize, c: usize| r * n + c;
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let (mut f, mut tst1) = (0.0f64, 0.0f64);
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iter in 0..100 {
                let g = d[l];
                let p = (d[l + 1] - g) / (2.0 * e[l]);
                let r = p.hypot(1.0).copysign(p);
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in d[l + 2..].iter_mut() {
                    *di -= h;
                }
                f += h;
                let mut p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    let r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        let h = v[at(k, i + 1)];
                        v[at(k, i + 1)] = s * v[at(k, i)] + c * h;
                        v[at(k, i)] = c * v[at(k, i)] - s * h;
                    }
                }
                let p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// A standard normal sample without another dependency (Box-Muller).
mod rand_distr_free {
    use rand::Rng;

    /// One draw from N(0, 1).
    pub fn standard_normal(rng: &mut impl Rng) -> f32 {
        let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.gen();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_known_matrix() {
        // A = Q diag(5, 2, -1) Q^T with a fixed rotation Q.
        let q = [
            [0.6f64, 0.8, 0.0],
            [-0.8 * 0.6, 0.6 * 0.6, 0.8],
            [0.8 * 0.8, -0.6 * 0.8, 0.6],
        ];
        let lam = [2.0, 5.0, -1.0];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i][k] * lam[k] * q[j][k]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(a.clone(), 3);
        for (got, want) in vals.iter().zip([5.0, 2.0, -1.0]) {
            assert!((got - want).abs() < 1e-10, "{vals:?}");
        }
        // A v = lambda v for each returned row.
        for e in 0..3 {
            let v = &vecs[e * 3..e * 3 + 3];
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| a[i * 3 + j] * v[j]).sum();
                assert!((av - vals[e] * v[i]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn eigenpairs_of_a_random_symmetric_matrix() {
        let n = 40;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = standard_normal(&mut rng) as f64;
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let (vals, vecs) = symmetric_eigen(a.clone(), n);
        assert!(vals.windows(2).all(|w| w[0] >= w[1]));
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((vals.iter().sum::<f64>() - trace).abs() < 1e-9);
        for e in 0..n {
            let v = &vecs[e * n..(e + 1) * n];
            assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-9);
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!((av - vals[e] * v[i]).abs() < 1e-8, "pair {e} row {i}");
            }
        }
    }

    #[test]
    fn pca_finds_the_direction_of_largest_variance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let d = 4;
        let axis = [0.5f32, 0.5, 0.5, 0.5];
        let rows: Vec<f32> = (0..500)
            .flat_map(|_| {
                let big = standard_normal(&mut rng) * 10.0;
                let noise: Vec<f32> = (0..d).map(|_| standard_normal(&mut rng) * 0.1).collect();
                (0..d)
                    .map(move |j| big * axis[j] + noise[j] + 3.0)
                    .collect::<Vec<_>>()
            })
            .collect();
        let b = Basis::pca(&rows, d).unwrap();
        let first = b.direction(0);
        let cos: f32 = first.iter().zip(axis).map(|(a, b)| a * b).sum();
        assert!(cos.abs() > 0.999, "first PC {first:?}");
        // Centred: the rows' mean has coefficient ~0 on every direction.
        let mean: Vec<f32> = (0..d)
            .map(|j| rows.iter().skip(j).step_by(d).sum::<f32>() / 500.0)
            .collect();
        let c = b.coefficients(&mean);
        assert!(c.iter().all(|v| v.abs() < 1e-3), "{c:?}");
    }

    #[test]
    fn random_basis_is_orthonormal_and_neurons_read_coordinates() {
        let b = Basis::random(8, 8, 1);
        for i in 0..8 {
            for j in 0..8 {
                let p: f32 = b
                    .direction(i)
                    .iter()
                    .zip(b.direction(j))
                    .map(|(a, b)| a * b)
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((p - want).abs() < 1e-5, "{i},{j}: {p}");
            }
        }
        let n = Basis::neurons(3);
        assert_eq!(n.coefficients(&[1.0, -2.0, 3.0]), vec![1.0, -2.0, 3.0]);
        // One coefficient alone equals its column of all of them.
        let x: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 4.0).collect();
        let all = b.coefficients(&x);
        let col: Vec<f32> = all.chunks_exact(8).map(|r| r[5]).collect();
        for (a, c) in b.coefficient(5, &x).iter().zip(&col) {
            assert!((a - c).abs() < 1e-4, "{a} vs {c}");
        }
    }
}
