//! The backoff-form model: queries and text scoring.

use super::estimate::Discount;
use super::table::{Table, Vocab, BOS_ID, EOS_ID, UNK_ID};
use super::{sentences, MAX_ORDER};

/// log10 probability given to `<unk>` by a model whose unigrams lack it (as KenLM does).
pub(crate) const MISSING_UNK_LOG10: f32 = -100.0;

/// The n-grams of one length with their log10 probability and log10 backoff weight.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    pub(crate) table: Table,
    pub(crate) prob: Vec<f32>,
    pub(crate) backoff: Vec<f32>,
}

impl Level {
    /// A level from its n-grams and their values (same order).
    pub(crate) fn new(table: Table, prob: Vec<f32>, backoff: Vec<f32>) -> Self {
        Level {
            table,
            prob,
            backoff,
        }
    }

    /// Adds an n-gram; `false` (and nothing changes) if it is already there.
    pub(crate) fn add(&mut self, ids: &[u32], prob: f32, backoff: f32) -> bool {
        let (_, new) = self.table.insert(ids);
        if new {
            self.prob.push(prob);
            self.backoff.push(backoff);
        }
        new
    }

    /// The log10 backoff of `ids`, 0 when absent.
    fn backoff_of(&self, ids: &[u32]) -> f64 {
        self.table
            .find(ids)
            .map_or(0.0, |i| f64::from(self.backoff[i]))
    }
}

/// An n-gram language model in backoff form (what ARPA files hold): the log10 probability of
/// every stored n-gram and the log10 backoff weight of every context.
///
/// `p(w | h) = p(h w)` when `h w` is stored, else `backoff(h) · p(w | h')` where `h'` drops the
/// first word of `h` (a missing backoff is 1), down to the unigrams; a word missing from the
/// unigrams is `<unk>`. Built by [`super::KneserNey::estimate`], read by [`Model::load_arpa`] or
/// [`Model::load`].
#[derive(Debug, Clone)]
pub struct Model {
    order: usize,
    pub(crate) vocab: Vocab,
    pub(crate) levels: Vec<Level>,
    discounts: Vec<Discount>,
    unk: f32,
}

impl Model {
    /// Assembles a model; `levels[i]` holds the `(i+1)`-grams.
    pub(crate) fn from_parts(
        order: usize,
        vocab: Vocab,
        levels: Vec<Level>,
        discounts: Vec<Discount>,
    ) -> Self {
        let unk = levels
            .first()
            .and_then(|l| l.table.find(&[UNK_ID]).map(|i| l.prob[i]))
            .unwrap_or(MISSING_UNK_LOG10);
        Model {
            order,
            vocab,
            levels,
            discounts,
            unk,
        }
    }

    /// The order: the longest n-gram length.
    pub fn order(&self) -> usize {
        self.order
    }

    /// The number of words in the vocabulary, `<unk>`, `<s>` and `</s>` included.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary, in id order (`<unk>`, `<s>`, `</s>` first).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.vocab.words().iter().map(String::as_str)
    }

    /// The number of stored n-grams of length `n`.
    pub fn num_ngrams(&self, n: usize) -> usize {
        n.checked_sub(1)
            .and_then(|i| self.levels.get(i))
            .map_or(0, |l| l.table.len())
    }

    /// The discounts per order used to estimate the model (empty for a model read from ARPA).
    pub fn discounts(&self) -> &[Discount] {
        &self.discounts
    }

    /// log10 `p(word | context)`, `context` oldest word first (only its last `order - 1` words
    /// matter; pass `"<s>"` first for the start of a sentence). Unknown words are `<unk>`.
    pub fn log10_prob(&self, context: &[&str], word: &str) -> f64 {
        let keep = context.len().saturating_sub(self.order - 1);
        let ids: Vec<u32> = context[keep..].iter().map(|w| self.vocab.id(w)).collect();
        self.log10_prob_ids(&ids, self.vocab.id(word))
    }

    /// [`Model::log10_prob`] on ids: the ARPA backoff rule.
    pub(crate) fn log10_prob_ids(&self, context: &[u32], word: u32) -> f64 {
        let context = &context[context.len().saturating_sub(self.order - 1)..];
        let m = context.len();
        let mut buf = [0u32; MAX_ORDER];
        buf[..m].copy_from_slice(context);
        buf[m] = word;
        let mut backoff = 0.0;
        for start in 0..=m {
            let level = &self.levels[m - start];
            if let Some(i) = level.table.find(&buf[start..=m]) {
                return backoff + f64::from(level.prob[i]);
            }
            if start < m {
                backoff += self.levels[m - start - 1].backoff_of(&buf[start..m]);
            }
        }
        backoff + f64::from(self.unk)
    }

    /// The log10 probability of one sentence, `</s>` included (`<s>` is added as context).
    pub fn score_sentence(&self, words: &[&str]) -> f64 {
        let mut ids = Vec::with_capacity(words.len() + 2);
        ids.push(BOS_ID);
        ids.extend(words.iter().map(|w| self.vocab.id(w)));
        ids.push(EOS_ID);
        (1..ids.len())
            .map(|i| self.log10_prob_ids(&ids[..i], ids[i]))
            .sum()
    }

    /// Scores a text: each non-blank line is a sentence (see [`super::sentences`]). Returns the
    /// summed log10 probability and the number of predicted tokens (words, out-of-vocabulary ones
    /// included, plus one `</s>` per sentence), as KenLM counts them.
    pub fn score_text(&self, text: &str) -> (f64, usize) {
        sentences(text).fold((0.0, 0), |(sum, n), s| {
            (sum + self.score_sentence(&s), n + s.len() + 1)
        })
    }

    /// The perplexity of a text, `10^(-sum / n)` from [`Model::score_text`]; NaN for a text with
    /// no tokens (there is nothing to measure).
    pub fn perplexity(&self, text: &str) -> f64 {
        let (sum, n) = self.score_text(text);
        if n == 0 {
            return f64::NAN;
        }
        10f64.powf(-sum / n as f64)
    }

    /// Approximate heap bytes used by the n-gram levels.
    pub fn heap_bytes(&self) -> usize {
        self.levels
            .iter()
            .map(|l| l.table.heap_bytes() + (l.prob.capacity() + l.backoff.capacity()) * 4)
            .sum()
    }
}
