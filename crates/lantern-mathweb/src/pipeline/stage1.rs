//! Stage 1, per input: pages -> filtered documents.

use super::{encode_docs, io_err, write_atomic, Config, Doc, Metadata, PipelineError, Stats};
use crate::charset::decode_html;
use crate::classifier::Classifier;
use crate::extract::{extract, ExtractError};
use crate::langid::LangId;
use crate::ngram::Model;
use crate::prefilter::{has_latex_command, prefilter, Prefilter};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The models behind the filters; a missing one skips its filter.
#[derive(Default)]
pub struct Filters {
    /// fastText lid.176.
    pub langid: Option<LangId>,
    /// Math score classifier.
    pub classifier: Option<Classifier>,
    /// Perplexity LM.
    pub lm: Option<Model>,
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A `.warc` / `.warc.gz` file.
    Warc(PathBuf),
    /// HTML files (a folder's, sorted), processed as one input named after the folder.
    Html { name: PathBuf, files: Vec<PathBuf> },
}

impl Input {
    /// The path that names the input.
    pub fn path(&self) -> &Path {
        match self {
            Input::Warc(p) => p,
            Input::Html { name, .. } => name,
        }
    }

    /// File-name-safe key for its output files.
    pub fn key(&self) -> String {
        let s = self.path().display().to_string();
        let safe: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let short = if safe.len() > 80 {
            &safe[safe.len() - 80..]
        } else {
            &safe
        };
        format!("{short}-{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
    }
}

/// One raw page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Raw bytes in the page's own charset.
    pub body: Vec<u8>,
    /// HTTP charset, if any.
    pub http_charset: Option<String>,
    /// URL.
    pub url: String,
    /// Fetch date.
    pub date: String,
    /// Source file.
    pub source_file: String,
    /// WARC record offset.
    pub warc_offset: Option<u64>,
}

/// Pages per parallel batch.
const BATCH: usize = 256;

