//! `lantern sae ...`: train, evaluate and benchmark sparse autoencoders.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use lantern_lm::model::WeightMode;
use lantern_lm::runtime::{self, DEFAULT_MODEL};
use lantern_lm::HookPoint;
use lantern_sae::corpus::Corpus;
use lantern_sae::device::DeviceTrainer;
use lantern_sae::run::{self, RunConfig};
use lantern_sae::source::{windows, SourceConfig};
use lantern_sae::train::{StepStats, TrainConfig, Trainer};
use lantern_sae::{Activation, Sae, SaeConfig};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::output::print;

/// The SAE kinds on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActivationArg {
    Topk,
    Batchtopk,
    /// ReLU with an L1 penalty (Cunningham et al.).
    Relu,
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Activation {
        match a {
            ActivationArg::Topk => Activation::TopK,
            ActivationArg::Batchtopk => Activation::BatchTopK,
            ActivationArg::Relu => Activation::Relu,
        }
    }
}

#[derive(Subcommand)]
pub enum SaeCmd {
    /// Train SAEs on activations at one or more hook points (one LM pass feeds them all).
    Train(Box<TrainArgs>),
    /// Held-out metrics of a saved SAE: FVU, L0, dead latents, CE with the SAE spliced in.
    Eval(EvalArgs),
    /// Training-step throughput on random activations.
    Bench(BenchArgs),
    /// Write LM activations at hook points to an f16 safetensors cache (train with --activations).
    Cache(CacheArgs),
    /// Feature patching on indirect object identification: SAE latents vs neuron/PCA/random bases.
    Patch(Box<crate::sae_patch_cmd::PatchArgs>),
    /// Explain SAE latents (and baseline directions) with an LLM from their top activations.
    Explain(Box<crate::sae_interp_cmd::ExplainArgs>),
    /// Score explanations: detection, fuzzing and simulation through the same LLM endpoint.
    Score(Box<crate::sae_interp_cmd::ScoreArgs>),
}

/// Where activations come from: a model, a corpus and hook points.
#[derive(Args)]
pub struct SourceArgs {
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Corpus: asset (sotu, austen), folder of .txt, .txt, .jsonl(.zst); comma-separated to join.
    #[arg(long, default_value = "sotu")]
    corpus: String,
    /// Hook points (repeat or comma-separate); default: the middle block's residual stream.
    #[arg(long = "hookpoint", value_delimiter = ',')]
    hookpoints: Vec<String>,
}

#[derive(Args)]
pub struct CacheArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Activation rows to cache (about; whole windows).
    #[arg(long, default_value_t = 1_000_000)]
    tokens: usize,
    #[arg(long, default_value_t = 256)]
    ctx_len: usize,
    /// Windows per shard.
    #[arg(long, default_value_t = 256)]
    windows_per_shard: usize,
    #[arg(long)]
    include_special: bool,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Output folder (sparsify layout); default runs/sae-<corpus>-<hookpoint>.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "topk")]
    activation: ActivationArg,
    /// Latents kept per token (TopK/BatchTopK); comma-separated for a sweep.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    k: Vec<usize>,
    /// L1 coefficients for ReLU SAEs; comma-separated for a sweep.
    #[arg(long, value_delimiter = ',', default_value = "1.0")]
    l1: Vec<f32>,
    /// Latents = expansion x the hook point's width.
    #[arg(long, default_value_t = 16)]
    expansion: usize,
    /// Exact number of latents (overrides --expansion).
    #[arg(long)]
    latents: Option<usize>,
    /// Add FVU at 4k latents / 8 to the loss (Multi-TopK).
    #[arg(long)]
    multi_topk: bool,
    /// Tie encoder and decoder.
    #[arg(long)]
    tied: bool,
    /// Activation vectors to train on.
    #[arg(long, default_value_t = 250_000)]
    tokens: u64,
    /// Activation rows per step.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    ctx_len: usize,
    /// Peak learning rate (default 7.5e-4 / sqrt(latents / 2^14); sparsify uses a 2e-4 base
    /// with 64x larger batches).
    #[arg(long)]
    lr: Option<f32>,
    /// Linear warm-up steps (default: 1000, or a tenth of the run's steps when shorter).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// AuxK coefficient (0: off).
    #[arg(long, default_value_t = 1.0 / 32.0)]
    auxk_alpha: f32,
    /// Tokens without firing after which a latent counts as dead.
    #[arg(long, default_value_t = 10_000_000)]
    dead_tokens: u64,
    /// Rows in the shuffling buffer.
    #[arg(long, default_value_t = 65_536)]
    buffer: usize,
    /// Keep BOS/EOS positions and position 0.
    #[arg(long)]
    include_special: bool,
    /// Held-out tokens for metrics.
    #[arg(long, default_value_t = 32_768)]
    eval_tokens: usize,
    /// Held-out windows for the spliced-in CE.
    #[arg(long, default_value_t = 16)]
    splice_windows: usize,
    /// Save a checkpoint every this many steps.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the SAELens layout to <sae>/saelens.
    #[arg(long)]
    saelens: bool,
    /// Train from an activation cache written by `lantern sae cache` (no LM passes).
    #[arg(long)]
    activations: Option<PathBuf>,
    /// Held-out windows the feature report (report.html beside each SAE) reads; 0: no report.
    #[arg(long, default_value_t = 64)]
    report_windows: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Where an SAE trains (`sae train`, `sae bench`).
