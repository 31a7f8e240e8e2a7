//! TopK training on candle tensors, on any candle device: the GPU path.
//!
//! [`crate::train::Trainer`] is the CPU trainer, with its own kernels. [`DeviceTrainer`] takes
//! the same step (the same loss, gradients, Adam and decoder-row constraint, so the two agree to
//! rounding) as candle tensor operations: the encoder product is dense (cuBLAS on CUDA); the
//! top-k selection, the decode and the backward are the sparse kernels of
//! [`crate::sparse_ops`], which touch only the selected latents' rows, and Adam (with the
//! decoder rows' constraint) is one fused kernel per parameter. It runs on `Device::Cpu` too,
//! which is how the tests check it against the CPU trainer; `Device::new_cuda` needs the `cuda`
//! feature.
//!
//! Covered: TopK with AuxK and Multi-TopK, untied weights, unit-norm decoder rows (or free ones).
//! BatchTopK, ReLU + L1 and tied weights train on the CPU trainer.

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, SaeError};
use crate::sae::{Activation, Sae, SaeConfig};
use crate::sparse_ops::{adam_step, gather_rows, pick_top_k, rows_dot, scatter_rows};
use crate::topk::batch_candidates;
use crate::train::{aux_k, AdamStep, StepStats, TrainConfig, Trainer};

/// The trainer a `--device` name asks for: `None` for `cpu` (the CPU trainer), else the device
/// [`DeviceTrainer`] runs on: `cuda` (the first GPU), `cuda:N`, or `tensor-cpu` (the tensor
/// trainer on the CPU: the GPU's code path, checkable without a GPU).
pub fn parse_device(name: &str) -> Result<Option<Device>> {
    let ordinal = match name {
        "cpu" => return Ok(None),
        "tensor-cpu" => return Ok(Some(Device::Cpu)),
        "cuda" => Some(0),
        _ => name.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
    };
    let Some(ordinal) = ordinal else {
        return Err(SaeError::Config(format!(
            "unknown device {name:?}: expected cpu, cuda, cuda:N or tensor-cpu"
        )));
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(SaeError::Config(format!(
            "device {name}: this build has no CUDA support (build with `--features cuda`)"
        )));
    }
    let device =
        Device::new_cuda(ordinal).map_err(|e| SaeError::Config(format!("device {name}: {e}")))?;
    Ok(Some(device))
}

/// Whether the device trainer takes an SAE of this configuration: untied TopK.
pub fn check(c: &SaeConfig) -> Result<()> {
    if c.activation != Activation::TopK || c.tied {
        return Err(SaeError::Config(format!(
            "the device trainer takes untied TopK SAEs; this one is {}{} (train it on the CPU)",
            if c.tied { "tied " } else { "" },
            c.activation.name()
        )));
    }
    Ok(())
}

/// One decoded set of codes, the loss's gradient with respect to its decode, and whether that
/// decode adds `b_dec`.
struct Set {
    codes: Codes,
    out_grad: Tensor,
    adds_b_dec: bool,
}

/// Codes as `[rows, k]` latent indices (u32) and activations, and where they fired.
struct Codes {
    idx: Tensor,
    val: Tensor,
    /// 1.0 where a code fired (is positive), else 0.0.
    fired: Tensor,
}

impl Codes {
    /// Each row's top `k` of `relu(raw + b_enc)` among the `allowed` latents (1.0; a pick made
    /// among the others, when too few are allowed, has activation 0 and decodes as nothing).
    fn top_k(raw: &Tensor, b_enc: &Tensor, allowed: &Tensor, k: usize) -> Result<Codes> {
        let (val, idx) = pick_top_k(raw, b_enc, allowed, k)?;
        Ok(Codes {
            fired: val.gt(0f32)?.to_dtype(DType::F32)?,
            idx,
            val,
        })
    }

    /// `Σ_j val[r, j] W[idx[r, j]]` for each row.
    fn decode(&self, w: &Tensor) -> Result<Tensor> {
        Ok(gather_rows(&self.idx, &self.val, w)?)
    }
}

/// What a step's forward pass leaves on the device for the host: scalars (total variance, the
/// squared errors of the main, Multi-TopK and AuxK decodes) and each latent's firing count,
/// fetched together in one copy at the end of the step.
struct Pending {
    scalars: [Tensor; 4],
    counts: Tensor,
    aux_coef: f32,
}

