//! Top-k selection: per row (TopK SAEs, AuxK) and over a whole batch (BatchTopK).

use rayon::prelude::*;

/// What a block-by-block encoder gives for one block of rows: per pick, per row, the (latent,
/// activation) pairs picked, largest first.
pub type BlockPicks = Vec<Vec<Vec<(u32, f32)>>>;

/// Sparse codes of a batch in compressed-row form: row `r`'s latents are
/// `idx[offsets[r]..offsets[r + 1]]` with activations `val[..]` (all > 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    /// `rows + 1` offsets into `idx` / `val`.
    pub offsets: Vec<usize>,
    /// Latent indices.
    pub idx: Vec<u32>,
    /// Activations.
    pub val: Vec<f32>,
}

impl Codes {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The (latent, activation) pairs of row `r`.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let (idx, val) = self.row_slices(r);
        idx.iter().zip(val).map(|(&i, &v)| (i as usize, v))
    }

    /// Row `r`'s latent indices and activations, as slices.
    pub fn row_slices(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.offsets[r]..self.offsets[r + 1];
        (&self.idx[span.clone()], &self.val[span])
    }

    /// Total number of non-zero codes.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    /// Each row's first `k` codes: its `k` largest when rows run largest first, as the top-k
    /// functions here leave them.
    pub fn first(&self, k: usize) -> Codes {
        Codes::from_rows(
            (0..self.rows())
                .map(|r| self.row(r).take(k).map(|(j, v)| (j as u32, v)).collect())
                .collect(),
        )
    }

    /// One set of codes per pick from blocks of consecutive rows, each block holding every
    /// pick's rows in order (what the block-by-block encoders return).
    pub fn from_blocks<I>(picks: usize, blocks: I) -> Vec<Codes>
    where
        I: IntoIterator<Item = BlockPicks>,
    {
        let mut per_pick: BlockPicks = vec![Vec::new(); picks];
        for block in blocks {
            for (all, part) in per_pick.iter_mut().zip(block) {
                all.extend(part);
            }
        }
        per_pick.into_iter().map(Codes::from_rows).collect()
    }

    /// Builds codes from per-row lists.
    pub fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Codes {
        let mut c = Codes {
            offsets: Vec::with_capacity(rows.len() + 1),
            ..Codes::default()
        };
        c.offsets.push(0);
        for row in rows {
            for (i, v) in row {
                c.idx.push(i);
                c.val.push(v);
            }
            c.offsets.push(c.idx.len());
        }
        c
    }
}

/// The `k` largest entries of `row` among those `allowed` (all when `None`), largest first,
/// keeping only positive values (the ReLU before TopK); of equal values the earlier latent wins.
pub fn top_k_row(row: &[f32], k: usize, allowed: Option<&[bool]>) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut top = Candidates::new(k);
    match allowed {
        Some(a) => {
            for (i, &v) in row.iter().enumerate() {
                if v > top.floor && a[i] {
                    top.push(i, v);
                }
            }
        }
        None => {
            // Most blocks of 32 hold nothing above the floor: vector compares find the few
            // values that are.
            const B: usize = 32;
            let blocks = row.chunks_exact(B);
            let tail = blocks.remainder();
            for (c, chunk) in blocks.enumerate() {
                let chunk: &[f32; B] = chunk.try_into().expect("exact chunk");
                let mut mask = above_mask(chunk, top.floor);
                while mask != 0 {
                    let j = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    // A cut inside the block may have raised the floor.
                    if chunk[j] > top.floor {
                        top.push(c * B + j, chunk[j]);
                    }
                }
            }
            let base = row.len() - tail.len();
            for (j, &v) in tail.iter().enumerate() {
                if v > top.floor {
                    top.push(base + j, v);
                }
            }
        }
    }
    top.finish()
}

/// The running candidates of a top-k scan: values above `floor` are pushed unsorted, and when
/// the buffer fills it is cut back to its best `k` (a selection, not a sort), which raises the
/// floor. Each pushed value costs O(1) amortised instead of a sorted insert.
struct Candidates {
    k: usize,
    buf: Vec<(u32, f32)>,
    /// The value to beat: 0 (ReLU) until the first cut, then the k-th best so far.
    floor: f32,
}

impl Candidates {
    fn new(k: usize) -> Candidates {
        Candidates {
            k,
            buf: Vec::with_capacity(4 * k + 4),
            floor: 0.0,
        }
    }

    #[inline]
    fn push(&mut self, i: usize, v: f32) {
        self.buf.push((i as u32, v));
        if self.buf.len() == self.buf.capacity() {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, rank_order);
            self.buf.truncate(self.k);
            self.floor = self.buf.iter().map(|e| e.1).fold(f32::INFINITY, f32::min);
        }
    }

    fn finish(mut self) -> Vec<(u32, f32)> {
        self.cut();
        self.buf.sort_unstable_by(rank_order);
        self.buf
    }
}

