//! Round trip through a real renderer: LaTeX from the SciPy and SymPy docs is rendered to
//! MathML by KaTeX, converted back with [`mathml_to_latex`], rendered again, and the two MathML
//! trees are compared after normalisation.
//!
//! Normalisation (see [`canon`]): the `<annotation>` and the `<semantics>` wrapper are dropped;
//! `mrow`, `mstyle` and `mpadded` are transparent (their children are spliced into the parent
//! row, and a script/fraction argument that is a row of one item is that item); all attributes
//! are dropped except the *effective* `mathvariant` of token elements (a missing one is the
//! MathML default: italic for one-character `mi`, normal otherwise) and whether an `mfrac` has
//! zero `linethickness`; `mi` text is split into one `mi` per character (KaTeX writes
//! `\mathrm{abc}` as three `mi`, `\operatorname{abc}` as one); whitespace between elements is
//! ignored and token text is trimmed; an `mtext` of only whitespace is an `mspace` (both are
//! spacing: KaTeX writes `\,` as a thin-space `mtext`, `\quad` as an `mspace`). Formulas KaTeX cannot render itself (a `katex-error` or an
//! undefined command shown in red, `#cc0000`) are excluded and counted.
//!
//! Needs `node` (CI machines have it) and the `katex`, `scipy-doc` and `sympy-doc` assets.

mod common;
use common::files_with;
use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use lantern_mathweb::html::{Document, NodeId};
use lantern_mathweb::mathml::mathml_to_latex;

const SCIPY_FORMULAS: usize = 300;
const SYMPY_FORMULAS: usize = 200;
const PER_PAGE: usize = 6;

/// Reads JSON strings (LaTeX) one per line, answers the KaTeX MathML as a JSON string per line.
const RENDER_JS: &str = r#"
const katex = require(process.argv[2]);
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let out;
  try {
    out = katex.renderToString(JSON.parse(line), { output: 'mathml', throwOnError: false, strict: 'ignore' });
  } catch (e) {
    out = '<span class="katex-error">' + String(e) + '</span>';
  }
  process.stdout.write(JSON.stringify(out) + '\n');
});
"#;

/// One long-lived `node` process rendering LaTeX with KaTeX.
struct Katex {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Katex {
    fn start(dir: &Path) -> Katex {
        let katex = lantern_assets::fetch("katex").expect("fetch the katex asset");
        let script = dir.join("render.js");
        fs::write(&script, RENDER_JS).expect("write render.js");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&katex)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test needs `node` (Node.js) on PATH to run KaTeX: {e}")
            });
        let stdin = child.stdin.take().expect("node stdin");
        let stdout = BufReader::new(child.stdout.take().expect("node stdout"));
        Katex {
            child,
            stdin,
            stdout,
        }
    }

    fn render(&mut self, tex: &str) -> String {
        let line = serde_json::to_string(tex).expect("json");
        writeln!(self.stdin, "{line}").expect("write to node");
        self.stdin.flush().expect("flush node");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("read from node");
        serde_json::from_str(answer.trim()).expect("node answers a JSON string")
    }
}

impl Drop for Katex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `\(..\)` / `\[..\]` spans of SciPy's MathJax markup (`span`/`div` with class `math`).
fn scipy_formulas(limit: usize) -> Vec<String> {
    let dir = lantern_assets::fetch("scipy-doc").expect("fetch scipy-doc");
    collect(&dir, limit, |doc, id| {
        let el = doc.element(id)?;
        if !(el.name == "span" || el.name == "div") || !el.has_class("math") {
            return None;
        }
        let t = doc.text_content(id);
        let t = t.trim();
        let inner = t
            .strip_prefix("\\(")
            .and_then(|s| s.strip_suffix("\\)"))
            .or_else(|| t.strip_prefix("\\[").and_then(|s| s.strip_suffix("\\]")))?;
        Some(inner.trim().to_string())
    })
}

/// The `alt` LaTeX of SymPy's `<img class="math">`.
fn sympy_formulas(limit: usize) -> Vec<String> {
    let dir = lantern_assets::fetch("sympy-doc").expect("fetch sympy-doc");
    collect(&dir, limit, |doc, id| {
        let el = doc.element(id)?;
        if el.name != "img" || !el.has_class("math") {
            return None;
        }
        Some(el.attr("alt")?.trim().to_string())
    })
}

