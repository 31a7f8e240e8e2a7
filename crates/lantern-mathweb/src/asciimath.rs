//! AsciiMath to LaTeX, following the grammar of MathJax's ASCIIMathML input.
//!
//! Pages using MathJax's AsciiMath input write math in backticks (`` `x^2 + 1` ``); OpenWebMath
//! keeps all math as LaTeX, so [`asciimath_to_latex`] converts it. The grammar is ASCIIMathML's:
//!
//! ```text
//! expr  = (iexpr | iexpr "/" iexpr)*        fraction operands lose their outer brackets
//! iexpr = sexpr ("_" sexpr)? ("^" sexpr)?   script brackets are dropped too
//! sexpr = symbol | "(" expr ")" | unary sexpr | binary sexpr sexpr | "text(..)" | "\"..\""
//! ```
//!
//! Symbols are matched longest first from a table (`+-`, `!=`, `->`, `sqrt`, `sum`, `oo`,
//! Greek names, `sin`, `bb`, `hat`, ...). Whitespace in the source becomes a space in the output,
//! so the LaTeX reads like the AsciiMath. The converter never panics: unbalanced brackets and
//! missing arguments give the best valid LaTeX available.

use crate::mathml::{escape_text_mode, push_piece};

/// Converts AsciiMath (the text between the backticks) to LaTeX for math mode.
pub fn asciimath_to_latex(src: &str) -> String {
    let mut p = Parser {
        src,
        pos: 0,
        depth: 0,
    };
    let mut out = String::new();
    loop {
        let items = p.expr();
        out.push_str(&join(&items));
        // A stray closing bracket at top level: write it and go on.
        match p.peek() {
            Some(tok) => {
                p.pos = tok.end;
                push_spaced(&mut out, tok.space, &tok.sym.tex.to_string());
            }
            None => break,
        }
    }
    out.trim().to_string()
}

/// Deepest bracket/argument nesting converted; deeper input is written as text.
const MAX_DEPTH: usize = 100;

/// What a symbol does in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Written as its LaTeX.
    Const,
    /// Takes one argument: the LaTeX is a template with `#` for the argument.
    Unary,
    /// Takes two arguments: the template has `#1` and `#2`.
    Binary,
    /// Opens a group.
    Left,
    /// Closes a group.
    Right,
    /// `_`, `^` or `/`.
    Infix,
    /// `text(..)` and `mbox(..)`: raw text up to the closing parenthesis.
    Text,
}

/// One row of the symbol table.
#[derive(Debug, Clone, Copy)]
struct Sym {
    input: &'static str,
    kind: Kind,
    tex: &'static str,
}

const fn s(input: &'static str, kind: Kind, tex: &'static str) -> Sym {
    Sym { input, kind, tex }
}

use Kind::{Binary, Const, Infix, Left, Right, Text, Unary};

