//! A compact binary model format: quicker to load than ARPA text and several times smaller.
//!
//! Layout: the 8-byte magic `LNGRAM\0\x01`, then one zstd frame holding, little-endian:
//! `u32 order`, `u32 vocabulary size`, each word as `u32 length` + UTF-8 bytes (id order),
//! `u32 number of discounts`, each as `3 × f64` + `u8 fallback`, then for each order `n`:
//! `u64 count` and `count` entries of `n × u32 word id`, `f32 log10 prob`, `f32 log10 backoff`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::estimate::Discount;
use super::model::{Level, Model};
use super::table::{Table, Vocab, BOS_ID, EOS_ID, UNK_ID};
use super::{check_order, NgramError, BOS, EOS, UNK};

/// The first bytes of a binary model (the last byte is the format version).
const MAGIC: &[u8; 8] = b"LNGRAM\0\x01";

impl Model {
    /// Saves the model in the binary format (zstd level 3).
    pub fn save(&self, path: &Path) -> Result<(), NgramError> {
        let io = |source| NgramError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = BufWriter::new(File::create(path).map_err(io)?);
        file.write_all(MAGIC).map_err(io)?;
        let mut z = zstd::Encoder::new(file, 3).map_err(io)?;
        self.write_body(&mut z).map_err(io)?;
        z.finish().map_err(io)?.flush().map_err(io)
    }

    /// Writes everything after the magic.
    fn write_body<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&(self.order() as u32).to_le_bytes())?;
        w.write_all(&(self.vocab.len() as u32).to_le_bytes())?;
        for word in self.vocab.words() {
            w.write_all(&(word.len() as u32).to_le_bytes())?;
            w.write_all(word.as_bytes())?;
        }
        w.write_all(&(self.discounts().len() as u32).to_le_bytes())?;
        for d in self.discounts() {
            for x in d.d {
                w.write_all(&x.to_le_bytes())?;
            }
            w.write_all(&[u8::from(d.fallback)])?;
        }
        for level in &self.levels {
            write_level(w, level)?;
        }
        Ok(())
    }

    /// Loads a model saved by [`Model::save`].
    pub fn load(path: &Path) -> Result<Model, NgramError> {
        let bytes = std::fs::read(path).map_err(|source| NgramError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = |msg: String| NgramError::Binary {
            path: path.to_owned(),
            msg,
        };
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("wrong magic bytes".into()))?;
        let body = zstd::decode_all(body).map_err(|e| bad(format!("cannot decompress: {e}")))?;
        parse(&mut Cursor { bytes: &body }).map_err(bad)
    }
}

/// Writes one level's count and entries.
fn write_level<W: Write>(w: &mut W, level: &Level) -> std::io::Result<()> {
    w.write_all(&(level.table.len() as u64).to_le_bytes())?;
    for k in 0..level.table.len() {
        for id in level.table.ngram(k) {
            w.write_all(&id.to_le_bytes())?;
        }
        w.write_all(&level.prob[k].to_le_bytes())?;
        w.write_all(&level.backoff[k].to_le_bytes())?;
    }
    Ok(())
}

/// Reads little-endian values off a byte slice, failing on truncation.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn f32(&mut self) -> Result<f32, String> {
        self.array().map(f32::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, String> {
        self.array().map(f64::from_le_bytes)
    }
}

/// Parses the decompressed body.
fn parse(c: &mut Cursor) -> Result<Model, String> {
    let order = c.u32()? as usize;
    check_order(order).map_err(|e| e.to_string())?;
    let vocab = parse_vocab(c)?;
    let discounts = (0..c.u32()?)
        .map(|_| parse_discount(c))
        .collect::<Result<Vec<_>, _>>()?;
    let levels = (1..=order)
        .map(|n| parse_level(c, n, vocab.len()))
        .collect::<Result<Vec<_>, _>>()?;
    if !c.bytes.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Model::from_parts(order, vocab, levels, discounts))
}

/// The vocabulary: distinct words, the three markers first.
fn parse_vocab(c: &mut Cursor) -> Result<Vocab, String> {
    let len = c.u32()?;
    let mut vocab = Vocab::new();
    for i in 0..len {
        let n = c.u32()? as usize;
        let word = std::str::from_utf8(c.take(n)?).map_err(|_| "a word is not UTF-8".to_owned())?;
        if vocab.intern(word) != i {
            return Err(format!("word {word:?} is duplicated or misplaced"));
        }
    }
    let markers = [(UNK_ID, UNK), (BOS_ID, BOS), (EOS_ID, EOS)];
    if len < 3 || markers.iter().any(|&(id, w)| vocab.word(id) != w) {
        return Err("the vocabulary does not start with <unk> <s> </s>".into());
    }
    Ok(vocab)
}

/// One order's discounts.
fn parse_discount(c: &mut Cursor) -> Result<Discount, String> {
    let d = [c.f64()?, c.f64()?, c.f64()?];
    let fallback = c.array::<1>()?[0] != 0;
    Ok(Discount { d, fallback })
}

/// The `n`-grams of one level, checking ids against the vocabulary size.
fn parse_level(c: &mut Cursor, n: usize, vocab_len: usize) -> Result<Level, String> {
    let count = c.u64()?;
    let entry_bytes = 4 * n as u64 + 8;
    if count.saturating_mul(entry_bytes) > c.bytes.len() as u64 {
        return Err(format!("truncated {n}-gram table"));
    }
    let mut level = Level::new(Table::new(n), Vec::new(), Vec::new());
    let mut ids = vec![0u32; n];
    for _ in 0..count {
        for id in ids.iter_mut() {
            *id = c.u32()?;
            if *id as usize >= vocab_len {
                return Err(format!("word id {id} out of range in the {n}-grams"));
            }
        }
        let (prob, backoff) = (c.f32()?, c.f32()?);
        if !level.add(&ids, prob, backoff) {
            return Err(format!("duplicate {n}-gram"));
        }
    }
    Ok(level)
}
