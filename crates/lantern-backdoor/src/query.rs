//! The MNTD-style query baseline (Xu et al. 2021, "Detecting AI Trojans Using Meta Neural
//! Analysis", without the jumbo learning).
//!
//! A [`QueryDetector`] holds `K` learned input images (the *queries*) and a small MLP. A base
//! CNN is judged by running it on the queries, concatenating its `K` softmax outputs
//! (`K * classes` values) and feeding them to the MLP, which gives one logit for
//! "backdoored". Queries and MLP are trained jointly with binary cross-entropy through a
//! differentiable candle version of the base CNN ([`cnn_logits`]); the base models' weights
//! are constants, only the queries and the MLP learn.
//!
//! The base CNN enters the candle graph as one custom op that runs the plain-Rust CNN
//! ([`crate::cnn::forward`]) on a whole minibatch of models `[M, K, C, H, W]` in parallel,
//! with the hand-written input gradient (`cnn::input_grad`) as its backward: that reuses the
//! tested CNN kernels and avoids candle's large im2col temporaries. A version
//! built from candle ops (conv2d, LayerNorm by hand, pooling by reductions) lives in the
//! tests as an independent reference for the op's values and image gradients.

use crate::cnn::{self, CnnConfig, CnnError, Params};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Models per forward pass in [`QueryDetector::score_all`] (bounds the memory used).
const SCORE_CHUNK: usize = 64;
/// Metadata key holding the CNN config (JSON) in a saved detector.
const META_CONFIG: &str = "cnn_config";
/// Tensor names of a saved detector.
const T_QUERIES: &str = "queries";
const T_W1: &str = "meta.w1";
const T_B1: &str = "meta.b1";
const T_W2: &str = "meta.w2";
const T_B2: &str = "meta.b2";

/// Hyper-parameters of [`QueryDetector::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    /// Number `K` of learned query images (MNTD uses 10).
    pub queries: usize,
    /// Hidden units of the meta-classifier MLP.
    pub hidden: usize,
    /// Passes over the training models.
    pub epochs: usize,
    /// Models per optimiser step.
    pub batch: usize,
    /// AdamW learning rate (queries and MLP; no weight decay).
    pub lr: f64,
    /// Seed of the query/MLP initialisation and the minibatch shuffling.
    pub seed: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            queries: 10,
            hidden: 64,
            epochs: 20,
            batch: 32,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// Errors from fitting, scoring, saving or loading a [`QueryDetector`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A candle tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The CNN config is not usable.
    #[error(transparent)]
    Cnn(#[from] CnnError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A saved detector is malformed (not safetensors, missing or misshaped tensor, …).
    #[error("{path}: not a valid query detector: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A saved detector was trained for another CNN config than the one given.
    #[error("{path}: detector was trained for CNN config {stored}, but {expected} was given")]
    ConfigMismatch {
        /// The file.
        path: PathBuf,
        /// The config stored in the file (JSON).
        stored: String,
        /// The config given to `load` (JSON).
        expected: String,
    },
    /// Training needs at least one clean and one backdoored model.
    #[error(
        "training set needs both classes, got {clean} clean and {backdoored} backdoored models"
    )]
    OneClass {
        /// Clean models given.
        clean: usize,
        /// Backdoored models given.
        backdoored: usize,
    },
    /// `models` and `labels` differ in length.
    #[error("{models} models but {labels} labels")]
    LabelCount {
        /// Models given.
        models: usize,
        /// Labels given.
        labels: usize,
    },
    /// A [`QueryConfig`] field that must be positive is zero.
    #[error("bad query config: {0}")]
    Config(&'static str),
    /// A model or an image batch does not have the shape the CNN config says.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Result alias of this module.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Checks that every model has the tensor shapes of `cfg`.
fn check_models(models: &[Params], cfg: &CnnConfig) -> Result<()> {
    cfg.validate()?;
    let want = Params::zeros(cfg);
    for (i, m) in models.iter().enumerate() {
        if m.shapes() != want.shapes() {
            return Err(QueryError::Shape(format!(
                "model {i} does not have the tensor shapes of the CNN config"
            )));
        }
    }
    Ok(())
}

/// The plain-Rust CNN as one candle op: images `[M, K, C, H, W]` through models
/// `models[ids[0]], …, models[ids[M-1]]` (model `m` sees images `[m, ..]`) to logits
/// `[M, K, classes]`. Its backward is the input gradient only (`cnn::input_grad`);
/// the CNN weights are constants. Images run in parallel (rayon).
#[derive(Clone)]
struct CnnOp {
    models: Arc<Vec<Params>>,
    ids: Vec<usize>,
    cfg: CnnConfig,
}

impl CnnOp {
    /// Applies the op to `x [M, K, C, H, W]`.
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1(self)?)
    }
}

