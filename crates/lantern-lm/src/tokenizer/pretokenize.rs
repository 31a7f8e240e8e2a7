//! Pre-tokenizers: split text into words before byte-level BPE, exactly as llama.cpp does.
//!
//! llama.cpp names a pre-tokenizer with `tokenizer.ggml.pre` and maps it to a list of regular
//! expressions that are applied one after another: each splits every piece left by the previous
//! one into its matches and the text between them (`unicode_regex_split`). The common
//! expressions (GPT-2, Llama-3, Qwen2, Qwen3.5) have hand-written matchers in llama.cpp's
//! `unicode.cpp`; the others run through `std::regex` over a "collapsed" copy of the text in
//! which each non-ASCII code point is replaced by one byte standing for its category. Both are
//! reproduced here: the hand-written matchers line by line, and the few `std::regex` patterns
//! llama.cpp uses for the supported pre-tokenizers as small matchers over the same collapsed
//! view (so `\s`, `\p{N}` and friends mean exactly what they mean there).

use std::ops::Range;

use super::unicode::{
    flags_of, to_lower_ascii, ACCENT_MARK, LETTER, MASK_CATEGORIES, NUMBER, PUNCTUATION, SYMBOL,
    WHITESPACE_FLAG,
};

/// A text as code points, with their llama.cpp flags and byte offsets.
pub(crate) struct CodePoints {
    cps: Vec<u32>,
    flags: Vec<u16>,
    /// Byte offset of each code point, plus the text length at the end.
    offsets: Vec<usize>,
}

impl CodePoints {
    pub(crate) fn new(text: &str) -> CodePoints {
        let mut cps = Vec::with_capacity(text.len());
        let mut offsets = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            cps.push(c as u32);
            offsets.push(i);
        }
        offsets.push(text.len());
        let flags = flags_of(&cps);
        CodePoints {
            cps,
            flags,
            offsets,
        }
    }

    fn len(&self) -> usize {
        self.cps.len()
    }
}

/// Marks "past the end of the piece" in the hand-written matchers (llama.cpp's `OUT_OF_RANGE`).
const OUT_OF_RANGE: u32 = 0xFFFF_FFFF;

/// One piece of text being split: code points `ini..end` of a [`CodePoints`].
struct Piece<'a> {
    cp: &'a CodePoints,
    ini: usize,
    end: usize,
}

impl Piece<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if self.ini <= pos && pos < self.end {
            self.cp.cps[pos]
        } else {
            OUT_OF_RANGE
        }
    }

    #[inline]
    fn flags(&self, pos: usize) -> u16 {
        if self.ini <= pos && pos < self.end {
            self.cp.flags[pos]
        } else {
            0
        }
    }

    #[inline]
    fn has(&self, pos: usize, mask: u16) -> bool {
        self.flags(pos) & mask != 0
    }
}

/// Collects the words of one piece (llama.cpp's `_add_token`).
struct Words<'o> {
    out: &'o mut Vec<Range<usize>>,
    prev_end: usize,
}

impl Words<'_> {
    #[inline]
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(self.prev_end..end);
        }
        self.prev_end = end;
        len
    }
}

/// Whether the apostrophe at `pos` starts a contraction; returns its length (2 or 3) if so.
#[inline]
fn contraction(p: &Piece, pos: usize, case_insensitive: bool) -> Option<usize> {
    if p.cpt(pos) != '\'' as u32 || pos + 1 >= p.end {
        return None;
    }
    let lower = |c: u32| {
        if case_insensitive {
            to_lower_ascii(c)
        } else {
            c
        }
    };
    let n1 = lower(p.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&c| n1 == c as u32) {
        return Some(2);
    }
    if pos + 2 < p.end {
        let n2 = lower(p.cpt(pos + 2));
        let pair = |a: u8, b: u8| n1 == a as u32 && n2 == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(3);
        }
    }
    None
}

/// `\s` in llama.cpp's hand-written matchers.
const WS: u16 = WHITESPACE_FLAG;

/// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// (llama.cpp `unicode_regex_split_custom_gpt2`).
fn split_gpt2(p: &Piece, out: &mut Vec<Range<usize>>) {
    let mut w = Words {
        out,
        prev_end: p.ini,
    };
    let mut pos = p.ini;
    while pos < p.end {
        let cpt = p.cpt(pos);
        let flags = p.flags(pos);
        if let Some(n) = contraction(p, pos, false) {
            pos += w.add(pos + n);
            continue;
        }
        let space = cpt == ' ' as u32;
        let mut flags2 = if space { p.flags(pos + 1) } else { flags };
        // <space>?\p{L}+
        if flags2 & LETTER != 0 {
            pos += space as usize;
            while flags2 & LETTER != 0 {
                pos += 1;
                flags2 = p.flags(pos);
            }
            w.add(pos);
            continue;
        }
        // <space>?\p{N}+
        if flags2 & NUMBER != 0 {
            pos += space as usize;
            while flags2 & NUMBER != 0 {
                pos += 1;
                flags2 = p.flags(pos);
            }
            w.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        if flags2 & (WS | LETTER | NUMBER) == 0 && flags2 != 0 {
            pos += space as usize;
            while flags2 & (WS | LETTER | NUMBER) == 0 && flags2 != 0 {
                pos += 1;
                flags2 = p.flags(pos);
            }
            w.add(pos);
            continue;
        }
        pos = whitespace_tail(p, &mut w, pos, false);
    }
}

/// The whitespace alternatives shared by all hand-written matchers, then "no match":
/// `\s*[\r\n]+` (when `newlines`), `\s+(?!\S)`, `\s+`, or a single code point.
/// Returns the new position.
#[inline]
fn whitespace_tail(p: &Piece, w: &mut Words, mut pos: usize, newlines: bool) -> usize {
    let mut num_ws = 0;
    let mut last_end_r_or_n = 0;
    while p.has(pos + num_ws, WS) {
        let c = p.cpt(pos + num_ws);
        if c == '\r' as u32 || c == '\n' as u32 {
            last_end_r_or_n = pos + num_ws + 1;
        }
        num_ws += 1;
    }
    if newlines && last_end_r_or_n > 0 {
        // \s*[\r\n]+
        pos = last_end_r_or_n;
        w.add(pos);
        return pos;
    }
    if num_ws > 1 && p.cpt(pos + num_ws) != OUT_OF_RANGE {
        // \s+(?!\S)
        pos += num_ws - 1;
        w.add(pos);
        return pos;
    }
    if num_ws > 0 {
        // \s+
        pos += num_ws;
        w.add(pos);
        return pos;
    }
    // no match: one code point on its own
    pos += 1;
    w.add(pos);
    pos
}

/// The Llama-3 family of hand-written matchers, which differ only in how digits group and
/// whether accent marks join letters:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// (llama.cpp `unicode_regex_split_custom_llama3`; `digits_max` 1 gives `_qwen2`, and
/// `marks` gives `_qwen35`'s `[\p{L}\p{M}]`).
fn split_llama3_like(p: &Piece, out: &mut Vec<Range<usize>>, digits_max: usize, marks: bool) {
    let letter = if marks { LETTER | ACCENT_MARK } else { LETTER };
    let mut w = Words {
        out,
        prev_end: p.ini,
    };
    let mut pos = p.ini;
    while pos < p.end {
        let cpt = p.cpt(pos);
        let flags = p.flags(pos);
        if let Some(n) = contraction(p, pos, true) {
            pos += w.add(pos + n);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        let cr_lf = cpt == '\r' as u32 || cpt == '\n' as u32;
        if !(cr_lf || flags & NUMBER != 0) && (flags & letter != 0 || p.has(pos + 1, letter)) {
            pos += 1;
            while p.has(pos, letter) {
                pos += 1;
            }
            w.add(pos);
            continue;
        }
        // \p{N}{1,3} (or \p{N})
        if flags & NUMBER != 0 {
            if digits_max == 1 {
                pos += 1;
                w.add(pos);
                continue;
            }
            let mut ini = pos;
            while p.has(pos, NUMBER) {
                pos += 1;
                if pos - ini >= digits_max {
                    w.add(pos);
                    ini = pos;
                }
            }
            w.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let not_word = WS | letter | NUMBER;
        let mut flags2 = if cpt == ' ' as u32 {
            p.flags(pos + 1)
        } else {
            flags
        };
        if flags2 & not_word == 0 && flags != 0 {
            pos += (cpt == ' ' as u32) as usize;
            while flags2 & not_word == 0 && flags2 != 0 {
                pos += 1;
                flags2 = p.flags(pos);
            }
            let mut c2 = p.cpt(pos);
            while c2 == '\r' as u32 || c2 == '\n' as u32 {
                pos += 1;
                c2 = p.cpt(pos);
            }
            w.add(pos);
            continue;
        }
        pos = whitespace_tail(p, &mut w, pos, true);
    }
}

/// `[^\n]+|[\n]+` (llama.cpp `unicode_regex_split_custom_newlines`).
fn split_newlines(p: &Piece, out: &mut Vec<Range<usize>>) {
    let mut pos = p.ini;
    while pos < p.end {
        let nl = p.cpt(pos) == '\n' as u32;
        let start = pos;
        while pos < p.end && (p.cpt(pos) == '\n' as u32) == nl {
            pos += 1;
        }
        out.push(start..pos);
    }
}

/// How a `std::regex` pattern sees the text in llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// Patterns with `\p{..}`: ASCII kept, other code points replaced by one byte per category
    /// (0xD1 number, 0xD2 letter, 0xD3 punctuation, 0xD4 mark, 0xD5 symbol, 0xD0 other) and
    /// whitespace by 0x0B.
    Collapsed,
    /// Patterns without: code points kept, except non-ASCII whitespace, replaced by 0x0B.
    Wide,
}

impl View {
    #[inline]
    fn of(self, cp: u32, flags: u16) -> u32 {
        if cp < 0x80 {
            return cp;
        }
        if flags & WS != 0 {
            return 0x0B;
        }
        match self {
            View::Wide => cp,
            View::Collapsed => match flags & MASK_CATEGORIES {
                NUMBER => 0xD1,
                LETTER => 0xD2,
                PUNCTUATION => 0xD3,
                ACCENT_MARK => 0xD4,
                SYMBOL => 0xD5,
                _ => 0xD0,
            },
        }
    }
}

/// `\s` of ECMAScript `std::regex` in the C locale, on a viewed character.
#[inline]
fn std_space(c: u32) -> bool {
    c == 0x20 || (0x09..=0x0D).contains(&c)
}

/// A character class of a `std::regex` pattern, tested on viewed characters.
#[derive(Debug, Clone)]
enum Class {
    /// `\p{N}` collapsed: `[\xD1 0-9]`.
    Number,
    /// `\p{L}` collapsed: `[\xD2 A-Za-z]`.
    Letter,
    /// `\p{P}` collapsed: `[\xD3 !-#%-*,-/:-;?-@\[-\]_\{\}]`.
    Punct,
    /// `[\p{P}\$\+<=>\^~\|]` (llama.cpp's default).
    PunctSymbols,
    /// `[\p{P}\$\+<=>\^~\|`]` (Falcon).
    PunctSymbolsBacktick,
    /// `[0-9]` on the wide view.
    AsciiDigit,
    /// `[\r\n]`.
    CrLf,
    /// Code point ranges, inclusive, on the wide view.
    Ranges(Vec<(u32, u32)>),
}

/// ASCII characters llama.cpp's collapsed `\p{P}` keeps.
fn ascii_punct(c: u32) -> bool {
    matches!(c, 0x21..=0x23 | 0x25..=0x2A | 0x2C..=0x2F | 0x3A..=0x3B | 0x3F..=0x40 | 0x5B..=0x5D | 0x5F | 0x7B | 0x7D)
}

impl Class {
    #[inline]
    fn matches(&self, c: u32) -> bool {
        match self {
            Class::Number => c == 0xD1 || (0x30..=0x39).contains(&c),
            Class::Letter => c == 0xD2 || (0x41..=0x5A).contains(&c) || (0x61..=0x7A).contains(&c),
            Class::Punct => c == 0xD3 || ascii_punct(c),
            Class::PunctSymbols => {
                c == 0xD3 || ascii_punct(c) || (c < 0x80 && b"$+<=>^~|".contains(&(c as u8)))
            }
            Class::PunctSymbolsBacktick => {
                c == 0xD3 || ascii_punct(c) || (c < 0x80 && b"$+<=>^~|`".contains(&(c as u8)))
            }
            Class::AsciiDigit => (0x30..=0x39).contains(&c),
            Class::CrLf => c == 0x0D || c == 0x0A,
            Class::Ranges(r) => r.iter().any(|&(a, b)| a <= c && c <= b),
        }
    }

    /// Parses the inside of a bracket expression made only of literal characters and `a-b`
    /// ranges (the form of llama.cpp's DeepSeek classes).
    fn ranges(spec: &str) -> Class {
        let cs: Vec<char> = spec.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < cs.len() {
            if i + 2 < cs.len() && cs[i + 1] == '-' {
                out.push((cs[i] as u32, cs[i + 2] as u32));
                i += 3;
            } else {
                out.push((cs[i] as u32, cs[i] as u32));
                i += 1;
            }
        }
        Class::Ranges(out)
    }
}

/// The quantifier of a `std::regex` pattern.
#[derive(Debug, Clone, Copy)]
enum Rep {
    One,
    Plus,
    Exactly(usize),
}

/// A single-class `std::regex` pattern: `(\s?)CLASS(quantifier)`, or `\s+$`.
#[derive(Debug, Clone)]
enum Pattern {
    Class {
        view: View,
        ws_prefix: bool,
        class: Class,
        rep: Rep,
    },
    TrailingWhitespace,
}

impl Pattern {
    fn class(view: View, class: Class, rep: Rep) -> Stage {
        Stage::Regex(Pattern::Class {
            view,
            ws_prefix: false,
            class,
            rep,
        })
    }

    fn ws_class(view: View, class: Class) -> Stage {
        Stage::Regex(Pattern::Class {
            view,
            ws_prefix: true,
            class,
            rep: Rep::Plus,
        })
    }

    /// The end of the match starting exactly at `pos`, if any (greedy, with backtracking where
    /// the pattern needs it).
    fn match_at(&self, v: &[u32], pos: usize) -> Option<usize> {
        let Pattern::Class {
            ws_prefix,
            class,
            rep,
            ..
        } = self
        else {
            return None;
        };
        let body = |start: usize| -> Option<usize> {
            match *rep {
                Rep::One => (start < v.len() && class.matches(v[start])).then_some(start + 1),
                Rep::Plus => {
                    let mut e = start;
                    while e < v.len() && class.matches(v[e]) {
                        e += 1;
                    }
                    (e > start).then_some(e)
                }
                Rep::Exactly(n) => (start + n <= v.len()
                    && v[start..start + n].iter().all(|&c| class.matches(c)))
                .then_some(start + n),
            }
        };
        if *ws_prefix && pos < v.len() && std_space(v[pos]) {
            if let Some(e) = body(pos + 1) {
                return Some(e);
            }
        }
        body(pos)
    }

    /// Splits one piece into matches and the gaps between them (`unicode_regex_split_stl`).
    /// `v` is scratch space for the viewed characters.
    fn split(&self, p: &Piece, out: &mut Vec<Range<usize>>, v: &mut Vec<u32>) {
        let view = match self {
            Pattern::Class { view, .. } => *view,
            Pattern::TrailingWhitespace => View::Wide,
        };
        v.clear();
        v.extend((p.ini..p.end).map(|i| view.of(p.cp.cps[i], p.cp.flags[i])));
        let v = &v[..];
        let mut push = |r: Range<usize>| out.push(p.ini + r.start..p.ini + r.end);
        if let Pattern::TrailingWhitespace = self {
            let n = v.len();
            let tail = v.iter().rev().take_while(|&&c| std_space(c)).count();
            if tail == 0 || tail == n {
                if n > 0 {
                    push(0..n);
                }
            } else {
                push(0..n - tail);
                push(n - tail..n);
            }
            return;
        }
        let mut last = 0;
        let mut pos = 0;
        while pos < v.len() {
            match self.match_at(v, pos) {
                Some(e) => {
                    if pos > last {
                        push(last..pos);
                    }
                    push(pos..e);
                    last = e;
                    pos = e;
                }
                None => pos += 1,
            }
        }
        if last < v.len() {
            push(last..v.len());
        }
    }
}

/// One splitting pass.
#[derive(Debug, Clone)]
enum Stage {
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Newlines,
    Regex(Pattern),
}

impl Stage {
    fn split(&self, p: &Piece, out: &mut Vec<Range<usize>>, scratch: &mut Vec<u32>) {
        match self {
            Stage::Gpt2 => split_gpt2(p, out),
            Stage::Llama3 => split_llama3_like(p, out, 3, false),
            Stage::Qwen2 => split_llama3_like(p, out, 1, false),
            Stage::Qwen35 => split_llama3_like(p, out, 1, true),
            Stage::Newlines => split_newlines(p, out),
            Stage::Regex(pat) => pat.split(p, out, scratch),
        }
    }
}

/// llama.cpp's DeepSeek-LLM letter class (escaped: Unicode normalization of the source text
/// would change it).
const DEEPSEEK_LETTERS: &str =
    "A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}";
/// llama.cpp's DeepSeek-LLM punctuation class.
const DEEPSEEK_PUNCT: &str =
    "!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}";
/// llama.cpp's DeepSeek CJK class.
const DEEPSEEK_CJK: &str = "\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}";

/// The pre-tokenizer kinds (llama.cpp `LLAMA_VOCAB_PRE_TYPE_*`) that are implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreType {
    Default,
    Gpt2,
    Llama3,
    Qwen2,
    Qwen35,
    Starcoder,
    Falcon,
    DeepseekLlm,
    DeepseekCoder,
    Laguna,
}

/// What a `tokenizer.ggml.pre` value implies besides the split (llama.cpp sets these next to
/// the pre-tokenizer type).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreInfo {
    pub kind: PreType,
    /// Take a whole word from the vocabulary before merging (`ignore_merges`).
    pub ignore_merges: bool,
    /// The default for `add_bos` before `tokenizer.ggml.add_bos_token` overrides it.
    pub add_bos: bool,
}

