//! Real MathML and AsciiMath from the MathJax sample pages (`mathjax-samples` asset).

use std::fs;

use lantern_mathweb::asciimath::asciimath_to_latex;
use lantern_mathweb::html::Document;
use lantern_mathweb::mathml::{math_element_latex, mathml_to_latex, Source};

fn sample(name: &str) -> String {
    let dir = lantern_assets::fetch("mathjax-samples").expect("fetch mathjax-samples");
    fs::read_to_string(dir.join(name)).expect("read sample page")
}

#[test]
fn mathml_sample_page() {
    let doc = Document::parse(&sample("sample-mml.html"));
    let got: Vec<String> = doc
        .elements_named("math")
        .map(|m| mathml_to_latex(&doc, m))
        .collect();
    assert_eq!(
        got,
        [
            "a \\neq 0",
            "ax^{2} + bx + c = 0",
            "x = \\frac{-b \\pm \\sqrt{b^{2} - 4ac}}{2a}\\text{.}",
        ]
    );
    for m in doc.elements_named("math") {
        assert_eq!(math_element_latex(&doc, m).1, Source::Converted);
    }
}

#[test]
fn asciimath_sample_page() {
    let html = sample("sample-asciimath.html");
    let doc = Document::parse(&html);
    let text = doc.text_content(0);
    let spans: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(asciimath_to_latex)
        .collect();
    assert_eq!(
        spans,
        [
            "a \\neq 0",
            "ax^2 + bx + c = 0",
            "x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a} .",
        ]
    );
}
