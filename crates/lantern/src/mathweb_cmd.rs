//! `lantern mathweb ...`: the OpenWebMath pipeline's commands.

use crate::mathweb_run_cmd::{is_html, walk};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lantern_mathweb::extract::{extract, ExtractOptions};
use rayon::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum MathwebCmd {
    /// Extract pages to Markdown with LaTeX math: one file prints its text (one JSON object
    /// with --json); several files or folders print one JSON line per page.
    Extract(ExtractArgs),
    /// The whole pipeline over WARC files and HTML folders: writes DIR/data-*.jsonl.zst and
    /// DIR/stats.json; resumes finished inputs; --shard I/N runs stage 1 on one slice.
    Run(RunArgs),
    /// Train the math-score classifier (default: the recipe over the registry assets) and
    /// print its held-out evaluation.
    TrainClassifier(TrainClassifierArgs),
    /// Train the Kneser-Ney perplexity LM (default: the recipe's math texts).
    TrainLm(TrainLmArgs),
    /// Stage 2 for many machines: MinHash dedup over a run's stage-1 files in four sharded
    /// steps (signatures, buckets, cluster, filter); kept documents go to DIR/deduped/.
    Dedup(DedupArgs),
}

#[derive(Args)]
pub struct DedupArgs {
    /// signatures | buckets | cluster | filter
    step: String,
    /// The run's output folder (holds extracted/).
    #[arg(long)]
    out: PathBuf,
    /// This machine's slice: files (signatures, filter) or partitions (buckets) I, I+N, ...
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Bucket partitions (the same number in every step).
    #[arg(long, default_value_t = 16)]
    partitions: u32,
}

#[derive(Args)]
pub struct RunArgs {
    /// WARC files (.warc, .warc.gz), folders of them, or folders / files of HTML.
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Run stage 1 on inputs I, I+N, I+2N, ... of the sorted input list (0-based I/N).
    #[arg(long)]
    shard: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Least English probability (lid.176).
    #[arg(long, default_value_t = 0.5)]
    min_english: f32,
    /// Least math score when math was found on the page.
    #[arg(long, default_value_t = 0.15)]
    min_math_score: f32,
    /// Least math score when no math was found.
    #[arg(long, default_value_t = 0.8)]
    min_math_score_no_math: f32,
    /// Least math score of the final pass.
    #[arg(long, default_value_t = 0.17)]
    final_math_score: f32,
    /// Most perplexity at extraction.
    #[arg(long, default_value_t = 30000.0)]
    max_perplexity: f64,
    /// Most perplexity of the final pass.
    #[arg(long, default_value_t = 15000.0)]
    final_max_perplexity: f64,
    /// Fewest characters of a kept document.
    #[arg(long, default_value_t = 100)]
    min_chars: usize,
    /// Largest share of accented letters.
    #[arg(long, default_value_t = 0.015)]
    max_accented: f64,
    /// Domain block list (one domain per line).
    #[arg(long)]
    blocklist: Option<PathBuf>,
    /// Math-score model file (default: the recipe's, trained on first use).
    #[arg(long)]
    math_model: Option<PathBuf>,
    /// Perplexity LM (binary from train-lm, or an ARPA file; default: the recipe's).
    #[arg(long)]
    lm: Option<PathBuf>,
    /// Skip language id.
    #[arg(long)]
    no_langid: bool,
    /// Skip the math score.
    #[arg(long)]
    no_math_score: bool,
    /// Skip the perplexity filter.
    #[arg(long)]
    no_perplexity: bool,
    /// Skip near-duplicate removal (exact duplicates are still removed).
    #[arg(long)]
    no_near_dedup: bool,
}