/// Runs stage 1 on one input, writing `out/extracted/<key>.jsonl.zst` and `<key>.stats.json`;
/// an input whose files exist is skipped (resume). Returns its stats.
pub fn process_input(
    input: &Input,
    out: &Path,
    cfg: &Config,
    filters: &Filters,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Stats, PipelineError> {
    let dir = out.join("extracted");
    let data = dir.join(format!("{}.jsonl.zst", input.key()));
    let stats_path = dir.join(format!("{}.stats.json", input.key()));
    if data.exists() && stats_path.exists() {
        let s = std::fs::read(&stats_path).map_err(io_err(&stats_path))?;
        if let Ok(stats) = serde_json::from_slice(&s) {
            return Ok(stats);
        }
    }
    let mut stats = Stats::default();
    let mut docs = Vec::new();
    let mut run_batch = |batch: &mut Vec<Page>, stats: &mut Stats| {
        let results: Vec<(Option<Doc>, Stats)> = batch
            .par_iter()
            .map(|p| {
                let mut s = Stats::default();
                (process_page(p, cfg, filters, &mut s), s)
            })
            .collect();
        progress(batch.len() as u64);
        batch.clear();
        for (d, s) in results {
            stats.merge(&s);
            docs.extend(d);
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    for page in pages(input)? {
        match page {
            Ok(p) => batch.push(p),
            Err(_) => stats.read_errors += 1,
        }
        if batch.len() == BATCH {
            run_batch(&mut batch, &mut stats);
        }
    }
    run_batch(&mut batch, &mut stats);
    write_atomic(&data, &encode_docs(&docs)?)?;
    let js = serde_json::to_vec_pretty(&stats).map_err(|e| PipelineError::Filter(e.to_string()))?;
    write_atomic(&stats_path, &js)?;
    Ok(stats)
}

type PageIter<'a> = Box<dyn Iterator<Item = Result<Page, String>> + 'a>;

/// The pages of an input (a WARC's HTML responses or the HTML files).
fn pages(input: &Input) -> Result<PageIter<'_>, PipelineError> {
    match input {
        Input::Warc(path) => {
            let name = path.display().to_string();
            let it = crate::warc::html_pages(path)?.map(move |r| {
                r.map(|p| Page {
                    body: p.body,
                    http_charset: p.http_content_type_charset,
                    url: p.url,
                    date: p.date,
                    source_file: name.clone(),
                    warc_offset: Some(p.warc_offset),
                })
                .map_err(|e| e.to_string())
            });
            Ok(Box::new(it))
        }
        Input::Html { files, .. } => Ok(Box::new(files.iter().map(|f| {
            let body = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok(Page {
                body,
                http_charset: None,
                url: format!("file://{}", f.display()),
                date: String::new(),
                source_file: f.display().to_string(),
                warc_offset: None,
            })
        }))),
    }
}

/// Runs every per-page stage; counts the outcome in `stats`.
pub fn process_page(
    page: &Page,
    cfg: &Config,
    filters: &Filters,
    stats: &mut Stats,
) -> Option<Doc> {
    if page.body.len() > cfg.max_page_bytes {
        stats.drop("prefilter", "too_large");
        return None;
    }
    let html = decode_html(&page.body, page.http_charset.as_deref(), Some(&page.url)).text;
    let pre = prefilter(&html);
    if pre == Prefilter::NoMath {
        stats.drop("prefilter", "no_math_markup");
        return None;
    }
    stats.pass("prefilter");
    let e = match extract(&html, &cfg.extract) {
        Ok(e) => e,
        Err(ExtractError::TooManyLinks { .. }) => {
            stats.drop("extract", "too_many_links");
            return None;
        }
    };
    if e.text.trim().is_empty() {
        stats.drop("extract", "empty");
        return None;
    }
    stats.pass("extract");
    let math_found = e.math.total() > 0;
    let math_score = filters.classifier.as_ref().map(|c| c.score(&e.text));
    if pre == Prefilter::MaybeLatex && !math_found && !has_latex_command(&e.text) {
        let strong = math_score.is_some_and(|s| s > cfg.latex_check_score)
            && e.text.chars().count() > cfg.latex_check_min_chars;
        if !strong {
            stats.drop("latex_check", "no_latex");
            return None;
        }
    }
    stats.pass("latex_check");
    let mut lang = None;
    if let Some(l) = &filters.langid {
        let view = prose(&e.text);
        // One fastText pass scores every label: the top one and English's come from it.
        let (p, top) = match l.top_k(&view, usize::MAX) {
            Ok(all) => {
                let en = all.iter().find(|x| x.lang == "en").map_or(0.0, |x| x.prob);
                let top = all
                    .into_iter()
                    .next()
                    .map_or((String::new(), 0.0), |x| (x.lang, x.prob));
                (en, Some(top))
            }
            Err(_) => (0.0, None),
        };
        lang = top;
        if p < cfg.min_english {
            stats.drop("language", "not_english");
            return None;
        }
        stats.pass("language");
    }
    if let Some(s) = math_score {
        let need = if math_found {
            cfg.math_score_with_math
        } else {
            cfg.math_score_without_math
        };
        if s < need {
            stats.drop(
                "math_score",
                if math_found {
                    "low_with_math"
                } else {
                    "low_without_math"
                },
            );
            return None;
        }
        stats.pass("math_score");
    }
    let perplexity = filters.lm.as_ref().map(|m| m.perplexity(&e.text));
    if let Some(p) = perplexity {
        if p.is_finite() && p > cfg.max_perplexity {
            stats.drop("perplexity", "too_high");
            return None;
        }
        stats.pass("perplexity");
    }
    if let Some(f) = cfg.rules.check(&e.text, Some(&page.url)) {
        stats.drop("rules", f.name());
        return None;
    }
    stats.pass("rules");
    Some(Doc {
        text: e.text,
        url: page.url.clone(),
        date: page.date.clone(),
        metadata: Metadata {
            title: e.title,
            language: lang.as_ref().map(|l| l.0.clone()),
            language_score: lang.map(|l| l.1),
            math_score,
            perplexity: perplexity.filter(|p| p.is_finite()),
            math: e.math,
            source_file: page.source_file.clone(),
            warc_offset: page.warc_offset,
        },
    })
}

/// The prose of a document for language id: fenced code blocks dropped and each formula replaced
/// by a space, so code and LaTeX commands do not read as another language.
pub fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            out.push_str(line);
            out.push('\n');
        }
    }
    let spans = crate::classifier::math_spans(&out);
    if spans.is_empty() {
        return out;
    }
    let mut kept = String::with_capacity(out.len());
    let mut at = 0;
    for r in spans {
        kept.push_str(&out[at..r.start]);
        kept.push(' ');
        at = r.end;
    }
    kept.push_str(&out[at..]);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(html: &str) -> Page {
        Page {
            body: html.as_bytes().to_vec(),
            http_charset: None,
            url: "https://example.org/p".into(),
            date: String::new(),
            source_file: "t.warc.gz".into(),
            warc_offset: Some(7),
        }
    }

    #[test]
    fn pages_are_counted_at_the_stage_that_drops_them() {
        let cfg = Config {
            max_page_bytes: 4000,
            ..Config::default()
        };
        let f = Filters::default();
        let mut s = Stats::default();
        let body =
            "The derivative of the square is linear, as the limit of difference quotients shows. ";
        let math = format!(
            "<script src=MathJax.js></script><p>{} \\(x^2\\)</p>",
            body.repeat(3)
        );
        let doc = process_page(&page(&math), &cfg, &f, &mut s).expect("a math page passes");
        assert!(doc.text.contains("$x^2$"));
        assert_eq!(doc.metadata.warc_offset, Some(7));
        assert!(process_page(&page("<p>no math here</p>"), &cfg, &f, &mut s).is_none());
        let big = format!("<script src=MathJax.js></script>{}", "x".repeat(5000));
        assert!(process_page(&page(&big), &cfg, &f, &mut s).is_none());
        let pre = &s.stages["prefilter"];
        assert_eq!((pre.docs_in, pre.docs_out), (3, 1));
        assert_eq!(pre.dropped["no_math_markup"], 1);
        assert_eq!(pre.dropped["too_large"], 1);
        assert_eq!(s.stages["rules"].docs_out, 1);
    }

    #[test]
    fn prose_drops_code_and_math() {
        let t = "Let $x^2$ be big.\n```\nimport numpy as np\n```\n$$\\int f$$\nDone.";
        assert_eq!(prose(t), "Let   be big.\n \nDone.\n");
    }
}
