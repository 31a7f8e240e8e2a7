//! The sparse autoencoder: parameters, encoder, decoder, and the on-disk formats.
//!
//! `pre = W_enc (x - b_dec) + b_enc`; the code keeps the top k of `relu(pre)` per row (TopK),
//! the top `k * batch` over the batch (BatchTopK), or all of `relu(pre)` (ReLU, trained with an
//! L1 penalty); `x̂ = b_dec + Σ_j c_j W_dec[j]` with unit-norm decoder rows.
//!
//! On disk it is EleutherAI sparsify's layout (`cfg.json` + `sae.safetensors` with
//! `encoder.weight [n, d_in]`, `encoder.bias [n]`, `W_dec [n, d_in]`, `b_dec [d_in]`, f32), and
//! [`Sae::export_saelens`] writes SAELens' (`W_enc [d_in, n]`, `W_dec`, `b_enc`, `b_dec`).

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SaeError};
use crate::linalg::{matmul_into, matmul_nt_bias, matmul_nt_bias_blocks, Mat};
use crate::topk::{batch_top_k, top_k, top_k_row, Codes};

/// How latents are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ReLU then the top k per row.
    TopK,
    /// ReLU then the top `k * batch` over the batch (k per row on average); at inference, the
    /// top k per row.
    BatchTopK,
    /// ReLU, every positive latent (the L1-penalised SAE of Cunningham et al.).
    Relu,
}

impl Activation {
    /// sparsify's `activation` string.
    pub fn name(self) -> &'static str {
        match self {
            Activation::TopK => "topk",
            Activation::BatchTopK => "batchtopk",
            Activation::Relu => "relu",
        }
    }
}

/// The shape and kind of an SAE; serialised as sparsify's `cfg.json` (plus our own keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Width of the activations it reads.
    pub d_in: usize,
    /// Number of latents.
    pub num_latents: usize,
    /// Latents kept per row (TopK, BatchTopK); ignored by ReLU.
    pub k: usize,
    /// Selection rule.
    pub activation: Activation,
    /// `num_latents / d_in`, as sparsify records it.
    pub expansion_factor: usize,
    /// Decoder rows kept at unit norm.
    pub normalize_decoder: bool,
    /// Train with the extra FVU at 4k latents (Multi-TopK).
    pub multi_topk: bool,
    /// sparsify keys we always write as false (no skip connection, not a transcoder).
    #[serde(default)]
    pub skip_connection: bool,
    #[serde(default)]
    pub transcode: bool,
    /// Encoder and decoder share one matrix (the paper's tied variant).
    #[serde(default)]
    pub tied: bool,
    /// L1 coefficient (ReLU SAEs).
    #[serde(default)]
    pub l1_coef: f32,
    /// The hook point and model it was trained on (ours; sparsify ignores unknown keys).
    #[serde(default)]
    pub hookpoint: String,
    #[serde(default)]
    pub model: String,
}

impl SaeConfig {
    /// A TopK SAE of `num_latents` latents over `d_in` dimensions.
    pub fn topk(d_in: usize, num_latents: usize, k: usize) -> SaeConfig {
        SaeConfig {
            d_in,
            num_latents,
            k,
            activation: Activation::TopK,
            expansion_factor: num_latents / d_in.max(1),
            normalize_decoder: true,
            multi_topk: false,
            skip_connection: false,
            transcode: false,
            tied: false,
            l1_coef: 0.0,
            hookpoint: String::new(),
            model: String::new(),
        }
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<()> {
        if self.d_in == 0 || self.num_latents == 0 {
            return Err(SaeError::Config(
                "d_in and num_latents must be positive".into(),
            ));
        }
        if self.activation != Activation::Relu && (self.k == 0 || self.k > self.num_latents) {
            return Err(SaeError::Config(format!(
                "k = {} must be between 1 and the number of latents ({})",
                self.k, self.num_latents
            )));
        }
        Ok(())
    }
}

/// A sparse autoencoder's parameters, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Sae {
    pub cfg: SaeConfig,
    /// `[num_latents, d_in]`.
    pub w_enc: Vec<f32>,
    /// `[num_latents]`.
    pub b_enc: Vec<f32>,
    /// `[num_latents, d_in]`, unit-norm rows.
    pub w_dec: Vec<f32>,
    /// `[d_in]`.
    pub b_dec: Vec<f32>,
}

