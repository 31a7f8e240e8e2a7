//! A small, lenient HTML parser: a single-pass tokenizer and a tree builder that knows the
//! few rules real pages depend on (void elements, implied end tags of `p`/`li`/`td`/..., raw
//! text in `script`/`style`, foreign content in `math`/`svg` where `/>` closes an element).
//!
//! It is not the HTML5 algorithm — no adoption agency, no foster parenting — because extraction
//! only needs a tree whose text and element nesting match what a browser shows on ordinary
//! pages, and a hand-rolled pass is several times faster than a spec-complete parser. Names are
//! lower-cased; entities are decoded in text and attribute values; comments and doctypes are
//! dropped.

use crate::html_entities::{is_legacy, lookup_entity};

/// Index of a node in its [`Document`].
pub type NodeId = u32;

/// An element's name and attributes (names lower-cased, values entity-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag name, lower-cased.
    pub name: String,
    /// Attributes in source order; a repeated name keeps its first value first.
    pub attrs: Vec<(String, String)>,
}

impl Element {
    /// Value of attribute `name` (lower-case), if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `class` attribute lists `class` as one of its whitespace-separated names.
    pub fn has_class(&self, class: &str) -> bool {
        self.attr("class")
            .is_some_and(|c| c.split_ascii_whitespace().any(|c| c == class))
    }
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeData {
    /// The document root (id 0).
    Document,
    /// An element.
    Element(Element),
    /// A run of text, entities decoded (raw in `script`/`style`).
    Text(String),
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Parent node; `None` only for the root.
    pub parent: Option<NodeId>,
    /// Children in document order.
    pub children: Vec<NodeId>,
    /// The node's content.
    pub data: NodeData,
}

/// A parsed page: an arena of nodes, the root at id 0.
#[derive(Debug, Clone)]
pub struct Document {
    nodes: Vec<Node>,
}

/// Elements that never have content.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "keygen",
];

/// Elements whose content is raw text up to their end tag.
const RAW_TEXT: &[&str] = &[
    "script", "style", "xmp", "iframe", "noembed", "textarea", "title",
];

/// Block elements whose start closes an open `p`.
const CLOSES_P: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "details",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "ul",
];

/// Deepest nesting kept; deeper start tags become siblings (guards recursion later on).
const MAX_DEPTH: usize = 400;

impl Document {
    /// Parses `html`; never fails (malformed markup is repaired or read as text).
    pub fn parse(html: &str) -> Document {
        let mut builder = Builder::new(html.len());
        Tokenizer { src: html, pos: 0 }.run(&mut builder);
        Document {
            nodes: builder.nodes,
        }
    }

    /// The root node's id.
    pub fn root(&self) -> NodeId {
        0
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the document has nothing but its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// Children of `id` in document order.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id as usize].children
    }

    /// Parent of `id`.
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.nodes[id as usize].parent
    }

    /// The element at `id`, if it is one.
    pub fn element(&self, id: NodeId) -> Option<&Element> {
        match &self.nodes[id as usize].data {
            NodeData::Element(e) => Some(e),
            _ => None,
        }
    }

    /// Tag name of `id` when it is an element.
    pub fn name(&self, id: NodeId) -> Option<&str> {
        self.element(id).map(|e| e.name.as_str())
    }

    /// Attribute `name` of element `id`.
    pub fn attr(&self, id: NodeId, name: &str) -> Option<&str> {
        self.element(id).and_then(|e| e.attr(name))
    }

    /// The text of a text node.
    pub fn text(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[id as usize].data {
            NodeData::Text(t) => Some(t),
            _ => None,
        }
    }

    /// All text below `id` concatenated in document order (like DOM `textContent`).
    pub fn text_content(&self, id: NodeId) -> String {
        let mut out = String::new();
        for d in self.descendants(id) {
            if let Some(t) = self.text(d) {
                out.push_str(t);
            }
        }
        out
    }

    /// `id` and every node below it, in document order (iterative, any depth).
    pub fn descendants(&self, id: NodeId) -> Descendants<'_> {
        Descendants {
            doc: self,
            stack: vec![id],
        }
    }

    /// Every element named `name` in the document, in document order.
    pub fn elements_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = NodeId> + 'a {
        self.descendants(0)
            .filter(move |&id| self.name(id) == Some(name))
    }

    /// Nearest ancestor of `id` (excluding itself) for which `pred` holds.
    pub fn ancestor_where(
        &self,
        id: NodeId,
        mut pred: impl FnMut(NodeId) -> bool,
    ) -> Option<NodeId> {
        let mut cur = self.parent(id);
        while let Some(p) = cur {
            if pred(p) {
                return Some(p);
            }
            cur = self.parent(p);
        }
        None
    }
}

