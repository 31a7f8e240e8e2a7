//! Presentation MathML to LaTeX.
//!
//! OpenWebMath keeps every formula as LaTeX. A `<math>` element usually carries its TeX source
//! (an `<annotation encoding="application/x-tex">` or the `alttext` attribute);
//! [`math_element_latex`] takes those first. When neither is there, [`mathml_to_latex`]
//! rebuilds the LaTeX from the presentation markup (what OpenWebMath did with an XSLT).
//!
//! The converter is a dispatch on the element name with one function per construct. It never
//! panics: unknown elements become their children, odd arities fall back to something valid,
//! and nesting deeper than `MAX_DEPTH` (200) is emitted as escaped text.

use crate::html::{Document, NodeId};

/// Nesting depth beyond which a subtree is written as plain text instead of converted.
const MAX_DEPTH: usize = 200;

/// Where the LaTeX returned by [`math_element_latex`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `<annotation>` with a TeX encoding (`application/x-tex`, `TeX`, ...).
    Annotation,
    /// The `alttext` attribute of the `<math>` element.
    AltText,
    /// Converted from the presentation markup by [`mathml_to_latex`].
    Converted,
}

/// The LaTeX for a `<math>` element, in OpenWebMath's order of preference: a TeX annotation,
/// then the `alttext` attribute, then conversion of the presentation markup.
///
/// The source is returned too so callers can count how formulas were obtained.
pub fn math_element_latex(doc: &Document, math: NodeId) -> (String, Source) {
    if let Some(tex) = tex_annotation(doc, math) {
        return (tex, Source::Annotation);
    }
    if let Some(alt) = doc.attr(math, "alttext") {
        let alt = alt.trim();
        if !alt.is_empty() {
            return (alt.to_string(), Source::AltText);
        }
    }
    (mathml_to_latex(doc, math), Source::Converted)
}

/// The text of the first non-empty `<annotation>` below `math` whose encoding is TeX.
fn tex_annotation(doc: &Document, math: NodeId) -> Option<String> {
    doc.descendants(math)
        .filter(|&id| doc.name(id) == Some("annotation"))
        .filter(|&id| {
            doc.attr(id, "encoding").is_some_and(|e| {
                let e = e.trim().to_ascii_lowercase();
                matches!(
                    e.as_str(),
                    "application/x-tex" | "tex" | "text/x-tex" | "latex" | "application/x-latex"
                )
            })
        })
        .map(|id| doc.text_content(id).trim().to_string())
        .find(|t| !t.is_empty())
}

/// Converts presentation MathML to LaTeX, ignoring annotations.
///
/// `math` is a `<math>` element or any MathML subtree. The result is valid LaTeX for math mode
/// (no surrounding `$`), with control words always separated from following letters.
pub fn mathml_to_latex(doc: &Document, math: NodeId) -> String {
    let conv = Converter { doc };
    conv.node(math, 0).trim().to_string()
}

/// Holds the document while converting; every construct is one method.
struct Converter<'a> {
    doc: &'a Document,
}

