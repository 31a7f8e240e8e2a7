//! The transformer: Llama and GPT-NeoX in one readable forward pass, with a hook at every named
//! point (see [`crate::hooks`]).
//!
//! Both architectures share one block: norm -> fused q/k/v -> rotary -> causal grouped-query
//! attention -> output projection, then norm -> MLP (SwiGLU or GELU), with a sequential or
//! parallel residual. GPT-NeoX's per-head interleaved q/k/v rows are reordered at load so the
//! same code serves both.

use candle_core::{Device, Tensor, Var, D};

use crate::attention::{self, Heads, LayerCache, RopeTables};
use crate::checkpoint::{Checkpoint, Loaded};
use crate::config::{Arch, Config, RopeStyle};
use crate::error::{LmError, Result};
use crate::hooks::{BlockSite, HookPoint, Hooks};
use crate::quant::QMatrix;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMode {
    /// Keep the file's quantized blocks: Q4_0/Q4_1 matrices multiply through the packed integer
    /// kernel at every batch size (activations quantized to Q8 as llama.cpp does), other types
    /// through the quantized kernel for a few rows and an f32 copy for more. Attention runs fused
    /// ([`crate::attention`]). Fastest; no gradients.
    Inference,
    /// Every weight an f32 candle [`Var`]: gradients flow to weights and input embeddings.
    Trainable,
}

/// Rows at or below which a quantized matrix-vector kernel beats the f32 GEMM (for the types
/// without a packed GEMM kernel).
const SMALL_BATCH_ROWS: usize = 4;

/// A linear layer `y = x Wᵀ + b` with an optional quantized copy of `W`.
#[derive(Debug, Clone)]
struct Linear {
    w: Tensor,
    q: Option<QMatrix>,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let d_in = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / d_in.max(1);
        let x2 = x.reshape((rows, d_in))?;
        let y = match &self.q {
            Some(op) if rows <= SMALL_BATCH_ROWS || op.packed_q4().is_some() => {
                x2.contiguous()?.apply_op1_no_bwd(op)?
            }
            _ => x2.matmul(&self.w.t()?)?,
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.w.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// LayerNorm (with bias) or RMSNorm (without).
#[derive(Debug, Clone)]
struct Norm {
    w: Tensor,
    b: Option<Tensor>,
    eps: f32,
}

impl Norm {
    fn forward(&self, x: &Tensor, fast: bool) -> Result<Tensor> {
        let y = match (&self.b, fast) {
            (Some(b), true) => candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, b, self.eps)?,
            (Some(b), false) => candle_nn::ops::layer_norm_slow(x, &self.w, b, self.eps)?,
            (None, true) => candle_nn::ops::rms_norm(&x.contiguous()?, &self.w, self.eps)?,
            (None, false) => candle_nn::ops::rms_norm_slow(x, &self.w, self.eps)?,
        };
        Ok(y)
    }
}

#[derive(Debug, Clone)]
enum Mlp {
    /// `down(silu(gate x) * up x)`, gate and up fused into one matrix `[2 d_ff, d]`.
    SwiGlu { gate_up: Linear, down: Linear },
    /// `down(gelu(up x))` with the exact (erf) GELU.
    Gelu { up: Linear, down: Linear },
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Norm,
    mlp_norm: Norm,
    /// q, k and v projections fused: rows `[q (heads*hd); k (kv*hd); v (kv*hd)]`.
    qkv: Linear,
    out: Linear,
    mlp: Mlp,
}

/// Precomputed rotary cos/sin tables, `[positions, rope_dims / 2]`, as tensors and on the host.
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
    host: RopeTables,
}

/// Per-layer key/value cache for incremental decoding (rotated keys and values on the host).
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// A cache able to hold `max_len` positions (of any one batch size, fixed by the first pass).
    pub fn new(cfg: &Config, max_len: usize) -> KvCache {
        KvCache {
            layers: (0..cfg.n_layers)
                .map(|_| LayerCache::new(max_len))
                .collect(),
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.len())
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.layers.first().map_or(0, |c| c.capacity())
    }
}