/// What the encoder produced for a batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `x - b_dec`, `[rows, d_in]`.
    pub centered: Vec<f32>,
    /// Pre-activations `[rows, num_latents]`.
    pub pre: Vec<f32>,
    /// The selected latents.
    pub codes: Codes,
}

/// One per-row selection that [`Sae::encode_picks`] makes from the pre-activations: the `k`
/// largest positive ones among the `allowed` latents (all when `None`).
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub k: usize,
    pub allowed: Option<&'a [bool]>,
}

impl Sae {
    /// A fresh SAE: random unit decoder rows, the encoder equal to them (the decoder's transpose
    /// in matrix terms), zero biases.
    pub fn init(cfg: SaeConfig, seed: u64) -> Result<Sae> {
        cfg.validate()?;
        let (n, d) = (cfg.num_latents, cfg.d_in);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut w_dec: Vec<f32> = (0..n * d)
            .map(|_| {
                // Box-Muller: isotropic directions after normalisation.
                let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect();
        normalize_rows(&mut w_dec, d);
        // ReLU codes sum over about half of all latents: Σ_j relu(w_j·x) w_j ≈ n x / (2 d) for
        // random unit rows, so an untied encoder starts scaled by 2d/n to reconstruct x at the
        // right size. TopK sums only k terms and keeps the plain transpose.
        let enc_scale = match cfg.activation {
            Activation::Relu if !cfg.tied => (2.0 * d as f32 / n as f32).min(1.0),
            _ => 1.0,
        };
        Ok(Sae {
            w_enc: w_dec.iter().map(|w| w * enc_scale).collect(),
            b_enc: vec![0.0; n],
            w_dec,
            b_dec: vec![0.0; d],
            cfg,
        })
    }

    /// `x - b_dec`, row by row: the encoder's input.
    fn center(&self, x: &[f32]) -> Vec<f32> {
        let mut centered = x.to_vec();
        centered
            .par_chunks_mut(self.cfg.d_in)
            .for_each(|r| r.iter_mut().zip(&self.b_dec).for_each(|(a, b)| *a -= b));
        centered
    }

    /// Encodes `x` `[rows, d_in]`: pre-activations and the selected latents.
    pub fn encode(&self, x: &[f32], training: bool) -> Encoded {
        let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
        let rows = x.len() / d;
        let centered = self.center(x);
        let mut pre = vec![0f32; rows * n];
        matmul_nt_bias(&centered, &self.w_enc, &self.b_enc, rows, n, d, &mut pre);
        let codes = match self.cfg.activation {
            Activation::TopK => top_k(&pre, n, self.cfg.k, None),
            Activation::BatchTopK if training => batch_top_k(&pre, n, self.cfg.k),
            Activation::BatchTopK => top_k(&pre, n, self.cfg.k, None),
            Activation::Relu => relu_codes(&pre, n),
        };
        Encoded {
            centered,
            pre,
            codes,
        }
    }

    /// Encodes `x` `[rows, d_in]` for a training step: `x - b_dec` and one set of codes per
    /// pick, made from each block of pre-activations while it is in cache (the pre-activation
    /// matrix itself, the step's largest, is never kept). Where the CPU has AMX or AVX512-BF16
    /// the blocks are a bf16 screen whose survivors are decided in f32 ([`crate::screen`]),
    /// else the f32 product.
    pub fn encode_picks(&self, x: &[f32], picks: &[Pick<'_>]) -> (Vec<f32>, Vec<Codes>) {
        let centered = self.center(x);
        #[cfg(target_arch = "x86_64")]
        {
            let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
            let dims = (centered.len() / d, n, d);
            if let Some((codes, _)) =
                crate::screen::encode_picks(&centered, &self.w_enc, &self.b_enc, dims, picks)
            {
                return (centered, codes);
            }
        }
        let codes = self.picks_f32(&centered, picks);
        (centered, codes)
    }

    /// [`Sae::encode_picks`] on the f32 product, from the centred input.
    fn picks_f32(&self, centered: &[f32], picks: &[Pick<'_>]) -> Vec<Codes> {
        let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
        let rows = centered.len() / d;
        let dims = (rows, n, d);
        let blocks = matmul_nt_bias_blocks(centered, &self.w_enc, &self.b_enc, dims, |_, pre| {
            picks
                .iter()
                .map(|p| {
                    pre.chunks_exact(n)
                        .map(|row| top_k_row(row, p.k, p.allowed))
                        .collect()
                })
                .collect::<Vec<Vec<_>>>()
        });
        Codes::from_blocks(picks.len(), blocks)
    }

    /// Decodes codes to `[rows, d_in]`: `b_dec + Σ c_j W_dec[j]` (`with_bias = false` leaves out
    /// `b_dec`, as AuxK's residual reconstruction needs).
    pub fn decode(&self, codes: &Codes, with_bias: bool) -> Vec<f32> {
        let d = self.cfg.d_in;
        let mut out = vec![0f32; codes.rows() * d];
        out.par_chunks_mut(d).enumerate().for_each(|(r, o)| {
            if with_bias {
                o.copy_from_slice(&self.b_dec);
            }
            let (idx, val) = codes.row_slices(r);
            for (i, (&j, &v)) in idx.iter().zip(val).enumerate() {
                // The decoder row two codes ahead is fetched while this one is added.
                if let Some(&ahead) = idx.get(i + 2) {
                    let ahead = ahead as usize;
                    crate::linalg::prefetch(&self.w_dec[ahead * d..(ahead + 1) * d]);
                }
                let j = j as usize;
                crate::linalg::axpy(v, &self.w_dec[j * d..(j + 1) * d], o);
            }
        });
        out
    }

    /// Decodes dense codes `[rows, num_latents]` with one matrix product (ReLU SAEs, where
    /// many latents fire early in training).
    pub fn decode_dense(&self, acts: &[f32]) -> Vec<f32> {
        let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
        let rows = acts.len() / n;
        let mut out = vec![0f32; rows * d];
        out.par_chunks_mut(d)
            .for_each(|o| o.copy_from_slice(&self.b_dec));
        matmul_into(
            Mat::new(acts, rows, n),
            Mat::new(&self.w_dec, n, d),
            &mut out,
            1.0,
        );
        out
    }

    /// Reconstructs `x` `[rows, d_in]` (inference: TopK per row for BatchTopK).
    pub fn reconstruct(&self, x: &[f32]) -> (Vec<f32>, Codes) {
        let enc = self.encode(x, false);
        let out = self.decode(&enc.codes, true);
        (out, enc.codes)
    }

    /// Writes `dir/cfg.json` and `dir/sae.safetensors` in sparsify's layout, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
        let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
        let tensors = [
            ("encoder.weight", vec![n, d], &self.w_enc),
            ("encoder.bias", vec![n], &self.b_enc),
            ("W_dec", vec![n, d], &self.w_dec),
            ("b_dec", vec![d], &self.b_dec),
        ];
        write_safetensors(&dir.join("sae.safetensors"), &tensors)?;
        let cfg = serde_json::to_vec_pretty(&self.cfg).expect("config serialises");
        write_atomic(&dir.join("cfg.json"), &cfg)
    }

    /// Loads an SAE saved in sparsify's layout (ours or sparsify's own).
    pub fn load(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join("cfg.json");
        let text = std::fs::read(&cfg_path).map_err(|e| SaeError::io(&cfg_path, e))?;
        let raw: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| SaeError::bad_file(&cfg_path, format!("not JSON: {e}")))?;
        let st_path = dir.join("sae.safetensors");
        let mut t = read_safetensors(&st_path)?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let (got, data) = t
                .remove(name)
                .ok_or_else(|| SaeError::bad_file(&st_path, format!("no tensor {name}")))?;
            if got != shape {
                return Err(SaeError::bad_file(
                    &st_path,
                    format!("{name} has shape {got:?}, expected {shape:?}"),
                ));
            }
            Ok(data)
        };
        let cfg = config_from_json(&raw, &cfg_path)?;
        let (n, d) = (cfg.num_latents, cfg.d_in);
        let sae = Sae {
            w_enc: take("encoder.weight", &[n, d])?,
            b_enc: take("encoder.bias", &[n])?,
            w_dec: take("W_dec", &[n, d])?,
            b_dec: take("b_dec", &[d])?,
            cfg,
        };
        Ok(sae)
    }

    /// Writes the SAELens layout: `dir/cfg.json` and `dir/sae_weights.safetensors` with
    /// `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]`.
    pub fn export_saelens(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
        let (n, d) = (self.cfg.num_latents, self.cfg.d_in);
        let w_enc_t: Vec<f32> = (0..d * n)
            .map(|ij| self.w_enc[(ij % n) * d + ij / n])
            .collect();
        let tensors = [
            ("W_enc", vec![d, n], &w_enc_t),
            ("W_dec", vec![n, d], &self.w_dec),
            ("b_enc", vec![n], &self.b_enc),
            ("b_dec", vec![d], &self.b_dec),
        ];
        write_safetensors(&dir.join("sae_weights.safetensors"), &tensors)?;
        let arch = match self.cfg.activation {
            Activation::TopK => "topk",
            Activation::BatchTopK => "batchtopk",
            Activation::Relu => "standard",
        };
        let mut cfg = serde_json::json!({
            "architecture": arch,
            "d_in": d,
            "d_sae": n,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": true,
            "normalize_activations": "none",
            "hook_name": self.cfg.hookpoint,
            "model_name": self.cfg.model,
            "metadata": {"hook_name": self.cfg.hookpoint, "model_name": self.cfg.model},
        });
        if self.cfg.activation != Activation::Relu {
            cfg["k"] = self.cfg.k.into();
        }
        let bytes = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        write_atomic(&dir.join("cfg.json"), &bytes)
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.w_enc.len() + self.b_enc.len() + self.w_dec.len() + self.b_dec.len()
    }
}

/// Every positive pre-activation as a code.
fn relu_codes(pre: &[f32], n: usize) -> Codes {
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(n)
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(_, &v)| v > 0.0)
                .map(|(i, &v)| (i as u32, v))
                .collect()
        })
        .collect();
    Codes::from_rows(rows)
}

