//! Interpolated modified Kneser-Ney estimation, as KenLM's `lmplz` does it.

use rayon::prelude::*;

use super::counts::{CountTable, NgramCounts};
use super::model::{Level, Model};
use super::table::{key, KeyMap, BOS_ID, UNK_ID};
use super::{check_order, NgramError};

/// The three discounts of one order: `D1` for n-grams seen once, `D2` twice, `D3+` more often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Discount {
    /// `[D1, D2, D3+]`.
    pub d: [f64; 3],
    /// Whether the count-of-counts could not give valid discounts and the fallback was used.
    pub fallback: bool,
}

impl Discount {
    /// Chen & Goodman's estimate from the count-of-counts `n = [n1, n2, n3, n4]` (numbers of
    /// n-grams whose adjusted count is 1, 2, 3, 4): `Y = n1 / (n1 + 2 n2)` and
    /// `D_k = k - (k+1) Y n_{k+1} / n_k`. `None` when a division is by zero or a discount falls
    /// outside `[0, k]` (KenLM refuses those too, unless told to fall back).
    pub fn from_count_of_counts(n: [u64; 4]) -> Option<Discount> {
        let n = n.map(|x| x as f64);
        if n[0] == 0.0 || n[1] == 0.0 || n[2] == 0.0 {
            return None;
        }
        let y = n[0] / (n[0] + 2.0 * n[1]);
        let mut d = [0.0; 3];
        for k in 1..=3 {
            let dk = k as f64 - (k + 1) as f64 * y * n[k] / n[k - 1];
            if !(0.0..=k as f64).contains(&dk) {
                return None;
            }
            d[k - 1] = dk;
        }
        Some(Discount { d, fallback: false })
    }

    /// The discount for an n-gram with adjusted count `count` (0 for 0).
    pub fn for_count(&self, count: u64) -> f64 {
        match count {
            0 => 0.0,
            1 => self.d[0],
            2 => self.d[1],
            _ => self.d[2],
        }
    }
}

/// Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998, as in KenLM's `lmplz`).
///
/// For an n-gram `h w` with adjusted count `a` (its raw count at the highest order or when it
/// starts with `<s>`, else the number of distinct words seen before it):
/// `p(w|h) = (a - D(a)) / Σ_v a(h v) + γ(h) p(w|h')` with
/// `γ(h) = (D1 N1(h·) + D2 N2(h·) + D3+ N3+(h·)) / Σ_v a(h v)`, `h'` being `h` without its first
/// word; the unigram level interpolates with `1/|V|`, `|V|` counting every word, `</s>` and
/// `<unk>` but not `<s>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KneserNey {
    /// Discounts used for an order whose count-of-counts give none (KenLM's
    /// `--discount_fallback` default, `0.5 1 1.5`); tiny corpora need them.
    pub fallback: [f64; 3],
}

impl Default for KneserNey {
    fn default() -> Self {
        KneserNey {
            fallback: [0.5, 1.0, 1.5],
        }
    }
}

/// Per-context sums at one order: `Σ_v a(h v)` and `Σ_v D(a(h v))`.
#[derive(Debug, Clone, Copy, Default)]
struct ContextStats {
    total: u64,
    discounted: f64,
}

impl ContextStats {
    /// The backoff weight `γ(h)`; 1 for a context with nothing after it.
    fn gamma(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.discounted / self.total as f64
        }
    }
}

impl KneserNey {
    /// Estimates an order-`order` model from `counts` with the default fallback discounts.
    /// `order` may be below the order counted.
    pub fn estimate(order: usize, counts: &NgramCounts) -> Result<Model, NgramError> {
        KneserNey::default().estimate_with(order, counts)
    }

    /// Estimates an order-`order` model from `counts` with these settings.
    pub fn estimate_with(&self, order: usize, counts: &NgramCounts) -> Result<Model, NgramError> {
        check_order(order)?;
        if order > counts.order() {
            return Err(NgramError::CountsOrder {
                wanted: order,
                counted: counts.order(),
            });
        }
        let tables = &counts.tables[..order];
        let adjusted = adjusted_counts(tables);
        let discounts: Vec<Discount> = adjusted.iter().map(|a| self.discount(a)).collect();
        let stats: Vec<KeyMap<ContextStats>> = (0..order)
            .map(|i| context_stats(&tables[i], &adjusted[i], &discounts[i]))
            .collect();
        let uniform = 1.0 / (counts.vocab.len() - 1) as f64;
        let probs = interpolate(tables, &adjusted, &discounts, &stats, uniform);
        let levels = build_levels(tables, &probs, &stats, uniform);
        Ok(Model::from_parts(
            order,
            counts.vocab.clone(),
            levels,
            discounts,
        ))
    }

