//! Time of one TopK training step on the benchmark shape (d_in 576, 9216 latents, k 32, batch
//! 4096 Gaussian activations; forward, backward and Adam): the minimum and the median over
//! timed steps, which a busy neighbour moves less than a mean. Where the CPU has AMX or
//! AVX512-BF16 this times the bf16 screen (`LANTERN_SCREEN=amx|avx512` picks the kernel);
//! `LANTERN_SCREEN=off` times the f32 product. The same step against PyTorch is
//! `bench/sae_speed.py`.
//!
//! Run: `cargo bench -p lantern-sae --bench train_step` (`STEPS=40` for more steps).

use lantern_sae::train::{TrainConfig, Trainer};
use lantern_sae::{Sae, SaeConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let (d, n, k, batch) = (576, 9216, 32, 4096);
    let steps: usize = std::env::var("STEPS").map_or(20, |s| s.parse().expect("STEPS"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_da7a);
    let x: Vec<f32> = (0..batch * d)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    let sae = Sae::init(SaeConfig::topk(d, n, k), 0).expect("valid config");
    let mut tr = Trainer::new(sae, TrainConfig::default());
    for _ in 0..3 {
        tr.train_step(&x);
    }
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            tr.train_step(&x);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (min, median) = (times[0], times[times.len() / 2]);
    println!(
        "step: min {:.1} ms, median {:.1} ms ({:.0} / {:.0} tok/s), {} threads",
        min * 1e3,
        median * 1e3,
        batch as f64 / min,
        batch as f64 / median,
        rayon::current_num_threads()
    );
}
