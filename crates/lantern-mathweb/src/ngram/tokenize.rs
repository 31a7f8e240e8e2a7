//! The word tokenizer the language model sees.

/// Splits `text` into tokens for the language model.
///
/// Rules, chosen so that math and prose both give meaningful n-grams:
/// * whitespace separates tokens and is dropped;
/// * a run of alphanumeric characters (any script, digits included) is one token; case is kept,
///   as KenLM models trained on raw text keep it;
/// * a backslash followed by ASCII letters is one LaTeX control word (`\frac`, `\alpha`); a
///   backslash followed by any other character is a two-character control symbol (`\{`, `\\`);
/// * every other character (punctuation, braces, `^`, `_`, `$`, `=`, Unicode symbols) is a token
///   of its own.
///
/// So `\frac{a}{b}` gives `\frac { a } { b }` and `x^2+1` gives `x ^ 2 + 1`. The markers `<s>`,
/// `</s>` and `<unk>` can never come out of it (`<` and `>` are split off).
pub fn tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let len = token_len(rest, c);
        if !c.is_whitespace() {
            out.push(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out
}

/// The byte length of the token (or whitespace character) that starts `s`, whose first char is
/// `first`.
fn token_len(s: &str, first: char) -> usize {
    if first.is_alphanumeric() {
        return run_len(s, char::is_alphanumeric);
    }
    if first == '\\' {
        let after = &s[1..];
        return match after.chars().next() {
            Some(c) if c.is_ascii_alphabetic() => 1 + run_len(after, |c| c.is_ascii_alphabetic()),
            Some(c) if !c.is_whitespace() => 1 + c.len_utf8(),
            _ => 1,
        };
    }
    first.len_utf8()
}

/// The byte length of the longest prefix of `s` whose chars all satisfy `keep`.
fn run_len(s: &str, keep: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !keep(c))
        .map_or(s.len(), |(i, _)| i)
}

/// The sentences of `text`: the tokens of each line that has any (blank lines are skipped).
/// `<s>` and `</s>` are not included; counting and scoring add them.
pub fn sentences(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(tokenize).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_latex_and_punctuation() {
        assert_eq!(
            tokenize(r"\frac{a}{b}"),
            ["\\frac", "{", "a", "}", "{", "b", "}"]
        );
        assert_eq!(
            tokenize("x^2+1 = y_{10}."),
            ["x", "^", "2", "+", "1", "=", "y", "_", "{", "10", "}", "."]
        );
        assert_eq!(
            tokenize(r"a \\ b \{ \ c"),
            ["a", "\\\\", "b", "\\{", "\\", "c"]
        );
        assert_eq!(
            tokenize("Don't  Stop\t∑ é"),
            ["Don", "'", "t", "Stop", "∑", "é"]
        );
        assert_eq!(tokenize("<s> </s>"), ["<", "s", ">", "<", "/", "s", ">"]);
        assert!(tokenize(" \n\t").is_empty());
        assert_eq!(tokenize("\\"), ["\\"]);
    }

    #[test]
    fn sentences_are_non_blank_lines() {
        let s: Vec<_> = sentences("a b\n\n  \nc\r\n").collect();
        assert_eq!(s, vec![vec!["a", "b"], vec!["c"]]);
    }
}
