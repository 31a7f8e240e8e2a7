//! A zoo of small CNNs, clean and backdoored, trained with one recipe and the same number of
//! steps so that nothing but the backdoor separates them (Langosco et al. 2023).
//!
//! [`plan`] decides deterministically which models are poisoned, with which family, target
//! and seed; [`train_model`] trains one model; [`train_zoo`] trains many in parallel
//! (rayon, one model per task) and writes `DIR/model-NNNNN.safetensors` plus
//! `DIR/index.json` (an [`Index`]), rewritten after every finished model so that an
//! interrupted zoo resumes where it stopped. [`load_index`] and [`check_index`] read it back.
//!
//! # Seeds
//!
//! Each model has one seed (`mix(base_seed, index)`). From it, separate streams are derived
//! with [`mix`]: stream 0 draws the trigger and the poisoned indices, stream 1 initialises the
//! weights, stream 2 shuffles batches and draws augmentation shifts.
//!
//! # Clean models and ASR
//!
//! A clean model has no trigger, but its ASR is still measured so that clean and backdoored
//! ASRs can be compared: it is probed with a trigger of its `probe` family drawn from its own
//! seed (stream 0) and its own (random) target. [`plan`] assigns probe families by cycling
//! over the backdoor families in clean-model order, so the clean models' probes cover the
//! same families as the poisoned ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::atomic;
use crate::cnn::{
    clip_grad_norm, loss_and_grad, predict, triangle_lr, AdamW, CnnConfig, CnnError, Params,
};
use crate::data::{Dataset, Split};
use crate::poison::{
    asr_set, attack_success_rate, poison_in_place, poison_indices, random_target, PoisonError,
    PoisonSpec,
};
use crate::triggers::{mix, Family, Trigger, TriggerError};

/// File name of the zoo index inside the zoo folder.
pub const INDEX_FILE: &str = "index.json";

/// ASR at or above which a backdoor counts as having taken.
pub const BACKDOOR_THRESHOLD: f32 = 0.5;

/// Maximum shift in pixels of the [`Recipe::augment`] random translation.
pub const MAX_SHIFT: i64 = 2;

/// Errors from planning, training, writing or reading a zoo; each names its file.
#[derive(Debug, Error)]
pub enum ZooError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The index file is not valid JSON for an [`Index`].
    #[error("{path}: bad zoo index: {source}")]
    Json {
        /// The index file.
        path: PathBuf,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// The index names a model file that does not exist.
    #[error("{index}: model file {file} is missing")]
    MissingModel {
        /// The index file.
        index: PathBuf,
        /// The missing model file.
        file: PathBuf,
    },
    /// An existing index was written for another data set, config or recipe.
    #[error("{path}: existing zoo index has a different {what}; use another folder")]
    Mismatch {
        /// The index file.
        path: PathBuf,
        /// Which part differs.
        what: &'static str,
    },
    /// The recipe, config or data cannot be used together.
    #[error("bad zoo setup: {0}")]
    BadSetup(String),
    /// Building or saving a CNN failed.
    #[error(transparent)]
    Cnn(#[from] CnnError),
    /// Poisoning failed.
    #[error(transparent)]
    Poison(#[from] PoisonError),
    /// Drawing or applying a trigger failed.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
}

/// How every model of a zoo is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Passes over the (poisoned) training set.
    pub epochs: usize,
    /// Images per step; the last batch of an epoch may be smaller.
    pub batch: usize,
    /// Peak learning rate of the triangle schedule.
    pub peak_lr: f32,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip.
    pub clip: f32,
    /// Random shift of every training image by up to [`MAX_SHIFT`] pixels in each direction
    /// with zero padding (a cheap random crop), drawn per image per step.
    pub augment: bool,
    /// Train on only the first N training images (all when `None`).
    pub train_subset: Option<usize>,
    /// Evaluate on only the first N test images (all when `None`).
    pub test_subset: Option<usize>,
}

impl Default for Recipe {
    /// Fashion-MNIST at small scale: 3 epochs at batch 128, peak LR 0.01 (AdamW with a
    /// triangle schedule trains these LayerNorm CNNs stably at 1e-2), the paper's weight
    /// decay 1e-3 and gradient clip 5, shift augmentation on, full train and test sets.
    fn default() -> Self {
        Self {
            epochs: 3,
            batch: 128,
            peak_lr: 0.01,
            weight_decay: 1e-3,
            clip: 5.0,
            augment: true,
            train_subset: None,
            test_subset: None,
        }
    }
}

impl Recipe {
    /// Checks that the recipe can train a model.
    pub fn validate(&self) -> Result<(), ZooError> {
        let bad = |m: &str| Err(ZooError::BadSetup(m.to_string()));
        if self.epochs == 0 || self.batch == 0 {
            return bad("epochs and batch must be positive");
        }
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return bad("peak_lr must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay must be a non-negative number");
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad("clip must be a positive number");
        }
        if self.train_subset == Some(0) || self.test_subset == Some(0) {
            return bad("train_subset and test_subset must be positive");
        }
        Ok(())
    }
}

