//! The DOM walk that writes Markdown blocks with math.

use super::delimiters::{Delimiters, Piece};
use super::math_sources::classify;
use super::{ExtractOptions, MathCounts, MathElement};
use crate::boilerplate::{is_furniture, is_hidden_element};
use crate::html::{Document, Element, NodeData, NodeId};

/// Inline content collected for the current block.
#[derive(Debug, Clone)]
enum Inline {
    Text(String),
    Math { tex: String, display: bool },
    Code(String),
    Break,
}

/// A finished block: its Markdown, whether it holds math or code (protected from the
/// boilerplate line rule), and whether it continues a list (joined without a blank line).
struct Block {
    text: String,
    protected: bool,
    tight: bool,
}

/// Elements rendered as their own block.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "figure",
    "figcaption",
    "center",
    "address",
    "details",
    "summary",
    "dd",
    "dt",
    "dl",
    "body",
    "html",
    "fieldset",
    "caption",
    "hgroup",
    "legend",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "td",
    "th",
];

/// Non-content elements dropped even without boilerplate removal.
const NEVER: &[&str] = &[
    "script", "style", "head", "title", "template", "noscript", "svg", "meta", "link",
];

/// Elements whose link density is checked.
const LINK_FARM_CANDIDATES: &[&str] = &[
    "div", "ul", "ol", "p", "table", "section", "dl", "li", "span",
];

pub(crate) struct Renderer<'a> {
    doc: &'a Document,
    delims: &'a Delimiters,
    opts: &'a ExtractOptions,
    inline: Vec<Inline>,
    blocks: Vec<Block>,
    /// Open lists: (ordered, next number).
    lists: Vec<(bool, usize)>,
    /// Prefix for the next block (a list marker), consumed by it.
    pending_marker: Option<String>,
    /// Whether the last block was written inside a list.
    prev_in_list: bool,
    counts: MathCounts,
    /// Per node: characters of text below it, of which inside links, and whether it holds math.
    text_len: Vec<u32>,
    link_len: Vec<u32>,
    has_math: Vec<bool>,
}

impl<'a> Renderer<'a> {
    pub(crate) fn new(doc: &'a Document, delims: &'a Delimiters, opts: &'a ExtractOptions) -> Self {
        let (text_len, link_len, has_math) = subtree_stats(doc);
        Renderer {
            doc,
            delims,
            opts,
            inline: Vec::new(),
            blocks: Vec::new(),
            lists: Vec::new(),
            pending_marker: None,
            prev_in_list: false,
            counts: MathCounts::default(),
            text_len,
            link_len,
            has_math,
        }
    }

    /// Renders `id` and everything below it.
    pub(crate) fn walk(&mut self, id: NodeId) {
        match &self.doc.node(id).data {
            NodeData::Text(t) => self.inline.push(Inline::Text(t.clone())),
            NodeData::Element(el) => self.element(id, el),
            NodeData::Document => self.children(id),
        }
    }