/// The f32 values of a contiguous CPU tensor's storage.
fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("cnn op needs a contiguous f32 tensor"),
    }
}

impl candle_core::CustomOp1 for CnnOp {
    fn name(&self) -> &'static str {
        "lantern-cnn"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (m, k, ..) = layout.shape().dims5()?;
        let x = f32_slice(storage, layout)?;
        let per_model = k * self.cfg.image_len();
        let rows: Vec<Vec<f32>> = (0..m)
            .into_par_iter()
            .map(|i| {
                let imgs = &x[i * per_model..(i + 1) * per_model];
                cnn::forward(&self.models[self.ids[i]], &self.cfg, imgs, k).data
            })
            .collect();
        let out = candle_core::CpuStorage::F32(rows.concat());
        Ok((out, (m, k, self.cfg.classes).into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let k = arg.dim(1)?;
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let (img, classes) = (self.cfg.image_len(), self.cfg.classes);
        let rows: Vec<Vec<f32>> = (0..x.len() / img)
            .into_par_iter()
            .map(|i| {
                let p = &self.models[self.ids[i / k]];
                let dz = &g[i * classes..(i + 1) * classes];
                cnn::input_grad(p, &self.cfg, &x[i * img..(i + 1) * img], dz)
            })
            .collect();
        Ok(Some(Tensor::from_vec(
            rows.concat(),
            arg.shape(),
            arg.device(),
        )?))
    }
}

/// Candle forward pass of one CNN: images `[N, C, H, W]` to logits `[N, classes]`.
///
/// Matches [`crate::cnn::forward`] up to float rounding and is differentiable with respect
/// to `images` (the model's parameters enter as constants), which is what lets
/// [`QueryDetector::fit`] optimise the query images.
pub fn cnn_logits(params: &Params, cfg: &CnnConfig, images: &Tensor) -> Result<Tensor> {
    check_models(std::slice::from_ref(params), cfg)?;
    let (_, c, h, w) = images.dims4()?;
    if (c, h, w) != (cfg.in_channels, cfg.height, cfg.width) {
        return Err(QueryError::Shape(format!(
            "images are {c}x{h}x{w}, config needs {}x{}x{}",
            cfg.in_channels, cfg.height, cfg.width
        )));
    }
    let op = CnnOp {
        models: Arc::new(vec![params.clone()]),
        ids: vec![0],
        cfg: cfg.clone(),
    };
    Ok(op.apply(&images.unsqueeze(0)?)?.squeeze(0)?)
}

/// The learned part of a detector: queries `[K, C, H, W]` and the MLP
/// `w1 [hidden, K*classes]`, `b1 [hidden]`, `w2 [1, hidden]`, `b2 [1]`.
struct Learned {
    queries: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Learned {
    /// Meta logits `[M]` for the models that `op` runs.
    fn logits(&self, op: CnnOp) -> Result<Tensor> {
        let m = op.ids.len();
        let (k, c, h, w) = self.queries.dims4()?;
        let x = self
            .queries
            .unsqueeze(0)?
            .broadcast_as((m, k, c, h, w))?
            .contiguous()?;
        let probs = candle_nn::ops::softmax(&op.apply(&x)?, D::Minus1)?;
        let feats = probs.reshape((m, ()))?;
        let hidden = feats
            .matmul(&self.w1.t()?)?
            .broadcast_add(&self.b1)?
            .relu()?;
        let out = hidden.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)?;
        Ok(out.squeeze(1)?)
    }
}

/// Numerically stable mean binary cross-entropy of `logits` against 0/1 `targets`:
/// `relu(x) - x*y + log(1 + exp(-|x|))`.
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let loss = ((logits.relu()? - (logits * targets)?)? + softplus)?;
    Ok(loss.mean_all()?)
}