/// What one model of the zoo is: clean or poisoned with a family, its target and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Position in the zoo; names the file `model-{index:05}.safetensors`.
    pub index: usize,
    /// The model's seed (trigger, poison indices, init, shuffling).
    pub seed: u64,
    /// The backdoor family, `None` for a clean model.
    pub family: Option<Family>,
    /// The family whose trigger measures ASR: the model's own family when poisoned, a
    /// cycled backdoor family when clean.
    pub probe: Family,
    /// Target label of the backdoor (of the probe for clean models).
    pub target: u8,
    /// Fraction of the training set poisoned (0 for clean models).
    pub poison_rate: f32,
}

/// Plans a zoo of `n_models`: `round(poisoned_frac · n_models)` of them (chosen by a seeded
/// shuffle) are poisoned at `poison_rate`, with `families` cycled over the poisoned models
/// in index order; clean models get probe families cycled likewise. Every model gets seed
/// `mix(base_seed, index)` and a target uniform over `classes`. With no families, every
/// model is clean and probed with [`Family::Corner`]. Deterministic in all arguments.
pub fn plan(
    n_models: usize,
    poisoned_frac: f32,
    families: &[Family],
    poison_rate: f32,
    base_seed: u64,
    classes: u8,
) -> Vec<ModelSpec> {
    let frac = if poisoned_frac.is_finite() {
        poisoned_frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let n_poisoned = if families.is_empty() {
        0
    } else {
        ((frac as f64 * n_models as f64).round() as usize).min(n_models)
    };
    let mut order: Vec<usize> = (0..n_models).collect();
    order.shuffle(&mut StdRng::seed_from_u64(mix(base_seed, u64::MAX)));
    let mut poisoned = vec![false; n_models];
    order[..n_poisoned].iter().for_each(|&i| poisoned[i] = true);
    let cycle = |k: usize| families.get(k % families.len().max(1)).copied();
    let (mut n_bad, mut n_clean) = (0, 0);
    (0..n_models)
        .map(|index| {
            let seed = mix(base_seed, index as u64);
            let mut rng = StdRng::seed_from_u64(mix(seed, 3));
            let target = random_target(&mut rng, classes.max(1)).unwrap_or(0);
            let (family, probe, rate) = if poisoned[index] {
                n_bad += 1;
                let f = cycle(n_bad - 1).unwrap_or(Family::Corner);
                (Some(f), f, poison_rate)
            } else {
                n_clean += 1;
                (None, cycle(n_clean - 1).unwrap_or(Family::Corner), 0.0)
            };
            ModelSpec {
                index,
                seed,
                family,
                probe,
                target,
                poison_rate: rate,
            }
        })
        .collect()
}

/// One trained model as recorded in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the zoo.
    pub index: usize,
    /// Model file name, relative to the zoo folder.
    pub file: String,
    /// `"clean"` or the backdoor family's name.
    pub family: String,
    /// Backdoor target label (probe target for clean models).
    pub target: u8,
    /// Fraction of the training set poisoned.
    pub poison_rate: f32,
    /// The model's seed.
    pub seed: u64,
    /// The backdoor trigger (`None` for clean models).
    pub trigger: Option<Trigger>,
    /// Accuracy on the clean test set.
    pub clean_acc: f32,
    /// Fraction of non-target test images stamped with the (probe) trigger that the model
    /// classifies as the target.
    pub asr: f32,
    /// Family of the trigger the ASR was measured with.
    pub probe_family: String,
    /// For poisoned models `asr >= BACKDOOR_THRESHOLD`; always true for clean models.
    pub backdoor_took: bool,
}

/// The zoo's `index.json`: how it was trained and every finished model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Data set name (e.g. `fashion-mnist`).
    pub dataset: String,
    /// Shape of every CNN.
    pub config: CnnConfig,
    /// How every CNN was trained.
    pub recipe: Recipe,
    /// Finished models, sorted by index.
    pub models: Vec<Entry>,
}

/// File name of model `index` inside the zoo folder.
pub fn model_file_name(index: usize) -> String {
    format!("model-{index:05}.safetensors")
}

