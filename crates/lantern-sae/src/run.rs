//! A training run: many hook points from one LM pass, a sweep of SAEs per point trained on the
//! same batches, periodic checkpoints, resume, and held-out evaluation at the end.
//!
//! Layout of `out`: one folder per SAE in sparsify's layout — `out/<hookpoint>/` for a single
//! SAE per point, `out/<variant>/<hookpoint>/` for a sweep (variants named `k32`, `l1-0.003`) —
//! each with the optimiser state beside the weights, and `out/run.json` (written last at each
//! checkpoint) saying how far the run got.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use lantern_lm::runtime::Lm;
use lantern_lm::HookPoint;
use serde::Serialize;

use crate::cache::CacheSource;
use crate::corpus::Corpus;
use crate::device::DeviceTrainer;
use crate::error::{Result, SaeError};
use crate::median::geometric_median;
use crate::metrics::{splice, Recon, ReconMetrics, Splice};
use crate::plot::{line_chart, Series};
use crate::sae::{write_atomic, Activation, Sae, SaeConfig};
use crate::source::{run_windows, windows, ActivationSource, SourceConfig};
use crate::train::{StepStats, TrainConfig, Trainer};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub model: String,
    pub corpus: String,
    pub hookpoints: Vec<HookPoint>,
    pub out: PathBuf,
    /// Template for every SAE (its `d_in` and `num_latents` are filled from the model when 0;
    /// `num_latents = expansion * d_in`).
    pub sae: SaeConfig,
    pub expansion: usize,
    /// Sweep values: several k (TopK kinds) or several L1 coefficients (ReLU); empty = the
    /// template's value only.
    pub sweep_k: Vec<usize>,
    pub sweep_l1: Vec<f32>,
    pub train: TrainConfig,
    pub source: SourceConfig,
    /// Activation vectors to train on.
    pub tokens: u64,
    pub batch: usize,
    /// Held-out tokens for reconstruction metrics, and windows for the spliced-in CE.
    pub eval_tokens: usize,
    pub splice_windows: usize,
    pub checkpoint_every: u64,
    pub resume: bool,
    pub seed: u64,
    pub saelens: bool,
    /// Train from an activation cache (see [`crate::cache`]) instead of running the LM.
    pub activations: Option<PathBuf>,
    /// Write `report.html` beside each SAE, from this many held-out windows (0: none).
    pub report_windows: usize,
    /// `None`: the CPU trainer; a device: [`DeviceTrainer`] on it (TopK SAEs only).
    pub device: Option<Device>,
}

/// Where training batches come from.
enum Feed<'a> {
    Lm(ActivationSource<'a>),
    Cache(CacheSource),
}

impl Feed<'_> {
    fn next_batch(&mut self, rows: usize) -> Result<Option<Vec<Vec<f32>>>> {
        match self {
            Feed::Lm(s) => s.next_batch(rows),
            Feed::Cache(c) => c.next_batch(rows),
        }
    }

    /// Windows (LM) or shards (cache) consumed.
    fn done(&self) -> usize {
        match self {
            Feed::Lm(s) => s.windows_done(),
            Feed::Cache(c) => c.shards_done(),
        }
    }

    fn skip(&mut self, n: usize) {
        match self {
            Feed::Lm(s) => s.skip_windows(n),
            Feed::Cache(c) => c.skip_shards(n),
        }
    }

    fn positions_run(&self) -> u64 {
        match self {
            Feed::Lm(s) => s.positions_run,
            Feed::Cache(_) => 0,
        }
    }
}

/// One trained SAE and its held-out metrics.
#[derive(Debug, Clone, Serialize)]
pub struct SaeResult {
    pub hookpoint: String,
    pub variant: String,
    pub path: PathBuf,
    pub tokens: u64,
    pub steps: u64,
    pub fvu: f64,
    pub l0: f64,
    pub dead_frac: f64,
    pub dense_frac: f64,
    /// Latents that did not fire in the last `dead_window` training tokens (the trainer's own
    /// count; `dead_frac` above is "never fired on the held-out tokens").
    pub dead_frac_train: f64,
    pub dead_window: u64,
    pub eval: ReconMetrics,
    pub splice: Option<Splice>,
    pub last_step: StepStats,
    /// The feature report, when written.
    pub report: Option<PathBuf>,
}

