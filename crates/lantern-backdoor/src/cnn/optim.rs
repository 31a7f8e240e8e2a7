//! AdamW, gradient-norm clipping and the triangle learning-rate schedule.

use super::Params;

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), PyTorch `AdamW` semantics, with
/// weight decay applied to every tensor (biases and LayerNorm affines included).
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Default learning rate (used by callers; [`AdamW::step`] takes the rate explicitly
    /// so a schedule can drive it).
    pub lr: f32,
    /// Moment decay rates `(β1, β2)`; default `(0.9, 0.999)`.
    pub betas: (f32, f32),
    /// Denominator epsilon; default `1e-8`.
    pub eps: f32,
    /// Decoupled weight decay; default `1e-3`.
    pub weight_decay: f32,
    m: Option<Params>,
    v: Option<Params>,
    t: u32,
}

impl AdamW {
    /// Optimiser with the paper's defaults and learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-3,
            m: None,
            v: None,
            t: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.t
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    ///
    /// # Panics
    /// If `grads` (or the state from earlier steps) is shaped differently from `params`.
    pub fn step(&mut self, params: &mut Params, grads: &Params, lr: f32) {
        assert_eq!(params.shapes(), grads.shapes(), "grads must match params");
        let m = self.m.get_or_insert_with(|| zeros_like(params));
        let v = self.v.get_or_insert_with(|| zeros_like(params));
        assert_eq!(
            m.shapes(),
            params.shapes(),
            "optimiser state belongs to another model"
        );
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let decay = 1.0 - lr * self.weight_decay;
        for (((p, g), m), v) in params
            .tensors
            .iter_mut()
            .zip(&grads.tensors)
            .zip(&mut m.tensors)
            .zip(&mut v.tensors)
        {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mhat = m[i] / bc1;
                let vhat = v[i] / bc2;
                p[i] = p[i] * decay - lr * mhat / (vhat.sqrt() + self.eps);
            }
        }
    }
}

fn zeros_like(p: &Params) -> Params {
    let mut z = p.clone();
    z.tensors.iter_mut().for_each(|t| t.fill(0.0));
    z
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm` (the paper uses 5);
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f32) -> f32 {
    let norm = grads
        .tensors
        .iter()
        .flatten()
        .map(|&g| (g as f64).powi(2))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > max_norm && norm.is_finite() {
        let s = max_norm / (norm + 1e-6);
        grads.tensors.iter_mut().flatten().for_each(|g| *g *= s);
    }
    norm
}

/// Fraction of the run at which [`triangle_lr`] reaches its peak.
pub const TRIANGLE_PEAK_FRACTION: f32 = 0.5;

/// Triangle schedule: the rate rises linearly from ~0 to `peak` over the first
/// [`TRIANGLE_PEAK_FRACTION`] of `total` steps, then falls linearly back to ~0 at the last
/// step. Each step `0..total` gets a positive rate (the first is `peak / warmup_steps`, not
/// 0, so no step is wasted); steps `>= total` get 0.
pub fn triangle_lr(step: usize, total: usize, peak: f32) -> f32 {
    if step >= total {
        return 0.0;
    }
    let up = ((total as f32 * TRIANGLE_PEAK_FRACTION).round() as usize).clamp(1, total);
    if step < up {
        peak * (step + 1) as f32 / up as f32
    } else {
        peak * (total - step) as f32 / (total - up + 1) as f32
    }
}
