//! A lenient, streaming WARC reader.
//!
//! Reads `.warc` and gzip-compressed WARC files (detected by their magic bytes, not by their
//! extension) record by record without ever holding more than one record (plus a 1 MiB read
//! buffer) in memory, so multi-GB crawl files stream fine.
//!
//! Gzip input is decoded one member at a time with [`flate2::bufread::GzDecoder`] while counting
//! the compressed bytes consumed. That gives every record that starts a gzip member (the way
//! Common Crawl and `wget --warc-file` write, one member per record) its *compressed* byte offset
//! in the file: the offset Common Crawl index files list, from which a fresh gzip decoder reads
//! exactly that record. A file that is one gzip stream of many records works too; records that
//! do not start a member get their offset in the *uncompressed* stream instead (see
//! [`Record::offset`]).
//!
//! Damage is survived, not fatal: a record with bad headers is reported as an error (and
//! counted) and reading resynchronises at the next `WARC/` version line; a truncated final
//! record or gzip member ends the stream with one counted error. Nothing here panics on bad
//! input.
//!
//! [`html_pages`] layers the HTTP parsing on top: it keeps the HTML `response` records, with
//! chunked and gzip/deflate-encoded bodies decoded, as [`HtmlPage`]s.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::bufread::GzDecoder;
use memchr::memmem;

/// Capacity of the buffered reader over the (compressed) file: big reads, few syscalls.
const FILE_BUFFER: usize = 1 << 20;
/// Initial capacity of the parse buffer over the decompressed stream.
const PARSE_BUFFER: usize = 1 << 20;
/// A WARC header block longer than this is treated as damage, not as a record.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// At most this much of a body is allocated up front; the rest grows as it is actually read, so
/// a corrupt `Content-Length` cannot make us allocate gigabytes for nothing.
const MAX_BODY_PREALLOC: u64 = 64 << 20;
/// A `Content-Encoding` body that inflates beyond this is cut off there (decompression bombs).
const MAX_DECODED_BODY: u64 = 256 << 20;

/// Everything that can go wrong reading a WARC file; every message names the file and where.
#[derive(Debug, thiserror::Error)]
pub enum WarcError {
    /// The file could not be opened (missing, unreadable) or positioned.
    #[error("{file}: cannot open: {source}")]
    Open {
        /// The file's path, as given.
        file: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// Reading or decompressing failed (I/O error, corrupt or truncated gzip member); fatal.
    #[error("{file}: {what} at byte {offset}: {source}")]
    Read {
        /// The file's path, as given.
        file: String,
        /// What was being read, e.g. "gzip member".
        what: &'static str,
        /// Byte offset: of the gzip member being decoded, or in the uncompressed stream.
        offset: u64,
        /// The underlying I/O or gzip error.
        source: io::Error,
    },
    /// A WARC record is malformed (bad version line, bad headers, no `Content-Length`,
    /// truncated body); reading resumes at the next record where it can.
    #[error("{file}: record at byte {offset}: {what}")]
    Record {
        /// The file's path, as given.
        file: String,
        /// The record's offset, as in [`Record::offset`].
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The HTTP message inside a `response` record is malformed; only that record is lost.
    #[error("{file}: record at byte {offset} ({url}): HTTP response: {what}")]
    Http {
        /// The file's path, as given.
        file: String,
        /// The record's offset, as in [`Record::offset`].
        offset: u64,
        /// The record's `WARC-Target-URI`.
        url: String,
        /// What is wrong.
        what: String,
    },
}

/// One WARC record: the commonly used named headers, all headers, and the raw content block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The version line without its line end, e.g. `WARC/1.0` or `WARC/1.1`.
    pub version: String,
    /// `WARC-Type` (`warcinfo`, `request`, `response`, `resource`, ...); empty if absent.
    pub warc_type: String,
    /// `WARC-Target-URI`, if present.
    pub target_uri: Option<String>,
    /// `WARC-Date`, if present.
    pub date: Option<String>,
    /// `WARC-Record-ID`, if present.
    pub record_id: Option<String>,
    /// The record's `Content-Type` (e.g. `application/http; msgtype=response`), if present.
    pub content_type: Option<String>,
    /// Every header in file order, names as written (look up with [`Record::header`]).
    pub headers: Vec<(String, String)>,
    /// Where the record starts. When [`Record::gzip_member`] is true this is the compressed
    /// byte offset of the gzip member that starts with this record (Common Crawl's index
    /// `offset`); otherwise it is the offset in the uncompressed stream, which for a plain
    /// `.warc` file is the file offset.
    pub offset: u64,
    /// True when the record starts a gzip member, so [`Record::offset`] is a compressed offset.
    pub gzip_member: bool,
    /// The record's offset in the uncompressed stream, always (from the start offset given to
    /// [`WarcReader::open_at`], if any).
    pub uncompressed_offset: u64,
    /// The content block: exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

impl Record {
    /// The value of header `name` (case-insensitive), if present; the first one wins.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters kept while reading: how many records were seen and what became of them.
///
/// [`WarcReader`] fills `records`, `errors` and `skipped_bytes`; [`HtmlPages`] also fills the
/// HTTP-level counters. Skipped (non-response, non-HTML) records are not errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WarcStats {
    /// Well-formed WARC records read.
    pub records: u64,
    /// Records of type `response`.
    pub responses: u64,
    /// Responses kept as HTML pages.
    pub html: u64,
    /// Responses skipped because they are not HTML (or have no Content-Type).
    pub non_html: u64,
    /// Records skipped because they are not responses (warcinfo, request, metadata, ...).
    pub non_response: u64,
    /// Damaged records, unreadable HTTP messages and read failures, each reported as an `Err`.
    pub errors: u64,
    /// Bytes of the uncompressed stream skipped while resynchronising after damage.
    pub skipped_bytes: u64,
}

/// A byte reader that counts what it hands out, so compressed offsets are known exactly.
struct Counted<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.pos += amt as u64;
    }
}

