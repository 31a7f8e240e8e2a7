//! HTML bytes to text: find the page's character encoding the way a browser would, then decode.
//!
//! The order is the HTML standard's, simplified: a byte order mark; else the HTTP
//! `Content-Type` charset; else a `<meta charset>` / `<meta http-equiv="Content-Type">`
//! declaration in the first [`META_SCAN_BYTES`] bytes; else UTF-8 if the bytes are valid UTF-8;
//! else a `chardetng` guess (helped by the URL's top-level domain). Labels are resolved with
//! [`Encoding::for_label`]; unknown labels (and the "replacement" encoding, which would turn the
//! whole page into one U+FFFD) count as absent.
//!
//! Most pages are UTF-8, so that path is cheap: [`decode_html_vec`] turns a valid UTF-8 body into
//! its `String` without copying, and [`decode_html`] copies a borrowed one exactly once.

use std::borrow::Cow;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::Encoding;

/// How much of the page is scanned for a `<meta>` charset declaration (the standard says 1024;
/// real pages often put theirs after long scripts, so a little more).
pub const META_SCAN_BYTES: usize = 4096;

/// How much of an undeclared, non-UTF-8 page `chardetng` looks at (more costs time, rarely
/// changes the guess).
const DETECT_BYTES: usize = 256 << 10;

/// Where the encoding of a page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CharsetSource {
    /// A byte order mark (UTF-8, UTF-16LE or UTF-16BE).
    Bom,
    /// The HTTP `Content-Type` header's charset.
    Http,
    /// A `<meta>` declaration in the page.
    Meta,
    /// Nothing declared; the bytes are valid UTF-8.
    Utf8,
    /// Nothing declared, not UTF-8: `chardetng`'s guess.
    Guess,
}

/// A decoded page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The page as text; undecodable bytes became U+FFFD.
    pub text: String,
    /// The encoding used, by its WHATWG name (e.g. `UTF-8`, `windows-1252`, `Shift_JIS`).
    pub encoding: &'static str,
    /// True if some bytes were malformed in that encoding (and replaced).
    pub had_errors: bool,
    /// Where the encoding came from.
    pub source: CharsetSource,
}

/// Decodes an HTML page to text. `http_charset` is the charset of the HTTP `Content-Type` (as in
/// [`crate::warc::HtmlPage::http_content_type_charset`]); `url` (optional) lends its top-level
/// domain to the guess for undeclared pages. Copies a valid UTF-8 page once.
pub fn decode_html(body: &[u8], http_charset: Option<&str>, url: Option<&str>) -> Decoded {
    decode(Cow::Borrowed(body), http_charset, url)
}

/// [`decode_html`] for an owned body: a valid UTF-8 page becomes its `String` without any copy.
pub fn decode_html_vec(body: Vec<u8>, http_charset: Option<&str>, url: Option<&str>) -> Decoded {
    decode(Cow::Owned(body), http_charset, url)
}

/// The encoding that `label` names, if it names a usable one (see the module docs).
pub fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    let encoding = Encoding::for_label(label.trim().as_bytes())?;
    (encoding != encoding_rs::REPLACEMENT).then_some(encoding)
}

/// The declared encoding and where it came from, with the BOM length: BOM, then HTTP charset,
/// then `<meta>`. `None` if the page declares nothing usable.
pub fn declared_encoding(
    body: &[u8],
    http_charset: Option<&str>,
) -> Option<(&'static Encoding, usize, CharsetSource)> {
    if let Some((encoding, bom_len)) = Encoding::for_bom(body) {
        return Some((encoding, bom_len, CharsetSource::Bom));
    }
    if let Some(encoding) = http_charset.and_then(encoding_for_label) {
        return Some((encoding, 0, CharsetSource::Http));
    }
    let head = &body[..body.len().min(META_SCAN_BYTES)];
    meta_charset(head).map(|encoding| (encoding, 0, CharsetSource::Meta))
}

/// The whole decision and decoding, on a borrowed or owned body.
fn decode(body: Cow<'_, [u8]>, http_charset: Option<&str>, url: Option<&str>) -> Decoded {
    if let Some((encoding, bom_len, source)) = declared_encoding(&body, http_charset) {
        let (text, had_errors) = decode_with(encoding, skip_front(body, bom_len));
        return Decoded {
            text,
            encoding: encoding.name(),
            had_errors,
            source,
        };
    }
    let body = match utf8_string(body) {
        Ok(text) => return utf8_decoded(text, false),
        Err(body) => body,
    };
    if let Some(body) = truncated_utf8(&body) {
        let (text, had_errors) = decode_with(encoding_rs::UTF_8, body);
        return utf8_decoded(text, had_errors);
    }
    let encoding = guess(&body, url);
    let (text, had_errors) = decode_with(encoding, body);
    Decoded {
        text,
        encoding: encoding.name(),
        had_errors,
        source: CharsetSource::Guess,
    }
}

