//! The sparse products of a TopK step as candle custom ops, each with a CPU and a CUDA kernel.
//!
//! candle has no top-k and no sparse products; the device trainer works on codes given as
//! `idx`/`val` pairs (`[rows, k]` latent indices, u32, and their activations):
//!
//! * [`pick_top_k`]: each row's top k of `relu(raw + bias)` among allowed columns. The CUDA
//!   kernel selects instead of sorting: one block per row finds the k-th largest value by radix
//!   select on the values' bits (four passes of 8-bit digits, each a shared-memory histogram),
//!   then writes the columns above it and as many of those equal to it as k needs.
//! * [`gather_rows`]: `out[r] = Σ_j val[r, j] W[idx[r, j]]` (the decoder).
//! * [`rows_dot`]: `out[r, j] = G[r] · W[idx[r, j]]` (the gradient at each code), a warp per dot.
//! * [`scatter_rows`]: `out[idx[r, j]] += val[r, j] X[r]` into `[n, d]` (the weight gradients),
//!   with atomic adds on the GPU.
//! * [`adam_step`]: the CPU trainer's Adam step ([`AdamStep`]) on a packed `[parameter; m; v]`
//!   state, with the decoder rows' constraint, in one pass.
//!
//! The CUDA source is compiled by NVRTC the first time one of them runs on a GPU.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

use crate::linalg::{axpy, dot};
use crate::train::AdamStep;

type CResult<T> = candle_core::Result<T>;

/// Each row's top `k` of `max(raw + bias, 0)` over the columns `allowed` (1.0) marks, for
/// `raw` `[rows, n]`, `bias` and `allowed` `[n]`: `(val, idx)`, both `[rows, k]` (f32, u32), in
/// no particular order. Ties at the k-th value are broken arbitrarily; when fewer than k columns
/// are allowed, the rest are picked among the others with value 0.
pub fn pick_top_k(
    raw: &Tensor,
    bias: &Tensor,
    allowed: &Tensor,
    k: usize,
) -> CResult<(Tensor, Tensor)> {
    let (rows, n) = raw.dims2()?;
    if k == 0 || k > n {
        candle_core::bail!("top-k: k = {k} of {n} columns");
    }
    if bias.dims() != [n] || allowed.dims() != [n] {
        candle_core::bail!(
            "top-k: bias {:?} and mask {:?} for {n} columns",
            bias.dims(),
            allowed.dims()
        );
    }
    // One output, [values | indices as f32] (exact: indices stay below 2^24).
    if n >= 1 << 24 {
        candle_core::bail!("top-k: {n} columns, at most 2^24 supported");
    }
    let packed = raw.contiguous()?.apply_op3_no_bwd(
        &bias.contiguous()?,
        &allowed.contiguous()?,
        &Pick { k },
    )?;
    let val = packed.narrow(1, 0, k)?.contiguous()?;
    let idx = packed.narrow(1, k, k)?.to_dtype(DType::U32)?;
    debug_assert_eq!(idx.dims(), [rows, k]);
    Ok((val, idx))
}

/// One Adam step `k` on a parameter kept as `state` `[3, len]` (the parameter, then Adam's first
/// and second moments) with gradient `g` `[len]`: the new state. With `unit_rows = Some(d)` the
/// parameter is a matrix of unit-norm rows of `d`: each row's gradient loses its component along
/// the row first and the row goes back to unit norm after (the decoder's constraint).
pub fn adam_step(
    state: &Tensor,
    g: &Tensor,
    k: AdamStep,
    unit_rows: Option<usize>,
) -> CResult<Tensor> {
    let len = g.elem_count();
    if state.dims() != [3, len] {
        candle_core::bail!("adam: state {:?} for a gradient of {len}", state.dims());
    }
    if unit_rows.is_some_and(|d| d == 0 || !len.is_multiple_of(d)) {
        candle_core::bail!("adam: rows of {unit_rows:?} do not tile {len}");
    }
    state
        .contiguous()?
        .apply_op2_no_bwd(&g.flatten_all()?.contiguous()?, &AdamOp { k, unit_rows })
}