#[derive(Args)]
pub struct DeviceArgs {
    /// cpu (the CPU trainer), cuda / cuda:N (the device trainer on a GPU: TopK only; needs a
    /// build with `--features cuda`), or tensor-cpu (the device trainer on the CPU, to check the
    /// GPU's code path without one). An LM, where one runs, stays on the CPU.
    #[arg(long = "device", value_name = "DEVICE", default_value = "cpu")]
    name: String,
    /// With a CUDA device: the encoder product in TF32 (tensor cores; 10-bit mantissas in the
    /// products). Off: exact f32, as PyTorch's default.
    #[arg(long)]
    tf32: bool,
}

impl DeviceArgs {
    /// The device the device trainer runs on (`None`: the CPU trainer), with the product
    /// precision set.
    fn select(&self) -> Result<Option<candle_core::Device>> {
        candle_core::cuda::set_gemm_reduced_precision_f32(self.tf32);
        Ok(lantern_sae::device::parse_device(&self.name)?)
    }
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    saved: SavedSae,
    #[arg(long, default_value = "sotu")]
    corpus: String,
    /// Tokens to evaluate on.
    #[arg(long, default_value_t = 32_768)]
    tokens: usize,
    /// Skip this many windows of the corpus first (evaluate past the training data).
    #[arg(long, default_value_t = 0)]
    skip_windows: usize,
    #[arg(long, default_value_t = 256)]
    ctx_len: usize,
    #[arg(long, default_value_t = 16)]
    splice_windows: usize,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 576)]
    d_in: usize,
    #[arg(long, default_value_t = 9216)]
    latents: usize,
    #[arg(long, default_value_t = 32)]
    k: usize,
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Threads (default: RAYON_NUM_THREADS or all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, value_enum, default_value = "topk")]
    activation: ActivationArg,
    #[command(flatten)]
    device: DeviceArgs,
    /// Train with Multi-TopK (its 4k codes decoded too).
    #[arg(long)]
    multi_topk: bool,
    /// Tokens without firing after which a latent is dead (AuxK trains the dead ones).
    #[arg(long, default_value_t = 10_000_000)]
    dead_tokens: u64,
}

pub fn run(cmd: SaeCmd, json: bool) -> Result<()> {
    match cmd {
        SaeCmd::Train(a) => train(*a, json),
        SaeCmd::Eval(a) => eval(a, json),
        SaeCmd::Bench(a) => bench(a, json),
        SaeCmd::Cache(a) => cache(a, json),
        SaeCmd::Patch(a) => crate::sae_patch_cmd::patch(*a, json),
        SaeCmd::Explain(a) => crate::sae_interp_cmd::explain(*a, json),
        SaeCmd::Score(a) => crate::sae_interp_cmd::score(*a, json),
    }
}

