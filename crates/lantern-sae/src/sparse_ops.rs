//! The sparse products of a TopK step as candle custom ops, each with a CPU and a CUDA kernel.
//!
//! candle has no top-k and no sparse products; the device trainer needs four operations on codes
//! given as `idx`/`val` pairs (`[rows, k]` latent indices, u32, and their activations):
//!
//! * [`top_k_indices`]: each row's `k` largest columns. The CUDA kernel selects instead of
//!   sorting: one block per row finds the k-th largest value by radix select on the values' bits
//!   (four passes of 8-bit digits, each a shared-memory histogram), then writes the columns above
//!   it and as many of those equal to it as k needs.
//! * [`gather_rows`]: `out[r] = Σ_j val[r, j] W[idx[r, j]]` (the decoder).
//! * [`rows_dot`]: `out[r, j] = G[r] · W[idx[r, j]]` (the gradient at each code), a warp per dot.
//! * [`scatter_rows`]: `out[idx[r, j]] += val[r, j] X[r]` into `[n, d]` (the weight gradients),
//!   with atomic adds on the GPU.
//!
//! The CUDA source is compiled by NVRTC the first time one of them runs on a GPU.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};

type CResult<T> = candle_core::Result<T>;

/// Each row of `pre` `[rows, n]` (f32): the columns of its `k` largest entries (u32 `[rows, k]`,
/// in no particular order; ties at the k-th value broken arbitrarily).
pub fn top_k_indices(pre: &Tensor, k: usize) -> CResult<Tensor> {
    let n = pre.dims2()?.1;
    if k == 0 || k > n {
        candle_core::bail!("top-k: k = {k} of {n} columns");
    }
    pre.contiguous()?.apply_op1_no_bwd(&TopK { k })
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

struct TopK {
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

impl CustomOp1 for TopK {
    fn name(&self) -> &'static str {
        "top-k-indices"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (rows, n) = layout.shape().dims2()?;
        let x = slice::<f32>(storage, layout)?;
        let mut out = Vec::with_capacity(rows * self.k);
        let mut order: Vec<u32> = Vec::with_capacity(n);
        for row in x.chunks_exact(n) {
            order.clear();
            order.extend(0..n as u32);
            let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
            order.select_nth_unstable_by(self.k - 1, by_value);
            out.extend_from_slice(&order[..self.k]);
        }
        Ok((CpuStorage::U32(out), Shape::from((rows, self.k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> CResult<(candle_core::CudaStorage, Shape)> {
        cuda::top_k(self.k, storage, layout)
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
                        let w = &b[span(i)];
                        o.iter_mut().zip(w).for_each(|(o, w)| *o += v * w);
                    }
                }
                out
            }
            Op::RowsDot => {
                let mut out = vec![0f32; rows * k];
                for r in 0..rows {
                    let g = &a[span(r)];
                    for j in 0..k {
                        let w = &b[span(idx[r * k + j] as usize)];
                        out[r * k + j] = g.iter().zip(w).map(|(g, w)| g * w).sum();
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
                        let o = &mut out[(i * d)..((i + 1) * d)];
                        o.iter_mut().zip(x).for_each(|(o, x)| *o += v * x);
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
    /// of the rest). In `top_k_indices_f32`, `hist` counts, per pass, the next digit of the keys
    /// that match the digits found so far; thread 0 then finds the digit of the k-th largest.
    const SRC: &str = r#"
__device__ __forceinline__ unsigned int float_key(float v) {
    unsigned int b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

extern "C" __global__ void top_k_indices_f32(const float *pre, unsigned int *idx, int n, int k) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int prefix, mask, remaining, above_at, equal_at;
    const float *x = pre + (size_t)blockIdx.x * n;
    unsigned int *o = idx + (size_t)blockIdx.x * k;
    if (threadIdx.x == 0) { prefix = 0; mask = 0; remaining = k; above_at = 0; equal_at = 0; }
    __syncthreads();
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        unsigned int p = prefix, m = mask;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned int key = float_key(x[i]);
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
        unsigned int key = float_key(x[i]);
        if (key > t) {
            o[atomicAdd(&above_at, 1u)] = i;
        } else if (key == t) {
            unsigned int s = atomicAdd(&equal_at, 1u);
            if (s < equal) o[n_above + s] = i;
        }
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

    pub fn top_k(k: usize, s: &CudaStorage, l: &Layout) -> CResult<(CudaStorage, Shape)> {
        let (rows, n) = l.shape().dims2()?;
        let dev = s.device().clone();
        let x = view::<f32>(s, l)?;
        // SAFETY: the kernel writes all rows * k entries.
        let out: CudaSlice<u32> = unsafe { dev.alloc::<u32>(rows * k)? };
        let func = dev.get_or_load_custom_func("top_k_indices_f32", MODULE, ptx()?)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n, k32) = (n as i32, k as i32);
        let mut b = func.builder();
        b.arg(&x).arg(&out).arg(&n).arg(&k32);
        // SAFETY: reads rows * n floats, writes rows * k indices.
        unsafe { b.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, k)),
        ))
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
            Op::Gather | Op::Scatter { .. } => (
                if op == Op::Gather {
                    "gather_rows_f32"
                } else {
                    "scatter_rows_f32"
                },
                LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (block_for(d), 1, 1),
                    shared_mem_bytes: 0,
                },
            ),
            Op::RowsDot => (
                "rows_dot_f32",
                LaunchConfig {
                    grid_dim: ((rows * k * 32).div_ceil(256) as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                },
            ),
        };
        let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        let pairs = (rows * k) as i32;
        let mut builder = func.builder();
        builder.arg(&idx).arg(&a).arg(&b).arg(&out);
        if op == Op::RowsDot {
            builder.arg(&pairs);
        }
        builder.arg(&k32).arg(&d32);
        // SAFETY: every index was produced by top_k_indices for a matrix of the same width, and
        // the sizes passed are the tensors' own.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    #[test]
    fn top_k_indices_are_each_rows_k_largest() {
        let (rows, n, k) = (9, 300, 7);
        let x = rand_vec(rows * n, 3);
        let t = Tensor::from_vec(x.clone(), (rows, n), &Device::Cpu).unwrap();
        let idx = top_k_indices(&t, k).unwrap().to_vec2::<u32>().unwrap();
        for (r, picked) in idx.iter().enumerate() {
            let row = &x[r * n..(r + 1) * n];
            let mut sorted = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let mut got: Vec<f32> = picked.iter().map(|&j| row[j as usize]).collect();
            got.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(got, sorted[..k].to_vec(), "row {r}");
        }
        assert!(top_k_indices(&t, n + 1).is_err());
        assert!(top_k_indices(&t, 0).is_err());
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