/// The AsciiMath symbols (MathJax's ASCIIMathML table) with their LaTeX.
const SYMBOLS: &[Sym] = &[
    // Greek.
    s("alpha", Const, "\\alpha"),
    s("beta", Const, "\\beta"),
    s("chi", Const, "\\chi"),
    s("delta", Const, "\\delta"),
    s("Delta", Const, "\\Delta"),
    s("epsi", Const, "\\epsilon"),
    s("epsilon", Const, "\\epsilon"),
    s("varepsilon", Const, "\\varepsilon"),
    s("eta", Const, "\\eta"),
    s("gamma", Const, "\\gamma"),
    s("Gamma", Const, "\\Gamma"),
    s("iota", Const, "\\iota"),
    s("kappa", Const, "\\kappa"),
    s("lambda", Const, "\\lambda"),
    s("Lambda", Const, "\\Lambda"),
    s("lamda", Const, "\\lambda"),
    s("Lamda", Const, "\\Lambda"),
    s("mu", Const, "\\mu"),
    s("nu", Const, "\\nu"),
    s("omega", Const, "\\omega"),
    s("Omega", Const, "\\Omega"),
    s("phi", Const, "\\phi"),
    s("varphi", Const, "\\varphi"),
    s("Phi", Const, "\\Phi"),
    s("pi", Const, "\\pi"),
    s("Pi", Const, "\\Pi"),
    s("psi", Const, "\\psi"),
    s("Psi", Const, "\\Psi"),
    s("rho", Const, "\\rho"),
    s("sigma", Const, "\\sigma"),
    s("Sigma", Const, "\\Sigma"),
    s("tau", Const, "\\tau"),
    s("theta", Const, "\\theta"),
    s("vartheta", Const, "\\vartheta"),
    s("Theta", Const, "\\Theta"),
    s("upsilon", Const, "\\upsilon"),
    s("xi", Const, "\\xi"),
    s("Xi", Const, "\\Xi"),
    s("zeta", Const, "\\zeta"),
    // Operators.
    s("*", Const, "\\cdot"),
    s("**", Const, "\\ast"),
    s("***", Const, "\\star"),
    s("//", Const, "/"),
    s("\\\\", Const, "\\backslash"),
    s("setminus", Const, "\\setminus"),
    s("xx", Const, "\\times"),
    s("|><", Const, "\\ltimes"),
    s("><|", Const, "\\rtimes"),
    s("|><|", Const, "\\bowtie"),
    s("-:", Const, "\\div"),
    s("divide", Const, "\\div"),
    s("@", Const, "\\circ"),
    s("o+", Const, "\\oplus"),
    s("ox", Const, "\\otimes"),
    s("o.", Const, "\\odot"),
    s("sum", Const, "\\sum"),
    s("prod", Const, "\\prod"),
    s("^^", Const, "\\wedge"),
    s("^^^", Const, "\\bigwedge"),
    s("vv", Const, "\\vee"),
    s("vvv", Const, "\\bigvee"),
    s("nn", Const, "\\cap"),
    s("nnn", Const, "\\bigcap"),
    s("uu", Const, "\\cup"),
    s("uuu", Const, "\\bigcup"),
    s("+-", Const, "\\pm"),
    s("-+", Const, "\\mp"),
    // Relations.
    s("!=", Const, "\\neq"),
    s(":=", Const, ":="),
    s("lt", Const, "<"),
    s("<=", Const, "\\leq"),
    s("lt=", Const, "\\leq"),
    s("gt", Const, ">"),
    s(">=", Const, "\\geq"),
    s("gt=", Const, "\\geq"),
    s("-<", Const, "\\prec"),
    s("-lt", Const, "\\prec"),
    s(">-", Const, "\\succ"),
    s("-<=", Const, "\\preceq"),
    s(">-=", Const, "\\succeq"),
    s("in", Const, "\\in"),
    s("!in", Const, "\\notin"),
    s("sub", Const, "\\subset"),
    s("sup", Const, "\\supset"),
    s("sube", Const, "\\subseteq"),
    s("supe", Const, "\\supseteq"),
    s("-=", Const, "\\equiv"),
    s("~=", Const, "\\cong"),
    s("~~", Const, "\\approx"),
    s("~", Const, "\\sim"),
    s("prop", Const, "\\propto"),
    // Logic.
    s("and", Const, "\\text{and}"),
    s("or", Const, "\\text{or}"),
    s("not", Const, "\\neg"),
    s("=>", Const, "\\Rightarrow"),
    s("if", Const, "\\text{if}"),
    s("<=>", Const, "\\Leftrightarrow"),
    s("AA", Const, "\\forall"),
    s("EE", Const, "\\exists"),
    s("_|_", Const, "\\bot"),
    s("TT", Const, "\\top"),
    s("|--", Const, "\\vdash"),
    s("|==", Const, "\\models"),
    // Brackets.
    s("(", Left, "("),
    s(")", Right, ")"),
    s("[", Left, "["),
    s("]", Right, "]"),
    s("{", Left, "\\{"),
    s("}", Right, "\\}"),
    s("(:", Left, "\\langle"),
    s(":)", Right, "\\rangle"),
    s("<<", Left, "\\langle"),
    s(">>", Right, "\\rangle"),
    s("{:", Left, ""),
    s(":}", Right, ""),
    s("|__", Const, "\\lfloor"),
    s("__|", Const, "\\rfloor"),
    s("|~", Const, "\\lceil"),
    s("~|", Const, "\\rceil"),
    // Miscellaneous.
    s("int", Const, "\\int"),
    s("oint", Const, "\\oint"),
    s("dx", Const, "dx"),
    s("dy", Const, "dy"),
    s("dz", Const, "dz"),
    s("dt", Const, "dt"),
    s("del", Const, "\\partial"),
    s("grad", Const, "\\nabla"),
    s("O/", Const, "\\emptyset"),
    s("oo", Const, "\\infty"),
    s("aleph", Const, "\\aleph"),
    s("...", Const, "\\ldots"),
    s(":.", Const, "\\therefore"),
    s(":'", Const, "\\because"),
    s("/_", Const, "\\angle"),
    s("/_\\", Const, "\\triangle"),
    s("\\ ", Const, "\\ "),
    s("quad", Const, "\\quad"),
    s("qquad", Const, "\\qquad"),
    s("cdots", Const, "\\cdots"),
    s("vdots", Const, "\\vdots"),
    s("ddots", Const, "\\ddots"),
    s("diamond", Const, "\\diamond"),
    s("square", Const, "\\square"),
    s("frown", Const, "\\frown"),
    s("CC", Const, "\\mathbb{C}"),
    s("NN", Const, "\\mathbb{N}"),
    s("QQ", Const, "\\mathbb{Q}"),
    s("RR", Const, "\\mathbb{R}"),
    s("ZZ", Const, "\\mathbb{Z}"),
    // Functions.
    s("lim", Const, "\\lim"),
    s("Lim", Const, "\\operatorname{Lim}"),
    s("sin", Const, "\\sin"),
    s("cos", Const, "\\cos"),
    s("tan", Const, "\\tan"),
    s("sinh", Const, "\\sinh"),
    s("cosh", Const, "\\cosh"),
    s("tanh", Const, "\\tanh"),
    s("cot", Const, "\\cot"),
    s("sec", Const, "\\sec"),
    s("csc", Const, "\\csc"),
    s("arcsin", Const, "\\arcsin"),
    s("arccos", Const, "\\arccos"),
    s("arctan", Const, "\\arctan"),
    s("coth", Const, "\\coth"),
    s("sech", Const, "\\operatorname{sech}"),
    s("csch", Const, "\\operatorname{csch}"),
    s("exp", Const, "\\exp"),
    s("log", Const, "\\log"),
    s("ln", Const, "\\ln"),
    s("det", Const, "\\det"),
    s("dim", Const, "\\dim"),
    s("mod", Const, "\\operatorname{mod}"),
    s("gcd", Const, "\\gcd"),
    s("lcm", Const, "\\operatorname{lcm}"),
    s("lub", Const, "\\operatorname{lub}"),
    s("glb", Const, "\\operatorname{glb}"),
    s("min", Const, "\\min"),
    s("max", Const, "\\max"),
    // Arrows.
    s("uarr", Const, "\\uparrow"),
    s("darr", Const, "\\downarrow"),
    s("rarr", Const, "\\rightarrow"),
    s("->", Const, "\\to"),
    s("to", Const, "\\to"),
    s(">->", Const, "\\rightarrowtail"),
    s("->>", Const, "\\twoheadrightarrow"),
    s(">->>", Const, "\\twoheadrightarrowtail"),
    s("|->", Const, "\\mapsto"),
    s("larr", Const, "\\leftarrow"),
    s("harr", Const, "\\leftrightarrow"),
    s("rArr", Const, "\\Rightarrow"),
    s("lArr", Const, "\\Leftarrow"),
    s("hArr", Const, "\\Leftrightarrow"),
    // Commands with arguments.
    s("sqrt", Unary, "\\sqrt{#}"),
    s("root", Binary, "\\sqrt[#1]{#2}"),
    s("frac", Binary, "\\frac{#1}{#2}"),
    s("stackrel", Binary, "\\stackrel{#1}{#2}"),
    s("overset", Binary, "\\overset{#1}{#2}"),
    s("underset", Binary, "\\underset{#1}{#2}"),
    s("color", Binary, "{\\color{#1}#2}"),
    s("abs", Unary, "\\left|#\\right|"),
    s("norm", Unary, "\\left\\|#\\right\\|"),
    s("floor", Unary, "\\left\\lfloor #\\right\\rfloor"),
    s("ceil", Unary, "\\left\\lceil #\\right\\rceil"),
    s("hat", Unary, "\\hat{#}"),
    s("bar", Unary, "\\overline{#}"),
    s("overline", Unary, "\\overline{#}"),
    s("vec", Unary, "\\vec{#}"),
    s("tilde", Unary, "\\tilde{#}"),
    s("dot", Unary, "\\dot{#}"),
    s("ddot", Unary, "\\ddot{#}"),
    s("overarc", Unary, "\\overparen{#}"),
    s("ul", Unary, "\\underline{#}"),
    s("underline", Unary, "\\underline{#}"),
    s("ubrace", Unary, "\\underbrace{#}"),
    s("underbrace", Unary, "\\underbrace{#}"),
    s("obrace", Unary, "\\overbrace{#}"),
    s("overbrace", Unary, "\\overbrace{#}"),
    s("cancel", Unary, "\\cancel{#}"),
    s("bb", Unary, "\\mathbf{#}"),
    s("mathbf", Unary, "\\mathbf{#}"),
    s("bbb", Unary, "\\mathbb{#}"),
    s("mathbb", Unary, "\\mathbb{#}"),
    s("cc", Unary, "\\mathcal{#}"),
    s("mathcal", Unary, "\\mathcal{#}"),
    s("tt", Unary, "\\mathtt{#}"),
    s("mathtt", Unary, "\\mathtt{#}"),
    s("fr", Unary, "\\mathfrak{#}"),
    s("mathfrak", Unary, "\\mathfrak{#}"),
    s("sf", Unary, "\\mathsf{#}"),
    s("mathsf", Unary, "\\mathsf{#}"),
    s("text", Text, "\\text{#}"),
    s("mbox", Text, "\\text{#}"),
    s("_", Infix, "_"),
    s("^", Infix, "^"),
    s("/", Infix, "/"),
    // LaTeX specials written as themselves in AsciiMath.
    s("#", Const, "\\#"),
    s("$", Const, "\\$"),
    s("%", Const, "\\%"),
    s("&", Const, "\\&"),
    s("\\", Const, "\\backslash"),
];