impl Converter<'_> {
    /// Converts one node (element or text).
    fn node(&self, id: NodeId, depth: usize) -> String {
        if let Some(t) = self.doc.text(id) {
            return text_as_math(t);
        }
        let Some(name) = self.doc.name(id) else {
            return self.row(self.doc.children(id), depth + 1);
        };
        if depth > MAX_DEPTH {
            return escape_text_mode(&self.doc.text_content(id));
        }
        let d = depth + 1;
        let name = name.strip_prefix("m:").unwrap_or(name);
        match name {
            "mi" => self.mi(id),
            "mn" => self.mn(id),
            "mo" => self.mo(id),
            "mtext" => self.mtext(id),
            "ms" => self.ms(id),
            "mspace" => self.mspace(id),
            "mfrac" => self.mfrac(id, d),
            "msqrt" => format!("\\sqrt{{{}}}", self.row(self.doc.children(id), d)),
            "mroot" => self.mroot(id, d),
            "msub" | "msup" | "msubsup" => self.scripts(id, name, d),
            "munder" | "mover" | "munderover" => self.under_over(id, name, d),
            "mmultiscripts" => self.multiscripts(id, d),
            "mtable" => self.table(id, "matrix", d),
            "mfenced" => self.fenced(id, d),
            "mphantom" => format!("\\phantom{{{}}}", self.row(self.doc.children(id), d)),
            "menclose" => self.enclose(id, d),
            "semantics" | "maction" => self.first_child(id, d),
            "annotation" | "annotation-xml" | "none" | "mprescripts" | "mglyph" => String::new(),
            "mlabeledtr" | "mtr" => self.table_row(id, d),
            "mtd" => self.row(self.doc.children(id), d),
            _ => self.row(self.doc.children(id), d),
        }
    }

    /// Element children, plus text children that are not just whitespace.
    fn kids(&self, id: NodeId) -> Vec<NodeId> {
        self.doc
            .children(id)
            .iter()
            .copied()
            .filter(|&c| match self.doc.text(c) {
                Some(t) => !t.trim().is_empty(),
                None => !matches!(self.doc.name(c), Some("annotation" | "annotation-xml")),
            })
            .collect()
    }

    /// The `i`th element child converted, or an empty string when missing.
    fn arg(&self, kids: &[NodeId], i: usize, depth: usize) -> String {
        kids.get(i)
            .map(|&k| self.node(k, depth))
            .unwrap_or_default()
    }

    fn first_child(&self, id: NodeId, depth: usize) -> String {
        self.arg(&self.kids(id), 0, depth)
    }

    /// A sequence of nodes (an `mrow` or an inferred row), joined with LaTeX-safe spacing.
    fn row(&self, children: &[NodeId], depth: usize) -> String {
        let kids: Vec<NodeId> = children
            .iter()
            .copied()
            .filter(|&c| match self.doc.text(c) {
                Some(t) => !t.trim().is_empty(),
                None => !matches!(self.doc.name(c), Some("annotation" | "annotation-xml")),
            })
            .collect();
        let (open, close) = self.left_right(&kids);
        let mut out = String::new();
        if let Some(l) = &open {
            push_piece(&mut out, &format!("\\left{l}"));
        }
        let start = usize::from(open.is_some());
        let end = kids.len() - usize::from(close.is_some());
        let mut i = start;
        while i < end {
            if let Some((piece, used)) = self.styled_run(&kids[i..end]) {
                push_piece(&mut out, &piece);
                i += used;
                continue;
            }
            if let Some((piece, used)) = self.row_pattern(&kids[i..end], depth) {
                push_piece(&mut out, &piece);
                i += used;
                continue;
            }
            let k = kids[i];
            if open.is_some() && self.doc.attr(k, "fence") == Some("true") {
                if let Some(t) = self.fence_text(k) {
                    push_piece(&mut out, &format!(" \\middle{} ", delimiter(&t)));
                    i += 1;
                    continue;
                }
            }
            let applied = kids.get(i + 1).is_some_and(|&n| self.is_apply_function(n));
            let piece = match self.operator_name(k) {
                Some(name) if applied => name,
                _ => self.node(k, depth),
            };
            if self.is_operator(k) {
                let prefix = i == start || self.is_prefix_context(kids[i - 1]);
                self.push_operator(&mut out, &piece, prefix);
            } else {
                push_piece(&mut out, &piece);
            }
            i += 1;
        }
        if let Some(r) = &close {
            push_piece(&mut out, &format!(" \\right{r}"));
        }
        out.trim_end().to_string()
    }

    /// `\left`/`\right` delimiters for a row that starts and ends with fences when those are
    /// marked `fence="true"` or enclose tall content (fractions, tables).
    fn left_right(&self, kids: &[NodeId]) -> (Option<String>, Option<String>) {
        if kids.len() < 2 {
            return (None, None);
        }
        let (first, last) = (kids[0], kids[kids.len() - 1]);
        let (Some(o), Some(c)) = (self.fence_text(first), self.fence_text(last)) else {
            return (None, None);
        };
        let opens = o.is_empty() || OPENERS.contains(&o.as_str());
        let closes = c.is_empty() || CLOSERS.contains(&c.as_str());
        if !opens || !closes || (o.is_empty() && c.is_empty()) {
            return (None, None);
        }
        let marked = self.doc.attr(first, "fence") == Some("true")
            && self.doc.attr(last, "fence") == Some("true");
        let tall = kids[1..kids.len() - 1].iter().any(|&k| self.is_tall(k));
        if !(marked || tall) || self.has_matrix_pattern(kids) {
            return (None, None);
        }
        (Some(delimiter(&o)), Some(delimiter(&c)))
    }

    /// Whether an operator after `prev` is a prefix (`(-1)`, `= -x`): `prev` is an operator
    /// other than a closing fence or a postfix `!`/prime.
    fn is_prefix_context(&self, prev: NodeId) -> bool {
        match self.fence_text(prev) {
            Some(t) => !(CLOSERS.contains(&t.as_str()) || matches!(t.as_str(), "!" | "′" | "'")),
            None => false,
        }
    }

    /// Whether a node is `<mo>&ApplyFunction;</mo>` (U+2061).
    fn is_apply_function(&self, id: NodeId) -> bool {
        self.doc.name(id) == Some("mo") && self.doc.text_content(id).trim() == "\u{2061}"
    }

    /// `\operatorname{..}` for a multi-letter `mi` without a known command (used when it is
    /// applied as a function, so the rendering keeps its operator spacing).
    fn operator_name(&self, id: NodeId) -> Option<String> {
        let plain = matches!(self.doc.attr(id, "mathvariant"), None | Some("normal"));
        if self.doc.name(id) != Some("mi") || !plain {
            return None;
        }
        let text = self.doc.text_content(id);
        let text = text.trim();
        let explicit = self.doc.attr(id, "mathvariant").is_some();
        if text.is_empty()
            || (text.chars().count() < 2 && !explicit)
            || function_name(text).is_some()
        {
            return None;
        }
        Some(format!("\\operatorname{{{}}}", escape_math_text(text)))
    }

    /// The trimmed text of an `<mo>`, or `None` for other nodes.
    fn fence_text(&self, id: NodeId) -> Option<String> {
        (self.doc.name(id) == Some("mo")).then(|| self.doc.text_content(id).trim().to_string())
    }

    /// Whether the subtree holds a fraction or a table (content that makes fences stretch).
    fn is_tall(&self, id: NodeId) -> bool {
        self.doc
            .descendants(id)
            .any(|d| matches!(self.doc.name(d), Some("mfrac" | "mtable")))
    }

    fn has_matrix_pattern(&self, kids: &[NodeId]) -> bool {
        let binom = kids.len() == 3
            && self
                .unwrap_single(kids[1], "mfrac")
                .is_some_and(|f| self.zero_thickness(f));
        binom
            || (kids.len() <= 3
                && kids
                    .iter()
                    .any(|&k| self.unwrap_single(k, "mtable").is_some()))
    }

    /// Follows single-child `mrow`/`mstyle` wrappers down to an element named `name`.
    fn unwrap_single(&self, mut id: NodeId, name: &str) -> Option<NodeId> {
        for _ in 0..16 {
            match self.doc.name(id) {
                Some(n) if n == name => return Some(id),
                Some("mrow" | "mstyle" | "mpadded") => {
                    let k = self.kids(id);
                    if k.len() != 1 {
                        return None;
                    }
                    id = k[0];
                }
                _ => return None,
            }
        }
        None
    }

    /// A run of two or more one-letter `mi` with the same explicit non-italic `mathvariant`
    /// (how `\mathrm{mod}` is written out) as one font command, e.g. `\mathrm{mod}`.
    fn styled_run(&self, kids: &[NodeId]) -> Option<(String, usize)> {
        let letter = |id: NodeId| -> Option<(&str, char)> {
            if self.doc.name(id) != Some("mi") {
                return None;
            }
            let v = self.doc.attr(id, "mathvariant")?.trim();
            let t = self.doc.text_content(id);
            let mut cs = t.trim().chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() && v != "italic" => Some((v, c)),
                _ => None,
            }
        };
        let (variant, first) = letter(*kids.first()?)?;
        let cmd = variant_command(variant)?;
        let mut text = String::from(first);
        for &k in &kids[1..] {
            match letter(k) {
                Some((v, c)) if v == variant => text.push(c),
                _ => break,
            }
        }
        let used = text.len();
        (used >= 2).then(|| (format!("\\{cmd}{{{text}}}"), used))
    }

    /// Row-level patterns: fenced tables (`pmatrix`, `cases`, ...) and `\binom`.
    /// Returns the LaTeX and how many nodes it consumed.
    fn row_pattern(&self, kids: &[NodeId], depth: usize) -> Option<(String, usize)> {
        let open = self.fence_text(*kids.first()?)?;
        let mid = *kids.get(1)?;
        let close = kids.get(2).and_then(|&k| self.fence_text(k));
        if let Some(table) = self.unwrap_single(mid, "mtable") {
            let env = match (open.as_str(), close.as_deref()) {
                ("(", Some(")")) => "pmatrix",
                ("[", Some("]")) => "bmatrix",
                ("{", Some("}")) => "Bmatrix",
                ("|", Some("|")) => "vmatrix",
                ("‖" | "∥", Some("‖" | "∥")) => "Vmatrix",
                ("{", None | Some("")) => "cases",
                _ => return None,
            };
            let used = if close.is_some() { 3 } else { 2 };
            return Some((self.table(table, env, depth), used));
        }
        let frac = self.unwrap_single(mid, "mfrac")?;
        if open == "(" && close.as_deref() == Some(")") && self.zero_thickness(frac) {
            let k = self.kids(frac);
            let (a, b) = (self.arg(&k, 0, depth), self.arg(&k, 1, depth));
            return Some((format!("\\binom{{{a}}}{{{b}}}"), 3));
        }
        None
    }

    /// Whether a node is an operator that gets spaces around it (relations, binary ops).
    fn is_operator(&self, id: NodeId) -> bool {
        if self.doc.name(id) != Some("mo") {
            return false;
        }
        let t = self.doc.text_content(id);
        let mut chars = t.trim().chars();
        matches!((chars.next(), chars.next()), (Some(c), None) if SPACED_OPS.contains(c))
    }

    /// Appends an infix operator with spaces, or a prefix one (at the start of a row) without.
    fn push_operator(&self, out: &mut String, op: &str, first: bool) {
        if first || out.is_empty() {
            push_piece(out, op);
        } else {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push(' ');
            out.push_str(op);
            out.push(' ');
        }
    }

    fn mi(&self, id: NodeId) -> String {
        let text = self.doc.text_content(id);
        let text = text.trim();
        let variant = self.doc.attr(id, "mathvariant").map(str::trim);
        let count = text.chars().count();
        if count > 1 && variant.is_none() {
            if let Some(f) = function_name(text) {
                return f.to_string();
            }
            return format!("\\mathrm{{{}}}", escape_math_text(text));
        }
        let body = token_text(&text.replace('∣', "|"));
        let styled = text.chars().any(char::is_alphanumeric);
        match variant.and_then(variant_command) {
            Some(cmd) if styled && !(count == 1 && variant == Some("italic")) => {
                format!("\\{cmd}{{{body}}}")
            }
            _ => body,
        }
    }

    fn mn(&self, id: NodeId) -> String {
        let body = token_text(self.doc.text_content(id).trim());
        match self.doc.attr(id, "mathvariant").and_then(variant_command) {
            Some(cmd) if cmd != "mathrm" && !body.is_empty() => format!("\\{cmd}{{{body}}}"),
            _ => body,
        }
    }

    fn mo(&self, id: NodeId) -> String {
        let text = self.doc.text_content(id);
        let text = text.trim();
        match text {
            "∥" | "‖" => return "\\parallel".into(),
            "mod" => return "\\bmod".into(),
            "′" | "″" | "‴" if self.prime_is_standalone(id) => {
                return "\\prime".repeat(text.chars().count());
            }
            _ => {}
        }
        if text.chars().count() > 1 {
            if let Some(f) = function_name(text) {
                return f.to_string();
            }
            if text.chars().all(|c| c.is_alphabetic()) {
                return format!("\\operatorname{{{}}}", escape_math_text(text));
            }
        }
        token_text(text)
    }

    /// Whether a prime `<mo>` starts its row (then it is `\prime`, else the postfix `'`).
    fn prime_is_standalone(&self, id: NodeId) -> bool {
        let Some(parent) = self.doc.parent(id) else {
            return true;
        };
        let siblings = self.kids(parent);
        match siblings.iter().position(|&s| s == id) {
            Some(0) | None => true,
            Some(i) => self.doc.name(siblings[i - 1]) == Some("mo"),
        }
    }

    fn mtext(&self, id: NodeId) -> String {
        let text = self.doc.text_content(id);
        if text.trim().is_empty() {
            return spaces(&text);
        }
        let body = escape_text_mode(&text);
        match self.doc.attr(id, "mathvariant") {
            Some("bold") => format!("\\textbf{{{body}}}"),
            Some("italic") => format!("\\textit{{{body}}}"),
            Some("monospace") => format!("\\texttt{{{body}}}"),
            Some("sans-serif") => format!("\\textsf{{{body}}}"),
            _ => format!("\\text{{{body}}}"),
        }
    }

    fn ms(&self, id: NodeId) -> String {
        let l = self.doc.attr(id, "lquote").unwrap_or("\"");
        let r = self.doc.attr(id, "rquote").unwrap_or("\"");
        let text = format!("{l}{}{r}", self.doc.text_content(id));
        format!("\\text{{{}}}", escape_text_mode(&text))
    }

    fn mspace(&self, id: NodeId) -> String {
        let Some(width) = self.doc.attr(id, "width").and_then(length_em) else {
            return String::new();
        };
        let cmd = if width < -0.01 {
            "\\!"
        } else if width < 0.01 {
            ""
        } else if width < 0.2 {
            "\\,"
        } else if width < 0.25 {
            "\\:"
        } else if width < 0.5 {
            "\\;"
        } else if width < 1.5 {
            "\\quad"
        } else {
            "\\qquad"
        };
        cmd.to_string()
    }

    fn zero_thickness(&self, frac: NodeId) -> bool {
        self.doc.attr(frac, "linethickness").is_some_and(|t| {
            let num: String = t
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            !num.is_empty() && num.parse::<f64>().is_ok_and(|v| v == 0.0)
        })
    }

    fn mfrac(&self, id: NodeId, depth: usize) -> String {
        let k = self.kids(id);
        let (a, b) = (self.arg(&k, 0, depth), self.arg(&k, 1, depth));
        if self.zero_thickness(id) {
            format!("{{{a} \\atop {b}}}")
        } else {
            format!("\\frac{{{a}}}{{{b}}}")
        }
    }

    fn mroot(&self, id: NodeId, depth: usize) -> String {
        let k = self.kids(id);
        let (base, index) = (self.arg(&k, 0, depth), self.arg(&k, 1, depth));
        if index.is_empty() {
            format!("\\sqrt{{{base}}}")
        } else {
            format!("\\sqrt[{index}]{{{base}}}")
        }
    }

    /// `msub`, `msup`, `msubsup`: `base_{sub}^{sup}` with braces always.
    fn scripts(&self, id: NodeId, name: &str, depth: usize) -> String {
        let k = self.kids(id);
        let base = group_base(&self.arg(&k, 0, depth));
        let (sub, sup) = match name {
            "msub" => (Some(self.arg(&k, 1, depth)), None),
            "msup" => (None, Some(self.script_sup(&k, 1, depth))),
            _ => (
                Some(self.arg(&k, 1, depth)),
                Some(self.script_sup(&k, 2, depth)),
            ),
        };
        attach(base, sub, sup)
    }

    /// A superscript; primes become `\prime` so that `f^{\prime}` reads as in TeX.
    fn script_sup(&self, k: &[NodeId], i: usize, depth: usize) -> String {
        let Some(&id) = k.get(i) else {
            return String::new();
        };
        if matches!(self.doc.name(id), Some("mo" | "mrow")) {
            let t = self.doc.text_content(id);
            let primes: usize = t
                .trim()
                .chars()
                .map(|c| match c {
                    '′' | '\'' => 1,
                    '″' => 2,
                    '‴' => 3,
                    _ => 100,
                })
                .sum();
            if (1..=4).contains(&primes) {
                return "\\prime".repeat(primes);
            }
        }
        self.node(id, depth)
    }

    /// `munder`, `mover`, `munderover`: accents, braces, limits of big operators, or
    /// `\underset`/`\overset`.
    fn under_over(&self, id: NodeId, name: &str, depth: usize) -> String {
        let k = self.kids(id);
        let base_id = k.first().copied();
        let (under, over) = match name {
            "munder" => (k.get(1).copied(), None),
            "mover" => (None, k.get(1).copied()),
            _ => (k.get(1).copied(), k.get(2).copied()),
        };
        if let (Some(b), Some(script), None) = (base_id, over.or(under), over.and(under)) {
            if let Some(s) = self.accent(b, script, over.is_some(), depth) {
                return s;
            }
        }
        let base = self.arg(&k, 0, depth);
        let under = under.map(|u| self.node(u, depth));
        let over = over.map(|o| self.node(o, depth));
        if base_id.is_some_and(|b| self.takes_limits(b)) || is_brace_command(&base) {
            return attach(group_base(&base), under, over);
        }
        let mut out = base;
        if let Some(u) = under {
            out = format!("\\underset{{{u}}}{{{out}}}");
        }
        if let Some(o) = over {
            out = format!("\\overset{{{o}}}{{{out}}}");
        }
        out
    }

    /// An accent command when `script` is an accent character over (or under) `base`.
    fn accent(&self, base: NodeId, script: NodeId, over: bool, depth: usize) -> Option<String> {
        if !matches!(self.doc.name(script), Some("mo" | "mi" | "mtext")) {
            return None;
        }
        let t = self.doc.text_content(script);
        let mut chars = t.trim().chars();
        let c = chars.next()?;
        if chars.next().is_some() {
            return None;
        }
        let wide = self.doc.text_content(base).trim().chars().count() > 1;
        let cmd = if over {
            over_accent(c, wide)
        } else {
            under_accent(c)
        }?;
        Some(format!("\\{cmd}{{{}}}", self.node(base, depth)))
    }

    /// Whether a base takes its under/over scripts as limits (`\sum`, `\lim`, ...).
    fn takes_limits(&self, base: NodeId) -> bool {
        let mut id = base;
        if let Some(k) = self.unwrap_single_any(base) {
            id = k;
        }
        let t = self.doc.text_content(id);
        let t = t.trim().trim_end_matches('\u{2061}');
        match self.doc.name(id) {
            Some("mo") => {
                let mut cs = t.chars();
                matches!((cs.next(), cs.next()), (Some(c), None) if BIG_OPS.contains(c))
                    || LIMIT_NAMES.contains(&t)
            }
            Some("mi") | Some("mrow") => LIMIT_NAMES.contains(&t),
            _ => false,
        }
    }

    fn unwrap_single_any(&self, id: NodeId) -> Option<NodeId> {
        if matches!(self.doc.name(id), Some("mrow" | "mstyle")) {
            let k = self.kids(id);
            let elems: Vec<NodeId> = k
                .into_iter()
                .filter(|&c| self.doc.text_content(c).trim() != "\u{2061}")
                .collect();
            if elems.len() == 1 {
                return Some(elems[0]);
            }
        }
        None
    }

    /// `mmultiscripts`: `{}_{a}^{b}base_{c}^{d}` with `<none/>` as empty scripts.
    fn multiscripts(&self, id: NodeId, depth: usize) -> String {
        let k = self.kids(id);
        let Some((&base, rest)) = k.split_first() else {
            return String::new();
        };
        let split = rest
            .iter()
            .position(|&c| self.doc.name(c) == Some("mprescripts"));
        let (post, pre) = match split {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let scripts = |list: &[NodeId]| -> String {
            let mut out = String::new();
            for pair in list.chunks(2) {
                let sub = self.node(pair[0], depth);
                let sup = pair
                    .get(1)
                    .map(|&s| self.node(s, depth))
                    .unwrap_or_default();
                if !sub.is_empty() {
                    out.push_str(&format!("_{{{sub}}}"));
                }
                if !sup.is_empty() {
                    out.push_str(&format!("^{{{sup}}}"));
                }
            }
            out
        };
        let mut out = String::new();
        let pre = scripts(pre);
        if !pre.is_empty() {
            out.push_str("{}");
            out.push_str(&pre);
        }
        out.push_str(&group_base(&self.node(base, depth)));
        out.push_str(&scripts(post));
        out
    }

    /// `mtable` as `\begin{env}` rows `\\` cells `&` (labels of `mlabeledtr` dropped).
    fn table(&self, id: NodeId, env: &str, depth: usize) -> String {
        let rows: Vec<String> = self
            .kids(id)
            .into_iter()
            .map(|r| self.table_row(r, depth))
            .collect();
        format!("\\begin{{{env}}}{}\\end{{{env}}}", rows.join(" \\\\ "))
    }

    fn table_row(&self, row: NodeId, depth: usize) -> String {
        let mut cells = self.kids(row);
        match self.doc.name(row) {
            Some("mlabeledtr") if !cells.is_empty() => {
                cells.remove(0);
            }
            Some("mtr" | "mlabeledtr") => {}
            _ => return self.node(row, depth),
        }
        cells
            .iter()
            .map(|&c| match self.doc.name(c) {
                Some("mtd") => self.row(self.doc.children(c), depth),
                _ => self.node(c, depth),
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }

    /// `mfenced`: `open a, b close` (defaults `(`, `)`, `,`); a lone table becomes a matrix.
    fn fenced(&self, id: NodeId, depth: usize) -> String {
        let open = self.doc.attr(id, "open").unwrap_or("(").trim();
        let close = self.doc.attr(id, "close").unwrap_or(")").trim();
        let seps: Vec<char> = self
            .doc
            .attr(id, "separators")
            .unwrap_or(",")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let k = self.kids(id);
        if k.len() == 1 {
            if let Some(t) = self.unwrap_single(k[0], "mtable") {
                let env = match (open, close) {
                    ("(", ")") => Some("pmatrix"),
                    ("[", "]") => Some("bmatrix"),
                    ("|", "|") => Some("vmatrix"),
                    ("{", "}") => Some("Bmatrix"),
                    ("{", "") => Some("cases"),
                    _ => None,
                };
                if let Some(env) = env {
                    return self.table(t, env, depth);
                }
            }
        }
        let mut inner = String::new();
        for (i, &c) in k.iter().enumerate() {
            if i > 0 {
                let sep = seps
                    .get(i - 1)
                    .or(seps.last())
                    .map(|s| token_text(&s.to_string()))
                    .unwrap_or_default();
                inner.push_str(&sep);
                inner.push(' ');
            }
            push_piece(&mut inner, &self.node(c, depth));
        }
        let tall = k.iter().any(|&c| self.is_tall(c));
        if tall {
            format!(
                "\\left{} {inner} \\right{}",
                delimiter(open),
                delimiter(close)
            )
        } else {
            let mut out = token_text(open);
            push_piece(&mut out, &inner);
            push_piece(&mut out, &token_text(close));
            out
        }
    }

    /// `menclose`: boxes and strikes that LaTeX has commands for; other notations pass through.
    fn enclose(&self, id: NodeId, depth: usize) -> String {
        let body = self.row(self.doc.children(id), depth);
        let notation = self.doc.attr(id, "notation").unwrap_or("longdiv");
        let notes: Vec<&str> = notation.split_whitespace().collect();
        let has = |n: &str| notes.contains(&n);
        let cmd = if has("box") || has("roundedbox") {
            "boxed"
        } else if has("updiagonalstrike") && has("downdiagonalstrike") {
            "xcancel"
        } else if has("updiagonalstrike") {
            "cancel"
        } else if has("downdiagonalstrike") {
            "bcancel"
        } else if has("horizontalstrike") {
            "sout"
        } else if has("radical") {
            "sqrt"
        } else if has("top") && notes.len() == 1 {
            "overline"
        } else if has("bottom") && notes.len() == 1 {
            "underline"
        } else {
            return body;
        };
        format!("\\{cmd}{{{body}}}")
    }
}

/// Appends `piece`, inserting a space when `out` ends in a control word and `piece` starts with
/// a letter (`\alpha x`, never `\alphax`).
pub(crate) fn push_piece(out: &mut String, piece: &str) {
    if piece.is_empty() {
        return;
    }
    if needs_space(out, piece) {
        out.push(' ');
    }
    out.push_str(piece);
}

/// Whether `a` followed directly by `b` would glue a control word to a letter.
fn needs_space(a: &str, b: &str) -> bool {
    if !b.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return false;
    }
    let letters = a.len() - a.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    letters > 0
        && a[..a.len() - letters].ends_with('\\')
        && !a[..a.len() - letters].ends_with("\\\\")
}

/// Wraps a script base in braces unless it is one character or one command with one group.
fn group_base(base: &str) -> String {
    if is_atom(base) {
        base.to_string()
    } else {
        format!("{{{base}}}")
    }
}

/// One character, a control word, or a control word with one braced argument.
fn is_atom(s: &str) -> bool {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some('\\'), Some(c)) if c.is_ascii_alphabetic() => {
            let rest = s[1..].trim_start_matches(|c: char| c.is_ascii_alphabetic());
            rest.is_empty() || single_group(rest)
        }
        (Some('\\'), Some(_)) => s.chars().count() == 2,
        _ => false,
    }
}