/// Every `tokenizer.ggml.pre` value [`pre_info`] accepts.
pub(crate) const SUPPORTED_PRE: &[&str] = &[
    "default",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "granite-docling",
    "exaone4",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "stablelm2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "falcon",
    "deepseek-llm",
    "deepseek-coder",
    "laguna",
];

/// Maps a `tokenizer.ggml.pre` value (`None`: the key is missing) to the pre-tokenizer, as
/// llama.cpp's `llama_vocab::impl::load` does. `None` for values not implemented here.
pub(crate) fn pre_info(pre: Option<&str>) -> Option<PreInfo> {
    let plain = |kind| PreInfo {
        kind,
        ignore_merges: false,
        add_bos: false,
    };
    let Some(pre) = pre.filter(|p| !p.is_empty()) else {
        return Some(plain(PreType::Default));
    };
    let info = match pre {
        "default" => plain(PreType::Default),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreInfo {
            kind: PreType::Llama3,
            ignore_merges: true,
            add_bos: true,
        },
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => plain(PreType::Llama3),
        "glm4" | "glm5" => PreInfo {
            kind: PreType::Llama3,
            ignore_merges: true,
            add_bos: false,
        },
        "deepseek-llm" => plain(PreType::DeepseekLlm),
        "deepseek-coder" => plain(PreType::DeepseekCoder),
        "falcon" => plain(PreType::Falcon),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => {
            plain(PreType::Gpt2)
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => plain(PreType::Qwen2),
        "qwen35" => plain(PreType::Qwen35),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => plain(PreType::Starcoder),
        "laguna" => plain(PreType::Laguna),
        _ => return None,
    };
    Some(info)
}

/// A pre-tokenizer: the passes llama.cpp runs for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    stages: Vec<Stage>,
}