/// A matched symbol and where it ends.
#[derive(Debug, Clone, Copy)]
struct Token {
    sym: TokSym,
    /// Byte offset just past the token.
    end: usize,
    /// Whether whitespace preceded the token in the source.
    space: bool,
}

/// A token's meaning: a table symbol, or a run of digits, a letter or another character.
#[derive(Debug, Clone, Copy)]
struct TokSym {
    kind: Kind,
    tex: TexStr,
    input_len: usize,
}

/// LaTeX of a token: either static, or a slice of the source (numbers, letters).
#[derive(Debug, Clone, Copy)]
enum TexStr {
    Static(&'static str),
    Source(usize, usize),
}

impl std::fmt::Display for TexStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TexStr::Static(s) => f.write_str(s),
            TexStr::Source(..) => f.write_str(""),
        }
    }
}

/// A parsed simple expression: its LaTeX and, for a bracket group, the parts needed to drop
/// the brackets (fractions, scripts, arguments) or to read it as a matrix row.
#[derive(Debug, Clone, Default)]
struct Node {
    tex: String,
    space: bool,
    group: Option<Group>,
}

#[derive(Debug, Clone, Default)]
struct Group {
    /// The opening and closing source symbols (`(`, `[`, `{:` ..), close empty when missing.
    open: &'static str,
    close: &'static str,
    /// The LaTeX between the brackets.
    inner: String,
    /// The content split at top-level commas (for matrices).
    cells: Vec<Vec<Node>>,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    /// The next token without consuming it.
    fn peek(&self) -> Option<Token> {
        let rest = &self.src[self.pos..];
        let trimmed = rest.trim_start();
        let start = self.pos + (rest.len() - trimmed.len());
        let space = start > self.pos;
        let first = trimmed.chars().next()?;
        let best = SYMBOLS
            .iter()
            .filter(|sym| trimmed.starts_with(sym.input))
            .max_by_key(|sym| sym.input.len());
        if let Some(sym) = best {
            return Some(Token {
                sym: TokSym {
                    kind: sym.kind,
                    tex: TexStr::Static(sym.tex),
                    input_len: sym.input.len(),
                },
                end: start + sym.input.len(),
                space,
            });
        }
        let len = if first.is_ascii_digit() {
            number_len(trimmed)
        } else {
            first.len_utf8()
        };
        Some(Token {
            sym: TokSym {
                kind: Const,
                tex: TexStr::Source(start, start + len),
                input_len: len,
            },
            end: start + len,
            space,
        })
    }