/// Whether `s` is exactly one balanced `{...}` group.
fn single_group(s: &str) -> bool {
    if !s.starts_with('{') {
        return false;
    }
    let mut level = 0i32;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    return i + 1 == s.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether a converted base is `\overbrace{..}` or `\underbrace{..}` (their scripts are limits).
fn is_brace_command(base: &str) -> bool {
    (base.starts_with("\\overbrace{") || base.starts_with("\\underbrace{")) && is_atom(base)
}

/// `base_{sub}^{sup}`, omitting missing scripts.
fn attach(base: String, sub: Option<String>, sup: Option<String>) -> String {
    let mut out = base;
    if let Some(s) = sub {
        out.push_str(&format!("_{{{s}}}"));
    }
    if let Some(s) = sup {
        out.push_str(&format!("^{{{s}}}"));
    }
    out
}

/// Operators written with a space on each side when infix.
const SPACED_OPS: &str =
    "+-=<>±∓×÷⋅·∘∗≤≥≠≈≡∼≃≅∝≪≫∈∉∋⊂⊃⊆⊇⊊⊋∪∩∧∨→←↔⇒⇐⇔↦⟶⟵⟷⟹⟸⟺⊕⊗⊖⊙∣≺≻⪯⪰≲≳≐≜≔⊢⊨∖⩽⩾≮≯≰≱⊄⊈⊉↪↗↘−";

/// Operators whose under/over scripts are limits.
const BIG_OPS: &str = "∑∏∐∫∬∭∮∯⋀⋁⋂⋃⨁⨂⨀⨄⨆";

/// Function names whose under scripts are limits.
const LIMIT_NAMES: &[&str] = &[
    "lim", "max", "min", "sup", "inf", "liminf", "limsup", "det", "gcd", "Pr", "argmax", "argmin",
    "lim inf", "lim sup",
];

/// Opening fence characters.
const OPENERS: &[&str] = &["(", "[", "{", "⟨", "⌊", "⌈", "|", "‖", "∥", "⟦", "〈", "∣"];
/// Closing fence characters.
const CLOSERS: &[&str] = &[")", "]", "}", "⟩", "⌋", "⌉", "|", "‖", "∥", "⟧", "〉", "∣"];

/// A fence as a `\left`/`\right` delimiter (`.` when empty).
fn delimiter(f: &str) -> String {
    match f {
        "" => ".".into(),
        "{" => "\\{".into(),
        "}" => "\\}".into(),
        "‖" | "∥" => "\\|".into(),
        "∣" => "|".into(),
        _ => token_text(f),
    }
}

/// Multi-letter identifiers LaTeX has operator commands for.
fn function_name(name: &str) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "arccos", "arcsin", "arctan", "arg", "cos", "cosh", "cot", "coth", "csc", "deg", "det",
        "dim", "exp", "gcd", "hom", "inf", "ker", "lg", "lim", "liminf", "limsup", "ln", "log",
        "max", "min", "Pr", "sec", "sin", "sinh", "sup", "tan", "tanh",
    ];
    let found = NAMES.iter().position(|&n| n == name)?;
    const CMDS: &[&str] = &[
        "\\arccos", "\\arcsin", "\\arctan", "\\arg", "\\cos", "\\cosh", "\\cot", "\\coth", "\\csc",
        "\\deg", "\\det", "\\dim", "\\exp", "\\gcd", "\\hom", "\\inf", "\\ker", "\\lg", "\\lim",
        "\\liminf", "\\limsup", "\\ln", "\\log", "\\max", "\\min", "\\Pr", "\\sec", "\\sin",
        "\\sinh", "\\sup", "\\tan", "\\tanh",
    ];
    CMDS.get(found).copied()
}

