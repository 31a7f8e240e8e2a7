//! Time of one epoch of the query detector's fitting (K = 10 queries, batch 32) on a zoo of 200
//! random models of the real 1×28×28, 8/16/32 shape: `cargo bench -p lantern-backdoor --bench
//! query_epoch`.

use std::time::Instant;

use lantern_backdoor::cnn::CnnConfig;
use lantern_backdoor::query::{synthetic_zoo, QueryConfig, QueryDetector};

fn main() {
    let cfg = CnnConfig::fashion_small();
    let (models, labels) = synthetic_zoo(&cfg, 200, 7);
    let qc = QueryConfig {
        epochs: 1,
        ..Default::default()
    };
    let t = Instant::now();
    QueryDetector::fit(&models, &labels, &cfg, &qc, |_, _| {}).expect("fit");
    println!(
        "one epoch, 200 models, K={}, batch {}: {:.2} s",
        qc.queries,
        qc.batch,
        t.elapsed().as_secs_f64()
    );
}