pub(crate) fn parse_points(names: &[String], n_layers: usize) -> Result<Vec<HookPoint>> {
    if names.is_empty() {
        return Ok(vec![HookPoint::block(
            n_layers / 2,
            lantern_lm::BlockSite::ResidPost,
        )]);
    }
    names
        .iter()
        .map(|n| {
            n.parse::<HookPoint>()
                .map_err(|e| anyhow::anyhow!("--hookpoint {n}: {e}"))
        })
        .collect()
}

fn train(a: TrainArgs, json: bool) -> Result<()> {
    let lm = runtime::load(&a.src.model, WeightMode::Inference)
        .with_context(|| format!("loading model {}", a.src.model))?;
    let points = parse_points(&a.src.hookpoints, lm.model.cfg.n_layers)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let corpus: String = a
            .src
            .corpus
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        PathBuf::from(format!("runs/sae-{corpus}-{}", points[0]))
    });
    let activation: Activation = a.activation.into();
    let mut sae = SaeConfig::topk(0, a.latents.unwrap_or(0), a.k[0]);
    sae.activation = activation;
    sae.multi_topk = a.multi_topk;
    sae.tied = a.tied;
    sae.l1_coef = a.l1[0];
    let cfg = RunConfig {
        model: a.src.model.clone(),
        corpus: a.src.corpus.clone(),
        hookpoints: points,
        out,
        sae,
        expansion: a.expansion,
        sweep_k: if a.k.len() > 1 {
            a.k.clone()
        } else {
            Vec::new()
        },
        sweep_l1: if a.l1.len() > 1 {
            a.l1.clone()
        } else {
            Vec::new()
        },
        train: TrainConfig {
            lr: a.lr,
            warmup_steps: a
                .warmup_steps
                .unwrap_or_else(|| (a.tokens / a.batch.max(1) as u64 / 10).clamp(1, 1000) as usize),
            auxk_alpha: if activation == Activation::Relu {
                0.0
            } else {
                a.auxk_alpha
            },
            dead_tokens: a.dead_tokens,
            ..TrainConfig::default()
        },
        source: SourceConfig {
            ctx_len: a.ctx_len,
            include_special: a.include_special,
            buffer_rows: a.buffer,
            seed: a.seed,
            ..SourceConfig::default()
        },
        tokens: a.tokens,
        batch: a.batch,
        eval_tokens: a.eval_tokens,
        splice_windows: a.splice_windows,
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        seed: a.seed,
        saelens: a.saelens,
        activations: a.activations.clone(),
        report_windows: a.report_windows,
        device: a.device.select()?,
    };
    let res = run::train(&lm, &cfg)?;
    let saes: Vec<_> = res
        .saes
        .iter()
        .map(|s| {
            let sp = s.splice.as_ref();
            json!({
                "hookpoint": s.hookpoint, "variant": s.variant, "path": s.path,
                "fvu": s.fvu, "l0": s.l0, "dead_frac": s.dead_frac, "dense_frac": s.dense_frac,
                "dead_frac_train": s.dead_frac_train, "dead_window_tokens": s.dead_window,
                "tokens": s.tokens, "steps": s.steps,
                "ce_clean": sp.map(|x| x.ce_clean), "ce_with_sae": sp.map(|x| x.ce_with_sae),
                "ce_zero_ablation": sp.map(|x| x.ce_zero_ablation),
                "ce_loss_score": sp.map(|x| x.ce_loss_score), "kl": sp.map(|x| x.kl),
                "eval_tokens": s.eval.tokens, "density_hist": s.eval.density_hist,
                "report": s.report,
            })
        })
        .collect();
    if !json {
        for s in &saes {
            println!(
                "{} {}: fvu {:.4}  l0 {:.1}  dead {:.4}  ce_loss_score {}  (clean {}, sae {}, zero {})",
                s["hookpoint"].as_str().unwrap_or(""),
                s["variant"].as_str().unwrap_or(""),
                s["fvu"].as_f64().unwrap_or(f64::NAN),
                s["l0"].as_f64().unwrap_or(f64::NAN),
                s["dead_frac"].as_f64().unwrap_or(f64::NAN),
                fmt(&s["ce_loss_score"]),
                fmt(&s["ce_clean"]),
                fmt(&s["ce_with_sae"]),
                fmt(&s["ce_zero_ablation"]),
            );
        }
        for s in &saes {
            if let Some(r) = s["report"].as_str() {
                println!("feature report: {r}");
            }
        }
        if let Some(p) = &res.sweep_plot {
            println!("sweep plot (FVU against L0): {}", p.display());
        }
        println!(
            "saved to {} ({:.0} s, SAE training {:.0} activations/s)",
            res.out.display(),
            res.seconds,
            res.train_tok_s
        );
        return Ok(());
    }
    print(
        &json!({
            "saes": saes, "out": res.out, "seconds": res.seconds,
            "train_tok_s": res.train_tok_s, "lm_positions": res.lm_positions,
            "sweep_plot": res.sweep_plot,
        }),
        true,
    );
    Ok(())
}

