//! OpenAI-compatible chat completions (`POST /v1/chat/completions`), both ends.
//!
//! * [`client`]: talks to any endpoint that speaks the protocol over plain HTTP — vLLM, the
//!   llama.cpp server, Ollama, or our own [`server`] — with no TLS or async stack.
//! * [`server`]: serves a Lantern LM on 127.0.0.1 with the model's chat template, so automated
//!   interpretability runs with no other software installed.
//! * [`http`]: the few parts of HTTP/1.1 both need.

pub mod api;
pub mod client;
pub mod error;
pub mod http;
pub mod server;

pub use api::{ChatRequest, ChatResponse, Message};
pub use client::Client;
pub use error::{ChatError, Result};
