//! Fused causal attention for inference: q/k/v split, rotary embedding, key/value cache and
//! grouped-query softmax attention in a few passes over plain slices.
//!
//! The candle graph for the same computation (narrow, transpose, copy, rope, cache concat, full
//! `t x total` score matrix, additive mask, softmax, second matmul, transpose back) allocates a
//! dozen tensors per layer and does twice the needed work on a prompt; this module computes only
//! the causal half, with each (batch row, head, query block) an independent task on the rayon
//! pool. [`crate::model::Model`] uses it when weights are not trainable; the candle graph remains
//! the reference (and the path gradients take) and the tests hold the two together.

use rayon::prelude::*;

use crate::config::RopeStyle;

/// Query rows per task on a prompt: big enough for an efficient GEMM, small enough that the
/// causal triangle splits into many tasks.
const QUERY_BLOCK: usize = 64;

/// Below this many multiply-adds a pass runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Shapes of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` is a multiple of it).
    pub n_kv_heads: usize,
    /// Dimensions per head.
    pub head_dim: usize,
}

impl Heads {
    /// Width of one fused q/k/v row.
    pub fn qkv_width(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}

/// Rotary embedding tables `[positions, rope_dims / 2]` on the host.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// Cosines, row-major `[positions, half]`.
    pub cos: Vec<f32>,
    /// Sines, same layout.
    pub sin: Vec<f32>,
    /// Rotated dimensions per head (even, at most the head size).
    pub dims: usize,
    /// Which dimension pairs rotate together.
    pub style: RopeStyle,
}

impl RopeTables {
    /// Rotates the first `dims` entries of one head vector `x` for position `pos`.
    fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.dims / 2;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        match self.style {
            RopeStyle::Interleaved => {
                for (p, pair) in x[..self.dims].chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[p] - b * sin[p];
                    pair[1] = a * sin[p] + b * cos[p];
                }
            }
            RopeStyle::Half => {
                let (lo, hi) = x[..self.dims].split_at_mut(half);
                for p in 0..half {
                    let (a, b) = (lo[p], hi[p]);
                    lo[p] = a * cos[p] - b * sin[p];
                    hi[p] = a * sin[p] + b * cos[p];
                }
            }
        }
    }
}

/// Keys and values of one layer, `[batch, kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
    batch: usize,
    cap: usize,
    len: usize,
}

impl LayerCache {
    /// An empty cache for `cap` positions (memory is taken on the first append).
    pub fn new(cap: usize) -> LayerCache {
        LayerCache {
            cap,
            ..LayerCache::default()
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Batch size fixed by the first append (0 before it).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Makes room for `batch` rows of `t` more positions; `Err` names what does not fit.
    fn reserve(&mut self, h: Heads, batch: usize, t: usize) -> Result<(), String> {
        if self.len + t > self.cap {
            return Err(format!(
                "the key/value cache holds {} positions; {} more do not fit",
                self.cap - self.len,
                t
            ));
        }
        if self.len == 0 && self.k.is_empty() {
            self.batch = batch;
            let n = batch * h.n_kv_heads * self.cap * h.head_dim;
            self.k = vec![0.0; n];
            self.v = vec![0.0; n];
        } else if batch != self.batch {
            return Err(format!(
                "the key/value cache was started with batch size {}, not {batch}",
                self.batch
            ));
        }
        Ok(())
    }

    /// The keys (or values) of batch row `b`, kv head `g`, first `n` positions.
    fn rows(&self, h: Heads, b: usize, g: usize, n: usize) -> std::ops::Range<usize> {
        let start = (b * h.n_kv_heads + g) * self.cap * h.head_dim;
        start..start + n * h.head_dim
    }

    /// Keys `[batch, kv_heads, len, head_dim]` as one contiguous vector (for the candle path).
    pub fn keys(&self, h: Heads) -> Vec<f32> {
        self.gather(&self.k, h)
    }

    /// Values, laid out like [`LayerCache::keys`].
    pub fn values(&self, h: Heads) -> Vec<f32> {
        self.gather(&self.v, h)
    }

    fn gather(&self, data: &[f32], h: Heads) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.batch * h.n_kv_heads * self.len * h.head_dim);
        for b in 0..self.batch {
            for g in 0..h.n_kv_heads {
                out.extend_from_slice(&data[self.rows(h, b, g, self.len)]);
            }
        }
        out
    }