/// The decompressed byte stream, gzip members decoded one at a time.
enum Source<R> {
    /// An uncompressed file.
    Plain(Counted<R>),
    /// A gzip file; `None` once the last member has been read.
    Gzip(Option<GzDecoder<Counted<R>>>),
}

/// The uncompressed stream plus the bookkeeping that maps it back to gzip members.
struct Stream<R> {
    source: Source<R>,
    /// Uncompressed bytes produced so far (from the start offset).
    out_pos: u64,
    /// Compressed offset of the member being decoded (or the read position of a plain file).
    member_offset: u64,
    /// `(uncompressed start, compressed offset)` of members not yet behind the parse position.
    members: VecDeque<(u64, u64)>,
}

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_bytes(buf)
    }
}

impl<R: Read> Stream<R> {
    /// Sniffs the gzip magic and sets up the matching decoder; `start` is the file offset.
    fn new(inner: R, start: u64) -> io::Result<Self> {
        let mut counted = Counted {
            inner: BufReader::with_capacity(FILE_BUFFER, inner),
            pos: start,
        };
        let is_gzip = counted.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let mut members = VecDeque::new();
        let source = if is_gzip {
            members.push_back((start, start));
            Source::Gzip(Some(GzDecoder::new(counted)))
        } else {
            Source::Plain(counted)
        };
        Ok(Stream {
            source,
            out_pos: start,
            member_offset: start,
            members,
        })
    }

    /// Reads uncompressed bytes, moving on to the next gzip member when one ends; 0 = the end.
    fn read_bytes(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.source {
            Source::Plain(r) => {
                let n = r.read(buf)?;
                self.member_offset = r.pos;
                n
            }
            Source::Gzip(slot) => Self::read_gzip(
                slot,
                buf,
                self.out_pos,
                &mut self.member_offset,
                &mut self.members,
            )?,
        };
        self.out_pos += n as u64;
        Ok(n)
    }

    /// The gzip half of [`Stream::read_bytes`]: one member at a time, recording where each starts.
    fn read_gzip(
        slot: &mut Option<GzDecoder<Counted<R>>>,
        buf: &mut [u8],
        out_pos: u64,
        member_offset: &mut u64,
        members: &mut VecDeque<(u64, u64)>,
    ) -> io::Result<usize> {
        loop {
            let Some(dec) = slot.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(dec) = slot.take() else {
                return Ok(0);
            };
            let mut inner = dec.into_inner();
            if inner.fill_buf()?.is_empty() {
                return Ok(0);
            }
            *member_offset = inner.pos;
            members.push_back((out_pos, inner.pos));
            *slot = Some(GzDecoder::new(inner));
        }
    }

    /// The compressed offset of the gzip member that starts exactly at uncompressed position
    /// `pos`, if any; forgets members that lie wholly before `pos`.
    fn member_starting_at(&mut self, pos: u64) -> Option<u64> {
        while self.members.len() >= 2 && self.members[1].0 <= pos {
            self.members.pop_front();
        }
        match self.members.front() {
            Some(&(start, offset)) if start == pos => Some(offset),
            _ => None,
        }
    }
}

/// Parsed WARC headers of one record, before its body is read.
struct Head {
    version: String,
    headers: Vec<(String, String)>,
    content_length: u64,
}

/// A streaming iterator over the records of one WARC file.
///
/// Yields `Ok(Record)` for every well-formed record and `Err(WarcError)` for every damaged one;
/// after a damaged record it carries on at the next `WARC/` version line. A read or gzip
/// failure (including a truncated final member) is yielded once and ends the iteration.
pub struct WarcReader<R = File> {
    file: String,
    stream: Stream<R>,
    buf: Vec<u8>,
    /// Parse position in `buf`.
    start: usize,
    /// End of valid data in `buf`; `buf[end - 1]` is at uncompressed position `stream.out_pos - 1`.
    end: usize,
    eof: bool,
    done: bool,
    stats: WarcStats,
}

impl WarcReader<File> {
    /// Opens `path` (plain or gzip WARC) for reading from its first byte.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WarcError> {
        Self::open_at(path, 0)
    }

    /// Opens `path` for reading from byte `offset`: a gzip member start (as in a Common Crawl
    /// index) or, for a plain file, a record start. Offsets reported are file offsets.
    pub fn open_at(path: impl AsRef<Path>, offset: u64) -> Result<Self, WarcError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let open_err = |source| WarcError::Open {
            file: name.clone(),
            source,
        };
        let mut file = File::open(path).map_err(open_err)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).map_err(open_err)?;
        }
        Self::from_reader_at(file, &name, offset)
    }
}

impl<R: Read> WarcReader<R> {
    /// Reads WARC records from any byte source (plain or gzip), named `name` in errors.
    pub fn from_reader(inner: R, name: &str) -> Result<Self, WarcError> {
        Self::from_reader_at(inner, name, 0)
    }

    /// [`WarcReader::from_reader`] for a source that starts at byte `offset` of the file, so
    /// that reported offsets are file offsets.
    pub fn from_reader_at(inner: R, name: &str, offset: u64) -> Result<Self, WarcError> {
        let stream = Stream::new(inner, offset).map_err(|source| WarcError::Read {
            file: name.to_string(),
            what: "first bytes",
            offset,
            source,
        })?;
        Ok(WarcReader {
            file: name.to_string(),
            stream,
            buf: vec![0; PARSE_BUFFER],
            start: 0,
            end: 0,
            eof: false,
            done: false,
            stats: WarcStats::default(),
        })
    }

