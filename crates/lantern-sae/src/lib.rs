//! Sparse autoencoders on a transformer LM's activations.
//!
//! * [`sae`]: the autoencoder (TopK, BatchTopK, ReLU + L1; tied or untied), its encoder and
//!   decoder, and the on-disk formats (sparsify's layout, SAELens export).
//! * [`screen`] (x86-64): the encoder's top-k picks screened by a bf16 product (AMX tiles or
//!   AVX512-BF16) and decided in f32, where the CPU has either.
//! * [`train`]: the trainer: a hand-written forward and backward in which only the encoder matmul
//!   is dense, Adam with warm-up, dead-latent tracking, AuxK and Multi-TopK, checkpoints.
//! * [`device`]: the same TopK training step as dense tensor operations on any candle device:
//!   the GPU path (`cuda` feature).
//! * [`corpus`] and [`source`]: documents from a corpus spec, streamed through the LM in context
//!   windows, activations at any set of hook points from one pass, shuffled in a mixing buffer.
//! * [`metrics`]: FVU, L0, dead and dense fractions, and the LM's loss with the reconstruction
//!   spliced in.
//! * [`basis`]: SAE latents and the baselines they are compared with (neurons, PCA, random).
//! * [`patch`]: feature patching on indirect object identification, greedy over any basis.
//! * [`examples`], [`interp`] and [`autointerp`]: examples of what a direction responds to, and
//!   explaining and scoring them through an OpenAI-compatible chat endpoint.
//! * [`report`] and [`plot`]: the HTML feature report and SVG charts.

pub mod autointerp;
pub mod basis;
pub mod cache;
pub mod corpus;
pub mod device;
pub mod error;
pub mod examples;
pub mod interp;
pub mod linalg;
pub mod median;
pub mod metrics;
pub mod patch;
pub mod plot;
pub mod report;
pub mod run;
pub mod sae;
#[cfg(target_arch = "x86_64")]
pub mod screen;
pub mod source;
pub mod sparse_ops;
pub mod topk;
pub mod train;

pub use error::{Result, SaeError};
pub use sae::{Activation, Sae, SaeConfig};