/// The font command for a `mathvariant` value.
fn variant_command(v: &str) -> Option<&'static str> {
    Some(match v.trim() {
        "normal" => "mathrm",
        "bold" => "mathbf",
        "italic" => "mathit",
        "bold-italic" => "boldsymbol",
        "double-struck" => "mathbb",
        "fraktur" | "bold-fraktur" => "mathfrak",
        "script" | "bold-script" => "mathcal",
        "sans-serif" | "bold-sans-serif" | "sans-serif-italic" | "sans-serif-bold-italic" => {
            "mathsf"
        }
        "monospace" => "mathtt",
        _ => return None,
    })
}

/// The accent command for a character over a base (`wide`: base of several characters).
fn over_accent(c: char, wide: bool) -> Option<&'static str> {
    Some(match c {
        '¯' | '‾' | '\u{305}' | '_' => "overline",
        'ˉ' | '\u{304}' => "bar",
        '^' | 'ˆ' | '\u{302}' => {
            if wide {
                "widehat"
            } else {
                "hat"
            }
        }
        '~' | '˜' | '\u{303}' => {
            if wide {
                "widetilde"
            } else {
                "tilde"
            }
        }
        '\u{20D7}' => "vec",
        '→' | '⟶' => {
            if wide {
                "overrightarrow"
            } else {
                "vec"
            }
        }
        '←' | '⟵' => "overleftarrow",
        '↔' => "overleftrightarrow",
        '˙' | '\u{307}' | '.' => "dot",
        '¨' | '\u{308}' => "ddot",
        '⃛' => "dddot",
        'ˇ' | '\u{30C}' => "check",
        '˘' | '\u{306}' => "breve",
        '´' | 'ˊ' | '\u{301}' => "acute",
        '`' | 'ˋ' | '\u{300}' => "grave",
        '˚' | '\u{30A}' => "mathring",
        '⏞' | '︷' => "overbrace",
        _ => return None,
    })
}

