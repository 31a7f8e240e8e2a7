//! What the commands need on top of the forward pass: resolving a model spec, per-token
//! cross-entropy, perplexity over long texts, batched forward of ragged sequences, and
//! KV-cached generation with temperature, top-p and a seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};

use crate::checkpoint::Checkpoint;
use crate::error::{LmError, Result};
use crate::hooks::Hooks;
use crate::model::{KvCache, LogitsFor, Model, WeightMode};
use crate::tokenizer::Tokenizer;

/// The model Lantern uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Turns a model spec (asset name, `.gguf` path, or Hugging Face folder) into a path, fetching
/// the asset on first use.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if lantern_assets::is_asset(spec) {
        return Ok(lantern_assets::fetch(spec)?);
    }
    Err(LmError::NotAModel(spec.to_string()))
}

/// A model with its tokenizer.
pub struct Lm {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
}

/// Loads a model and its tokenizer from a spec (see [`resolve_model`]).
pub fn load(spec: &str, mode: WeightMode) -> Result<Lm> {
    let path = resolve_model(spec)?;
    let ckpt = Checkpoint::open(&path)?;
    let tokenizer = match &ckpt {
        Checkpoint::Gguf(f) => Tokenizer::from_gguf(f)?,
        Checkpoint::HfFolder { dir, .. } => Tokenizer::from_file(&dir.join("tokenizer.json"))?,
    };
    let model = Model::load(&ckpt, mode)?;
    Ok(Lm {
        model,
        tokenizer,
        path,
    })
}

/// Runs one sequence and returns its logits `[seq, vocab]`.
pub fn logits(model: &Model, ids: &[u32]) -> Result<Tensor> {
    model.check_ids(ids)?;
    if ids.is_empty() {
        return Err(LmError::Input("no tokens to run".into()));
    }
    let t = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    let out = model
        .forward(&t, None, &mut Hooks::new(), LogitsFor::All)?
        .ok_or_else(|| LmError::Input("forward pass stopped early".into()))?;
    Ok(out.squeeze(0)?)
}

/// `ln Σ exp(row)`, in f64 around the row's maximum so long vocabularies lose no precision:
/// a log-probability is `row[i] - log_sum_exp(row)`.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    row.iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}

/// Next-token cross-entropy (nats) at each position `i` predicting `ids[i + 1]`, from logits
/// `[seq, vocab]`, computed on the host with [`log_sum_exp`].
pub fn token_ce(logits: &Tensor, ids: &[u32]) -> Result<Vec<f64>> {
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(ids.iter().skip(1))
        .map(|(row, &next)| log_sum_exp(row) - row[next as usize] as f64)
        .collect())
}

/// Perplexity of a token stream scored in consecutive windows of `ctx_len` tokens (each window
/// predicts its own tokens 1..n, as lm-evaluation-harness's rolling windows without overlap).
pub struct Perplexity {
    pub tokens: usize,
    pub mean_ce: f64,
}

/// Scores `ids` in windows of `ctx_len`, calling `progress` after each window.
pub fn perplexity(
    model: &Model,
    ids: &[u32],
    ctx_len: usize,
    mut progress: impl FnMut(usize),
) -> Result<Perplexity> {
    let ctx_len = ctx_len.clamp(2, model.cfg.ctx_len);
    let mut total = 0.0;
    let mut n = 0usize;
    for window in ids.chunks(ctx_len) {
        if window.len() < 2 {
            continue;
        }
        let l = logits(model, window)?;
        let ce = token_ce(&l, window)?;
        total += ce.iter().sum::<f64>();
        n += ce.len();
        progress(window.len());
    }
    if n == 0 {
        return Err(LmError::Input(
            "text too short: need at least 2 tokens".into(),
        ));
    }
    Ok(Perplexity {
        tokens: n,
        mean_ce: total / n as f64,
    })
}

/// Runs a batch of sequences of different lengths in one pass (right-padded with token 0) and
/// returns `[batch, max_len, vocab]` logits; positions past a row's length are padding.
pub fn forward_batch(
    model: &Model,
    seqs: &[Vec<u32>],
    hooks: &mut Hooks<'_>,
) -> Result<Option<Tensor>> {
    let ids = pad_batch(model, seqs)?;
    model.forward(&ids, None, hooks, LogitsFor::All)
}