fn heads_of(cfg: &Config) -> Heads {
    Heads {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Every position: `[batch, seq, vocab]`.
    All,
    /// Only the last position of each row: `[batch, 1, vocab]` (prompt processing).
    Last,
}

/// A loaded model ready to run.
pub struct Model {
    pub cfg: Config,
    embed: Tensor,
    blocks: Vec<Block>,
    final_norm: Norm,
    lm_head: Linear,
    rope: Rope,
    mode: WeightMode,
    vars: Vec<(String, Var)>,
    device: Device,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("cfg", &self.cfg).finish()
    }
}

/// Builds tensors from loaded weights, registering them as variables when trainable.
struct Builder<'a> {
    ckpt: &'a Checkpoint,
    cfg: &'a Config,
    mode: WeightMode,
    device: Device,
    vars: Vec<(String, Var)>,
}

impl Builder<'_> {
    fn tensor(&mut self, name: &str, l: Loaded) -> Result<Tensor> {
        let t = Tensor::from_vec(l.data, l.shape, &self.device)?;
        Ok(match self.mode {
            WeightMode::Inference => t,
            WeightMode::Trainable => {
                let v = Var::from_tensor(&t)?;
                let t = v.as_tensor().clone();
                self.vars.push((name.to_string(), v));
                t
            }
        })
    }

    fn require(&self, name: &str) -> Result<Loaded> {
        self.ckpt.require(self.cfg.arch, name)
    }

    fn linear_from(&mut self, name: &str, w: Loaded, b: Option<Loaded>) -> Result<Linear> {
        let q = match self.mode {
            WeightMode::Inference => w.quant.clone(),
            WeightMode::Trainable => None,
        };
        let w = self.tensor(&format!("{name}.weight"), w)?;
        let b = match b {
            Some(b) => Some(self.tensor(&format!("{name}.bias"), b)?),
            None => None,
        };
        Ok(Linear { w, q, b })
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        let w = self.require(&format!("{name}.weight"))?;
        let b = self.ckpt.load(self.cfg.arch, &format!("{name}.bias"))?;
        self.linear_from(name, w, b)
    }

    fn norm(&mut self, name: &str) -> Result<Norm> {
        let w = self.require(&format!("{name}.weight"))?;
        let w = self.tensor(&format!("{name}.weight"), w)?;
        let b = match self.ckpt.load(self.cfg.arch, &format!("{name}.bias"))? {
            Some(b) => Some(self.tensor(&format!("{name}.bias"), b)?),
            None => None,
        };
        let b = match (self.cfg.arch, b) {
            (Arch::GptNeox, None) => {
                return Err(LmError::MissingTensor {
                    origin: self.ckpt.source(),
                    name: format!("{name}.bias"),
                })
            }
            (_, b) => b,
        };
        Ok(Norm {
            w,
            b,
            eps: self.cfg.norm_eps as f32,
        })
    }

    /// The fused q/k/v projection of layer `i`, rows ordered `[q; k; v]`.
    fn qkv(&mut self, i: usize) -> Result<Linear> {
        let p = format!("blk.{i}");
        let c = self.cfg;
        match c.arch {
            Arch::Llama => {
                let parts = ["attn_q", "attn_k", "attn_v"]
                    .iter()
                    .map(|n| self.require(&format!("{p}.{n}.weight")))
                    .collect::<Result<Vec<_>>>()?;
                let w = Loaded::concat_rows(parts, &format!("{p}.attn_qkv"))?;
                self.linear_from(&format!("{p}.attn_qkv"), w, None)
            }
            Arch::GptNeox => {
                // File layout is [head, (q|k|v), head_dim]; reorder to [(q|k|v), head, head_dim].
                let hd = c.head_dim;
                let perm: Vec<usize> = (0..3)
                    .flat_map(|part| {
                        (0..c.n_heads)
                            .flat_map(move |h| (0..hd).map(move |d| (h * 3 + part) * hd + d))
                    })
                    .collect();
                let w = self
                    .require(&format!("{p}.attn_qkv.weight"))?
                    .permute_rows(&perm)?;
                let b = match self.ckpt.load(c.arch, &format!("{p}.attn_qkv.bias"))? {
                    Some(b) => Some(b.permute_rows(&perm)?),
                    None => None,
                };
                self.linear_from(&format!("{p}.attn_qkv"), w, b)
            }
        }
    }

    fn block(&mut self, i: usize) -> Result<Block> {
        let p = format!("blk.{i}");
        let mlp = match self.cfg.arch {
            Arch::Llama => {
                let gate = self.require(&format!("{p}.ffn_gate.weight"))?;
                let up = self.require(&format!("{p}.ffn_up.weight"))?;
                let w = Loaded::concat_rows(vec![gate, up], &format!("{p}.ffn_gate_up"))?;
                Mlp::SwiGlu {
                    gate_up: self.linear_from(&format!("{p}.ffn_gate_up"), w, None)?,
                    down: self.linear(&format!("{p}.ffn_down"))?,
                }
            }
            Arch::GptNeox => Mlp::Gelu {
                up: self.linear(&format!("{p}.ffn_up"))?,
                down: self.linear(&format!("{p}.ffn_down"))?,
            },
        };
        Ok(Block {
            attn_norm: self.norm(&format!("{p}.attn_norm"))?,
            mlp_norm: self.norm(&format!("{p}.ffn_norm"))?,
            qkv: self.qkv(i)?,
            out: self.linear(&format!("{p}.attn_output"))?,
            mlp,
        })
    }
}