/// A run's result.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub out: PathBuf,
    pub saes: Vec<SaeResult>,
    pub lm_positions: u64,
    pub seconds: f64,
    pub train_tok_s: f64,
    /// `sweep.svg` (held-out FVU against L0, one line per hook point) when a sweep trained
    /// several SAEs per point.
    pub sweep_plot: Option<PathBuf>,
}

struct Slot {
    point: usize,
    variant: String,
    dir: PathBuf,
    /// The SAE and its optimiser state; behind `on_device` while a device trains it.
    trainer: Trainer,
    on_device: Option<DeviceTrainer>,
    last: StepStats,
}

impl Slot {
    /// One training step: on the CPU trainer, or on `device`'s tensor trainer (the state moves
    /// there at the first step).
    fn step(&mut self, x: &[f32], device: Option<&Device>) -> Result<StepStats> {
        let Some(device) = device else {
            return Ok(self.trainer.train_step(x));
        };
        if self.on_device.is_none() {
            self.on_device = Some(DeviceTrainer::from_trainer(&self.trainer, device)?);
        }
        self.on_device.as_mut().expect("just set").train_step(x)
    }

    /// Brings the device's state back into `trainer` (before a checkpoint or evaluation).
    fn sync(&mut self) -> Result<()> {
        if let Some(d) = &self.on_device {
            self.trainer = d.to_trainer()?;
        }
        Ok(())
    }
}