/// The accent command for a character under a base.
fn under_accent(c: char) -> Option<&'static str> {
    Some(match c {
        '¯' | '‾' | '_' | '\u{332}' => "underline",
        '⏟' | '︸' => "underbrace",
        '←' => "underleftarrow",
        '→' => "underrightarrow",
        _ => return None,
    })
}

/// Converts a length (`0.2em`, `3pt`, `thinmathspace`, ...) to em.
fn length_em(s: &str) -> Option<f64> {
    let s = s.trim();
    let named = match s {
        "veryverythinmathspace" => Some(1.0 / 18.0),
        "verythinmathspace" => Some(2.0 / 18.0),
        "thinmathspace" => Some(3.0 / 18.0),
        "mediummathspace" => Some(4.0 / 18.0),
        "thickmathspace" => Some(5.0 / 18.0),
        "verythickmathspace" => Some(6.0 / 18.0),
        "veryverythickmathspace" => Some(7.0 / 18.0),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let value: f64 = s[..split].parse().ok()?;
    let factor = match s[split..].trim() {
        "em" | "" => 1.0,
        "ex" => 0.43,
        "mu" => 1.0 / 18.0,
        "px" => 1.0 / 16.0,
        "pt" => 0.1,
        "pc" => 1.2,
        "mm" => 0.285,
        "cm" => 2.85,
        "in" => 7.2,
        _ => return None,
    };
    Some(value * factor)
}

/// Whitespace-only text (KaTeX writes `\,` as a thin-space `mtext`) as spacing commands.
fn spaces(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let cmd = match c {
            '\u{2009}' | '\u{2006}' => "\\,",
            '\u{205F}' | '\u{2005}' => {
                if c == '\u{205F}' {
                    "\\:"
                } else {
                    "\\;"
                }
            }
            '\u{2004}' => "\\;",
            '\u{00A0}' => "~",
            '\u{2002}' => "\\enspace",
            '\u{2003}' => "\\quad",
            ' ' | '\t' | '\n' | '\r' => "\\ ",
            _ => "",
        };
        if !cmd.is_empty() {
            if needs_space(&out, cmd) {
                out.push(' ');
            }
            out.push_str(cmd);
        }
    }
    out
}

/// Token text (`mi`, `mn`, `mo`) in math mode: each character through [`char_to_latex`].
fn token_text(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{338}') {
            chars.next();
            push_piece(&mut out, negated(c));
            continue;
        }
        match char_to_latex(c) {
            Some(s) => push_piece(&mut out, s),
            None if c.is_whitespace() => {}
            None => {
                let mut buf = [0u8; 4];
                push_piece(&mut out, c.encode_utf8(&mut buf));
            }
        }
    }
    out
}

/// A character followed by U+0338 COMBINING LONG SOLIDUS OVERLAY (`∉` is `\notin`).
fn negated(c: char) -> &'static str {
    match c {
        '∈' => "\\notin",
        '=' => "\\neq",
        '≡' => "\\not\\equiv",
        '⊂' => "\\not\\subset",
        '⊃' => "\\not\\supset",
        '<' => "\\nless",
        '>' => "\\ngtr",
        '∼' => "\\nsim",
        '∋' => "\\not\\ni",
        _ => "\\not",
    }
}

/// Stray text directly inside a math container (not in a token element).
fn text_as_math(text: &str) -> String {
    token_text(text.trim())
}

/// Escapes text for use inside `\mathrm{..}` (math mode letters).
fn escape_math_text(text: &str) -> String {
    token_text(text)
}

/// Escapes text for LaTeX text mode (`\text{..}`).
pub fn escape_text_mode(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '{' | '}' | '$' | '&' | '#' | '%' | '_' => {
                out.push('\\');
                out.push(c);
            }
            '^' => out.push_str("\\textasciicircum{}"),
            '~' => out.push_str("\\textasciitilde{}"),
            '\n' | '\r' | '\t' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The LaTeX (math mode) for one character, or `None` when it is written as itself.
///
/// Covers Greek, operators, relations, arrows, big operators, fences, dots, letterlike symbols
/// (`ℝ` is `\mathbb{R}`), the Mathematical Alphanumeric Symbols block (`𝐱` is `\mathbf{x}`),
/// LaTeX special characters (`{` is `\{`) and drops invisible operators (U+2061..U+2064).
pub fn char_to_latex(c: char) -> Option<&'static str> {
    if let Some(s) = greek(c) {
        return Some(s);
    }
    if let Some(s) = symbol(c) {
        return Some(s);
    }
    alphanumeric(c)
}

fn greek(c: char) -> Option<&'static str> {
    Some(match c {
        'α' => "\\alpha",
        'β' => "\\beta",
        'γ' => "\\gamma",
        'δ' => "\\delta",
        'ε' => "\\varepsilon",
        'ϵ' => "\\epsilon",
        'ζ' => "\\zeta",
        'η' => "\\eta",
        'θ' => "\\theta",
        'ϑ' => "\\vartheta",
        'ι' => "\\iota",
        'κ' => "\\kappa",
        'ϰ' => "\\varkappa",
        'λ' => "\\lambda",
        'μ' | 'µ' => "\\mu",
        'ν' => "\\nu",
        'ξ' => "\\xi",
        'ο' => "o",
        'π' => "\\pi",
        'ϖ' => "\\varpi",
        'ρ' => "\\rho",
        'ϱ' => "\\varrho",
        'σ' => "\\sigma",
        'ς' => "\\varsigma",
        'τ' => "\\tau",
        'υ' => "\\upsilon",
        'φ' => "\\varphi",
        'ϕ' => "\\phi",
        'χ' => "\\chi",
        'ψ' => "\\psi",
        'ω' => "\\omega",
        'Α' => "A",
        'Β' => "B",
        'Γ' => "\\Gamma",
        'Δ' => "\\Delta",
        'Ε' => "E",
        'Ζ' => "Z",
        'Η' => "H",
        'Θ' => "\\Theta",
        'Ι' => "I",
        'Κ' => "K",
        'Λ' => "\\Lambda",
        'Μ' => "M",
        'Ν' => "N",
        'Ξ' => "\\Xi",
        'Ο' => "O",
        'Π' => "\\Pi",
        'Ρ' => "P",
        'Σ' => "\\Sigma",
        'Τ' => "T",
        'Υ' | 'ϒ' => "\\Upsilon",
        'Φ' => "\\Phi",
        'Χ' => "X",
        'Ψ' => "\\Psi",
        'Ω' | '\u{2126}' => "\\Omega",
        'ϝ' => "\\digamma",
        _ => return None,
    })
}

