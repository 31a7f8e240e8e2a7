//! Time of one CNN training step (loss, gradient, clip, AdamW) at batch 128 on 1×28×28 with
//! widths 8/16/32 — the unit of a zoo's work. Prints milliseconds per step (the best and the
//! median of five rounds of 10 steps) and the threads used.
//!
//! Run: `cargo bench -p lantern-backdoor --bench train_step` (`RAYON_NUM_THREADS=1` for one
//! core). The zoo against PyTorch is `bench/backdoor_zoo_speed.py`.

use lantern_backdoor::cnn::{clip_grad_norm, loss_and_grad, AdamW, CnnConfig, Params};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let cfg = CnnConfig::fashion_small();
    let batch = 128;
    let mut rng = StdRng::seed_from_u64(5);
    let mut p = Params::init(&cfg, &mut rng);
    let images: Vec<f32> = (0..batch * cfg.image_len())
        .map(|_| rng.gen_range(0.0..1.0))
        .collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i % cfg.classes) as u8).collect();
    let mut opt = AdamW::new(1e-3);
    let mut step = || {
        let (_, mut g) = loss_and_grad(&p, &cfg, &images, &labels, batch);
        clip_grad_norm(&mut g, 5.0);
        opt.step(&mut p, &g, 1e-3);
    };
    step();
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                step();
            }
            t.elapsed().as_secs_f64() * 1e3 / 10.0
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    println!(
        "cnn training step, batch {batch}, 1x28x28, widths 8/16/32, {} threads: best {:.1} ms, median {:.1} ms",
        rayon::current_num_threads(),
        rounds[0],
        rounds[2]
    );
}
