//! Streaming, parallel n-gram counting.

use rayon::prelude::*;

use super::table::{Table, Vocab, BOS_ID, EOS_ID};
use super::{check_order, sentences, NgramError};

/// Raw counts of the n-grams of one length.
#[derive(Debug, Clone)]
pub(crate) struct CountTable {
    pub(crate) table: Table,
    pub(crate) counts: Vec<u64>,
}

impl CountTable {
    /// An empty table of `n`-grams.
    fn new(n: usize) -> Self {
        CountTable {
            table: Table::new(n),
            counts: Vec::new(),
        }
    }

    /// Adds `c` to the count of `ids`, whose key is `k`.
    fn add_keyed(&mut self, k: u64, ids: &[u32], c: u64) {
        let (i, new) = self.table.insert_keyed(k, ids);
        if new {
            self.counts.push(c);
        } else {
            self.counts[i] += c;
        }
    }

    /// Adds every count of `other` (same length, same vocabulary) to this table.
    fn merge(&mut self, other: &CountTable) {
        for (k, i) in other.table.keyed() {
            self.add_keyed(k, other.table.ngram(i), other.counts[i]);
        }
    }
}

/// The raw counts of every n-gram of length `1..=order` in a corpus, built streaming.
///
/// Each sentence is `<s> w1 … wm </s>`; every n-gram that ends on `w1 … wm </s>` is counted, so
/// `<s>` is only ever the first word of an n-gram (KenLM pads with a single `<s>`). Memory is
/// about 40 bytes per distinct n-gram.
#[derive(Debug, Clone)]
pub struct NgramCounts {
    order: usize,
    pub(crate) vocab: Vocab,
    pub(crate) tables: Vec<CountTable>,
    sentences: u64,
    tokens: u64,
}

impl NgramCounts {
    /// Empty counts for n-grams up to length `order` (1..=[`super::MAX_ORDER`]).
    pub fn new(order: usize) -> Result<Self, NgramError> {
        check_order(order)?;
        Ok(NgramCounts {
            order,
            vocab: Vocab::new(),
            tables: new_tables(order),
            sentences: 0,
            tokens: 0,
        })
    }

    /// The longest n-gram length counted.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Counts one document: each of its non-blank lines is a sentence (see [`sentences`]).
    pub fn add_document(&mut self, text: &str) {
        self.add_documents(&[text]);
    }

    /// Counts a batch of documents: tokenized and counted in parallel (rayon), then merged into
    /// these counts. Call it repeatedly to stream a corpus larger than memory allows to hold.
    pub fn add_documents<S: AsRef<str> + Sync>(&mut self, docs: &[S]) {
        let sents: Vec<Vec<&str>> = docs
            .par_iter()
            .flat_map_iter(|d| sentences(d.as_ref()))
            .collect();
        let (flat, bounds) = self.encode(&sents);
        drop(sents);
        let order = self.order;
        let local = bounds
            .par_windows(2)
            .fold(
                || new_tables(order),
                |mut t, w| {
                    count_sentence(&mut t, &flat[w[0]..w[1]]);
                    t
                },
            )
            .reduce(|| new_tables(order), merge_tables);
        self.tables = merge_tables(std::mem::take(&mut self.tables), local);
    }

    /// Counts one sentence given as words (`<s>`/`</s>` are added here).
    pub fn add_sentence(&mut self, words: &[&str]) {
        let (flat, _) = self.encode(&[words.to_vec()]);
        count_sentence(&mut self.tables, &flat);
    }

    /// Turns sentences into one id sequence (`<s> … </s>` each) and the sentence boundaries,
    /// growing the vocabulary.
    fn encode(&mut self, sents: &[Vec<&str>]) -> (Vec<u32>, Vec<usize>) {
        let mut flat = Vec::with_capacity(sents.iter().map(|s| s.len() + 2).sum());
        let mut bounds = Vec::with_capacity(sents.len() + 1);
        bounds.push(0);
        for s in sents {
            flat.push(BOS_ID);
            flat.extend(s.iter().map(|w| self.vocab.intern(w)));
            flat.push(EOS_ID);
            bounds.push(flat.len());
            self.sentences += 1;
            self.tokens += s.len() as u64 + 1;
        }
        (flat, bounds)
    }

