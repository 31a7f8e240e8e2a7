//! The base CNN of the backdoor meta-model paper (Langosco et al. 2023), written in plain
//! Rust with a hand-written backward pass so that thousands of tiny models can be trained
//! on CPU quickly.
//!
//! # Architecture
//!
//! For an input of `C × H × W` and channel widths `w_0, w_1, …` (paper: 16/32/64, small
//! scale: 8/16/32) each block `b` is
//!
//! ```text
//! conv3x3(pad 1) -> LayerNorm -> ReLU -> conv3x3(pad 1) -> maxpool 2x2 -> LayerNorm -> ReLU
//! ```
//!
//! followed by a global max-pool over `H × W` and a linear layer to `classes` logits.
//!
//! The LayerNorms normalise over the whole `(C, H, W)` activation of one sample (as
//! `nn.LayerNorm([C, H, W])` would) but carry a *per-channel* affine `γ, β` of size `C`
//! rather than a per-element one: that keeps the parameter count independent of the image
//! size and makes the network permutation-equivariant in its hidden channels (see
//! [`permute_hidden_units`]). The 2×2 max-pool floors odd sizes (7 → 3), as PyTorch does.
//!
//! Activations of a chunk of samples live in a zero-padded channel-major layout
//! (`grid.rs`) in which every 3×3 tap is a constant offset, so a convolution is a sum of
//! shifted input channels computed by AVX2/FMA register tiles over long contiguous runs
//! (`kernels.rs`; scalar loops elsewhere), with no im2col matrix and no gemm packing. A
//! batch runs as chunks of a few samples in parallel with rayon. Measured on the 1×28×28,
//! 8/16/32 network at batch 128 on one thread: ~35 ms per training step, against 58–63 ms
//! with im2col + gemm on the same layers and ~400 ms with direct per-tap loops.
//!
//! # Parameter order
//!
//! [`Params`] holds tensors in this fixed order (the meta-model reads [`Params::flatten`]):
//! for each block `b`: `blocks.b.conv1.weight [w, c_in, 3, 3]`, `blocks.b.conv1.bias [w]`,
//! `blocks.b.ln1.weight [w]` (γ), `blocks.b.ln1.bias [w]` (β), `blocks.b.conv2.weight
//! [w, w, 3, 3]`, `blocks.b.conv2.bias [w]`, `blocks.b.ln2.weight [w]`, `blocks.b.ln2.bias
//! [w]`; then `head.weight [classes, w_last]`, `head.bias [classes]`.

mod backward;
mod conv;
mod forward;
mod grid;
mod kernels;
mod optim;
mod params;
mod permute;
#[cfg(test)]
mod tests;

pub(crate) use backward::input_grad;
pub use backward::loss_and_grad;
pub use forward::{accuracy, forward, predict, Logits};
pub use optim::{clip_grad_norm, triangle_lr, AdamW, TRIANGLE_PEAK_FRACTION};
pub use params::Params;
pub use permute::permute_hidden_units;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Shape of a CNN: input image size, channel width of each block and number of classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Channels of the input image (1 for Fashion-MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Input image height in pixels.
    pub height: usize,
    /// Input image width in pixels.
    pub width: usize,
    /// Output channels of each block; one block per entry.
    pub widths: Vec<usize>,
    /// Number of output classes (logits).
    pub classes: usize,
}

impl CnnConfig {
    /// The small-scale paper CNN for 1×28×28 Fashion-MNIST: widths 8/16/32, 10 classes.
    pub fn fashion_small() -> Self {
        Self {
            in_channels: 1,
            height: 28,
            width: 28,
            widths: vec![8, 16, 32],
            classes: 10,
        }
    }

    /// Values per input image (`in_channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// Spatial size `(h, w)` of the input of block `b` (each block halves it, flooring).
    pub(crate) fn block_hw(&self, b: usize) -> (usize, usize) {
        (self.height >> b, self.width >> b)
    }

    /// Input channels of block `b`.
    pub(crate) fn block_in(&self, b: usize) -> usize {
        if b == 0 {
            self.in_channels
        } else {
            self.widths[b - 1]
        }
    }

    /// Checks that the configuration describes a usable network.
    pub fn validate(&self) -> Result<(), CnnError> {
        let bad = |msg: &str| Err(CnnError::BadConfig(msg.to_string()));
        if self.in_channels == 0 || self.classes == 0 {
            return bad("in_channels and classes must be positive");
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return bad("widths must be non-empty and positive");
        }
        let (h, w) = self.block_hw(self.widths.len());
        if h == 0 || w == 0 {
            return bad("image too small for the number of blocks (each halves H and W)");
        }
        Ok(())
    }
}

/// A gray `hw × hw` test config with the given block widths and classes.
#[cfg(test)]
pub(crate) fn test_config(hw: usize, widths: &[usize], classes: usize) -> CnnConfig {
    CnnConfig {
        in_channels: 1,
        height: hw,
        width: hw,
        widths: widths.to_vec(),
        classes,
    }
}

/// Errors from building, reading or writing CNN parameters.
#[derive(Debug, thiserror::Error)]
pub enum CnnError {
    /// The configuration cannot describe a network.
    #[error("bad CNN config: {0}")]
    BadConfig(String),
    /// A flat parameter vector has the wrong length for the configuration.
    #[error("flat parameter vector has {found} values, config needs {expected}")]
    FlatLength {
        /// Values the config needs.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the safetensors parser said.
        message: String,
    },
    /// A tensor the config needs is missing from the file.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// The file holds a tensor the config does not have.
    #[error("{path}: unexpected tensor `{name}` (not in this CNN config)")]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor in the file has a different shape or dtype than the config needs.
    #[error("{path}: tensor `{name}` is {found}, config needs {expected}")]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Expected dtype and shape.
        expected: String,
        /// Found dtype and shape.
        found: String,
    },
}