/// Pre-order walk returned by [`Document::descendants`].
pub struct Descendants<'a> {
    doc: &'a Document,
    stack: Vec<NodeId>,
}

impl Iterator for Descendants<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        let id = self.stack.pop()?;
        self.stack
            .extend(self.doc.children(id).iter().rev().copied());
        Some(id)
    }
}

/// Builds the tree from tokens, repairing the common omissions.
struct Builder {
    nodes: Vec<Node>,
    /// Open elements, the root at the bottom.
    open: Vec<NodeId>,
    /// How many open elements are `math` or `svg` (foreign content).
    foreign: usize,
}

impl Builder {
    fn new(len_hint: usize) -> Builder {
        let mut nodes = Vec::with_capacity(len_hint / 24 + 8);
        nodes.push(Node {
            parent: None,
            children: Vec::new(),
            data: NodeData::Document,
        });
        Builder {
            nodes,
            open: vec![0],
            foreign: 0,
        }
    }

    fn current(&self) -> NodeId {
        *self.open.last().unwrap_or(&0)
    }

    fn append(&mut self, data: NodeData) -> NodeId {
        let parent = self.current();
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node {
            parent: Some(parent),
            children: Vec::new(),
            data,
        });
        self.nodes[parent as usize].children.push(id);
        id
    }

    fn text(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        let cur = self.current();
        if let Some(&last) = self.nodes[cur as usize].children.last() {
            if let NodeData::Text(t) = &mut self.nodes[last as usize].data {
                t.push_str(&text);
                return;
            }
        }
        self.append(NodeData::Text(text));
    }

    fn open_name(&self, i: usize) -> &str {
        match &self.nodes[self.open[i] as usize].data {
            NodeData::Element(e) => &e.name,
            _ => "",
        }
    }

    /// Index in `open` of the nearest open `name`, not crossing any of `barriers`.
    fn find_open(&self, name: &str, barriers: &[&str]) -> Option<usize> {
        for i in (1..self.open.len()).rev() {
            let n = self.open_name(i);
            if n == name {
                return Some(i);
            }
            if barriers.contains(&n) {
                return None;
            }
        }
        None
    }

    fn pop_to(&mut self, index: usize) {
        while self.open.len() > index {
            if let Some(id) = self.open.pop() {
                if matches!(self.nodes[id as usize].data, NodeData::Element(ref e) if e.name == "math" || e.name == "svg")
                {
                    self.foreign = self.foreign.saturating_sub(1);
                }
            }
        }
    }

    /// Closes elements that the start of `name` implicitly ends.
    fn implied_end(&mut self, name: &str) {
        if self.foreign > 0 {
            return;
        }
        let table_scope = ["table", "html"];
        let list_scope = ["ul", "ol", "table", "div"];
        let closes: Option<(&[&str], &[&str])> = match name {
            _ if CLOSES_P.contains(&name) => Some((&["p"], &["button", "table", "td", "th"])),
            "li" => Some((&["li"], &list_scope)),
            "dt" | "dd" => Some((&["dt", "dd"], &["dl", "table"])),
            "tr" => Some((&["tr", "td", "th"], &table_scope)),
            "td" | "th" => Some((&["td", "th"], &["tr", "table"])),
            "thead" | "tbody" | "tfoot" => Some((&["thead", "tbody", "tfoot"], &table_scope)),
            "option" => Some((&["option"], &["select"])),
            _ => None,
        };
        let Some((targets, barriers)) = closes else {
            return;
        };
        for t in targets {
            if let Some(i) = self.find_open(t, barriers) {
                self.pop_to(i);
                if name == "tr" {
                    continue;
                }
                break;
            }
        }
        if name == "tr" {
            if let Some(i) = self.find_open("tr", &table_scope) {
                self.pop_to(i);
            }
        }
    }

    fn start(&mut self, el: Element, self_closing: bool) {
        self.implied_end(&el.name);
        let name_is_foreign = el.name == "math" || el.name == "svg";
        let void = VOID.contains(&el.name.as_str()) && self.foreign == 0;
        let closes_now = void || (self_closing && (self.foreign > 0 || name_is_foreign));
        let id = self.append(NodeData::Element(el));
        if closes_now || self.open.len() >= MAX_DEPTH {
            return;
        }
        if name_is_foreign {
            self.foreign += 1;
        }
        self.open.push(id);
    }

    fn end(&mut self, name: &str) {
        let barriers: &[&str] = match name {
            "p" => &["button", "table", "td", "th", "div"],
            _ => &[],
        };
        if let Some(i) = self.find_open(name, barriers) {
            self.pop_to(i);
        }
    }
}