/// The column sums of a `[rows, cols]` matrix, as one product with a row of ones (candle's
/// reduction over the first dimension reads the matrix column by column).
fn col_sums(m: &Tensor) -> Result<Tensor> {
    let rows = m.dim(0)?;
    let ones = Tensor::ones((1, rows), m.dtype(), m.device())?;
    Ok(ones.matmul(m)?.squeeze(0)?)
}

/// The sum of squares of a `[rows, cols]` matrix, through its column sums (candle's sum over
/// every element runs in few blocks).
fn sum_sq(m: &Tensor) -> Result<Tensor> {
    Ok(col_sums(&m.sqr()?)?.sum_all()?)
}

/// A TopK SAE and its Adam state as tensors on one device.
pub struct DeviceTrainer {
    pub device: Device,
    pub cfg: TrainConfig,
    sae_cfg: SaeConfig,
    /// Per parameter (`w_enc`, `b_enc`, `w_dec`, `b_dec`, as in [`Sae`]): `[3, len]`, the
    /// parameter then Adam's two moments, which one fused kernel updates together.
    state: [Tensor; 4],
    /// Every latent allowed (the mask of a plain top-k pick).
    all_latents: Tensor,
    pub step: u64,
    pub tokens: u64,
    /// Tokens since each latent last fired (kept on the host: one small copy per step).
    pub since_fired: Vec<u64>,
}

impl DeviceTrainer {
    /// Moves a CPU trainer (parameters, Adam moments, counters) onto `device`.
    pub fn from_trainer(t: &Trainer, device: &Device) -> Result<DeviceTrainer> {
        let c = &t.sae.cfg;
        check(c)?;
        let n = c.num_latents;
        let s = &t.sae;
        let params = [&s.w_enc, &s.b_enc, &s.w_dec, &s.b_dec];
        let mut state = Vec::with_capacity(4);
        for (i, p) in params.into_iter().enumerate() {
            let (m, v) = t.moments(i);
            let packed = [p.as_slice(), m, v].concat();
            state.push(Tensor::from_vec(packed, (3, p.len()), device)?);
        }
        let state: [Tensor; 4] = state.try_into().expect("four parameters");
        Ok(DeviceTrainer {
            device: device.clone(),
            cfg: t.cfg.clone(),
            sae_cfg: c.clone(),
            state,
            all_latents: Tensor::ones(n, DType::F32, device)?,
            step: t.step,
            tokens: t.tokens,
            since_fired: t.since_fired.clone(),
        })
    }

    /// Parameter `i` (`w_enc`, `b_enc`, `w_dec`, `b_dec`) in its own shape.
    fn param(&self, i: usize) -> Result<Tensor> {
        let (n, d) = (self.sae_cfg.num_latents, self.sae_cfg.d_in);
        let p = self.state[i].get(0)?;
        Ok(match i {
            0 | 2 => p.reshape((n, d))?,
            _ => p,
        })
    }

    /// Copies everything back into a CPU trainer (to save a checkpoint or evaluate).
    pub fn to_trainer(&self) -> Result<Trainer> {
        let (mut params, mut moments) = (Vec::with_capacity(4), Vec::with_capacity(4));
        for st in &self.state {
            let [p, m, v]: [Vec<f32>; 3] = st.to_vec2::<f32>()?.try_into().expect("three rows");
            params.push(p);
            moments.push((m, v));
        }
        let [w_enc, b_enc, w_dec, b_dec]: [Vec<f32>; 4] =
            params.try_into().expect("four parameters");
        let sae = Sae {
            cfg: self.sae_cfg.clone(),
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        };
        let mut t = Trainer::new(sae, self.cfg.clone());
        for (i, (m, v)) in moments.into_iter().enumerate() {
            t.set_moments(i, m, v);
        }
        t.step = self.step;
        t.tokens = self.tokens;
        t.since_fired = self.since_fired.clone();
        Ok(t)
    }

    /// The learning rate at the current step (the CPU trainer's schedule).
    pub fn lr(&self) -> f32 {
        self.cfg.lr_at(self.step, self.sae_cfg.num_latents)
    }

    /// One optimisation step on a batch `x` `[rows, d_in]` (host memory).
    pub fn train_step(&mut self, x: &[f32]) -> Result<StepStats> {
        let d = self.sae_cfg.d_in;
        let rows = x.len() / d;
        if rows == 0 || rows * d != x.len() {
            return Err(SaeError::Config(format!(
                "a batch of {} values is not whole rows of {d}",
                x.len()
            )));
        }
        let x = Tensor::from_slice(x, (rows, d), &self.device)?;
        self.train_step_on(&x)
    }

