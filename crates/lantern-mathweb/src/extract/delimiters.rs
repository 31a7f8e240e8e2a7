//! Math delimiters in page text: the defaults, the page's own MathJax / KaTeX configuration,
//! and the scanner that splits text into text and math pieces (longest delimiter first).

use crate::html::Document;

/// One delimiter pair.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pair {
    open: String,
    close: String,
    display: bool,
}

/// The delimiters in force on a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimiters {
    /// Sorted by opening length, longest first.
    pairs: Vec<Pair>,
    /// Whether `\begin{env}..\end{env}` in text is display math (MathJax's
    /// `processEnvironments`, on by default).
    environments: bool,
    /// Whether `` `..` `` in text is AsciiMath (the page loads MathJax's AsciiMath input).
    asciimath: bool,
    /// First bytes of the openers (where the scanner stops to look).
    starts: [bool; 256],
}

/// A piece of scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Plain text.
    Text(&'a str),
    /// A formula (content between the delimiters, or the whole environment).
    Math {
        /// LaTeX.
        tex: &'a str,
        /// Display math.
        display: bool,
    },
    /// An AsciiMath formula (between backticks on pages that load AsciiMath).
    AsciiMath(&'a str),
}

const DEFAULT_INLINE: &[(&str, &str)] = &[
    ("\\(", "\\)"),
    ("[itex]", "[/itex]"),
    ("[tex]", "[/tex]"),
    ("[latex]", "[/latex]"),
    ("[math]", "[/math]"),
    ("<math>", "</math>"),
];
const DEFAULT_DISPLAY: &[(&str, &str)] = &[
    ("$$", "$$"),
    ("\\[", "\\]"),
    ("[displaymath]", "[/displaymath]"),
];

/// Environments that MathJax typesets when found in text.
const ENVIRONMENTS: &[&str] = &[
    "equation",
    "equation*",
    "align",
    "align*",
    "aligned",
    "gather",
    "gather*",
    "eqnarray",
    "eqnarray*",
    "multline",
    "multline*",
    "displaymath",
    "alignat",
    "alignat*",
    "flalign",
    "flalign*",
    "split",
];

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::new(DEFAULT_INLINE, DEFAULT_DISPLAY)
    }
}

impl Delimiters {
    fn new(inline: &[(&str, &str)], display: &[(&str, &str)]) -> Delimiters {
        let mut pairs: Vec<Pair> = Vec::new();
        let mut add = |o: &str, c: &str, d: bool| {
            if !o.is_empty() && !c.is_empty() && !pairs.iter().any(|p| p.open == o) {
                pairs.push(Pair {
                    open: o.to_string(),
                    close: c.to_string(),
                    display: d,
                });
            }
        };
        for (o, c) in display {
            add(o, c, true);
        }
        for (o, c) in inline {
            add(o, c, false);
        }
        pairs.sort_by_key(|p| std::cmp::Reverse(p.open.len()));
        let mut starts = [false; 256];
        starts[b'\\' as usize] = true;
        for p in &pairs {
            starts[p.open.as_bytes()[0] as usize] = true;
        }
        Delimiters {
            pairs,
            environments: true,
            asciimath: false,
            starts,
        }
    }

    /// The page's delimiters: MathJax `inlineMath` / `displayMath` and KaTeX auto-render
    /// `delimiters` found in its scripts, merged over the defaults.
    pub fn from_page(doc: &Document) -> Delimiters {
        let mut inline: Vec<(String, String)> = Vec::new();
        let mut display: Vec<(String, String)> = Vec::new();
        let mut asciimath = false;
        for s in doc.elements_named("script") {
            let ty = doc.attr(s, "type").unwrap_or("");
            if ty.starts_with("math/") {
                continue;
            }
            let src = doc.attr(s, "src").unwrap_or("");
            let code = doc.text_content(s);
            asciimath |= src.contains("AM_")
                || code.contains("asciimath2jax")
                || code.contains("AM_CHTML")
                || code.contains("AM_HTMLorMML");
            if code.contains("inlineMath") || code.contains("displayMath") {
                inline.extend(config_pairs(&code, "inlineMath"));
                display.extend(config_pairs(&code, "displayMath"));
            }
            if code.contains("delimiters") && code.contains("left") {
                for (o, c, d) in katex_pairs(&code) {
                    if d {
                        display.push((o, c))
                    } else {
                        inline.push((o, c))
                    }
                }
            }
        }
        if inline.is_empty() && display.is_empty() {
            let mut d = Delimiters::default();
            d.set_asciimath(asciimath);
            return d;
        }
        let mut inl: Vec<(&str, &str)> = inline
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut dis: Vec<(&str, &str)> = display
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // The page's lists come first (they win on equal openers); defaults fill the rest, except
        // that a page that declares `$` inline keeps it (never added by default: prices).
        inl.extend(DEFAULT_INLINE.iter().copied());
        dis.extend(DEFAULT_DISPLAY.iter().copied());
        let mut d = Delimiters::new(&inl, &dis);
        d.set_asciimath(asciimath);
        d
    }