    fn tex_of(&self, t: &Token) -> String {
        match t.sym.tex {
            TexStr::Static(s) => s.to_string(),
            TexStr::Source(a, b) => source_tex(&self.src[a..b]),
        }
    }

    fn input_of(&self, t: &Token) -> &str {
        &self.src[t.end - t.sym.input_len..t.end]
    }

    /// `expr`: simple expressions with scripts and fractions, up to a closing bracket or the end.
    fn expr(&mut self) -> Vec<Node> {
        let mut items = Vec::new();
        while let Some(tok) = self.peek() {
            if tok.sym.kind == Right {
                break;
            }
            let before = self.pos;
            let mut node = self.iexpr();
            if self.peek_infix("/") {
                let t = self.next_token();
                let den = self.iexpr();
                let space = node.space;
                if den.tex.is_empty() && den.group.is_none() {
                    node.tex.push_str(&self.tex_of(&t));
                } else {
                    node = Node {
                        tex: format!("\\frac{{{}}}{{{}}}", unbracket(&node), unbracket(&den)),
                        space,
                        group: None,
                    };
                }
            }
            items.push(node);
            if self.pos == before {
                // Nothing consumed (cannot happen with a well-formed table); avoid looping.
                self.pos = tok.end;
            }
        }
        items
    }

