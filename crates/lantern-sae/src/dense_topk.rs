//! Each row's top k as a dense matrix: a candle custom op, with a CPU kernel and a CUDA kernel.
//!
//! The device trainer decodes its codes as a dense `[rows, latents]` matrix holding each row's k
//! largest pre-activations and zeros elsewhere. candle has no top-k, and sorting rows with its
//! argsort cost more than the whole rest of a step on a GPU, so the CUDA kernel selects instead
//! of sorting: one block per row finds the k-th largest value by radix select on the values'
//! bits (four passes of 8-bit digits, each a shared-memory histogram), then writes the values
//! above it and as many of the values equal to it as k needs. The source is compiled by NVRTC
//! the first time the op runs.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// The op: `k` per row, values below zero written as zero (the codes of a ReLU'd encoder, and
/// the `-inf` that masks latents out).
struct DenseTopK {
    k: usize,
}

/// Each row of `pre` `[rows, n]` (f32) with only its `k` largest entries kept (ties at the k-th
/// value broken arbitrarily), negative ones as zero.
pub fn dense_top_k(pre: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let n = pre.dims2()?.1;
    if k == 0 || k > n {
        candle_core::bail!("top-k: k = {k} of {n} columns");
    }
    pre.contiguous()?.apply_op1_no_bwd(&DenseTopK { k })
}

impl CustomOp1 for DenseTopK {
    fn name(&self) -> &'static str {
        "dense-top-k"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, n) = layout.shape().dims2()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("top-k: the input must be contiguous");
        };
        let x = &storage.as_slice::<f32>()?[start..end];
        let mut out = vec![0f32; rows * n];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            order.clear();
            order.extend(0..n as u32);
            let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
            order.select_nth_unstable_by(self.k - 1, by_value);
            for &j in &order[..self.k] {
                o[j as usize] = row[j as usize].max(0.0);
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self.k, storage, layout)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::cudarc::nvrtc::compile_ptx;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Shape};

    /// Keys that order like the floats: flip every bit of a negative, the sign bit of the rest.
    /// Block-wide: `hist` counts, per pass, the next digit of the keys that match the digits
    /// found so far; thread 0 then finds the digit of the k-th largest.
    const SRC: &str = r#"
__device__ __forceinline__ unsigned int float_key(float v) {
    unsigned int b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

extern "C" __global__ void dense_top_k_f32(const float *pre, float *out, int n, int k) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int prefix, mask, remaining, taken;
    const float *x = pre + (size_t)blockIdx.x * n;
    float *o = out + (size_t)blockIdx.x * n;
    if (threadIdx.x == 0) { prefix = 0; mask = 0; remaining = k; taken = 0; }
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
    unsigned int t = prefix, equal = remaining;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        unsigned int key = float_key(x[i]);
        bool keep = key > t;
        if (key == t) keep = atomicAdd(&taken, 1u) < equal;
        if (keep) o[i] = fmaxf(x[i], 0.0f);
    }
}
"#;

    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            compile_ptx(SRC)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(format!("top-k kernel: {e}")))
    }

    pub fn forward(
        k: usize,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, n) = layout.shape().dims2()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("top-k: the input must be contiguous");
        };
        let dev = storage.device().clone();
        let src = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let out = dev.alloc_zeros::<f32>(rows * n)?;
        let func = dev.get_or_load_custom_func("dense_top_k_f32", "lantern_dense_top_k", ptx()?)?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n, k) = (n as i32, k as i32);
        let mut b = func.builder();
        b.arg(&src);
        b.arg(&out);
        b.arg(&n);
        b.arg(&k);
        // SAFETY: the kernel reads rows * n floats of `src` and writes as many of `out`.
        unsafe { b.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            layout.shape().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    #[test]
    fn keeps_each_rows_k_largest_and_zeroes_the_rest() {
        let (rows, n, k) = (9, 300, 7);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut x: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        // A row with fewer than k positive entries, and one masked with -inf but for a few.
        x[..n]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i < 3 { 0.5 } else { -1.0 });
        x[n..2 * n].iter_mut().enumerate().for_each(|(i, v)| {
            *v = if i % 50 == 0 {
                0.1 * i as f32
            } else {
                f32::NEG_INFINITY
            }
        });
        let t = Tensor::from_vec(x.clone(), (rows, n), &Device::Cpu).unwrap();
        let got = dense_top_k(&t, k).unwrap().to_vec2::<f32>().unwrap();
        for (r, row) in got.iter().enumerate() {
            let src = &x[r * n..(r + 1) * n];
            let mut sorted = src.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            let kept: Vec<usize> = (0..n).filter(|&j| row[j] != 0.0).collect();
            for j in 0..n {
                if row[j] != 0.0 {
                    assert_eq!(row[j], src[j]);
                    assert!(src[j] >= kth);
                } else if src[j] > kth && src[j] > 0.0 {
                    panic!(
                        "row {r}: {j} ({}) above the k-th ({kth}) was dropped",
                        src[j]
                    );
                }
            }
            let positives = src.iter().filter(|&&v| v > 0.0).count();
            assert_eq!(kept.len(), k.min(positives), "row {r}");
        }
        assert!(dense_top_k(&t, n + 1).is_err());
        assert!(dense_top_k(&t, 0).is_err());
    }
}
