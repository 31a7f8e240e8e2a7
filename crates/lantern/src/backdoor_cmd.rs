//! `lantern backdoor ...`: the model zoo; `meta` commands live in [`crate::backdoor_meta`].

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_backdoor::cnn::CnnConfig;
use lantern_backdoor::triggers::Family;
use lantern_backdoor::zoo::{plan, train_zoo, Recipe};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BackdoorCmd {
    /// Train a zoo of small CNNs, clean and backdoored, with one recipe; DIR/index.json lists
    /// every model (family or clean, target, poison rate, seed, clean_acc, asr). Resumable.
    Zoo(ZooArgs),
    /// The weight-reading meta-model: `meta train`, `meta eval`.
    #[command(subcommand)]
    Meta(crate::backdoor_meta::MetaCmd),
}

#[derive(Args)]
pub struct ZooArgs {
    /// fashion-mnist, mnist-5k or cifar10:PATH.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// How many models.
    #[arg(long, default_value_t = 20)]
    models: usize,
    /// Share of backdoored models.
    #[arg(long, default_value_t = 0.5)]
    poisoned_frac: f32,
    /// Trigger families of the backdoored models, cycled (corner, border, center, pixel, noise,
    /// checkerboard, mask-a, mask-b).
    #[arg(
        long,
        default_value = "corner,center,noise,checkerboard,mask-a",
        value_delimiter = ','
    )]
    families: Vec<String>,
    /// Share of a backdoored model's training set that is poisoned.
    #[arg(long, default_value_t = 0.1)]
    poison_rate: f32,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Epochs per model.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Channel width of the first block (the next blocks double it).
    #[arg(long, default_value_t = 8)]
    width: usize,
    /// Number of conv blocks.
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    train_subset: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_subset: Option<usize>,
    /// Base seed of the plan.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random 2-pixel shifts while training.
    #[arg(long)]
    no_augment: bool,
}

pub fn run(cmd: BackdoorCmd, json: bool) -> Result<()> {
    match cmd {
        BackdoorCmd::Zoo(a) => zoo(a, json),
        BackdoorCmd::Meta(c) => crate::backdoor_meta::run(c, json),
    }
}

fn zoo(a: ZooArgs, json: bool) -> Result<()> {
    let start = Instant::now();
    if a.width == 0 || a.blocks == 0 {
        bail!("--width and --blocks must be at least 1");
    }
    let families: Vec<Family> = a
        .families
        .iter()
        .map(|f| f.trim().parse::<Family>())
        .collect::<Result<_, _>>()?;
    let data = lantern_backdoor::data::by_name(&a.dataset)
        .with_context(|| format!("loading {}", a.dataset))?;
    let cfg = CnnConfig {
        in_channels: data.train.channels,
        height: data.train.height,
        width: data.train.width,
        widths: (0..a.blocks).map(|b| a.width << b).collect(),
        classes: data.train.classes,
    };
    let recipe = Recipe {
        epochs: a.epochs,
        batch: a.batch,
        augment: !a.no_augment,
        train_subset: a.train_subset,
        test_subset: a.test_subset,
        ..Recipe::default()
    };
    let specs = plan(
        a.models,
        a.poisoned_frac,
        &families,
        a.poison_rate,
        a.seed,
        cfg.classes as u8,
    );
    let bar = ProgressBar::new(specs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} models {elapsed} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let index = train_zoo(
        &a.out,
        &a.dataset,
        &specs,
        &data,
        &cfg,
        &recipe,
        |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let mean = |v: Vec<f32>| {
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f32>() / v.len() as f32)
        }
    };
    let clean: Vec<_> = index
        .models
        .iter()
        .filter(|m| m.family == "clean")
        .collect();
    let backdoored: Vec<_> = index
        .models
        .iter()
        .filter(|m| m.family != "clean")
        .collect();
    let v = json!({
        "out": a.out.display().to_string(),
        "models": index.models.len(),
        "backdoored": backdoored.len(),
        "backdoor_took": backdoored.iter().filter(|m| m.backdoor_took).count(),
        "clean_acc_mean": mean(index.models.iter().map(|m| m.clean_acc).collect()),
        "asr_mean_backdoored": mean(backdoored.iter().map(|m| m.asr).collect()),
        "asr_mean_clean": mean(clean.iter().map(|m| m.asr).collect()),
        "seconds": start.elapsed().as_secs_f64(),
    });
    crate::output::print(&v, json);
    Ok(())
}