    fn peek_infix(&self, which: &str) -> bool {
        self.peek()
            .is_some_and(|t| t.sym.kind == Infix && self.input_of(&t) == which)
    }

    fn next_token(&mut self) -> Token {
        match self.peek() {
            Some(t) => {
                self.pos = t.end;
                t
            }
            None => Token {
                sym: TokSym {
                    kind: Const,
                    tex: TexStr::Static(""),
                    input_len: 0,
                },
                end: self.pos,
                space: false,
            },
        }
    }

    /// `iexpr`: a simple expression with optional `_` and `^` scripts.
    fn iexpr(&mut self) -> Node {
        let mut node = self.sexpr();
        let mut sub_done = false;
        let mut sup_done = false;
        loop {
            let which = if !sub_done && self.peek_infix("_") {
                "_"
            } else if !sup_done && self.peek_infix("^") {
                "^"
            } else {
                break;
            };
            self.next_token();
            let script = self.sexpr();
            let body = unbracket(&script);
            let body = if body.chars().count() == 1 && !body.starts_with('\\') {
                body
            } else {
                format!("{{{body}}}")
            };
            if node.group.is_some() && node.tex.is_empty() {
                node.tex = "{}".into();
            }
            node.tex = format!("{}{which}{body}", node.tex);
            node.group = None;
            if which == "_" {
                sub_done = true;
            } else {
                sup_done = true;
            }
        }
        node
    }

