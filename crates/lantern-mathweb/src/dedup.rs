//! Exact and near-duplicate removal that runs in memory or as sharded stages across machines.
//!
//! Both kinds of duplicate become *bucket records* `(band, key, doc)`:
//!
//! - exact: band [`EXACT_BAND`], key = xxh3-128 of the [`normalize`]d text;
//! - near: band `0..bands`, key = xxh3-128 of that band of the MinHash signature
//!   ([`Lsh::band_hashes`]).
//!
//! Documents sharing a bucket are joined by edges (each to the first document of the bucket),
//! union-find turns the edges into clusters, and each cluster keeps only its smallest doc id —
//! so "keep the first document of each content hash" and "one document per near-duplicate
//! cluster" are the same rule, and the result does not depend on thread or shard scheduling.
//!
//! [`dedup_in_memory`] runs it on one machine. The sharded stages split it for array jobs
//! (Slurm / Kubernetes), each addressed by its index, idempotent, writing only its own files
//! (atomically: temporary file + rename):
//!
//! 1. [`stage_signatures`] (per input shard `I` of `N`): `sig-<I>-<P>.bin` for every partition
//!    `P` of `M`, records partitioned by key;
//! 2. [`stage_buckets`] (per partition `P`): reads `sig-*-<P>.bin`, writes `edges-<P>.bin`;
//! 3. [`stage_cluster`] (once): reads every `edges-*.bin`, writes `remove.bin`;
//! 4. [`stage_filter`] (per input shard): keep/drop flags from `remove.bin`.
//!
//! File formats (all little-endian): an 8-byte magic, `u64` header fields, then fixed-size
//! records; a file whose length disagrees with its header is reported as truncated.
//! - `sig`: magic `LMWSIG01`, `u64` count, records `u32` band, `u128` key, `u64` doc (28 bytes);
//! - `edges`: magic `LMWEDG01`, `u64` count, records `u64` a, `u64` b (16 bytes);
//! - `remove`: magic `LMWREM01`, `u64` clusters, `u64` count, sorted `u64` doc ids.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::minhash::{content_hash, MinHashParams, MinHasher};

/// The band number of exact-duplicate records (key = normalised content hash).
pub const EXACT_BAND: u32 = u32::MAX;

const SIG_MAGIC: [u8; 8] = *b"LMWSIG01";
const EDGES_MAGIC: [u8; 8] = *b"LMWEDG01";
const REMOVE_MAGIC: [u8; 8] = *b"LMWREM01";
const SIG_RECORD: usize = 28;
const EDGE_RECORD: usize = 16;

/// What can go wrong in the sharded stages; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Reading, writing or renaming a file failed (a missing input file lands here too).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the expected magic: not a file of this stage/version.
    #[error("{}: wrong magic {found:?}, expected {expected:?} (not a {what} file)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Which kind of file was expected.
        what: &'static str,
        /// The magic expected.
        expected: String,
        /// The first bytes found (lossy UTF-8).
        found: String,
    },
    /// The file is shorter or longer than its header says.
    #[error(
        "{}: truncated or corrupt {what} file: header says {records} records ({expected} bytes) \
         but the file has {actual} bytes",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Which kind of file.
        what: &'static str,
        /// Records announced by the header.
        records: u64,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// A stage was called with an index outside its layout, or a degenerate layout.
    #[error("invalid stage arguments: {0}")]
    Invalid(String),
}

/// A document id: (shard, index in shard) packed as `shard << 32 | index`, so ids order by
/// shard first — "the smallest id" of a cluster is the first document in input order.
pub type DocId = u64;

/// Packs (shard, index) into a [`DocId`].
pub fn doc_id(shard: u32, index: u32) -> DocId {
    (u64::from(shard) << 32) | u64::from(index)
}

/// Unpacks a [`DocId`] into (shard, index).
pub fn split_doc_id(id: DocId) -> (u32, u32) {
    ((id >> 32) as u32, id as u32)
}

/// What decides which documents are duplicates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DedupParams {
    /// Shingling, signature and banding.
    pub minhash: MinHashParams,
    /// Also add exact-duplicate records (normalised content hash); exact copies are found by the
    /// bands anyway, but this catches them with certainty and at no measurable cost.
    pub exact: bool,
}

