//! A minimal reader for R's serialization format (XDR, versions 2 and 3) and for R's lazy-load
//! databases (`.rdx` index + `.rdb` blobs), enough to turn the janeaustenr data into text.
//!
//! Supported: NULL, symbols, pairlists (attribute lists), character vectors and their CHARSXPs
//! (NA included, Latin-1 converted), integer, logical and double vectors, generic lists,
//! attributes and back-references. Anything else (environments, closures, ALTREP, bytecode,
//! ASCII or native-binary streams, bzip2 blobs) is a clear error.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::{GzDecoder, ZlibDecoder};

use crate::error::{AssetError, IoContext};

/// A decoded R value.
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    /// `NULL` (and the special environments, which carry no data here).
    Null,
    /// A symbol (`SYMSXP`), e.g. an attribute name.
    Symbol(String),
    /// One string (`CHARSXP`); `None` is `NA_character_`.
    Char(Option<String>),
    /// A character vector (`STRSXP`); `None` elements are `NA`.
    Str(Vec<Option<String>>),
    /// An integer vector (`INTSXP`); `NA` is `i32::MIN`.
    Int(Vec<i32>),
    /// A logical vector (`LGLSXP`): 0, 1, or `i32::MIN` for `NA`.
    Lgl(Vec<i32>),
    /// A double vector (`REALSXP`).
    Real(Vec<f64>),
    /// A generic vector (`VECSXP` / `EXPRSXP`).
    List(Vec<RObject>),
    /// A pairlist (`LISTSXP`): optional tag and value per cell.
    Pairlist(Vec<(Option<String>, RObject)>),
}

/// A decoded R object: its value and its attributes (name, value), in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct RObject {
    /// The data.
    pub value: RValue,
    /// Attributes such as `names`.
    pub attributes: Vec<(String, RObject)>,
}

impl RObject {
    fn plain(value: RValue) -> Self {
        RObject {
            value,
            attributes: Vec::new(),
        }
    }

    /// The attribute called `name`, if any.
    pub fn attr(&self, name: &str) -> Option<&RObject> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The `names` attribute as strings (NA as empty), if present and a character vector.
    pub fn names(&self) -> Option<Vec<String>> {
        match &self.attr("names")?.value {
            RValue::Str(v) => Some(v.iter().map(|s| s.clone().unwrap_or_default()).collect()),
            _ => None,
        }
    }

    /// The element called `name` of a named list.
    pub fn get(&self, name: &str) -> Option<&RObject> {
        let RValue::List(items) = &self.value else {
            return None;
        };
        let idx = self.names()?.iter().position(|n| n == name)?;
        items.get(idx)
    }
}

/// Deepest nesting accepted, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 200;

/// SEXP type codes used by the format.
mod sxp {
    pub const SYM: u32 = 1;
    pub const LIST: u32 = 2;
    pub const CHAR: u32 = 9;
    pub const LGL: u32 = 10;
    pub const INT: u32 = 13;
    pub const REAL: u32 = 14;
    pub const STR: u32 = 16;
    pub const VEC: u32 = 19;
    pub const EXPR: u32 = 20;
    pub const ALTREP: u32 = 238;
    pub const BASEENV: u32 = 241;
    pub const EMPTYENV: u32 = 242;
    pub const GLOBALENV: u32 = 253;
    pub const NILVALUE: u32 = 254;
    pub const REF: u32 = 255;
}

const HAS_ATTR: u32 = 1 << 9;
const HAS_TAG: u32 = 1 << 10;
const LATIN1: u32 = 1 << 2;

/// Cursor over an XDR stream with the back-reference table.
struct Xdr<'a> {
    buf: &'a [u8],
    pos: usize,
    refs: Vec<RObject>,
    depth: usize,
}

/// Decodes one serialized R object (the bytes of an `.rds` or an `.rdb` blob, uncompressed).
///
/// Errors are plain reasons; callers add the file name.
pub fn unserialize(bytes: &[u8]) -> Result<RObject, String> {
    let body = match bytes.get(..2) {
        Some(b"X\n") => &bytes[2..],
        Some(b"A\n") => return Err("ASCII serialization is not supported (only XDR)".into()),
        Some(b"B\n") => return Err("native binary serialization is not supported".into()),
        _ => return Err("not an R serialization (no `X\\n` header)".into()),
    };
    let mut x = Xdr {
        buf: body,
        pos: 0,
        refs: Vec::new(),
        depth: 0,
    };
    let version = x.int()?;
    let _writer = x.int()?;
    let _min_reader = x.int()?;
    match version {
        2 => {}
        3 => {
            let n = x.len()?;
            x.bytes(n)?;
        }
        v => {
            return Err(format!(
                "serialization version {v} is not supported (2 or 3)"
            ))
        }
    }
    x.item()
}