/// The order of a top-k's (latent, value) pairs: larger value first; of equal values the
/// earlier latent.
pub(crate) fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Which values of the block are above `floor`, as a bit mask (bit `j` for value `j`): vector
/// compares, so a block with nothing above the floor costs a few instructions.
#[inline]
fn above_mask(block: &[f32; 32], floor: f32) -> u32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the build enables AVX (checked by the cfg); the four loads read the block's
        // 32 values.
        unsafe {
            let f = _mm256_set1_ps(floor);
            let p = block.as_ptr();
            let bits = |o: usize| {
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(p.add(o)), f);
                _mm256_movemask_ps(gt) as u32
            };
            bits(0) | bits(8) << 8 | bits(16) << 16 | bits(24) << 24
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx")))]
    block
        .iter()
        .enumerate()
        .fold(0, |m, (j, &v)| m | u32::from(v > floor) << j)
}

/// Per-row top-k of a `[rows, n]` matrix of pre-activations, in parallel.
pub fn top_k(pre: &[f32], n: usize, k: usize, allowed: Option<&[bool]>) -> Codes {
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(n)
        .map(|row| top_k_row(row, k, allowed))
        .collect();
    Codes::from_rows(rows)
}

/// BatchTopK: the `k * rows` largest positive entries of the whole batch (rows keep a variable
/// number of latents, `k` on average).
pub fn batch_top_k(pre: &[f32], n: usize, k: usize) -> Codes {
    batch_top_k_of(&top_k(pre, n, batch_candidates(n, k), None), k)
}

/// How many latents per row BatchTopK considers: a row can contribute at most `k * rows`
/// entries, but in practice its own top few k.
pub fn batch_candidates(n: usize, k: usize) -> usize {
    (4 * k).min(n)
}

/// BatchTopK from each row's top [`batch_candidates`] latents (`cand`): the entries at or above
/// the batch's `k * rows`-th largest.
pub fn batch_top_k_of(cand: &Codes, k: usize) -> Codes {
    let rows = cand.rows();
    let keep = (k * rows).min(cand.nnz());
    if keep == 0 {
        return Codes::from_rows(vec![Vec::new(); rows]);
    }
    let mut all = cand.val.clone();
    let (_, &mut threshold, _) =
        all.select_nth_unstable_by(keep - 1, |a, b| b.partial_cmp(a).unwrap());
    Codes::from_rows(
        (0..rows)
            .map(|r| {
                cand.row(r)
                    .filter(|&(_, v)| v >= threshold)
                    .map(|(j, v)| (j as u32, v))
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_row_picks_the_largest_positive_values_in_order() {
        let row = [0.5, -1.0, 3.0, 2.0, 0.0, 2.5, 1.0];
        assert_eq!(top_k_row(&row, 3, None), vec![(2, 3.0), (5, 2.5), (3, 2.0)]);
        // Fewer positive values than k: only the positive ones.
        assert_eq!(top_k_row(&[-1.0, 0.25, 0.0], 3, None), vec![(1, 0.25)]);
        let allowed = [true, true, false, true, true, false, true];
        assert_eq!(top_k_row(&row, 2, Some(&allowed)), vec![(3, 2.0), (6, 1.0)]);
        // Ties go to the earlier latent, across blocks, cuts of the candidate buffer and the tail.
        let mut flat = vec![1.0f32; 300];
        flat[250] = 2.0;
        let want: Vec<(u32, f32)> = [(250, 2.0)]
            .into_iter()
            .chain((0..4).map(|i| (i, 1.0)))
            .collect();
        assert_eq!(top_k_row(&flat, 5, None), want);
        assert_eq!(top_k_row(&flat, 5, Some(&[true; 300])), want);
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let n = 300;
        let pre: Vec<f32> = (0..4 * n)
            .map(|i| ((i * 7919) % 1009) as f32 - 500.0)
            .collect();
        let codes = top_k(&pre, n, 16, None);
        for r in 0..4 {
            let mut sorted: Vec<(usize, f32)> = pre[r * n..(r + 1) * n]
                .iter()
                .copied()
                .enumerate()
                .collect();
            sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            let got: Vec<(usize, f32)> = codes.row(r).collect();
            assert_eq!(got, sorted[..16].to_vec());
        }
        // The first k of a wider top-k are the top k.
        assert_eq!(top_k(&pre, n, 64, None).first(16), codes);
    }

    #[test]
    fn batch_top_k_keeps_k_per_row_on_average() {
        // Row 0 has all the large values: it takes more than k, row 1 fewer.
        let pre = [9.0, 8.0, 7.0, 6.0, 1.0, 0.5, 0.2, 0.1];
        let codes = batch_top_k(&pre, 4, 2);
        assert_eq!(codes.nnz(), 4);
        assert_eq!(codes.row(0).count(), 4);
        assert_eq!(codes.row(1).count(), 0);
    }
}