    /// The discounts of one order from its adjusted counts, falling back when invalid.
    fn discount(&self, adjusted: &[u64]) -> Discount {
        Discount::from_count_of_counts(count_of_counts(adjusted)).unwrap_or(Discount {
            d: self.fallback,
            fallback: true,
        })
    }
}

/// `[n1, n2, n3, n4]`: how many adjusted counts equal 1, 2, 3, 4.
pub(crate) fn count_of_counts(adjusted: &[u64]) -> [u64; 4] {
    let mut n = [0u64; 4];
    for &a in adjusted {
        if (1..=4).contains(&a) {
            n[a as usize - 1] += 1;
        }
    }
    n
}

/// The adjusted counts of every table: raw at the highest order and for n-grams starting with
/// `<s>`, else continuation counts `N1+(· g)` from the next order.
fn adjusted_counts(tables: &[CountTable]) -> Vec<Vec<u64>> {
    (0..tables.len())
        .map(|i| match tables.get(i + 1) {
            None => tables[i].counts.clone(),
            Some(upper) => continuation_counts(&tables[i], upper),
        })
        .collect()
}

/// Adjusted counts of `lower` given the `(n+1)`-grams `upper`.
fn continuation_counts(lower: &CountTable, upper: &CountTable) -> Vec<u64> {
    let mut a: Vec<u64> = (0..lower.table.len())
        .map(|i| {
            if lower.table.ngram(i)[0] == BOS_ID {
                lower.counts[i]
            } else {
                0
            }
        })
        .collect();
    for i in 0..upper.table.len() {
        let suffix = &upper.table.ngram(i)[1..];
        if suffix[0] != BOS_ID {
            if let Some(j) = lower.table.find(suffix) {
                a[j] += 1;
            }
        }
    }
    a
}

/// Sums per context (all but the last word) of the adjusted counts and their discounts.
fn context_stats(table: &CountTable, adjusted: &[u64], d: &Discount) -> KeyMap<ContextStats> {
    let mut stats: KeyMap<ContextStats> = KeyMap::default();
    for (i, &a) in adjusted.iter().enumerate() {
        let ngram = table.table.ngram(i);
        let s = stats.entry(key(&ngram[..ngram.len() - 1])).or_default();
        s.total += a;
        s.discounted += d.for_count(a);
    }
    stats
}

/// The interpolated probability of every counted n-gram, order by order.
fn interpolate(
    tables: &[CountTable],
    adjusted: &[Vec<u64>],
    discounts: &[Discount],
    stats: &[KeyMap<ContextStats>],
    uniform: f64,
) -> Vec<Vec<f64>> {
    let mut probs: Vec<Vec<f64>> = Vec::with_capacity(tables.len());
    for i in 0..tables.len() {
        let lower = i.checked_sub(1).map(|j| (&tables[j], probs[j].as_slice()));
        let level: Vec<f64> = (0..tables[i].table.len())
            .into_par_iter()
            .map(|k| {
                let ngram = tables[i].table.ngram(k);
                let ctx = stats[i].get(&key(&ngram[..i])).copied().unwrap_or_default();
                let a = adjusted[i][k];
                let own = if ctx.total == 0 {
                    0.0
                } else {
                    (a as f64 - discounts[i].for_count(a)) / ctx.total as f64
                };
                let below = match lower {
                    None => uniform,
                    Some((t, p)) => t.table.find(&ngram[1..]).map_or(0.0, |j| p[j]),
                };
                own + ctx.gamma() * below
            })
            .collect();
        probs.push(level);
    }
    probs
}