impl<'a> Xdr<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or("truncated stream")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn int(&mut self) -> Result<i32, String> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative length, long-vector form included.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.int()?;
        if n >= 0 {
            return Ok(n as usize);
        }
        if n != -1 {
            return Err(format!("bad length {n}"));
        }
        let hi = self.int()? as u32 as u64;
        let lo = self.int()? as u32 as u64;
        usize::try_from((hi << 32) | lo).map_err(|_| "length too large".to_string())
    }

    /// A vector length, checked against what is left so corrupt input cannot allocate wildly.
    fn vec_len(&mut self, min_elem_bytes: usize) -> Result<usize, String> {
        let n = self.len()?;
        if n > (self.buf.len() - self.pos) / min_elem_bytes {
            return Err(format!("vector length {n} exceeds the data"));
        }
        Ok(n)
    }

    fn item(&mut self) -> Result<RObject, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("objects nested too deeply".into());
        }
        let flags = self.int()? as u32;
        let out = self.item_body(flags);
        self.depth -= 1;
        out
    }

    fn item_body(&mut self, flags: u32) -> Result<RObject, String> {
        let ty = flags & 0xff;
        let value = match ty {
            sxp::NILVALUE | sxp::GLOBALENV | sxp::EMPTYENV | sxp::BASEENV => {
                return Ok(RObject::plain(RValue::Null))
            }
            sxp::REF => return self.reference(flags),
            sxp::SYM => return self.symbol(),
            sxp::LIST => return self.pairlist(flags),
            sxp::CHAR => self.charsxp(flags)?,
            sxp::STR => self.strsxp()?,
            sxp::VEC | sxp::EXPR => {
                let n = self.vec_len(4)?;
                RValue::List((0..n).map(|_| self.item()).collect::<Result<_, _>>()?)
            }
            sxp::INT | sxp::LGL => {
                let n = self.vec_len(4)?;
                let v = (0..n).map(|_| self.int()).collect::<Result<Vec<_>, _>>()?;
                if ty == sxp::INT {
                    RValue::Int(v)
                } else {
                    RValue::Lgl(v)
                }
            }
            sxp::REAL => {
                let n = self.vec_len(8)?;
                let raw = self.bytes(n * 8)?;
                RValue::Real(
                    raw.chunks_exact(8)
                        .map(|c| f64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                )
            }
            sxp::ALTREP => return Err("ALTREP objects are not supported".into()),
            other => return Err(format!("SEXP type {other} is not supported")),
        };
        let attributes = if flags & HAS_ATTR != 0 {
            self.attributes()?
        } else {
            Vec::new()
        };
        Ok(RObject { value, attributes })
    }

    fn reference(&mut self, flags: u32) -> Result<RObject, String> {
        let mut idx = (flags >> 8) as usize;
        if idx == 0 {
            idx = self.len()?;
        }
        idx.checked_sub(1)
            .and_then(|i| self.refs.get(i))
            .cloned()
            .ok_or_else(|| format!("bad back-reference {idx}"))
    }

    fn symbol(&mut self) -> Result<RObject, String> {
        let name = match self.item()?.value {
            RValue::Char(Some(s)) => s,
            _ => return Err("symbol without a name".into()),
        };
        let sym = RObject::plain(RValue::Symbol(name));
        self.refs.push(sym.clone());
        Ok(sym)
    }

    fn charsxp(&mut self, flags: u32) -> Result<RValue, String> {
        let n = self.int()?;
        if n == -1 {
            return Ok(RValue::Char(None));
        }
        let len = usize::try_from(n).map_err(|_| format!("bad string length {n}"))?;
        let raw = self.bytes(len)?;
        let levels = flags >> 12;
        let s = if levels & LATIN1 != 0 {
            raw.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        Ok(RValue::Char(Some(s)))
    }

    fn strsxp(&mut self) -> Result<RValue, String> {
        let n = self.vec_len(8)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.item()?.value {
                RValue::Char(s) => out.push(s),
                _ => return Err("character vector element is not a string".into()),
            }
        }
        Ok(RValue::Str(out))
    }

    /// A pairlist, read as a loop over its cells (CDR chain) rather than by recursion.
    fn pairlist(&mut self, mut flags: u32) -> Result<RObject, String> {
        let mut cells = Vec::new();
        let mut attributes = Vec::new();
        loop {
            if flags & HAS_ATTR != 0 {
                let a = self.attributes()?;
                if cells.is_empty() {
                    attributes = a;
                }
            }
            let tag = if flags & HAS_TAG != 0 {
                match self.item()?.value {
                    RValue::Symbol(s) => Some(s),
                    RValue::Null => None,
                    _ => return Err("pairlist tag is not a symbol".into()),
                }
            } else {
                None
            };
            cells.push((tag, self.item()?));
            flags = self.int()? as u32;
            match flags & 0xff {
                sxp::NILVALUE => break,
                sxp::LIST => {}
                other => return Err(format!("pairlist ends in SEXP type {other}")),
            }
        }
        Ok(RObject {
            value: RValue::Pairlist(cells),
            attributes,
        })
    }

    fn attributes(&mut self) -> Result<Vec<(String, RObject)>, String> {
        match self.item()?.value {
            RValue::Pairlist(cells) => Ok(cells
                .into_iter()
                .map(|(tag, v)| (tag.unwrap_or_default(), v))
                .collect()),
            RValue::Null => Ok(Vec::new()),
            _ => Err("attributes are not a pairlist".into()),
        }
    }
}

