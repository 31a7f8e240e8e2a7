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
        // 0 = text, 1 = inline math, 2 = inline code, 3 = display math (`$$ .. $$`);
        // backticks open code only in text. Every unescaped `$` outside code counts once.
        let mut state = 0;
        let mut i = 0;
        while i < b.len() {
            let escaped = i > 0 && b[i - 1] == b'\\';
            let doubled = b.get(i + 1) == Some(&b'$');
            match (state, b[i]) {
                // A backtick with no partner later on the line is a literal.
                (0, b'`') if !escaped && b[i + 1..].contains(&b'`') => state = 2,
                (2, b'`') => state = 0,
                (0 | 3, b'$') if !escaped && doubled => {
                    n += 2;
                    state = 3 - state;
                    i += 1;
                }
                (0, b'$') if !escaped => {
                    n += 1;
                    state = 1;
                }
                (1, b'$') if !escaped => {
                    n += 1;
                    state = 0;
                }
                // A lone `$` inside display math: counted, so it leaves the count odd.
                (3, b'$') if !escaped => n += 1,
                _ => {}
            }
            i += 1;
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

/// The counter: display math (`$$ .. $$`) is math for backticks too, as inline math is.
#[test]
fn dollar_counter_reads_display_math_code_and_escapes() {
    assert_eq!(unescaped_dollars("$$`$$ $`$"), 6);
    assert_eq!(unescaped_dollars("$$a$$ and $b$"), 6);
    assert_eq!(unescaped_dollars("$$a"), 2);
    assert_eq!(unescaped_dollars("$$a$ b"), 3);
    assert_eq!(unescaped_dollars("`$` \\$ $x"), 1);
    assert_eq!(unescaped_dollars("```\n$\n```\n$a$"), 2);
}

/// A page the proptest once drew: MathML holding a backtick after a display formula holding
/// one; both formulas come out closed.
#[test]
fn backticks_inside_formulas_leave_the_dollars_paired() {
    let html = "<table><tr><td></math>$$`$$</div><math>`";
    for opts in [
        ExtractOptions::default(),
        ExtractOptions {
            boilerplate: false,
            ..ExtractOptions::default()
        },
    ] {
        let e = extract(html, &opts).expect("the page has text");
        assert!(e.text.contains('`'), "{}", e.text);
        assert_eq!(unescaped_dollars(&e.text) % 2, 0, "{}", e.text);
    }
}
