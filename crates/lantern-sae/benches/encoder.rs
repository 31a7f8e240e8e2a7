//! Speed of the SAE encoder's pieces on the benchmark shape (4096 activations of width 576,
//! 9216 latents, k 32): the packed `x · W_encᵀ` product alone, with a top-k over the whole
//! product, block by block with each block's top-k (what a training step runs), the generic
//! `gemm` crate on the same product, the bf16 screen with its f32 recompute on each kernel this
//! CPU has (AMX tiles, AVX512-BF16), and the top-k alone. Prints GFLOP/s (best of three) and
//! milliseconds.
//!
//! Run: `cargo bench -p lantern-sae --bench encoder` (`RAYON_NUM_THREADS=1` for one core). The
//! whole training step against PyTorch is `bench/sae_speed.py`.

use lantern_sae::linalg::{matmul_into, matmul_nt_acc, matmul_nt_bias_blocks, Mat};
use lantern_sae::topk::{top_k, top_k_row};
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Instant;

/// Best of three timed runs of `f`, in seconds.
fn best_of_three(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (m, n, k) = (4096, 9216, 576);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-0.05..0.05)).collect();
    // Touched once, so the first timing does not pay its page faults.
    let mut c = vec![1f32; m * n];
    let bias = vec![0f32; n];
    let flop = 2.0 * (m * n * k) as f64;
    let threads = rayon::current_num_threads();
    let report = |name: &str, secs: f64| {
        println!(
            "{name:<12} {:>7.1} GFLOP/s {:>8.1} ms  ({threads} threads)",
            flop / secs / 1e9,
            secs * 1e3
        );
    };
    report(
        "packed",
        best_of_three(|| matmul_nt_acc(&a, &b, m, n, k, &mut c)),
    );
    report(
        "packed+topk",
        best_of_three(|| {
            matmul_nt_acc(&a, &b, m, n, k, &mut c);
            black_box(top_k(&c, n, 32, None));
        }),
    );
    report(
        "blocks+topk",
        best_of_three(|| {
            black_box(matmul_nt_bias_blocks(&a, &b, &bias, (m, n, k), |_, c| {
                c.chunks_exact(n)
                    .map(|r| top_k_row(r, 32, None))
                    .collect::<Vec<_>>()
            }));
        }),
    );
    report(
        "gemm crate",
        best_of_three(|| matmul_into(Mat::new(&a, m, k), Mat::new(&b, n, k).t(), &mut c, 1.0)),
    );
    #[cfg(target_arch = "x86_64")]
    {
        use lantern_sae::screen::{encode_picks_with, Kernel};
        let picks = [lantern_sae::sae::Pick {
            k: 32,
            allowed: None,
        }];
        for (name, kernel) in [
            ("amx screen", Kernel::Amx),
            ("avx512 screen", Kernel::Avx512Bf16),
        ] {
            if !kernel.supported() {
                continue;
            }
            let mut stats = None;
            let secs = best_of_three(|| {
                let got = encode_picks_with(kernel, &a, &b, &bias, (m, n, k), &picks);
                let (codes, s) = got.expect("supported");
                stats = Some(s);
                black_box(codes);
            });
            report(name, secs);
            let s = stats.expect("ran");
            let per_row = s.candidates as f64 / m as f64;
            println!("  ({per_row:.1} latents recomputed in f32 per row for its top 32)");
        }
    }
    let topk = best_of_three(|| {
        black_box(top_k(&c, n, 32, None));
    });
    println!("top-32 of {m} x {n} alone: {:.1} ms", topk * 1e3);
}