    fn set_asciimath(&mut self, on: bool) {
        self.asciimath = on;
        self.starts[b'`' as usize] |= on;
    }

    /// Whether single `$` is an inline delimiter on this page.
    pub fn dollar_inline(&self) -> bool {
        self.pairs.iter().any(|p| p.open == "$" && !p.display)
    }

    /// Splits `text` into text and math pieces.
    pub fn split<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut out = Vec::new();
        let bytes = text.as_bytes();
        let mut plain_from = 0;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if !self.starts[c as usize] {
                i += 1;
                continue;
            }
            match self.match_at(text, i) {
                Some((tex_from, tex_to, end, display)) => {
                    if plain_from < i {
                        out.push(Piece::Text(&text[plain_from..i]));
                    }
                    let tex = &text[tex_from..tex_to];
                    out.push(if self.asciimath && c == b'`' {
                        Piece::AsciiMath(tex)
                    } else {
                        Piece::Math { tex, display }
                    });
                    i = end;
                    plain_from = end;
                }
                None => i += if c == b'\\' { 2 } else { 1 },
            }
        }
        if plain_from < text.len() {
            out.push(Piece::Text(&text[plain_from..]));
        }
        out
    }

    /// A formula starting at byte `i`: (content start, content end, end, display).
    fn match_at(&self, text: &str, i: usize) -> Option<(usize, usize, usize, bool)> {
        let rest = &text[i..];
        if self.asciimath && rest.starts_with('`') {
            let to = i + 1 + rest[1..].find('`')?;
            return (to > i + 1).then_some((i + 1, to, to + 1, false));
        }
        if self.environments && rest.starts_with("\\begin{") {
            if let Some(m) = environment_at(text, i) {
                return Some(m);
            }
        }
        for p in &self.pairs {
            if !rest.starts_with(p.open.as_str()) {
                continue;
            }
            let from = i + p.open.len();
            if let Some(to) = find_close(text, from, &p.close) {
                if !text[from..to].trim().is_empty() {
                    return Some((from, to, to + p.close.len(), p.display));
                }
            }
            return None;
        }
        None
    }
}

/// `\begin{env}..\end{env}` at `i` for a known math environment: the whole span is the formula.
fn environment_at(text: &str, i: usize) -> Option<(usize, usize, usize, bool)> {
    let name_from = i + "\\begin{".len();
    let name_to = name_from + text[name_from..].find('}')?;
    let name = &text[name_from..name_to];
    if !ENVIRONMENTS.contains(&name) {
        return None;
    }
    let close = format!("\\end{{{name}}}");
    let at = name_to + text[name_to..].find(&close)?;
    let end = at + close.len();
    Some((i, end, end, true))
}

/// Next `close` at or after `from` that is not escaped by a backslash (for `$`-like closers)
/// and, for a single `$`, is not part of `$$`.
fn find_close(text: &str, from: usize, close: &str) -> Option<usize> {
    let mut at = from;
    while let Some(k) = text[at..].find(close) {
        let pos = at + k;
        let escaped = close.starts_with('$') && pos > 0 && text.as_bytes()[pos - 1] == b'\\';
        let doubled = close == "$" && text[pos + 1..].starts_with('$');
        if !escaped && !doubled {
            return Some(pos);
        }
        at = pos + if doubled { 2 } else { 1 };
    }
    None
}