/// [`adam_step`] as a candle op.
#[derive(Debug, Clone, Copy)]
struct AdamOp {
    k: AdamStep,
    unit_rows: Option<usize>,
}

/// `out[r] = Σ_j val[r, j] w[idx[r, j]]`: `[rows, d]` from `idx`, `val` `[rows, k]` and `w`
/// `[n, d]`.
pub fn gather_rows(idx: &Tensor, val: &Tensor, w: &Tensor) -> CResult<Tensor> {
    apply(Op::Gather, idx, val, w)
}

/// `out[r, j] = g[r] · w[idx[r, j]]`: `[rows, k]` from `idx`, `g` `[rows, d]` and `w` `[n, d]`.
pub fn rows_dot(idx: &Tensor, g: &Tensor, w: &Tensor) -> CResult<Tensor> {
    apply(Op::RowsDot, idx, g, w)
}

/// `out[idx[r, j]] += val[r, j] x[r]`: `[n, d]` from `idx`, `val` `[rows, k]` and `x`
/// `[rows, d]`.
pub fn scatter_rows(idx: &Tensor, val: &Tensor, x: &Tensor, n: usize) -> CResult<Tensor> {
    apply(Op::Scatter { n }, idx, val, x)
}

fn apply(op: Op, idx: &Tensor, a: &Tensor, b: &Tensor) -> CResult<Tensor> {
    if idx.dtype() != DType::U32 || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        candle_core::bail!("{}: wants u32 indices and f32 values", op.name());
    }
    let (rows, k) = idx.dims2()?;
    let a_ok = match op {
        Op::RowsDot => a.dims2()?.0 == rows,
        _ => a.dims2()? == (rows, k),
    };
    let b_rows = b.dims2()?.0;
    let b_ok = match op {
        Op::Scatter { .. } => b_rows == rows,
        _ => true,
    };
    if !a_ok || !b_ok || (op == Op::RowsDot && a.dim(1)? != b.dim(1)?) {
        candle_core::bail!(
            "{}: shapes {:?}, {:?}, {:?} do not fit",
            op.name(),
            idx.dims(),
            a.dims(),
            b.dims()
        );
    }
    idx.contiguous()?
        .apply_op3_no_bwd(&a.contiguous()?, &b.contiguous()?, &op)
}

struct Pick {
    k: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Gather,
    RowsDot,
    Scatter { n: usize },
}

fn slice<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("sparse op: inputs must be contiguous");
    };
    Ok(&s.as_slice::<T>()?[start..end])
}

