//! [`Params`]: the named tensors of one CNN, in the fixed order documented in [`super`].

use super::{CnnConfig, CnnError};
use rand::Rng;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashSet;
use std::path::Path;

/// Tensors per block: conv1 w/b, ln1 γ/β, conv2 w/b, ln2 γ/β.
pub(crate) const PER_BLOCK: usize = 8;
/// Offsets of each tensor inside a block.
pub(crate) const CONV1_W: usize = 0;
pub(crate) const CONV1_B: usize = 1;
pub(crate) const LN1_G: usize = 2;
pub(crate) const LN1_B: usize = 3;
pub(crate) const CONV2_W: usize = 4;
pub(crate) const CONV2_B: usize = 5;
pub(crate) const LN2_G: usize = 6;
pub(crate) const LN2_B: usize = 7;

const BLOCK_SUFFIXES: [&str; PER_BLOCK] = [
    "conv1.weight",
    "conv1.bias",
    "ln1.weight",
    "ln1.bias",
    "conv2.weight",
    "conv2.bias",
    "ln2.weight",
    "ln2.bias",
];

/// All parameters (or gradients) of one CNN as named `f32` tensors in a fixed order.
///
/// The same type holds gradients and optimiser moments, so they can be combined
/// tensor by tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// Tensor values, row-major, in [`Params::names`] order.
    pub tensors: Vec<Vec<f32>>,
}

/// Names and shapes of every tensor of `cfg`, in the fixed order.
fn layout(cfg: &CnnConfig) -> (Vec<String>, Vec<Vec<usize>>) {
    let mut names = Vec::new();
    let mut shapes = Vec::new();
    for (b, &w) in cfg.widths.iter().enumerate() {
        let c_in = cfg.block_in(b);
        let block_shapes = [
            vec![w, c_in, 3, 3],
            vec![w],
            vec![w],
            vec![w],
            vec![w, w, 3, 3],
            vec![w],
            vec![w],
            vec![w],
        ];
        for (suffix, shape) in BLOCK_SUFFIXES.iter().zip(block_shapes) {
            names.push(format!("blocks.{b}.{suffix}"));
            shapes.push(shape);
        }
    }
    let last = *cfg.widths.last().unwrap_or(&0);
    names.push("head.weight".into());
    shapes.push(vec![cfg.classes, last]);
    names.push("head.bias".into());
    shapes.push(vec![cfg.classes]);
    (names, shapes)
}

impl Params {
    /// All-zero tensors shaped for `cfg` (gradient buffers, optimiser moments).
    pub fn zeros(cfg: &CnnConfig) -> Self {
        let (names, shapes) = layout(cfg);
        let tensors = shapes
            .iter()
            .map(|s| vec![0.0; s.iter().product()])
            .collect();
        Self {
            names,
            shapes,
            tensors,
        }
    }

    /// PyTorch-default initialisation: conv and linear weights and biases uniform in
    /// `±1/sqrt(fan_in)` (Kaiming-uniform with `a = sqrt(5)`), LayerNorm `γ = 1`, `β = 0`.
    pub fn init(cfg: &CnnConfig, rng: &mut impl Rng) -> Self {
        let mut p = Self::zeros(cfg);
        for i in 0..p.tensors.len() {
            let name = &p.names[i];
            if name.contains(".ln") {
                if name.ends_with("weight") {
                    p.tensors[i].fill(1.0);
                }
                continue;
            }
            // Weight and bias share the weight's fan-in; biases follow their weight.
            let w_shape = if name.ends_with("bias") {
                &p.shapes[i - 1]
            } else {
                &p.shapes[i]
            };
            let fan_in: usize = w_shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            for v in p.tensors[i].iter_mut() {
                *v = rng.gen_range(-bound..bound);
            }
        }
        p
    }

    /// Tensor names in the fixed order (`blocks.0.conv1.weight`, …, `head.bias`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Tensor shapes in the fixed order.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// Total number of scalar parameters.
    pub fn len(&self) -> usize {
        self.tensors.iter().map(Vec::len).sum()
    }

    /// Whether there are no parameters at all (never true for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All values concatenated in the fixed tensor order; the meta-model's input.
    pub fn flatten(&self) -> Vec<f32> {
        self.tensors.concat()
    }

    /// Inverse of [`Params::flatten`] for `cfg`; errors if the length does not match.
    pub fn from_flat(cfg: &CnnConfig, flat: &[f32]) -> Result<Self, CnnError> {
        let mut p = Self::zeros(cfg);
        if flat.len() != p.len() {
            return Err(CnnError::FlatLength {
                expected: p.len(),
                found: flat.len(),
            });
        }
        let mut off = 0;
        for t in p.tensors.iter_mut() {
            let n = t.len();
            t.copy_from_slice(&flat[off..off + n]);
            off += n;
        }
        Ok(p)
    }

    /// Tensor `k` (see the `CONV1_W`… offsets) of block `b`.
    pub(crate) fn block(&self, b: usize, k: usize) -> &[f32] {
        &self.tensors[b * PER_BLOCK + k]
    }

    /// Index of the head weight tensor (head bias follows it).
    pub(crate) fn head_index(&self) -> usize {
        self.tensors.len() - 2
    }

    /// Writes all tensors as F32 to a safetensors file, named as in [`Params::names`].
    pub fn save_safetensors(&self, path: &Path) -> Result<(), CnnError> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|t| t.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let fmt = |e: safetensors::SafeTensorError| CnnError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut views = Vec::with_capacity(bytes.len());
        for ((name, shape), data) in self.names.iter().zip(&self.shapes).zip(&bytes) {
            views.push((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data).map_err(fmt)?,
            ));
        }
        let out = safetensors::serialize(views, None).map_err(fmt)?;
        std::fs::write(path, out).map_err(|source| CnnError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a file written by [`Params::save_safetensors`] for the same `cfg`. Any missing,
    /// extra, non-F32 or differently shaped tensor is an error naming the file and tensor.
    pub fn load_safetensors(cfg: &CnnConfig, path: &Path) -> Result<Self, CnnError> {
        cfg.validate()?;
        let pb = || path.to_path_buf();
        let buf = std::fs::read(path).map_err(|source| CnnError::Io { path: pb(), source })?;
        let st = SafeTensors::deserialize(&buf).map_err(|e| CnnError::Format {
            path: pb(),
            message: e.to_string(),
        })?;
        let mut p = Self::zeros(cfg);
        let known: HashSet<&str> = p.names.iter().map(String::as_str).collect();
        let mut file_names = st.names();
        file_names.sort();
        if let Some(extra) = file_names.iter().find(|n| !known.contains(**n)) {
            return Err(CnnError::UnexpectedTensor {
                path: pb(),
                name: extra.to_string(),
            });
        }
        for i in 0..p.tensors.len() {
            let name = &p.names[i];
            let view = st.tensor(name).map_err(|_| CnnError::MissingTensor {
                path: pb(),
                name: name.clone(),
            })?;
            if view.dtype() != Dtype::F32 || view.shape() != p.shapes[i].as_slice() {
                return Err(CnnError::TensorMismatch {
                    path: pb(),
                    name: name.clone(),
                    expected: format!("F32 {:?}", p.shapes[i]),
                    found: format!("{:?} {:?}", view.dtype(), view.shape()),
                });
            }
            for (v, b) in p.tensors[i].iter_mut().zip(view.data().chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(p)
    }
}