    /// The Markdown, a protected flag per line, and the math counts.
    pub(crate) fn finish(mut self) -> (String, Vec<bool>, MathCounts) {
        self.flush();
        let mut text = String::new();
        let mut protected = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                text.push('\n');
                if !b.tight {
                    text.push('\n');
                    protected.push(false);
                }
            }
            text.push_str(&b.text);
            protected.extend(std::iter::repeat_n(b.protected, b.text.split('\n').count()));
        }
        (text, protected, self.counts)
    }

    fn children(&mut self, id: NodeId) {
        for &c in self.doc.children(id) {
            self.walk(c);
        }
    }

    fn element(&mut self, id: NodeId, el: &Element) {
        match classify(self.doc, id, el, &mut self.counts) {
            MathElement::Skip => return,
            MathElement::Formula { tex, display } => {
                self.inline.push(Inline::Math { tex, display });
                return;
            }
            MathElement::No => {}
        }
        if NEVER.contains(&el.name.as_str()) || (self.opts.boilerplate && self.is_noise(id, el)) {
            return;
        }
        match el.name.as_str() {
            "br" => self.inline.push(Inline::Break),
            "hr" => self.flush(),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => self.heading(id, el),
            "ul" | "ol" | "menu" => self.list(id, el.name == "ol"),
            "li" => self.list_item(id),
            "pre" => self.code_block(id),
            "table" => self.table(id),
            // Sphinx and most CMSs use blockquote for indentation, not quotation: a plain block
            // keeps multi-line display math byte-identical (no `> ` inside formulas).
            "blockquote" => {
                self.flush();
                self.children(id);
                self.flush();
            }
            "code" | "kbd" | "samp" | "tt" if !self.has_math[id as usize] => {
                let code = self.doc.text_content(id);
                if !code.trim().is_empty() {
                    self.inline.push(Inline::Code(code));
                }
            }
            name if BLOCKS.contains(&name) => {
                self.flush();
                self.children(id);
                self.flush();
            }
            _ => self.children(id),
        }
    }

    /// Furniture, or a block whose text is mostly link text (and holds no math).
    fn is_noise(&self, id: NodeId, el: &Element) -> bool {
        let text = self.text_len[id as usize] as f64;
        let links = self.link_len[id as usize] as f64;
        if is_furniture(self.doc, id) {
            // A tip box or margin note with math inside the content (Sphinx's `sidebar`
            // directive) is content; navigation with math in its link titles is link-dense.
            let boxed = matches!(el.name.as_str(), "aside" | "div" | "section" | "p" | "span");
            return !(boxed
                && self.has_math[id as usize]
                && links < 0.5 * text
                && !is_hidden_element(el));
        }
        if !LINK_FARM_CANDIDATES.contains(&el.name.as_str()) || self.has_math[id as usize] {
            return false;
        }
        text > 0.0 && links / text > self.opts.link_density
    }

    fn heading(&mut self, id: NodeId, el: &Element) {
        self.flush();
        self.children(id);
        let level = el.name.as_bytes()[1] - b'0';
        let marker = "#".repeat(level as usize) + " ";
        self.flush_with(Some(marker));
    }

    fn list(&mut self, id: NodeId, ordered: bool) {
        self.flush();
        self.lists.push((ordered, 1));
        self.children(id);
        self.flush();
        self.lists.pop();
    }

    fn list_item(&mut self, id: NodeId) {
        self.flush();
        let depth = self.lists.len().saturating_sub(1);
        let marker = match self.lists.last_mut() {
            Some((true, n)) => {
                *n += 1;
                format!("{}{}. ", "   ".repeat(depth), *n - 1)
            }
            _ => format!("{}- ", "  ".repeat(depth)),
        };
        self.pending_marker = Some(marker);
        self.children(id);
        self.flush();
        self.pending_marker = None;
    }

    fn code_block(&mut self, id: NodeId) {
        self.flush();
        let code = self.doc.text_content(id);
        let code = code.trim_matches('\n').trim_end();
        if code.trim().is_empty() {
            return;
        }
        let fence = if code.contains("```") { "~~~" } else { "```" };
        let text = format!("{fence}\n{code}\n{fence}");
        self.push_block(text, true);
    }

    fn table(&mut self, id: NodeId) {
        self.flush();
        let rows = table_rows(self.doc, id);
        let layout = rows.is_empty()
            || rows.iter().flatten().any(|&cell| {
                self.doc
                    .descendants(cell)
                    .skip(1)
                    .any(|d| is_block_content(self.doc, d))
            });
        if layout {
            self.children(id);
            self.flush();
            return;
        }
        let rendered: Vec<Vec<(String, bool)>> = rows
            .iter()
            .map(|r| r.iter().map(|&c| self.cell(c)).collect())
            .collect();
        let cols = rendered.iter().map(Vec::len).max().unwrap_or(0);
        let protected = rendered.iter().flatten().any(|c| c.1);
        let text = if rendered.len() >= 2 && cols >= 2 {
            markdown_table(&rendered, cols)
        } else {
            rendered
                .iter()
                .map(|r| r.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !text.trim().is_empty() {
            self.push_block(text, protected);
        }
    }

    /// One table cell's inline content on a single line, and whether it holds math.
    fn cell(&mut self, id: NodeId) -> (String, bool) {
        let saved = std::mem::take(&mut self.inline);
        self.children(id);
        let inline = std::mem::replace(&mut self.inline, saved);
        let (text, math) = self.render_inline(&inline);
        (escape_pipes_outside_math(&text.replace('\n', " ")), math)
    }

    /// Ends the current block (a pending list marker waits for the first block with text).
    fn flush(&mut self) {
        if self.inline.is_empty() {
            return;
        }
        let marker = self.pending_marker.take();
        self.flush_with(marker);
    }

    fn flush_with(&mut self, marker: Option<String>) {
        let inline = std::mem::take(&mut self.inline);
        let (text, math) = self.render_inline(&inline);
        let text = text.trim();
        if text.is_empty() {
            if marker.as_deref().is_some_and(|m| !m.starts_with('#')) {
                self.pending_marker = marker;
            }
            return;
        }
        let mut out = marker.unwrap_or_default();
        out.push_str(text);
        self.push_block(out, math);
    }

    /// Appends a block; blocks inside a list follow the previous list block without a blank line.
    fn push_block(&mut self, text: String, protected: bool) {
        let in_list = !self.lists.is_empty();
        let tight = in_list && self.prev_in_list;
        self.prev_in_list = in_list;
        self.blocks.push(Block {
            text,
            protected,
            tight,
        });
    }

    /// Inline pieces -> one Markdown string (lines for display math), and whether it has math.
    fn render_inline(&mut self, inline: &[Inline]) -> (String, bool) {
        let mut out = String::new();
        let mut has_math = false;
        let mut i = 0;
        while i < inline.len() {
            match &inline[i] {
                Inline::Text(_) => {
                    let mut merged = String::new();
                    while let Some(Inline::Text(t)) = inline.get(i) {
                        merged.push_str(t);
                        i += 1;
                    }
                    has_math |= self.text_with_math(&merged, &mut out);
                    continue;
                }
                Inline::Math { tex, display } => {
                    push_math(&mut out, tex, *display);
                    has_math = true;
                }
                Inline::Code(c) => {
                    let c = super::collapse_ws(c);
                    let tick = if c.contains('`') { "``" } else { "`" };
                    out.push_str(&format!("{tick}{c}{tick}"));
                }
                Inline::Break => out.push('\n'),
            }
            i += 1;
        }
        (tidy_lines(&out), has_math)
    }

    /// Scans text for delimited math; writes escaped text and math. True when math was found.
    fn text_with_math(&mut self, text: &str, out: &mut String) -> bool {
        let mut found = false;
        for piece in self.delims.split(text) {
            match piece {
                Piece::Text(t) => push_text(out, t),
                Piece::Math { tex, display } => {
                    self.counts.delimited += 1;
                    push_math(out, tex, display);
                    found = true;
                }
                Piece::AsciiMath(src) => {
                    self.counts.asciimath += 1;
                    push_math(out, &crate::asciimath::asciimath_to_latex(src), false);
                    found = true;
                }
            }
        }
        found
    }
}

/// Text outside math: whitespace collapsed, `$` and backticks escaped.
fn push_text(out: &mut String, t: &str) {
    let mut prev_space = out.ends_with([' ', '\n']) || out.is_empty();
    let mut prev_backslash = false;
    for c in t.chars() {
        if c.is_whitespace() || c == '\u{a0}' {
            if !prev_space {
                out.push(' ');
                prev_space = true;
            }
            prev_backslash = false;
            continue;
        }
        // `$` would open math and a backtick a code span that swallows the next formula's `$`.
        if (c == '$' || c == '`') && !prev_backslash {
            out.push('\\');
        }
        out.push(c);
        prev_space = false;
        prev_backslash = c == '\\';
    }
}

fn push_math(out: &mut String, tex: &str, display: bool) {
    if display {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("$$");
        out.push_str(&fence_safe(tex.trim()));
        out.push_str("$$\n");
    } else {
        let one_line: String = tex.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push('$');
        out.push_str(&fence_safe(&one_line));
        out.push('$');
    }
}

/// A formula that cannot end its own delimiters: a bare `$` inside (invalid TeX in math mode
/// anyway) becomes `\$`, and a trailing lone backslash gets a space (`\ `, TeX's control space)
/// so it does not escape the closing `$`.
fn fence_safe(tex: &str) -> String {
    let mut out = String::with_capacity(tex.len() + 1);
    let mut backslashes = 0;
    for c in tex.chars() {
        if c == '$' && backslashes % 2 == 0 {
            out.push('\\');
        }
        out.push(c);
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
    }
    if backslashes % 2 == 1 {
        out.push(' ');
    }
    out
}

/// Escapes `|` for a Markdown table cell, but never inside `$..$` / `$$..$$` (the formula
/// must stay byte-identical; `\|` means ‖ in LaTeX).
fn escape_pipes_outside_math(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_math = false;
    let mut prev = '\0';
    for c in s.chars() {
        if c == '$' && prev != '\\' {
            in_math = !in_math;
        }
        if c == '|' && !in_math {
            out.push('\\');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Trims every line, drops empty ones, and joins them with newlines.
fn tidy_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_display = false;
    for line in s.split('\n') {
        let t = if in_display {
            line.trim_end()
        } else {
            line.trim()
        };
        let was_display = in_display;
        let dollars = t.matches("$$").count();
        if dollars % 2 == 1 {
            in_display = !in_display;
        }
        // Blank lines inside a display formula are part of its source: keep them.
        if t.is_empty() && !was_display {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(t);
    }
    out
}

/// Rows of a table (not of tables nested in it), each a list of its cells.
fn table_rows(doc: &Document, table: NodeId) -> Vec<Vec<NodeId>> {
    let mut rows = Vec::new();
    let mut stack: Vec<NodeId> = doc.children(table).iter().rev().copied().collect();
    while let Some(id) = stack.pop() {
        match doc.name(id) {
            Some("tr") => rows.push(
                doc.children(id)
                    .iter()
                    .copied()
                    .filter(|&c| matches!(doc.name(c), Some("td" | "th")))
                    .collect(),
            ),
            Some("thead" | "tbody" | "tfoot") => stack.extend(doc.children(id).iter().rev()),
            _ => {}
        }
    }
    rows
}

fn is_block_content(doc: &Document, id: NodeId) -> bool {
    matches!(
        doc.name(id),
        Some(
            "table"
                | "pre"
                | "ul"
                | "ol"
                | "p"
                | "div"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "blockquote"
                | "dl"
        )
    )
}

fn markdown_table(rows: &[Vec<(String, bool)>], cols: usize) -> String {
    let line = |r: &Vec<(String, bool)>| {
        let mut cells: Vec<&str> = r.iter().map(|c| c.0.as_str()).collect();
        cells.resize(cols, "");
        format!("| {} |", cells.join(" | "))
    };
    let mut out = vec![line(&rows[0]), format!("|{}", "---|".repeat(cols))];
    out.extend(rows[1..].iter().map(line));
    out.join("\n")
}

/// Text length, link text length and "holds math" for every node, bottom-up (children always
/// have larger ids than their parents).
fn subtree_stats(doc: &Document) -> (Vec<u32>, Vec<u32>, Vec<bool>) {
    let n = doc.len();
    let mut text = vec![0u32; n];
    let mut link = vec![0u32; n];
    let mut math = vec![false; n];
    for id in (0..n as NodeId).rev() {
        match &doc.node(id).data {
            NodeData::Text(t) => {
                text[id as usize] = t.split_whitespace().map(|w| w.len() as u32 + 1).sum();
                math[id as usize] = t.contains('\\') || t.contains('$') || t.contains("[math]");
            }
            NodeData::Element(e) => {
                let is_math = e.name == "math"
                    || (e.name == "script"
                        && e.attr("type").is_some_and(|t| t.starts_with("math/")))
                    || (e.name == "img"
                        && e.attr("class")
                            .is_some_and(|c| c.contains("math") || c.contains("tex")));
                math[id as usize] |= is_math;
                if e.name == "a" {
                    link[id as usize] = text[id as usize];
                }
            }
            NodeData::Document => {}
        }
        if let Some(p) = doc.parent(id) {
            text[p as usize] += text[id as usize];
            link[p as usize] += link[id as usize];
            math[p as usize] |= math[id as usize];
        }
    }
    (text, link, math)
}