fn fmt(v: &serde_json::Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.4}"))
}

/// A saved SAE and the model it reads: the arguments of every command that studies one.
#[derive(Args)]
pub struct SavedSae {
    /// SAE folder (cfg.json + sae.safetensors).
    #[arg(long)]
    pub sae: PathBuf,
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Hook point (default: the one recorded in cfg.json).
    #[arg(long)]
    pub hookpoint: Option<String>,
}

impl SavedSae {
    /// Loads the SAE and the model and resolves the hook point (`--hookpoint`, else the one
    /// recorded in the SAE's cfg.json).
    pub fn load(&self) -> Result<(Sae, runtime::Lm, HookPoint)> {
        let dir = &self.sae;
        let sae = Sae::load(dir).with_context(|| format!("loading SAE {}", dir.display()))?;
        let lm = runtime::load(&self.model, WeightMode::Inference)
            .with_context(|| format!("loading model {}", self.model))?;
        let name = self
            .hookpoint
            .clone()
            .unwrap_or_else(|| sae.cfg.hookpoint.clone());
        if name.is_empty() {
            bail!(
                "{}: cfg.json names no hook point: pass --hookpoint",
                dir.display()
            );
        }
        let point = parse_points(&[name], lm.model.cfg.n_layers)?[0];
        Ok((sae, lm, point))
    }
}

fn eval(a: EvalArgs, json: bool) -> Result<()> {
    let (sae, lm, point) = a.saved.load()?;
    let corpus = Corpus::open(&a.corpus)?;
    let n = a.tokens.div_ceil(a.ctx_len.saturating_sub(1).max(1)).max(1);
    let w = windows(&lm, &corpus, a.ctx_len, a.skip_windows, Some(n))?.windows;
    let (recon, spl) = run::evaluate(&lm, &sae, point, &w, a.splice_windows, 8)?;
    let sp = spl.as_ref();
    print(
        &json!({
            "hookpoint": point.to_string(), "tokens": recon.tokens,
            "fvu": recon.fvu, "l0": recon.l0, "dead_frac": recon.dead_frac, "dense_frac": recon.dense_frac,
            "ce_clean": sp.map(|x| x.ce_clean), "ce_with_sae": sp.map(|x| x.ce_with_sae),
            "ce_zero_ablation": sp.map(|x| x.ce_zero_ablation),
            "ce_loss_score": sp.map(|x| x.ce_loss_score), "kl": sp.map(|x| x.kl),
            "density_hist": recon.density_hist,
        }),
        json,
    );
    Ok(())
}