#[derive(Args)]
pub struct TrainClassifierArgs {
    /// Math examples (.txt: blank-line-separated paragraphs; .jsonl: `text` fields).
    #[arg(long, num_args = 1..)]
    pos: Vec<PathBuf>,
    /// Non-math examples.
    #[arg(long, num_args = 1..)]
    neg: Vec<PathBuf>,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct TrainLmArgs {
    /// Training texts (.txt or .jsonl with `text`); default: the recipe's math texts.
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// N-gram order.
    #[arg(long, default_value_t = 4)]
    order: usize,
    /// Where to write the model (zstd binary).
    #[arg(long)]
    out: PathBuf,
    /// Also write it as ARPA (KenLM, SRILM read it).
    #[arg(long)]
    arpa: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExtractArgs {
    /// HTML files or folders of them (searched recursively for .html / .htm / .xhtml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The page's URL (recorded in the output; helps charset detection).
    #[arg(long)]
    url: Option<String>,
    /// Worker threads for many pages (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep navigation and boilerplate (no removal).
    #[arg(long)]
    keep_boilerplate: bool,
}

pub fn run(cmd: MathwebCmd, json: bool) -> Result<()> {
    match cmd {
        MathwebCmd::Extract(a) => extract_cmd(a, json),
        MathwebCmd::Run(a) => crate::mathweb_run_cmd::run(a.into_plan()?, json),
        MathwebCmd::TrainClassifier(a) => train_classifier(a, json),
        MathwebCmd::TrainLm(a) => train_lm(a, json),
        MathwebCmd::Dedup(a) => dedup_step(a, json),
    }
}

fn extract_cmd(a: ExtractArgs, json: bool) -> Result<()> {
    let opts = ExtractOptions {
        boilerplate: !a.keep_boilerplate,
        ..ExtractOptions::default()
    };
    let single = a.paths.len() == 1 && a.paths[0].is_file();
    if single {
        let v = extract_file(&a.paths[0], a.url.as_deref(), &opts)?;
        if json {
            println!("{v}");
        } else {
            println!("{}", v["text"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    let files = html_files(&a.paths)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let lines: Vec<String> = pool.install(|| {
        files
            .par_iter()
            .map(|f| match extract_file(f, a.url.as_deref(), &opts) {
                Ok(v) => v.to_string(),
                Err(e) => {
                    json!({"path": f.display().to_string(), "error": format!("{e:#}")}).to_string()
                }
            })
            .collect()
    });
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// One page as the JSON object of the command contract.
fn extract_file(
    path: &Path,
    url: Option<&str>,
    opts: &ExtractOptions,
) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let html = lantern_mathweb::charset::decode_html(&bytes, None, url).text;
    let e = extract(&html, opts).with_context(|| format!("{}", path.display()))?;
    Ok(json!({
        "path": path.display().to_string(),
        "url": url,
        "title": e.title,
        "text": e.text,
        "math_count": e.math.total(),
        "math": e.math,
    }))
}

/// Every HTML file under `paths` (files as given, folders recursively), sorted.
fn html_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            out.extend(found.into_iter().filter(|f| is_html(f)));
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    out.sort();
    Ok(out)
}

impl RunArgs {
    fn into_plan(self) -> Result<crate::mathweb_run_cmd::Plan> {
        use lantern_mathweb::pipeline::Config;
        let shard = match &self.shard {
            None => None,
            Some(s) => Some(parse_shard(s)?),
        };
        let mut cfg = Config {
            min_english: self.min_english,
            math_score_with_math: self.min_math_score,
            math_score_without_math: self.min_math_score_no_math,
            final_math_score: self.final_math_score,
            max_perplexity: self.max_perplexity,
            final_max_perplexity: self.final_max_perplexity,
            near_dedup: !self.no_near_dedup,
            ..Config::default()
        };
        cfg.rules.min_chars = self.min_chars;
        cfg.rules.max_accented_ratio = self.max_accented;
        if let Some(b) = &self.blocklist {
            cfg.rules.load_blocklist(b)?;
        }
        Ok(crate::mathweb_run_cmd::Plan {
            inputs: self.input,
            out: self.out,
            shard,
            threads: self.threads,
            cfg,
            math_model: (!self.no_math_score).then_some(self.math_model),
            lm: (!self.no_perplexity).then_some(self.lm),
            langid: !self.no_langid,
        })
    }
}

/// `I/N` with I < N.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .context("--shard must look like I/N, e.g. 0/4")?;
    let (i, n): (usize, usize) = (
        i.trim().parse().context("--shard I")?,
        n.trim().parse().context("--shard N")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= I < N");
    }
    Ok((i, n))
}

fn train_classifier(a: TrainClassifierArgs, json: bool) -> Result<()> {
    use lantern_mathweb::classifier::{train_from_files, TrainParams};
    let start = std::time::Instant::now();
    let (model, eval) = if a.pos.is_empty() && a.neg.is_empty() {
        eprintln!("training on the default recipe (CHAMP, SciPy/SymPy docs vs SOTU, Austen, SciPy pages without math)");
        lantern_mathweb::models::train_classifier()?
    } else {
        if a.pos.is_empty() || a.neg.is_empty() {
            bail!("give both --pos and --neg files (or neither for the default recipe)");
        }
        train_from_files(&a.pos, &a.neg, &TrainParams::default())?
    };
    model.save(&a.out)?;
    let v = json!({
        "model": a.out.display().to_string(),
        "held_out": eval.n,
        "accuracy": eval.accuracy,
        "precision": eval.precision,
        "recall": eval.recall,
        "auroc": eval.auroc,
        "seconds": start.elapsed().as_secs_f64(),
    });
    crate::output::print(&v, json);
    Ok(())
}

fn train_lm(a: TrainLmArgs, json: bool) -> Result<()> {
    let start = std::time::Instant::now();
    let docs: Vec<String> = if a.corpus.is_empty() {
        lantern_mathweb::models::training_texts()?.0
    } else {
        let mut v = Vec::new();
        for f in &a.corpus {
            v.extend(lantern_mathweb::classifier::read_examples(f)?);
        }
        v
    };
    if docs.is_empty() {
        bail!("no training text in the corpus files");
    }
    let model = lantern_mathweb::models::train_lm(&docs, a.order)?;
    model.save(&a.out)?;
    if let Some(p) = &a.arpa {
        model.write_arpa(p)?;
    }
    let v = json!({
        "model": a.out.display().to_string(),
        "order": a.order,
        "documents": docs.len(),
        "vocab_size": model.vocab_size(),
        "ngrams": (1..=a.order).map(|n| model.num_ngrams(n)).collect::<Vec<_>>(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    crate::output::print(&v, json);
    Ok(())
}

fn dedup_step(a: DedupArgs, json: bool) -> Result<()> {
    use lantern_mathweb::pipeline::{
        dedup_buckets, dedup_cluster, dedup_filter, dedup_signatures, Config,
    };
    let shard = parse_shard(&a.shard)?;
    let cfg = Config::default();
    if a.partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    let v = match a.step.as_str() {
        "signatures" => {
            json!({"step": "signatures", "records": dedup_signatures(&a.out, shard, a.partitions, &cfg)?})
        }
        "buckets" => {
            json!({"step": "buckets", "edges": dedup_buckets(&a.out, shard, a.partitions)?})
        }
        "cluster" => {
            let (removed, clusters) = dedup_cluster(&a.out, a.partitions)?;
            json!({"step": "cluster", "removed": removed, "clusters": clusters})
        }
        "filter" => {
            let (kept, removed) = dedup_filter(&a.out, shard, &cfg)?;
            json!({"step": "filter", "docs_in": kept + removed, "docs_out": kept})
        }
        other => bail!("unknown dedup step {other:?}: use signatures, buckets, cluster or filter"),
    };
    crate::output::print(&v, json);
    Ok(())
}