    /// The number of words in the vocabulary, `<unk>`, `<s>` and `</s>` included.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The number of distinct n-grams of length `n` (0 when `n` is not in `1..=order`).
    pub fn num_ngrams(&self, n: usize) -> usize {
        n.checked_sub(1)
            .and_then(|i| self.tables.get(i))
            .map_or(0, |t| t.table.len())
    }

    /// The raw count of the n-gram `words` (0 if unseen or longer than the order).
    pub fn count(&self, words: &[&str]) -> u64 {
        let Some(t) = words.len().checked_sub(1).and_then(|i| self.tables.get(i)) else {
            return 0;
        };
        let ids: Option<Vec<u32>> = words.iter().map(|w| self.vocab.get(w)).collect();
        ids.and_then(|ids| t.table.find(&ids))
            .map_or(0, |i| t.counts[i])
    }

    /// The number of sentences counted.
    pub fn sentences(&self) -> u64 {
        self.sentences
    }

    /// The number of predicted tokens counted: words plus one `</s>` per sentence.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Approximate heap bytes used by the counts.
    pub fn heap_bytes(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.table.heap_bytes() + t.counts.capacity() * 8)
            .sum()
    }
}

/// Empty tables for lengths `1..=order`.
fn new_tables(order: usize) -> Vec<CountTable> {
    (1..=order).map(CountTable::new).collect()
}

/// Counts every n-gram of `sent` (`<s> … </s>` ids) that ends after `<s>`.
fn count_sentence(tables: &mut [CountTable], sent: &[u32]) {
    for end in 1..sent.len() {
        for n in 1..=tables.len().min(end + 1) {
            let ids = &sent[end + 1 - n..=end];
            tables[n - 1].add_keyed(super::table::key(ids), ids, 1);
        }
    }
}

/// Merges two sets of tables (same vocabulary), folding the smaller into the larger.
fn merge_tables(a: Vec<CountTable>, b: Vec<CountTable>) -> Vec<CountTable> {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| {
            let (mut big, small) = if x.table.len() >= y.table.len() {
                (x, y)
            } else {
                (y, x)
            };
            big.merge(&small);
            big
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ngrams_with_markers() {
        let mut c = NgramCounts::new(3).unwrap();
        c.add_documents(&["a b a b", "", "a b\n"]);
        assert_eq!(c.sentences(), 2);
        assert_eq!(c.tokens(), 4 + 1 + 2 + 1);
        assert_eq!(c.count(&["a"]), 3);
        assert_eq!(c.count(&["<s>"]), 0);
        assert_eq!(c.count(&["a", "b"]), 3);
        assert_eq!(c.count(&["<s>", "a"]), 2);
        assert_eq!(c.count(&["<s>", "a", "b"]), 2);
        assert_eq!(c.count(&["b", "</s>"]), 2);
        assert_eq!(c.count(&["a", "b", "a", "b"]), 0);
        assert_eq!(c.num_ngrams(2), 4);
    }

    #[test]
    fn parallel_batches_equal_sequential() {
        let docs: Vec<String> = (0..200)
            .map(|i| format!("w{} x w{}\nx w{}", i % 7, i % 3, i % 5))
            .collect();
        let mut par = NgramCounts::new(3).unwrap();
        par.add_documents(&docs[..120]);
        par.add_documents(&docs[120..]);
        let mut seq = NgramCounts::new(3).unwrap();
        for d in &docs {
            seq.add_document(d);
        }
        for n in 1..=3 {
            assert_eq!(par.num_ngrams(n), seq.num_ngrams(n));
        }
        assert_eq!(par.count(&["x", "w2"]), seq.count(&["x", "w2"]));
        assert_eq!(
            par.count(&["<s>", "w1", "x"]),
            seq.count(&["<s>", "w1", "x"])
        );
    }
}
