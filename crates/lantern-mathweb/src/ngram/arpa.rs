//! The ARPA text format, read and written by KenLM, SRILM and most n-gram tools.
//!
//! ```text
//! \data\
//! ngram 1=3
//! ngram 2=1
//!
//! \1-grams:
//! -1.2    <unk>
//! -99    <s>    -0.3
//! -0.4    </s>
//!
//! \2-grams:
//! -0.1    <s> </s>
//!
//! \end\
//! ```
//!
//! Each entry is `log10 prob`, the words, then an optional `log10 backoff`; fields are
//! separated by tabs (shown as spaces above; spaces are accepted when reading).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::model::{Level, Model};
use super::table::{Table, Vocab};
use super::{check_order, NgramError};

impl Model {
    /// Writes the model as an ARPA file that KenLM (`build_binary`, `query`, the Python
    /// module) and SRILM read as the same model.
    pub fn write_arpa(&self, path: &Path) -> Result<(), NgramError> {
        let io = |source| NgramError::Io {
            path: path.to_owned(),
            source,
        };
        let mut w = BufWriter::new(File::create(path).map_err(io)?);
        self.write_arpa_to(&mut w).map_err(io)?;
        w.flush().map_err(io)
    }

    /// Writes the ARPA text to any writer. Values are written with the shortest decimal that
    /// reads back to the same `f32`, so a round trip is exact.
    pub fn write_arpa_to<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        writeln!(w, "\\data\\")?;
        for (i, level) in self.levels.iter().enumerate() {
            writeln!(w, "ngram {}={}", i + 1, level.table.len())?;
        }
        for (i, level) in self.levels.iter().enumerate() {
            writeln!(w, "\n\\{}-grams:", i + 1)?;
            let with_backoff = i + 1 < self.order();
            for k in 0..level.table.len() {
                self.write_entry(w, level, k, with_backoff)?;
            }
        }
        writeln!(w, "\n\\end\\")
    }

    /// Writes entry `k` of `level`; the backoff only when it is not 0 (log10 of 1).
    fn write_entry<W: Write>(
        &self,
        w: &mut W,
        level: &Level,
        k: usize,
        with_backoff: bool,
    ) -> std::io::Result<()> {
        write!(w, "{}\t", level.prob[k])?;
        for (j, &id) in level.table.ngram(k).iter().enumerate() {
            let sep = if j == 0 { "" } else { " " };
            write!(w, "{sep}{}", self.vocab.word(id))?;
        }
        match level.backoff[k] {
            b if with_backoff && b != 0.0 => writeln!(w, "\t{b}"),
            _ => writeln!(w),
        }
    }

    /// Reads an ARPA file (as written by KenLM's `lmplz`, SRILM or [`Model::write_arpa`]).
    /// Errors name the file and the line.
    pub fn load_arpa(path: &Path) -> Result<Model, NgramError> {
        let file = File::open(path).map_err(|source| NgramError::Io {
            path: path.to_owned(),
            source,
        })?;
        Model::read_arpa(BufReader::new(file), path)
    }

    /// Reads ARPA text from any reader; `label` names it in errors.
    pub fn read_arpa<R: BufRead>(reader: R, label: &Path) -> Result<Model, NgramError> {
        ArpaReader {
            lines: reader.lines(),
            line: 0,
            path: label.to_owned(),
        }
        .read()
    }
}

/// Line-numbered ARPA parsing state.
struct ArpaReader<L> {
    lines: L,
    line: usize,
    path: PathBuf,
}

impl<L: Iterator<Item = std::io::Result<String>>> ArpaReader<L> {
    /// Parses the whole file.
    fn read(mut self) -> Result<Model, NgramError> {
        self.skip_to_data()?;
        let counts = self.header()?;
        let mut vocab = Vocab::new();
        let mut levels = Vec::with_capacity(counts.len());
        for (i, &count) in counts.iter().enumerate() {
            levels.push(self.section(i + 1, count, &mut vocab)?);
        }
        match self.next_nonblank()? {
            Some(l) if l.trim() == "\\end\\" => {}
            Some(l) => return Err(self.err(format!("expected \\end\\, found {l:?}"))),
            None => return Err(self.err("missing \\end\\".into())),
        }
        Ok(Model::from_parts(counts.len(), vocab, levels, Vec::new()))
    }

