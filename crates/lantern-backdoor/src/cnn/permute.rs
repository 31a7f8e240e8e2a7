//! Hidden-unit permutation: a different weight vector computing the same function.

use super::params::{CONV1_B, CONV1_W, CONV2_B, CONV2_W, LN1_B, LN1_G, LN2_B, LN2_G, PER_BLOCK};
use super::{CnnConfig, Params};
use rand::seq::SliceRandom;
use rand::Rng;

/// Returns `params` with the output channels of every conv permuted at random, together
/// with the matching LayerNorm `γ`/`β` entries, the next conv's input channels and, after
/// the last block, the head's input columns. The network function is unchanged: LayerNorm
/// over `(C, H, W)` with a per-channel affine, ReLU and the max-pools are all
/// permutation-equivariant in the channels. Used to augment meta-model training data.
pub fn permute_hidden_units(params: &Params, cfg: &CnnConfig, rng: &mut impl Rng) -> Params {
    let mut out = params.clone();
    let nb = cfg.widths.len();
    for b in 0..nb {
        let w = cfg.widths[b];
        let base = b * PER_BLOCK;
        // conv1 output channels -> ln1 -> conv2 input channels.
        let p1 = random_perm(w, rng);
        permute_rows(&mut out.tensors[base + CONV1_W], &p1, cfg.block_in(b) * 9);
        for k in [CONV1_B, LN1_G, LN1_B] {
            permute_rows(&mut out.tensors[base + k], &p1, 1);
        }
        permute_cols(&mut out.tensors[base + CONV2_W], &p1, w, 9);
        // conv2 output channels -> ln2 -> next conv1 inputs (or head columns).
        let p2 = random_perm(w, rng);
        permute_rows(&mut out.tensors[base + CONV2_W], &p2, w * 9);
        for k in [CONV2_B, LN2_G, LN2_B] {
            permute_rows(&mut out.tensors[base + k], &p2, 1);
        }
        if b + 1 < nb {
            permute_cols(&mut out.tensors[base + PER_BLOCK + CONV1_W], &p2, w, 9);
        } else {
            let hi = out.head_index();
            permute_cols(&mut out.tensors[hi], &p2, w, 1);
        }
    }
    out
}

fn random_perm(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(rng);
    p
}

/// New row `r` (of `row_len` values) is old row `perm[r]`.
fn permute_rows(t: &mut [f32], perm: &[usize], row_len: usize) {
    let old = t.to_vec();
    for (r, &src) in perm.iter().enumerate() {
        t[r * row_len..(r + 1) * row_len].copy_from_slice(&old[src * row_len..(src + 1) * row_len]);
    }
}

/// Views `t` as `[rows, cols, inner]` and makes new column `c` the old column `perm[c]`.
fn permute_cols(t: &mut [f32], perm: &[usize], cols: usize, inner: usize) {
    let old = t.to_vec();
    let row = cols * inner;
    for r in 0..t.len() / row {
        for (c, &src) in perm.iter().enumerate() {
            let d = r * row + c * inner;
            let s = r * row + src * inner;
            t[d..d + inner].copy_from_slice(&old[s..s + inner]);
        }
    }
}
