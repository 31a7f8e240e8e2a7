//! The worker pool forward passes run on.
//!
//! A pass alternates parallel kernels with short serial steps. Called from a thread outside the
//! pool, every serial step runs on the caller while the pool's idle workers spin looking for
//! work, and on a 2-core machine the three threads fight over two cores (a third of decoding
//! time went to `sched_yield` and wake-ups). Running the whole pass on a pool worker leaves one
//! thread per core: the worker doing the serial step and, at most, one spinning peer.

use std::sync::OnceLock;

/// Runs `f` on a worker of the runtime's pool (sized like rayon's global pool, so
/// `RAYON_NUM_THREADS` applies); parallel iterators inside `f` use that pool. From a thread
/// already inside a rayon pool, `f` runs where it is.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("lantern-lm-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}
