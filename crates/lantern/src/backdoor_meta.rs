//! `lantern backdoor meta train | eval`: the weight-reading meta-model and its baselines on
//! the same splits of a zoo.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_backdoor::baseline::{BaselineParams, WeightStatsBaseline};
use lantern_backdoor::cnn::Params;
use lantern_backdoor::meta::{self, MetaArch, MetaDetector, Normaliser, Role, TrainConfig};
use lantern_backdoor::metrics::{self, FamilyMetrics};
use lantern_backdoor::query::{QueryConfig, QueryDetector};
use lantern_backdoor::zoo::{check_index, load_models, Index};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::output::write_atomic;

/// What `meta train` leaves next to the weights: the split and the history.
const TRAIN_FILE: &str = "train.json";
/// The weight-statistics baseline fitted on the same training models.
const WEIGHT_STATS_FILE: &str = "baseline_weight_stats.json";
/// The MNTD-style query baseline fitted on the same training models.
const QUERY_FILE: &str = "baseline_mntd.safetensors";

#[derive(Subcommand)]
pub enum MetaCmd {
    /// Train the meta-model (and the baselines) on a zoo; writes META/.
    Train(TrainArgs),
    /// Detection metrics of a trained META on a zoo's models it did not train on.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// Zoo folder (written by `lantern backdoor zoo`).
    #[arg(long)]
    zoo: PathBuf,
    /// Output folder of the meta-model.
    #[arg(long)]
    out: PathBuf,
    /// Trigger families kept out of training entirely (all their models are test models).
    #[arg(long, value_delimiter = ',')]
    holdout_families: Vec<String>,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Models per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate (AdamW, 20% linear warm-up, cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// AdamW weight decay (decoupled).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Parameters per token.
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Transformer width (paper: 256; 64 trains in minutes on a CPU).
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    /// Transformer blocks (paper: 6).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// No hidden-unit permutation augmentation.
    #[arg(long)]
    no_permute: bool,
    /// Add one token per CNN tensor holding its standardised statistics (mean, deviation,
    /// extremes, quantiles, kurtosis, norm) next to the chunks of raw weights.
    #[arg(long)]
    stats_tokens: bool,
    /// Add a linear read-out of those statistics to the meta-model's logit (implies
    /// --stats-tokens).
    #[arg(long)]
    stats_readout: bool,
    /// Share of models kept for testing only.
    #[arg(long, default_value_t = 0.2)]
    test_frac: f64,
    /// Share of models that pick the best epoch.
    #[arg(long, default_value_t = 0.1)]
    val_frac: f64,
    /// Seed of the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Epochs of the MNTD-style query baseline (0 skips it).
    #[arg(long, default_value_t = 20)]
    mntd_epochs: usize,
    /// Learned query images of the MNTD-style baseline.
    #[arg(long, default_value_t = 10)]
    mntd_queries: usize,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Meta-model folder (written by `meta train`).
    #[arg(long)]
    meta: PathBuf,
    /// Zoo folder; models the meta-model trained on are skipped.
    #[arg(long)]
    zoo: PathBuf,
    /// Where to write table.md, roc.svg and scores.jsonl (default META/report).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Views per model the meta-model's score averages: the model and random permutations
    /// of its hidden units (test-time augmentation; 1 = the model alone).
    #[arg(long, default_value_t = 1)]
    tta: usize,
}

/// The contents of META/train.json.
#[derive(Serialize, Deserialize)]
struct TrainRecord {
    zoo: String,
    holdout_families: Vec<String>,
    test_frac: f64,
    val_frac: f64,
    seed: u64,
    /// Seeds of every model used for training or validation (never evaluated).
    trained_seeds: Vec<u64>,
    train_models: usize,
    val_models: usize,
    config: TrainConfig,
    history: Vec<meta::Epoch>,
    val_auroc: Option<f64>,
    seconds: f64,
}

pub fn run(cmd: MetaCmd, json: bool) -> Result<()> {
    match cmd {
        MetaCmd::Train(a) => train(a, json),
        MetaCmd::Eval(a) => eval(a, json),
    }
}

/// Labels (`true` = backdoored) of the models at `pos`.
fn labels(index: &Index, pos: &[usize]) -> Vec<bool> {
    pos.iter()
        .map(|&i| index.models[i].family != metrics::CLEAN_FAMILY)
        .collect()
}

/// Named tensors of each model, as the weight-statistics baseline reads them.
fn named(models: &[Params]) -> Vec<Vec<(String, Vec<f32>)>> {
    models
        .iter()
        .map(|m| {
            m.names()
                .iter()
                .cloned()
                .zip(m.tensors.iter().cloned())
                .collect()
        })
        .collect()
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(v)?)
}

