//! HTML page -> Markdown text in which every formula is LaTeX (`$..$` inline, `$$..$$` display).
//!
//! One walk over the DOM renders blocks (headings, paragraphs, lists, fenced code, Markdown
//! tables) while math is collected from every source OpenWebMath reads: MathJax scripts
//! (`math/tex`, `; mode=display`, `math/asciimath`), MathML (annotation, alttext, else
//! converted), KaTeX (its MathML half), MathJax 3 containers, LaTeX images (class names, LaTeX
//! services' URLs and query strings), Wikipedia's math elements, and delimiters in the text
//! itself — the page's own MathJax / KaTeX configuration, else the defaults. Text outside math
//! gets exactly one escape (`$` -> `\$`); math is never escaped.

use crate::boilerplate;
use crate::html::{Document, NodeId};

mod delimiters;
mod math_sources;
mod render;

pub use delimiters::Delimiters;

/// Options for [`extract`], OpenWebMath's values by default.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Drop navigation, hidden elements, link farms and boilerplate lines.
    pub boilerplate: bool,
    /// Pages with more links than this are skipped (OpenWebMath: 3000).
    pub max_links: usize,
    /// Link text above this share of a block's text makes the block a link farm (0.8).
    pub link_density: f64,
    /// Boilerplate line rule: share of words covered by phrases (0.18).
    pub line_ratio: f64,
    /// Boilerplate line rule: most phrases on a kept line (10).
    pub line_max_count: usize,
    /// A boilerplate line within this many final lines cuts the rest (15).
    pub tail_lines: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            boilerplate: true,
            max_links: 3000,
            link_density: 0.8,
            line_ratio: 0.18,
            line_max_count: 10,
            tail_lines: 15,
        }
    }
}

/// How many formulas came from each kind of source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MathCounts {
    /// `<script type="math/tex">` (MathJax 2 source).
    pub tex_script: usize,
    /// `<script type="math/asciimath">` and AsciiMath backticks converted to LaTeX.
    pub asciimath: usize,
    /// MathML via its TeX annotation (KaTeX, Wikipedia, MathJax 3 output included).
    pub mathml_annotation: usize,
    /// MathML via `alttext`.
    pub mathml_alttext: usize,
    /// MathML converted to LaTeX by [`crate::mathml`].
    pub mathml_converted: usize,
    /// LaTeX images (alt text or the service's query string).
    pub image: usize,
    /// Delimited LaTeX in the page text (`\(..\)`, `$$..$$`, environments, ...).
    pub delimited: usize,
}

impl MathCounts {
    /// All formulas.
    pub fn total(&self) -> usize {
        self.tex_script
            + self.asciimath
            + self.mathml_annotation
            + self.mathml_alttext
            + self.mathml_converted
            + self.image
            + self.delimited
    }
}

/// One extracted page.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The page's `<title>` (whitespace collapsed), else its first heading.
    pub title: String,
    /// Markdown with math as `$..$` / `$$..$$`.
    pub text: String,
    /// Formulas by source.
    pub math: MathCounts,
    /// `<a href>` links on the page.
    pub links: usize,
}

/// Why a page gives no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// More links than [`ExtractOptions::max_links`] (link directories, sitemaps).
    #[error("page has {links} links (limit {limit})")]
    TooManyLinks {
        /// Links found.
        links: usize,
        /// The limit.
        limit: usize,
    },
}

/// Extracts `html` to Markdown with LaTeX math.
pub fn extract(html: &str, opts: &ExtractOptions) -> Result<Extracted, ExtractError> {
    let doc = Document::parse(html);
    extract_document(&doc, opts)
}

/// [`extract`] on a parsed document.
pub fn extract_document(doc: &Document, opts: &ExtractOptions) -> Result<Extracted, ExtractError> {
    let links = doc
        .elements_named("a")
        .filter(|&a| doc.attr(a, "href").is_some())
        .count();
    if links > opts.max_links {
        return Err(ExtractError::TooManyLinks {
            links,
            limit: opts.max_links,
        });
    }
    let delims = Delimiters::from_page(doc);
    let start = content_root(doc, opts);
    let mut r = render::Renderer::new(doc, &delims, opts);
    r.walk(start);
    let (text, protected, math) = r.finish();
    let text = if opts.boilerplate {
        drop_boilerplate_lines(&text, &protected, opts)
    } else {
        text
    };
    let title = page_title(doc);
    Ok(Extracted {
        title,
        text,
        math,
        links,
    })
}

/// The element to render: the page's single `<main>` / `role=main` / `<article>` when it holds
/// most of the page, else `<body>` (or the whole document).
fn content_root(doc: &Document, opts: &ExtractOptions) -> NodeId {
    let body = doc.elements_named("body").next().unwrap_or(doc.root());
    if !opts.boilerplate {
        return body;
    }
    let candidates: Vec<NodeId> = doc
        .descendants(body)
        .filter(|&id| {
            doc.name(id) == Some("main")
                || doc.attr(id, "role") == Some("main")
                || doc.attr(id, "itemprop") == Some("articleBody")
        })
        .collect();
    let pick = match candidates.as_slice() {
        [one] => Some(*one),
        [] => {
            let articles: Vec<_> = doc
                .descendants(body)
                .filter(|&id| doc.name(id) == Some("article"))
                .collect();
            (articles.len() == 1).then(|| articles[0])
        }
        _ => None,
    };
    match pick {
        Some(id) if text_len(doc, id) * 5 >= text_len(doc, body) => id,
        _ => body,
    }
}

fn text_len(doc: &Document, id: NodeId) -> usize {
    doc.descendants(id)
        .filter_map(|d| doc.text(d))
        .map(|t| t.trim().len())
        .sum()
}

fn page_title(doc: &Document) -> String {
    let from = |name: &str| {
        doc.elements_named(name)
            .next()
            .map(|t| collapse_ws(&doc.text_content(t)))
            .filter(|t| !t.is_empty())
    };
    from("title").or_else(|| from("h1")).unwrap_or_default()
}

/// Collapses whitespace runs to one space and trims.
pub(crate) fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn drop_boilerplate_lines(text: &str, protected: &[bool], opts: &ExtractOptions) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let keep = boilerplate::keep_lines(
        &lines,
        protected,
        opts.line_ratio,
        opts.line_max_count,
        opts.tail_lines,
    );
    let mut out = String::with_capacity(text.len());
    let mut blank = true;
    for (line, k) in lines.iter().zip(keep) {
        if !k {
            continue;
        }
        if line.trim().is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
        blank = false;
    }
    out.trim_end().to_string()
}

/// Where an element's math comes from, when it is a math element.
pub(crate) enum MathElement {
    /// Not math.
    No,
    /// Math rendered output or a duplicate (MathJax preview, KaTeX HTML): skip it.
    Skip,
    /// A formula.
    Formula {
        /// LaTeX.
        tex: String,
        /// Display (block) math.
        display: bool,
    },
}
