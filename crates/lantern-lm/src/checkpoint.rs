//! Checkpoints: GGUF files and Hugging Face folders (`config.json` + `*.safetensors`), read into
//! one uniform in-memory form keyed by llama.cpp's tensor names.

use std::path::{Path, PathBuf};

use crate::config::{Arch, Config};
use crate::error::{LmError, Result};
use crate::gguf::{GgmlType, GgufFile};
use crate::quant::{dequantize, QMatrix};

/// One weight tensor as loaded: always available as f32, and as the file's quantized blocks when
/// the file held a quantized matrix (used by the matrix-vector kernels).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Row-major shape, outermost first (`[out_features, in_features]` for a matrix).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub quant: Option<QMatrix>,
}

impl Loaded {
    /// Stacks matrices with the same row length on top of each other (fusing q/k/v, gate/up).
    pub fn concat_rows(parts: Vec<Loaded>, name: &str) -> Result<Loaded> {
        let cols = parts[0].shape.last().copied().unwrap_or(0);
        if parts
            .iter()
            .any(|p| p.shape.len() != 2 || p.shape[1] != cols)
        {
            return Err(LmError::BadTensor {
                origin: "checkpoint".into(),
                name: name.into(),
                what: "parts to fuse have different row lengths".into(),
            });
        }
        let rows = parts.iter().map(|p| p.shape[0]).sum();
        let same_ty = parts
            .iter()
            .all(|p| p.quant.as_ref().map(QMatrix::ty) == parts[0].quant.as_ref().map(QMatrix::ty));
        let quant = match (same_ty, parts[0].quant.as_ref()) {
            (true, Some(q0)) => {
                let mut bytes = Vec::new();
                for p in &parts {
                    bytes.extend_from_slice(p.quant.as_ref().map(QMatrix::data).unwrap_or(&[]));
                }
                Some(QMatrix::new(q0.ty(), rows, cols, bytes)?)
            }
            _ => None,
        };
        let data = parts.into_iter().flat_map(|p| p.data).collect();
        Ok(Loaded {
            shape: vec![rows, cols],
            data,
            quant,
        })
    }

    /// Reorders the rows of a matrix (or the entries of a vector): row `i` of the result is row
    /// `perm[i]` of `self`.
    pub fn permute_rows(self, perm: &[usize]) -> Result<Loaded> {
        let cols: usize = self.shape[1..].iter().product();
        let mut data = Vec::with_capacity(self.data.len());
        for &r in perm {
            data.extend_from_slice(&self.data[r * cols..(r + 1) * cols]);
        }
        let quant = match &self.quant {
            Some(q) => {
                let rb = q.data().len() / q.rows().max(1);
                let mut bytes = Vec::with_capacity(q.data().len());
                for &r in perm {
                    bytes.extend_from_slice(&q.data()[r * rb..(r + 1) * rb]);
                }
                Some(QMatrix::new(q.ty(), q.rows(), q.cols(), bytes)?)
            }
            None => None,
        };
        Ok(Loaded {
            shape: self.shape,
            data,
            quant,
        })
    }
}

/// An opened checkpoint.
pub enum Checkpoint {
    Gguf(Box<GgufFile>),
    HfFolder {
        dir: PathBuf,
        /// Memory maps of every `*.safetensors` file in the folder.
        files: Vec<(PathBuf, memmap2::Mmap)>,
    },
}

