//! A small streaming reader for Unix `ar` archives, the container of Debian packages.
//!
//! Format: the magic `!<arch>\n`, then members, each a 60-byte text header (name 16, mtime 12,
//! uid 6, gid 6, mode 8, size 10, `` `\n ``) followed by `size` bytes of data, padded to an
//! even offset with `\n`. GNU (`name/`, `//` name table, `/N`) and BSD (`#1/N`) long names are
//! understood.

use std::io::{self, Read};

/// The archive's magic bytes.
pub const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// One member's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArMember {
    /// Member name, without GNU's trailing `/` or padding.
    pub name: String,
    /// Size of the data in bytes (excluding any BSD long name).
    pub size: u64,
}

/// Reads members one after the other. After [`ArReader::next_member`] returns a member,
/// reading from the `ArReader` itself yields that member's data (and then end of file).
pub struct ArReader<R: Read> {
    inner: R,
    /// Bytes of the current member not yet read.
    left: u64,
    /// Whether a padding byte follows the current member.
    pad: bool,
    /// GNU long-name table (`//` member), if seen.
    names: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> ArReader<R> {
    /// Checks the magic and positions the reader before the first member.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        inner
            .read_exact(&mut magic)
            .map_err(|_| bad("not an ar archive: too short"))?;
        if &magic != AR_MAGIC {
            return Err(bad("not an ar archive: bad magic"));
        }
        Ok(ArReader {
            inner,
            left: 0,
            pad: false,
            names: Vec::new(),
        })
    }

    /// Skips what is left of the current member and reads the next header; `None` at the end.
    ///
    /// The GNU name table and symbol table are consumed here and not returned.
    pub fn next_member(&mut self) -> io::Result<Option<ArMember>> {
        loop {
            self.skip_rest()?;
            let Some(header) = self.read_header()? else {
                return Ok(None);
            };
            let (raw_name, size) = parse_header(&header)?;
            self.left = size;
            self.pad = size % 2 == 1;
            if raw_name == "//" {
                let mut table = Vec::new();
                self.read_to_end(&mut table)?;
                self.names = table;
                continue;
            }
            let name = self.resolve_name(&raw_name)?;
            if name.is_empty() {
                continue; // symbol table ("/") or "/SYM64/"
            }
            return Ok(Some(ArMember {
                name,
                size: self.left,
            }));
        }
    }

    /// Reads a 60-byte header, or `None` at a clean end of archive.
    fn read_header(&mut self) -> io::Result<Option<[u8; 60]>> {
        let mut header = [0u8; 60];
        let mut got = 0;
        while got < header.len() {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(bad("truncated ar member header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(header))
    }

    /// Turns a raw header name into the member name, reading BSD long names from the data.
    fn resolve_name(&mut self, raw: &str) -> io::Result<String> {
        if let Some(len) = raw.strip_prefix("#1/") {
            let len: u64 = len.trim().parse().map_err(|_| bad("bad BSD name length"))?;
            if len > self.left {
                return Err(bad("BSD name longer than member"));
            }
            let mut buf = vec![0u8; len as usize];
            self.read_exact(&mut buf)?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if raw == "/" || raw == "/SYM64/" {
            return Ok(String::new());
        }
        if let Some(off) = raw.strip_prefix('/') {
            let off: usize = off.trim().parse().map_err(|_| bad("bad GNU name offset"))?;
            let table = self
                .names
                .get(off..)
                .ok_or_else(|| bad("GNU name out of range"))?;
            let end = table
                .windows(2)
                .position(|w| w == b"/\n")
                .unwrap_or(table.len());
            return Ok(String::from_utf8_lossy(&table[..end]).into_owned());
        }
        Ok(raw.strip_suffix('/').unwrap_or(raw).to_string())
    }

    /// Discards the unread data and padding of the current member.
    fn skip_rest(&mut self) -> io::Result<()> {
        let skip = self.left + u64::from(self.pad);
        let copied = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
        // A missing final padding byte at the end of the archive is tolerated.
        if copied + u64::from(self.pad) < skip {
            return Err(bad("truncated ar member"));
        }
        self.left = 0;
        self.pad = false;
        Ok(())
    }
}

impl<R: Read> Read for ArReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("truncated ar member"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Splits a header into its trimmed name and data size.
fn parse_header(h: &[u8; 60]) -> io::Result<(String, u64)> {
    if &h[58..60] != b"`\n" {
        return Err(bad("bad ar member header"));
    }
    let name = String::from_utf8_lossy(&h[0..16]).trim_end().to_string();
    let size = std::str::from_utf8(&h[48..58])
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| bad("bad ar member size"))?;
    Ok((name, size))
}