    /// Appends already-rotated keys and values `[batch, kv_heads, t, head_dim]`.
    pub fn append(&mut self, h: Heads, batch: usize, k: &[f32], v: &[f32]) -> Result<(), String> {
        let t = k.len() / (batch * h.n_kv_heads * h.head_dim).max(1);
        self.reserve(h, batch, t)?;
        let hd = h.head_dim;
        for b in 0..batch {
            for g in 0..h.n_kv_heads {
                let src = (b * h.n_kv_heads + g) * t * hd;
                let dst = ((b * h.n_kv_heads + g) * self.cap + self.len) * hd;
                self.k[dst..dst + t * hd].copy_from_slice(&k[src..src + t * hd]);
                self.v[dst..dst + t * hd].copy_from_slice(&v[src..src + t * hd]);
            }
        }
        self.len += t;
        Ok(())
    }
}

/// Splits fused projections `qkv` `[batch, t, (heads + 2 kv_heads) * head_dim]` for positions
/// `cache.len()..+t`: rotates q and k, appends k and v to `cache`, and returns q as
/// `[batch, heads, t, head_dim]`.
pub fn split_rotate_append(
    qkv: &[f32],
    batch: usize,
    h: Heads,
    rope: &RopeTables,
    cache: &mut LayerCache,
) -> Result<Vec<f32>, String> {
    let width = h.qkv_width();
    let t = qkv.len() / (batch * width).max(1);
    cache.reserve(h, batch, t)?;
    let (nh, nkv, hd, pos) = (h.n_heads, h.n_kv_heads, h.head_dim, cache.len);
    let mut q = vec![0f32; batch * nh * t * hd];
    for b in 0..batch {
        for i in 0..t {
            let row = &qkv[(b * t + i) * width..][..width];
            for head in 0..nh {
                let dst = &mut q[((b * nh + head) * t + i) * hd..][..hd];
                dst.copy_from_slice(&row[head * hd..][..hd]);
                rope.apply(dst, pos + i);
            }
            for g in 0..nkv {
                let at = ((b * nkv + g) * cache.cap + pos + i) * hd;
                let k = &mut cache.k[at..at + hd];
                k.copy_from_slice(&row[(nh + g) * hd..][..hd]);
                rope.apply(k, pos + i);
                cache.v[at..at + hd].copy_from_slice(&row[(nh + nkv + g) * hd..][..hd]);
            }
        }
    }
    cache.len += t;
    Ok(q)
}

/// One independent piece of an attention pass: `m` query rows that share a kv head.
#[derive(Debug, Clone, Copy)]
struct Task {
    b: usize,
    g: usize,
    /// Offset of the first query row in `q`; rows are `head_dim` apart.
    q_at: usize,
    m: usize,
    /// Absolute position of row 0 and the step between rows (1 for a block of one head's
    /// queries, 0 for the heads of one group at a single position).
    pos0: usize,
    pos_step: usize,
    /// Offset of row 0 in the output and the distance between output rows.
    out_at: usize,
    out_rs: usize,
}

impl Task {
    /// Keys the last row sees.
    fn keys(&self) -> usize {
        self.pos0 + (self.m - 1) * self.pos_step + 1
    }
}

