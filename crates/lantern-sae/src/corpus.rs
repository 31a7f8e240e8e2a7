//! Corpora: the documents of a corpus spec, in a fixed order.
//!
//! A spec is an asset name (`sotu`, `austen`), a folder of `.txt` files (searched recursively), a
//! single `.txt`, or a `.jsonl` / `.jsonl.zst` file whose lines carry a `text` field (mathweb's
//! output); several specs join with commas. A file that is not UTF-8, or a JSON line without
//! text, is counted and skipped; a corpus with no text at all is an error naming what was found.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Result, SaeError};

/// One source of documents.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(PathBuf),
    Jsonl(PathBuf),
}

/// A resolved corpus: its files, in order.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub spec: String,
    parts: Vec<Part>,
}

/// Documents read, and what was skipped on the way.
#[derive(Debug, Clone, Default)]
pub struct Skipped {
    /// Files that were not UTF-8 (path and byte offset of the first bad byte).
    pub not_utf8: Vec<String>,
    /// JSON lines that did not parse or had no string `text`.
    pub bad_lines: usize,
}

impl Corpus {
    /// Resolves a spec, fetching assets on first use.
    pub fn open(spec: &str) -> Result<Corpus> {
        let mut parts = Vec::new();
        for one in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            parts.extend(resolve_one(one)?);
        }
        if parts.is_empty() {
            return Err(corpus_err(spec, "names no files"));
        }
        Ok(Corpus {
            spec: spec.to_string(),
            parts,
        })
    }

    /// Number of files.
    pub fn files(&self) -> usize {
        self.parts.len()
    }

    /// Calls `f` on every document in order until it returns `false`; returns what was skipped.
    /// Errors: a file that cannot be read, or no document at all.
    pub fn for_each(&self, mut f: impl FnMut(&str) -> bool) -> Result<Skipped> {
        let mut skipped = Skipped::default();
        let mut any = false;
        for part in &self.parts {
            let go = match part {
                Part::Text(p) => {
                    let bytes = std::fs::read(p).map_err(|e| SaeError::io(p, e))?;
                    match String::from_utf8(bytes) {
                        Ok(text) if text.trim().is_empty() => true,
                        Ok(text) => {
                            any = true;
                            f(&text)
                        }
                        Err(e) => {
                            skipped.not_utf8.push(format!(
                                "{} (invalid UTF-8 at byte {})",
                                p.display(),
                                e.utf8_error().valid_up_to()
                            ));
                            true
                        }
                    }
                }
                Part::Jsonl(p) => read_jsonl(p, &mut skipped, &mut any, &mut f)?,
            };
            if !go {
                break;
            }
        }
        if !any {
            let why = match skipped.not_utf8.first() {
                Some(bad) => format!("no UTF-8 text: {bad}"),
                None if skipped.bad_lines > 0 => {
                    format!(
                        "no text: {} JSON lines without a `text` string",
                        skipped.bad_lines
                    )
                }
                None => "is empty: no text in any file".to_string(),
            };
            return Err(corpus_err(&self.spec, &why));
        }
        Ok(skipped)
    }
}

fn corpus_err(spec: &str, what: &str) -> SaeError {
    SaeError::Corpus {
        spec: spec.to_string(),
        what: what.to_string(),
    }
}

fn resolve_one(spec: &str) -> Result<Vec<Part>> {
    let path = if lantern_assets::is_asset(spec) && !Path::new(spec).exists() {
        lantern_assets::fetch(spec)?
    } else {
        PathBuf::from(spec)
    };
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(&path, &mut files)?;
        files.sort();
        let parts: Vec<Part> = files.into_iter().filter_map(part_for).collect();
        if parts.is_empty() {
            return Err(corpus_err(spec, "folder holds no .txt or .jsonl files"));
        }
        return Ok(parts);
    }
    if !path.exists() {
        return Err(corpus_err(
            spec,
            "not found: expected an asset name (sotu, austen), a folder of .txt, a .txt or a .jsonl(.zst)",
        ));
    }
    part_for(path).map(|p| vec![p]).ok_or_else(|| {
        corpus_err(
            spec,
            "unsupported file type (use .txt, .jsonl or .jsonl.zst)",
        )
    })
}

fn part_for(p: PathBuf) -> Option<Part> {
    let name = p.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".txt") {
        Some(Part::Text(p))
    } else if name.ends_with(".jsonl") || name.ends_with(".jsonl.zst") {
        Some(Part::Jsonl(p))
    } else {
        None
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| SaeError::io(dir, e))?;
    for e in entries {
        let p = e.map_err(|e| SaeError::io(dir, e))?.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn read_jsonl(
    p: &Path,
    skipped: &mut Skipped,
    any: &mut bool,
    f: &mut impl FnMut(&str) -> bool,
) -> Result<bool> {
    let file = std::fs::File::open(p).map_err(|e| SaeError::io(p, e))?;
    let reader: Box<dyn BufRead> = if p.to_string_lossy().ends_with(".zst") {
        let dec = zstd::Decoder::new(file).map_err(|e| SaeError::io(p, e))?;
        Box::new(BufReader::new(dec))
    } else {
        Box::new(BufReader::new(file))
    };
    for line in reader.split(b'\n') {
        let line = line.map_err(|e| SaeError::io(p, e))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned));
        match text {
            Some(t) if !t.trim().is_empty() => {
                *any = true;
                if !f(&t) {
                    return Ok(false);
                }
            }
            _ => skipped.bad_lines += 1,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_jsonl_and_zst_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("b.txt"), "second").unwrap();
        std::fs::write(d.join("a.txt"), "first").unwrap();
        std::fs::write(d.join("skip.bin"), "ignored").unwrap();
        std::fs::write(
            d.join("c.jsonl"),
            "{\"text\": \"third\"}\nnot json\n{\"x\": 1}\n",
        )
        .unwrap();
        let zst = zstd::encode_all(&b"{\"text\": \"fourth\"}\n"[..], 3).unwrap();
        std::fs::write(d.join("d.jsonl.zst"), zst).unwrap();
        let corpus = Corpus::open(d.to_str().unwrap()).unwrap();
        let mut docs = Vec::new();
        let skipped = corpus
            .for_each(|t| {
                docs.push(t.to_string());
                true
            })
            .unwrap();
        assert_eq!(docs, ["first", "second", "third", "fourth"]);
        assert_eq!(skipped.bad_lines, 2);
    }

    #[test]
    fn empty_and_non_utf8_corpora_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "  \n").unwrap();
        let err = Corpus::open(empty.to_str().unwrap())
            .unwrap()
            .for_each(|_| true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let latin1 = dir.path().join("latin1.txt");
        std::fs::write(&latin1, b"caf\xe9").unwrap();
        let err = Corpus::open(latin1.to_str().unwrap())
            .unwrap()
            .for_each(|_| true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("latin1.txt") && err.contains("UTF-8 at byte 3"),
            "{err}"
        );
        let err = Corpus::open("/no/such/corpus").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