/// The bracketed array after `key` in a script (`key: [ ... ]`), brackets included.
fn array_after<'a>(code: &'a str, key: &str) -> Option<&'a str> {
    let k = code.find(key)?;
    let start = k + code[k..].find('[')?;
    let len = bracket_span(&code[start..])?;
    Some(&code[start..start + len])
}

/// Pairs from a MathJax config key: `inlineMath: [['$','$'], ['\\(','\\)']]`.
fn config_pairs(code: &str, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(array) = array_after(code, key) else {
        return out;
    };
    let strings = js_strings(array);
    for pair in strings.chunks(2) {
        if let [o, c] = pair {
            out.push((o.clone(), c.clone()));
        }
    }
    out
}

/// KaTeX auto-render `delimiters: [{left: "$$", right: "$$", display: true}, ...]`.
fn katex_pairs(code: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let Some(array) = array_after(code, "delimiters") else {
        return out;
    };
    for obj in array[1..array.len() - 1].split('}') {
        let field = |name: &str| {
            let at = obj.find(name)?;
            js_strings(&obj[at + name.len()..]).into_iter().next()
        };
        if let (Some(l), Some(r)) = (field("left"), field("right")) {
            out.push((l, r, obj.contains("true")));
        }
    }
    out
}

/// Length of the bracketed span starting at `s[0] == '['`, skipping string literals.
fn bracket_span(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// JavaScript string literals in `s`, unescaped.
fn js_strings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            continue;
        }
        let mut lit = String::new();
        while let Some(d) = chars.next() {
            match d {
                '\\' => {
                    if let Some(e) = chars.next() {
                        lit.push(e);
                    }
                }
                _ if d == c => break,
                _ => lit.push(d),
            }
        }
        out.push(lit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maths(d: &Delimiters, s: &str) -> Vec<(String, bool)> {
        d.split(s)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Math { tex, display } => Some((tex.to_string(), display)),
                Piece::Text(_) => None,
                Piece::AsciiMath(a) => Some((format!("`{a}`"), false)),
            })
            .collect()
    }

    #[test]
    fn default_delimiters_and_environments() {
        let d = Delimiters::default();
        let got = maths(
            &d,
            "a \\(x_1\\) costs $5 and $6; $$\\sum_i i$$ and \\[y\\] [itex]z[/itex] \\begin{align}a&=b\\end{align}",
        );
        assert_eq!(
            got,
            [
                ("x_1".to_string(), false),
                ("\\sum_i i".to_string(), true),
                ("y".to_string(), true),
                ("z".to_string(), false),
                ("\\begin{align}a&=b\\end{align}".to_string(), true),
            ]
        );
        assert!(!d.dollar_inline());
    }

    #[test]
    fn page_config_adds_single_dollar() {
        let doc = Document::parse(
            "<script type=\"text/x-mathjax-config\">MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']], processEscapes: true}});</script>",
        );
        let d = Delimiters::from_page(&doc);
        assert!(d.dollar_inline());
        assert_eq!(
            maths(&d, "let $a$ and \\$5 and $$b$$"),
            [("a".into(), false), ("b".into(), true)]
        );
    }

    #[test]
    fn katex_config() {
        let doc = Document::parse(
            "<script>renderMathInElement(document.body, {delimiters: [{left: '@@', right: '@@', display: true}, {left: '%', right: '%', display: false}]});</script>",
        );
        let d = Delimiters::from_page(&doc);
        assert_eq!(
            maths(&d, "x @@y@@ %z%"),
            [("y".into(), true), ("z".into(), false)]
        );
    }

    #[test]
    fn asciimath_backticks_only_when_loaded() {
        let doc = Document::parse("<script src=\"MathJax.js?config=AM_HTMLorMML-full\"></script>");
        let d = Delimiters::from_page(&doc);
        assert_eq!(
            maths(&d, "when `a != 0` holds"),
            [("`a != 0`".into(), false)]
        );
        assert!(maths(&Delimiters::default(), "when `a != 0` holds").is_empty());
    }

    #[test]
    fn unclosed_openers_are_text() {
        let d = Delimiters::default();
        assert!(maths(&d, "\\( never closed $$ nor this").is_empty());
    }
}