/// Trains (or resumes) every SAE of `cfg` on `lm` and evaluates them.
pub fn train(lm: &Lm, cfg: &RunConfig) -> Result<RunResult> {
    let start = Instant::now();
    let state_path = cfg.out.join("run.json");
    let resumed = read_state(&state_path)?;
    if resumed.is_some() && !cfg.resume {
        return Err(SaeError::Config(format!(
            "{} already holds a run: pass --resume to continue it, or choose another --out",
            cfg.out.display()
        )));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| SaeError::io(&cfg.out, e))?;
    crate::source::check_points(lm, &cfg.hookpoints)?;
    let (mut source, widths, eval) = match &cfg.activations {
        Some(dir) => open_cache(lm, cfg, dir)?,
        None => open_lm(lm, cfg)?,
    };
    let mut slots = make_slots(cfg, &widths, resumed.is_some())?;
    if cfg.device.is_some() {
        for s in &slots {
            crate::device::check(&s.trainer.sae.cfg)?;
        }
    }
    let (mut tokens, mut steps) = (0u64, 0u64);
    if let Some(st) = &resumed {
        source.skip(st.windows_done);
        tokens = st.tokens;
        steps = st.steps;
        eprintln!(
            "resuming {} at {} tokens, {} steps, window {}",
            cfg.out.display(),
            tokens,
            steps,
            st.windows_done
        );
    }
    let bar = progress_bar(cfg.tokens, tokens, "tokens");
    let train_start = Instant::now();
    let tokens_at_start = tokens;
    while tokens < cfg.tokens {
        let Some(batch) = source.next_batch(cfg.batch)? else {
            break;
        };
        if steps == 0 && resumed.is_none() {
            init_b_dec(&mut slots, &batch, &widths);
        }
        let rows = batch[0].len() / widths[0].max(1);
        for slot in &mut slots {
            slot.last = slot.step(&batch[slot.point], cfg.device.as_ref())?;
        }
        tokens += rows as u64;
        steps += 1;
        bar.set_position(tokens.min(cfg.tokens));
        if let Some(s) = slots.first() {
            let msg = format!(
                "fvu {:.3} l0 {:.1} dead {:.3}",
                s.last.fvu, s.last.l0, s.last.dead_frac
            );
            if bar.is_hidden() && steps % 10 == 0 {
                // No terminal (a log file, CI): a plain line now and then instead of the bar.
                eprintln!(
                    "step {steps}: {tokens}/{} tokens, {:.0} tokens/s, {msg}",
                    cfg.tokens,
                    (tokens - tokens_at_start) as f64
                        / train_start.elapsed().as_secs_f64().max(1e-9)
                );
            }
            bar.set_message(msg);
        }
        if cfg.checkpoint_every > 0 && steps % cfg.checkpoint_every == 0 {
            checkpoint(cfg, &mut slots, &source, tokens, steps, false)?;
        }
    }
    bar.finish_and_clear();
    let train_secs = train_start.elapsed().as_secs_f64();
    checkpoint(cfg, &mut slots, &source, tokens, steps, true)?;
    let mut saes = Vec::new();
    for slot in &slots {
        let point = cfg.hookpoints[slot.point];
        let (recon, spl) = evaluate(
            lm,
            &slot.trainer.sae,
            point,
            &eval,
            cfg.splice_windows,
            cfg.source.windows_per_pass,
        )?;
        if cfg.saelens {
            slot.trainer.sae.export_saelens(&slot.dir.join("saelens"))?;
        }
        let dead_window = slot.trainer.cfg.dead_tokens.min(tokens / 2).max(1);
        let dead_train = slot
            .trainer
            .since_fired
            .iter()
            .filter(|&&t| t >= dead_window)
            .count() as f64
            / slot.trainer.since_fired.len().max(1) as f64;
        let report = if cfg.report_windows > 0 {
            let path = slot.dir.join("report.html");
            let n = cfg.report_windows.min(eval.len());
            let mut metrics = vec![
                ("FVU", format!("{:.4}", recon.fvu)),
                ("L0", format!("{:.2}", recon.l0)),
                (
                    "never fired on the held-out tokens",
                    format!("{:.4}", recon.dead_frac),
                ),
                (
                    "no firing in the last training tokens",
                    format!("{:.4} (last {dead_window} tokens)", dead_train),
                ),
                (
                    "dense fraction (> 10% of tokens)",
                    format!("{:.4}", recon.dense_frac),
                ),
                ("training tokens", tokens.to_string()),
            ];
            if let Some(s) = &spl {
                metrics.push((
                    "CE clean / with SAE / zero-ablated",
                    format!(
                        "{:.4} / {:.4} / {:.4}",
                        s.ce_clean, s.ce_with_sae, s.ce_zero_ablation
                    ),
                ));
                metrics.push(("CE loss score", format!("{:.4}", s.ce_loss_score)));
                metrics.push(("KL to clean", format!("{:.4}", s.kl)));
            }
            let rc = crate::report::ReportConfig::default();
            crate::report::write(
                lm,
                &slot.trainer.sae,
                point,
                &eval[..n],
                &metrics,
                Some(&recon),
                &rc,
                &path,
            )?;
            Some(path)
        } else {
            None
        };
        saes.push(SaeResult {
            hookpoint: point.to_string(),
            variant: slot.variant.clone(),
            path: slot.dir.clone(),
            tokens,
            steps,
            fvu: recon.fvu,
            l0: recon.l0,
            dead_frac: recon.dead_frac,
            dense_frac: recon.dense_frac,
            dead_frac_train: dead_train,
            dead_window,
            eval: recon,
            splice: spl,
            last_step: slot.last,
            report,
        });
    }
    let trained = (tokens - tokens_at_start) as f64;
    let frontier: Vec<(&str, f64, f64)> = saes
        .iter()
        .map(|s| (s.hookpoint.as_str(), s.l0, s.fvu))
        .collect();
    let sweep_plot = write_sweep_plot(&cfg.out, &frontier)?;
    Ok(RunResult {
        out: cfg.out.clone(),
        saes,
        lm_positions: source.positions_run(),
        seconds: start.elapsed().as_secs_f64(),
        train_tok_s: trained / train_secs.max(1e-9),
        sweep_plot,
    })
}

/// The sparsity-fidelity frontier of a sweep: held-out FVU against L0, one line per hook point
/// with more than one SAE, written to `<out>/sweep.svg`.
fn write_sweep_plot(out: &Path, saes: &[(&str, f64, f64)]) -> Result<Option<PathBuf>> {
    let mut by_point: std::collections::BTreeMap<&str, Vec<(f64, f64)>> = Default::default();
    for &(point, l0, fvu) in saes {
        by_point.entry(point).or_default().push((l0, fvu));
    }
    let series: Vec<Series> = by_point
        .into_iter()
        .filter(|(_, pts)| pts.len() > 1)
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: name.to_string(),
                points,
            }
        })
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let path = out.join("sweep.svg");
    let svg = line_chart(
        "Sweep: fidelity against sparsity",
        "L0 (held out)",
        "FVU (held out)",
        &series,
    );
    write_atomic(&path, svg.as_bytes())?;
    Ok(Some(path))
}

type Opened<'a> = (Feed<'a>, Vec<usize>, Vec<Vec<u32>>);