/// A variable of `shape` drawn uniform in `[lo, hi)` from `rng`.
fn uniform(rng: &mut StdRng, shape: &[usize], lo: f32, hi: f32) -> Result<Var> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Ok(Var::from_vec(data, shape, &Device::Cpu)?)
}

/// Initial queries (uniform in `[0, 1]`) and MLP (uniform `±1/sqrt(fan_in)`, PyTorch's
/// linear-layer default), in the order queries, `w1`, `b1`, `w2`, `b2`.
fn init_vars(rng: &mut StdRng, cfg: &CnnConfig, qc: &QueryConfig) -> Result<[Var; 5]> {
    let feats = qc.queries * cfg.classes;
    let img = [qc.queries, cfg.in_channels, cfg.height, cfg.width];
    let b1 = 1.0 / (feats as f32).sqrt();
    let b2 = 1.0 / (qc.hidden as f32).sqrt();
    Ok([
        uniform(rng, &img, 0.0, 1.0)?,
        uniform(rng, &[qc.hidden, feats], -b1, b1)?,
        uniform(rng, &[qc.hidden], -b1, b1)?,
        uniform(rng, &[1, qc.hidden], -b2, b2)?,
        uniform(rng, &[1], -b2, b2)?,
    ])
}

/// An MNTD-style backdoor detector: learned query images plus a meta-classifier MLP on the
/// base model's softmax outputs for those queries.
pub struct QueryDetector {
    cfg: CnnConfig,
    learned: Learned,
}

impl QueryDetector {
    /// Trains queries and meta-classifier on `models` with `labels` (true = backdoored).
    /// Keeps one copy of the models' parameters for the duration of the fit.
    ///
    /// Queries start uniform in `[0, 1]` and are clamped back to that data range after every
    /// AdamW step. Minibatches are drawn in a seeded shuffle, so the result is deterministic
    /// for a given `qc.seed`. `progress(epoch, mean_loss)` is called after each epoch.
    pub fn fit(
        models: &[Params],
        labels: &[bool],
        cfg: &CnnConfig,
        qc: &QueryConfig,
        mut progress: impl FnMut(usize, f64),
    ) -> Result<Self> {
        if qc.queries == 0 || qc.hidden == 0 || qc.batch == 0 {
            return Err(QueryError::Config(
                "queries, hidden and batch must be positive",
            ));
        }
        check_training_set(models, labels)?;
        check_models(models, cfg)?;
        let op = CnnOp {
            models: Arc::new(models.to_vec()),
            ids: Vec::new(),
            cfg: cfg.clone(),
        };
        let mut rng = StdRng::seed_from_u64(qc.seed);
        let vars = init_vars(&mut rng, cfg, qc)?;
        let learned = learned_of(&vars);
        let params = ParamsAdamW {
            lr: qc.lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vars.to_vec(), params)?;
        let mut order: Vec<usize> = (0..models.len()).collect();
        for epoch in 0..qc.epochs {
            order.shuffle(&mut rng);
            let mut total = 0.0;
            for chunk in order.chunks(qc.batch) {
                let op = CnnOp {
                    ids: chunk.to_vec(),
                    ..op.clone()
                };
                let y: Vec<f32> = chunk
                    .iter()
                    .map(|&i| f32::from(u8::from(labels[i])))
                    .collect();
                let y = Tensor::new(y.as_slice(), &Device::Cpu)?;
                let loss = bce_with_logits(&learned.logits(op)?, &y)?;
                opt.backward_step(&loss)?;
                vars[0].set(&vars[0].as_tensor().clamp(0.0f32, 1.0f32)?)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            }
            progress(epoch, total / models.len() as f64);
        }
        let learned = learned_of(&vars);
        let learned = Learned {
            queries: learned.queries.detach(),
            w1: learned.w1.detach(),
            b1: learned.b1.detach(),
            w2: learned.w2.detach(),
            b2: learned.b2.detach(),
        };
        Ok(Self {
            cfg: cfg.clone(),
            learned,
        })
    }