impl Default for DedupParams {
    /// Default MinHash parameters (5-grams, 14 x 8) with exact dedup on.
    fn default() -> Self {
        Self {
            minhash: MinHashParams::default(),
            exact: true,
        }
    }
}

/// One document's membership of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketRecord {
    /// LSH band, or [`EXACT_BAND`].
    pub band: u32,
    /// The band's 128-bit hash (or the content hash).
    pub key: u128,
    /// The document.
    pub doc: DocId,
}

impl BucketRecord {
    /// Which of `partitions` partitions this record goes to (by the key's high 64 bits).
    pub fn partition(&self, partitions: u32) -> u32 {
        ((self.key >> 64) as u64 % u64::from(partitions.max(1))) as u32
    }
}

/// Bucket records of `docs`, in parallel; doc `i` gets id `first_id + i`.
fn records_with_ids<S: AsRef<str> + Sync>(
    docs: &[S],
    first_id: DocId,
    params: &DedupParams,
) -> Vec<BucketRecord> {
    let hasher = MinHasher::from_params(&params.minhash);
    let lsh = params.minhash.lsh;
    docs.par_iter()
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(scratch, shingles), (i, text)| {
                let doc = first_id + i as u64;
                let sig = hasher.signature_with(text.as_ref(), scratch, shingles);
                let mut recs: Vec<BucketRecord> = lsh
                    .band_hashes(&sig)
                    .into_iter()
                    .enumerate()
                    .map(|(band, key)| BucketRecord {
                        band: band as u32,
                        key,
                        doc,
                    })
                    .collect();
                if params.exact {
                    recs.push(BucketRecord {
                        band: EXACT_BAND,
                        key: content_hash(text.as_ref()),
                        doc,
                    });
                }
                recs
            },
        )
        .flatten()
        .collect()
}

/// Bucket records of input shard `shard` (documents in order: ids `doc_id(shard, i)`).
pub fn bucket_records<S: AsRef<str> + Sync>(
    shard: u32,
    docs: &[S],
    params: &DedupParams,
) -> Vec<BucketRecord> {
    records_with_ids(docs, doc_id(shard, 0), params)
}

/// The duplicate edges of a set of bucket records: sorts them by (band, key, doc), then links
/// every document of a bucket to the bucket's first (smallest) document. Returns the edges
/// sorted and without repeats (a pair sharing several bands is one edge).
pub fn bucket_edges(records: &mut [BucketRecord]) -> Vec<(DocId, DocId)> {
    records.par_sort_unstable();
    let mut edges = Vec::new();
    for bucket in records.chunk_by(|a, b| a.band == b.band && a.key == b.key) {
        let first = bucket[0].doc;
        edges.extend(
            bucket[1..]
                .iter()
                .filter(|r| r.doc != first)
                .map(|r| (first, r.doc)),
        );
    }
    edges.par_sort_unstable();
    edges.dedup();
    edges
}

/// Union-find over dense indices with path halving and union by size.
#[derive(Clone, Debug)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    /// `n` singletons.
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    /// The representative of `x`'s set (compressing the path on the way).
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Merges the sets of `a` and `b` (the smaller under the larger); false if already one.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        true
    }
}

/// The outcome of clustering: which documents go, and how many duplicate clusters there were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clusters {
    /// Doc ids to remove (every cluster member but the smallest id), sorted.
    pub remove: Vec<DocId>,
    /// Number of clusters with at least two documents.
    pub clusters: u64,
}

/// Clusters duplicate edges with union-find and keeps the smallest doc id of each cluster.
pub fn cluster(edges: &[(DocId, DocId)]) -> Clusters {
    let mut ids: Vec<DocId> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
    ids.par_sort_unstable();
    ids.dedup();
    let index = |id: DocId| ids.binary_search(&id).unwrap_or(0) as u32;
    let mut uf = UnionFind::new(ids.len());
    for &(a, b) in edges {
        uf.union(index(a), index(b));
    }
    // `ids` is sorted, so the smallest dense index of a set is its smallest doc id.
    let mut smallest = vec![u32::MAX; ids.len()];
    for i in 0..ids.len() as u32 {
        let r = uf.find(i) as usize;
        smallest[r] = smallest[r].min(i);
    }
    let mut remove = Vec::new();
    let mut clusters = 0;
    for i in 0..ids.len() as u32 {
        let r = uf.find(i) as usize;
        if smallest[r] == i {
            clusters += 1;
        } else {
            remove.push(ids[i as usize]);
        }
    }
    Clusters { remove, clusters }
}

