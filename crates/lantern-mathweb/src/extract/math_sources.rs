//! Elements that carry math: MathJax scripts, MathML, KaTeX, MathJax 3 containers, LaTeX
//! images, Wikipedia and StackExchange math; and the rendered duplicates to skip.

use super::{MathCounts, MathElement};
use crate::asciimath::asciimath_to_latex as asciimath;
use crate::html::{Document, Element, NodeId};
use crate::mathml::{math_element_latex, Source};

/// Class names of rendered math output that duplicates a source kept elsewhere.
const RENDERED: &[&str] = &[
    "MathJax_Preview",
    "MathJax",
    "MathJax_Display",
    "MathJax_SVG",
    "MathJax_SVG_Display",
    "MathJax_CHTML",
    "MathJax_MathML",
    "MJX_Assistive_MathML",
    "katex-html",
];

/// Image classes that mean "this image is a formula".
const IMAGE_CLASSES: &[&str] = &[
    "latex",
    "tex",
    "latexcenter",
    "latexdisplay",
    "latexblock",
    "math",
    "wp-latex",
    "ql-img-inline-formula",
    "ql-img-displayed-equation",
    "mwe-math-fallback-image-inline",
    "mwe-math-fallback-image-display",
    "mimetex",
    "equation",
];

/// URL parts of LaTeX image services.
const IMAGE_SERVICES: &[&str] = &[
    "latex.php",
    "codecogs",
    "mimetex.cgi",
    "mathtex.cgi",
    "tex.cgi",
    "chart.apis.google.com/chart",
    "/math/render/",
    "latex.artofproblemsolving.com",
    "quicklatex.com",
];

/// Classifies element `id`, counting the formula it yields.
pub(crate) fn classify(
    doc: &Document,
    id: NodeId,
    el: &Element,
    counts: &mut MathCounts,
) -> MathElement {
    match el.name.as_str() {
        "script" => return script(doc, id, el, counts),
        "math" => return math(doc, id, counts),
        "mjx-container" => return first_math(doc, id, counts, el.attr("display") == Some("true")),
        "img" => return image(doc, id, el, counts),
        _ => {}
    }
    if RENDERED.iter().any(|c| el.has_class(c)) {
        return MathElement::Skip;
    }
    if el.has_class("mwe-math-element") {
        let display = doc.descendants(id).any(|d| {
            doc.element(d)
                .is_some_and(|e| e.has_class("mwe-math-mathml-display"))
        });
        return match first_math(doc, id, counts, display) {
            MathElement::Skip => wiki_fallback(doc, id, counts),
            m => m,
        };
    }
    if el.has_class("math-container") {
        return math_container(doc, id, el, counts);
    }
    MathElement::No
}

fn script(doc: &Document, id: NodeId, el: &Element, counts: &mut MathCounts) -> MathElement {
    let ty = el.attr("type").unwrap_or("").to_ascii_lowercase();
    let body = doc.text_content(id);
    if ty.starts_with("math/tex") {
        counts.tex_script += 1;
        let display = ty.contains("mode=display");
        return formula(body.trim().to_string(), display);
    }
    if ty.starts_with("math/asciimath") {
        counts.asciimath += 1;
        return formula(asciimath(body.trim()), ty.contains("mode=display"));
    }
    if ty.starts_with("math/mml") {
        let inner = Document::parse(&body);
        let found = inner.elements_named("math").next();
        if let Some(m) = found {
            let display = inner.attr(m, "display") == Some("block");
            if let MathElement::Formula { tex, .. } = math(&inner, m, counts) {
                return formula(tex, display);
            }
        }
    }
    MathElement::Skip
}

fn math(doc: &Document, id: NodeId, counts: &mut MathCounts) -> MathElement {
    let (tex, source) = math_element_latex(doc, id);
    match source {
        Source::Annotation => counts.mathml_annotation += 1,
        Source::AltText => counts.mathml_alttext += 1,
        Source::Converted => counts.mathml_converted += 1,
    }
    let display = doc.attr(id, "display") == Some("block")
        || doc.attr(id, "mode") == Some("display")
        || doc
            .ancestor_where(id, |a| {
                doc.element(a).is_some_and(|e| {
                    e.has_class("katex-display")
                        || e.has_class("MathJax_Display")
                        || e.has_class("mwe-math-mathml-display")
                })
            })
            .is_some();
    formula(unwrap_displaystyle(tex.trim()), display)
}

fn first_math(doc: &Document, id: NodeId, counts: &mut MathCounts, display: bool) -> MathElement {
    match doc.descendants(id).find(|&d| doc.name(d) == Some("math")) {
        Some(m) => match math(doc, m, counts) {
            MathElement::Formula { tex, display: d } => formula(tex, d || display),
            other => other,
        },
        None => MathElement::Skip,
    }
}

