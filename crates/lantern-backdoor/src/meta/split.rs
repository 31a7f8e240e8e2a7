//! Which models of a zoo train the detectors, pick the best epoch, or only test them.

use crate::zoo::{Entry, Index};
use serde::{Deserialize, Serialize};

/// The part a zoo model plays in a detection experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Trains the detectors.
    Train,
    /// Picks the meta-model's best epoch.
    Val,
    /// Only evaluated.
    Test,
    /// A backdoored model whose backdoor did not take (ASR under the zoo's threshold): kept
    /// out of every set, since its label would be a lie.
    Excluded,
}

/// The role of every model of an index, in index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooSplit {
    /// One role per `index.models` entry.
    pub roles: Vec<Role>,
}

impl ZooSplit {
    /// Positions (into `index.models`) of the models with `role`.
    pub fn positions(&self, role: Role) -> Vec<usize> {
        (0..self.roles.len())
            .filter(|&i| self.roles[i] == role)
            .collect()
    }
}

/// A uniform number in [0, 1) from a model's seed and the split seed (SplitMix64), so a
/// model keeps its role however the zoo grows or is reordered.
fn unit(model_seed: u64, seed: u64) -> f64 {
    let mut z = model_seed ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Splits `index`: a share `test_frac` of models (drawn by their seed) is test-only, then a
/// share `val_frac` is validation, the rest trains. Backdoored models of a `holdout` family
/// are always test-only (they measure detection of triggers never seen in training);
/// backdoored models whose backdoor did not take are excluded.
pub fn split_zoo(
    index: &Index,
    holdout: &[String],
    test_frac: f64,
    val_frac: f64,
    seed: u64,
) -> ZooSplit {
    let role = |e: &Entry| {
        let backdoored = e.family != crate::metrics::CLEAN_FAMILY;
        if backdoored && !e.backdoor_took {
            return Role::Excluded;
        }
        let u = unit(e.seed, seed);
        if u < test_frac || (backdoored && holdout.contains(&e.family)) {
            Role::Test
        } else if u < test_frac + val_frac {
            Role::Val
        } else {
            Role::Train
        }
    };
    ZooSplit {
        roles: index.models.iter().map(role).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_close_and_stable() {
        let n = 4000;
        let us: Vec<f64> = (0..n).map(|s| unit(s, 3)).collect();
        let test = us.iter().filter(|&&u| u < 0.2).count() as f64 / n as f64;
        assert!((test - 0.2).abs() < 0.03, "{test}");
        assert_eq!(unit(17, 3), unit(17, 3));
        assert_ne!(unit(17, 3), unit(17, 4));
    }
}