/// A [`Decoded`] for an undeclared UTF-8 page.
fn utf8_decoded(text: String, had_errors: bool) -> Decoded {
    Decoded {
        text,
        encoding: encoding_rs::UTF_8.name(),
        had_errors,
        source: CharsetSource::Utf8,
    }
}

/// If `body` is valid UTF-8 except for an incomplete character at the very end (a record
/// truncated by the crawler), the valid part.
fn truncated_utf8<'a>(body: &Cow<'a, [u8]>) -> Option<Cow<'a, [u8]>> {
    let err = std::str::from_utf8(body).err()?;
    if err.error_len().is_some() {
        return None;
    }
    let valid = err.valid_up_to();
    Some(match body {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..valid]),
        Cow::Owned(v) => Cow::Owned(v[..valid].to_vec()),
    })
}

/// `chardetng`'s guess for an undeclared page, with the URL's TLD if it has a usable one.
fn guess(body: &[u8], url: Option<&str>) -> &'static Encoding {
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(&body[..body.len().min(DETECT_BYTES)], true);
    let tld = url.and_then(tld_of);
    detector.guess(tld.as_deref().map(str::as_bytes), Utf8Detection::Allow)
}

/// The lower-case top-level domain of `url` (`https://Example.FR:8080/x` -> `fr`), if it is a
/// plain ASCII label (what `chardetng` accepts); `None` for IP addresses and odd hosts.
pub fn tld_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?.trim_end_matches('.');
    let tld = host.rsplit('.').next()?.to_ascii_lowercase();
    let ok = !tld.is_empty()
        && tld.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !tld.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(tld)
}

/// Drops the first `n` bytes (a BOM) without copying a borrowed body.
fn skip_front(body: Cow<'_, [u8]>, n: usize) -> Cow<'_, [u8]> {
    if n == 0 {
        return body;
    }
    match body {
        Cow::Borrowed(b) => Cow::Borrowed(&b[n.min(b.len())..]),
        Cow::Owned(mut v) => {
            v.drain(..n.min(v.len()));
            Cow::Owned(v)
        }
    }
}

/// The body as a `String` if it is valid UTF-8 (no copy if owned, one if borrowed); else the
/// body back.
fn utf8_string(body: Cow<'_, [u8]>) -> Result<String, Cow<'_, [u8]>> {
    match body {
        Cow::Owned(v) => String::from_utf8(v).map_err(|e| Cow::Owned(e.into_bytes())),
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Cow::Borrowed(b)),
    }
}

/// Decodes `body` (BOM already removed) as `encoding`: `(text, had_errors)`.
fn decode_with(encoding: &'static Encoding, body: Cow<'_, [u8]>) -> (String, bool) {
    if encoding == encoding_rs::UTF_8 {
        return match utf8_string(body) {
            Ok(text) => (text, false),
            Err(body) => (String::from_utf8_lossy(&body).into_owned(), true),
        };
    }
    let (text, had_errors) = encoding.decode_without_bom_handling(&body);
    let decoded = match text {
        Cow::Owned(text) => Some(text),
        // ASCII-only in an ASCII-compatible encoding: the bytes are the text already.
        Cow::Borrowed(_) => None,
    };
    match decoded {
        Some(text) => (text, had_errors),
        None => match utf8_string(body) {
            Ok(text) => (text, had_errors),
            Err(body) => (String::from_utf8_lossy(&body).into_owned(), true),
        },
    }
}

/// The encoding declared by the first usable `<meta>` in `head` (the HTML standard's prescan,
/// simplified: comments and other tags are skipped, attribute values may be quoted or not).
/// A declared UTF-16 means UTF-8 and `x-user-defined` means windows-1252, as in browsers.
pub fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let mut pos = 0;
    while let Some(lt) = memchr::memchr(b'<', &head[pos..]) {
        pos += lt;
        let rest = &head[pos..];
        if rest.starts_with(b"<!--") {
            pos += memchr::memmem::find(&rest[4..], b"-->").map_or(rest.len(), |i| i + 7);
            continue;
        }
        if starts_with_ignore_case(rest, b"<meta")
            && rest
                .get(5)
                .is_some_and(|&b| b.is_ascii_whitespace() || b == b'/')
        {
            let (attrs, used) = parse_attributes(&rest[5..]);
            pos += 5 + used;
            if let Some(encoding) = meta_encoding(&attrs) {
                return Some(encoding);
            }
            continue;
        }
        pos += memchr::memchr(b'>', rest).map_or(rest.len(), |i| i + 1);
    }
    None
}