/// Checks that the config fits the data and every label is a valid class.
fn check_setup(data: &Split, cfg: &CnnConfig) -> Result<(), ZooError> {
    cfg.validate()?;
    for d in [&data.train, &data.test] {
        if (d.channels, d.height, d.width) != (cfg.in_channels, cfg.height, cfg.width) {
            return Err(ZooError::BadSetup(format!(
                "data images are {}x{}x{}, config wants {}x{}x{}",
                d.channels, d.height, d.width, cfg.in_channels, cfg.height, cfg.width
            )));
        }
        if d.is_empty() || d.labels.iter().any(|&l| l as usize >= cfg.classes) {
            return Err(ZooError::BadSetup(
                "data set empty or label >= config classes".into(),
            ));
        }
    }
    Ok(())
}

/// The first `n` images of `d` (all when `None` or `n >= len`).
fn head(d: &Dataset, n: Option<usize>) -> Dataset {
    match n {
        Some(n) if n < d.len() => d.split(n).0,
        _ => d.clone(),
    }
}

/// The trigger of `family` for this model, drawn from its seed (stream 0).
fn draw_trigger(
    spec: &ModelSpec,
    family: Family,
    cfg: &CnnConfig,
) -> Result<(Trigger, StdRng), ZooError> {
    let mut rng = StdRng::seed_from_u64(mix(spec.seed, 0));
    let t = Trigger::draw(family, cfg.in_channels, cfg.height, cfg.width, &mut rng)?;
    Ok((t, rng))
}