/// Right-pads token sequences with 0 into a `[batch, max_len]` u32 tensor.
pub fn pad_batch(model: &Model, seqs: &[Vec<u32>]) -> Result<Tensor> {
    let max = seqs.iter().map(Vec::len).max().unwrap_or(0);
    if max == 0 {
        return Err(LmError::Input("empty batch".into()));
    }
    let mut flat = Vec::with_capacity(seqs.len() * max);
    for s in seqs {
        model.check_ids(s)?;
        flat.extend_from_slice(s);
        flat.resize(flat.len() + max - s.len(), 0);
    }
    Ok(Tensor::from_vec(flat, (seqs.len(), max), model.device())?)
}

/// Sampling settings for [`generate`].
#[derive(Debug, Clone)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: usize,
    /// Stop at any of these ids (the tokenizer's end tokens).
    pub stop_ids: Vec<u32>,
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub gen_seconds: f64,
}

impl Generation {
    /// Generated tokens per second, excluding the prompt.
    pub fn tok_s(&self) -> f64 {
        self.ids.len() as f64 / self.gen_seconds.max(1e-9)
    }

    /// The generated ids without the stop tokens (what a user sees).
    pub fn visible(&self, stop_ids: &[u32]) -> Vec<u32> {
        self.ids
            .iter()
            .copied()
            .filter(|i| !stop_ids.contains(i))
            .collect()
    }

    /// Prompt tokens processed per second.
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
}

/// Generates up to `s.max_tokens` tokens after `prompt` with a KV cache; `on_token` sees each
/// new id as it is produced (for streaming output).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    s: &Sampling,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    generate_with_logits(model, prompt, s, |id, _| on_token(id))
}

/// Like [`generate`], but `on_token` also sees the logits the token was drawn from (for
/// log-probabilities in an API response).
pub fn generate_with_logits(
    model: &Model,
    prompt: &[u32],
    s: &Sampling,
    mut on_token: impl FnMut(u32, &[f32]),
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(LmError::Input("empty prompt".into()));
    }
    model.check_ids(prompt)?;
    let total = prompt.len() + s.max_tokens;
    if prompt.len() > model.cfg.ctx_len {
        return Err(LmError::TooLong {
            len: prompt.len(),
            ctx: model.cfg.ctx_len,
        });
    }
    let mut cache = KvCache::new(&model.cfg, total.min(model.cfg.ctx_len));
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let start = Instant::now();
    let mut next_logits = step(model, prompt, &mut cache)?;
    let prompt_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < s.max_tokens && cache.len() < model.cfg.ctx_len {
        let id = sample(&next_logits, s, &mut rng);
        out.push(id);
        on_token(id, &next_logits);
        if s.stop_ids.contains(&id) || out.len() == s.max_tokens {
            break;
        }
        next_logits = step(model, &[id], &mut cache)?;
    }
    Ok(Generation {
        ids: out,
        prompt_tokens: prompt.len(),
        prompt_seconds,
        gen_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs `ids` through the model with `cache` and returns the last position's logits.
pub fn step(model: &Model, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
    let t = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    let l = model
        .forward(&t, Some(cache), &mut Hooks::new(), LogitsFor::Last)?
        .ok_or_else(|| LmError::Input("forward pass stopped early".into()))?;
    Ok(l.flatten_all()?.to_vec1::<f32>()?)
}

/// Picks the next token: argmax at temperature 0, else nucleus sampling.
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut impl Rng) -> u32 {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l as f64 - max) / s.temperature).exp()))
        .collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / z;
        if kept >= s.top_p {
            cut = i + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.gen::<f64>() * mass;
    for p in probs {
        r -= p.1;
        if r <= 0.0 {
            return p.0;
        }
    }
    probs[probs.len() - 1].0
}

/// Index of the largest logit (first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-softmax over the last dimension (a convenience for scoring code).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(logits, D::Minus1)?)
}