/// Splits the source into tokens and feeds them to the builder.
struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
}

impl Tokenizer<'_> {
    fn run(&mut self, b: &mut Builder) {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() {
            let next_lt = memchr::memchr(b'<', &bytes[self.pos..]).map(|i| self.pos + i);
            let end = next_lt.unwrap_or(bytes.len());
            if end > self.pos {
                b.text(decode_entities(&self.src[self.pos..end]));
                self.pos = end;
            }
            if next_lt.is_some() && !self.markup(b) {
                b.text("<".to_string());
                self.pos += 1;
            }
        }
    }

    /// Reads the markup at `<`; false when it is not markup (then `<` is text).
    fn markup(&mut self, b: &mut Builder) -> bool {
        let rest = &self.src.as_bytes()[self.pos..];
        match rest.get(1) {
            Some(b'!') => {
                self.bang(b);
                true
            }
            Some(b'?') => {
                self.skip_past(">");
                true
            }
            Some(b'/') if rest.get(2).is_some_and(|c| c.is_ascii_alphabetic()) => {
                self.end_tag(b);
                true
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.start_tag(b);
                true
            }
            _ => false,
        }
    }

    fn skip_past(&mut self, pat: &str) {
        match find_from(self.src, self.pos, pat) {
            Some(i) => self.pos = i + pat.len(),
            None => self.pos = self.src.len(),
        }
    }

    /// Comments, doctypes and CDATA sections.
    fn bang(&mut self, b: &mut Builder) {
        let rest = &self.src[self.pos..];
        if rest.starts_with("<!--") {
            self.pos += 4;
            self.skip_past("-->");
        } else if rest.starts_with("<![CDATA[") {
            let start = self.pos + 9;
            let end = find_from(self.src, start, "]]>").unwrap_or(self.src.len());
            b.text(self.src[start..end].to_string());
            self.pos = (end + 3).min(self.src.len());
        } else {
            self.skip_past(">");
        }
    }

    fn end_tag(&mut self, b: &mut Builder) {
        let (name, after) = read_name(self.src, self.pos + 2);
        self.pos = after;
        self.skip_past(">");
        b.end(&name);
    }

    fn start_tag(&mut self, b: &mut Builder) {
        let (name, after) = read_name(self.src, self.pos + 1);
        self.pos = after;
        let (attrs, self_closing) = self.attributes();
        let raw = RAW_TEXT.contains(&name.as_str()) && b.foreign == 0;
        b.start(Element { name, attrs }, self_closing);
        if raw && !self_closing {
            self.raw_text(b);
        }
    }

    /// Content of a raw-text element up to its end tag (which closes it).
    fn raw_text(&mut self, b: &mut Builder) {
        let id = b.current();
        let name = b.open_name(b.open.len() - 1).to_string();
        let close = format!("</{name}");
        let end = find_ci(self.src, self.pos, &close).unwrap_or(self.src.len());
        let body = &self.src[self.pos..end];
        let text = if name == "title" || name == "textarea" {
            decode_entities(body)
        } else {
            body.to_string()
        };
        b.text(text);
        self.pos = end;
        if end < self.src.len() {
            self.skip_past(">");
        }
        if b.current() == id {
            b.pop_to(b.open.len() - 1);
        }
    }

    /// Attributes up to and including `>`; returns them and whether the tag ended in `/>`.
    fn attributes(&mut self) -> (Vec<(String, String)>, bool) {
        let bytes = self.src.as_bytes();
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            match bytes.get(self.pos) {
                None => return (attrs, false),
                Some(b'>') => {
                    self.pos += 1;
                    return (attrs, false);
                }
                Some(b'/') if bytes.get(self.pos + 1) == Some(&b'>') => {
                    self.pos += 2;
                    return (attrs, true);
                }
                Some(b'/') => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let (key, value) = self.attribute();
            if !key.is_empty() && !attrs.iter().any(|(k, _)| *k == key) {
                attrs.push((key, value));
            }
        }
    }

    /// One `name`, `name=value`, `name="value"` or `name='value'`.
    fn attribute(&mut self) -> (String, String) {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        while self.pos < bytes.len()
            && !bytes[self.pos].is_ascii_whitespace()
            && !matches!(bytes[self.pos], b'=' | b'>')
            && !(bytes[self.pos] == b'/' && bytes.get(self.pos + 1) == Some(&b'>'))
        {
            self.pos += 1;
        }
        if self.pos == start {
            self.pos += 1;
            return (String::new(), String::new());
        }
        let key = self.src[start..self.pos].to_ascii_lowercase();
        let mut p = self.pos;
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        if bytes.get(p) != Some(&b'=') {
            return (key, String::new());
        }
        p += 1;
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        self.pos = p;
        (key, self.attribute_value())
    }

    fn attribute_value(&mut self) -> String {
        let bytes = self.src.as_bytes();
        match bytes.get(self.pos) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let start = self.pos + 1;
                let end = memchr::memchr(q, &bytes[start..])
                    .map(|i| start + i)
                    .unwrap_or(bytes.len());
                self.pos = (end + 1).min(bytes.len());
                decode_entities(&self.src[start..end])
            }
            _ => {
                let start = self.pos;
                while self.pos < bytes.len()
                    && !bytes[self.pos].is_ascii_whitespace()
                    && bytes[self.pos] != b'>'
                {
                    self.pos += 1;
                }
                decode_entities(&self.src[start..self.pos])
            }
        }
    }
}