/// Shifts one `C×H×W` image by `(dy, dx)` pixels, filling uncovered pixels with zero.
fn shift_image(src: &[f32], dst: &mut [f32], c: usize, h: usize, w: usize, dy: i64, dx: i64) {
    dst.fill(0.0);
    for ch in 0..c {
        for y in 0..h {
            let sy = y as i64 - dy;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for x in 0..w {
                let sx = x as i64 - dx;
                if sx >= 0 && sx < w as i64 {
                    dst[(ch * h + y) * w + x] = src[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
}

/// Gathers the images and labels at `idx`, shifted randomly when `augment` is on.
fn gather_batch(
    d: &Dataset,
    idx: &[usize],
    augment: bool,
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<u8>) {
    let p = d.pixels_per_image();
    let mut images = vec![0.0; idx.len() * p];
    for (k, &i) in idx.iter().enumerate() {
        let dst = &mut images[k * p..(k + 1) * p];
        if augment {
            let dy = rng.gen_range(-MAX_SHIFT..=MAX_SHIFT);
            let dx = rng.gen_range(-MAX_SHIFT..=MAX_SHIFT);
            shift_image(d.image(i), dst, d.channels, d.height, d.width, dy, dx);
        } else {
            dst.copy_from_slice(d.image(i));
        }
    }
    (images, idx.iter().map(|&i| d.labels[i]).collect())
}

/// Trains a fresh CNN on `train` with the recipe (seeded init and shuffling).
fn fit(train: &Dataset, cfg: &CnnConfig, recipe: &Recipe, seed: u64) -> Params {
    let mut params = Params::init(cfg, &mut StdRng::seed_from_u64(mix(seed, 1)));
    let mut rng = StdRng::seed_from_u64(mix(seed, 2));
    let mut opt = AdamW::new(recipe.peak_lr);
    opt.weight_decay = recipe.weight_decay;
    let per_epoch = train.len().div_ceil(recipe.batch);
    let total = per_epoch * recipe.epochs;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0;
    for _ in 0..recipe.epochs {
        order.shuffle(&mut rng);
        for idx in order.chunks(recipe.batch) {
            let (images, labels) = gather_batch(train, idx, recipe.augment, &mut rng);
            let (_, mut grads) = loss_and_grad(&params, cfg, &images, &labels, idx.len());
            clip_grad_norm(&mut grads, recipe.clip);
            opt.step(
                &mut params,
                &grads,
                triangle_lr(step, total, recipe.peak_lr),
            );
            step += 1;
        }
    }
    params
}

/// Predictions in chunks (bounded memory).
fn predict_all(params: &Params, cfg: &CnnConfig, images: &[f32]) -> Vec<u8> {
    let p = cfg.image_len();
    images
        .chunks(512 * p)
        .flat_map(|c| predict(params, cfg, c, c.len() / p))
        .collect()
}

/// Accuracy of `params` on `test`.
pub fn clean_accuracy(params: &Params, cfg: &CnnConfig, test: &Dataset) -> f32 {
    if test.is_empty() {
        return 0.0;
    }
    let pred = predict_all(params, cfg, &test.images);
    pred.iter()
        .zip(&test.labels)
        .filter(|(a, b)| a == b)
        .count() as f32
        / test.len() as f32
}

/// ASR of `params` for `trigger` and `target` on `test`: the fraction of non-target test
/// images, stamped with the trigger, classified as the target.
pub fn measure_asr(
    params: &Params,
    cfg: &CnnConfig,
    test: &Dataset,
    trigger: &Trigger,
    target: u8,
) -> Result<f32, ZooError> {
    let spec = PoisonSpec {
        trigger: trigger.clone(),
        target,
        rate: 0.0,
    };
    let (images, _) = asr_set(&test.images, &test.labels, test.pixels_per_image(), &spec)?;
    Ok(attack_success_rate(
        &predict_all(params, cfg, &images),
        target,
    ))
}

/// Trains one model of the zoo: poisons a copy of the training set (subset per the recipe)
/// with the spec's trigger, trains it, and measures clean test accuracy and ASR (for clean
/// models, of the probe trigger). The returned entry's `file` is [`model_file_name`].
pub fn train_model(
    spec: &ModelSpec,
    data: &Split,
    cfg: &CnnConfig,
    recipe: &Recipe,
) -> Result<(Params, Entry), ZooError> {
    recipe.validate()?;
    check_setup(data, cfg)?;
    if spec.target as usize >= cfg.classes {
        return Err(ZooError::BadSetup(format!(
            "target {} >= classes",
            spec.target
        )));
    }
    let mut train = head(&data.train, recipe.train_subset);
    let test = head(&data.test, recipe.test_subset);
    let (trigger, mut rng) = draw_trigger(spec, spec.family.unwrap_or(spec.probe), cfg)?;
    if spec.family.is_some() {
        let ps = PoisonSpec {
            trigger: trigger.clone(),
            target: spec.target,
            rate: spec.poison_rate,
        };
        let idx = poison_indices(&train.labels, &ps, &mut rng)?;
        let p = train.pixels_per_image();
        poison_in_place(&mut train.images, &mut train.labels, p, &idx, &ps)?;
    }
    let params = fit(&train, cfg, recipe, spec.seed);
    let clean_acc = clean_accuracy(&params, cfg, &test);
    let asr = measure_asr(&params, cfg, &test, &trigger, spec.target)?;
    let entry = Entry {
        index: spec.index,
        file: model_file_name(spec.index),
        family: spec.family.map_or("clean", Family::name).to_string(),
        target: spec.target,
        poison_rate: spec.poison_rate,
        seed: spec.seed,
        trigger: spec.family.map(|_| trigger),
        clean_acc,
        asr,
        probe_family: spec.probe.name().to_string(),
        backdoor_took: spec.family.is_none() || asr >= BACKDOOR_THRESHOLD,
    };
    Ok((params, entry))
}

/// An io error naming `path`.
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ZooError + '_ {
    move |source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `ZooError::Io` for the atomic writers.
fn zoo_io(path: PathBuf, source: std::io::Error) -> ZooError {
    ZooError::Io { path, source }
}

/// Saves params to `path` atomically (temporary file, then rename).
fn save_model_atomic(params: &Params, path: &Path) -> Result<(), ZooError> {
    atomic::replace_with(path, |tmp| Ok(params.save_safetensors(tmp)?), zoo_io)
}

/// Writes `DIR/index.json` atomically.
pub fn write_index(dir: &Path, index: &Index) -> Result<(), ZooError> {
    let path = dir.join(INDEX_FILE);
    let json = serde_json::to_vec_pretty(index).map_err(|source| ZooError::Json {
        path: path.clone(),
        source,
    })?;
    atomic::write_atomic(&path, &json, zoo_io)
}

/// Reads `DIR/index.json`.
pub fn load_index(dir: &Path) -> Result<Index, ZooError> {
    let path = dir.join(INDEX_FILE);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| ZooError::Json { path, source })
}

/// Reads `DIR/index.json` and checks that every model file it names exists; a missing one
/// is a [`ZooError::MissingModel`] naming it.
pub fn check_index(dir: &Path) -> Result<Index, ZooError> {
    let index = load_index(dir)?;
    for e in &index.models {
        let file = dir.join(&e.file);
        if !file.is_file() {
            return Err(ZooError::MissingModel {
                index: dir.join(INDEX_FILE),
                file,
            });
        }
    }
    Ok(index)
}

/// Loads the models at `positions` (into `index.models`) from zoo folder `dir`, in parallel,
/// in the order given. A file that is missing or holds another architecture than
/// `index.config` is an error naming it.
pub fn load_models(
    dir: &Path,
    index: &Index,
    positions: &[usize],
) -> Result<Vec<Params>, ZooError> {
    positions
        .par_iter()
        .map(|&i| {
            let path = dir.join(&index.models[i].file);
            Ok(Params::load_safetensors(&index.config, &path)?)
        })
        .collect()
}

/// The existing index's finished entries whose files exist, keyed by model index; an
/// existing index for another data set, config or recipe is an error.
fn resume_entries(
    dir: &Path,
    dataset: &str,
    cfg: &CnnConfig,
    recipe: &Recipe,
) -> Result<BTreeMap<usize, Entry>, ZooError> {
    let path = dir.join(INDEX_FILE);
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let old = load_index(dir)?;
    let mismatch = |what| {
        Err(ZooError::Mismatch {
            path: path.clone(),
            what,
        })
    };
    if old.dataset != dataset {
        return mismatch("dataset");
    }
    if &old.config != cfg {
        return mismatch("CNN config");
    }
    if &old.recipe != recipe {
        return mismatch("recipe");
    }
    Ok(old
        .models
        .into_iter()
        .filter(|e| dir.join(&e.file).is_file())
        .map(|e| (e.index, e))
        .collect())
}

/// Trains every spec not already finished in `dir` (file and index entry both present),
/// models in parallel on the rayon pool, one model per task. Each model is saved as
/// `DIR/model-NNNNN.safetensors` atomically and the index rewritten after each (under a
/// mutex). `progress(done, total)` is called after each finished model (skipped ones count
/// as done up front). Returns the final index, models sorted by index.
///
/// Parallelism: the CNN's per-sample rayon loops nest inside the per-model tasks and share
/// the same pool, so with as many models as cores each core mostly trains its own model
/// while idle cores steal samples from the others.
pub fn train_zoo(
    dir: &Path,
    dataset: &str,
    specs: &[ModelSpec],
    data: &Split,
    cfg: &CnnConfig,
    recipe: &Recipe,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<Index, ZooError> {
    recipe.validate()?;
    check_setup(data, cfg)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let done = resume_entries(dir, dataset, cfg, recipe)?;
    let todo: Vec<&ModelSpec> = specs
        .iter()
        .filter(|s| !done.contains_key(&s.index))
        .collect();
    let total = specs.len();
    let counter = AtomicUsize::new(total - todo.len());
    let state = Mutex::new(Index {
        dataset: dataset.to_string(),
        config: cfg.clone(),
        recipe: recipe.clone(),
        models: done.into_values().collect(),
    });
    progress(counter.load(Ordering::SeqCst), total);
    todo.par_iter().try_for_each(|spec| {
        let (params, entry) = train_model(spec, data, cfg, recipe)?;
        save_model_atomic(&params, &dir.join(&entry.file))?;
        let mut index = state.lock().unwrap_or_else(|p| p.into_inner());
        index.models.push(entry);
        index.models.sort_by_key(|e| e.index);
        write_index(dir, &index)?;
        drop(index);
        progress(counter.fetch_add(1, Ordering::SeqCst) + 1, total);
        Ok::<(), ZooError>(())
    })?;
    let index = state.into_inner().unwrap_or_else(|p| p.into_inner());
    write_index(dir, &index)?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_cycles_families() {
        let fams = [Family::Corner, Family::Pixel];
        let a = plan(10, 0.5, &fams, 0.1, 7, 10);
        assert_eq!(a, plan(10, 0.5, &fams, 0.1, 7, 10));
        let bad: Vec<_> = a.iter().filter_map(|s| s.family).collect();
        assert_eq!(bad.len(), 5);
        assert_eq!(
            &bad[..4],
            &[Family::Corner, Family::Pixel, Family::Corner, Family::Pixel]
        );
        assert!(a.iter().all(|s| s.target < 10));
        assert!(a
            .iter()
            .filter(|s| s.family.is_none())
            .all(|s| s.poison_rate == 0.0));
        assert!(plan(4, 1.0, &[], 0.1, 1, 10)
            .iter()
            .all(|s| s.family.is_none()));
    }

    #[test]
    fn shift_moves_and_pads() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut dst = vec![0.0; 9];
        shift_image(&src, &mut dst, 1, 3, 3, 1, 1);
        assert_eq!(dst, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 3.0, 4.0]);
    }

    #[test]
    fn bad_recipe_is_an_error() {
        let r = Recipe {
            batch: 0,
            ..Recipe::default()
        };
        assert!(r.validate().is_err());
    }
}
