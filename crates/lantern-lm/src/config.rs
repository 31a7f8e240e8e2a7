//! Model hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use serde::Serialize;

use crate::error::LmError;
use crate::gguf::{GgufFile, Value};

/// The architectures Lantern implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Llama: RMSNorm, SwiGLU, rotary, grouped-query attention (SmolLM2, Llama 2/3, ...).
    Llama,
    /// GPT-NeoX (Pythia): LayerNorm, GELU, partial rotary, parallel or sequential residual.
    GptNeox,
}

impl Arch {
    /// The name used in `lantern lm info` and GGUF `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::GptNeox => "gpt_neox",
        }
    }
}

/// How rotary dimensions are paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Dimension `2i` with `2i+1` (llama.cpp's GGUF Llama layout, whose converter permutes q/k).
    Interleaved,
    /// Dimension `i` with `i + rot/2` ("rotate_half": Hugging Face Llama and GPT-NeoX).
    Half,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab_size: usize,
    pub norm_eps: f64,
    pub rope_base: f64,
    /// Rotary dimensions per head (`head_dim` for Llama, `rotary_pct * head_dim` for NeoX).
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    /// Longest context the model was trained for.
    pub ctx_len: usize,
    /// GPT-NeoX: attention and MLP both read the block input.
    pub parallel_residual: bool,
    pub tied_embeddings: bool,
}

impl Config {
    /// Checks the shapes are consistent, so later code can index without fear.
    pub fn validate(&self, source: &str) -> Result<(), LmError> {
        let bad = |what: String| LmError::BadConfig {
            origin: source.to_string(),
            what,
        };
        if self.n_layers == 0 || self.d_model == 0 || self.n_heads == 0 || self.vocab_size == 0 {
            return Err(bad(
                "a zero size (layers, width, heads or vocabulary)".into()
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(bad(format!(
                "{} heads not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        if self.head_dim * self.n_heads != self.d_model && self.arch == Arch::GptNeox {
            return Err(bad("hidden size not divisible by the head count".into()));
        }
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return Err(bad(format!(
                "rotary dims {} must be even and at most head dim {}",
                self.rope_dims, self.head_dim
            )));
        }
        Ok(())
    }

    /// Reads the hyper-parameters from GGUF metadata (`{arch}.block_count` and friends).
    pub fn from_gguf(f: &GgufFile) -> Result<Config, LmError> {
        let src = f.path().display().to_string();
        let arch_name = f
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| LmError::BadConfig {
                origin: src.clone(),
                what: "no general.architecture".into(),
            })?
            .to_string();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "gptneox" => Arch::GptNeox,
            other => {
                return Err(LmError::UnknownArch {
                    origin: src,
                    arch: other.to_string(),
                })
            }
        };
        let int = |key: &str| -> Result<usize, LmError> {
            f.get(&format!("{arch_name}.{key}"))
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| LmError::BadConfig {
                    origin: src.clone(),
                    what: format!("missing {arch_name}.{key}"),
                })
        };
        let float = |key: &str| f.get(&format!("{arch_name}.{key}")).and_then(Value::as_f64);
        let d_model = int("embedding_length")?;
        let n_heads = int("attention.head_count")?;
        let n_kv_heads = int("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = int("attention.key_length").unwrap_or(d_model / n_heads.max(1));
        let embed = f.tensor("token_embd.weight");
        let vocab_size = match int("vocab_size") {
            Ok(v) => v,
            Err(e) => embed.map(|t| t.dims[1] as usize).ok_or(e)?,
        };
        let norm_eps = match arch {
            Arch::Llama => float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            Arch::GptNeox => float("attention.layer_norm_epsilon").unwrap_or(1e-5),
        };
        let cfg = Config {
            arch,
            n_layers: int("block_count")?,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: int("feed_forward_length")?,
            vocab_size,
            norm_eps,
            rope_base: float("rope.freq_base").unwrap_or(10_000.0),
            rope_dims: int("rope.dimension_count").unwrap_or(head_dim),
            rope_style: match arch {
                Arch::Llama => RopeStyle::Interleaved,
                Arch::GptNeox => RopeStyle::Half,
            },
            ctx_len: int("context_length").unwrap_or(2048),
            parallel_residual: f
                .get(&format!("{arch_name}.use_parallel_residual"))
                .and_then(Value::as_bool)
                .unwrap_or(arch == Arch::GptNeox),
            tied_embeddings: f.tensor("output.weight").is_none(),
        };
        cfg.validate(&src)?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (`model_type` `llama` or `gpt_neox`).
    pub fn from_hf_json(json: &serde_json::Value, source: &str) -> Result<Config, LmError> {
        let bad = |what: String| LmError::BadConfig {
            origin: source.to_string(),
            what,
        };
        let int = |key: &str| -> Result<usize, LmError> {
            json.get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("missing integer {key}")))
        };
        let float = |key: &str| json.get(key).and_then(serde_json::Value::as_f64);
        let flag = |key: &str| json.get(key).and_then(serde_json::Value::as_bool);
        let model_type = json
            .get("model_type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad("no model_type".into()))?;
        let d_model = int("hidden_size")?;
        let n_heads = int("num_attention_heads")?;
        let head_dim = int("head_dim").unwrap_or(d_model / n_heads.max(1));
        let cfg = match model_type {
            "llama" | "mistral" => Config {
                arch: Arch::Llama,
                n_layers: int("num_hidden_layers")?,
                d_model,
                n_heads,
                n_kv_heads: int("num_key_value_heads").unwrap_or(n_heads),
                head_dim,
                d_ff: int("intermediate_size")?,
                vocab_size: int("vocab_size")?,
                norm_eps: float("rms_norm_eps").unwrap_or(1e-6),
                rope_base: float("rope_theta").unwrap_or(10_000.0),
                rope_dims: head_dim,
                rope_style: RopeStyle::Half,
                ctx_len: int("max_position_embeddings").unwrap_or(2048),
                parallel_residual: false,
                tied_embeddings: flag("tie_word_embeddings").unwrap_or(false),
            },
            "gpt_neox" => Config {
                arch: Arch::GptNeox,
                n_layers: int("num_hidden_layers")?,
                d_model,
                n_heads,
                n_kv_heads: n_heads,
                head_dim,
                d_ff: int("intermediate_size")?,
                vocab_size: int("vocab_size")?,
                norm_eps: float("layer_norm_eps").unwrap_or(1e-5),
                rope_base: float("rotary_emb_base").unwrap_or(10_000.0),
                rope_dims: (head_dim as f64 * float("rotary_pct").unwrap_or(1.0)) as usize,
                rope_style: RopeStyle::Half,
                ctx_len: int("max_position_embeddings").unwrap_or(2048),
                parallel_residual: flag("use_parallel_residual").unwrap_or(true),
                tied_embeddings: flag("tie_word_embeddings").unwrap_or(false),
            },
            other => {
                return Err(LmError::UnknownArch {
                    origin: source.to_string(),
                    arch: other.to_string(),
                })
            }
        };
        if let Some(act) = json.get("hidden_act").and_then(serde_json::Value::as_str) {
            let ok = match cfg.arch {
                Arch::Llama => act == "silu",
                Arch::GptNeox => act == "gelu",
            };
            if !ok {
                return Err(bad(format!("unsupported hidden_act {act:?}")));
            }
        }
        cfg.validate(source)?;
        Ok(cfg)
    }
}