fn symbol(c: char) -> Option<&'static str> {
    Some(match c {
        // LaTeX specials and invisible operators.
        '{' => "\\{",
        '}' => "\\}",
        '#' => "\\#",
        '$' => "\\$",
        '%' => "\\%",
        '&' => "\\&",
        '_' => "\\_",
        '\\' => "\\backslash",
        '~' => "\\sim",
        '^' => "\\hat{}",
        '\u{2061}'..='\u{2064}' | '\u{200B}' | '\u{FEFF}' | '\u{200C}' | '\u{200D}' => "",
        // Arithmetic and binary operators.
        '−' | '‐' | '‑' | '–' => "-",
        '∕' | '⁄' => "/",
        '∶' => ":",
        '±' => "\\pm",
        '∓' => "\\mp",
        '×' => "\\times",
        '÷' => "\\div",
        '·' | '⋅' => "\\cdot",
        '∘' | '◦' => "\\circ",
        '∗' => "\\ast",
        '⋆' => "\\star",
        '•' | '∙' => "\\bullet",
        '⊕' => "\\oplus",
        '⊖' => "\\ominus",
        '⊗' => "\\otimes",
        '⊘' => "\\oslash",
        '⊙' => "\\odot",
        '⊎' => "\\uplus",
        '⊓' => "\\sqcap",
        '⊔' => "\\sqcup",
        '∪' => "\\cup",
        '∩' => "\\cap",
        '∧' => "\\wedge",
        '∨' => "\\vee",
        '∖' => "\\setminus",
        '≀' => "\\wr",
        '⋄' => "\\diamond",
        '†' => "\\dagger",
        '‡' => "\\ddagger",
        '⨿' => "\\amalg",
        '⋉' => "\\ltimes",
        '⋊' => "\\rtimes",
        '⊲' => "\\lhd",
        '⊳' => "\\rhd",
        '⊴' => "\\unlhd",
        '⊵' => "\\unrhd",
        '⋈' => "\\bowtie",
        // Relations.
        '≤' => "\\leq",
        '≥' => "\\geq",
        '⩽' => "\\leqslant",
        '⩾' => "\\geqslant",
        '≠' => "\\neq",
        '≈' => "\\approx",
        '≡' => "\\equiv",
        '≢' => "\\not\\equiv",
        '∼' => "\\sim",
        '≁' => "\\nsim",
        '≃' => "\\simeq",
        '≅' => "\\cong",
        '≇' => "\\ncong",
        '∝' => "\\propto",
        '≪' => "\\ll",
        '≫' => "\\gg",
        '⋘' => "\\lll",
        '⋙' => "\\ggg",
        '≺' => "\\prec",
        '≻' => "\\succ",
        '⪯' => "\\preceq",
        '⪰' => "\\succeq",
        '≲' => "\\lesssim",
        '≳' => "\\gtrsim",
        '≍' => "\\asymp",
        '≐' => "\\doteq",
        '≜' => "\\triangleq",
        '≔' => "\\coloneqq",
        '≮' => "\\nless",
        '≯' => "\\ngtr",
        '≰' => "\\nleq",
        '≱' => "\\ngeq",
        '∈' => "\\in",
        '∉' => "\\notin",
        '∋' => "\\ni",
        '∌' => "\\not\\ni",
        '⊂' => "\\subset",
        '⊃' => "\\supset",
        '⊆' => "\\subseteq",
        '⊇' => "\\supseteq",
        '⊊' => "\\subsetneq",
        '⊋' => "\\supsetneq",
        '⊄' => "\\not\\subset",
        '⊅' => "\\not\\supset",
        '⊈' => "\\nsubseteq",
        '⊉' => "\\nsupseteq",
        '⊏' => "\\sqsubset",
        '⊐' => "\\sqsupset",
        '⊑' => "\\sqsubseteq",
        '⊒' => "\\sqsupseteq",
        '⊢' => "\\vdash",
        '⊣' => "\\dashv",
        '⊨' => "\\models",
        '⊥' | '⟂' => "\\perp",
        '⊤' => "\\top",
        '∣' => "\\mid",
        '∤' => "\\nmid",
        '∥' | '‖' => "\\|",
        '∦' => "\\nparallel",
        '∴' => "\\therefore",
        '∵' => "\\because",
        // Arrows.
        '→' => "\\to",
        '←' => "\\leftarrow",
        '↔' => "\\leftrightarrow",
        '⇒' => "\\Rightarrow",
        '⇐' => "\\Leftarrow",
        '⇔' => "\\Leftrightarrow",
        '⟶' => "\\longrightarrow",
        '⟵' => "\\longleftarrow",
        '⟷' => "\\longleftrightarrow",
        '⟹' => "\\Longrightarrow",
        '⟸' => "\\Longleftarrow",
        '⟺' => "\\Longleftrightarrow",
        '↦' => "\\mapsto",
        '⟼' => "\\longmapsto",
        '↑' => "\\uparrow",
        '↓' => "\\downarrow",
        '↕' => "\\updownarrow",
        '⇑' => "\\Uparrow",
        '⇓' => "\\Downarrow",
        '⇕' => "\\Updownarrow",
        '↗' => "\\nearrow",
        '↘' => "\\searrow",
        '↙' => "\\swarrow",
        '↖' => "\\nwarrow",
        '↪' => "\\hookrightarrow",
        '↩' => "\\hookleftarrow",
        '⇀' => "\\rightharpoonup",
        '↼' => "\\leftharpoonup",
        '⇌' => "\\rightleftharpoons",
        '⇝' => "\\leadsto",
        // Big operators.
        '∑' => "\\sum",
        '∏' => "\\prod",
        '∐' => "\\coprod",
        '∫' => "\\int",
        '∬' => "\\iint",
        '∭' => "\\iiint",
        '∮' => "\\oint",
        '∯' => "\\oiint",
        '⋀' => "\\bigwedge",
        '⋁' => "\\bigvee",
        '⋂' => "\\bigcap",
        '⋃' => "\\bigcup",
        '⨁' => "\\bigoplus",
        '⨂' => "\\bigotimes",
        '⨀' => "\\bigodot",
        '⨄' => "\\biguplus",
        '⨆' => "\\bigsqcup",
        '√' => "\\surd",
        // Fences.
        '⟨' | '〈' => "\\langle",
        '⟩' | '〉' => "\\rangle",
        '⌊' => "\\lfloor",
        '⌋' => "\\rfloor",
        '⌈' => "\\lceil",
        '⌉' => "\\rceil",
        '⟦' => "\\llbracket",
        '⟧' => "\\rrbracket",
        // Dots, primes, misc.
        '…' => "\\ldots",
        '⋯' => "\\cdots",
        '⋮' => "\\vdots",
        '⋱' => "\\ddots",
        '′' => "'",
        '″' => "''",
        '‴' => "'''",
        '°' => "^{\\circ}",
        '∞' => "\\infty",
        '∂' => "\\partial",
        '∇' => "\\nabla",
        '∀' => "\\forall",
        '∃' => "\\exists",
        '∄' => "\\nexists",
        '¬' => "\\neg",
        '∅' | '⌀' => "\\emptyset",
        '∠' => "\\angle",
        '∡' => "\\measuredangle",
        '△' => "\\triangle",
        '▽' => "\\triangledown",
        '□' | '◻' => "\\square",
        '■' | '∎' => "\\blacksquare",
        '◇' => "\\Diamond",
        '♠' => "\\spadesuit",
        '♣' => "\\clubsuit",
        '♥' | '♡' => "\\heartsuit",
        '♦' | '♢' => "\\diamondsuit",
        '♭' => "\\flat",
        '♮' => "\\natural",
        '♯' => "\\sharp",
        '✓' => "\\checkmark",
        '★' => "\\bigstar",
        '∁' => "\\complement",
        'ℓ' => "\\ell",
        'ℏ' => "\\hbar",
        'ℜ' => "\\Re",
        'ℑ' => "\\Im",
        'ℵ' => "\\aleph",
        'ℶ' => "\\beth",
        'ℷ' => "\\gimel",
        'ℸ' => "\\daleth",
        '℘' => "\\wp",
        'ı' => "\\imath",
        'ȷ' => "\\jmath",
        'ð' => "\\eth",
        '\u{00A0}' => "~",
        _ => return None,
    })
}

/// Letterlike symbols and the Mathematical Alphanumeric Symbols block (U+1D400..U+1D7FF).
fn alphanumeric(c: char) -> Option<&'static str> {
    let letterlike = match c {
        'ℝ' => "\\mathbb{R}",
        'ℕ' => "\\mathbb{N}",
        'ℤ' => "\\mathbb{Z}",
        'ℚ' => "\\mathbb{Q}",
        'ℂ' => "\\mathbb{C}",
        'ℍ' => "\\mathbb{H}",
        'ℙ' => "\\mathbb{P}",
        'ℬ' => "\\mathcal{B}",
        'ℰ' => "\\mathcal{E}",
        'ℱ' => "\\mathcal{F}",
        'ℋ' => "\\mathcal{H}",
        'ℐ' => "\\mathcal{I}",
        'ℒ' => "\\mathcal{L}",
        'ℳ' => "\\mathcal{M}",
        'ℛ' => "\\mathcal{R}",
        'ℯ' => "e",
        'ℊ' => "g",
        'ℴ' => "o",
        'ℭ' => "\\mathfrak{C}",
        'ℌ' => "\\mathfrak{H}",
        'ℨ' => "\\mathfrak{Z}",
        'ℎ' => "h",
        _ => return math_alpha_block(c),
    };
    Some(letterlike)
}

/// `𝐱` -> `\mathbf{x}` etc. The strings are leaked-free: built from static tables.
fn math_alpha_block(c: char) -> Option<&'static str> {
    let cp = c as u32;
    if !(0x1D400..=0x1D7FF).contains(&cp) {
        return None;
    }
    // (start, font) for each 52-letter alphabet, in Unicode order.
    const FONTS: [&str; 13] = [
        "mathbf",
        "mathit",
        "boldsymbol",
        "mathcal",
        "mathcal",
        "mathfrak",
        "mathbb",
        "mathfrak",
        "mathsf",
        "mathbf",
        "mathsf",
        "mathsf",
        "mathtt",
    ];
    if cp < 0x1D6A4 {
        let off = cp - 0x1D400;
        let font = FONTS.get((off / 52) as usize)?;
        let idx = (off % 52) as usize;
        return styled_letter(font, idx);
    }
    if (0x1D7CE..=0x1D7FF).contains(&cp) {
        let off = cp - 0x1D7CE;
        let font = ["mathbf", "mathbb", "mathsf", "mathbf", "mathtt"].get((off / 10) as usize)?;
        return styled_digit(font, (off % 10) as usize);
    }
    None
}

