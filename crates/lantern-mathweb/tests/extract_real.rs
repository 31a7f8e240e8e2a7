//! Extraction on the real documentation pages of the `scipy-doc`, `sympy-doc` and
//! `mathjax-samples` assets: every formula survives as LaTeX, navigation does not.

mod common;
use common::files_with;
use lantern_mathweb::extract::{extract, ExtractOptions, Extracted};
use lantern_mathweb::html::Document;
use std::path::{Path, PathBuf};

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

fn run(html: &str, p: &Path) -> Extracted {
    extract(html, &ExtractOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Sphinx navigation and sidebar phrases that must never reach the output.
const NAV: &[&str] = &[
    "Previous topic",
    "Next topic",
    "Show Source",
    "Quick search",
];

/// Link texts of the page's navigation elements that do not also occur in its main content.
fn sidebar_only_links(html: &str) -> Vec<String> {
    let doc = Document::parse(html);
    let main = doc
        .descendants(0)
        .find(|&id| doc.attr(id, "role") == Some("main") || doc.name(id) == Some("main"))
        .map(|m| doc.text_content(m))
        .unwrap_or_default();
    let mut out = Vec::new();
    for nav in doc.descendants(0).filter(|&id| {
        doc.name(id) == Some("nav")
            || doc
                .attr(id, "class")
                .is_some_and(|c| c.contains("sidebar") || c.contains("toc-tree"))
    }) {
        for a in doc.descendants(nav).filter(|&id| doc.name(id) == Some("a")) {
            let t = doc
                .text_content(a)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if t.len() > 12 && !main.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

fn assert_no_navigation(text: &str, html: &str, p: &Path) {
    for phrase in NAV {
        assert!(
            !text.contains(phrase),
            "{}: output contains {phrase:?}",
            p.display()
        );
    }
    for link in sidebar_only_links(html) {
        assert!(
            !text
                .lines()
                .any(|l| l.trim().trim_start_matches("- ") == link),
            "{}: sidebar link {link:?} is in the output",
            p.display()
        );
    }
}

/// The `\(..\)` / `\[..\]` LaTeX of Sphinx's MathJax spans and divs, with display flags.
fn sphinx_mathjax_formulas(html: &str) -> Vec<(String, bool)> {
    let doc = Document::parse(html);
    let mut out = Vec::new();
    for id in doc.descendants(0) {
        let Some(el) = doc.element(id) else { continue };
        if !(el.has_class("math") && el.has_class("notranslate")) {
            continue;
        }
        let t = doc.text_content(id);
        let t = t.trim();
        for (o, c, display) in [("\\(", "\\)", false), ("\\[", "\\]", true)] {
            if let Some(inner) = t.strip_prefix(o).and_then(|s| s.strip_suffix(c)) {
                out.push((inner.trim().to_string(), display));
            }
        }
    }
    out
}

fn wrapped(tex: &str, display: bool) -> String {
    if display {
        format!("$${}$$", tex.trim())
    } else {
        format!("${}$", tex.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

#[test]
fn scipy_mathjax_spans_survive_as_dollar_math() {
    let root = lantern_assets::fetch("scipy-doc").expect("scipy-doc asset");
    let pages: Vec<PathBuf> = files_with(&root, ".html")
        .into_iter()
        .filter(|p| read(p).contains("class=\"math notranslate"))
        .collect();
    assert!(
        pages.len() > 600,
        "expected the 673 scipy pages with math, found {}",
        pages.len()
    );
    let (mut total, mut found) = (0usize, 0usize);
    let mut missing = Vec::new();
    for p in &pages {
        let html = read(p);
        let e = run(&html, p);
        assert_no_navigation(&e.text, &html, p);
        for (tex, display) in sphinx_mathjax_formulas(&html) {
            total += 1;
            if e.text.contains(&wrapped(&tex, display)) {
                found += 1;
            } else if missing.len() < 10 {
                missing.push(format!("{}: {}", p.display(), wrapped(&tex, display)));
            }
        }
    }
    let rate = found as f64 / total as f64;
    eprintln!(
        "scipy: {found}/{total} formulas = {rate:.4} over {} pages",
        pages.len()
    );
    assert!(total > 4000, "too few formulas found: {total}");
    eprintln!("missing: {missing:#?}");
    assert!(
        rate >= 0.99,
        "only {rate:.4} of formulas kept; first missing: {missing:#?}"
    );
}

#[test]
fn sympy_image_alt_latex_survives() {
    let root = lantern_assets::fetch("sympy-doc").expect("sympy-doc asset");
    let (mut total, mut found, mut pages) = (0usize, 0usize, 0usize);
    let mut missing = Vec::new();
    for p in files_with(&root, ".html") {
        let html = read(&p);
        let doc = Document::parse(&html);
        let alts: Vec<(String, bool)> = doc
            .descendants(0)
            .filter(|&id| doc.name(id) == Some("img"))
            .filter_map(|id| {
                let alt = doc.attr(id, "alt")?.trim().to_string();
                let is_class = doc.element(id)?.has_class("math");
                let in_div = doc
                    .parent(id)
                    .and_then(|p| doc.parent(p))
                    .and_then(|d| doc.element(d))
                    .is_some_and(|e| e.name == "div" && e.has_class("math"));
                (is_class || in_div).then_some((alt, in_div))
            })
            .collect();
        let Ok(e) = extract(&html, &ExtractOptions::default()) else {
            assert!(alts.is_empty(), "{}: a page with math failed", p.display());
            continue;
        };
        assert_no_navigation(&e.text, &html, &p);
        if alts.is_empty() {
            continue;
        }
        pages += 1;
        for (alt, display) in alts {
            total += 1;
            if e.text.contains(&wrapped(&alt, display)) {
                found += 1;
            } else if missing.len() < 10 {
                missing.push(format!("{}: {}", p.display(), wrapped(&alt, display)));
            }
        }
    }
    let rate = found as f64 / total as f64;
    eprintln!("sympy: {found}/{total} image formulas = {rate:.4} over {pages} pages");
    eprintln!("missing: {missing:#?}");
    assert!(total > 1000, "too few formulas: {total}");
    assert!(
        rate >= 0.99,
        "only {rate:.4} kept; first missing: {missing:#?}"
    );
}

#[test]
fn mathjax_samples_keep_every_tex_script_and_delimited_formula() {
    let root = lantern_assets::fetch("mathjax-samples").expect("mathjax-samples asset");
    let tex = read(&root.join("sample-tex.html"));
    let e = run(&tex, &root.join("sample-tex.html"));
    assert!(e.text.contains("$a \\ne 0$"), "{}", e.text);
    assert!(
        e.text
            .contains("$$x = {-b \\pm \\sqrt{b^2-4ac} \\over 2a}.$$"),
        "{}",
        e.text
    );
    for p in files_with(&root, ".html") {
        let html = read(&p);
        let doc = Document::parse(&html);
        let e = run(&html, &p);
        for s in doc.elements_named("script") {
            let ty = doc.attr(s, "type").unwrap_or("");
            if ty.starts_with("math/tex") {
                let t = doc.text_content(s);
                assert!(
                    e.text.contains(&wrapped(&t, ty.contains("mode=display"))),
                    "{}: script {t:?} missing",
                    p.display()
                );
            }
        }
        let maths = doc.elements_named("math").count();
        assert!(
            e.math.mathml_annotation + e.math.mathml_alttext + e.math.mathml_converted >= maths,
            "{}: {maths} MathML formulas, counts {:?}",
            p.display(),
            e.math
        );
    }
}

#[test]
fn escaping_only_touches_dollars_outside_math() {
    let html =
        "<p>It costs $5 and \\(a_1 * b_2 + \\$x\\) is *not* escaped; [itex]\\alpha_{i}[/itex]</p>";
    let e = extract(html, &ExtractOptions::default()).unwrap();
    assert_eq!(
        e.text,
        "It costs \\$5 and $a_1 * b_2 + \\$x$ is *not* escaped; $\\alpha_{i}$"
    );
}

#[test]
fn page_structure_to_markdown() {
    let html = "<html><head><title> T </title></head><body><nav><a href=/>Home</a></nav>\
        <main><h2>Sec <a class=headerlink href=#s>¶</a></h2><p>para one</p>\
        <ul><li>a <script type=\"math/tex\">x^2</script></li><li>b<ul><li>c</li></ul></li></ul>\
        <pre>fn main() {\n    x\n}</pre>\
        <table><tr><th>n</th><th>a|b</th></tr><tr><td><script type=\"math/tex\">|x|</script></td><td><script type=\"math/tex; mode=display\">4</script></td></tr></table>\
        <blockquote>quoted</blockquote></main><footer>Privacy Policy</footer></body></html>";
    let e = extract(html, &ExtractOptions::default()).unwrap();
    assert_eq!(e.title, "T");
    assert_eq!(
        e.text,
        "## Sec\n\npara one\n\n- a $x^2$\n- b\n  - c\n\n```\nfn main() {\n    x\n}\n```\n\n| n | a\\|b |\n|---|---|\n| $|x|$ | $$4$$ |\n\nquoted"
    );
    assert_eq!(e.math.tex_script, 3);
}

/// One formula per source OpenWebMath reads, in the markup each producer writes.
#[test]
fn every_math_source_becomes_latex() {
    let html = r#"<html><head>
<script type="text/x-mathjax-config">MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$']]}});</script>
</head><body><main>
<p>mathjax2 <span class="MathJax_Preview">x</span><span class="MathJax">rendered</span><script type="math/tex">a^2</script> and
<script type="math/tex; mode=display">\sum_i b_i</script></p>
<p>katex <span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>c</mi></mrow><annotation encoding="application/x-tex">c_{k}</annotation></semantics></math></span><span class="katex-html" aria-hidden="true"><span>c</span></span></span></p>
<p>katex display <span class="katex-display"><span class="katex"><span class="katex-mathml"><math display="block"><semantics><mi>d</mi><annotation encoding="application/x-tex">\int d</annotation></semantics></math></span></span></span></p>
<p>mathjax3 <mjx-container class="MathJax" jax="CHTML"><mjx-math>e</mjx-math><mjx-assistive-mml><math><mi>e</mi><mo>+</mo><mn>1</mn></math></mjx-assistive-mml></mjx-container></p>
<p>wiki <span class="mwe-math-element"><span class="mwe-math-mathml-inline mwe-math-mathml-a11y" style="display: none;"><math alttext="{\displaystyle f(x)}"><semantics><mrow><mi>f</mi></mrow><annotation encoding="application/x-tex">{\displaystyle f(x)}</annotation></semantics></math></span><img src="https://wikimedia.org/api/rest_v1/media/math/render/svg/abc" class="mwe-math-fallback-image-inline" alt="{\displaystyle f(x)}"></span></p>
<p>alttext <math alttext="g \le h"><mi>g</mi></math> converted <math><mfrac><mi>p</mi><mi>q</mi></mfrac></math></p>
<p>images <img class="latex" src="x.png" alt="\alpha"> <img src="https://latex.codecogs.com/gif.latex?%5Cbeta%5E2"> <img src="/cgi-bin/mimetex.cgi?\gamma"></p>
<p>se <span class="math-container">$\delta$</span> text $\epsilon$ and [itex]\zeta[/itex]</p>
<p>ascii <script type="math/asciimath">sqrt(x)</script></p>
</main></body></html>"#;
    let e = extract(html, &ExtractOptions::default()).unwrap();
    for want in [
        "$a^2$",
        "$$\\sum_i b_i$$",
        "$c_{k}$",
        "$$\\int d$$",
        "$e + 1$",
        "$f(x)$",
        "$g \\le h$",
        "$\\frac{p}{q}$",
        "$\\alpha$",
        "$\\beta^2$",
        "$\\gamma$",
        "$\\delta$",
        "$\\epsilon$",
        "$\\zeta$",
        "$\\sqrt{x}$",
    ] {
        assert!(e.text.contains(want), "{want} missing from:\n{}", e.text);
    }
    assert!(
        !e.text.contains("rendered"),
        "MathJax output duplicated:\n{}",
        e.text
    );
    assert_eq!(e.math.tex_script, 2);
    assert_eq!(e.math.asciimath, 1);
    assert_eq!(e.math.image, 3);
    assert_eq!(e.math.mathml_alttext, 1);
    assert_eq!(
        e.math.mathml_converted, 2,
        "the MathJax 3 assistive MathML and the bare mfrac"
    );
}