    /// One optimisation step on a batch already on the device.
    pub fn train_step_on(&mut self, x: &Tensor) -> Result<StepStats> {
        let rows = x.dims2()?.0;
        let lr = self.lr();
        let (sets, centered, pending) = self.forward(x)?;
        let grads = self.grads(&sets, &centered)?;
        self.apply(grads, lr)?;
        // The one wait for the device in a step: its figures and firing counts.
        let mut parts = Vec::with_capacity(5);
        for t in &pending.scalars {
            parts.push(t.reshape(1)?);
        }
        parts.push(pending.counts);
        let host = Tensor::cat(&parts, 0)?.to_vec1::<f32>()?;
        let (tv, counts) = (host[0].max(1e-12), &host[4..]);
        let fired: f32 = counts.iter().sum();
        let mut stats = StepStats {
            fvu: host[1] / tv,
            multi_topk_fvu: host[2] / tv,
            auxk_loss: host[3] / tv,
            l0: fired / rows as f32,
            lr,
            ..StepStats::default()
        };
        stats.loss = stats.fvu + stats.multi_topk_fvu / 8.0 + pending.aux_coef * stats.auxk_loss;
        self.mark_fired(counts, rows);
        self.tokens += rows as u64;
        stats.dead_frac = self.cfg.dead_frac(&self.since_fired);
        Ok(stats)
    }

    /// The forward pass of a step on `x`: the decoded sets (main, then Multi-TopK and AuxK when
    /// they run), the encoder's input `x - b_dec`, and the figures still on the device.
    fn forward(&self, x: &Tensor) -> Result<(Vec<Set>, Tensor, Pending)> {
        let rows = x.dims2()?.0;
        let (n, k) = (self.sae_cfg.num_latents, self.sae_cfg.k);
        let (w_enc, b_enc) = (self.param(0)?, self.param(1)?);
        let (w_dec, b_dec) = (self.param(2)?, self.param(3)?);
        let mean = col_sums(x)?.affine(1.0 / rows as f64, 0.0)?;
        let tv = sum_sq(&x.broadcast_sub(&mean)?)?;
        // d FVU / d output = 2 err / tv.
        let two_over_tv = tv.clamp(1e-12f32, f32::MAX)?.recip()?.affine(2.0, 0.0)?;
        let centered = x.broadcast_sub(&b_dec)?;
        let raw = centered.matmul(&w_enc.t()?)?;
        let codes = Codes::top_k(&raw, &b_enc, &self.all_latents, k)?;
        let err = (codes.decode(&w_dec)?.broadcast_add(&b_dec)? - x)?;
        let ones = Tensor::ones((rows, 1), DType::F32, &self.device)?;
        let counts = scatter_rows(&codes.idx, &codes.fired, &ones, n)?.squeeze(1)?;
        let main = Set {
            codes,
            out_grad: err.broadcast_mul(&two_over_tv)?,
            adds_b_dec: true,
        };
        let zero = Tensor::zeros((), DType::F32, &self.device)?;
        let mut scalars = [tv, sum_sq(&err)?, zero.clone(), zero];
        let mut sets = vec![main];
        if self.sae_cfg.multi_topk {
            let multi = Codes::top_k(&raw, &b_enc, &self.all_latents, batch_candidates(n, k))?;
            let e4 = (multi.decode(&w_dec)?.broadcast_add(&b_dec)? - x)?;
            scalars[2] = sum_sq(&e4)?;
            sets.push(Set {
                codes: multi,
                out_grad: e4.broadcast_mul(&two_over_tv.affine(1.0 / 8.0, 0.0)?)?,
                adds_b_dec: true,
            });
        }
        let mut aux_coef = 0.0;
        if let Some((aux, gap_sq, coef)) = self.aux_set(&raw, &err, &two_over_tv)? {
            scalars[3] = gap_sq;
            aux_coef = coef;
            sets.push(aux);
        }
        let pending = Pending {
            scalars,
            counts,
            aux_coef,
        };
        Ok((sets, centered, pending))
    }

