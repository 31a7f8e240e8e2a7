//! A fast hasher and the shared cache of tokenized words.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;

/// A small, fast hasher for integer and short byte keys (FxHash steps, murmur3 finaliser).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    /// Mixes all bits down (murmur3's finaliser): the multiply-rotate steps alone leave the
    /// low bits, which pick hash buckets, depending only on the first bytes of a word.
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Number of independently locked parts of the word cache.
const SHARDS: usize = 32;
/// Words cached per shard before the shard stops growing.
const SHARD_CAPACITY: usize = 8192;
/// Longer words are not cached.
pub(crate) const MAX_WORD: usize = 64;

/// One locked part of the cache: word bytes to token ids.
type Shard = Mutex<FxMap<Box<[u8]>, Box<[u32]>>>;

/// Token ids of words already tokenized, shared between threads (sharded locks).
pub(crate) struct WordCache {
    shards: Vec<Shard>,
}

impl Default for WordCache {
    fn default() -> Self {
        WordCache {
            shards: (0..SHARDS).map(|_| Mutex::new(FxMap::default())).collect(),
        }
    }
}

impl WordCache {
    fn shard(&self, word: &[u8]) -> &Shard {
        let mut h = FxHasher::default();
        word.hash(&mut h);
        // Bits 32.. pick the shard: hashbrown indexes buckets with the low bits and tags with
        // the top 7, so these leave both intact within a shard.
        &self.shards[(h.finish() >> 32) as usize % SHARDS]
    }

    /// Appends the cached ids of `word` to `out`; false if it is not cached.
    pub(crate) fn get_into(&self, word: &[u8], out: &mut Vec<u32>) -> bool {
        if let Ok(map) = self.shard(word).lock() {
            if let Some(ids) = map.get(word) {
                out.extend_from_slice(ids);
                return true;
            }
        }
        false
    }

    /// Remembers the ids of `word` (while its shard has room).
    pub(crate) fn insert(&self, word: &[u8], ids: &[u32]) {
        if let Ok(mut map) = self.shard(word).lock() {
            if map.len() < SHARD_CAPACITY {
                map.insert(word.into(), ids.into());
            }
        }
    }
}