fn train(a: TrainArgs, json: bool) -> Result<()> {
    let start = Instant::now();
    let index = check_index(&a.zoo)?;
    for f in &a.holdout_families {
        f.parse::<lantern_backdoor::triggers::Family>()
            .with_context(|| format!("--holdout-families {f}"))?;
    }
    let split = meta::split_zoo(&index, &a.holdout_families, a.test_frac, a.val_frac, a.seed);
    let (tr, va) = (split.positions(Role::Train), split.positions(Role::Val));
    eprintln!(
        "zoo {}: {} train, {} val, {} test, {} excluded (backdoor did not take)",
        a.zoo.display(),
        tr.len(),
        va.len(),
        split.positions(Role::Test).len(),
        split.positions(Role::Excluded).len()
    );
    let train_m = load_models(&a.zoo, &index, &tr)?;
    let val_m = load_models(&a.zoo, &index, &va)?;
    let (train_l, val_l) = (labels(&index, &tr), labels(&index, &va));
    let arch = MetaArch {
        chunk: a.chunk,
        n_tokens: 0,
        d_model: a.d_model,
        layers: a.layers,
        heads: a.heads,
        mlp_mult: 4,
        stat_tokens: usize::from(a.stats_tokens || a.stats_readout),
        stats_readout: a.stats_readout,
    };
    let tc = TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        permute: !a.no_permute,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let mut det = MetaDetector::new(
        arch,
        index.config.clone(),
        Normaliser::fit(&train_m)?,
        a.seed,
    )?;
    let bar = ProgressBar::new(a.epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} epoch {pos}/{len} {msg} {elapsed} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let history = meta::train(&mut det, &train_m, &train_l, &val_m, &val_l, &tc, |e| {
        bar.set_message(format!(
            "loss {:.4} val auroc {}",
            e.train_loss,
            e.val_auroc.map_or("-".into(), |v| format!("{v:.4}"))
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    det.save(&a.out)?;
    let ws = WeightStatsBaseline::fit(&named(&train_m), &train_l, BaselineParams::default())?;
    write_json(&a.out.join(WEIGHT_STATS_FILE), &ws)?;
    let ws_val = metrics::auroc(&ws.score_all(&named(&val_m))?, &val_l);
    let mntd_val = fit_query_baseline(&a, &index, &train_m, &train_l, &val_m, &val_l)?;
    let val_auroc = history.iter().filter_map(|e| e.val_auroc).reduce(f64::max);
    let trained_seeds = tr
        .iter()
        .chain(&va)
        .map(|&i| index.models[i].seed)
        .collect();
    let record = TrainRecord {
        zoo: a.zoo.display().to_string(),
        holdout_families: a.holdout_families.clone(),
        test_frac: a.test_frac,
        val_frac: a.val_frac,
        seed: a.seed,
        trained_seeds,
        train_models: tr.len(),
        val_models: va.len(),
        config: tc,
        history: history.clone(),
        val_auroc,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_json(&a.out.join(TRAIN_FILE), &record)?;
    let v = json!({
        "out": a.out.display().to_string(),
        "val_auroc": val_auroc,
        "epochs": history.len(),
        "train_models": tr.len(),
        "val_models": va.len(),
        "test_models": split.positions(Role::Test).len(),
        "excluded": split.positions(Role::Excluded).len(),
        "n_tokens": det.arch.n_tokens,
        "baselines": {"weight_stats": {"val_auroc": ws_val}, "mntd": {"val_auroc": mntd_val}},
        "history": history,
        "seconds": record.seconds,
    });
    crate::output::print(&v, json);
    Ok(())
}

/// Fits the MNTD-style query baseline on the training models and saves it to META; returns
/// its validation AUROC (`None` when skipped or when validation lacks a class).
fn fit_query_baseline(
    a: &TrainArgs,
    index: &Index,
    train_m: &[Params],
    train_l: &[bool],
    val_m: &[Params],
    val_l: &[bool],
) -> Result<Option<f64>> {
    if a.mntd_epochs == 0 {
        return Ok(None);
    }
    let qc = QueryConfig {
        queries: a.mntd_queries,
        epochs: a.mntd_epochs,
        seed: a.seed,
        ..QueryConfig::default()
    };
    let bar = ProgressBar::new(a.mntd_epochs as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} MNTD epoch {pos}/{len} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let q = QueryDetector::fit(train_m, train_l, &index.config, &qc, |_, loss| {
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    q.save(&a.out.join(QUERY_FILE))?;
    Ok(metrics::auroc(&q.score_all(val_m)?, val_l))
}

/// Metrics of one detector's scores: overall, per family, and pooled over the trained and
/// the held-out families.
fn detector_metrics(scores: &[f64], labels: &[bool], fams: &[String], holdout: &[String]) -> Value {
    let by_family = metrics::by_family(scores, labels, fams);
    let all = by_family.get(metrics::ALL_FAMILIES).copied();
    let pooled = |held: bool| -> Option<FamilyMetrics> {
        let idx: Vec<usize> = (0..labels.len())
            .filter(|&i| !labels[i] || holdout.contains(&fams[i]) == held)
            .collect();
        if idx.iter().all(|&i| !labels[i]) {
            return None;
        }
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        Some(FamilyMetrics {
            auroc: metrics::auroc(&s, &l),
            accuracy: metrics::accuracy(&s, &l, metrics::DEFAULT_THRESHOLD).unwrap_or(0.0),
            n: idx.len(),
        })
    };
    json!({
        "auroc": all.and_then(|m| m.auroc),
        "accuracy": all.map(|m| m.accuracy),
        "n": all.map(|m| m.n),
        "by_family": by_family.into_iter().filter(|(k, _)| k != metrics::ALL_FAMILIES).collect::<BTreeMap<_, _>>(),
        "in_distribution": pooled(false),
        "held_out": pooled(true),
    })
}

fn eval(a: EvalArgs, json: bool) -> Result<()> {
    let start = Instant::now();
    let det = MetaDetector::load(&a.meta)?;
    let rec_path = a.meta.join(TRAIN_FILE);
    let record: TrainRecord = serde_json::from_slice(
        &std::fs::read(&rec_path).with_context(|| format!("reading {}", rec_path.display()))?,
    )
    .with_context(|| format!("{}: not a meta-model training record", rec_path.display()))?;
    let index = check_index(&a.zoo)?;
    if index.config != det.cnn {
        bail!(
            "{}: the zoo's CNNs have shape {:?}, but the meta-model {} reads CNNs of shape {:?}",
            a.zoo.join("index.json").display(),
            index.config,
            a.meta.display(),
            det.cnn
        );
    }
    let trained: HashSet<u64> = record.trained_seeds.iter().copied().collect();
    let pos: Vec<usize> = (0..index.models.len())
        .filter(|&i| {
            let e = &index.models[i];
            !trained.contains(&e.seed) && (e.family == metrics::CLEAN_FAMILY || e.backdoor_took)
        })
        .collect();
    if pos.is_empty() {
        bail!(
            "{}: no model left to evaluate (all were used in training)",
            a.zoo.display()
        );
    }
    let models = load_models(&a.zoo, &index, &pos)?;
    for (m, &i) in models.iter().zip(&pos) {
        det.normaliser
            .check(m, &a.zoo.join(&index.models[i].file).display().to_string())?;
    }
    let lab = labels(&index, &pos);
    let fams: Vec<String> = pos
        .iter()
        .map(|&i| index.models[i].family.clone())
        .collect();
    let meta_scores = det.score_all_tta(&models, a.tta)?;
    let ws_path = a.meta.join(WEIGHT_STATS_FILE);
    let ws: WeightStatsBaseline = serde_json::from_slice(
        &std::fs::read(&ws_path).with_context(|| format!("reading {}", ws_path.display()))?,
    )
    .with_context(|| format!("{}: not a weight-statistics baseline", ws_path.display()))?;
    let ws_scores = ws.score_all(&named(&models))?;
    let hold = &record.holdout_families;
    let mut v = detector_metrics(&meta_scores, &lab, &fams, hold);
    let mut detectors = vec![("meta-model", &meta_scores), ("weight-stats", &ws_scores)];
    v["baselines"] = json!({
        "weight_stats": detector_metrics(&ws_scores, &lab, &fams, hold),
    });
    let q_path = a.meta.join(QUERY_FILE);
    let q_scores;
    if q_path.is_file() {
        q_scores = QueryDetector::load(&q_path, &det.cnn)?.score_all(&models)?;
        v["baselines"]["mntd"] = detector_metrics(&q_scores, &lab, &fams, hold);
        detectors.push(("mntd-queries", &q_scores));
    }
    let report = a.report.clone().unwrap_or_else(|| a.meta.join("report"));
    write_report(&report, &detectors, &lab, &fams, hold)?;
    write_scores(&report.join("scores.jsonl"), &index, &pos, &detectors)?;
    v["holdout_families"] = json!(hold);
    v["report"] = json!(report.display().to_string());
    v["seconds"] = json!(start.elapsed().as_secs_f64());
    crate::output::print(&v, json);
    Ok(())
}

/// Writes one JSON line per evaluated model (file, family, clean accuracy, ASR and every
/// detector's score), so the scores can be analysed with other tools (e.g. by clean accuracy).
fn write_scores(
    path: &Path,
    index: &Index,
    pos: &[usize],
    detectors: &[(&str, &Vec<f64>)],
) -> Result<()> {
    let mut text = String::new();
    for (k, &i) in pos.iter().enumerate() {
        let e = &index.models[i];
        let mut line = json!({
            "file": e.file, "family": e.family, "clean_acc": e.clean_acc, "asr": e.asr,
        });
        for (name, scores) in detectors {
            line[*name] = json!(scores[k]);
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `DIR/table.md` (AUROC and accuracy per family for every detector) and
/// `DIR/roc.svg` (one ROC curve per detector over all test models).
fn write_report(
    dir: &Path,
    detectors: &[(&str, &Vec<f64>)],
    lab: &[bool],
    fams: &[String],
    holdout: &[String],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rows: Vec<(String, BTreeMap<String, FamilyMetrics>)> = detectors
        .iter()
        .map(|(name, s)| (name.to_string(), metrics::by_family(s, lab, fams)))
        .collect();
    let mut table = metrics::table_markdown(&rows);
    if !holdout.is_empty() {
        table.push_str(&format!(
            "\nHeld out of training: {} (out of distribution).\n",
            holdout.join(", ")
        ));
    }
    let curves: Vec<(String, Vec<(f64, f64)>)> = detectors
        .iter()
        .map(|(name, s)| (name.to_string(), metrics::roc_curve(s, lab)))
        .collect();
    let svg = metrics::roc_svg(&curves, "Backdoor detection on held-out models");
    write_atomic(&dir.join("table.md"), table.as_bytes())?;
    write_atomic(&dir.join("roc.svg"), svg.as_bytes())
}