/// Keep flags for exact duplicates only: the first document of each normalised content hash.
pub fn exact_dedup<S: AsRef<str> + Sync>(docs: &[S]) -> Vec<bool> {
    let hashes: Vec<u128> = docs.par_iter().map(|d| content_hash(d.as_ref())).collect();
    let mut seen = std::collections::HashSet::with_capacity(hashes.len());
    hashes.into_iter().map(|h| seen.insert(h)).collect()
}

/// Exact + near-duplicate removal of `docs` on one machine: `true` = keep.
///
/// The same records, bucket join and union-find as the sharded stages (doc `i` has id `i`),
/// so it removes exactly what the stages would for the same documents in the same order.
pub fn dedup_in_memory(docs: &[&str], params: &DedupParams) -> Vec<bool> {
    let mut records = records_with_ids(docs, 0, params);
    let edges = bucket_edges(&mut records);
    let removed = cluster(&edges).remove;
    let mut keep = vec![true; docs.len()];
    for id in removed {
        if let Some(k) = keep.get_mut(id as usize) {
            *k = false;
        }
    }
    keep
}

/// How the sharded stages split the work: `shards` input shards, `partitions` bucket partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of input shards `N` (stage 1 and 4 array size).
    pub shards: u32,
    /// Number of bucket partitions `M` (stage 2 array size).
    pub partitions: u32,
}

impl Layout {
    /// Errors unless both counts are positive.
    fn check(&self) -> Result<(), DedupError> {
        if self.shards == 0 || self.partitions == 0 {
            return Err(DedupError::Invalid(format!(
                "need at least one shard and one partition, got {self:?}"
            )));
        }
        Ok(())
    }

    /// Errors unless `i < n`.
    fn check_index(what: &str, i: u32, n: u32) -> Result<(), DedupError> {
        if i >= n {
            return Err(DedupError::Invalid(format!(
                "{what} {i} out of range 0..{n}"
            )));
        }
        Ok(())
    }
}

/// Path of stage 1's output for input shard `shard`, partition `partition`.
pub fn signature_path(dir: &Path, shard: u32, partition: u32) -> PathBuf {
    dir.join(format!("sig-{shard}-{partition}.bin"))
}

/// Path of stage 2's output for partition `partition`.
pub fn edges_path(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("edges-{partition}.bin"))
}

/// Path of stage 3's output.
pub fn remove_path(dir: &Path) -> PathBuf {
    dir.join("remove.bin")
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DedupError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DedupError::Io { path: p, source }
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
}

/// Reads `path` and checks its magic and length: `header` u64 fields after the magic, the last
/// of which is the record count, then that many `record`-byte records. Returns the header fields
/// and the record bytes.
fn read_table(
    path: &Path,
    what: &'static str,
    magic: [u8; 8],
    header: usize,
    record: usize,
) -> Result<(Vec<u64>, Vec<u8>), DedupError> {
    let mut bytes = fs::read(path).map_err(|source| DedupError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let head = 8 + 8 * header;
    let truncated = |records: u64, expected: u64| DedupError::Truncated {
        path: path.to_path_buf(),
        what,
        records,
        expected,
        actual: bytes.len() as u64,
    };
    if bytes.len() >= 8 && bytes[..8] != magic {
        return Err(DedupError::BadMagic {
            path: path.to_path_buf(),
            what,
            expected: String::from_utf8_lossy(&magic).into_owned(),
            found: String::from_utf8_lossy(&bytes[..8]).into_owned(),
        });
    }
    if bytes.len() < head {
        return Err(truncated(0, head as u64));
    }
    let fields: Vec<u64> = bytes[8..head].chunks_exact(8).map(le_u64).collect();
    let count = fields.last().copied().unwrap_or(0);
    let expected = count
        .checked_mul(record as u64)
        .and_then(|b| b.checked_add(head as u64));
    if expected != Some(bytes.len() as u64) {
        return Err(truncated(count, expected.unwrap_or(u64::MAX)));
    }
    bytes.drain(..head);
    Ok((fields, bytes))
}

/// Little-endian `u64` from an 8-byte slice (callers pass exact chunks).
fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Encodes bucket records as a `sig` file.
fn encode_records(records: &[BucketRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * SIG_RECORD);
    out.extend_from_slice(&SIG_MAGIC);
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.band.to_le_bytes());
        out.extend_from_slice(&r.key.to_le_bytes());
        out.extend_from_slice(&r.doc.to_le_bytes());
    }
    out
}