    /// P(backdoored) in `[0, 1]` for each model, in order.
    pub fn score_all(&self, models: &[Params]) -> Result<Vec<f64>> {
        check_models(models, &self.cfg)?;
        let mut scores = Vec::with_capacity(models.len());
        for chunk in models.chunks(SCORE_CHUNK) {
            let op = CnnOp {
                models: Arc::new(chunk.to_vec()),
                ids: (0..chunk.len()).collect(),
                cfg: self.cfg.clone(),
            };
            let p = candle_nn::ops::sigmoid(&self.learned.logits(op)?)?;
            scores.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
        }
        Ok(scores)
    }

    /// The CNN config the detector was trained for.
    pub fn cnn_config(&self) -> &CnnConfig {
        &self.cfg
    }

    /// The learned query images, `[K, C, H, W]` in `[0, 1]`.
    pub fn queries(&self) -> &Tensor {
        &self.learned.queries
    }

    /// Writes queries and MLP to one safetensors file, with the CNN config as JSON in the
    /// metadata. The file is written to a temporary name in the same folder and renamed, so
    /// a crash never leaves a half-written detector at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let l = &self.learned;
        let named = [
            (T_QUERIES, &l.queries),
            (T_W1, &l.w1),
            (T_B1, &l.b1),
            (T_W2, &l.w2),
            (T_B2, &l.b2),
        ];
        let mut data = Vec::with_capacity(named.len());
        for (name, t) in named {
            let bytes: Vec<u8> = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            data.push((name, t.dims().to_vec(), bytes));
        }
        let fmt = |message: String| QueryError::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut views = Vec::with_capacity(data.len());
        for (name, shape, bytes) in &data {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes);
            views.push((*name, view.map_err(|e| fmt(e.to_string()))?));
        }
        let json = serde_json::to_string(&self.cfg).map_err(|e| fmt(e.to_string()))?;
        let meta = HashMap::from([(META_CONFIG.to_string(), json)]);
        let out = safetensors::serialize(views, Some(meta)).map_err(|e| fmt(e.to_string()))?;
        crate::atomic::write_atomic(path, &out, |path, source| QueryError::Io { path, source })
    }

    /// Reads a detector written by [`QueryDetector::save`]; errors naming the file if it was
    /// trained for a CNN config other than `cfg` or is malformed.
    pub fn load(path: &Path, cfg: &CnnConfig) -> Result<Self> {
        cfg.validate()?;
        let fmt = |message: String| QueryError::Format {
            path: path.to_path_buf(),
            message,
        };
        let buf = std::fs::read(path).map_err(|source| QueryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, meta) = SafeTensors::read_metadata(&buf).map_err(|e| fmt(e.to_string()))?;
        let stored = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_CONFIG))
            .ok_or_else(|| fmt(format!("no `{META_CONFIG}` metadata")))?;
        let stored_cfg: CnnConfig = serde_json::from_str(stored).map_err(|e| fmt(e.to_string()))?;
        if &stored_cfg != cfg {
            return Err(QueryError::ConfigMismatch {
                path: path.to_path_buf(),
                stored: stored.clone(),
                expected: serde_json::to_string(cfg).map_err(|e| fmt(e.to_string()))?,
            });
        }
        let st = SafeTensors::deserialize(&buf).map_err(|e| fmt(e.to_string()))?;
        let get = |name: &str| read_tensor(&st, name).map_err(fmt);
        let learned = Learned {
            queries: get(T_QUERIES)?,
            w1: get(T_W1)?,
            b1: get(T_B1)?,
            w2: get(T_W2)?,
            b2: get(T_B2)?,
        };
        check_learned(&learned, cfg).map_err(fmt)?;
        Ok(Self {
            cfg: cfg.clone(),
            learned,
        })
    }
}