    /// The counters so far (records read, errors, bytes skipped).
    pub fn stats(&self) -> &WarcStats {
        &self.stats
    }

    /// Damaged records and read failures so far.
    pub fn errors(&self) -> u64 {
        self.stats.errors
    }

    /// Uncompressed bytes skipped while resynchronising so far.
    pub fn skipped(&self) -> u64 {
        self.stats.skipped_bytes
    }

    /// The file name used in error messages.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// Uncompressed stream position of `buf[i]`.
    fn pos_of(&self, i: usize) -> u64 {
        self.stream.out_pos - (self.end - i) as u64
    }

    /// Reads more data into the buffer (compacting or growing it as needed); false at the end.
    fn fill(&mut self) -> Result<bool, WarcError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        let end = self.end;
        let n = self
            .stream
            .read_bytes(&mut self.buf[end..])
            .map_err(|source| self.read_error(source))?;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(n > 0)
    }

    /// A fatal read error, located at the current gzip member (or stream position).
    fn read_error(&self, source: io::Error) -> WarcError {
        let what = match self.stream.source {
            Source::Gzip(_) => "gzip member",
            Source::Plain(_) => "read",
        };
        WarcError::Read {
            file: self.file.clone(),
            what,
            offset: self.stream.member_offset,
            source,
        }
    }

    /// A record-level error at `offset`.
    fn record_error(&self, offset: u64, what: impl Into<String>) -> WarcError {
        WarcError::Record {
            file: self.file.clone(),
            offset,
            what: what.into(),
        }
    }

    /// Skips the blank lines between records; false if the stream ended first.
    fn skip_blank(&mut self) -> Result<bool, WarcError> {
        loop {
            let blank = self.buf[self.start..self.end]
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.start += blank;
            if self.start < self.end {
                return Ok(true);
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }

    /// Makes at least `n` bytes available from `start`; false if the stream ends first.
    fn ensure(&mut self, n: usize) -> Result<bool, WarcError> {
        while self.end - self.start < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Finds the end of the header block starting at `start` (just past its blank line).
    /// `Ok(None)` if the stream ends first or the block exceeds [`MAX_HEADER_BLOCK`].
    fn header_block_end(&mut self) -> Result<Option<usize>, WarcError> {
        let mut scanned = 0;
        loop {
            let window = &self.buf[self.start + scanned..self.end];
            let mut line_start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &window[line_start..]) {
                let line = &window[line_start..line_start + nl];
                let next = line_start + nl + 1;
                if (line.is_empty() || line == b"\r") && scanned + line_start > 0 {
                    return Ok(Some(scanned + next));
                }
                line_start = next;
            }
            scanned += line_start;
            if self.end - self.start > MAX_HEADER_BLOCK || !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Skips forward to the next line that looks like a WARC version line, counting the
    /// skipped bytes. `start` must be at a line start; the stream may end first.
    fn resync(&mut self) -> Result<(), WarcError> {
        let finder = memmem::Finder::new(b"WARC/");
        let mut at_line_start = true;
        loop {
            let hay = &self.buf[self.start..self.end];
            let found = finder.find_iter(hay).find(|&at| {
                let line_start = if at == 0 {
                    at_line_start
                } else {
                    hay[at - 1] == b'\n'
                };
                line_start && looks_like_version(&hay[at..])
            });
            if let Some(at) = found {
                self.start += at;
                self.stats.skipped_bytes += at as u64;
                return Ok(());
            }
            // Keep a tail that could be the beginning of a version line split by the buffer.
            let advance = hay.len().saturating_sub(16);
            if advance > 0 {
                at_line_start = hay[advance - 1] == b'\n';
            }
            self.start += advance;
            self.stats.skipped_bytes += advance as u64;
            if !self.fill()? {
                self.stats.skipped_bytes += (self.end - self.start) as u64;
                self.start = self.end;
                return Ok(());
            }
        }
    }

    /// Parses the version line and headers in `buf[start..start + len]`.
    fn parse_head(&self, len: usize) -> Result<Head, String> {
        let block = &self.buf[self.start..self.start + len];
        let mut lines = block.split(|&b| b == b'\n').map(trim_cr);
        let version = lines.next().unwrap_or_default();
        if !looks_like_version(version) {
            return Err(format!("bad version line {:?}", lossy_prefix(version)));
        }
        let headers = parse_headers(lines, true)?;
        let content_length = find_header(&headers, "Content-Length")
            .ok_or_else(|| "missing Content-Length".to_string())?;
        let content_length = content_length
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("bad Content-Length {content_length:?}"))?;
        Ok(Head {
            version: String::from_utf8_lossy(version).into_owned(),
            headers,
            content_length,
        })
    }

    /// Reads the `len`-byte body that starts at `start`: what is buffered, then straight from
    /// the stream into the body (no second copy through the parse buffer).
    fn read_body(&mut self, len: u64) -> Result<Result<Vec<u8>, u64>, WarcError> {
        let mut body = Vec::with_capacity(len.min(MAX_BODY_PREALLOC) as usize);
        let buffered = ((self.end - self.start) as u64).min(len) as usize;
        body.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let missing = len - buffered as u64;
        if missing > 0 && !self.eof {
            let got = (&mut self.stream)
                .take(missing)
                .read_to_end(&mut body)
                .map_err(|source| self.read_error(source))?;
            if (got as u64) < missing {
                self.eof = true;
            }
        }
        Ok(if body.len() as u64 == len {
            Ok(body)
        } else {
            Err(body.len() as u64)
        })
    }

    /// Reads the next record; `None` at the end. Damage yields one `Err` per damaged record.
    fn next_record(&mut self) -> Option<Result<Record, WarcError>> {
        match self.try_next_record() {
            Ok(next) => next,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// [`WarcReader::next_record`] with fatal errors as `Err` (recoverable ones inside).
    fn try_next_record(&mut self) -> Result<Option<Result<Record, WarcError>>, WarcError> {
        if !self.skip_blank()? {
            return Ok(None);
        }
        self.ensure(16)?;
        let record_pos = self.pos_of(self.start);
        let member = self.stream.member_starting_at(record_pos);
        let offset = member.unwrap_or(record_pos);
        if !looks_like_version(&self.buf[self.start..self.end]) {
            let before = self.stats.skipped_bytes;
            self.skip_line();
            self.resync()?;
            let skipped = self.stats.skipped_bytes - before;
            let what =
                format!("no WARC/ version line here; skipped {skipped} bytes to the next record");
            return Ok(Some(Err(self.record_error(offset, what))));
        }
        let Some(head_len) = self.header_block_end()? else {
            let what = if self.eof {
                "truncated header block at the end of the file"
            } else {
                "header block too long or unterminated"
            };
            let err = self.record_error(offset, what);
            self.skip_line();
            self.resync()?;
            return Ok(Some(Err(err)));
        };
        let head = match self.parse_head(head_len) {
            Ok(head) => head,
            Err(what) => {
                let err = self.record_error(offset, what);
                self.skip_line();
                self.resync()?;
                return Ok(Some(Err(err)));
            }
        };
        self.start += head_len;
        match self.read_body(head.content_length)? {
            Ok(body) => Ok(Some(Ok(build_record(
                head,
                body,
                offset,
                member.is_some(),
                record_pos,
            )))),
            Err(got) => {
                self.done = true;
                let what = format!(
                    "truncated: Content-Length {} but the file ends after {got} bytes",
                    head.content_length
                );
                Ok(Some(Err(self.record_error(offset, what))))
            }
        }
    }

    /// Steps past the current line so that resynchronising does not find the same record.
    fn skip_line(&mut self) {
        let rest = &self.buf[self.start..self.end];
        let n = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        self.start += n;
        self.stats.skipped_bytes += n as u64;
    }
}

impl<R: Read> Iterator for WarcReader<R> {
    type Item = Result<Record, WarcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record();
        match &item {
            Some(Ok(_)) => self.stats.records += 1,
            Some(Err(_)) => self.stats.errors += 1,
            None => self.done = true,
        }
        item
    }
}

/// Assembles a [`Record`] from its parsed head and body.
fn build_record(
    head: Head,
    body: Vec<u8>,
    offset: u64,
    gzip_member: bool,
    uncompressed: u64,
) -> Record {
    let get = |name: &str| find_header(&head.headers, name).map(str::to_string);
    Record {
        warc_type: get("WARC-Type").unwrap_or_default(),
        target_uri: get("WARC-Target-URI").map(|u| strip_angle_brackets(&u).to_string()),
        date: get("WARC-Date"),
        record_id: get("WARC-Record-ID"),
        content_type: get("Content-Type"),
        version: head.version,
        headers: head.headers,
        offset,
        gzip_member,
        uncompressed_offset: uncompressed,
        body,
    }
}

/// WARC/1.1 examples write `<uri>` in `WARC-Target-URI`; the URI is what is inside.
fn strip_angle_brackets(uri: &str) -> &str {
    uri.strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(uri)
}

/// True if `bytes` starts with `WARC/<digits>.<digits>` followed by a line end.
fn looks_like_version(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"WARC/") else {
        return false;
    };
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let major = digits(rest);
    if major == 0 || rest.get(major) != Some(&b'.') {
        return false;
    }
    let rest = &rest[major + 1..];
    let minor = digits(rest);
    minor > 0 && matches!(rest.get(minor), Some(b'\r' | b'\n') | None)
}

/// Drops one trailing `\r`.
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first bytes of `bytes` as text, for error messages.
fn lossy_prefix(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned()
}

/// Parses `Name: value` lines up to the first blank one; lines starting with a space or tab
/// continue the previous value. A line without a colon is an error if `strict` (WARC headers),
/// else skipped (real HTTP headers are sometimes junk).
fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    strict: bool,
) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(12);
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(String::from_utf8_lossy(line).trim());
                continue;
            }
        }
        let colon = memchr::memchr(b':', line).filter(|&c| !line[..c].trim_ascii().is_empty());
        let Some(colon) = colon else {
            if strict {
                return Err(format!("bad header line {:?}", lossy_prefix(line)));
            }
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of header `name` (case-insensitive) in `headers`; the first one wins.
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An HTML page from a WARC `response` record, HTTP framing and encodings removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlPage {
    /// The page's URL (`WARC-Target-URI`); empty if the record has none.
    pub url: String,
    /// When it was fetched (`WARC-Date`); empty if the record has none.
    pub date: String,
    /// The record's offset, as in [`Record::offset`] (the gzip member offset for
    /// per-record-gzip files such as Common Crawl's).
    pub warc_offset: u64,
    /// The HTTP status code (pages are kept whatever the status).
    pub http_status: u16,
    /// The `charset` parameter of the HTTP `Content-Type`, if any (for [`crate::charset`]).
    pub http_content_type_charset: Option<String>,
    /// The HTML bytes, de-chunked and content-decoded, still in the page's own charset.
    pub body: Vec<u8>,
}

/// An iterator over the HTML pages of one WARC file; see [`html_pages`].
///
/// Yields `Err` for damaged records and unreadable HTTP messages (counted in
/// [`WarcStats::errors`]) and carries on; non-response and non-HTML records are skipped and
/// counted, not reported.
pub struct HtmlPages<R = File> {
    reader: WarcReader<R>,
}

/// Opens `path` and iterates over its HTML `response` records as [`HtmlPage`]s.
pub fn html_pages(path: impl AsRef<Path>) -> Result<HtmlPages<File>, WarcError> {
    Ok(HtmlPages::new(WarcReader::open(path)?))
}

impl<R: Read> HtmlPages<R> {
    /// Wraps a record reader (e.g. one from [`WarcReader::open_at`] or `from_reader`).
    pub fn new(reader: WarcReader<R>) -> Self {
        HtmlPages { reader }
    }

    /// The counters so far.
    pub fn stats(&self) -> &WarcStats {
        &self.reader.stats
    }

    /// Classifies one record: `Ok(None)` if it is skipped (and counted).
    fn page(&mut self, record: Record) -> Result<Option<HtmlPage>, WarcError> {
        let stats = &mut self.reader.stats;
        if !record.warc_type.eq_ignore_ascii_case("response") {
            stats.non_response += 1;
            return Ok(None);
        }
        stats.responses += 1;
        let url = record.target_uri.unwrap_or_default();
        let (offset, date) = (record.offset, record.date.unwrap_or_default());
        match parse_http_html(record.body) {
            Ok(Some(http)) => {
                stats.html += 1;
                Ok(Some(HtmlPage {
                    url,
                    date,
                    warc_offset: offset,
                    http_status: http.status,
                    http_content_type_charset: http.charset,
                    body: http.body,
                }))
            }
            Ok(None) => {
                stats.non_html += 1;
                Ok(None)
            }
            Err(what) => {
                stats.errors += 1;
                Err(WarcError::Http {
                    file: self.reader.file.clone(),
                    offset,
                    url,
                    what,
                })
            }
        }
    }
}

impl<R: Read> Iterator for HtmlPages<R> {
    type Item = Result<HtmlPage, WarcError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let record = match self.reader.next()? {
                Ok(record) => record,
                Err(e) => return Some(Err(e)),
            };
            match self.page(record) {
                Ok(Some(page)) => return Some(Ok(page)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The parts of an HTML HTTP response the pipeline needs.
struct HttpHtml {
    status: u16,
    charset: Option<String>,
    body: Vec<u8>,
}

/// Parses an HTTP response message; `Ok(None)` if it is not HTML.
fn parse_http_html(mut message: Vec<u8>) -> Result<Option<HttpHtml>, String> {
    let head_end = http_head_end(&message).ok_or("no end of the HTTP headers")?;
    let mut lines = message[..head_end].split(|&b| b == b'\n').map(trim_cr);
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let headers = parse_headers(lines, false)?;
    let Some((mime, charset)) = find_header(&headers, "Content-Type").map(parse_content_type)
    else {
        return Ok(None);
    };
    if mime != "text/html" && mime != "application/xhtml+xml" {
        return Ok(None);
    }
    message.drain(..head_end);
    let mut body = message;
    if find_header(&headers, "Transfer-Encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        if let Some(plain) = dechunk(&body) {
            body = plain;
        }
    }
    if let Some(encoding) = find_header(&headers, "Content-Encoding") {
        body = decode_content(body, encoding)?;
    }
    Ok(Some(HttpHtml {
        status,
        charset,
        body,
    }))
}

/// The length of the HTTP head including its blank line (`\r\n\r\n` or a bare `\n\n`).
fn http_head_end(message: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &message[from..]) {
        let next = from + i + 1;
        match message.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if message.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => from = next,
        }
    }
    None
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split_ascii_whitespace();
    let proto = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    match (proto.starts_with("HTTP/"), code.parse::<u16>()) {
        (true, Ok(code)) => Ok(code),
        _ => Err(format!("bad status line {:?}", lossy_prefix(line))),
    }
}

/// `Text/HTML; Charset="utf-8"` -> (`text/html`, Some(`utf-8`)).
fn parse_content_type(value: &str) -> (String, Option<String>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset = parts.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_string())
    });
    (mime, charset)
}