    /// `sexpr`: one symbol, a bracket group, or a command with its arguments.
    fn sexpr(&mut self) -> Node {
        let Some(tok) = self.peek() else {
            return Node::default();
        };
        match tok.sym.kind {
            Right => Node::default(),
            Infix => {
                if self.input_of(&tok) == "/" {
                    self.pos = tok.end;
                    return leaf("/".into(), tok.space);
                }
                Node {
                    tex: "{}".into(),
                    space: tok.space,
                    group: None,
                }
            }
            Left => {
                self.pos = tok.end;
                self.group(tok)
            }
            Unary => {
                self.pos = tok.end;
                self.unary(tok)
            }
            Binary => {
                self.pos = tok.end;
                self.binary(tok)
            }
            Text => {
                self.pos = tok.end;
                self.text_command(tok)
            }
            Const => {
                self.pos = tok.end;
                if self.input_of(&tok) == "\"" {
                    return self.quoted(tok.space);
                }
                leaf(self.tex_of(&tok), tok.space)
            }
        }
    }

    /// A bracket group from `open` to its closing bracket (or the end of input); a group of
    /// bracketed rows of equal length is a matrix.
    fn group(&mut self, open: Token) -> Node {
        let open_src: &'static str = match open.sym.tex {
            TexStr::Static(_) => static_input(self.input_of(&open)),
            TexStr::Source(..) => "(",
        };
        self.depth += 1;
        let items = if self.depth > MAX_DEPTH {
            let rest = self.src[self.pos..].to_string();
            self.pos = self.src.len();
            vec![leaf(
                format!("\\text{{{}}}", escape_text_mode(&rest)),
                false,
            )]
        } else {
            self.expr()
        };
        self.depth -= 1;
        let close = match self.peek() {
            Some(t) if t.sym.kind == Right => {
                self.pos = t.end;
                Some(t)
            }
            _ => None,
        };
        let close_src = close.map(|c| static_input(self.input_of(&c))).unwrap_or("");
        let close_tex = close.map(|c| self.tex_of(&c)).unwrap_or_default();
        let cells = split_cells(&items);
        let inner = join(&items);
        let group = Group {
            open: open_src,
            close: close_src,
            inner,
            cells,
        };
        if let Some(m) = matrix(&group) {
            return leaf(m, open.space);
        }
        let mut tex = self.tex_of(&open);
        push_piece(&mut tex, &group.inner);
        push_piece(&mut tex, &close_tex);
        Node {
            tex,
            space: open.space,
            group: Some(group),
        }
    }

    fn argument(&mut self) -> Option<Node> {
        self.depth += 1;
        let arg = if self.depth > MAX_DEPTH {
            None
        } else {
            match self.peek() {
                Some(t) if !matches!(t.sym.kind, Right | Infix) => Some(self.sexpr()),
                _ => None,
            }
        };
        self.depth -= 1;
        arg
    }

    fn unary(&mut self, tok: Token) -> Node {
        let template = self.tex_of(&tok);
        let Some(arg) = self.argument() else {
            return leaf(self.fallback_name(&tok), tok.space);
        };
        leaf(template.replace('#', &unbracket(&arg)), tok.space)
    }

    fn binary(&mut self, tok: Token) -> Node {
        let template = self.tex_of(&tok);
        let Some(a) = self.argument() else {
            return leaf(self.fallback_name(&tok), tok.space);
        };
        let b = self.argument().map(|b| unbracket(&b)).unwrap_or_default();
        let tex = template.replace("#1", &unbracket(&a)).replace("#2", &b);
        leaf(tex, tok.space)
    }

    /// A command without its argument is written as its name.
    fn fallback_name(&self, tok: &Token) -> String {
        format!("\\text{{{}}}", escape_text_mode(self.input_of(tok)))
    }

    /// `text(..)` / `mbox(..)`: raw text up to the matching `)`.
    fn text_command(&mut self, tok: Token) -> Node {
        let rest = &self.src[self.pos..];
        let trimmed = rest.trim_start();
        let Some(body) = trimmed.strip_prefix('(') else {
            return leaf(self.fallback_name(&tok), tok.space);
        };
        let end = body.find(')').unwrap_or(body.len());
        let text = &body[..end];
        self.pos += (rest.len() - trimmed.len()) + 1 + end + usize::from(end < body.len());
        leaf(format!("\\text{{{}}}", escape_text_mode(text)), tok.space)
    }

    /// `"quoted text"` (the opening quote already consumed).
    fn quoted(&mut self, space: bool) -> Node {
        let rest = &self.src[self.pos..];
        let end = rest.find('"').unwrap_or(rest.len());
        let text = &rest[..end];
        self.pos += end + usize::from(end < rest.len());
        leaf(format!("\\text{{{}}}", escape_text_mode(text)), space)
    }
}

