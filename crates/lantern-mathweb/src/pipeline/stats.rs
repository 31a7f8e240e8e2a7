//! Per-stage counts: documents in, out, and why the rest were dropped.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts of one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStats {
    /// Documents that reached the stage.
    pub docs_in: u64,
    /// Documents that passed it.
    pub docs_out: u64,
    /// Dropped documents by reason.
    pub dropped: BTreeMap<String, u64>,
}

/// Counts of a run, stage by stage, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Stage name -> counts.
    pub stages: BTreeMap<String, StageStats>,
    /// Stage names in the order they ran.
    pub order: Vec<String>,
    /// Damaged WARC records or unreadable files (counted and skipped).
    pub read_errors: u64,
}

impl Stats {
    fn stage(&mut self, name: &str) -> &mut StageStats {
        if !self.stages.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.stages.entry(name.to_string()).or_default()
    }

    /// A document passed `stage`.
    pub fn pass(&mut self, stage: &str) {
        let s = self.stage(stage);
        s.docs_in += 1;
        s.docs_out += 1;
    }

    /// A document was dropped at `stage` for `reason`.
    pub fn drop(&mut self, stage: &str, reason: &str) {
        let s = self.stage(stage);
        s.docs_in += 1;
        *s.dropped.entry(reason.to_string()).or_default() += 1;
    }

    /// Adds another run's counts (stage order: first seen first).
    pub fn merge(&mut self, other: &Stats) {
        for name in &other.order {
            let theirs = &other.stages[name];
            let s = self.stage(name);
            s.docs_in += theirs.docs_in;
            s.docs_out += theirs.docs_out;
            for (k, v) in &theirs.dropped {
                *s.dropped.entry(k.clone()).or_default() += v;
            }
        }
        self.read_errors += other.read_errors;
    }
}