    /// An error at the current line.
    fn err(&self, msg: String) -> NgramError {
        NgramError::Arpa {
            path: self.path.clone(),
            line: self.line,
            msg,
        }
    }

    /// The next line, `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<String>, NgramError> {
        match self.lines.next() {
            None => Ok(None),
            Some(r) => {
                self.line += 1;
                r.map(Some)
                    .map_err(|e| self.err(format!("cannot read: {e}")))
            }
        }
    }

    /// The next line that is not blank.
    fn next_nonblank(&mut self) -> Result<Option<String>, NgramError> {
        while let Some(l) = self.next_line()? {
            if !l.trim().is_empty() {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    /// Skips anything before `\data\`.
    fn skip_to_data(&mut self) -> Result<(), NgramError> {
        while let Some(l) = self.next_line()? {
            if l.trim() == "\\data\\" {
                return Ok(());
            }
        }
        Err(self.err("no \\data\\ line: not an ARPA file".into()))
    }

    /// The `ngram k=count` lines: counts for k = 1, 2, … in order.
    fn header(&mut self) -> Result<Vec<usize>, NgramError> {
        let mut counts = Vec::new();
        while let Some(l) = self.next_line()? {
            let l = l.trim();
            if l.is_empty() {
                if counts.is_empty() {
                    continue;
                }
                break;
            }
            let (k, c) =
                parse_count(l).ok_or_else(|| self.err(format!("bad header line {l:?}")))?;
            if k != counts.len() + 1 {
                return Err(self.err(format!(
                    "expected ngram {}=…, found {l:?}",
                    counts.len() + 1
                )));
            }
            counts.push(c);
        }
        check_order(counts.len()).map_err(|e| self.err(e.to_string()))?;
        Ok(counts)
    }

    /// Reads the `\n-grams:` section with `count` entries.
    fn section(&mut self, n: usize, count: usize, vocab: &mut Vocab) -> Result<Level, NgramError> {
        let want = format!("\\{n}-grams:");
        match self.next_nonblank()? {
            Some(l) if l.trim() == want => {}
            Some(l) => return Err(self.err(format!("expected {want}, found {l:?}"))),
            None => return Err(self.err(format!("missing {want}"))),
        }
        let mut level = Level::new(Table::new(n), Vec::new(), Vec::new());
        for _ in 0..count {
            let l = match self.next_line()? {
                Some(l) if !l.trim().is_empty() => l,
                _ => {
                    return Err(self.err(format!(
                        "{want} has fewer than the {count} entries declared"
                    )))
                }
            };
            let (prob, ids, backoff) = self.entry(&l, n, vocab)?;
            if !level.add(&ids, prob, backoff) {
                return Err(self.err(format!("duplicate {n}-gram {:?}", l.trim())));
            }
        }
        Ok(level)
    }

    /// Parses one entry: `(log10 prob, word ids, log10 backoff)`. Unigrams add their word to the
    /// vocabulary; longer n-grams must use known words.
    fn entry(
        &self,
        l: &str,
        n: usize,
        vocab: &mut Vocab,
    ) -> Result<(f32, Vec<u32>, f32), NgramError> {
        let mut fields = l.split_whitespace();
        let prob = self.number(fields.next(), l)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let w = fields
                .next()
                .ok_or_else(|| self.err(format!("expected {n} words in {l:?}")))?;
            let id = match n {
                1 => vocab.intern(w),
                _ => vocab
                    .get(w)
                    .ok_or_else(|| self.err(format!("word {w:?} is not a unigram")))?,
            };
            ids.push(id);
        }
        let backoff = match fields.next() {
            None => 0.0,
            f => self.number(f, l)?,
        };
        if fields.next().is_some() {
            return Err(self.err(format!("too many fields in {l:?}")));
        }
        Ok((prob, ids, backoff))
    }

    /// A log10 value (finite or `-inf`).
    fn number(&self, field: Option<&str>, l: &str) -> Result<f32, NgramError> {
        field
            .and_then(|f| f.parse::<f32>().ok())
            .filter(|v| !v.is_nan() && *v != f32::INFINITY)
            .ok_or_else(|| self.err(format!("bad number in {l:?}")))
    }
}

/// Parses `ngram k=count`.
fn parse_count(l: &str) -> Option<(usize, usize)> {
    let rest = l.strip_prefix("ngram")?.trim_start();
    let (k, c) = rest.split_once('=')?;
    Some((k.trim().parse().ok()?, c.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-0.5\ta\t-0.3
-0.7\t</s>

\\2-grams:
-0.2\t<s> a
-0.4\ta </s>

\\end\\
";

    fn read(text: &str) -> Result<Model, NgramError> {
        Model::read_arpa(text.as_bytes(), Path::new("small.arpa"))
    }

    #[test]
    fn hand_written_arpa_gives_hand_computed_probabilities() {
        let m = read(SMALL).unwrap();
        assert_eq!(m.order(), 2);
        let close = |ctx: &[&str], w: &str, want: f64| {
            let got = m.log10_prob(ctx, w);
            assert!((got - want).abs() < 1e-6, "{ctx:?} {w}: {got} vs {want}");
        };
        close(&["<s>"], "a", -0.2);
        close(&["<s>"], "</s>", -0.5 - 0.7);
        close(&["a"], "a", -0.3 - 0.5);
        close(&["a"], "</s>", -0.4);
        close(&["</s>"], "a", -0.5);
        close(&["a"], "zzz", -0.3 - 1.0);
        close(&["zzz"], "a", -0.5);
        // "a": p(a|<s>) p(</s>|a) = -0.2 - 0.4.
        assert!((m.score_sentence(&["a"]) + 0.6).abs() < 1e-6);
    }

    #[test]
    fn write_then_read_is_exact() {
        let m = read(SMALL).unwrap();
        let mut out = Vec::new();
        m.write_arpa_to(&mut out).unwrap();
        let back = read(std::str::from_utf8(&out).unwrap()).unwrap();
        for ctx in [&[][..], &["<s>"], &["a"], &["</s>"]] {
            for w in ["a", "</s>", "<unk>", "b"] {
                assert_eq!(m.log10_prob(ctx, w), back.log10_prob(ctx, w));
            }
        }
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            (
                SMALL.replace("-0.4\ta </s>", "-0.4\ta b"),
                13,
                "not a unigram",
            ),
            (
                SMALL.replace("-0.5\ta\t-0.3", "x\ta\t-0.3"),
                8,
                "bad number",
            ),
            (
                SMALL.replace("ngram 2=2", "ngram 2=3"),
                14,
                "fewer than the 3",
            ),
            (SMALL.replace("\\end\\\n", ""), 14, "missing \\end\\"),
            (
                SMALL.replace("ngram 2=2", "ngram 3=2"),
                3,
                "expected ngram 2",
            ),
            (
                SMALL.replace("-0.2\t<s> a", "-0.4\ta </s>"),
                13,
                "duplicate",
            ),
            ("hello".to_owned(), 1, "not an ARPA file"),
        ];
        for (text, line, msg) in cases {
            let e = read(&text).unwrap_err();
            let s = e.to_string();
            assert!(
                matches!(e, NgramError::Arpa { line: l, .. } if l == line),
                "{s}"
            );
            assert!(
                s.starts_with(&format!("small.arpa:{line}: ")) && s.contains(msg),
                "{s}"
            );
        }
    }
}