/// Causal attention of queries `q` `[batch, heads, t, head_dim]` (rotated; the last `t` positions
/// of `cache`) over every cached position up to their own. Returns `[batch, t, heads * head_dim]`.
pub fn attend(q: &[f32], batch: usize, h: Heads, cache: &LayerCache) -> Vec<f32> {
    let (nh, hd) = (h.n_heads, h.head_dim);
    let t = q.len() / (batch * nh * hd).max(1);
    let mut out = vec![0f32; batch * t * nh * hd];
    if t == 0 {
        return out;
    }
    let tasks = tasks(batch, t, h, cache.len);
    let work: usize = tasks.iter().map(|k| k.m * k.keys() * hd).sum();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |task: &Task| {
        // SAFETY: tasks write disjoint output rows (distinct heads or positions), and `out`
        // outlives the pass.
        let out = out_ptr;
        unsafe { run_task(q, h, cache, task, out.0) }
    };
    if work < PARALLEL_MIN_WORK {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output regions to tasks (see `attend`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

fn tasks(batch: usize, t: usize, h: Heads, total: usize) -> Vec<Task> {
    let (nh, hd) = (h.n_heads, h.head_dim);
    let group = nh / h.n_kv_heads;
    let offset = total - t;
    let mut tasks = Vec::new();
    for b in 0..batch {
        if t == 1 {
            // One position: one task per head, so a pool of two balances nine heads.
            for head in 0..nh {
                tasks.push(Task {
                    b,
                    g: head / group,
                    q_at: (b * nh + head) * hd,
                    m: 1,
                    pos0: offset,
                    pos_step: 0,
                    out_at: (b * nh + head) * hd,
                    out_rs: hd,
                });
            }
            continue;
        }
        for head in 0..nh {
            for i0 in (0..t).step_by(QUERY_BLOCK) {
                tasks.push(Task {
                    b,
                    g: head / group,
                    q_at: ((b * nh + head) * t + i0) * hd,
                    m: QUERY_BLOCK.min(t - i0),
                    pos0: offset + i0,
                    pos_step: 1,
                    out_at: ((b * t + i0) * nh + head) * hd,
                    out_rs: nh * hd,
                });
            }
        }
    }
    // Longest tasks first so the pool ends together.
    tasks.sort_by_key(|k| std::cmp::Reverse(k.m * k.keys()));
    tasks
}

/// Runs one task: scores, masked softmax, weighted sum of values.
///
/// # Safety
/// `out` must point to a buffer holding the task's output rows, written by no other task.
unsafe fn run_task(q: &[f32], h: Heads, cache: &LayerCache, task: &Task, out: *mut f32) {
    let hd = h.head_dim;
    let n = task.keys();
    let k = &cache.k[cache.rows(h, task.b, task.g, n)];
    let v = &cache.v[cache.rows(h, task.b, task.g, n)];
    let q = &q[task.q_at..task.q_at + ((task.m - 1) * hd + hd)];
    let scale = 1.0 / (hd as f32).sqrt();
    if task.pos_step == 0 {
        // One position (decoding): a few rows, where GEMM packing costs more than it saves.
        for r in 0..task.m {
            let o = std::slice::from_raw_parts_mut(out.add(task.out_at + r * task.out_rs), hd);
            attend_row(&q[r * hd..(r + 1) * hd], k, v, scale, o);
        }
        return;
    }
    let mut s = vec![0f32; task.m * n];
    // S = scale * Q K^T: Q rows hd apart, K^T read in place from the cache's rows.
    gemm::gemm(
        task.m,
        n,
        hd,
        s.as_mut_ptr(),
        1,
        n as isize,
        false,
        q.as_ptr(),
        1,
        hd as isize,
        k.as_ptr(),
        hd as isize,
        1,
        0.0,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    for (r, row) in s.chunks_exact_mut(n).enumerate() {
        let seen = task.pos0 + r * task.pos_step + 1;
        softmax_prefix(row, seen);
    }
    // O = P V, written straight into the output rows.
    gemm::gemm(
        task.m,
        hd,
        n,
        out.add(task.out_at),
        1,
        task.out_rs as isize,
        false,
        s.as_ptr(),
        1,
        n as isize,
        v.as_ptr(),
        1,
        hd as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// One query row against every key: `out = softmax(scale * K q) V`.
fn attend_row(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let n = k.len() / hd;
    let mut s = vec![0f32; n];
    // Four keys at a time: four independent sums hide the add latency.
    let mut j = 0;
    while j + 4 <= n {
        let d = dot4(q, &k[j * hd..(j + 4) * hd]);
        for (i, x) in d.iter().enumerate() {
            s[j + i] = x * scale;
        }
        j += 4;
    }
    for (jj, kj) in k.chunks_exact(hd).enumerate().skip(j) {
        s[jj] = q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
    softmax_prefix(&mut s, n);
    out.fill(0.0);
    let mut vs = v.chunks_exact(4 * hd);
    let mut ps = s.chunks_exact(4);
    for (p, v4) in (&mut ps).zip(&mut vs) {
        let (v0, rest) = v4.split_at(hd);
        let (v1, rest) = rest.split_at(hd);
        let (v2, v3) = rest.split_at(hd);
        for d in 0..hd {
            out[d] += p[0] * v0[d] + p[1] * v1[d] + p[2] * v2[d] + p[3] * v3[d];
        }
    }
    for (p, vj) in ps.remainder().iter().zip(vs.remainder().chunks_exact(hd)) {
        for (o, x) in out.iter_mut().zip(vj) {
            *o += p * x;
        }
    }
}

/// Dot products of `q` with four consecutive rows of `k4` (each `q.len()` long).
fn dot4(q: &[f32], k4: &[f32]) -> [f32; 4] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if q.len().is_multiple_of(8) && k4.len() == 4 * q.len() {
        // SAFETY: the target has AVX2 and FMA; lengths are checked above.
        return unsafe { dot4_avx2(q, k4) };
    }
    dot4_portable(q, k4)
}

/// [`dot4`] with AVX2 fused multiply-adds (the compiler does not vectorise the portable form).
///
/// # Safety
/// Needs AVX2 and FMA, `q.len()` a multiple of 8 and `k4.len() == 4 * q.len()`.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
unsafe fn dot4_avx2(q: &[f32], k4: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let hd = q.len();
    let (qp, kp) = (q.as_ptr(), k4.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in (0..hd).step_by(8) {
        let x = _mm256_loadu_ps(qp.add(c));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(kp.add(r * hd + c)), *a);
        }
    }
    acc.map(|a| {
        let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    })
}

/// [`dot4`] in portable Rust.
fn dot4_portable(q: &[f32], k4: &[f32]) -> [f32; 4] {
    let hd = q.len();
    let (r0, rest) = k4.split_at(hd);
    let (r1, rest) = rest.split_at(hd);
    let (r2, r3) = rest.split_at(hd);
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
    let lanes = q
        .chunks_exact(8)
        .zip(r0.chunks_exact(8))
        .zip(r1.chunks_exact(8))
        .zip(r2.chunks_exact(8))
        .zip(r3.chunks_exact(8));
    for ((((x, c0), c1), c2), c3) in lanes {
        for i in 0..8 {
            a0[i] += x[i] * c0[i];
            a1[i] += x[i] * c1[i];
            a2[i] += x[i] * c2[i];
            a3[i] += x[i] * c3[i];
        }
    }
    let whole = hd / 8 * 8;
    let tail = |r: &[f32]| -> f32 { (whole..hd).map(|c| q[c] * r[c]).sum() };
    [
        a0.iter().sum::<f32>() + tail(r0),
        a1.iter().sum::<f32>() + tail(r1),
        a2.iter().sum::<f32>() + tail(r2),
        a3.iter().sum::<f32>() + tail(r3),
    ]
}

/// Softmax over `row[..seen]`; the rest (future positions) becomes 0.
fn softmax_prefix(row: &mut [f32], seen: usize) {
    let (live, masked) = row.split_at_mut(seen);
    masked.fill(0.0);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in live.iter_mut() {
        *x = exp(*x - max);
    }
    let sum: f32 = live.iter().sum();
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|x| *x *= inv);
}

/// `e^x` to about 2 ulp in a form the compiler vectorises (Cody-Waite range reduction and a
/// degree-6 polynomial, the coefficients of Cephes' `expf`). Inputs below -87.3 give 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    y * f32::from_bits(bits)
}

/// `silu(gate) * up` for rows of `[gate (d_ff) | up (d_ff)]`, into rows of `d_ff`.
pub fn swiglu(gate_up: &[f32], d_ff: usize) -> Vec<f32> {
    let rows = gate_up.len() / (2 * d_ff).max(1);
    let mut out = vec![0f32; rows * d_ff];
    let each = |(dst, src): (&mut [f32], &[f32])| {
        let (gate, up) = src.split_at(d_ff);
        for ((o, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    };
    if rows * d_ff < PARALLEL_MIN_WORK {
        out.chunks_mut(d_ff)
            .zip(gate_up.chunks(2 * d_ff))
            .for_each(each);
    } else {
        out.par_chunks_mut(d_ff)
            .zip(gate_up.par_chunks(2 * d_ff))
            .for_each(each);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn f32(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f32()).collect()
        }
    }

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01 + 0.003;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!(
            (0.0..1e-37).contains(&exp(-1000.0)),
            "underflow gives about 0"
        );
        assert_eq!(exp(0.0), 1.0);
    }

    /// Naive attention over explicit full keys and values `[b, nkv, total, hd]`.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        b: usize,
        h: Heads,
        t: usize,
        total: usize,
    ) -> Vec<f32> {
        let (nh, nkv, hd) = (h.n_heads, h.n_kv_heads, h.head_dim);
        let mut out = vec![0f32; b * t * nh * hd];
        for bi in 0..b {
            for head in 0..nh {
                let g = head / (nh / nkv);
                for i in 0..t {
                    let pos = total - t + i;
                    let qi = &q[((bi * nh + head) * t + i) * hd..][..hd];
                    let scores: Vec<f64> = (0..=pos)
                        .map(|j| {
                            let kj = &k[((bi * nkv + g) * total + j) * hd..][..hd];
                            qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for d in 0..hd {
                        let acc: f64 = (0..=pos)
                            .map(|j| w[j] / sum * v[((bi * nkv + g) * total + j) * hd + d] as f64)
                            .sum();
                        out[((bi * t + i) * nh + head) * hd + d] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn check(b: usize, h: Heads, prefix: usize, t: usize) {
        let mut rng = Rng(7 + (b * 31 + prefix * 7 + t) as u64);
        let total = prefix + t;
        let (nkv, hd) = (h.n_kv_heads, h.head_dim);
        let k = rng.vec(b * nkv * total * hd);
        let v = rng.vec(b * nkv * total * hd);
        let q = rng.vec(b * h.n_heads * t * hd);
        let mut cache = LayerCache::new(total + 3);
        let slice = |x: &[f32], from: usize, n: usize| -> Vec<f32> {
            (0..b * nkv)
                .flat_map(|r| x[(r * total + from) * hd..][..n * hd].to_vec())
                .collect()
        };
        if prefix > 0 {
            cache
                .append(h, b, &slice(&k, 0, prefix), &slice(&v, 0, prefix))
                .unwrap();
        }
        cache
            .append(h, b, &slice(&k, prefix, t), &slice(&v, prefix, t))
            .unwrap();
        assert_eq!(cache.keys(h), k);
        let got = attend(&q, b, h, &cache);
        let want = naive(&q, &k, &v, b, h, t, total);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 2e-5,
                "b{b} prefix{prefix} t{t} at {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn attend_matches_naive_causal_gqa() {
        let h = Heads {
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 16,
        };
        check(1, h, 0, 1);
        check(2, h, 0, 5);
        check(1, h, 0, 130); // several query blocks, the last one partial
        check(2, h, 9, 1); // decode step after a prefix
        check(1, h, 70, 3); // a chunk after a prefix
        check(
            1,
            Heads {
                n_heads: 4,
                n_kv_heads: 4,
                head_dim: 8,
            },
            3,
            200,
        );
    }

    #[test]
    fn dot4_forms_agree() {
        let mut rng = Rng(3);
        for hd in [8, 16, 64, 12] {
            let q = rng.vec(hd);
            let k = rng.vec(4 * hd);
            let (a, b) = (dot4(&q, &k), dot4_portable(&q, &k));
            for r in 0..4 {
                let want: f32 = q.iter().zip(&k[r * hd..]).map(|(x, y)| x * y).sum();
                assert!((a[r] - want).abs() < 1e-5 && (b[r] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn cache_refuses_overflow_and_batch_change() {
        let h = Heads {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
        };
        let mut c = LayerCache::new(2);
        c.append(h, 1, &[0.0; 8], &[0.0; 8]).unwrap();
        assert!(c
            .append(h, 1, &[0.0; 4], &[0.0; 4])
            .unwrap_err()
            .contains("do not fit"));
        let mut c = LayerCache::new(4);
        c.append(h, 1, &[0.0; 4], &[0.0; 4]).unwrap();
        assert!(c
            .append(h, 2, &[0.0; 8], &[0.0; 8])
            .unwrap_err()
            .contains("batch size 1"));
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let half = 2;
        let (c, s) = (0.6f32, 0.8f32);
        let tables = |style| RopeTables {
            cos: vec![1.0, 1.0, c, c],
            sin: vec![0.0, 0.0, s, s],
            dims: 2 * half,
            style,
        };
        let mut x = [1.0, 2.0, 3.0, 4.0, 5.0];
        tables(RopeStyle::Interleaved).apply(&mut x, 1);
        let want = [
            c - 2.0 * s,
            s + 2.0 * c,
            3.0 * c - 4.0 * s,
            3.0 * s + 4.0 * c,
            5.0,
        ];
        x.iter()
            .zip(want)
            .for_each(|(a, b)| assert!((a - b).abs() < 1e-6));
        let mut x = [1.0, 2.0, 3.0, 4.0, 5.0];
        tables(RopeStyle::Half).apply(&mut x, 1);
        let want = [
            c - 3.0 * s,
            2.0 * c - 4.0 * s,
            s + 3.0 * c,
            2.0 * s + 4.0 * c,
            5.0,
        ];
        x.iter()
            .zip(want)
            .for_each(|(a, b)| assert!((a - b).abs() < 1e-6));
    }

    #[test]
    fn swiglu_is_silu_gate_times_up() {
        let gu = [1.0f32, -2.0, 3.0, 0.5];
        let out = swiglu(&gu, 2);
        let silu = |g: f32| g / (1.0 + (-g).exp());
        assert!((out[0] - silu(1.0) * 3.0).abs() < 1e-6);
        assert!((out[1] - silu(-2.0) * 0.5).abs() < 1e-6);
    }
}