    /// AuxK's set, when it runs (AuxK on and some latent dead): the dead latents' top `d_in / 2`
    /// reconstructing the detached residual `x - x̂ = -err`, without `b_dec`; with its squared
    /// error (on the device) and that loss's coefficient in the total.
    fn aux_set(
        &self,
        raw: &Tensor,
        err: &Tensor,
        two_over_tv: &Tensor,
    ) -> Result<Option<(Set, Tensor, f32)>> {
        let dead = self.cfg.dead_mask(&self.since_fired);
        let num_dead = dead.iter().filter(|&&m| m).count();
        if self.cfg.auxk_alpha <= 0.0 || num_dead == 0 {
            return Ok(None);
        }
        let d = self.sae_cfg.d_in;
        let mask: Vec<f32> = dead.iter().map(|&m| f32::from(u8::from(m))).collect();
        let mask = Tensor::from_vec(mask, dead.len(), &self.device)?;
        let aux = Codes::top_k(raw, &self.param(1)?, &mask, aux_k(d).min(num_dead))?;
        let gap = (aux.decode(&self.param(2)?)? + err)?;
        let c = self.cfg.auxk_alpha * (num_dead as f32 / aux_k(d) as f32).min(1.0);
        let set = Set {
            codes: aux,
            out_grad: gap.broadcast_mul(&two_over_tv.affine(c as f64, 0.0)?)?,
            adds_b_dec: false,
        };
        Ok(Some((set, sum_sq(&gap)?, c)))
    }

    /// Updates the tokens-since-fired counters from each latent's firing count in the batch.
    fn mark_fired(&mut self, counts: &[f32], rows: usize) {
        for (s, &c) in self.since_fired.iter_mut().zip(counts) {
            *s = if c > 0.0 {
                0
            } else {
                s.saturating_add(rows as u64)
            };
        }
    }

    /// The gradients of every parameter, from the decoded sets: each code touches one decoder
    /// row (its activation times the output gradient) and one encoder row (its own gradient,
    /// the output gradient's dot with its decoder row, times the encoder's input).
    fn grads(&self, sets: &[Set], centered: &Tensor) -> Result<[Tensor; 4]> {
        let (w_enc, w_dec) = (&self.param(0)?, &self.param(2)?);
        let n = self.sae_cfg.num_latents;
        let ones = Tensor::ones((centered.dim(0)?, 1), DType::F32, &self.device)?;
        let mut g = [None, None, None, None];
        for set in sets {
            let c = &set.codes;
            let g_code = rows_dot(&c.idx, &set.out_grad, w_dec)?.mul(&c.fired)?;
            let parts = [
                scatter_rows(&c.idx, &g_code, centered, n)?,
                scatter_rows(&c.idx, &g_code, &ones, n)?.squeeze(1)?,
                scatter_rows(&c.idx, &c.val, &set.out_grad, n)?,
            ];
            for (acc, part) in g.iter_mut().zip(parts) {
                *acc = Some(add_opt(acc.take(), part)?);
            }
            if set.adds_b_dec {
                g[3] = Some(add_opt(g[3].take(), col_sums(&set.out_grad)?)?);
            }
        }
        let [g_w_enc, g_b_enc, g_w_dec, g_b_dec] = g;
        let (g_w_enc, g_b_enc) = (g_w_enc.expect("a set"), g_b_enc.expect("a set"));
        // The encoder reads x - b_dec: b_dec's gradient loses Σ_j g_b_enc[j] W_enc[j].
        let through_enc = g_b_enc.unsqueeze(0)?.matmul(w_enc)?.squeeze(0)?;
        let g_b_dec = match g_b_dec {
            Some(g) => (g - through_enc)?,
            None => through_enc.neg()?,
        };
        Ok([g_w_enc, g_b_enc, g_w_dec.expect("a set"), g_b_dec])
    }

    /// Adam on every parameter; decoder rows lose their gradient's component along themselves
    /// before the step and go back to unit norm after it (one fused kernel per parameter).
    fn apply(&mut self, grads: [Tensor; 4], lr: f32) -> Result<()> {
        self.step += 1;
        let k = AdamStep::new(lr, &self.cfg, self.step);
        let unit = self.sae_cfg.normalize_decoder.then_some(self.sae_cfg.d_in);
        for (i, (st, g)) in self.state.iter_mut().zip(&grads).enumerate() {
            *st = adam_step(st, g, k, if i == 2 { unit } else { None })?;
        }
        Ok(())
    }
}

