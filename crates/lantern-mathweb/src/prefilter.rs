//! OpenWebMath's cheap first test: does a page look like it has math at all?
//!
//! Most web pages have none, so the pipeline checks the raw HTML for math markup (MathJax,
//! MathML, KaTeX, LaTeX image services) before parsing anything; pages without such markup are
//! kept only if their extracted text uses LaTeX commands (checked after extraction with
//! [`has_latex_command`]).

use memchr::memmem;

/// Substrings of raw HTML that mark a page as likely math (OpenWebMath's list).
const MATH_MARKUP: &[&str] = &[
    "MathJax",
    "mathjax",
    "<math",
    "math-container",
    "katex.min.css",
    "latex.php",
    "codecogs",
    "tex.cgi",
    "class=\"tex\"",
    "class='tex'",
];

/// LaTeX commands whose presence in extracted text marks it as math.
const LATEX_COMMANDS: &[&str] = &[
    "alpha",
    "approx",
    "bar",
    "begin",
    "beta",
    "bigcap",
    "bigcup",
    "binom",
    "boldsymbol",
    "cap",
    "cdot",
    "cdots",
    "chi",
    "circ",
    "cos",
    "cup",
    "delta",
    "det",
    "dfrac",
    "displaystyle",
    "div",
    "dot",
    "ell",
    "end",
    "epsilon",
    "equiv",
    "eta",
    "exists",
    "exp",
    "forall",
    "frac",
    "gamma",
    "geq",
    "hat",
    "infty",
    "int",
    "iota",
    "kappa",
    "lambda",
    "langle",
    "lceil",
    "ldots",
    "left",
    "leftarrow",
    "leq",
    "lfloor",
    "lim",
    "ln",
    "log",
    "mathbb",
    "mathbf",
    "mathcal",
    "mathrm",
    "max",
    "mid",
    "min",
    "mu",
    "nabla",
    "neq",
    "notin",
    "nu",
    "oint",
    "omega",
    "operatorname",
    "otimes",
    "overline",
    "partial",
    "phi",
    "pi",
    "pm",
    "prime",
    "prod",
    "psi",
    "qquad",
    "quad",
    "rangle",
    "rceil",
    "rfloor",
    "rho",
    "right",
    "rightarrow",
    "sigma",
    "sim",
    "sin",
    "sqrt",
    "subset",
    "subseteq",
    "sum",
    "tan",
    "tau",
    "tfrac",
    "theta",
    "times",
    "to",
    "underline",
    "varepsilon",
    "varphi",
    "vec",
    "wedge",
    "xi",
    "zeta",
];

/// Whether the raw HTML contains math markup (the prefilter's fast path).
pub fn has_math_markup(html: &str) -> bool {
    MATH_MARKUP
        .iter()
        .any(|pat| memmem::find(html.as_bytes(), pat.as_bytes()).is_some())
}

/// Whether `text` contains a backslash followed by two or more lower-case letters — the
/// cheap test OpenWebMath runs before extracting a page without math markup.
pub fn has_backslash_word(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'\\', b).any(|i| {
        b.get(i + 1).is_some_and(u8::is_ascii_lowercase)
            && b.get(i + 2).is_some_and(u8::is_ascii_lowercase)
    })
}

/// Whether `text` uses one of the common LaTeX commands (`\frac`, `\alpha`, ...).
pub fn has_latex_command(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'\\', b).any(|i| {
        let start = i + 1;
        let len = b[start..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        len > 0
            && LATEX_COMMANDS
                .binary_search(&&text[start..start + len])
                .is_ok()
    })
}

/// Outcome of the prefilter for one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefilter {
    /// Math markup in the HTML: extract.
    Markup,
    /// No markup but `\word` in the HTML: extract, then require a LaTeX command or a high
    /// math score.
    MaybeLatex,
    /// Neither: drop without parsing.
    NoMath,
}

/// Classifies a raw page for the pipeline.
pub fn prefilter(html: &str) -> Prefilter {
    if has_math_markup(html) {
        Prefilter::Markup
    } else if has_backslash_word(html) {
        Prefilter::MaybeLatex
    } else {
        Prefilter::NoMath
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_table_is_sorted_for_binary_search() {
        assert!(LATEX_COMMANDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn classifies_pages() {
        assert_eq!(
            prefilter("<script src=\"x/MathJax.js\"></script>"),
            Prefilter::Markup
        );
        assert_eq!(prefilter("<p>see \\frac{a}{b}</p>"), Prefilter::MaybeLatex);
        assert_eq!(prefilter("<p>C:\\Windows \\N</p>"), Prefilter::NoMath);
        assert!(has_latex_command("so \\alpha_1 holds"));
        assert!(!has_latex_command("path \\windows\\system"));
    }
}