/// Decodes a `Transfer-Encoding: chunked` body; `None` if it is not chunked at all. A body
/// cut off mid-chunk (a truncated record) keeps what was complete.
fn dechunk(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    let mut chunks = 0;
    while let Some(nl) = memchr::memchr(b'\n', &body[pos..]) {
        let line = trim_cr(&body[pos..pos + nl]);
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).ok()?.trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            if chunks == 0 {
                return None;
            }
            break;
        };
        pos += nl + 1;
        if size == 0 {
            break;
        }
        let end = pos.saturating_add(size).min(body.len());
        out.extend_from_slice(&body[pos..end]);
        chunks += 1;
        pos = end;
        // The CRLF after the chunk data.
        if body[pos..].starts_with(b"\r\n") {
            pos += 2;
        } else if body[pos..].starts_with(b"\n") {
            pos += 1;
        }
    }
    (chunks > 0 || pos > 0).then_some(out)
}

/// Undoes `Content-Encoding` (gzip, deflate, zstd, identity). Bodies that turn out not to be
/// encoded after all (crawlers often store the decoded payload but keep the header) are kept.
fn decode_content(body: Vec<u8>, encoding: &str) -> Result<Vec<u8>, String> {
    let encoding = encoding.trim().to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "" | "identity" | "none" => return Ok(body),
        "gzip" | "x-gzip" => {
            if !body.starts_with(&[0x1f, 0x8b]) {
                return Ok(body);
            }
            inflate(flate2::read::MultiGzDecoder::new(&body[..]))
        }
        "deflate" => inflate(flate2::read::ZlibDecoder::new(&body[..]))
            .or_else(|_| inflate(flate2::read::DeflateDecoder::new(&body[..]))),
        "zstd" => inflate(zstd::stream::read::Decoder::new(&body[..]).map_err(|e| e.to_string())?),
        other => return Err(format!("unsupported Content-Encoding {other:?}")),
    };
    decoded.map_err(|e| format!("cannot decode Content-Encoding {encoding}: {e}"))
}