fn check_shape(ckpt: &Checkpoint, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(LmError::BadTensor {
            origin: ckpt.source(),
            name: name.to_string(),
            what: format!("shape {got:?}, expected {want:?} from the config"),
        });
    }
    Ok(())
}

impl Model {
    /// Loads a model from an opened checkpoint.
    pub fn load(ckpt: &Checkpoint, mode: WeightMode) -> Result<Model> {
        let cfg = ckpt.config()?;
        let device = Device::Cpu;
        let mut b = Builder {
            ckpt,
            cfg: &cfg,
            mode,
            device: device.clone(),
            vars: Vec::new(),
        };
        let embed_l = b.require("token_embd.weight")?;
        check_shape(
            ckpt,
            "token_embd.weight",
            &embed_l.shape,
            &[cfg.vocab_size, cfg.d_model],
        )?;
        let head_l = match ckpt.load(cfg.arch, "output.weight")? {
            Some(h) if !cfg.tied_embeddings || ckpt_is_gguf(ckpt) => Some(h),
            _ => None,
        };
        let lm_head = match head_l {
            Some(h) => b.linear_from("output", h, None)?,
            None => {
                let q = match mode {
                    WeightMode::Inference => embed_l.quant.clone(),
                    WeightMode::Trainable => None,
                };
                let w = b.tensor("token_embd.weight", embed_l.clone())?;
                Linear { w, q, b: None }
            }
        };
        let embed = if cfg.tied_embeddings {
            lm_head.w.clone()
        } else {
            b.tensor("token_embd.weight", embed_l)?
        };
        let blocks = (0..cfg.n_layers)
            .map(|i| b.block(i))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = b.norm("output_norm")?;
        let vars = b.vars;
        let rope = rope_tables(&cfg, &device)?;
        let model = Model {
            cfg,
            embed,
            blocks,
            final_norm,
            lm_head,
            rope,
            mode,
            vars,
            device,
        };
        model.check_block_shapes(ckpt)?;
        Ok(model)
    }

    fn check_block_shapes(&self, ckpt: &Checkpoint) -> Result<()> {
        let c = &self.cfg;
        let qkv_rows = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
        for (i, blk) in self.blocks.iter().enumerate() {
            check_shape(
                ckpt,
                &format!("blk.{i}.attn_qkv"),
                blk.qkv.w.dims(),
                &[qkv_rows, c.d_model],
            )?;
            check_shape(
                ckpt,
                &format!("blk.{i}.attn_output"),
                blk.out.w.dims(),
                &[c.d_model, c.n_heads * c.head_dim],
            )?;
            let (up_rows, down) = match &blk.mlp {
                Mlp::SwiGlu { gate_up, down } => (gate_up.w.dim(0)?, down),
                Mlp::Gelu { up, down } => (up.w.dim(0)?, down),
            };
            let want_up = if c.arch == Arch::Llama {
                2 * c.d_ff
            } else {
                c.d_ff
            };
            check_shape(ckpt, &format!("blk.{i}.ffn_up"), &[up_rows], &[want_up])?;
            check_shape(
                ckpt,
                &format!("blk.{i}.ffn_down"),
                down.w.dims(),
                &[c.d_model, c.d_ff],
            )?;
        }
        Ok(())
    }