/// Scales each row of a `[_, d]` matrix to unit norm.
pub fn normalize_rows(m: &mut [f32], d: usize) {
    m.par_chunks_mut(d).for_each(normalize_row);
}

/// Scales one row to unit norm (a zero row stays zero).
pub fn normalize_row(r: &mut [f32]) {
    let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        r.iter_mut().for_each(|x| *x /= norm);
    }
}

/// sparsify's cfg.json to our config: its keys, with ours optional.
fn config_from_json(raw: &serde_json::Value, path: &Path) -> Result<SaeConfig> {
    let bad = |what: String| SaeError::bad_file(path, what);
    let get = |k: &str| raw.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let d_in = get("d_in").ok_or_else(|| bad("no d_in".into()))?;
    let num_latents = match get("num_latents") {
        Some(n) if n > 0 => n,
        _ => {
            let ef = get("expansion_factor").ok_or_else(|| bad("no num_latents".into()))?;
            ef * d_in
        }
    };
    let activation = match raw
        .get("activation")
        .and_then(|v| v.as_str())
        .unwrap_or("topk")
    {
        "topk" => Activation::TopK,
        "batchtopk" => Activation::BatchTopK,
        "relu" => Activation::Relu,
        other => return Err(bad(format!("unknown activation {other:?}"))),
    };
    let flag = |k: &str| raw.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    if flag("skip_connection") || flag("transcode") {
        return Err(bad(
            "skip connections and transcoders are not supported".into()
        ));
    }
    let text = |k: &str| {
        raw.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let cfg = SaeConfig {
        d_in,
        num_latents,
        k: get("k").unwrap_or(0),
        activation,
        expansion_factor: num_latents / d_in.max(1),
        normalize_decoder: raw
            .get("normalize_decoder")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        multi_topk: flag("multi_topk"),
        skip_connection: false,
        transcode: false,
        tied: flag("tied"),
        l1_coef: raw.get("l1_coef").and_then(|v| v.as_f64()).unwrap_or(0.0) as f32,
        hookpoint: text("hookpoint"),
        model: text("model"),
    };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Writes named f32 tensors as safetensors, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, &Vec<f32>)]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .expect("shape matches data");
            (name.to_string(), view)
        })
        .collect();
    let data = safetensors::serialize(views, None)
        .map_err(|e| SaeError::bad_file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &data)
}