/// The encoding a `<meta>` element's attributes declare, if any.
fn meta_encoding(attrs: &[(String, String)]) -> Option<&'static Encoding> {
    let get = |name: &str| {
        attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let label = match get("charset") {
        Some(charset) => Some(charset.to_string()),
        None if get("http-equiv")
            .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-type")) =>
        {
            get("content").and_then(charset_from_content)
        }
        None => None,
    }?;
    let encoding = encoding_for_label(&label)?;
    Some(
        if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
            encoding_rs::UTF_8
        } else if encoding == encoding_rs::X_USER_DEFINED {
            encoding_rs::WINDOWS_1252
        } else {
            encoding
        },
    )
}

/// `text/html; charset=ISO-8859-1` -> `ISO-8859-1` (the standard's "extracting a character
/// encoding from a meta element").
fn charset_from_content(content: &str) -> Option<String> {
    let lower = content.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("charset") {
        let after = lower[from + i + 7..].trim_start();
        let Some(value) = after.strip_prefix('=') else {
            from += i + 7;
            continue;
        };
        let value = value.trim_start();
        let offset = content.len() - value.len();
        let value = &content[offset..];
        let label = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default(),
            _ => value
                .split(|c: char| c.is_ascii_whitespace() || c == ';')
                .next()
                .unwrap_or_default(),
        };
        return (!label.is_empty()).then(|| label.to_string());
    }
    None
}

/// Parses attributes from just after a tag name up to its `>`: lower-cased names and raw values,
/// and how many bytes were used.
fn parse_attributes(bytes: &[u8]) -> (Vec<(String, String)>, usize) {
    let mut attrs = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' {
            return (attrs, (i + 1).min(bytes.len()));
        }
        let name_start = i;
        while i < bytes.len()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
            && !bytes[i].is_ascii_whitespace()
        {
            i += 1;
        }
        let name = String::from_utf8_lossy(&bytes[name_start..i]).to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let (v, used) = attribute_value(&bytes[i..]);
            value = v;
            i += used;
        }
        attrs.push((name, value));
    }
}

/// One attribute value (quoted or not) and how many bytes it used.
fn attribute_value(bytes: &[u8]) -> (String, usize) {
    match bytes.first() {
        Some(&q @ (b'"' | b'\'')) => {
            let end = memchr::memchr(q, &bytes[1..]).map_or(bytes.len(), |e| e + 1);
            let used = (end + 1).min(bytes.len());
            (String::from_utf8_lossy(&bytes[1..end]).into_owned(), used)
        }
        _ => {
            let end = bytes
                .iter()
                .position(|&b| b.is_ascii_whitespace() || b == b'>')
                .unwrap_or(bytes.len());
            (String::from_utf8_lossy(&bytes[..end]).into_owned(), end)
        }
    }
}