/// Training windows streamed through the LM, and held-out windows after them.
fn open_lm<'a>(lm: &'a Lm, cfg: &RunConfig) -> Result<Opened<'a>> {
    let corpus = Corpus::open(&cfg.corpus)?;
    let per_window = (cfg.source.ctx_len - 1).max(1);
    let train_w = (cfg.tokens as usize).div_ceil(per_window) * 102 / 100 + 1;
    let eval_w = eval_windows(cfg);
    let mut all = windows(lm, &corpus, cfg.source.ctx_len, 0, Some(train_w + eval_w))?.windows;
    let eval_n = eval_w.min((all.len() / 10).max(1));
    let eval = all.split_off(all.len() - eval_n);
    if all.is_empty() {
        return Err(SaeError::Corpus {
            spec: cfg.corpus.clone(),
            what: "too short to hold out evaluation windows".into(),
        });
    }
    let widths = point_widths(lm, &cfg.hookpoints, &all[0])?;
    let src = ActivationSource::new(lm, cfg.hookpoints.clone(), all, cfg.source.clone())?;
    Ok((Feed::Lm(src), widths, eval))
}

/// Batches from a cache; held-out windows from the cache's corpus past what it used.
fn open_cache<'a>(lm: &'a Lm, cfg: &RunConfig, dir: &Path) -> Result<Opened<'a>> {
    let src = CacheSource::open(dir, &cfg.hookpoints, cfg.source.buffer_rows, cfg.seed)?;
    let info = src.info.clone();
    let corpus = Corpus::open(&info.corpus)?;
    let eval = windows(
        lm,
        &corpus,
        info.ctx_len,
        info.windows,
        Some(eval_windows(cfg)),
    )?
    .windows;
    let widths = src.widths();
    let probe = point_widths(lm, &cfg.hookpoints, &eval[0])?;
    if probe != widths {
        return Err(SaeError::Config(format!(
            "the cache in {} has widths {widths:?} but this model's hook points have {probe:?}",
            dir.display()
        )));
    }
    Ok((Feed::Cache(src), widths, eval))
}

fn eval_windows(cfg: &RunConfig) -> usize {
    let per_window = (cfg.source.ctx_len - 1).max(1);
    cfg.eval_tokens
        .div_ceil(per_window)
        .max(cfg.splice_windows)
        .max(1)
}

/// Held-out metrics of one SAE: reconstruction over `eval` windows and the LM's loss with it
/// spliced in over the first `splice_windows` of them.
pub fn evaluate(
    lm: &Lm,
    sae: &Sae,
    point: HookPoint,
    eval: &[Vec<u32>],
    splice_windows: usize,
    per_pass: usize,
) -> Result<(ReconMetrics, Option<Splice>)> {
    let width = point_widths(lm, &[point], &eval[0])?[0];
    if width != sae.cfg.d_in {
        return Err(SaeError::Config(format!(
            "the SAE reads {} dimensions but {point} of this model has {width}: it was trained on another model or hook point",
            sae.cfg.d_in
        )));
    }
    let mut recon = Recon::new(sae);
    let cfg = SourceConfig {
        ctx_len: eval[0].len(),
        windows_per_pass: per_pass,
        buffer_rows: 0,
        ..SourceConfig::default()
    };
    let mut src = ActivationSource::new(lm, vec![point], eval.to_vec(), cfg)?;
    while let Some(b) = src.next_batch(4096)? {
        recon.add(sae, &b[0]);
    }
    let spl = if splice_windows > 0 {
        let n = splice_windows.min(eval.len());
        Some(splice(lm, sae, point, &eval[..n], per_pass)?)
    } else {
        None
    };
    Ok((recon.finish(), spl))
}

/// The activation width at each point (from one short pass).
fn point_widths(lm: &Lm, points: &[HookPoint], window: &[u32]) -> Result<Vec<usize>> {
    let probe = vec![window[..window.len().min(4)].to_vec()];
    let acts = run_windows(lm, &probe, points)?;
    Ok(acts.iter().map(|a| a.dim(2).unwrap_or(0)).collect())
}