fn add_opt(acc: Option<Tensor>, t: Tensor) -> candle_core::Result<Tensor> {
    match acc {
        Some(a) => a + t,
        None => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::SaeConfig;
    use rand::{Rng, SeedableRng};

    fn data(rows: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    /// The largest difference between two parameter vectors, in units of the learning rate.
    fn worst(a: &[f32], b: &[f32], lr: f32) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / lr)
            .fold(0.0, f32::max)
    }

    /// Three steps on the device trainer (on the CPU device) and on the CPU trainer from the same
    /// state land on the same parameters, Adam moments and firing counters.
    fn agrees_with_cpu(cfg: SaeConfig, dead: bool) {
        let (d, rows) = (cfg.d_in, 64);
        let sae = Sae::init(cfg, 7).unwrap();
        let train = TrainConfig {
            warmup_steps: 1,
            dead_tokens: if dead { 1_000 } else { u64::MAX },
            ..TrainConfig::default()
        };
        let mut cpu = Trainer::new(sae, train);
        if dead {
            for j in (0..cpu.since_fired.len()).step_by(2) {
                cpu.since_fired[j] = 1_000;
            }
        }
        let mut dev = DeviceTrainer::from_trainer(&cpu, &Device::Cpu).unwrap();
        let lr = cpu.lr();
        for step in 0..3 {
            let x = data(rows, d, 10 + step);
            let a = cpu.train_step(&x);
            let b = dev.train_step(&x).unwrap();
            assert!((a.fvu - b.fvu).abs() < 1e-4 * a.fvu, "{a:?} vs {b:?}");
            assert!((a.loss - b.loss).abs() < 1e-4 * a.loss, "{a:?} vs {b:?}");
            assert!((a.auxk_loss - b.auxk_loss).abs() <= 1e-4 * a.auxk_loss);
            assert_eq!(a.l0, b.l0);
            assert_eq!(a.dead_frac, b.dead_frac);
            if dead && step == 0 {
                assert!(a.auxk_loss > 0.0);
            }
        }
        let back = dev.to_trainer().unwrap();
        assert_eq!(back.step, cpu.step);
        assert_eq!(back.tokens, cpu.tokens);
        assert_eq!(back.since_fired, cpu.since_fired);
        let (s, t) = (&cpu.sae, &back.sae);
        for (name, a, b) in [
            ("w_enc", &s.w_enc, &t.w_enc),
            ("b_enc", &s.b_enc, &t.b_enc),
            ("w_dec", &s.w_dec, &t.w_dec),
            ("b_dec", &s.b_dec, &t.b_dec),
        ] {
            let w = worst(a, b, lr);
            assert!(w < 0.05, "{name}: differs by {w} learning rates");
        }
        // The parameters moved: the comparison is not between two untouched copies.
        let start = Sae::init(s.cfg.clone(), 7).unwrap();
        assert!(worst(&start.w_enc, &t.w_enc, lr) > 0.5);
        for i in 0..4 {
            let (m1, v1) = cpu.moments(i);
            let (m2, v2) = back.moments(i);
            let scale = m1.iter().map(|v| v.abs()).fold(1e-12, f32::max);
            assert!(worst(m1, m2, scale) < 1e-3, "moment m of parameter {i}");
            let scale = v1.iter().map(|v| v.abs()).fold(1e-12, f32::max);
            assert!(worst(v1, v2, scale) < 1e-3, "moment v of parameter {i}");
        }
    }

    #[test]
    fn topk_steps_match_the_cpu_trainer() {
        agrees_with_cpu(SaeConfig::topk(24, 96, 4), false);
    }

    #[test]
    fn auxk_and_multi_topk_steps_match_the_cpu_trainer() {
        let mut cfg = SaeConfig::topk(24, 96, 4);
        cfg.multi_topk = true;
        agrees_with_cpu(cfg, true);
    }

    #[test]
    fn free_decoder_rows_match_the_cpu_trainer() {
        let mut cfg = SaeConfig::topk(16, 48, 3);
        cfg.normalize_decoder = false;
        agrees_with_cpu(cfg, false);
    }

    #[test]
    fn device_names() {
        assert!(parse_device("cpu").unwrap().is_none());
        assert!(parse_device("tensor-cpu").unwrap().unwrap().is_cpu());
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device \"tpu\""), "{err}");
        assert!(parse_device("cuda:x").is_err());
        if !candle_core::utils::cuda_is_available() {
            let err = parse_device("cuda").unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_train() {
        let mut cfg = SaeConfig::topk(8, 16, 2);
        cfg.activation = Activation::BatchTopK;
        let t = Trainer::new(Sae::init(cfg, 1).unwrap(), TrainConfig::default());
        let err = DeviceTrainer::from_trainer(&t, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("batchtopk"), "{err}");
        let mut dev = DeviceTrainer::from_trainer(
            &Trainer::new(
                Sae::init(SaeConfig::topk(8, 16, 2), 1).unwrap(),
                TrainConfig::default(),
            ),
            &Device::Cpu,
        )
        .unwrap();
        assert!(dev.train_step(&[0.0; 12]).is_err());
    }
}