impl CustomOp3 for Pick {
    fn name(&self) -> &'static str {
        "pick-top-k"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (rows, n) = l1.shape().dims2()?;
        let (raw, bias) = (slice::<f32>(s1, l1)?, slice::<f32>(s2, l2)?);
        let allowed = slice::<f32>(s3, l3)?;
        let k = self.k;
        let mut out = vec![0f32; rows * 2 * k];
        let mut vals = vec![0f32; n];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        for (row, o) in raw.chunks_exact(n).zip(out.chunks_exact_mut(2 * k)) {
            for j in 0..n {
                vals[j] = if allowed[j] > 0.0 {
                    (row[j] + bias[j]).max(0.0)
                } else {
                    f32::NEG_INFINITY
                };
            }
            order.clear();
            order.extend(0..n as u32);
            let by_value = |a: &u32, b: &u32| vals[*b as usize].total_cmp(&vals[*a as usize]);
            order.select_nth_unstable_by(k - 1, by_value);
            for (s, &j) in order[..k].iter().enumerate() {
                o[s] = vals[j as usize].max(0.0);
                o[k + s] = j as f32;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, 2 * k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CResult<(candle_core::CudaStorage, Shape)> {
        cuda::pick(self.k, (s1, l1), (s2, l2), (s3, l3))
    }
}

impl AdamOp {
    /// The CPU kernel: the CPU trainer's Adam, row by row (or the whole parameter when rows are
    /// free).
    fn cpu(&self, state: &[f32], g: &[f32]) -> Vec<f32> {
        let len = g.len();
        let mut out = state.to_vec();
        let (p, rest) = out.split_at_mut(len);
        let (m, v) = rest.split_at_mut(len);
        match self.unit_rows {
            Some(d) => {
                let mut g_row = vec![0f32; d];
                let rows = p.chunks_mut(d).zip(m.chunks_mut(d)).zip(v.chunks_mut(d));
                for (((p, m), v), g) in rows.zip(g.chunks(d)) {
                    g_row.copy_from_slice(g);
                    self.k.decoder_row(true, p, &mut g_row, m, v);
                }
            }
            None => self.k.apply(p, g, m, v),
        }
        out
    }
}

impl candle_core::CustomOp2 for AdamOp {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let out = self.cpu(slice::<f32>(s1, l1)?, slice::<f32>(s2, l2)?);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> CResult<(candle_core::CudaStorage, Shape)> {
        cuda::adam(self, (s1, l1), (s2, l2))
    }
}

impl Op {
    /// The CPU kernel; `d` is the row width of the third input (`w` or `x`).
    fn cpu(
        &self,
        idx: &[u32],
        a: &[f32],
        b: &[f32],
        (rows, k, d): (usize, usize, usize),
    ) -> Vec<f32> {
        let span = |r: usize| (r * d)..((r + 1) * d);
        match *self {
            Op::Gather => {
                let mut out = vec![0f32; rows * d];
                for r in 0..rows {
                    let o = &mut out[span(r)];
                    for j in 0..k {
                        let (i, v) = (idx[r * k + j] as usize, a[r * k + j]);
                        axpy(v, &b[span(i)], o);
                    }
                }
                out
            }
            Op::RowsDot => {
                let mut out = vec![0f32; rows * k];
                for r in 0..rows {
                    let g = &a[span(r)];
                    for j in 0..k {
                        out[r * k + j] = dot(g, &b[span(idx[r * k + j] as usize)]);
                    }
                }
                out
            }
            Op::Scatter { n } => {
                let mut out = vec![0f32; n * d];
                for r in 0..rows {
                    let x = &b[span(r)];
                    for j in 0..k {
                        let (i, v) = (idx[r * k + j] as usize, a[r * k + j]);
                        axpy(v, x, &mut out[span(i)]);
                    }
                }
                out
            }
        }
    }

    fn out_shape(&self, rows: usize, k: usize, d: usize) -> Shape {
        match *self {
            Op::Gather => Shape::from((rows, d)),
            Op::RowsDot => Shape::from((rows, k)),
            Op::Scatter { n } => Shape::from((n, d)),
        }
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Gather => "gather-rows",
            Op::RowsDot => "rows-dot",
            Op::Scatter { .. } => "scatter-rows",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let idx = slice::<u32>(s1, l1)?;
        let (a, b) = (slice::<f32>(s2, l2)?, slice::<f32>(s3, l3)?);
        let limit = match self {
            Op::Scatter { n } => *n,
            _ => l3.shape().dims2()?.0,
        };
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= limit) {
            candle_core::bail!("{}: index {bad} of {limit} rows", self.name());
        }
        let d = l3.shape().dims2()?.1;
        let out = self.cpu(idx, a, b, (rows, k, d));
        Ok((CpuStorage::F32(out), self.out_shape(rows, k, d)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> CResult<(candle_core::CudaStorage, Shape)> {
        cuda::sparse(*self, (s1, l1), (s2, l2), (s3, l3))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::cudarc::nvrtc::compile_ptx;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, CudaStorage, Layout, Shape};

    use super::{CResult, Op};

    /// `float_key`: keys that order like the floats (flip every bit of a negative, the sign bit
    /// of the rest). In `pick_top_k_f32`, `hist` counts, per pass, the next digit of the keys
    /// that match the digits found so far; thread 0 then finds the digit of the k-th largest.
    const SRC: &str = r#"
__device__ __forceinline__ unsigned int float_key(float v) {
    unsigned int b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float pick_value(const float *raw, const float *bias,
                                            const float *allowed, int i) {
    return allowed[i] > 0.0f ? fmaxf(raw[i] + bias[i], 0.0f) : __int_as_float(0xff800000);
}

extern "C" __global__ void pick_top_k_f32(const float *raw_all, const float *bias,
                                          const float *allowed, float *out, int n, int k) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int prefix, mask, remaining, above_at, equal_at;
    const float *raw = raw_all + (size_t)blockIdx.x * n;
    float *val = out + (size_t)blockIdx.x * 2 * k;
    float *col = val + k;
    if (threadIdx.x == 0) { prefix = 0; mask = 0; remaining = k; above_at = 0; equal_at = 0; }
    __syncthreads();
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        unsigned int p = prefix, m = mask;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned int key = float_key(pick_value(raw, bias, allowed, i));
            if ((key & m) == p) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned int need = remaining, above = 0;
            int bin = 255;
            for (; bin > 0; --bin) {
                if (above + hist[bin] >= need) break;
                above += hist[bin];
            }
            prefix = p | ((unsigned int)bin << shift);
            mask = m | (255u << shift);
            remaining = need - above;
        }
        __syncthreads();
    }
    unsigned int t = prefix, equal = remaining, n_above = k - remaining;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = pick_value(raw, bias, allowed, i);
        unsigned int key = float_key(v);
        int slot = -1;
        if (key > t) {
            slot = atomicAdd(&above_at, 1u);
        } else if (key == t) {
            unsigned int s = atomicAdd(&equal_at, 1u);
            if (s < equal) slot = n_above + s;
        }
        if (slot >= 0) { val[slot] = fmaxf(v, 0.0f); col[slot] = (float)i; }
    }
}

/// The sum of `x` over the block (every thread gets it); `red` holds 32 floats.
__device__ float block_sum(float x, float *red) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) red[warp] = x;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) total += red[w];
    return total;
}