/// The backoff-form levels: log10 of each interpolated probability and of each context's
/// `γ`; the unigram level also gets `<unk>` (only the uniform share) and `<s>` (never
/// predicted, log10 prob -99, as in KenLM's ARPA files).
fn build_levels(
    tables: &[CountTable],
    probs: &[Vec<f64>],
    stats: &[KeyMap<ContextStats>],
    uniform: f64,
) -> Vec<Level> {
    let mut levels: Vec<Level> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let backoff = |k: usize| backoff_of(stats.get(i + 1), t.table.ngram(k));
            let prob = probs[i].iter().map(|&p| p.log10() as f32).collect();
            let bo = (0..t.table.len()).map(backoff).collect();
            Level::new(t.table.clone(), prob, bo)
        })
        .collect();
    let gamma0 = stats[0].get(&key(&[])).copied().unwrap_or_default().gamma();
    let unigrams = &mut levels[0];
    unigrams.add(&[UNK_ID], (gamma0 * uniform).log10() as f32, 0.0);
    unigrams.add(&[BOS_ID], -99.0, backoff_of(stats.get(1), &[BOS_ID]));
    levels
}

/// log10 `γ(ngram)` as a context of the next order, 0 when it is none.
fn backoff_of(next: Option<&KeyMap<ContextStats>>, ngram: &[u32]) -> f32 {
    next.and_then(|s| s.get(&key(ngram)))
        .map_or(0.0, |s| s.gamma().log10() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discounts_from_count_of_counts() {
        // Y = 5/9; D1 = 1 - 2·Y·2/5 = 5/9; D2 = 2 - 3·Y·1/2 = 7/6; D3+ = 3 - 4·Y·1/1 = 7/9.
        let d = Discount::from_count_of_counts([5, 2, 1, 1]).unwrap();
        let want = [5.0 / 9.0, 7.0 / 6.0, 7.0 / 9.0];
        for (got, want) in d.d.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert!(Discount::from_count_of_counts([0, 2, 1, 1]).is_none());
        // Y = 1/3, D2 = 2 - 3·Y·10/1 < 0.
        assert!(Discount::from_count_of_counts([1, 1, 10, 1]).is_none());
    }

    #[test]
    fn discounts_on_a_tiny_corpus() {
        // Unigram model (raw counts): a b c d and </s> once, e f twice, g three times, h four.
        let mut c = NgramCounts::new(1).unwrap();
        c.add_document("a b c d e e f f g g g h h h h");
        let m = KneserNey::estimate(1, &c).unwrap();
        let d = m.discounts()[0];
        assert!(!d.fallback);
        let want = [5.0 / 9.0, 7.0 / 6.0, 7.0 / 9.0];
        for (got, want) in d.d.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        // Total 16; γ = (5·D1 + 2·D2 + 2·D3+)/16 = (60/9)/16 = 60/144; |V| = 8 words + </s> +
        // <unk> = 10. p(a) = (1 - 5/9)/16 + 60/1440 = 100/1440; p(h) = (4 - 7/9)/16 + 60/1440
        // = 350/1440; p(<unk>) = 60/1440.
        let close = |w: &str, want: f64| {
            let got = m.log10_prob(&[], w);
            assert!(
                (got - want.log10()).abs() < 1e-6,
                "{w}: {got} vs {}",
                want.log10()
            );
        };
        close("a", 100.0 / 1440.0);
        close("h", 350.0 / 1440.0);
        close("</s>", 100.0 / 1440.0);
        close("zzz", 60.0 / 1440.0);
    }

    #[test]
    fn continuation_counts_on_a_tiny_corpus() {
        // Bigram model. Unigram adjusted counts are distinct left neighbours:
        // a ← {<s>, b} = 2, b ← {a} = 1, </s> ← {b, a} = 2.
        let mut c = NgramCounts::new(2).unwrap();
        c.add_document("a b a b\na");
        let adjusted = adjusted_counts(&c.tables[..2]);
        let get = |w: &str| {
            let id = c.vocab.id(w);
            c.tables[0].table.find(&[id]).map(|i| adjusted[0][i])
        };
        assert_eq!(get("a"), Some(2));
        assert_eq!(get("b"), Some(1));
        assert_eq!(get("</s>"), Some(2));
        assert_eq!(count_of_counts(&adjusted[0]), [1, 2, 0, 0]);
        // Bigrams keep raw counts: <s> a 2, a b 2, b a 1, b </s> 1, a </s> 1.
        assert_eq!(count_of_counts(&adjusted[1]), [3, 2, 0, 0]);
    }
}