/// Reads a `sig` file's records.
fn read_records(path: &Path) -> Result<Vec<BucketRecord>, DedupError> {
    let (_, body) = read_table(path, "signature partition", SIG_MAGIC, 1, SIG_RECORD)?;
    Ok(body
        .chunks_exact(SIG_RECORD)
        .map(|c| {
            let mut band = [0u8; 4];
            band.copy_from_slice(&c[..4]);
            let mut key = [0u8; 16];
            key.copy_from_slice(&c[4..20]);
            BucketRecord {
                band: u32::from_le_bytes(band),
                key: u128::from_le_bytes(key),
                doc: le_u64(&c[20..28]),
            }
        })
        .collect())
}

/// Encodes edges as an `edges` file.
fn encode_edges(edges: &[(DocId, DocId)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + edges.len() * EDGE_RECORD);
    out.extend_from_slice(&EDGES_MAGIC);
    out.extend_from_slice(&(edges.len() as u64).to_le_bytes());
    for (a, b) in edges {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
    out
}

/// Reads an `edges` file.
fn read_edges(path: &Path) -> Result<Vec<(DocId, DocId)>, DedupError> {
    let (_, body) = read_table(path, "edges", EDGES_MAGIC, 1, EDGE_RECORD)?;
    Ok(body
        .chunks_exact(EDGE_RECORD)
        .map(|c| (le_u64(&c[..8]), le_u64(&c[8..])))
        .collect())
}

/// Stage 1 for input shard `shard`: computes the bucket records of `docs` (ids
/// `doc_id(shard, i)`) and writes one `sig-<shard>-<P>.bin` per partition `P` (empty ones too,
/// so stage 2 can tell "no records" from "not run yet"). Returns the number of records written.
pub fn stage_signatures<S: AsRef<str> + Sync>(
    dir: &Path,
    layout: Layout,
    shard: u32,
    docs: &[S],
    params: &DedupParams,
) -> Result<u64, DedupError> {
    layout.check()?;
    Layout::check_index("shard", shard, layout.shards)?;
    if u32::try_from(docs.len()).is_err() {
        return Err(DedupError::Invalid(format!(
            "shard {shard} has {} documents, more than 2^32",
            docs.len()
        )));
    }
    let records = bucket_records(shard, docs, params);
    let mut parts: Vec<Vec<BucketRecord>> = vec![Vec::new(); layout.partitions as usize];
    for r in &records {
        parts[r.partition(layout.partitions) as usize].push(*r);
    }
    for (p, part) in parts.iter().enumerate() {
        write_atomic(&signature_path(dir, shard, p as u32), &encode_records(part))?;
    }
    Ok(records.len() as u64)
}

/// Stage 2 for partition `partition`: reads that partition of every input shard, joins the
/// buckets and writes `edges-<partition>.bin`. Returns the number of edges.
pub fn stage_buckets(dir: &Path, layout: Layout, partition: u32) -> Result<u64, DedupError> {
    layout.check()?;
    Layout::check_index("partition", partition, layout.partitions)?;
    let mut records = Vec::new();
    for shard in 0..layout.shards {
        records.extend(read_records(&signature_path(dir, shard, partition))?);
    }
    let edges = bucket_edges(&mut records);
    write_atomic(&edges_path(dir, partition), &encode_edges(&edges))?;
    Ok(edges.len() as u64)
}

/// Stage 3: reads every partition's edges, clusters them and writes `remove.bin`.
pub fn stage_cluster(dir: &Path, layout: Layout) -> Result<Clusters, DedupError> {
    layout.check()?;
    let mut edges = Vec::new();
    for p in 0..layout.partitions {
        edges.extend(read_edges(&edges_path(dir, p))?);
    }
    let clusters = cluster(&edges);
    let mut out = Vec::with_capacity(24 + 8 * clusters.remove.len());
    out.extend_from_slice(&REMOVE_MAGIC);
    out.extend_from_slice(&clusters.clusters.to_le_bytes());
    out.extend_from_slice(&(clusters.remove.len() as u64).to_le_bytes());
    for id in &clusters.remove {
        out.extend_from_slice(&id.to_le_bytes());
    }
    write_atomic(&remove_path(dir), &out)?;
    Ok(clusters)
}

/// The documents to remove, as written by [`stage_cluster`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveSet {
    /// Sorted doc ids to remove.
    pub ids: Vec<DocId>,
    /// Number of duplicate clusters.
    pub clusters: u64,
}