impl Checkpoint {
    /// Opens a `.gguf` file or a Hugging Face model folder.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_dir() {
            return open_hf_folder(path);
        }
        if !path.exists() {
            return Err(LmError::NotAModel(path.display().to_string()));
        }
        Ok(Checkpoint::Gguf(Box::new(GgufFile::open(path)?)))
    }

    /// Where the checkpoint came from, for error messages.
    pub fn source(&self) -> String {
        match self {
            Checkpoint::Gguf(f) => f.path().display().to_string(),
            Checkpoint::HfFolder { dir, .. } => dir.display().to_string(),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> Result<Config> {
        match self {
            Checkpoint::Gguf(f) => Config::from_gguf(f),
            Checkpoint::HfFolder { dir, .. } => {
                let p = dir.join("config.json");
                let text = std::fs::read_to_string(&p).map_err(|source| LmError::Io {
                    path: p.clone(),
                    source,
                })?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| LmError::BadConfig {
                        origin: p.display().to_string(),
                        what: e.to_string(),
                    })?;
                Config::from_hf_json(&json, &p.display().to_string())
            }
        }
    }

    /// Loads a tensor by its llama.cpp name (`blk.3.attn_q.weight`); `None` when absent.
    pub fn load(&self, arch: Arch, name: &str) -> Result<Option<Loaded>> {
        match self {
            Checkpoint::Gguf(f) => load_gguf(f, name),
            Checkpoint::HfFolder { files, .. } => {
                let hf = hf_name(arch, name);
                for (path, map) in files {
                    if let Some(t) = load_safetensor(path, map, &hf)? {
                        return Ok(Some(t));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Loads a tensor that must exist.
    pub fn require(&self, arch: Arch, name: &str) -> Result<Loaded> {
        self.load(arch, name)?
            .ok_or_else(|| LmError::MissingTensor {
                origin: self.source(),
                name: match self {
                    Checkpoint::Gguf(_) => name.to_string(),
                    Checkpoint::HfFolder { .. } => hf_name(arch, name),
                },
            })
    }
}

fn open_hf_folder(dir: &Path) -> Result<Checkpoint> {
    if !dir.join("config.json").exists() {
        return Err(LmError::NotAModel(dir.display().to_string()));
    }
    let io = |path: &Path, source| LmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(LmError::BadConfig {
            origin: dir.display().to_string(),
            what: "no *.safetensors file in the folder".into(),
        });
    }
    let mut files = Vec::new();
    for p in paths {
        let file = std::fs::File::open(&p).map_err(|e| io(&p, e))?;
        // SAFETY: read-only map of a checkpoint file.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(&p, e))?;
        safetensors::SafeTensors::deserialize(&map).map_err(|e| LmError::BadTensor {
            origin: p.display().to_string(),
            name: "(header)".into(),
            what: format!("not a valid safetensors file: {e}"),
        })?;
        files.push((p, map));
    }
    Ok(Checkpoint::HfFolder {
        dir: dir.to_path_buf(),
        files,
    })
}

fn load_gguf(f: &GgufFile, name: &str) -> Result<Option<Loaded>> {
    let Some(info) = f.tensor(name) else {
        return Ok(None);
    };
    let bad = |what: String| LmError::BadTensor {
        origin: f.path().display().to_string(),
        name: name.to_string(),
        what,
    };
    if info.dtype.block_layout().is_none() {
        return Err(bad(format!(
            "tensor type {} is not supported (Lantern reads F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
            info.dtype
        )));
    }
    let shape = info.shape();
    let bytes = f.tensor_bytes(info);
    let mut data = vec![0f32; info.n_elements() as usize];
    dequantize(info.dtype, bytes, &mut data)?;
    let quant = match (info.dtype, shape.len()) {
        (GgmlType::F32, _) | (_, 1) => None,
        (ty, 2) => Some(QMatrix::new(ty, shape[0], shape[1], bytes.to_vec())?),
        _ => return Err(bad(format!("unexpected shape {shape:?}"))),
    };
    Ok(Some(Loaded { shape, data, quant }))
}

fn load_safetensor(path: &Path, map: &[u8], name: &str) -> Result<Option<Loaded>> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(map).map_err(|e| LmError::BadTensor {
        origin: path.display().to_string(),
        name: name.into(),
        what: e.to_string(),
    })?;
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(LmError::BadTensor {
                origin: path.display().to_string(),
                name: name.into(),
                what: format!("dtype {other:?} is not a weight type (F32, F16, BF16)"),
            })
        }
    };
    Ok(Some(Loaded {
        shape: view.shape().to_vec(),
        data,
        quant: None,
    }))
}

/// Maps a llama.cpp tensor name to the Hugging Face name of the same weight.
pub fn hf_name(arch: Arch, name: &str) -> String {
    let (prefix, layer_prefix) = match arch {
        Arch::Llama => ("model.", "model.layers."),
        Arch::GptNeox => ("gpt_neox.", "gpt_neox.layers."),
    };
    let top = match (arch, name) {
        (Arch::Llama, "token_embd.weight") => Some("model.embed_tokens.weight".to_string()),
        (Arch::Llama, "output_norm.weight") => Some("model.norm.weight".to_string()),
        (Arch::Llama, "output.weight") => Some("lm_head.weight".to_string()),
        (Arch::GptNeox, "token_embd.weight") => Some("gpt_neox.embed_in.weight".to_string()),
        (Arch::GptNeox, "output.weight") => Some("embed_out.weight".to_string()),
        (Arch::GptNeox, n) if n.starts_with("output_norm.") => Some(format!(
            "{prefix}final_layer_norm.{}",
            &n["output_norm.".len()..]
        )),
        _ => None,
    };
    if let Some(t) = top {
        return t;
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return name.to_string();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return name.to_string();
    };
    let (stem, suffix) = part.rsplit_once('.').unwrap_or((part, "weight"));
    let hf_stem = match (arch, stem) {
        (Arch::Llama, "attn_norm") => "input_layernorm",
        (Arch::Llama, "attn_q") => "self_attn.q_proj",
        (Arch::Llama, "attn_k") => "self_attn.k_proj",
        (Arch::Llama, "attn_v") => "self_attn.v_proj",
        (Arch::Llama, "attn_output") => "self_attn.o_proj",
        (Arch::Llama, "ffn_norm") => "post_attention_layernorm",
        (Arch::Llama, "ffn_gate") => "mlp.gate_proj",
        (Arch::Llama, "ffn_up") => "mlp.up_proj",
        (Arch::Llama, "ffn_down") => "mlp.down_proj",
        (Arch::GptNeox, "attn_norm") => "input_layernorm",
        (Arch::GptNeox, "attn_qkv") => "attention.query_key_value",
        (Arch::GptNeox, "attn_output") => "attention.dense",
        (Arch::GptNeox, "ffn_norm") => "post_attention_layernorm",
        (Arch::GptNeox, "ffn_up") => "mlp.dense_h_to_4h",
        (Arch::GptNeox, "ffn_down") => "mlp.dense_4h_to_h",
        _ => stem,
    };
    format!("{layer_prefix}{layer}.{hf_stem}.{suffix}")
}
