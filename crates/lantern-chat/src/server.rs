//! An OpenAI-compatible chat server for a Lantern LM on loopback: `POST /v1/chat/completions`
//! (non-streaming), `GET /v1/models`, `GET /health`. Requests are answered one generation at a
//! time (a 2-core machine gains nothing from interleaving them) on a thread per connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lantern_lm::runtime::{self, Lm, Sampling};
use serde_json::{json, Value};

use crate::api::{
    ChatRequest, ChatResponse, Choice, ChoiceLogprobs, Message, TokenLogprob, TopLogprob, Usage,
};
use crate::http::{read_message, write_response};
use crate::{ChatError, Result};

/// Tokens generated when a request names no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 256;

struct State {
    lm: Mutex<Lm>,
    name: String,
    next_id: AtomicU64,
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

impl Server {
    /// Binds `addr` (e.g. `127.0.0.1:8080`; port 0 picks a free one) to serve `lm` as `name`.
    pub fn bind(lm: Lm, name: &str, addr: &str) -> Result<Server> {
        let listener = TcpListener::bind(addr)?;
        Ok(Server {
            listener,
            state: Arc::new(State {
                lm: Mutex::new(lm),
                name: name.to_string(),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The API root clients use: `http://ADDR/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.local_addr())
    }

    /// Serves forever.
    pub fn run(self) -> Result<()> {
        for conn in self.listener.incoming() {
            let Ok(stream) = conn else { continue };
            let state = Arc::clone(&self.state);
            std::thread::spawn(move || handle(stream, &state));
        }
        Ok(())
    }

    /// Serves on a background thread (for the lifetime of the process).
    pub fn spawn(self) -> JoinHandle<Result<()>> {
        std::thread::spawn(move || self.run())
    }
}

fn handle(mut stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let (status, body) = match read_message(&mut stream, false) {
        Ok(req) => route(&req, state),
        Err(e) => (400, error_body(&format!("unreadable request: {e}"))),
    };
    let _ = write_response(&mut stream, status, body.to_string().as_bytes());
}

fn error_body(msg: &str) -> Value {
    json!({ "error": { "message": msg, "type": "invalid_request_error" } })
}

fn route(req: &crate::http::Message, state: &State) -> (u16, Value) {
    let path = req.start.1.split('?').next().unwrap_or("");
    match (req.start.0.as_str(), path) {
        ("GET", "/health") => (200, json!({ "status": "ok" })),
        ("GET", "/v1/models") => (
            200,
            json!({ "object": "list", "data": [{ "id": state.name, "object": "model", "owned_by": "lantern" }] }),
        ),
        ("POST", "/v1/chat/completions") => {
            let parsed: std::result::Result<ChatRequest, _> = serde_json::from_slice(&req.body);
            let reply = match parsed {
                Err(e) => Err(ChatError::BadRequest(format!("request body: {e}"))),
                Ok(r) => {
                    let lm = state.lm.lock().unwrap_or_else(|p| p.into_inner());
                    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
                    complete(&lm, &state.name, id, &r)
                }
            };
            match reply {
                Ok(r) => (200, serde_json::to_value(r).expect("response serializes")),
                Err(ChatError::BadRequest(m)) => (400, error_body(&m)),
                Err(e) => (500, error_body(&e.to_string())),
            }
        }
        (_, "/v1/chat/completions" | "/v1/models" | "/health") => {
            (405, error_body("method not allowed"))
        }
        _ => (404, error_body(&format!("no route {path}"))),
    }
}

/// Answers one chat request with `lm`: the model's chat template, then sampling as asked.
pub fn complete(lm: &Lm, name: &str, id: u64, req: &ChatRequest) -> Result<ChatResponse> {
    if req.stream == Some(true) {
        return Err(ChatError::BadRequest("streaming is not supported".into()));
    }
    if req.messages.is_empty() {
        return Err(ChatError::BadRequest("messages is empty".into()));
    }
    if let Some(m) = req
        .messages
        .iter()
        .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
    {
        return Err(ChatError::BadRequest(format!("unknown role {:?}", m.role)));
    }
    let turns: Vec<(&str, &str)> = req
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    let text = lm
        .tokenizer
        .apply_chat_template(&turns, true)
        .map_err(lantern_lm::LmError::from)?;
    let prompt = lm
        .tokenizer
        .encode(&text, false)
        .map_err(lantern_lm::LmError::from)?;
    let ctx = lm.model.cfg.ctx_len;
    if prompt.len() >= ctx {
        return Err(ChatError::BadRequest(format!(
            "prompt of {} tokens does not fit the model's context of {ctx}",
            prompt.len()
        )));
    }
    let s = Sampling {
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.unwrap_or(0),
        max_tokens: req
            .max_tokens
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .min(ctx - prompt.len()),
        stop_ids: lm.tokenizer.eos_ids(),
    };
    let top = req.top_logprobs.unwrap_or(0);
    if top > 20 {
        return Err(ChatError::BadRequest(
            "top_logprobs must be at most 20".into(),
        ));
    }
    let want_logprobs = req.logprobs == Some(true);
    let mut logprobs = Vec::new();
    let gen = runtime::generate_with_logits(&lm.model, &prompt, &s, |id, logits| {
        if want_logprobs && !s.stop_ids.contains(&id) {
            logprobs.push(token_logprob(lm, id, logits, top));
        }
    })?;
    let ended = gen.ids.last().is_some_and(|i| s.stop_ids.contains(i));
    let visible = gen.visible(&s.stop_ids);
    let mut content = lm
        .tokenizer
        .decode(&visible)
        .map_err(lantern_lm::LmError::from)?;
    let stops = req.stop.as_ref().map(|s| s.list()).unwrap_or_default();
    let cut = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| content.find(s.as_str()))
        .min();
    if let Some(at) = cut {
        content.truncate(at);
    }
    let finish = if ended || cut.is_some() {
        "stop"
    } else {
        "length"
    };
    Ok(ChatResponse {
        id: format!("chatcmpl-{id}"),
        object: "chat.completion".into(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: name.to_string(),
        choices: vec![Choice {
            index: 0,
            message: Message::new("assistant", content),
            finish_reason: Some(finish.into()),
            logprobs: want_logprobs.then_some(ChoiceLogprobs { content: logprobs }),
        }],
        usage: Some(Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: gen.ids.len(),
            total_tokens: prompt.len() + gen.ids.len(),
        }),
    })
}

/// The log-probability of `id` under `logits`, with the `top` most likely tokens.
fn token_logprob(lm: &Lm, id: u32, logits: &[f32], top: usize) -> TokenLogprob {
    let lse = runtime::log_sum_exp(logits);
    let text = |i: u32| String::from_utf8_lossy(&lm.tokenizer.token_to_piece(i)).to_string();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let top = top.min(order.len());
    if top > 0 {
        order.select_nth_unstable_by(top - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
    }
    order.truncate(top);
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    TokenLogprob {
        token: text(id),
        logprob: logits[id as usize] as f64 - lse,
        top_logprobs: order
            .into_iter()
            .map(|i| TopLogprob {
                token: text(i),
                logprob: logits[i as usize] as f64 - lse,
            })
            .collect(),
    }
}