/// One object of a lazy-load database: its name and where its blob lies in the `.rdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbEntry {
    /// Object name (e.g. `emma`).
    pub name: String,
    /// Byte offset of the blob in the `.rdb`.
    pub offset: u64,
    /// Byte length of the blob.
    pub length: u64,
}

/// The parsed `.rdx` index of a lazy-load database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdxIndex {
    /// The objects, in index order.
    pub entries: Vec<RdbEntry>,
    /// R's compression code: 1 (or TRUE) zlib, 2 bzip2/zlib/none, 3 xz/zlib/none (typed blobs).
    pub compression: i32,
}

fn rdata_err(path: &Path, reason: impl Into<String>) -> AssetError {
    AssetError::RData {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a whole serialized file that may be gzip-compressed (`saveRDS`), zlib with a 4-byte
/// length prefix, or plain.
fn read_serialized_file(path: &Path) -> Result<Vec<u8>, AssetError> {
    let raw = fs::read(path).ctx(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| rdata_err(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else if raw.starts_with(b"X\n") {
        Ok(raw)
    } else {
        inflate_blob(&raw, 1).map_err(|e| rdata_err(path, e))
    }
}

/// Parses an `.rdx` file.
pub fn read_rdx(path: &Path) -> Result<RdxIndex, AssetError> {
    let bytes = read_serialized_file(path)?;
    let obj = unserialize(&bytes).map_err(|e| rdata_err(path, e))?;
    let vars = obj
        .get("variables")
        .ok_or_else(|| rdata_err(path, "index has no `variables`"))?;
    let names = vars.names().unwrap_or_default();
    let RValue::List(items) = &vars.value else {
        return Err(rdata_err(path, "`variables` is not a list"));
    };
    if names.len() != items.len() {
        return Err(rdata_err(path, "`variables` has no names"));
    }
    let mut entries = Vec::with_capacity(items.len());
    for (name, item) in names.into_iter().zip(items) {
        let (offset, length) = offset_length(&item.value)
            .ok_or_else(|| rdata_err(path, format!("bad entry `{name}`")))?;
        entries.push(RdbEntry {
            name,
            offset,
            length,
        });
    }
    let compression = obj
        .get("compressed")
        .map_or(Some(1), |c| first_int(&c.value));
    let compression = compression.ok_or_else(|| rdata_err(path, "bad `compressed` flag"))?;
    Ok(RdxIndex {
        entries,
        compression,
    })
}

/// (offset, length) from an integer or double pair.
fn offset_length(v: &RValue) -> Option<(u64, u64)> {
    let pair: Vec<f64> = match v {
        RValue::Int(v) => v.iter().map(|&i| f64::from(i)).collect(),
        RValue::Real(v) => v.clone(),
        _ => return None,
    };
    match pair[..] {
        [o, l] if o >= 0.0 && l >= 0.0 && o.fract() == 0.0 && l.fract() == 0.0 => {
            Some((o as u64, l as u64))
        }
        _ => None,
    }
}

/// The first element of a logical, integer or double vector, as an integer.
fn first_int(v: &RValue) -> Option<i32> {
    match v {
        RValue::Lgl(v) | RValue::Int(v) => v.first().copied(),
        RValue::Real(v) => v.first().map(|&d| d as i32),
        _ => None,
    }
}

/// Decompresses one `.rdb` blob: a 4-byte big-endian uncompressed length, then (for
/// compression 2 and 3) a type byte `Z`/`X`/`0`/`2`, then the data.
pub fn inflate_blob(blob: &[u8], compression: i32) -> Result<Vec<u8>, String> {
    if blob.len() < 4 {
        return Err("blob shorter than its length prefix".into());
    }
    let expected = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    let (kind, data) = match compression {
        1 => (b'Z', &blob[4..]),
        2 | 3 => match blob.get(4) {
            Some(&k) => (k, &blob[5..]),
            None => return Err("blob has no compression type".into()),
        },
        c => return Err(format!("compression code {c} is not supported")),
    };
    let limit = expected as u64 + 1;
    let mut out = Vec::with_capacity(expected.min(1 << 26));
    let read = match kind {
        b'Z' => ZlibDecoder::new(data).take(limit).read_to_end(&mut out),
        b'X' => xz2::read::XzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out),
        b'0' => io::Read::take(data, limit).read_to_end(&mut out),
        b'2' => return Err("bzip2-compressed blobs are not supported".into()),
        k => return Err(format!("unknown blob compression type {:?}", char::from(k))),
    };
    read.map_err(|e| format!("bad compressed data: {e}"))?;
    if out.len() != expected {
        return Err(format!(
            "blob inflates to {} bytes, header says {expected}",
            out.len()
        ));
    }
    Ok(out)
}

/// Reads the object `entry` from the `.rdb` file.
pub fn read_rdb_object(
    rdb: &Path,
    entry: &RdbEntry,
    compression: i32,
) -> Result<RObject, AssetError> {
    use std::io::{Seek, SeekFrom};
    let err = |e: String| rdata_err(rdb, format!("object `{}`: {e}", entry.name));
    let mut f = File::open(rdb).ctx(|| format!("cannot open {}", rdb.display()))?;
    let size = f
        .metadata()
        .ctx(|| format!("cannot stat {}", rdb.display()))?
        .len();
    if entry.offset.saturating_add(entry.length) > size {
        return Err(err("lies beyond the end of the file".into()));
    }
    f.seek(SeekFrom::Start(entry.offset))
        .ctx(|| format!("cannot seek in {}", rdb.display()))?;
    let mut blob = Vec::new();
    f.take(entry.length)
        .read_to_end(&mut blob)
        .ctx(|| format!("cannot read {}", rdb.display()))?;
    let bytes = inflate_blob(&blob, compression).map_err(err)?;
    unserialize(&bytes).map_err(err)
}

/// Decodes every character vector in the lazy-load database `rdb`/`rdx` into
/// `out_dir/<name>.txt` (one element per line, `NA` as an empty line, newline-terminated) and
/// returns the written paths. Objects that are not character vectors are skipped.
pub fn decode_rdata_texts(
    rdb: &Path,
    rdx: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, AssetError> {
    let index = read_rdx(rdx)?;
    fs::create_dir_all(out_dir).ctx(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::new();
    for entry in &index.entries {
        let obj = read_rdb_object(rdb, entry, index.compression)?;
        let RValue::Str(lines) = obj.value else {
            eprintln!(
                "lantern-assets: skipping R object `{}` (not text)",
                entry.name
            );
            continue;
        };
        let mut text = lines
            .iter()
            .map(|l| l.as_deref().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
        let path = out_dir.join(format!("{}.txt", safe_file_stem(&entry.name)));
        fs::write(&path, text).ctx(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        return Err(rdata_err(rdb, "no character vector found"));
    }
    Ok(written)
}

/// An R object name made safe as a file name.
fn safe_file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}