fn collect(
    dir: &Path,
    limit: usize,
    pick: impl Fn(&Document, NodeId) -> Option<String>,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in files_with(dir, ".html") {
        let Ok(html) = fs::read_to_string(&path) else {
            continue;
        };
        let doc = Document::parse(&html);
        let mut on_page = 0;
        for id in doc.descendants(0) {
            if out.len() >= limit || on_page >= PER_PAGE {
                break;
            }
            if let Some(tex) = pick(&doc, id).filter(|t| !t.is_empty()) {
                if seen.insert(tex.clone()) {
                    out.push(tex);
                    on_page += 1;
                }
            }
        }
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Whether KaTeX reported an error (thrown, or an unknown command shown in red).
fn katex_failed(html: &str) -> bool {
    html.contains("katex-error") || html.contains("#cc0000") || html.contains("<merror")
}

/// The `<math>` element of a KaTeX rendering.
fn math_of(doc: &Document) -> Option<NodeId> {
    doc.elements_named("math").next()
}

/// Canonical text of a MathML tree (see the module docs for what is normalised).
fn canon(doc: &Document, id: NodeId) -> String {
    let mut out = String::new();
    canon_row(doc, &[id], &mut out);
    out
}

/// Elements whose children are spliced into the surrounding row.
fn transparent(name: &str) -> bool {
    matches!(name, "mrow" | "mstyle" | "mpadded" | "semantics" | "math")
}

fn canon_row(doc: &Document, ids: &[NodeId], out: &mut String) {
    for &id in ids {
        let Some(name) = doc.name(id) else {
            continue;
        };
        if matches!(name, "annotation" | "annotation-xml") {
            continue;
        }
        if transparent(name) {
            canon_row(doc, doc.children(id), out);
            continue;
        }
        canon_element(doc, id, name, out);
    }
}

fn canon_element(doc: &Document, id: NodeId, name: &str, out: &mut String) {
    let text = doc.text_content(id);
    let text = text.trim();
    match name {
        "mi" => {
            let single = text.chars().count() == 1;
            for c in text.chars() {
                let v = variant(doc, id, if single { "italic" } else { "normal" });
                out.push_str(&format!("<mi {v}>{c}</mi>"));
            }
        }
        "mtext" if text.is_empty() => out.push_str("<mspace/>"),
        "mn" | "mo" | "mtext" | "ms" => {
            let v = variant(doc, id, "normal");
            out.push_str(&format!("<{name} {v}>{text}</{name}>"));
        }
        "mspace" => out.push_str("<mspace/>"),
        _ => {
            let zero = name == "mfrac"
                && doc.attr(id, "linethickness").is_some_and(|t| {
                    let num = t.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
                    num.parse::<f64>().is_ok_and(|v| v == 0.0)
                });
            out.push_str(&format!("<{name}{}>", if zero { " zero" } else { "" }));
            let row_like = matches!(
                name,
                "msqrt" | "mtd" | "mphantom" | "menclose" | "merror" | "mtable" | "mtr"
            );
            for &c in doc.children(id) {
                if doc.name(c).is_none() {
                    continue;
                }
                if row_like {
                    canon_row(doc, &[c], out);
                } else {
                    out.push('[');
                    canon_row(doc, &[c], out);
                    out.push(']');
                }
            }
            out.push_str(&format!("</{name}>"));
        }
    }
}

fn variant(doc: &Document, id: NodeId, default: &str) -> String {
    doc.attr(id, "mathvariant")
        .map(str::trim)
        .filter(|v| *v != default)
        .unwrap_or("")
        .to_string()
}

#[test]
fn katex_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut katex = Katex::start(tmp.path());
    let mut formulas = scipy_formulas(SCIPY_FORMULAS);
    let n_scipy = formulas.len();
    formulas.extend(sympy_formulas(SYMPY_FORMULAS));
    assert!(n_scipy >= 100, "scipy-doc gave only {n_scipy} formulas");
    assert!(
        formulas.len() - n_scipy >= 100,
        "sympy-doc gave few formulas"
    );

    // The normalisation must still tell different formulas apart.
    for (a, b) in [
        ("a+b", "a-b"),
        ("\\frac{a}{b}", "{a \\atop b}"),
        ("\\mathbf{x}", "x"),
        ("x^{2}", "x_{2}"),
        ("\\sqrt{x}y", "\\sqrt{xy}"),
        ("\\mathrm{d}x", "dx"),
    ] {
        let (ra, rb) = (katex.render(a), katex.render(b));
        let (da, db) = (Document::parse(&ra), Document::parse(&rb));
        let (ma, mb) = (math_of(&da).expect("math"), math_of(&db).expect("math"));
        assert_ne!(canon(&da, ma), canon(&db, mb), "{a} vs {b}");
    }

    let (mut compared, mut passed, mut unrenderable) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for tex in &formulas {
        let first = katex.render(tex);
        if katex_failed(&first) {
            unrenderable += 1;
            continue;
        }
        let doc = Document::parse(&first);
        let Some(math) = math_of(&doc) else {
            unrenderable += 1;
            continue;
        };
        compared += 1;
        let ours = mathml_to_latex(&doc, math);
        let second = katex.render(&ours);
        let doc2 = Document::parse(&second);
        let same = !katex_failed(&second)
            && math_of(&doc2).is_some_and(|m2| canon(&doc, math) == canon(&doc2, m2));
        if same {
            passed += 1;
        } else {
            failures.push((tex.clone(), ours));
        }
    }
    let rate = passed as f64 / compared.max(1) as f64;
    println!(
        "KaTeX round trip: {passed} / {compared} passed ({:.1}%), {unrenderable} formulas KaTeX cannot render excluded ({} scipy + {} sympy collected)",
        rate * 100.0,
        n_scipy,
        formulas.len() - n_scipy
    );
    for (tex, ours) in failures.iter().take(40) {
        println!("FAIL\n  orig: {tex}\n  ours: {ours}");
    }
    assert!(compared >= 300, "only {compared} formulas compared");
    assert!(rate >= 0.95, "round-trip pass rate {rate:.3} below 0.95");
}