    /// The model's trainable variables with their llama.cpp names (empty in inference mode).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weight mode it was loaded with.
    pub fn mode(&self) -> WeightMode {
        self.mode
    }

    /// The token embedding matrix `[vocab, d_model]` (a variable in trainable mode).
    pub fn embedding_matrix(&self) -> &Tensor {
        &self.embed
    }

    /// The unembedding (output) matrix `[vocab, d_model]` in f32: what a residual direction
    /// promotes or suppresses in the logits (the embedding matrix when tied).
    pub fn unembedding_matrix(&self) -> &Tensor {
        &self.lm_head.w
    }

    /// Checks that token ids are in the vocabulary.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            Some(&id) => Err(LmError::BadTokenId {
                id,
                vocab: self.cfg.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Embeds token ids `[batch, seq]` (u32) to `[batch, seq, d_model]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        Ok(self
            .embed
            .index_select(&flat, 0)?
            .reshape((b, t, self.cfg.d_model))?)
    }

    /// Runs token ids `[batch, seq]` starting at position `pos` (the cache length when a cache is
    /// given). Rows of a batch may be right-padded: padding never influences earlier positions.
    /// Returns logits, or `None` when the hooks stopped the pass early.
    pub fn forward(
        &self,
        ids: &Tensor,
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks<'_>,
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        let x = self.embed(ids)?;
        self.forward_embeds(&x, cache, hooks, logits)
    }

    /// Like [`Model::forward`] but from input embeddings `[batch, seq, d_model]` (gradients flow
    /// to them; GCG and soft prompts use this).
    pub fn forward_embeds(
        &self,
        x: &Tensor,
        cache: Option<&mut KvCache>,
        hooks: &mut Hooks<'_>,
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        crate::pool::install(|| self.forward_inner(x, 0, cache, hooks, logits))
    }

    /// Runs blocks `layer..` on a residual stream `[batch, seq, d_model]` that enters block
    /// `layer` (its `resid_pre`; `n_layers` means straight to the final norm), with no cache.
    /// Patching experiments use it to rerun only the part of the model after the patched point.
    pub fn forward_from_layer(
        &self,
        layer: usize,
        x: &Tensor,
        hooks: &mut Hooks<'_>,
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        if layer > self.blocks.len() {
            return Err(LmError::Input(format!(
                "forward_from_layer: layer {layer} past the model's {} blocks",
                self.blocks.len()
            )));
        }
        crate::pool::install(|| self.forward_inner(x, layer, None, hooks, logits))
    }

    fn forward_inner(
        &self,
        x: &Tensor,
        start: usize,
        mut cache: Option<&mut KvCache>,
        hooks: &mut Hooks<'_>,
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        let (_, t, _) = x.dims3()?;
        let pos = cache.as_ref().map_or(0, |c| c.len());
        if pos + t > self.cfg.ctx_len {
            return Err(LmError::TooLong {
                len: pos + t,
                ctx: self.cfg.ctx_len,
            });
        }
        let stop = hooks.stop_after();
        let mut x = if start == 0 {
            hooks.apply(HookPoint::Embed, x.clone())?
        } else {
            x.clone()
        };
        if start == 0 && stop == Some(HookPoint::Embed) {
            return Ok(None);
        }
        for (i, blk) in self.blocks.iter().enumerate().skip(start) {
            let kv = cache.as_mut().map(|c| &mut c.layers[i]);
            match self.block_forward(blk, i, &x, pos, kv, hooks, stop)? {
                Some(y) => x = y,
                None => return Ok(None),
            }
        }
        let x = match logits {
            LogitsFor::All => x,
            LogitsFor::Last => x.narrow(1, t - 1, 1)?,
        };
        let x = self.final_norm.forward(&x, self.fast())?;
        let x = hooks.apply(HookPoint::FinalNorm, x)?;
        if stop == Some(HookPoint::FinalNorm) {
            return Ok(None);
        }
        let out = self.lm_head.forward(&x)?;
        Ok(Some(hooks.apply(HookPoint::Logits, out)?))
    }

    fn fast(&self) -> bool {
        self.mode == WeightMode::Inference
    }

    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        blk: &Block,
        i: usize,
        x: &Tensor,
        pos: usize,
        kv: Option<&mut LayerCache>,
        hooks: &mut Hooks<'_>,
        stop: Option<HookPoint>,
    ) -> Result<Option<Tensor>> {
        let fast = self.fast();
        let hooked = hooks.touches_layer(i);
        let mut at = |site: BlockSite, t: Tensor| -> Result<(Tensor, bool)> {
            let p = HookPoint::block(i, site);
            let t = if hooked { hooks.apply(p, t)? } else { t };
            Ok((t, stop == Some(p)))
        };
        let (resid_pre, done) = at(BlockSite::ResidPre, x.clone())?;
        if done {
            return Ok(None);
        }
        let h = blk.attn_norm.forward(&resid_pre, fast)?;
        let attn = self.attention(blk, &h, pos, kv)?;
        let (attn, done) = at(BlockSite::AttnOut, attn)?;
        if done {
            return Ok(None);
        }
        let (mid, done) = at(BlockSite::ResidMid, (&resid_pre + &attn)?)?;
        if done {
            return Ok(None);
        }
        let mlp_in = if self.cfg.parallel_residual {
            &resid_pre
        } else {
            &mid
        };
        let h = blk.mlp_norm.forward(mlp_in, fast)?;
        let (act, down) = match &blk.mlp {
            Mlp::SwiGlu { gate_up, down } if fast => {
                let gu = gate_up.forward(&h)?;
                let d_ff = self.cfg.d_ff;
                let mut dims = gu.dims().to_vec();
                *dims.last_mut().unwrap() = d_ff;
                let act = with_host(&gu, |g| attention::swiglu(g, d_ff))?;
                (Tensor::from_vec(act, dims, &self.device)?, down)
            }
            Mlp::SwiGlu { gate_up, down } => {
                let gu = gate_up.forward(&h)?;
                let d_ff = self.cfg.d_ff;
                let gate = gu.narrow(D::Minus1, 0, d_ff)?;
                let up = gu.narrow(D::Minus1, d_ff, d_ff)?;
                (candle_nn::ops::silu(&gate)?.mul(&up)?, down)
            }
            Mlp::Gelu { up, down } => (up.forward(&h)?.gelu_erf()?, down),
        };
        let (act, done) = at(BlockSite::MlpAct, act)?;
        if done {
            return Ok(None);
        }
        let (mlp_out, done) = at(BlockSite::MlpOut, down.forward(&act)?)?;
        if done {
            return Ok(None);
        }
        let (post, done) = at(BlockSite::ResidPost, (&mid + &mlp_out)?)?;
        Ok(if done { None } else { Some(post) })
    }

    /// Causal grouped-query attention including the output projection.
    fn attention(
        &self,
        blk: &Block,
        h: &Tensor,
        pos: usize,
        kv: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let qkv = blk.qkv.forward(h)?;
        let out = if self.fast() {
            self.attention_fused(&qkv, kv)?
        } else {
            self.attention_graph(&qkv, pos, kv)?
        };
        blk.out.forward(&out)
    }

    /// The inference path: [`attention`] over host slices, the cache filled in place.
    fn attention_fused(&self, qkv: &Tensor, kv: Option<&mut LayerCache>) -> Result<Tensor> {
        let (b, t, _) = qkv.dims3()?;
        let heads = heads_of(&self.cfg);
        let mut scratch;
        let cache = match kv {
            Some(c) => c,
            None => {
                scratch = LayerCache::new(t);
                &mut scratch
            }
        };
        let q = with_host(qkv, |x| {
            attention::split_rotate_append(x, b, heads, &self.rope.host, cache)
        })?
        .map_err(LmError::Cache)?;
        let out = attention::attend(&q, b, heads, cache);
        Ok(Tensor::from_vec(
            out,
            (b, t, heads.n_heads * heads.head_dim),
            &self.device,
        )?)
    }

    /// The differentiable path, in candle ops: the reference the fused path is tested against.
    fn attention_graph(
        &self,
        qkv: &Tensor,
        pos: usize,
        kv: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = qkv.dims3()?;
        let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let split = |start: usize, heads: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, start * hd, heads * hd)?
                .reshape((b, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = self.apply_rope(&split(0, nh)?, pos)?;
        let k = self.apply_rope(&split(nh, nkv)?, pos)?;
        let v = split(nh + nkv, nkv)?;
        let (k, v) = match kv {
            Some(cache) => self.through_cache(cache, k, v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        let g = nh / nkv;
        // Group query heads that share a kv head: [b, nkv, g*t, hd].
        let q = q.reshape((b, nkv, g * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = if t > 1 {
            let mask = causal_mask(t, total, &self.device)?;
            scores
                .reshape((b, nkv, g, t, total))?
                .broadcast_add(&mask)?
                .reshape((b, nkv, g * t, total))?
        } else {
            scores
        };
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs.matmul(&v)?; // [b, nkv, g*t, hd]
        Ok(out
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?)
    }

    /// Appends new keys and values `[b, nkv, t, hd]` to `cache` and returns all of them (the
    /// cached part as constants: gradients reach only the new positions).
    fn through_cache(
        &self,
        cache: &mut LayerCache,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let heads = heads_of(&self.cfg);
        let (b, nkv, _, hd) = k.dims4()?;
        let past = cache.len();
        let old = (cache.keys(heads), cache.values(heads));
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        cache
            .append(heads, b, &host(&k)?, &host(&v)?)
            .map_err(LmError::Cache)?;
        if past == 0 {
            return Ok((k, v));
        }
        let old_k = Tensor::from_vec(old.0, (b, nkv, past, hd), &self.device)?;
        let old_v = Tensor::from_vec(old.1, (b, nkv, past, hd), &self.device)?;
        Ok((
            Tensor::cat(&[&old_k, &k], 2)?,
            Tensor::cat(&[&old_v, &v], 2)?,
        ))
    }

    /// Rotates the first `rope_dims` of each head of `x` `[b, heads, t, hd]` for positions
    /// `pos..pos+t`, in differentiable candle ops (the graph path; the fused path rotates in
    /// [`attention::split_rotate_append`]).
    fn apply_rope(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let t = x.dim(2)?;
        let cos = self.rope.cos.narrow(0, pos, t)?;
        let sin = self.rope.sin.narrow(0, pos, t)?;
        let rd = c.rope_dims;
        let (rot, pass) = if rd == c.head_dim {
            (x.clone(), None)
        } else {
            (
                x.narrow(D::Minus1, 0, rd)?.contiguous()?,
                Some(x.narrow(D::Minus1, rd, c.head_dim - rd)?),
            )
        };
        let rotated = match c.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i_slow(&rot, &cos, &sin)?,
            RopeStyle::Half => candle_nn::rotary_emb::rope_slow(&rot, &cos, &sin)?,
        };
        Ok(match pass {
            Some(pass) => Tensor::cat(&[&rotated, &pass], D::Minus1)?.contiguous()?,
            None => rotated,
        })
    }
}

/// Runs `f` on the elements of an f32 tensor in row-major order, borrowing them when the tensor
/// is contiguous on the CPU.
fn with_host<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    {
        if let Ok(data) = cpu.as_slice::<f32>() {
            return Ok(f(&data[start..end]));
        }
    }
    drop(storage);
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

fn ckpt_is_gguf(ckpt: &Checkpoint) -> bool {
    matches!(ckpt, Checkpoint::Gguf(_))
}

/// `[t, total]` additive mask: query `i` (absolute position `total - t + i`) sees keys up to it.
fn causal_mask(t: usize, total: usize, device: &Device) -> Result<Tensor> {
    let offset = total - t;
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (t, total), device)?)
}

fn rope_tables(cfg: &Config, device: &Device) -> Result<Rope> {
    let half = cfg.rope_dims / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f64 / cfg.rope_dims as f64))
        .collect();
    let n = cfg.ctx_len;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &inv {
            // f32 angle as llama.cpp and transformers compute it.
            let a = (p as f32 * *f as f32) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let host = RopeTables {
        cos: cos.clone(),
        sin: sin.clone(),
        dims: cfg.rope_dims,
        style: cfg.rope_style,
    };
    Ok(Rope {
        cos: Tensor::from_vec(cos, (n, half), device)?,
        sin: Tensor::from_vec(sin, (n, half), device)?,
        host,
    })
}
