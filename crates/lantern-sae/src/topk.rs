//! Top-k selection: per row (TopK SAEs, AuxK) and over a whole batch (BatchTopK).

use rayon::prelude::*;

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
        let span = self.offsets[r]..self.offsets[r + 1];
        self.idx[span.clone()]
            .iter()
            .zip(&self.val[span])
            .map(|(&i, &v)| (i as usize, v))
    }

    /// Total number of non-zero codes.
    pub fn nnz(&self) -> usize {
        self.idx.len()
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
/// keeping only positive values (the ReLU before TopK).
pub fn top_k_row(row: &[f32], k: usize, allowed: Option<&[bool]>) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    // `best` is kept sorted descending; `floor` is the value to beat once it is full.
    let mut floor = 0.0f32;
    let mut offer = |i: usize, v: f32, floor: &mut f32| {
        let at = best.partition_point(|&(_, b)| b >= v);
        best.insert(at, (i as u32, v));
        if best.len() > k {
            best.pop();
        }
        if best.len() == k {
            *floor = best[k - 1].1;
        }
    };
    match allowed {
        Some(a) => {
            for (i, &v) in row.iter().enumerate() {
                if v > floor && a[i] {
                    offer(i, v, &mut floor);
                }
            }
        }
        None => {
            // Most blocks of 16 hold nothing above the floor: one vectorised max skips them.
            const B: usize = 16;
            for (c, chunk) in row.chunks(B).enumerate() {
                if chunk.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) <= floor {
                    continue;
                }
                for (j, &v) in chunk.iter().enumerate() {
                    if v > floor {
                        offer(c * B + j, v, &mut floor);
                    }
                }
            }
        }
    }
    best
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