fn wiki_fallback(doc: &Document, id: NodeId, counts: &mut MathCounts) -> MathElement {
    for d in doc.descendants(id) {
        if let Some(e) = doc.element(d) {
            if e.name == "img" {
                if let MathElement::Formula { tex, display } = image(doc, d, e, counts) {
                    return formula(tex, display);
                }
            }
        }
    }
    MathElement::Skip
}

/// StackExchange's `<span class="math-container">$..$</span>`.
fn math_container(
    doc: &Document,
    id: NodeId,
    el: &Element,
    counts: &mut MathCounts,
) -> MathElement {
    let text = doc.text_content(id);
    let t = text.trim();
    counts.delimited += 1;
    if let Some(inner) = t.strip_prefix("$$").and_then(|s| s.strip_suffix("$$")) {
        return formula(inner.trim().to_string(), true);
    }
    if let Some(inner) = t.strip_prefix('$').and_then(|s| s.strip_suffix('$')) {
        return formula(inner.trim().to_string(), false);
    }
    formula(strip_delimiters(t).to_string(), el.name == "div")
}

fn image(doc: &Document, id: NodeId, el: &Element, counts: &mut MathCounts) -> MathElement {
    let src = el.attr("src").unwrap_or("");
    // Sphinx imgmath puts display formulas as a bare <img> inside <div class="math">.
    let math_parent = doc
        .ancestor_where(id, |a| doc.element(a).is_some_and(|e| e.name == "div"))
        .filter(|&a| doc.element(a).is_some_and(|e| e.has_class("math")));
    let by_class = IMAGE_CLASSES.iter().any(|c| el.has_class(c))
        || math_parent.is_some()
        || src.contains("_images/math/");
    let by_src = IMAGE_SERVICES.iter().any(|s| src.contains(s));
    if !by_class && !by_src {
        return MathElement::No;
    }
    let alt = el.attr("alt").map(str::trim).filter(|a| !a.is_empty());
    let tex = match alt {
        Some(a) => strip_delimiters(a).to_string(),
        None if by_src => match query_tex(src) {
            Some(t) => t,
            None => return MathElement::No,
        },
        None => return MathElement::No,
    };
    counts.image += 1;
    let class = el.attr("class").unwrap_or("");
    let display = math_parent.is_some()
        || ["display", "center", "block"]
            .iter()
            .any(|w| class.contains(w));
    formula(unwrap_displaystyle(&tex), display)
}

/// The LaTeX in a service URL's query string (`gif.latex?\alpha`, `chl=`, `?x^2`).
fn query_tex(src: &str) -> Option<String> {
    let q = &src[src.find('?')? + 1..];
    let raw = q
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("chl=")
                .or_else(|| kv.strip_prefix("latex="))
        })
        .unwrap_or(q);
    let tex = percent_decode(raw);
    let tex = tex.trim();
    (!tex.is_empty()).then(|| tex.to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `$x$`, `$$x$$`, `\(x\)`, `\[x\]` -> `x`.
fn strip_delimiters(s: &str) -> &str {
    for (o, c) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
        if let Some(inner) = s.strip_prefix(o).and_then(|r| r.strip_suffix(c)) {
            if !inner.trim().is_empty() {
                return inner.trim();
            }
        }
    }
    s
}

/// Wikipedia wraps every formula as `{\displaystyle ..}`: keep the inside.
fn unwrap_displaystyle(tex: &str) -> String {
    let t = tex.trim();
    if let Some(inner) = t
        .strip_prefix("{\\displaystyle")
        .and_then(|r| r.strip_suffix('}'))
    {
        if balanced(inner) {
            return inner.trim().to_string();
        }
    }
    t.to_string()
}

fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    let mut prev = ' ';
    for c in s.chars() {
        if prev != '\\' {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        if depth < 0 {
            return false;
        }
        prev = if prev == '\\' { ' ' } else { c };
    }
    depth == 0
}

fn formula(tex: String, display: bool) -> MathElement {
    if tex.trim().is_empty() {
        MathElement::Skip
    } else {
        MathElement::Formula { tex, display }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_displaystyle() {
        assert_eq!(
            query_tex("https://latex.codecogs.com/gif.latex?%5Cfrac%7B1%7D%7B2%7D").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            query_tex("http://chart.apis.google.com/chart?cht=tx&chl=x%5E2").as_deref(),
            Some("x^2")
        );
        assert_eq!(unwrap_displaystyle("{\\displaystyle \\{a\\}}"), "\\{a\\}");
        assert_eq!(
            unwrap_displaystyle("{\\displaystyle a}+{b}"),
            "{\\displaystyle a}+{b}"
        );
        assert_eq!(strip_delimiters("$x$"), "x");
    }
}