/// Reads a tag name starting at `from`; returns it lower-cased and the index after it.
fn read_name(src: &str, from: usize) -> (String, usize) {
    let bytes = src.as_bytes();
    let mut end = from;
    while end < bytes.len()
        && !bytes[end].is_ascii_whitespace()
        && !matches!(bytes[end], b'/' | b'>')
    {
        end += 1;
    }
    (src[from..end].to_ascii_lowercase(), end)
}

fn find_from(src: &str, from: usize, pat: &str) -> Option<usize> {
    memchr::memmem::find(&src.as_bytes()[from..], pat.as_bytes()).map(|i| from + i)
}

/// Case-insensitive search for an ASCII `pat` (e.g. `</script`).
fn find_ci(src: &str, from: usize, pat: &str) -> Option<usize> {
    let bytes = src.as_bytes();
    let pat = pat.as_bytes();
    let mut i = from;
    while let Some(j) = memchr::memchr(b'<', &bytes[i..]) {
        let at = i + j;
        if bytes.len() - at >= pat.len() && bytes[at..at + pat.len()].eq_ignore_ascii_case(pat) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Decodes character references (`&amp;`, `&#65;`, `&#x41;`, named ones) in `s`.
///
/// Unknown or malformed references are kept as written, as browsers do.
pub fn decode_entities(s: &str) -> String {
    let Some(first) = memchr::memchr(b'&', s.as_bytes()) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..first]);
    let mut rest = &s[first..];
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match entity_at(rest) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes one reference at the start of `s` (which begins with `&`).
fn entity_at(s: &str) -> Option<(String, usize)> {
    let bytes = s.as_bytes();
    if bytes.get(1) == Some(&b'#') {
        let (digits_at, radix) = match bytes.get(2) {
            Some(b'x') | Some(b'X') => (3, 16),
            _ => (2, 10),
        };
        let mut end = digits_at;
        while end < bytes.len() && (bytes[end] as char).is_digit(radix) && end - digits_at < 8 {
            end += 1;
        }
        if end == digits_at {
            return None;
        }
        let code = u32::from_str_radix(&s[digits_at..end], radix).ok()?;
        let ch = match code {
            0 => '\u{FFFD}',
            0x80..=0x9F => windows_1252_c1(code),
            _ => char::from_u32(code).unwrap_or('\u{FFFD}'),
        };
        let used = if bytes.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        };
        return Some((ch.to_string(), used));
    }
    let mut end = 1;
    while end < bytes.len() && end < 40 && bytes[end].is_ascii_alphanumeric() {
        end += 1;
    }
    if end == 1 {
        return None;
    }
    if bytes.get(end) == Some(&b';') {
        if let Some(v) = lookup_entity(&s[1..end]) {
            return Some((v.to_string(), end + 1));
        }
    }
    // Without `;` only the legacy names count, and only the longest legacy prefix
    // (`&notit` is `¬it`), never before `=` (URL query strings in attributes).
    if bytes.get(end) == Some(&b'=') {
        return None;
    }
    let name = &s[1..end];
    (2..=name.len())
        .rev()
        .find(|&n| is_legacy(&name[..n]))
        .and_then(|n| Some((lookup_entity(&name[..n])?.to_string(), n + 1)))
}