/// Tensors by name: shape and f32 data.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a safetensors file as f32 (F32, F16 or BF16 stored).
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(|e| SaeError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| SaeError::bad_file(path, format!("not a safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(SaeError::bad_file(
                    path,
                    format!("tensor {name} has unsupported dtype {other:?}"),
                ))
            }
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| SaeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SaeError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_gives_unit_decoder_rows_and_a_matching_encoder() {
        let sae = Sae::init(SaeConfig::topk(8, 32, 4), 1).unwrap();
        for r in sae.w_dec.chunks(8) {
            let n: f32 = r.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        assert_eq!(sae.w_enc, sae.w_dec);
    }

    #[test]
    fn a_latent_aligned_input_is_reconstructed_by_that_latent() {
        let mut sae = Sae::init(SaeConfig::topk(8, 32, 1), 2).unwrap();
        sae.b_dec = vec![0.5; 8];
        let x: Vec<f32> = sae.w_dec[5 * 8..6 * 8]
            .iter()
            .zip(&sae.b_dec)
            .map(|(w, b)| 3.0 * w + b)
            .collect();
        let (out, codes) = sae.reconstruct(&x);
        assert_eq!(codes.row(0).map(|(j, _)| j).collect::<Vec<_>>(), vec![5]);
        for (o, xi) in out.iter().zip(&x) {
            assert!((o - xi).abs() < 1e-4, "{out:?} vs {x:?}");
        }
    }

    /// The block-by-block selections of a training step equal top-k over the whole
    /// pre-activation matrix (several blocks of rows, a masked pick, a pick wider than k), from
    /// the f32 blocks and from whatever `encode_picks` runs here (on an AMX CPU, the screen).
    #[test]
    fn picks_match_top_k_of_the_whole_pre_activation_matrix() {
        let (d, n, rows) = (24, 160, 250);
        let mut sae = Sae::init(SaeConfig::topk(d, n, 5), 2).unwrap();
        sae.b_enc
            .iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = (j % 7) as f32 * 0.1 - 0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let x: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let allowed: Vec<bool> = (0..n).map(|j| j % 3 == 0).collect();
        let picks = [
            Pick {
                k: 5,
                allowed: None,
            },
            Pick {
                k: 20,
                allowed: None,
            },
            Pick {
                k: 12,
                allowed: Some(&allowed),
            },
        ];
        let (centered, got) = sae.encode_picks(&x, &picks);
        let whole = sae.encode(&x, true);
        assert_eq!(centered, whole.centered);
        let f32_blocks = sae.picks_f32(&centered, &picks);
        assert_eq!(f32_blocks[0], whole.codes);
        // The same latents either way; values to f32 rounding (the AMX path recomputes them
        // as dot products, in another order of additions than the product's).
        assert_eq!(got[0].idx, whole.codes.idx);
        for (p, codes) in picks.iter().cycle().zip(got.iter().chain(&f32_blocks)) {
            let want = top_k(&whole.pre, n, p.k, p.allowed);
            assert_eq!(codes.idx, want.idx);
            assert_eq!(codes.offsets, want.offsets);
            let worst = codes.val.iter().zip(&want.val).map(|(a, b)| (a - b).abs());
            assert!(worst.fold(0f32, f32::max) < 1e-5);
        }
        assert!(got[2].idx.iter().all(|&j| j % 3 == 0) && got[2].nnz() > rows);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(Sae::init(SaeConfig::topk(8, 4, 5), 0).is_err());
        assert!(Sae::init(SaeConfig::topk(0, 4, 1), 0).is_err());
    }
}