extern "C" __global__ void adam_f32(const float *state, const float *g, float *out, int len,
                                    int row, int unit, float b1, float b2, float eps,
                                    float step, float bc2) {
    __shared__ float red[32];
    int start = blockIdx.x * row;
    int end = min(start + row, len);
    const float *p = state, *m = state + len, *v = state + 2 * (size_t)len;
    float *po = out, *mo = out + len, *vo = out + 2 * (size_t)len;
    float along = 0.0f;
    if (unit) {
        float s = 0.0f;
        for (int i = start + threadIdx.x; i < end; i += blockDim.x) s += g[i] * p[i];
        along = block_sum(s, red);
    }
    float sq = 0.0f;
    for (int i = start + threadIdx.x; i < end; i += blockDim.x) {
        float gi = g[i] - along * p[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        float pi = p[i] - step * mi / (sqrtf(vi / bc2) + eps);
        mo[i] = mi;
        vo[i] = vi;
        po[i] = pi;
        sq += pi * pi;
    }
    if (unit) {
        float norm = sqrtf(block_sum(sq, red));
        if (norm > 0.0f)
            for (int i = start + threadIdx.x; i < end; i += blockDim.x) po[i] /= norm;
    }
}

extern "C" __global__ void gather_rows_f32(const unsigned int *idx, const float *val,
                                           const float *w, float *out, int k, int d) {
    const unsigned int *ib = idx + (size_t)blockIdx.x * k;
    const float *vb = val + (size_t)blockIdx.x * k;
    for (int t = threadIdx.x; t < d; t += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j) acc += vb[j] * w[(size_t)ib[j] * d + t];
        out[(size_t)blockIdx.x * d + t] = acc;
    }
}

