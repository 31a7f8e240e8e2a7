//! The error type of the LM runtime.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Asset(#[from] lantern_assets::AssetError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: unsupported architecture {arch:?} (Lantern implements llama and gpt_neox)")]
    UnknownArch { origin: String, arch: String },
    #[error("{origin}: bad model config: {what}")]
    BadConfig { origin: String, what: String },
    #[error("{origin}: tensor {name}: {what}")]
    BadTensor {
        origin: String,
        name: String,
        what: String,
    },
    #[error("{origin}: missing tensor {name}")]
    MissingTensor { origin: String, name: String },
    #[error("{0}: not a model: expected an asset name, a .gguf file or a Hugging Face folder with config.json")]
    NotAModel(String),
    #[error("input of {len} tokens is longer than the model's context of {ctx} tokens")]
    TooLong { len: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadTokenId { id: u32, vocab: usize },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Cache(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the LM runtime.
pub type Result<T, E = LmError> = std::result::Result<T, E>;