impl PreTokenizer {
    /// The passes for `kind` (llama.cpp `llm_tokenizer_bpe::llm_tokenizer_bpe`).
    pub(crate) fn new(kind: PreType) -> PreTokenizer {
        use Class::*;
        use View::*;
        let stages = match kind {
            PreType::Gpt2 => vec![Stage::Gpt2],
            PreType::Llama3 => vec![Stage::Llama3],
            PreType::Qwen2 => vec![Stage::Qwen2],
            PreType::Qwen35 => vec![Stage::Qwen35],
            PreType::Laguna => vec![Stage::Newlines, Stage::Qwen2],
            PreType::Starcoder => vec![Pattern::class(Collapsed, Number, Rep::One), Stage::Gpt2],
            PreType::Falcon => vec![
                Pattern::class(Collapsed, PunctSymbolsBacktick, Rep::Plus),
                Stage::Gpt2,
                Pattern::class(Wide, AsciiDigit, Rep::Exactly(3)),
            ],
            PreType::Default => vec![
                Pattern::class(Collapsed, PunctSymbols, Rep::Plus),
                Stage::Gpt2,
                Pattern::class(Collapsed, Number, Rep::Plus),
                Pattern::class(Wide, AsciiDigit, Rep::Exactly(3)),
            ],
            PreType::DeepseekLlm => vec![
                Pattern::class(Wide, CrLf, Rep::One),
                Pattern::ws_class(Wide, Class::ranges(DEEPSEEK_LETTERS)),
                Pattern::ws_class(Wide, Class::ranges(DEEPSEEK_PUNCT)),
                Stage::Regex(Pattern::TrailingWhitespace),
                Pattern::class(Wide, Class::ranges(DEEPSEEK_CJK), Rep::Plus),
                Pattern::class(Collapsed, Number, Rep::Plus),
            ],
            PreType::DeepseekCoder => vec![
                Pattern::class(Wide, CrLf, Rep::One),
                Pattern::ws_class(Collapsed, Letter),
                Pattern::ws_class(Collapsed, Punct),
                Pattern::class(Wide, Class::ranges(DEEPSEEK_CJK), Rep::Plus),
                Pattern::class(Collapsed, Number, Rep::One),
            ],
        };
        PreTokenizer { stages }
    }

