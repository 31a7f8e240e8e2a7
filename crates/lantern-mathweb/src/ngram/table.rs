//! Shared storage: the vocabulary and hashed n-gram tables.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::xxh3_64;

use super::{BOS, EOS, MAX_ORDER, UNK};

/// Id of `<unk>`.
pub(crate) const UNK_ID: u32 = 0;
/// Id of `<s>`.
pub(crate) const BOS_ID: u32 = 1;
/// Id of `</s>`.
pub(crate) const EOS_ID: u32 = 2;

/// A hasher for keys that already are good hashes: passes a `u64` through.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64(bytes) ^ self.0.rotate_left(5);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A hash map keyed by n-gram keys (see [`key`]).
pub(crate) type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The key of an n-gram: xxh3 of its token ids (little-endian). N-grams of different lengths
/// live in different tables, so the length need not be hashed. Two distinct n-grams of the same
/// length collide with probability about `2^-64` per pair, which is ignored.
pub(crate) fn key(ids: &[u32]) -> u64 {
    let mut buf = [0u8; 4 * MAX_ORDER];
    let n = ids.len().min(MAX_ORDER);
    for (chunk, id) in buf.chunks_exact_mut(4).zip(&ids[..n]) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
    xxh3_64(&buf[..4 * n])
}

/// The vocabulary: word ↔ id, with `<unk>`, `<s>`, `</s>` always at ids 0, 1, 2.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    ids: HashMap<String, u32>,
    words: Vec<String>,
}

impl Vocab {
    /// A vocabulary holding only the three markers.
    pub(crate) fn new() -> Self {
        let mut v = Vocab {
            ids: HashMap::new(),
            words: Vec::new(),
        };
        for w in [UNK, BOS, EOS] {
            v.intern(w);
        }
        v
    }

    /// The id of `word`, [`UNK_ID`] if unknown.
    pub(crate) fn id(&self, word: &str) -> u32 {
        self.get(word).unwrap_or(UNK_ID)
    }

    /// The id of `word` if it is in the vocabulary.
    pub(crate) fn get(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The id of `word`, adding it if new.
    pub(crate) fn intern(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.ids.insert(word.to_owned(), id);
        self.words.push(word.to_owned());
        id
    }

    /// The word with id `id` (`<unk>` for an id out of range).
    pub(crate) fn word(&self, id: u32) -> &str {
        self.words.get(id as usize).map_or(UNK, String::as_str)
    }

    /// All words, in id order.
    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }

    /// The number of words, markers included.
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }
}

/// The distinct n-grams of one length, in insertion order, indexed by key.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    n: usize,
    index: KeyMap<u32>,
    words: Vec<u32>,
}

impl Table {
    /// An empty table of `n`-grams.
    pub(crate) fn new(n: usize) -> Self {
        Table {
            n,
            index: KeyMap::default(),
            words: Vec::new(),
        }
    }

    /// The number of n-grams.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The token ids of n-gram `i`.
    pub(crate) fn ngram(&self, i: usize) -> &[u32] {
        &self.words[i * self.n..(i + 1) * self.n]
    }

    /// The index of the n-gram `ids`, if present.
    pub(crate) fn find(&self, ids: &[u32]) -> Option<usize> {
        self.index.get(&key(ids)).map(|&i| i as usize)
    }

    /// The index of the n-gram `ids` whose key is `k`, inserting it if absent; `true` when new.
    pub(crate) fn insert_keyed(&mut self, k: u64, ids: &[u32]) -> (usize, bool) {
        let next = self.index.len() as u32;
        match self.index.entry(k) {
            Entry::Occupied(e) => (*e.get() as usize, false),
            Entry::Vacant(e) => {
                e.insert(next);
                self.words.extend_from_slice(ids);
                (next as usize, true)
            }
        }
    }

    /// [`Table::insert_keyed`] computing the key.
    pub(crate) fn insert(&mut self, ids: &[u32]) -> (usize, bool) {
        self.insert_keyed(key(ids), ids)
    }

    /// `(key, index)` of every n-gram, in no particular order.
    pub(crate) fn keyed(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.index.iter().map(|(&k, &i)| (k, i as usize))
    }

    /// Approximate heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index.capacity() * 13 + self.words.capacity() * 4
    }
}
