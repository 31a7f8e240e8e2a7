//! The meta-model network: linear chunk embedding, classification token, learned positions,
//! pre-LayerNorm transformer encoder, final LayerNorm, linear head to one logit.

use super::MetaError;
use crate::baseline::STATS_PER_TENSOR;
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{linear, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Shape of the meta-model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaArch {
    /// Parameters per token (paper: 128).
    pub chunk: usize,
    /// Tokens per model (parameters / chunk, rounded up); the classification token is extra.
    pub n_tokens: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Encoder blocks.
    pub layers: usize,
    /// Attention heads (must divide `d_model`).
    pub heads: usize,
    /// MLP hidden width as a multiple of `d_model` (paper: 4).
    pub mlp_mult: usize,
    /// Statistics tokens: one per CNN tensor, holding that tensor's
    /// [`STATS_PER_TENSOR`] standardised statistics, embedded by their own linear map
    /// (0 = none; [`MetaDetector::new`](super::MetaDetector::new) sets it from the layout).
    #[serde(default)]
    pub stat_tokens: usize,
    /// A linear read-out of the statistics added to the logit (a wide path next to the
    /// deep one: the transformer then learns what the statistics' linear trend misses).
    /// Needs statistics tokens.
    #[serde(default)]
    pub stats_readout: bool,
}

impl MetaArch {
    /// Checks that the shape is usable.
    pub fn validate(&self) -> Result<(), MetaError> {
        let ok = self.chunk > 0
            && self.n_tokens > 0
            && self.d_model > 0
            && self.layers > 0
            && self.heads > 0
            && self.mlp_mult > 0
            && self.d_model.is_multiple_of(self.heads)
            && (self.stat_tokens > 0 || !self.stats_readout);
        if ok {
            Ok(())
        } else {
            Err(MetaError::BadSetup(format!(
                "bad meta-model shape {self:?}: all sizes positive, heads dividing d_model, \
                 a statistics read-out only with statistics tokens"
            )))
        }
    }
}

/// LayerNorm over the last dimension, written with differentiable primitives.
struct Norm {
    gain: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(d: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            gain: vb.get_with_hints(d, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(d, "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        normed.broadcast_mul(&self.gain)?.broadcast_add(&self.bias)
    }
}

/// One pre-LayerNorm encoder block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
struct Block {
    ln1: Norm,
    qkv: Linear,
    proj: Linear,
    ln2: Norm,
    up: Linear,
    down: Linear,
    heads: usize,
}

impl Block {
    fn new(a: &MetaArch, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = a.d_model;
        Ok(Self {
            ln1: Norm::new(d, vb.pp("ln1"))?,
            qkv: linear(d, 3 * d, vb.pp("qkv"))?,
            proj: linear(d, d, vb.pp("proj"))?,
            ln2: Norm::new(d, vb.pp("ln2"))?,
            up: linear(d, a.mlp_mult * d, vb.pp("up"))?,
            down: linear(a.mlp_mult * d, d, vb.pp("down"))?,
            heads: a.heads,
        })
    }

    /// Non-causal multi-head self-attention on `[B, T, d]`.
    fn attention(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let dh = d / self.heads;
        let qkv = self.qkv.forward(x)?.reshape((b, t, 3, self.heads, dh))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attention(&self.ln1.forward(x)?)?)?;
        let h = self.up.forward(&self.ln2.forward(&x)?)?.gelu_erf()?;
        x + self.down.forward(&h)?
    }
}

/// The meta-model; its weights live in the [`VarBuilder`]'s variable map.
pub struct MetaModel {
    arch: MetaArch,
    embed: Linear,
    stats_embed: Option<Linear>,
    stats_readout: Option<Linear>,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Linear,
}

impl MetaModel {
    /// Creates (or, with a loaded variable map, reads) the weights for `arch`.
    pub fn new(arch: &MetaArch, vb: VarBuilder) -> Result<Self, MetaError> {
        arch.validate()?;
        let d = arch.d_model;
        let small = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let blocks = (0..arch.layers)
            .map(|i| Block::new(arch, vb.pp(format!("blocks.{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            arch: arch.clone(),
            embed: linear(arch.chunk, d, vb.pp("embed"))?,
            stats_embed: if arch.stat_tokens > 0 {
                Some(linear(STATS_PER_TENSOR, d, vb.pp("stats_embed"))?)
            } else {
                None
            },
            stats_readout: if arch.stats_readout {
                Some(linear(
                    arch.stat_tokens * STATS_PER_TENSOR,
                    1,
                    vb.pp("stats_readout"),
                )?)
            } else {
                None
            },
            cls: vb.get_with_hints((1, 1, d), "cls", small)?,
            pos: vb.get_with_hints((arch.n_tokens + arch.stat_tokens + 1, d), "pos", small)?,
            blocks,
            ln_f: Norm::new(d, vb.pp("ln_f"))?,
            head: linear(d, 1, vb.pp("head"))?,
        })
    }

    /// The model's shape.
    pub fn arch(&self) -> &MetaArch {
        &self.arch
    }

    /// Logits `[B]` (positive = backdoored) for tokens `[B, n_tokens, chunk]` and, when the
    /// model has statistics tokens, statistics `[B, stat_tokens, STATS_PER_TENSOR]`.
    pub fn forward(&self, tokens: &Tensor, stats: Option<&Tensor>) -> Result<Tensor, MetaError> {
        let (b, t, c) = tokens.dims3()?;
        if t != self.arch.n_tokens || c != self.arch.chunk || tokens.dtype() != DType::F32 {
            return Err(MetaError::BadSetup(format!(
                "tokens of shape [{b}, {t}, {c}], the meta-model reads [B, {}, {}]",
                self.arch.n_tokens, self.arch.chunk
            )));
        }
        let cls = self.cls.broadcast_as((b, 1, self.arch.d_model))?;
        let mut parts = vec![cls, self.embed.forward(tokens)?];
        match (&self.stats_embed, stats) {
            (None, None) => {}
            (Some(embed), Some(s)) if s.dims() == [b, self.arch.stat_tokens, STATS_PER_TENSOR] => {
                parts.push(embed.forward(s)?);
            }
            (_, s) => {
                return Err(MetaError::BadSetup(format!(
                    "statistics of shape {:?}, the meta-model reads {}",
                    s.map(|s| s.dims().to_vec()),
                    if self.stats_embed.is_some() {
                        format!("[{b}, {}, {STATS_PER_TENSOR}]", self.arch.stat_tokens)
                    } else {
                        "none".into()
                    }
                )))
            }
        }
        let mut x = Tensor::cat(&parts, 1)?.broadcast_add(&self.pos)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let first = self.ln_f.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        let logit = self.head.forward(&first)?.squeeze(1)?;
        match (&self.stats_readout, stats) {
            (Some(r), Some(s)) => Ok((logit + r.forward(&s.flatten_from(1)?)?.squeeze(1)?)?),
            _ => Ok(logit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn forward_shape_and_token_order_matters() {
        let arch = MetaArch {
            chunk: 8,
            n_tokens: 5,
            d_model: 16,
            layers: 2,
            heads: 4,
            mlp_mult: 2,
            stat_tokens: 0,
            stats_readout: false,
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = MetaModel::new(&arch, vb).unwrap();
        let data: Vec<f32> = (0..2 * 5 * 8)
            .map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(data.clone(), (2, 5, 8), &Device::Cpu).unwrap();
        let y = m.forward(&x, None).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y.len(), 2);
        assert!(y.iter().all(|v| v.is_finite()));
        // Swapping two tokens changes the output: the learned positions make order visible.
        let mut swapped = data.clone();
        swapped[..8].copy_from_slice(&data[8..16]);
        swapped[8..16].copy_from_slice(&data[..8]);
        let xs = Tensor::from_vec(swapped, (2, 5, 8), &Device::Cpu).unwrap();
        let ys = m.forward(&xs, None).unwrap().to_vec1::<f32>().unwrap();
        assert!((ys[0] - y[0]).abs() > 1e-6 && (ys[1] - y[1]).abs() < 1e-6);
        // A wrong token count is an error, not a panic.
        let bad = Tensor::zeros((1, 4, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(m.forward(&bad, None).is_err());
    }

    #[test]
    fn statistics_tokens_and_read_out_enter_the_logit() {
        let arch = MetaArch {
            chunk: 8,
            n_tokens: 3,
            d_model: 16,
            layers: 1,
            heads: 2,
            mlp_mult: 2,
            stat_tokens: 2,
            stats_readout: true,
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = MetaModel::new(&arch, vb).unwrap();
        let dev = &Device::Cpu;
        let x = Tensor::ones((1, 3, 8), DType::F32, dev).unwrap();
        let s0 = Tensor::zeros((1, 2, STATS_PER_TENSOR), DType::F32, dev).unwrap();
        let s1 = Tensor::ones((1, 2, STATS_PER_TENSOR), DType::F32, dev).unwrap();
        let y0 = m.forward(&x, Some(&s0)).unwrap().to_vec1::<f32>().unwrap()[0];
        let y1 = m.forward(&x, Some(&s1)).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((y0 - y1).abs() > 1e-6, "the statistics change the logit");
        // Missing or misshapen statistics are errors, as is a read-out without statistics.
        assert!(m.forward(&x, None).is_err());
        let bad = Tensor::zeros((1, 3, STATS_PER_TENSOR), DType::F32, dev).unwrap();
        assert!(m.forward(&x, Some(&bad)).is_err());
        let no_stats = MetaArch {
            stat_tokens: 0,
            ..arch
        };
        assert!(no_stats.validate().is_err());
    }
}
