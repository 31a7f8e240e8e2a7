//! `lantern sae explain` and `lantern sae score`: automated interpretability of SAE latents and
//! of baseline directions through an OpenAI-compatible chat endpoint (ours when none is given).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use lantern_chat::server::Server;
use lantern_chat::Client;
use lantern_lm::model::WeightMode;
use lantern_lm::runtime::{self, DEFAULT_MODEL};
use lantern_sae::autointerp::{self, Scores};
use lantern_sae::corpus::Corpus;
use lantern_sae::examples::{ExampleConfig, Record};
use lantern_sae::interp::{collect, CollectConfig};
use lantern_sae::run::progress_bar;
use lantern_sae::sae::write_atomic;
use lantern_sae::source::windows;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::output::print;
use crate::sae_cmd::SavedSae;

/// Which chat endpoint judges.
#[derive(Args, Clone)]
pub struct LlmArgs {
    /// OpenAI-compatible API root (e.g. http://127.0.0.1:8000/v1 for vLLM); default: serve
    /// --llm-model ourselves on 127.0.0.1 for the run.
    #[arg(long)]
    llm_url: Option<String>,
    /// The model: sent as `model` to --llm-url, or loaded and served when it is not given.
    #[arg(long, default_value = DEFAULT_MODEL)]
    llm_model: String,
    /// Bearer token for --llm-url (default: $OPENAI_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
}

impl LlmArgs {
    /// A client for the endpoint, starting our own server when no URL was given.
    fn client(&self) -> Result<Client> {
        let url = match &self.llm_url {
            Some(u) => u.clone(),
            None => {
                let lm = runtime::load(&self.llm_model, WeightMode::Inference)
                    .with_context(|| format!("loading model {}", self.llm_model))?;
                let server = Server::bind(lm, &self.llm_model, "127.0.0.1:0")?;
                let url = server.url();
                eprintln!(
                    "serving {} at {url} for the explainer and scorers",
                    self.llm_model
                );
                server.spawn();
                url
            }
        };
        let mut c = Client::new(&url, &self.llm_model)?;
        c.api_key = self
            .api_key
            .clone()
            .or_else(|| std::env::var("OPENAI_API_KEY").ok());
        // One tiny request first: an endpoint that is down fails the command, not every record.
        c.chat(&[lantern_chat::Message::new("user", "Hi")], 1, 0.0)
            .with_context(|| format!("the LLM endpoint {url} does not answer"))?;
        Ok(c)
    }
}

#[derive(Args)]
pub struct ExplainArgs {
    /// The SAE (its hook point is the one studied) and the model.
    #[command(flatten)]
    saved: SavedSae,
    #[arg(long, default_value = "sotu")]
    corpus: String,
    /// Tokens of the corpus to find examples in.
    #[arg(long, default_value_t = 32_768)]
    tokens: usize,
    #[arg(long, default_value_t = 0)]
    skip_windows: usize,
    /// Directions explained per basis (SAE latents and each baseline).
    #[arg(long, default_value_t = 8)]
    latents: usize,
    /// Baselines explained the same way (neurons, pca, random); empty for none.
    #[arg(long, value_delimiter = ',', default_value = "neurons,pca,random")]
    baselines: Vec<String>,
    /// Tokens per example window.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Top-activating windows the explainer reads.
    #[arg(long, default_value_t = 10)]
    explain_examples: usize,
    /// Activating and (as many) non-activating windows kept for scoring.
    #[arg(long, default_value_t = 10)]
    score_examples: usize,
    #[command(flatten)]
    llm: LlmArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output JSON (default: <sae>/interp/explanations.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// explanations.json written by `lantern sae explain`.
    #[arg(long)]
    explanations: PathBuf,
    #[command(flatten)]
    llm: LlmArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output JSON (default: scores.json beside the explanations).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the scores already in --out and score only the rest.
    #[arg(long)]
    resume: bool,
}

/// The file `explain` writes and `score` reads.
#[derive(Serialize, Deserialize)]
struct Explanations {
    sae: PathBuf,
    model: String,
    hookpoint: String,
    llm: String,
    config: CollectConfig,
    records: Vec<Record>,
}

pub fn explain(a: ExplainArgs, json: bool) -> Result<()> {
    if a.window == 0 || a.latents == 0 {
        bail!("--window and --latents must be positive");
    }
    let (sae, lm, point) = a.saved.load()?;
    let ctx = 1 + (256 / a.window).max(1) * a.window;
    let corpus = Corpus::open(&a.corpus)?;
    let n = a.tokens.div_ceil(ctx - 1).max(1);
    let contexts = windows(&lm, &corpus, ctx, a.skip_windows, Some(n))?.windows;
    let cfg = CollectConfig {
        per_basis: a.latents,
        baselines: a
            .baselines
            .iter()
            .filter(|b| !b.is_empty())
            .cloned()
            .collect(),
        examples: ExampleConfig {
            window: a.window,
            n_explain: a.explain_examples,
            n_score: a.score_examples,
        },
        dense_quantile: 0.95,
        pca_rows: 16_384,
        seed: a.seed,
    };
    eprintln!(
        "collecting examples from {} tokens of {}",
        contexts.len() * (ctx - 1),
        a.corpus
    );
    let mut records = collect(&lm, &sae, point, &contexts, &cfg)?;
    drop(lm);
    let client = a.llm.client()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.saved.sae.join("interp").join("explanations.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let b = progress_bar(records.len() as u64, 0, "explained");
    let mut failed = 0;
    for r in records.iter_mut() {
        match autointerp::explain(&client, r) {
            Ok(e) => r.explanation = Some(e),
            Err(e) => {
                failed += 1;
                b.println(format!("{} {}: {e}", r.basis, r.index));
            }
        }
        b.inc(1);
    }
    b.finish_and_clear();
    let file = Explanations {
        sae: a.saved.sae.clone(),
        model: a.saved.model.clone(),
        hookpoint: point.to_string(),
        llm: format!("{} at {}", a.llm.llm_model, client.base()),
        config: cfg,
        records,
    };
    write_atomic(&out, &serde_json::to_vec_pretty(&file)?)?;
    let mut per_basis: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &file.records {
        *per_basis.entry(r.basis.as_str()).or_default() += 1;
    }
    if !json {
        for r in &file.records {
            eprintln!(
                "{:>8} {:>5}: {}",
                r.basis,
                r.index,
                r.explanation.as_deref().unwrap_or("-")
            );
        }
    }
    print(
        &json!({ "out": out, "records": file.records.len(), "per_basis": per_basis, "failed": failed }),
        json,
    );
    Ok(())
}

/// One scored record.
#[derive(Serialize, Deserialize, Clone)]
struct Scored {
    basis: String,
    index: usize,
    explanation: String,
    #[serde(flatten)]
    scores: Scores,
}

/// Mean and standard error of each score for one basis.
#[derive(Serialize)]
struct Summary {
    n: usize,
    detection: f64,
    detection_se: f64,
    detection_auc: f64,
    detection_auc_se: f64,
    fuzzing: f64,
    fuzzing_se: f64,
    fuzzing_auc: f64,
    fuzzing_auc_se: f64,
    simulation: f64,
    simulation_se: f64,
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if n == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

fn summarize(scored: &[Scored]) -> BTreeMap<String, Summary> {
    let mut by: BTreeMap<String, Vec<&Scored>> = BTreeMap::new();
    for s in scored {
        by.entry(s.basis.clone()).or_default().push(s);
    }
    by.into_iter()
        .map(|(b, v)| {
            let pick = |f: fn(&Scored) -> f64| mean_se(&v.iter().map(|s| f(s)).collect::<Vec<_>>());
            let (d, dse) = pick(|s| s.scores.detection);
            let (f, fse) = pick(|s| s.scores.fuzzing);
            let (da, dase) = pick(|s| s.scores.detection_auc);
            let (fa, fase) = pick(|s| s.scores.fuzzing_auc);
            let (m, mse) = pick(|s| s.scores.simulation);
            (
                b,
                Summary {
                    n: v.len(),
                    detection: d,
                    detection_se: dse,
                    detection_auc: da,
                    detection_auc_se: dase,
                    fuzzing: f,
                    fuzzing_se: fse,
                    fuzzing_auc: fa,
                    fuzzing_auc_se: fase,
                    simulation: m,
                    simulation_se: mse,
                },
            )
        })
        .collect()
}

fn load_explanations(path: &Path) -> Result<Explanations> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{}: not an explanations file written by `lantern sae explain`",
            path.display()
        )
    })
}