    /// Splits `text` into words; returns their byte ranges, in order, covering all of `text`.
    pub(crate) fn split(&self, text: &str) -> Vec<Range<usize>> {
        let cp = CodePoints::new(text);
        let mut pieces: Vec<Range<usize>> = std::iter::once(0..cp.len()).collect();
        let mut next = Vec::with_capacity(pieces.len());
        let mut scratch = Vec::new();
        for stage in &self.stages {
            next.clear();
            for r in &pieces {
                let piece = Piece {
                    cp: &cp,
                    ini: r.start,
                    end: r.end,
                };
                stage.split(&piece, &mut next, &mut scratch);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces
            .into_iter()
            .filter(|r| r.start < r.end)
            .map(|r| cp.offsets[r.start]..cp.offsets[r.end])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreType, text: &str) -> Vec<String> {
        PreTokenizer::new(kind)
            .split(text)
            .into_iter()
            .map(|r| text[r].to_string())
            .collect()
    }

    #[test]
    fn gpt2_splits_like_the_regex() {
        assert_eq!(
            words(PreType::Gpt2, "Hello world's  end 123!!\n\n x"),
            ["Hello", " world", "'s", " ", " end", " 123", "!!", "\n\n", " x"]
        );
        assert_eq!(words(PreType::Gpt2, "Hello"), ["Hello"]);
        assert_eq!(words(PreType::Gpt2, "   "), ["   "]);
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        assert_eq!(
            words(PreType::Llama3, "a 1234567 I'M\r\n  b"),
            ["a", " ", "123", "456", "7", " I", "'M", "\r\n", " ", " b"]
        );
    }

    #[test]
    fn starcoder_isolates_digits() {
        assert_eq!(words(PreType::Starcoder, "ab 12"), ["ab", " ", "1", "2"]);
    }

    #[test]
    fn default_splits_punctuation_and_digit_triples() {
        assert_eq!(
            words(PreType::Default, "x, 12345"),
            ["x", ",", " ", "123", "45"]
        );
    }

    #[test]
    fn pieces_cover_the_text() {
        let text = "Ünïcödé 中文 🦙 \t\u{3000}x 'll\r\n";
        for kind in [
            PreType::Default,
            PreType::Gpt2,
            PreType::Llama3,
            PreType::Qwen2,
            PreType::Qwen35,
            PreType::Starcoder,
            PreType::Falcon,
            PreType::DeepseekLlm,
            PreType::DeepseekCoder,
            PreType::Laguna,
        ] {
            assert_eq!(words(kind, text).concat(), text, "{kind:?}");
        }
    }
}