/// Static `\font{X}` strings for the 52 letters of each font.
fn styled_letter(font: &str, idx: usize) -> Option<&'static str> {
    macro_rules! table {
        ($f:literal) => {
            [
                concat!("\\", $f, "{A}"),
                concat!("\\", $f, "{B}"),
                concat!("\\", $f, "{C}"),
                concat!("\\", $f, "{D}"),
                concat!("\\", $f, "{E}"),
                concat!("\\", $f, "{F}"),
                concat!("\\", $f, "{G}"),
                concat!("\\", $f, "{H}"),
                concat!("\\", $f, "{I}"),
                concat!("\\", $f, "{J}"),
                concat!("\\", $f, "{K}"),
                concat!("\\", $f, "{L}"),
                concat!("\\", $f, "{M}"),
                concat!("\\", $f, "{N}"),
                concat!("\\", $f, "{O}"),
                concat!("\\", $f, "{P}"),
                concat!("\\", $f, "{Q}"),
                concat!("\\", $f, "{R}"),
                concat!("\\", $f, "{S}"),
                concat!("\\", $f, "{T}"),
                concat!("\\", $f, "{U}"),
                concat!("\\", $f, "{V}"),
                concat!("\\", $f, "{W}"),
                concat!("\\", $f, "{X}"),
                concat!("\\", $f, "{Y}"),
                concat!("\\", $f, "{Z}"),
                concat!("\\", $f, "{a}"),
                concat!("\\", $f, "{b}"),
                concat!("\\", $f, "{c}"),
                concat!("\\", $f, "{d}"),
                concat!("\\", $f, "{e}"),
                concat!("\\", $f, "{f}"),
                concat!("\\", $f, "{g}"),
                concat!("\\", $f, "{h}"),
                concat!("\\", $f, "{i}"),
                concat!("\\", $f, "{j}"),
                concat!("\\", $f, "{k}"),
                concat!("\\", $f, "{l}"),
                concat!("\\", $f, "{m}"),
                concat!("\\", $f, "{n}"),
                concat!("\\", $f, "{o}"),
                concat!("\\", $f, "{p}"),
                concat!("\\", $f, "{q}"),
                concat!("\\", $f, "{r}"),
                concat!("\\", $f, "{s}"),
                concat!("\\", $f, "{t}"),
                concat!("\\", $f, "{u}"),
                concat!("\\", $f, "{v}"),
                concat!("\\", $f, "{w}"),
                concat!("\\", $f, "{x}"),
                concat!("\\", $f, "{y}"),
                concat!("\\", $f, "{z}"),
            ]
        };
    }
    const ITALIC: [&str; 52] = [
        "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R",
        "S", "T", "U", "V", "W", "X", "Y", "Z", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
        "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const BF: [&str; 52] = table!("mathbf");
    const BS: [&str; 52] = table!("boldsymbol");
    const CAL: [&str; 52] = table!("mathcal");
    const FRAK: [&str; 52] = table!("mathfrak");
    const BB: [&str; 52] = table!("mathbb");
    const SF: [&str; 52] = table!("mathsf");
    const TT: [&str; 52] = table!("mathtt");
    let t: &[&'static str; 52] = match font {
        "mathbf" => &BF,
        "mathit" => &ITALIC,
        "boldsymbol" => &BS,
        "mathcal" => &CAL,
        "mathfrak" => &FRAK,
        "mathbb" => &BB,
        "mathsf" => &SF,
        "mathtt" => &TT,
        _ => return None,
    };
    t.get(idx).copied()
}

