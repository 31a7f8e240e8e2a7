//! `lantern mathweb run`: inputs -> stage 1 per input (resumable, sharded) -> stage 2.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_mathweb::pipeline::{finalize, process_input, Config, Filters, Input, Stats};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `run` was asked to do.
pub struct Plan {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub shard: Option<(usize, usize)>,
    pub threads: Option<usize>,
    pub cfg: Config,
    /// `None`: no math score; `Some(None)`: the default model; `Some(Some(p))`: that file.
    pub math_model: Option<Option<PathBuf>>,
    /// Same for the perplexity LM.
    pub lm: Option<Option<PathBuf>>,
    pub langid: bool,
}

pub fn run(plan: Plan, json: bool) -> Result<()> {
    let start = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;
    let inputs = collect_inputs(&plan.inputs)?;
    let mine = lantern_mathweb::pipeline::shard_inputs(&inputs, plan.shard);
    let filters = load_filters(&plan)?;
    let bar = progress(mine.len());
    let mut stats = Stats::default();
    for input in &mine {
        bar.set_message(input.path().display().to_string());
        let count = |n: u64| bar.inc(n);
        let s = pool
            .install(|| process_input(input, &plan.out, &plan.cfg, &filters, &count))
            .with_context(|| format!("{}", input.path().display()))?;
        stats.merge(&s);
    }
    bar.finish_and_clear();
    let (stats, files) = match plan.shard {
        Some(_) => (stats, Vec::new()),
        None => pool.install(|| finalize(&plan.out, &plan.cfg))?,
    };
    let v = summary(
        &plan,
        &inputs,
        &mine,
        &stats,
        &files,
        start.elapsed().as_secs_f64(),
    );
    crate::output::print(&v, json);
    Ok(())
}

fn summary(
    plan: &Plan,
    all: &[Input],
    mine: &[Input],
    stats: &Stats,
    files: &[PathBuf],
    secs: f64,
) -> serde_json::Value {
    let stages: serde_json::Map<String, serde_json::Value> = stats
        .order
        .iter()
        .map(|name| {
            let s = &stats.stages[name];
            (
                name.clone(),
                json!({"docs_in": s.docs_in, "docs_out": s.docs_out, "dropped": s.dropped}),
            )
        })
        .collect();
    let docs = stats
        .order
        .last()
        .map(|n| stats.stages[n].docs_out)
        .unwrap_or(0);
    json!({
        "out": plan.out.display().to_string(),
        "inputs": all.len(),
        "inputs_this_shard": mine.len(),
        "shard": plan.shard.map(|(i, n)| format!("{i}/{n}")),
        "docs": docs,
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "read_errors": stats.read_errors,
        "stages": stages,
        "seconds": secs,
    })
}

fn progress(inputs: usize) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} pages ({per_sec}) {elapsed} · {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    eprintln!("mathweb run: {inputs} input(s)");
    bar
}

fn load_filters(plan: &Plan) -> Result<Filters> {
    let mut f = Filters::default();
    if plan.langid {
        f.langid = Some(lantern_mathweb::langid::LangId::default_model()?);
    }
    if let Some(choice) = &plan.math_model {
        f.classifier = Some(match choice {
            Some(p) => lantern_mathweb::classifier::Classifier::load(p)?,
            None => {
                let (c, eval) = lantern_mathweb::models::default_classifier()?;
                if let Some(e) = eval {
                    eprintln!(
                        "trained the default math-score model: held-out accuracy {:.3}, AUROC {:.3}",
                        e.accuracy, e.auroc
                    );
                }
                c
            }
        });
    }
    if let Some(choice) = &plan.lm {
        f.lm = Some(match choice {
            Some(p) if is_arpa(p) => lantern_mathweb::ngram::Model::load_arpa(p)?,
            Some(p) => lantern_mathweb::ngram::Model::load(p)?,
            None => lantern_mathweb::models::default_lm()?,
        });
    }
    Ok(f)
}

fn is_arpa(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("arpa"))
}

/// Inputs, sorted: WARC files as given or found in folders; a folder without WARCs is one HTML
/// input; a single HTML file is one input.
fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_file() {
            if is_warc(p) {
                out.push(Input::Warc(p.clone()));
            } else {
                out.push(Input::Html {
                    name: p.clone(),
                    files: vec![p.clone()],
                });
            }
        } else if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            files.sort();
            let warcs: Vec<PathBuf> = files.iter().filter(|f| is_warc(f)).cloned().collect();
            if warcs.is_empty() {
                let html: Vec<PathBuf> = files.into_iter().filter(|f| is_html(f)).collect();
                if html.is_empty() {
                    bail!("{}: no WARC or HTML files in this folder", p.display());
                }
                out.push(Input::Html {
                    name: p.clone(),
                    files: html,
                });
            } else {
                out.extend(warcs.into_iter().map(Input::Warc));
            }
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn is_warc(p: &Path) -> bool {
    let n = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    n.ends_with(".warc") || n.ends_with(".warc.gz") || n.ends_with(".arc.gz")
}

/// Whether a file name ends in `.html`, `.htm` or `.xhtml` (any case).
pub fn is_html(p: &Path) -> bool {
    let n = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    n.ends_with(".html") || n.ends_with(".htm") || n.ends_with(".xhtml")
}

/// Every file below `dir`, recursively (unsorted).
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
