//! The parts of HTTP/1.1 a JSON API needs: read one request or response with a
//! `Content-Length` (or chunked) body, write one with `Connection: close`.

use std::io::{BufRead, BufReader, Read, Write};

/// Largest header block and body accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A parsed request or response: the start line's parts, headers, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request: method, path, version. Response: version, status, reason.
    pub start: (String, String, String),
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    /// The value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads one message from `r`. Without `Content-Length` or chunking, a response body runs to
/// the end of the stream (`body_to_eof`); a request has none.
pub fn read_message(r: impl Read, body_to_eof: bool) -> std::io::Result<Message> {
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut head = 0;
    let mut next_line = |r: &mut BufReader<_>, line: &mut String| -> std::io::Result<()> {
        line.clear();
        let n = r.read_line(line)?;
        head += n;
        if head > MAX_HEAD {
            return Err(bad("header block too large"));
        }
        if n == 0 {
            return Err(bad("connection closed before the end of the headers"));
        }
        Ok(())
    };
    next_line(&mut r, &mut line)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let start = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    if start.1.is_empty() {
        return Err(bad(format!("malformed start line {:?}", line.trim_end())));
    }
    let mut headers = Vec::new();
    loop {
        next_line(&mut r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed header {l:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut m = Message {
        start,
        headers,
        body: Vec::new(),
    };
    if m.header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        m.body = read_chunked(&mut r)?;
    } else if let Some(len) = m.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(bad(format!(
                "body of {len} bytes is over the {MAX_BODY} limit"
            )));
        }
        m.body = vec![0; len];
        r.read_exact(&mut m.body)?;
    } else if body_to_eof {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut m.body)?;
        if m.body.len() > MAX_BODY {
            return Err(bad("body over the size limit"));
        }
    }
    Ok(m)
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n =
            usize::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > MAX_BODY {
            return Err(bad("body over the size limit"));
        }
        let at = body.len();
        body.resize(at + n, 0);
        r.read_exact(&mut body[at..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
}

/// Writes a response with a JSON body and closes the exchange.
pub fn write_response(mut w: impl Write, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_with_a_body_and_a_chunked_response() {
        let req =
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        let m = read_message(&req[..], false).unwrap();
        assert_eq!(m.start.0, "POST");
        assert_eq!(m.start.1, "/v1/chat/completions");
        assert_eq!(m.header("host"), Some("x"));
        assert_eq!(m.body, b"abcd");
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let m = read_message(&resp[..], true).unwrap();
        assert_eq!(m.start.1, "200");
        assert_eq!(m.body, b"abcde");
        let eof = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(read_message(&eof[..], true).unwrap().body, b"all of it");
    }

    #[test]
    fn rejects_truncated_and_oversized_messages() {
        assert!(read_message(&b"POST / HTTP/1.1\r\nHost"[..], false).is_err());
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let e = read_message(big.as_bytes(), false).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        assert!(read_message(&b"garbage\r\n\r\n"[..], false).is_err());
    }
}