pub fn score(a: ScoreArgs, json: bool) -> Result<()> {
    let file = load_explanations(&a.explanations)?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.explanations
            .parent()
            .unwrap_or(Path::new("."))
            .join("scores.json")
    });
    let mut scored: Vec<Scored> = Vec::new();
    if a.resume && out.exists() {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)
            .with_context(|| format!("{}: unreadable scores", out.display()))?;
        scored = serde_json::from_value(v["records"].clone())
            .with_context(|| format!("{}: unreadable scores", out.display()))?;
        eprintln!("resuming: {} records already scored", scored.len());
    }
    let client = a.llm.client()?;
    let todo: Vec<&Record> = file
        .records
        .iter()
        .filter(|r| r.explanation.is_some())
        .filter(|r| {
            !scored
                .iter()
                .any(|s| s.basis == r.basis && s.index == r.index)
        })
        .collect();
    let b = progress_bar(todo.len() as u64, 0, "scored");
    let mut failed = 0;
    let mut requests = 0;
    for r in todo {
        let expl = r.explanation.clone().unwrap_or_default();
        match autointerp::score(&client, r, &expl, a.seed) {
            Ok(scores) => {
                requests += scores.requests;
                scored.push(Scored {
                    basis: r.basis.clone(),
                    index: r.index,
                    explanation: expl,
                    scores,
                });
                // Written after every record: an interrupted run resumes with --resume.
                let partial = json!({ "records": scored, "summary": summarize(&scored) });
                write_atomic(&out, &serde_json::to_vec_pretty(&partial)?)?;
            }
            Err(e) => {
                failed += 1;
                b.println(format!("{} {}: {e}", r.basis, r.index));
            }
        }
        b.inc(1);
    }
    b.finish_and_clear();
    let summary = summarize(&scored);
    let result = json!({
        "explanations": a.explanations, "llm": client.base(), "records": scored,
        "summary": summary, "failed": failed, "requests": requests,
    });
    write_atomic(&out, &serde_json::to_vec_pretty(&result)?)?;
    if !json {
        eprintln!("basis\tn\tdetect acc\tdetect AUC\tfuzz acc\tfuzz AUC\tsimulation r");
        for (b, s) in &summary {
            eprintln!(
                "{b}\t{}\t{:.3}±{:.3}\t{:.3}±{:.3}\t{:.3}±{:.3}\t{:.3}±{:.3}\t{:.3}±{:.3}",
                s.n,
                s.detection,
                s.detection_se,
                s.detection_auc,
                s.detection_auc_se,
                s.fuzzing,
                s.fuzzing_se,
                s.fuzzing_auc,
                s.fuzzing_auc_se,
                s.simulation,
                s.simulation_se
            );
        }
    }
    print(
        &json!({ "out": out, "summary": summary, "failed": failed, "requests": requests }),
        json,
    );
    Ok(())
}