fn variants(cfg: &RunConfig) -> Vec<(String, SaeConfig)> {
    let base = cfg.sae.clone();
    if base.activation == Activation::Relu && !cfg.sweep_l1.is_empty() {
        return cfg
            .sweep_l1
            .iter()
            .map(|&l| {
                (
                    format!("l1-{l}"),
                    SaeConfig {
                        l1_coef: l,
                        ..base.clone()
                    },
                )
            })
            .collect();
    }
    if base.activation != Activation::Relu && !cfg.sweep_k.is_empty() {
        return cfg
            .sweep_k
            .iter()
            .map(|&k| (format!("k{k}"), SaeConfig { k, ..base.clone() }))
            .collect();
    }
    vec![(String::new(), base)]
}

fn make_slots(cfg: &RunConfig, widths: &[usize], resume: bool) -> Result<Vec<Slot>> {
    let vars = variants(cfg);
    let mut slots = Vec::new();
    for (p, (&point, &width)) in cfg.hookpoints.iter().zip(widths).enumerate() {
        for (i, (name, template)) in vars.iter().enumerate() {
            let mut dir = cfg.out.clone();
            if !name.is_empty() {
                dir.push(name);
            }
            dir.push(point.to_string());
            let trainer = if resume {
                Trainer::load(&dir)?
            } else {
                let sae_cfg = SaeConfig {
                    d_in: width,
                    num_latents: if template.num_latents > 0 {
                        template.num_latents
                    } else {
                        cfg.expansion * width
                    },
                    expansion_factor: cfg.expansion,
                    hookpoint: point.to_string(),
                    model: cfg.model.clone(),
                    ..template.clone()
                };
                let seed = cfg.seed.wrapping_add((p * 1000 + i) as u64);
                Trainer::new(Sae::init(sae_cfg, seed)?, cfg.train.clone())
            };
            slots.push(Slot {
                point: p,
                variant: name.clone(),
                dir,
                trainer,
                on_device: None,
                last: StepStats::default(),
            });
        }
    }
    Ok(slots)
}

/// Sets every SAE's `b_dec` to the geometric median of (up to 4096 rows of) the first batch.
fn init_b_dec(slots: &mut [Slot], batch: &[Vec<f32>], widths: &[usize]) {
    let medians: Vec<Vec<f32>> = batch
        .iter()
        .zip(widths)
        .map(|(b, &d)| {
            let rows = (b.len() / d).min(4096);
            geometric_median(&b[..rows * d], d, 100)
        })
        .collect();
    for s in slots {
        s.trainer.sae.b_dec = medians[s.point].clone();
    }
}

#[derive(Debug, serde::Deserialize, Serialize)]
struct RunState {
    windows_done: usize,
    tokens: u64,
    steps: u64,
    finished: bool,
}

fn read_state(path: &Path) -> Result<Option<RunState>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SaeError::bad_file(path, format!("not a run state: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SaeError::io(path, e)),
    }
}

fn checkpoint(
    cfg: &RunConfig,
    slots: &mut [Slot],
    source: &Feed<'_>,
    tokens: u64,
    steps: u64,
    finished: bool,
) -> Result<()> {
    for s in slots {
        s.sync()?;
        s.trainer.save(&s.dir)?;
    }
    let state = RunState {
        windows_done: source.done(),
        tokens,
        steps,
        finished,
    };
    write_atomic(
        &cfg.out.join("run.json"),
        &serde_json::to_vec_pretty(&state).expect("state serialises"),
    )
}

/// A progress bar on stderr counting `unit`s, started at `at` (a resumed run): the one style of
/// every long SAE job.
pub fn progress_bar(total: u64, at: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(at);
    bar
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn sweep_plot_draws_points_with_several_saes_only() {
        let dir = tempfile::tempdir().unwrap();
        let one = [("blocks.1.resid_post", 32.0, 0.2)];
        assert!(write_sweep_plot(dir.path(), &one).unwrap().is_none());
        let sweep = [
            ("blocks.1.resid_post", 64.0, 0.1),
            ("blocks.1.resid_post", 16.0, 0.3),
            ("blocks.1.resid_post", 32.0, 0.2),
            ("blocks.2.resid_post", 32.0, 0.25),
        ];
        let path = write_sweep_plot(dir.path(), &sweep).unwrap().unwrap();
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.contains("blocks.1.resid_post") && !svg.contains("blocks.2.resid_post"));
        assert_eq!(svg.matches("<circle").count(), 3);
        // Sorted by L0: the polyline runs from L0 16 (left edge) to 64 (right edge).
        let line = svg.split("points=\"").nth(1).unwrap();
        assert!(line.starts_with("56.0,"), "{line}");
    }
}
