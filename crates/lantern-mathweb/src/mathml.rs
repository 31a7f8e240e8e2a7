//! Placeholder until the MathML converter lands: annotation, then alttext, then text.

use crate::html::{Document, NodeId};

/// Where a formula's LaTeX came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `<annotation encoding="application/x-tex">`.
    Annotation,
    /// The `alttext` attribute.
    AltText,
    /// Converted from presentation MathML.
    Converted,
}

/// LaTeX for a `<math>` element.
pub fn math_element_latex(doc: &Document, math: NodeId) -> (String, Source) {
    for d in doc.descendants(math) {
        if doc.name(d) == Some("annotation") {
            return (doc.text_content(d), Source::Annotation);
        }
    }
    if let Some(a) = doc.attr(math, "alttext") {
        return (a.to_string(), Source::AltText);
    }
    (doc.text_content(math), Source::Converted)
}