fn bench(a: BenchArgs, json: bool) -> Result<()> {
    let threads = a.threads.unwrap_or_else(rayon::current_num_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut cfg = SaeConfig::topk(a.d_in, a.latents, a.k);
    cfg.activation = a.activation.into();
    if cfg.activation == Activation::Relu {
        cfg.l1_coef = 1.0;
    }
    // Not seed 0: Sae::init(cfg, 0) draws its decoder rows from that stream, and the batch would
    // be those rows (each input parallel to one latent).
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_da7a);
    let x: Vec<f32> = (0..a.batch * a.d_in)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    cfg.multi_topk = a.multi_topk;
    let train = TrainConfig {
        dead_tokens: a.dead_tokens,
        ..TrainConfig::default()
    };
    let mut tr = Trainer::new(Sae::init(cfg, 0)?, train);
    let (secs, last) = match a.device.select()? {
        None => pool.install(|| time_steps(a.warmup, a.steps, || Ok(tr.train_step(&x))))?,
        Some(device) => {
            let mut dev = DeviceTrainer::from_trainer(&tr, &device)?;
            let x = candle_core::Tensor::from_slice(&x, (a.batch, a.d_in), &device)?;
            pool.install(|| {
                time_steps(a.warmup, a.steps, || {
                    let s = dev.train_step_on(&x)?;
                    device.synchronize()?;
                    Ok(s)
                })
            })?
        }
    };
    let tok_s = (a.steps * a.batch) as f64 / secs.max(1e-12);
    print(
        &json!({
            "tok_s": tok_s, "threads": threads, "seconds_per_step": secs / a.steps.max(1) as f64,
            "device": a.device.name, "tf32": a.device.tf32,
            "fvu": last.fvu, "l0": last.l0, "loss": last.loss, "auxk_loss": last.auxk_loss,
            "multi_topk_fvu": last.multi_topk_fvu, "dead_frac": last.dead_frac,
            "encoder_gflop_s": tok_s * 2.0 * (a.d_in * a.latents) as f64 / 1e9,
        }),
        json,
    );
    Ok(())
}

/// Runs `warmup` untimed steps, then times `steps`: (seconds, the last step's stats).
fn time_steps(
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> lantern_sae::Result<StepStats>,
) -> Result<(f64, StepStats)> {
    for _ in 0..warmup {
        step()?;
    }
    let t0 = Instant::now();
    let mut last = StepStats::default();
    for _ in 0..steps {
        last = step()?;
    }
    Ok((t0.elapsed().as_secs_f64(), last))
}

fn cache(a: CacheArgs, json: bool) -> Result<()> {
    let lm = runtime::load(&a.src.model, WeightMode::Inference)
        .with_context(|| format!("loading model {}", a.src.model))?;
    let points = parse_points(&a.src.hookpoints, lm.model.cfg.n_layers)?;
    let corpus = Corpus::open(&a.src.corpus)?;
    let n = a.tokens.div_ceil(a.ctx_len.saturating_sub(1).max(1)) * 102 / 100 + 1;
    let w = windows(&lm, &corpus, a.ctx_len, 0, Some(n))?;
    let bar = indicatif::ProgressBar::new(a.tokens as u64);
    let t0 = Instant::now();
    let info = lantern_sae::cache::write(
        &lm,
        &a.src.model,
        &a.src.corpus,
        &points,
        &w.windows,
        a.windows_per_shard,
        a.include_special,
        &a.out,
        |rows| {
            bar.set_position(rows as u64);
            if bar.is_hidden() {
                eprintln!("cached {rows} rows, {:.0} s", t0.elapsed().as_secs_f64());
            }
        },
    )?;
    bar.finish_and_clear();
    print(
        &json!({
            "out": a.out, "rows": info.rows(), "shards": info.shard_rows.len(),
            "windows": info.windows, "hookpoints": info.hookpoints, "widths": info.widths,
            "seconds": t0.elapsed().as_secs_f64(), "docs": w.docs,
            "skipped_not_utf8": w.skipped.not_utf8.len(),
        }),
        json,
    );
    Ok(())
}
