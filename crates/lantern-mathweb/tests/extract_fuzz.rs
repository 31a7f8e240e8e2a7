//! Extraction never panics: random markup built from the pieces real pages are made of
//! (tags that imply ends, raw-text elements, math delimiters, entities, MathML), cut anywhere.

use lantern_mathweb::extract::{extract, ExtractOptions};
use proptest::prelude::*;

const PIECES: &[&str] = &[
    "<p>",
    "</p>",
    "<li>",
    "<ul>",
    "</ul>",
    "<table><tr><td>",
    "</td>",
    "<tr>",
    "</table>",
    "<div class=\"sidebar\">",
    "</div>",
    "<script type=\"math/tex\">",
    "<script type=\"math/tex; mode=display\">",
    "</script>",
    "<script>",
    "<style>",
    "</style>",
    "<math>",
    "</math>",
    "<mi>x</mi>",
    "<mfrac>",
    "</mfrac>",
    "<msup><mi>a</mi><mn>2</mn></msup>",
    "<mtable><mtr><mtd>1</mtd></mtr></mtable>",
    "<annotation encoding=\"application/x-tex\">",
    "</annotation>",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "$$",
    "$",
    "\\begin{align}",
    "\\end{align}",
    "[itex]",
    "[/itex]",
    "&amp;",
    "&lt;",
    "&#x3b1;",
    "&",
    "<",
    ">",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<pre>",
    "</pre>",
    "<img class=\"latex\" alt=\"\\beta\">",
    "<img src=\"https://latex.codecogs.com/gif.latex?%5C\">",
    "<br>",
    "<h2>",
    "</h2>",
    "<a href=x>",
    "</a>",
    "text ",
    "x^2 ",
    "\\frac{1}{2} ",
    "|",
    "`",
    "\n",
    "<span class=\"katex\">",
    "</span>",
    "<mjx-container>",
    "<span class=\"math-container\">",
    "<blockquote>",
    "</blockquote>",
    "é",
    "∑",
];

/// `$` not preceded by a backslash, outside fenced code blocks and inline code (where text is
/// verbatim).
fn unescaped_dollars(s: &str) -> usize {
    let mut n = 0;
    let mut fenced = false;
    for line in s.lines() {
        if line.starts_with("```") || line.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let b = line.as_bytes();
        // 0 = text, 1 = math, 2 = inline code; backticks open code only outside math.
        let mut state = 0;
        for i in 0..b.len() {
            let escaped = i > 0 && b[i - 1] == b'\\';
            match (state, b[i]) {
                // A backtick with no partner later on the line is a literal.
                (0, b'`') if !escaped && b[i + 1..].contains(&b'`') => state = 2,
                (2, b'`') => state = 0,
                (0 | 1, b'$') if !escaped => {
                    n += 1;
                    state = 1 - state;
                }
                _ => {}
            }
        }
    }
    n
}

fn page() -> impl Strategy<Value = String> {
    prop::collection::vec(0..PIECES.len(), 0..120)
        .prop_map(|ix| ix.into_iter().map(|i| PIECES[i]).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_markup_extracts_without_panicking(html in page(), cut in 0usize..4000) {
        let mut end = cut.min(html.len());
        while !html.is_char_boundary(end) {
            end -= 1;
        }
        for opts in [ExtractOptions::default(), ExtractOptions { boilerplate: false, ..ExtractOptions::default() }] {
            if let Ok(e) = extract(&html[..end], &opts) {
                // Unescaped dollars pair up: every formula opened in the output is closed.
                prop_assert_eq!(unescaped_dollars(&e.text) % 2, 0, "{}", e.text);
            }
        }
    }
}