/// ASCII case-insensitive `starts_with`.
fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_declared_by_meta() {
        let mut page =
            b"<html><head><meta charset=\"windows-1252\"><title>x</title></head><body>".to_vec();
        page.extend_from_slice(b"caf\xe9 co\xfbte 5\x80 \x93quoted\x94</body></html>");
        let d = decode_html(&page, None, None);
        assert_eq!(d.encoding, "windows-1252");
        assert_eq!(d.source, CharsetSource::Meta);
        assert!(!d.had_errors);
        assert!(d.text.contains("café coûte 5€ “quoted”"), "{}", d.text);
    }

    #[test]
    fn meta_http_equiv_and_latin1_label() {
        let page = b"<!-- <meta charset=utf-8> --><HTML><HEAD><META HTTP-EQUIV='Content-Type' CONTENT='text/html; Charset=ISO-8859-1'></HEAD>\xe0 la";
        let d = decode_html(page, None, None);
        assert_eq!(d.encoding, "windows-1252");
        assert_eq!(d.source, CharsetSource::Meta);
        assert!(d.text.ends_with("à la"));
    }

    #[test]
    fn shift_jis_declared_only_by_http() {
        let text = "<html><body><p>数学の定理：ピタゴラスの定理は直角三角形について述べる。</p></body></html>";
        let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(text);
        let d = decode_html(&bytes, Some("Shift_JIS"), None);
        assert_eq!(d.encoding, "Shift_JIS");
        assert_eq!(d.source, CharsetSource::Http);
        assert_eq!(d.text, text);
        assert!(!d.had_errors);
        // The HTTP charset beats a contradicting meta.
        let mut with_meta = b"<meta charset=\"utf-8\">".to_vec();
        with_meta.extend_from_slice(&bytes);
        assert_eq!(
            decode_html(&with_meta, Some("sjis"), None).encoding,
            "Shift_JIS"
        );
    }

    #[test]
    fn undeclared_latin1_is_guessed() {
        let text = "<html><body><p>Les élèves étudient les mathématiques à l'école. \
            Ça coûte très cher, où est la forêt? Le théorème de Pythagore est célèbre; \
            la démonstration est élégante et les résultats sont démontrés.</p></body></html>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(text);
        assert!(std::str::from_utf8(&bytes).is_err());
        let d = decode_html(&bytes, None, Some("http://exemple.fr/page.html"));
        assert_eq!(d.source, CharsetSource::Guess);
        assert_eq!(d.encoding, "windows-1252");
        assert_eq!(d.text, text);
    }

    #[test]
    fn bom_utf16() {
        let text = "<html><body>π ≈ 3.14159, ∑ x²</body></html>";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let d = decode_html(&le, Some("iso-8859-1"), None);
        assert_eq!((d.encoding, d.source), ("UTF-16LE", CharsetSource::Bom));
        assert_eq!(d.text, text);
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        let d = decode_html_vec(be, None, None);
        assert_eq!((d.encoding, d.text.as_str()), ("UTF-16BE", text));
        let mut utf8 = b"\xEF\xBB\xBF".to_vec();
        utf8.extend_from_slice(text.as_bytes());
        assert_eq!(decode_html_vec(utf8, None, None).text, text);
    }

    #[test]
    fn valid_utf8_is_not_copied() {
        let body = "<html><body>naïve ∫ f(x) dx</body></html>"
            .as_bytes()
            .to_vec();
        let ptr = body.as_ptr();
        let d = decode_html_vec(body, None, None);
        assert_eq!(
            (d.encoding, d.source, d.had_errors),
            ("UTF-8", CharsetSource::Utf8, false)
        );
        assert_eq!(d.text.as_ptr(), ptr);
        // Declared UTF-8 too.
        let body = b"<meta charset=utf-8>\xc3\xa9".to_vec();
        let ptr = body.as_ptr();
        let d = decode_html_vec(body, Some("UTF-8"), None);
        assert_eq!(d.text.as_ptr(), ptr);
        assert_eq!(d.text, "<meta charset=utf-8>é");
    }

    #[test]
    fn bogus_labels_are_ignored() {
        let page =
            b"<meta charset=\"no-such-charset\"><meta charset=koi8-r>\xf0\xd2\xc9\xd7\xc5\xd4";
        let d = decode_html(page, Some("x-bogus"), None);
        assert_eq!((d.encoding, d.source), ("KOI8-R", CharsetSource::Meta));
        assert!(d.text.ends_with("Привет"));
        // The replacement encoding would destroy the page: treated as absent.
        let d = decode_html(b"plain ascii", Some("iso-2022-kr"), None);
        assert_eq!((d.encoding, d.text.as_str()), ("UTF-8", "plain ascii"));
        // A declared UTF-16 in a meta means UTF-8.
        let d = decode_html(b"<meta charset=utf-16>\xc3\xa9", None, None);
        assert_eq!(
            (d.encoding, d.text.as_str()),
            ("UTF-8", "<meta charset=utf-16>é")
        );
    }

    #[test]
    fn truncated_utf8_tail_stays_utf8() {
        let mut body = "<p>long text ∀ε ∃δ </p>".as_bytes().to_vec();
        body.extend_from_slice(&"∀".as_bytes()[..2]);
        let d = decode_html(&body, None, None);
        assert_eq!(d.encoding, "UTF-8");
        assert_eq!(d.text, "<p>long text ∀ε ∃δ </p>");
    }

    #[test]
    fn tld_extraction() {
        assert_eq!(
            tld_of("https://user@Example.FR.:8080/a?b").as_deref(),
            Some("fr")
        );
        assert_eq!(tld_of("http://127.0.0.1:8000/"), None);
        assert_eq!(tld_of("http://bücher.de/"), Some("de".into()));
        assert_eq!(tld_of("http://例え.テスト/"), None);
        assert_eq!(tld_of(""), None);
        // Odd URLs must not make chardetng panic.
        for url in [
            "http://EXAMPLE.JP",
            "http://a.b_c/",
            "http://x.テスト",
            "://",
            "http://[::1]/",
        ] {
            decode_html(b"\xe9\xe8", None, Some(url));
        }
    }
}