/// Reads a decoder to the end, up to [`MAX_DECODED_BODY`]; a body cut off mid-stream (a
/// truncated record) keeps what was decoded if that is anything at all.
fn inflate(decoder: impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match decoder.take(MAX_DECODED_BODY).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    /// One WARC/1.0 record with CRLF line ends.
    fn record(kind: &str, uri: &str, content_type: &str, block: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-05-01T12:00:00Z\r\n\
             WARC-Record-ID: <urn:uuid:{uri}>\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            block.len()
        )
        .into_bytes();
        out.extend_from_slice(block);
        out.extend_from_slice(b"\r\n\r\n");
        out
    }

    /// An HTTP/1.1 response message.
    fn http(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut out =
            format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{extra}\r\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn response(uri: &str, message: &[u8]) -> Vec<u8> {
        record(
            "response",
            uri,
            "application/http; msgtype=response",
            message,
        )
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A small crawl: warcinfo, request, HTML, PNG, XHTML responses.
    fn sample() -> Vec<Vec<u8>> {
        vec![
            record(
                "warcinfo",
                "",
                "application/warc-fields",
                b"software: test\r\n",
            ),
            record(
                "request",
                "http://a.test/",
                "application/http; msgtype=request",
                b"GET / HTTP/1.1\r\n\r\n",
            ),
            response(
                "http://a.test/",
                &http("text/html; charset=UTF-8", "", b"<html>a \\(x^2\\)</html>"),
            ),
            response(
                "http://a.test/i.png",
                &http("image/png", "", b"\x89PNG\r\n\x1a\nxx"),
            ),
            response(
                "http://a.test/x",
                &http("Application/XHTML+XML", "", b"<html>x</html>"),
            ),
        ]
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Concatenates records, one gzip member each; returns the file and the member offsets.
    fn gzip_per_record(records: &[Vec<u8>]) -> (Vec<u8>, Vec<u64>) {
        let mut file = Vec::new();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(file.len() as u64);
            file.extend_from_slice(&gz(r));
        }
        (file, offsets)
    }

    fn read_all(path: &Path) -> (Vec<Result<Record, WarcError>>, WarcStats) {
        let mut reader = WarcReader::open(path).unwrap();
        let items: Vec<_> = reader.by_ref().collect();
        (items, *reader.stats())
    }

    #[test]
    fn plain_warc() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample();
        let path = write(&dir, "a.warc", &records.concat());
        let (items, stats) = read_all(&path);
        assert_eq!(stats.records, 5);
        assert_eq!(stats.errors, 0);
        let mut offset = 0;
        for (item, raw) in items.iter().zip(&records) {
            let r = item.as_ref().unwrap();
            assert_eq!(r.offset, offset);
            assert_eq!(r.uncompressed_offset, offset);
            assert!(!r.gzip_member);
            offset += raw.len() as u64;
        }
        let r = items[2].as_ref().unwrap();
        assert_eq!(r.warc_type, "response");
        assert_eq!(r.version, "WARC/1.0");
        assert_eq!(r.target_uri.as_deref(), Some("http://a.test/"));
        assert_eq!(r.date.as_deref(), Some("2024-05-01T12:00:00Z"));
        assert_eq!(r.record_id.as_deref(), Some("<urn:uuid:http://a.test/>"));
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/http; msgtype=response")
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert!(r.body.starts_with(b"HTTP/1.1 200 OK"));
    }

    #[test]
    fn gzip_per_record_offsets_are_member_starts() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample();
        let (file, offsets) = gzip_per_record(&records);
        // The extension does not matter: gzip is detected by its magic bytes.
        let path = write(&dir, "crawl.warc", &file);
        let (items, stats) = read_all(&path);
        assert_eq!((stats.records, stats.errors), (5, 0));
        let mut uncompressed = 0;
        for ((item, raw), &offset) in items.iter().zip(&records).zip(&offsets) {
            let r = item.as_ref().unwrap();
            assert!(r.gzip_member);
            assert_eq!(r.offset, offset);
            assert_eq!(r.uncompressed_offset, uncompressed);
            uncompressed += raw.len() as u64;
            // A fresh gzip decoder at that offset yields exactly this record.
            let mut member = Vec::new();
            flate2::read::GzDecoder::new(&file[offset as usize..])
                .read_to_end(&mut member)
                .unwrap();
            assert_eq!(&member, raw);
            // And so does a reader opened there.
            // (Its uncompressed offsets count from the offset it was opened at.)
            let again = WarcReader::open_at(&path, offset)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            assert_eq!((again.offset, again.gzip_member), (offset, true));
            assert_eq!(again.uncompressed_offset, offset);
            assert_eq!((&again.headers, &again.body), (&r.headers, &r.body));
        }
    }

    #[test]
    fn single_gzip_stream() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample();
        let path = write(&dir, "one.warc.gz", &gz(&records.concat()));
        let (items, stats) = read_all(&path);
        assert_eq!((stats.records, stats.errors), (5, 0));
        let mut uncompressed = 0;
        for (i, (item, raw)) in items.iter().zip(&records).enumerate() {
            let r = item.as_ref().unwrap();
            assert_eq!(r.gzip_member, i == 0);
            assert_eq!(r.offset, uncompressed);
            uncompressed += raw.len() as u64;
        }
    }

    #[test]
    fn bad_headers_in_the_middle_are_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample();
        let no_length =
            b"WARC/1.0\r\nWARC-Type: response\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody\r\n\r\n".to_vec();
        let no_colon =
            b"WARC/1.0\r\nWARC-Type response\r\nContent-Length: 4\r\n\r\nbody\r\n\r\n".to_vec();
        let bad_length = b"WARC/1.0\r\nContent-Length: lots\r\n\r\nbody\r\n\r\n".to_vec();
        let records = vec![
            good[0].clone(),
            no_length,
            good[2].clone(),
            no_colon,
            bad_length,
            good[4].clone(),
        ];
        for (name, file) in [
            ("bad.warc", records.concat()),
            ("bad.warc.gz", gzip_per_record(&records).0),
        ] {
            let path = write(&dir, name, &file);
            let (items, stats) = read_all(&path);
            assert_eq!((stats.records, stats.errors), (3, 3), "{name}");
            let kinds: Vec<_> = items
                .iter()
                .map(|i| {
                    i.as_ref()
                        .map_or("ERR".to_string(), |r| r.warc_type.clone())
                })
                .collect();
            assert_eq!(
                kinds,
                ["warcinfo", "ERR", "response", "ERR", "ERR", "response"]
            );
            let msg = items[1].as_ref().unwrap_err().to_string();
            assert!(
                msg.contains(name) && msg.contains("missing Content-Length"),
                "{msg}"
            );
            assert!(items[3]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("bad header line"));
            assert!(items[4]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("bad Content-Length"));
            assert_eq!(
                items[5].as_ref().unwrap().target_uri.as_deref(),
                Some("http://a.test/x")
            );
        }
    }

    #[test]
    fn garbage_between_records_resynchronises() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample();
        let mut file = good[0].clone();
        file.extend_from_slice(b"junk junk\nmore WARC/1.0 junk\n");
        file.extend_from_slice(&good[2]);
        let path = write(&dir, "junk.warc", &file);
        let (items, stats) = read_all(&path);
        assert_eq!((stats.records, stats.errors), (2, 1));
        assert_eq!(stats.skipped_bytes, 29);
        assert!(items[2].as_ref().unwrap().body.starts_with(b"HTTP/1.1"));
    }

    #[test]
    fn truncated_final_record_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample();
        let plain = records.concat();
        let (gzipped, offsets) = gzip_per_record(&records);
        let last = offsets[4] as usize;
        let cases = [
            ("cut-body.warc", plain[..plain.len() - 10].to_vec(), 4),
            (
                "cut-head.warc",
                plain[..plain.len() - records[4].len() + 30].to_vec(),
                4,
            ),
            (
                "cut-member.warc.gz",
                gzipped[..last + (gzipped.len() - last) / 2].to_vec(),
                4,
            ),
            // The record is complete, only the member's CRC trailer is missing.
            (
                "cut-trailer.warc.gz",
                gzipped[..gzipped.len() - 3].to_vec(),
                5,
            ),
        ];
        for (name, file, complete) in cases {
            let path = write(&dir, name, &file);
            let (items, stats) = read_all(&path);
            assert_eq!(stats.records, complete, "{name}");
            assert_eq!(stats.errors, 1, "{name}");
            let err = items.last().unwrap().as_ref().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        // Every prefix of a file is survivable.
        for cut in (0..gzipped.len()).step_by(7) {
            let path = write(&dir, "prefix.warc.gz", &gzipped[..cut]);
            let (items, _) = read_all(&path);
            assert!(items.len() <= 6);
            let path = write(&dir, "prefix.warc", &plain[..cut.min(plain.len())]);
            let (items, _) = read_all(&path);
            assert!(items.len() <= 6);
        }
    }

    #[test]
    fn warc_1_1_with_bare_newlines_and_odd_case() {
        let dir = tempfile::tempdir().unwrap();
        let message = http("text/html", "", b"<p>hi</p>");
        let mut file = format!(
            "WARC/1.1\nwarc-type: response\nwarc-target-uri: <http://b.test/>\nCONTENT-LENGTH: {}\nX-Folded: a\n  b\n\n",
            message.len()
        )
        .into_bytes();
        file.extend_from_slice(&message);
        file.extend_from_slice(b"\n\n");
        file.extend_from_slice(&sample()[2]);
        let path = write(&dir, "lf.warc", &file);
        let (items, stats) = read_all(&path);
        assert_eq!((stats.records, stats.errors), (2, 0));
        let r = items[0].as_ref().unwrap();
        assert_eq!(r.version, "WARC/1.1");
        assert_eq!(r.target_uri.as_deref(), Some("http://b.test/"));
        assert_eq!(r.header("x-folded"), Some("a b"));
        assert_eq!(r.body, message);
    }

    #[test]
    fn records_larger_than_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut records = vec![response("http://big.test/", &http("text/html", "", &big))];
        for i in 0..20_000 {
            records.push(response(
                &format!("http://s.test/{i}"),
                &http("text/plain", "", b"small"),
            ));
        }
        records.push(response("http://big.test/2", &http("text/html", "", &big)));
        for (name, file) in [
            ("big.warc", records.concat()),
            ("big.warc.gz", gzip_per_record(&records).0),
        ] {
            let path = write(&dir, name, &file);
            let mut pages = html_pages(&path).unwrap();
            let got: Vec<_> = pages.by_ref().map(|p| p.unwrap()).collect();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].body, big);
            assert_eq!(got[1].body, big);
            assert_eq!(got[1].url, "http://big.test/2");
            let stats = pages.stats();
            assert_eq!(
                (stats.records, stats.non_html, stats.errors),
                (20_002, 20_000, 0)
            );
        }
    }

    #[test]
    fn http_bodies_chunked_and_content_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let html = b"<html><body>\\[\\int_0^1 x\\,dx = \\tfrac12\\]</body></html>".to_vec();
        let (first, second) = html.split_at(17);
        let mut chunked = format!("{:x}\r\n", first.len()).into_bytes();
        chunked.extend_from_slice(first);
        chunked.extend_from_slice(format!("\r\n{:X};ext=1\r\n", second.len()).as_bytes());
        chunked.extend_from_slice(second);
        chunked.extend_from_slice(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
        let mut deflated = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
        deflated.write_all(&html).unwrap();
        let deflated = deflated.finish().unwrap();
        let gzipped = gz(&html);
        // Chunked transfer of a gzip body: both layers.
        let mut chunked_gz = format!("{:x}\r\n", gzipped.len()).into_bytes();
        chunked_gz.extend_from_slice(&gzipped);
        chunked_gz.extend_from_slice(b"\r\n0\r\n\r\n");
        let records = vec![
            response(
                "http://c.test/1",
                &http("text/html", "Transfer-Encoding: chunked\r\n", &chunked),
            ),
            response(
                "http://c.test/2",
                &http("text/html", "Content-Encoding: gzip\r\n", &gzipped),
            ),
            response(
                "http://c.test/3",
                &http("text/html", "Content-Encoding: deflate\r\n", &deflated),
            ),
            response(
                "http://c.test/4",
                &http(
                    "text/html",
                    "Transfer-Encoding: chunked\r\nContent-Encoding: x-gzip\r\n",
                    &chunked_gz,
                ),
            ),
            // Already decoded by the crawler but the header kept: body used as is.
            response(
                "http://c.test/5",
                &http("text/html", "Content-Encoding: gzip\r\n", &html),
            ),
            response(
                "http://c.test/6",
                &http("text/html", "Content-Encoding: br\r\n", b"\x0b\x02"),
            ),
        ];
        let path = write(&dir, "enc.warc.gz", &gzip_per_record(&records).0);
        let mut pages = html_pages(&path).unwrap();
        let items: Vec<_> = pages.by_ref().collect();
        for item in &items[..5] {
            assert_eq!(item.as_ref().unwrap().body, html);
        }
        let err = items[5].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("http://c.test/6") && err.contains("unsupported Content-Encoding"),
            "{err}"
        );
        assert_eq!(pages.stats().html, 5);
        assert_eq!(pages.stats().errors, 1);
    }

    #[test]
    fn non_html_and_non_response_records_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = sample();
        records.push(response(
            "http://a.test/nt",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ));
        records.push(response(
            "http://a.test/bad",
            b"garbage without an end of headers",
        ));
        let (file, offsets) = gzip_per_record(&records);
        let path = write(&dir, "mixed.warc.gz", &file);
        let mut pages = html_pages(&path).unwrap();
        let items: Vec<_> = pages.by_ref().collect();
        assert_eq!(items.len(), 3);
        let a = items[0].as_ref().unwrap();
        assert_eq!(a.url, "http://a.test/");
        assert_eq!(a.date, "2024-05-01T12:00:00Z");
        assert_eq!(a.warc_offset, offsets[2]);
        assert_eq!(a.http_status, 200);
        assert_eq!(a.http_content_type_charset.as_deref(), Some("UTF-8"));
        assert_eq!(a.body, b"<html>a \\(x^2\\)</html>");
        let x = items[1].as_ref().unwrap();
        assert_eq!(
            (x.url.as_str(), x.http_content_type_charset.as_deref()),
            ("http://a.test/x", None)
        );
        assert!(items[2].is_err());
        let stats = *pages.stats();
        assert_eq!(
            stats,
            WarcStats {
                records: 7,
                responses: 5,
                html: 2,
                non_html: 2,
                non_response: 2,
                errors: 1,
                skipped_bytes: 0
            }
        );
    }

    #[test]
    fn content_type_parameters() {
        assert_eq!(
            parse_content_type("Text/HTML ; Charset=\"iso-8859-1\""),
            ("text/html".to_string(), Some("iso-8859-1".to_string()))
        );
        assert_eq!(
            parse_content_type("text/html;charset="),
            ("text/html".to_string(), None)
        );
        assert_eq!(parse_content_type(""), (String::new(), None));
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = WarcReader::open("/no/such/dir/x.warc.gz")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("/no/such/dir/x.warc.gz: cannot open"),
            "{err}"
        );
        assert!(html_pages("/no/such/x.warc").is_err());
    }

    #[test]
    fn empty_and_trailing_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let (items, stats) = read_all(&write(&dir, "empty.warc", b""));
        assert!(items.is_empty() && stats == WarcStats::default());
        let mut file = gzip_per_record(&sample()).0;
        file.extend_from_slice(b"\0\0\0\0 not gzip");
        let (items, stats) = read_all(&write(&dir, "tail.warc.gz", &file));
        assert_eq!((stats.records, stats.errors), (5, 1));
        let err = items[5].as_ref().unwrap_err().to_string();
        assert!(err.contains("gzip member at byte"), "{err}");
    }
}