impl RemoveSet {
    /// Reads a `remove.bin` file.
    pub fn load(path: &Path) -> Result<Self, DedupError> {
        let (fields, body) = read_table(path, "remove set", REMOVE_MAGIC, 2, 8)?;
        let mut ids: Vec<DocId> = body.chunks_exact(8).map(le_u64).collect();
        ids.sort_unstable();
        Ok(Self {
            ids,
            clusters: fields.first().copied().unwrap_or(0),
        })
    }

    /// Whether document `id` is kept.
    pub fn keep(&self, id: DocId) -> bool {
        self.ids.binary_search(&id).is_err()
    }

    /// Keep flags of the `n_docs` documents of input shard `shard`.
    pub fn keep_flags(&self, shard: u32, n_docs: u32) -> Vec<bool> {
        (0..n_docs).map(|i| self.keep(doc_id(shard, i))).collect()
    }
}

/// Stage 4 for input shard `shard` of `n_docs` documents: keep flags from `remove.bin`.
pub fn stage_filter(dir: &Path, shard: u32, n_docs: u32) -> Result<Vec<bool>, DedupError> {
    Ok(RemoveSet::load(&remove_path(dir))?.keep_flags(shard, n_docs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(seed: u64, n: usize) -> String {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("w{}", (s >> 33) % 5000)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn doc_ids_pack_and_order() {
        assert_eq!(split_doc_id(doc_id(3, 7)), (3, 7));
        assert!(doc_id(0, u32::MAX) < doc_id(1, 0));
    }

    #[test]
    fn union_find_clusters() {
        let edges = [(5, 9), (9, 2), (20, 21), (2, 5)];
        let c = cluster(&edges);
        assert_eq!(c.clusters, 2);
        assert_eq!(c.remove, vec![5, 9, 21]);
        assert_eq!(cluster(&[]), Clusters::default());
    }

    #[test]
    fn exact_and_near_duplicates() {
        let a = words(1, 300);
        let b = words(2, 300);
        let a_case = a.to_uppercase().replace(' ', "  \n");
        let mut a_near: Vec<&str> = a.split(' ').collect();
        a_near[150] = "changed";
        let a_near = a_near.join(" ");
        let docs = [a.as_str(), b.as_str(), a_case.as_str(), a_near.as_str(), ""];
        assert_eq!(exact_dedup(&docs), vec![true, true, false, true, true]);
        let keep = dedup_in_memory(&docs, &DedupParams::default());
        assert_eq!(keep, vec![true, true, false, false, true]);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        fs::write(&p, b"LMWSIG01\x02\0\0\0\0\0\0\0short").unwrap();
        let e = read_records(&p).unwrap_err();
        assert!(matches!(e, DedupError::Truncated { records: 2, .. }), "{e}");
        fs::write(&p, b"NOTMAGIC\0\0\0\0\0\0\0\0").unwrap();
        assert!(matches!(read_records(&p), Err(DedupError::BadMagic { .. })));
        fs::write(&p, b"LMW").unwrap();
        assert!(matches!(read_edges(&p), Err(DedupError::Truncated { .. })));
        fs::write(&p, b"LMWEDG01\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert!(matches!(read_edges(&p), Err(DedupError::Truncated { .. })));
        let missing = read_edges(&dir.path().join("nope.bin")).unwrap_err();
        assert!(missing.to_string().contains("nope.bin"));
        let bad = Layout {
            shards: 0,
            partitions: 1,
        };
        assert!(stage_cluster(dir.path(), bad).is_err());
    }
}