fn leaf(tex: String, space: bool) -> Node {
    Node {
        tex,
        space,
        group: None,
    }
}

/// The table's own `&'static str` for a bracket input (so groups can keep it).
fn static_input(input: &str) -> &'static str {
    SYMBOLS
        .iter()
        .find(|s| s.input == input)
        .map(|s| s.input)
        .unwrap_or("")
}

/// Length of a number: digits, optionally `.` and more digits.
fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    i.max(1)
}

/// A character (or number) with no table entry: itself, or its LaTeX when it is a Unicode
/// math symbol.
fn source_tex(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match crate::mathml::char_to_latex(c) {
            Some(t) => push_piece(&mut out, t),
            None => out.push(c),
        }
    }
    out
}

/// LaTeX of a node with the brackets of a `( )`, `[ ]`, `{ }` or `{: :}` group dropped.
fn unbracket(node: &Node) -> String {
    match &node.group {
        Some(g) if matches!(g.open, "(" | "[" | "{" | "{:") => g.inner.clone(),
        _ => node.tex.clone(),
    }
}

/// Joins items, keeping a space where the source had one.
fn join(items: &[Node]) -> String {
    let mut out = String::new();
    for n in items {
        push_spaced(&mut out, n.space, &n.tex);
    }
    out
}

fn push_spaced(out: &mut String, space: bool, tex: &str) {
    if space && !out.is_empty() && !tex.is_empty() {
        out.push(' ');
    }
    push_piece(out, tex);
}

/// Splits a group's items at top-level commas.
fn split_cells(items: &[Node]) -> Vec<Vec<Node>> {
    let mut cells = vec![Vec::new()];
    for n in items {
        if n.group.is_none() && n.tex == "," {
            cells.push(Vec::new());
        } else if let Some(last) = cells.last_mut() {
            last.push(n.clone());
        }
    }
    cells
}

/// `[[a,b],[c,d]]`-style groups as a matrix environment: two or more rows, each one bracket
/// group of `(..)` or `[..]`, all with the same number of cells.
fn matrix(g: &Group) -> Option<String> {
    if g.cells.len() < 2 {
        return None;
    }
    let mut rows = Vec::new();
    let mut width = None;
    for cell in &g.cells {
        let [node] = cell.as_slice() else {
            return None;
        };
        let row = node.group.as_ref()?;
        if !matches!(row.open, "(" | "[") || row.close.is_empty() {
            return None;
        }
        if *width.get_or_insert(row.cells.len()) != row.cells.len() {
            return None;
        }
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|c| join(c).trim().to_string())
            .collect();
        rows.push(cells.join(" & "));
    }
    let env = match (g.open, g.close) {
        ("(", ")") => "pmatrix",
        ("[", "]") => "bmatrix",
        ("{", "}") => "Bmatrix",
        ("{", ":}") => "cases",
        ("|", "|") => "vmatrix",
        _ => "matrix",
    };
    Some(format!(
        "\\begin{{{env}}}{}\\end{{{env}}}",
        rows.join(" \\\\ ")
    ))
}