/// The learned tensors viewed from the optimiser's variables.
fn learned_of(vars: &[Var; 5]) -> Learned {
    Learned {
        queries: vars[0].as_tensor().clone(),
        w1: vars[1].as_tensor().clone(),
        b1: vars[2].as_tensor().clone(),
        w2: vars[3].as_tensor().clone(),
        b2: vars[4].as_tensor().clone(),
    }
}

/// Errors unless there is one label per model and both classes occur.
fn check_training_set(models: &[Params], labels: &[bool]) -> Result<()> {
    if models.len() != labels.len() {
        return Err(QueryError::LabelCount {
            models: models.len(),
            labels: labels.len(),
        });
    }
    let backdoored = labels.iter().filter(|&&l| l).count();
    let clean = labels.len() - backdoored;
    if backdoored == 0 || clean == 0 {
        return Err(QueryError::OneClass { clean, backdoored });
    }
    Ok(())
}

/// Checks that loaded tensors fit together and fit `cfg`.
fn check_learned(l: &Learned, cfg: &CnnConfig) -> std::result::Result<(), String> {
    let q = l.queries.dims();
    let bad = |what: &str| Err(format!("tensor shapes do not fit: {what}"));
    if q.len() != 4 || q[1..] != [cfg.in_channels, cfg.height, cfg.width] {
        return bad("queries are not [K, C, H, W] of the config");
    }
    let hidden = l.b1.dims().first().copied().unwrap_or(0);
    if l.w1.dims() != [hidden, q[0] * cfg.classes] || l.b1.dims() != [hidden] {
        return bad("first MLP layer");
    }
    if l.w2.dims() != [1, hidden] || l.b2.dims() != [1] {
        return bad("second MLP layer");
    }
    Ok(())
}

/// Reads F32 tensor `name` from a safetensors file.
fn read_tensor(st: &SafeTensors, name: &str) -> std::result::Result<Tensor, String> {
    let view = st
        .tensor(name)
        .map_err(|_| format!("missing tensor `{name}`"))?;
    if view.dtype() != Dtype::F32 {
        return Err(format!("tensor `{name}` is {:?}, not F32", view.dtype()));
    }
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_vec(data, view.shape(), &Device::Cpu).map_err(|e| e.to_string())
}

/// A zoo of `n` randomly initialised models (no training) in which every other model carries a
/// planted signal a detector can learn: the head bias of a random class raised by 5, so that
/// class dominates its outputs. Labels say which (`true`: "backdoored"). For tests and
/// benchmarks of the detectors' fitting, where real zoos would take minutes to train.
pub fn synthetic_zoo(cfg: &CnnConfig, n: usize, seed: u64) -> (Vec<Params>, Vec<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut models = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let mut p = Params::init(cfg, &mut rng);
        let bad = i % 2 == 0;
        if bad {
            let hb = p.tensors.len() - 1;
            let class = rng.gen_range(0..cfg.classes);
            p.tensors[hb][class] += 5.0;
        }
        models.push(p);
        labels.push(bad);
    }
    (models, labels)
}

#[cfg(test)]
mod tests;
