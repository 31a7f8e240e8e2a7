//! Lantern's LM runtime: GGUF and safetensors checkpoints, tokenizers, the Llama and GPT-NeoX
//! architectures with named hook points, generation and perplexity.

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod gguf;
pub mod hooks;
pub mod model;
pub mod pool;
pub mod quant;
pub mod runtime;
pub mod tokenizer;

pub use error::{LmError, Result};
pub use hooks::{BlockSite, HookPoint, Hooks};
pub use model::{KvCache, LogitsFor, Model, WeightMode};