extern "C" __global__ void rows_dot_f32(const unsigned int *idx, const float *g, const float *w,
                                        float *out, int pairs, int k, int d) {
    int pair = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (pair >= pairs) return;
    const float *gr = g + (size_t)(pair / k) * d;
    const float *wr = w + (size_t)idx[pair] * d;
    float acc = 0.0f;
    for (int t = lane; t < d; t += 32) acc += gr[t] * wr[t];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (lane == 0) out[pair] = acc;
}

extern "C" __global__ void scatter_rows_f32(const unsigned int *idx, const float *val,
                                            const float *x, float *out, int k, int d) {
    const unsigned int *ib = idx + (size_t)blockIdx.x * k;
    const float *vb = val + (size_t)blockIdx.x * k;
    const float *xr = x + (size_t)blockIdx.x * d;
    for (int j = 0; j < k; ++j) {
        float v = vb[j];
        if (v == 0.0f) continue;
        float *orow = out + (size_t)ib[j] * d;
        for (int t = threadIdx.x; t < d; t += blockDim.x) atomicAdd(&orow[t], v * xr[t]);
    }
}
"#;

    const MODULE: &str = "lantern_sparse_ops";

    fn ptx() -> CResult<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            compile_ptx(SRC)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(format!("sparse kernels: {e}")))
    }

    fn view<'a, T: candle_core::cuda_backend::CudaDType>(
        s: &'a CudaStorage,
        l: &Layout,
    ) -> CResult<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("sparse op: inputs must be contiguous");
        };
        Ok(s.as_cuda_slice::<T>()?.slice(start..end))
    }

    fn block_for(d: usize) -> u32 {
        (d.div_ceil(32) * 32).clamp(32, 1024) as u32
    }

    fn launch(rows: usize, block: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub fn pick(
        k: usize,
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
        (s3, l3): (&CudaStorage, &Layout),
    ) -> CResult<(CudaStorage, Shape)> {
        let (rows, n) = l1.shape().dims2()?;
        let dev = s1.device().clone();
        let (raw, bias, allowed) = (
            view::<f32>(s1, l1)?,
            view::<f32>(s2, l2)?,
            view::<f32>(s3, l3)?,
        );
        // SAFETY: the kernel writes all rows * 2k entries.
        let out: CudaSlice<f32> = unsafe { dev.alloc::<f32>(rows * 2 * k)? };
        let func = dev.get_or_load_custom_func("pick_top_k_f32", MODULE, ptx()?)?;
        let (n, k32) = (n as i32, k as i32);
        let mut b = func.builder();
        b.arg(&raw)
            .arg(&bias)
            .arg(&allowed)
            .arg(&out)
            .arg(&n)
            .arg(&k32);
        // SAFETY: reads rows * n floats and two vectors of n, writes rows * 2k.
        unsafe { b.launch(launch(rows, 256)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, 2 * k)),
        ))
    }

    pub fn adam(
        a: &super::AdamOp,
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
    ) -> CResult<(CudaStorage, Shape)> {
        let len = l2.shape().elem_count();
        let dev = s1.device().clone();
        let (state, g) = (view::<f32>(s1, l1)?, view::<f32>(s2, l2)?);
        // SAFETY: the kernel writes all 3 * len entries.
        let out: CudaSlice<f32> = unsafe { dev.alloc::<f32>(3 * len)? };
        let func = dev.get_or_load_custom_func("adam_f32", MODULE, ptx()?)?;
        let row = a.unit_rows.unwrap_or(4096);
        let (len32, row32, unit) = (len as i32, row as i32, i32::from(a.unit_rows.is_some()));
        let mut b = func.builder();
        b.arg(&state)
            .arg(&g)
            .arg(&out)
            .arg(&len32)
            .arg(&row32)
            .arg(&unit);
        let k = &a.k;
        b.arg(&k.beta1)
            .arg(&k.beta2)
            .arg(&k.eps)
            .arg(&k.step)
            .arg(&k.bc2);
        // SAFETY: reads 3 * len + len floats, writes 3 * len.
        unsafe { b.launch(launch(len.div_ceil(row), block_for(row.min(1024)))) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l1.shape().clone()))
    }

    pub fn sparse(
        op: Op,
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
        (s3, l3): (&CudaStorage, &Layout),
    ) -> CResult<(CudaStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let d = l3.shape().dims2()?.1;
        let dev: CudaDevice = s1.device().clone();
        let (idx, a, b) = (
            view::<u32>(s1, l1)?,
            view::<f32>(s2, l2)?,
            view::<f32>(s3, l3)?,
        );
        let shape = op.out_shape(rows, k, d);
        let out = dev.alloc_zeros::<f32>(shape.elem_count())?;
        let (k32, d32) = (k as i32, d as i32);
        let (name, cfg) = match op {
            Op::Gather => ("gather_rows_f32", launch(rows, block_for(d))),
            Op::Scatter { .. } => ("scatter_rows_f32", launch(rows, block_for(d))),
            // A warp per (row, code) pair, eight to a block.
            Op::RowsDot => ("rows_dot_f32", launch((rows * k * 32).div_ceil(256), 256)),
        };
        let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        let pairs = (rows * k) as i32;
        let mut builder = func.builder();
        builder.arg(&idx).arg(&a).arg(&b).arg(&out);
        if op == Op::RowsDot {
            builder.arg(&pairs);
        }
        builder.arg(&k32).arg(&d32);
        // SAFETY: every index was produced by pick_top_k for a matrix of the same width, and
        // the sizes passed are the tensors' own.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
    #[test]
    fn the_kernels_compile() {
        // NVRTC has no math headers: what compiles under nvcc may not here.
        ptx().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    #[test]
    fn picks_each_rows_k_largest_allowed_values() {
        let (rows, n, k) = (9, 300, 7);
        let raw = rand_vec(rows * n, 3);
        let bias = rand_vec(n, 4);
        let allowed: Vec<f32> = (0..n).map(|j| f32::from(j % 3 != 0)).collect();
        let dev = Device::Cpu;
        let t = |v: &Vec<f32>, s: &[usize]| Tensor::from_vec(v.clone(), s, &dev).unwrap();
        let (val, idx) =
            pick_top_k(&t(&raw, &[rows, n]), &t(&bias, &[n]), &t(&allowed, &[n]), k).unwrap();
        let (val, idx) = (val.to_vec2::<f32>().unwrap(), idx.to_vec2::<u32>().unwrap());
        for r in 0..rows {
            let value = |j: usize| (raw[r * n + j] + bias[j]).max(0.0);
            let mut want: Vec<f32> = (0..n).filter(|j| j % 3 != 0).map(value).collect();
            want.sort_by(|a, b| b.total_cmp(a));
            let mut got = val[r].clone();
            for (&v, &j) in val[r].iter().zip(&idx[r]) {
                assert_eq!(v, value(j as usize));
                assert_ne!(j % 3, 0, "row {r}: a masked column was picked");
            }
            got.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(got, want[..k].to_vec(), "row {r}");
        }
        // Too few allowed: the rest are picked with value 0.
        let one: Vec<f32> = (0..n).map(|j| f32::from(j == 5)).collect();
        let (val, idx) =
            pick_top_k(&t(&raw, &[rows, n]), &t(&bias, &[n]), &t(&one, &[n]), 3).unwrap();
        let (val, idx) = (val.to_vec2::<f32>().unwrap(), idx.to_vec2::<u32>().unwrap());
        for (v, i) in val.iter().zip(&idx) {
            assert!(i.contains(&5));
            assert!(v.iter().filter(|&&x| x != 0.0).count() <= 1);
        }
        let x = t(&raw, &[rows, n]);
        assert!(pick_top_k(&x, &t(&bias, &[n]), &t(&allowed, &[n]), n + 1).is_err());
        assert!(pick_top_k(&x, &t(&bias, &[n]), &t(&allowed, &[n]), 0).is_err());
        assert!(pick_top_k(&x, &t(&bias[..3].to_vec(), &[3]), &t(&allowed, &[n]), 2).is_err());
    }

    /// The Adam op against Adam's formula, and with unit rows.
    #[test]
    fn adam_matches_its_definition() {
        let (rows, d) = (4, 6);
        let len = rows * d;
        let p = rand_vec(len, 7);
        let g = rand_vec(len, 8);
        let m = rand_vec(len, 9);
        let v: Vec<f32> = rand_vec(len, 10).iter().map(|x| x.abs()).collect();
        let state: Vec<f32> = [p.clone(), m.clone(), v.clone()].concat();
        let dev = Device::Cpu;
        let st = Tensor::from_vec(state, (3, len), &dev).unwrap();
        let gt = Tensor::from_vec(g.clone(), len, &dev).unwrap();
        // Step 3 at learning rate 0.01 with the default betas and eps.
        let (lr, t) = (0.01f32, 3);
        let k = AdamStep::new(lr, &TrainConfig::default(), t);
        let (bc1, bc2) = (1.0 - 0.9f32.powi(3), 1.0 - 0.999f32.powi(3));
        let out = adam_step(&st, &gt, k, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for i in 0..len {
            let mi = 0.9 * m[i] + 0.1 * g[i];
            let vi = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let pi = p[i] - lr / bc1 * mi / ((vi / bc2).sqrt() + 1e-8);
            assert!((out[0][i] - pi).abs() < 1e-6 && (out[1][i] - mi).abs() < 1e-6);
            assert!((out[2][i] - vi).abs() < 1e-6);
        }
        let unit = adam_step(&st, &gt, k, Some(d)).unwrap();
        let w = unit
            .get(0)
            .unwrap()
            .reshape((rows, d))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for r in &w {
            let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "row norm {norm}");
        }
        assert!(adam_step(&st, &gt, k, Some(5)).is_err());
    }

    /// The three products against their definitions, written out densely.
    #[test]
    fn sparse_products_match_their_dense_definitions() {
        let (rows, k, n, d) = (5, 3, 11, 4);
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let idx: Vec<u32> = (0..rows * k).map(|_| rng.gen_range(0..n as u32)).collect();
        let val = rand_vec(rows * k, 2);
        let w = rand_vec(n * d, 3);
        let x = rand_vec(rows * d, 4);
        let t = |v: &Vec<f32>, s: (usize, usize)| Tensor::from_vec(v.clone(), s, &dev).unwrap();
        let it = Tensor::from_vec(idx.clone(), (rows, k), &dev).unwrap();
        // The codes as a dense [rows, n] matrix (repeated indices add up).
        let mut dense = vec![0f32; rows * n];
        for r in 0..rows {
            for j in 0..k {
                dense[r * n + idx[r * k + j] as usize] += val[r * k + j];
            }
        }
        let dense = t(&dense, (rows, n));
        let close = |a: Tensor, b: Tensor| {
            let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
            let diff = (a - b).unwrap().abs().unwrap().max(0).unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        };
        let g = gather_rows(&it, &t(&val, (rows, k)), &t(&w, (n, d))).unwrap();
        close(g, dense.matmul(&t(&w, (n, d))).unwrap());
        let s = scatter_rows(&it, &t(&val, (rows, k)), &t(&x, (rows, d)), n).unwrap();
        close(s, dense.t().unwrap().matmul(&t(&x, (rows, d))).unwrap());
        let dots = rows_dot(&it, &t(&x, (rows, d)), &t(&w, (n, d))).unwrap();
        let all = t(&x, (rows, d))
            .matmul(&t(&w, (n, d)).t().unwrap())
            .unwrap();
        close(dots, all.gather(&it, 1).unwrap());
        // Bad input: an index past the rows, shapes that do not fit.
        let bad = Tensor::from_vec(vec![n as u32; rows * k], (rows, k), &dev).unwrap();
        assert!(gather_rows(&bad, &t(&val, (rows, k)), &t(&w, (n, d))).is_err());
        assert!(gather_rows(&it, &t(&x, (rows, d)), &t(&w, (n, d))).is_err());
    }
}