/// Numeric references in 0x80..0x9F mean windows-1252 characters (HTML spec).
fn windows_1252_c1(code: u32) -> char {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    TABLE[(code - 0x80) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(doc: &Document, id: NodeId) -> Vec<String> {
        doc.children(id)
            .iter()
            .map(|&c| match &doc.node(c).data {
                NodeData::Element(e) => e.name.clone(),
                NodeData::Text(t) => format!("#{t}"),
                NodeData::Document => "doc".into(),
            })
            .collect()
    }

    #[test]
    fn nests_and_closes_implied_elements() {
        let doc = Document::parse("<ul><li>a<li>b</ul><p>x<p>y<div>z</div>");
        let ul = doc.elements_named("ul").next().unwrap();
        assert_eq!(names(&doc, ul), ["li", "li"]);
        let ps: Vec<_> = doc.elements_named("p").collect();
        assert_eq!(ps.len(), 2);
        assert_eq!(doc.text_content(ps[1]), "y");
        let div = doc.elements_named("div").next().unwrap();
        assert_eq!(doc.parent(div), Some(0));
    }

    #[test]
    fn tables_close_cells_and_rows() {
        let doc = Document::parse("<table><tr><td>1<td>2<tr><th>3</table>after");
        let rows: Vec<_> = doc.elements_named("tr").collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(names(&doc, rows[0]), ["td", "td"]);
        assert_eq!(doc.text_content(rows[1]), "3");
        assert_eq!(names(&doc, 0).last().unwrap(), "#after");
    }

    #[test]
    fn raw_text_and_entities() {
        let doc = Document::parse(
            "<script type=\"math/tex\">a<b &amp; </p></SCRIPT><p title='x &lt; y'>&alpha;&#955;&#x3bb;&amp &bogus; 5 < 6</p>",
        );
        let s = doc.elements_named("script").next().unwrap();
        assert_eq!(doc.text_content(s), "a<b &amp; </p>");
        assert_eq!(doc.attr(s, "type"), Some("math/tex"));
        let p = doc.elements_named("p").next().unwrap();
        assert_eq!(doc.attr(p, "title"), Some("x < y"));
        assert_eq!(doc.text_content(p), "αλλ& &bogus; 5 < 6");
        let doc = Document::parse("<a href=\"?x=1&lang=en&copy=2\">&notit; &copy2023 &lang;</a>");
        let a = doc.elements_named("a").next().unwrap();
        assert_eq!(doc.attr(a, "href"), Some("?x=1&lang=en&copy=2"));
        assert_eq!(doc.text_content(a), "¬it; ©2023 ⟨");
    }

    #[test]
    fn foreign_content_self_closes_and_void_elements_do_not_nest() {
        let doc = Document::parse(
            "<p>a<br>b<img src=x.png alt=\"\\alpha\">c<math><mi>x</mi><mspace width=\"1em\"/><mn>2</mn></math></p>",
        );
        let p = doc.elements_named("p").next().unwrap();
        assert_eq!(names(&doc, p), ["#a", "br", "#b", "img", "#c", "math"]);
        let math = doc.elements_named("math").next().unwrap();
        assert_eq!(names(&doc, math), ["mi", "mspace", "mn"]);
    }

    #[test]
    fn survives_garbage() {
        for s in [
            "<",
            "<<>>",
            "</",
            "<a href=\"unterminated",
            "<!-- no end",
            "&#xFFFFFFFF;",
            "<div/",
        ] {
            let doc = Document::parse(s);
            let _ = doc.text_content(0);
        }
        let deep = "<div>".repeat(10_000);
        let doc = Document::parse(&deep);
        assert_eq!(doc.len(), 10_001);
    }

    #[test]
    fn comments_doctype_cdata() {
        let doc = Document::parse("<!DOCTYPE html><!-- c --><math><![CDATA[x<y]]></math>");
        assert_eq!(doc.text_content(0), "x<y");
    }
}