/// Static `\font{d}` strings for digits.
fn styled_digit(font: &str, idx: usize) -> Option<&'static str> {
    const BF: [&str; 10] = [
        "\\mathbf{0}",
        "\\mathbf{1}",
        "\\mathbf{2}",
        "\\mathbf{3}",
        "\\mathbf{4}",
        "\\mathbf{5}",
        "\\mathbf{6}",
        "\\mathbf{7}",
        "\\mathbf{8}",
        "\\mathbf{9}",
    ];
    const BB: [&str; 10] = [
        "\\mathbb{0}",
        "\\mathbb{1}",
        "\\mathbb{2}",
        "\\mathbb{3}",
        "\\mathbb{4}",
        "\\mathbb{5}",
        "\\mathbb{6}",
        "\\mathbb{7}",
        "\\mathbb{8}",
        "\\mathbb{9}",
    ];
    const SF: [&str; 10] = [
        "\\mathsf{0}",
        "\\mathsf{1}",
        "\\mathsf{2}",
        "\\mathsf{3}",
        "\\mathsf{4}",
        "\\mathsf{5}",
        "\\mathsf{6}",
        "\\mathsf{7}",
        "\\mathsf{8}",
        "\\mathsf{9}",
    ];
    const TT: [&str; 10] = [
        "\\mathtt{0}",
        "\\mathtt{1}",
        "\\mathtt{2}",
        "\\mathtt{3}",
        "\\mathtt{4}",
        "\\mathtt{5}",
        "\\mathtt{6}",
        "\\mathtt{7}",
        "\\mathtt{8}",
        "\\mathtt{9}",
    ];
    let t = match font {
        "mathbf" => &BF,
        "mathbb" => &BB,
        "mathsf" => &SF,
        "mathtt" => &TT,
        _ => return None,
    };
    t.get(idx).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Converts the first `<math>` of `html` (wrapped in `<math>` when it has none).
    fn tex(html: &str) -> String {
        let src = if html.contains("<math") {
            html.to_string()
        } else {
            format!("<math>{html}</math>")
        };
        let doc = Document::parse(&src);
        let math = doc.elements_named("math").next().expect("math element");
        mathml_to_latex(&doc, math)
    }

    #[test]
    fn tokens() {
        assert_eq!(tex("<mi>x</mi><mo>+</mo><mn>2</mn>"), "x + 2");
        assert_eq!(tex("<mi>sin</mi><mo>&#x2061;</mo><mi>x</mi>"), "\\sin x");
        assert_eq!(tex("<mi>foo</mi>"), "\\mathrm{foo}");
        assert_eq!(
            tex("<mi>foo</mi><mo>&#x2061;</mo><mi>x</mi>"),
            "\\operatorname{foo}x"
        );
        assert_eq!(tex("<mi>&alpha;</mi><mi>x</mi>"), "\\alpha x");
        assert_eq!(tex("<mi mathvariant='bold'>x</mi>"), "\\mathbf{x}");
        assert_eq!(tex("<mi mathvariant='double-struck'>R</mi>"), "\\mathbb{R}");
        assert_eq!(tex("<mi mathvariant='fraktur'>g</mi>"), "\\mathfrak{g}");
        assert_eq!(tex("<mi mathvariant='script'>L</mi>"), "\\mathcal{L}");
        assert_eq!(tex("<mi mathvariant='sans-serif'>A</mi>"), "\\mathsf{A}");
        assert_eq!(tex("<mi mathvariant='monospace'>A</mi>"), "\\mathtt{A}");
        assert_eq!(
            tex("<mi mathvariant='bold-italic'>v</mi>"),
            "\\boldsymbol{v}"
        );
        assert_eq!(
            tex("<mi mathvariant='normal'>d</mi><mi>x</mi>"),
            "\\mathrm{d}x"
        );
        assert_eq!(tex("<mi mathvariant='normal'>m</mi><mi mathvariant='normal'>o</mi><mi mathvariant='normal'>d</mi>"), "\\mathrm{mod}");
        assert_eq!(tex("<mo>{</mo><mi>x</mi><mo>}</mo>"), "\\{x\\}");
        assert_eq!(tex("<mi>a</mi><mo>&InvisibleTimes;</mo><mi>b</mi>"), "ab");
        assert_eq!(
            tex("<mo>&sum;</mo><mo>&int;</mo><mo>&rarr;</mo>"),
            "\\sum\\int\\to"
        );
        assert_eq!(
            tex("<mi>&#x211D;</mi><mi>&#x1D431;</mi>"),
            "\\mathbb{R}\\mathbf{x}"
        );
        assert_eq!(tex("<mo>&#x2208;&#x338;</mo>"), "\\notin");
        assert_eq!(
            tex("<mtext>if $x_1$ & 50%</mtext>"),
            "\\text{if \\$x\\_1\\$ \\& 50\\%}"
        );
        assert_eq!(tex("<ms>ab</ms>"), "\\text{\"ab\"}");
    }

    #[test]
    fn operators_are_spaced_and_prefix_ops_are_not() {
        assert_eq!(tex("<mi>a</mi><mo>=</mo><mo>-</mo><mi>b</mi>"), "a = -b");
        assert_eq!(tex("<mo>(</mo><mo>−</mo><mn>1</mn><mo>)</mo>"), "(-1)");
        assert_eq!(tex("<mi>a</mi><mo>&le;</mo><mi>b</mi>"), "a \\leq b");
    }

    #[test]
    fn fractions_roots_scripts() {
        assert_eq!(tex("<mfrac><mi>a</mi><mi>b</mi></mfrac>"), "\\frac{a}{b}");
        assert_eq!(
            tex("<mfrac linethickness='0'><mi>a</mi><mi>b</mi></mfrac>"),
            "{a \\atop b}"
        );
        assert_eq!(
            tex("<mrow><mo>(</mo><mfrac linethickness='0px'><mi>n</mi><mi>k</mi></mfrac><mo>)</mo></mrow>"),
            "\\binom{n}{k}"
        );
        assert_eq!(
            tex("<msqrt><mi>x</mi><mo>+</mo><mn>1</mn></msqrt>"),
            "\\sqrt{x + 1}"
        );
        assert_eq!(tex("<mroot><mi>x</mi><mn>3</mn></mroot>"), "\\sqrt[3]{x}");
        assert_eq!(tex("<msub><mi>x</mi><mi>i</mi></msub>"), "x_{i}");
        assert_eq!(tex("<msup><mi>x</mi><mn>2</mn></msup>"), "x^{2}");
        assert_eq!(
            tex("<msubsup><mi>x</mi><mi>i</mi><mn>2</mn></msubsup>"),
            "x_{i}^{2}"
        );
        assert_eq!(
            tex("<msup><mi>f</mi><mo>&prime;</mo></msup>"),
            "f^{\\prime}"
        );
        assert_eq!(
            tex("<msup><mrow><mo>(</mo><mi>a</mi><mo>+</mo><mi>b</mi><mo>)</mo></mrow><mn>2</mn></msup>"),
            "{(a + b)}^{2}"
        );
        assert_eq!(
            tex("<msup><mi>&alpha;</mi><mn>2</mn></msup>"),
            "\\alpha^{2}"
        );
        assert_eq!(
            tex("<mmultiscripts><mi>F</mi><mi>q</mi><none/><mprescripts/><mi>p</mi><none/></mmultiscripts>"),
            "{}_{p}F_{q}"
        );
    }

    #[test]
    fn under_over() {
        assert_eq!(
            tex("<mover><mi>x</mi><mo>&#xAF;</mo></mover>"),
            "\\overline{x}"
        );
        assert_eq!(
            tex("<mover accent='true'><mi>x</mi><mo>^</mo></mover>"),
            "\\hat{x}"
        );
        assert_eq!(tex("<mover><mi>x</mi><mo>~</mo></mover>"), "\\tilde{x}");
        assert_eq!(tex("<mover><mi>v</mi><mo>&rarr;</mo></mover>"), "\\vec{v}");
        assert_eq!(tex("<mover><mi>x</mi><mo>&#x2D9;</mo></mover>"), "\\dot{x}");
        assert_eq!(tex("<mover><mi>x</mi><mo>&#xA8;</mo></mover>"), "\\ddot{x}");
        assert_eq!(
            tex("<munder><mrow><mi>a</mi><mi>b</mi></mrow><mo>&#x23DF;</mo></munder>"),
            "\\underbrace{ab}"
        );
        assert_eq!(
            tex("<munderover><mo>&sum;</mo><mrow><mi>i</mi><mo>=</mo><mn>1</mn></mrow><mi>n</mi></munderover>"),
            "\\sum_{i = 1}^{n}"
        );
        assert_eq!(
            tex("<munder><mi>lim</mi><mrow><mi>x</mi><mo>&rarr;</mo><mn>0</mn></mrow></munder>"),
            "\\lim_{x \\to 0}"
        );
        assert_eq!(
            tex("<munder><mi>x</mi><mi>y</mi></munder>"),
            "\\underset{y}{x}"
        );
        assert_eq!(
            tex("<mover><mi>x</mi><mi>y</mi></mover>"),
            "\\overset{y}{x}"
        );
    }

    #[test]
    fn tables_and_fences() {
        let cells = "<mtable><mtr><mtd><mi>a</mi></mtd><mtd><mi>b</mi></mtd></mtr><mtr><mtd><mi>c</mi></mtd><mtd><mi>d</mi></mtd></mtr></mtable>";
        assert_eq!(tex(cells), "\\begin{matrix}a & b \\\\ c & d\\end{matrix}");
        assert_eq!(
            tex(&format!("<mrow><mo>(</mo>{cells}<mo>)</mo></mrow>")),
            "\\begin{pmatrix}a & b \\\\ c & d\\end{pmatrix}"
        );
        assert_eq!(
            tex(&format!("<mrow><mo>[</mo>{cells}<mo>]</mo></mrow>")),
            "\\begin{bmatrix}a & b \\\\ c & d\\end{bmatrix}"
        );
        assert_eq!(
            tex(&format!("<mrow><mo>|</mo>{cells}<mo>|</mo></mrow>")),
            "\\begin{vmatrix}a & b \\\\ c & d\\end{vmatrix}"
        );
        assert_eq!(
            tex("<mtable><mlabeledtr><mtd><mtext>(1)</mtext></mtd><mtd><mi>x</mi></mtd></mlabeledtr></mtable>"),
            "\\begin{matrix}x\\end{matrix}"
        );
        assert_eq!(tex("<mfenced><mi>a</mi><mi>b</mi></mfenced>"), "(a, b)");
        assert_eq!(
            tex("<mfenced open='[' close='}' separators=';'><mi>a</mi><mi>b</mi></mfenced>"),
            "[a; b\\}"
        );
        assert_eq!(
            tex("<mrow><mo fence='true'>(</mo><mfrac><mn>1</mn><mn>2</mn></mfrac><mo fence='true'>)</mo></mrow>"),
            "\\left(\\frac{1}{2} \\right)"
        );
    }

    #[test]
    fn layout_elements() {
        assert_eq!(
            tex("<mi>a</mi><mspace width='0.1667em'/><mi>b</mi>"),
            "a\\,b"
        );
        assert_eq!(
            tex("<mi>a</mi><mspace width='1em'/><mi>b</mi>"),
            "a\\quad b"
        );
        assert_eq!(
            tex("<mi>a</mi><mspace width='2em'/><mi>b</mi>"),
            "a\\qquad b"
        );
        assert_eq!(
            tex("<mi>a</mi><mspace width='thickmathspace'/><mi>b</mi>"),
            "a\\;b"
        );
        assert_eq!(tex("<mphantom><mi>x</mi></mphantom>"), "\\phantom{x}");
        assert_eq!(
            tex("<menclose notation='box'><mi>x</mi></menclose>"),
            "\\boxed{x}"
        );
        assert_eq!(
            tex("<menclose notation='updiagonalstrike'><mi>x</mi></menclose>"),
            "\\cancel{x}"
        );
        assert_eq!(
            tex("<menclose notation='circle'><mi>x</mi></menclose>"),
            "x"
        );
        assert_eq!(
            tex("<mstyle mathcolor='red'><mpadded><mi>x</mi></mpadded></mstyle>"),
            "x"
        );
        assert_eq!(tex("<maction><mi>x</mi><mi>y</mi></maction>"), "x");
        assert_eq!(tex("<merror><mtext>oops</mtext></merror>"), "\\text{oops}");
        assert_eq!(
            tex("<semantics><mi>x</mi><annotation encoding='TeX'>y</annotation></semantics>"),
            "x"
        );
    }

    #[test]
    fn annotation_then_alttext_then_conversion() {
        let html = "<math alttext='a'><semantics><mi>x</mi><annotation encoding='application/x-tex'>\\xi</annotation></semantics></math>\
                    <math alttext=' a_1 '><mi>x</mi></math><math><mi>x</mi></math>";
        let doc = Document::parse(html);
        let got: Vec<(String, Source)> = doc
            .elements_named("math")
            .map(|m| math_element_latex(&doc, m))
            .collect();
        assert_eq!(
            got,
            [
                ("\\xi".to_string(), Source::Annotation),
                ("a_1".to_string(), Source::AltText),
                ("x".to_string(), Source::Converted)
            ]
        );
    }

    #[test]
    fn control_words_never_glue_to_letters() {
        assert_eq!(tex("<mi>&pi;</mi><mi>r</mi>"), "\\pi r");
        assert_eq!(tex("<mo>&forall;</mo><mi>x</mi>"), "\\forall x");
        assert!(!needs_space("\\\\", "x"));
    }

    #[test]
    fn never_panics_on_odd_mathml() {
        for s in [
            "<msub></msub>",
            "<mfrac><mi>a</mi></mfrac>",
            "<mroot></mroot>",
            "<munderover/>",
            "<mmultiscripts/>",
            "<mmultiscripts><mi>x</mi><mprescripts/></mmultiscripts>",
            "<mtable><mi>x</mi></mtable>",
            "<mfenced open='' close=''/>",
            "<mspace width='x'/>",
            "<mo></mo><mo fence='true'></mo>",
            "<mover><mi>x</mi></mover>",
            "text only",
            "<foo><bar>1</bar></foo>",
            "<mi mathvariant='weird'>x</mi>",
        ] {
            let _ = tex(s);
        }
        let deep = format!("{}<mi>x</mi>", "<mrow>".repeat(5000));
        let _ = tex(&deep);
        let deep = format!("{}<mi>x</mi>", "<msqrt>".repeat(5000));
        let _ = tex(&deep);
    }
}