#[cfg(test)]
mod tests {
    use super::asciimath_to_latex as am;

    #[test]
    fn quadratic_formula_from_the_mathjax_sample() {
        assert_eq!(
            am("x = (-b +- sqrt(b^2-4ac))/(2a) ."),
            "x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a} ."
        );
        assert_eq!(am("a != 0"), "a \\neq 0");
        assert_eq!(am("ax^2 + bx + c = 0"), "ax^2 + bx + c = 0");
    }

    #[test]
    fn fractions_drop_grouping_brackets() {
        assert_eq!(am("(a+b)/(c)"), "\\frac{a+b}{c}");
        assert_eq!(am("1/2"), "\\frac{1}{2}");
        assert_eq!(am("a/b^2"), "\\frac{a}{b^2}");
        assert_eq!(am("frac(a)(b)"), "\\frac{a}{b}");
        assert_eq!(am("[x]/2"), "\\frac{x}{2}");
    }

    #[test]
    fn scripts_and_big_operators() {
        assert_eq!(am("sum_(i=1)^n i^3"), "\\sum_{i=1}^n i^3");
        assert_eq!(am("x^(2n)"), "x^{2n}");
        assert_eq!(am("x_i^2"), "x_i^2");
        assert_eq!(am("int_0^1 f(x) dx"), "\\int_0^1 f(x) dx");
        assert_eq!(am("lim_(x->oo) 1/x"), "\\lim_{x\\to\\infty} \\frac{1}{x}");
        assert_eq!(am("e^alpha"), "e^{\\alpha}");
    }

    #[test]
    fn roots_and_unary_commands() {
        assert_eq!(am("root(3)(x)"), "\\sqrt[3]{x}");
        assert_eq!(am("sqrt x"), "\\sqrt{x}");
        assert_eq!(
            am("hat x bar y vec v dot a"),
            "\\hat{x} \\overline{y} \\vec{v} \\dot{a}"
        );
        assert_eq!(
            am("bb A bbb R cc L"),
            "\\mathbf{A} \\mathbb{R} \\mathcal{L}"
        );
        assert_eq!(am("abs(x)"), "\\left|x\\right|");
        assert_eq!(am("sin x + cos(y)"), "\\sin x + \\cos(y)");
        assert_eq!(am("alpha beta Gamma"), "\\alpha \\beta \\Gamma");
    }

    #[test]
    fn text_and_brackets() {
        assert_eq!(am("text(if ) x > 0"), "\\text{if } x > 0");
        assert_eq!(am("\"for all\" x"), "\\text{for all} x");
        assert_eq!(am("(: a, b :)"), "\\langle a, b\\rangle");
        assert_eq!(am("{: x :}"), "x");
        assert_eq!(am("{a}"), "\\{a\\}");
        assert_eq!(
            am("a <= b => c <=> d -> e"),
            "a \\leq b \\Rightarrow c \\Leftrightarrow d \\to e"
        );
        assert_eq!(am("50%"), "50\\%");
    }

    #[test]
    fn matrices() {
        assert_eq!(
            am("[[a,b],[c,d]]"),
            "\\begin{bmatrix}a & b \\\\ c & d\\end{bmatrix}"
        );
        assert_eq!(
            am("((1,0),(0,1))"),
            "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}"
        );
        assert_eq!(am("(a,b)"), "(a,b)");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "",
            "(",
            ")",
            "((((",
            "))))",
            "^",
            "_",
            "/",
            "x^",
            "sqrt",
            "frac(a)",
            "root",
            "text(",
            "\"open",
            "[[a,b],[c]]",
            "a//b",
            "é ∑ ∞",
            "\\",
            "{:",
            ":}",
            "x/",
            "/x",
            "sum_",
            "((a,b),(c,d)",
            "𝐱^2",
        ] {
            let _ = am(s);
        }
        let deep = "(".repeat(5000);
        let _ = am(&deep);
        assert_eq!(am("x)"), "x)");
    }
}
