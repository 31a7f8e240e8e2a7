//! A chat-completions client for any OpenAI-compatible endpoint reachable over plain HTTP.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::api::{ChatRequest, ChatResponse, Message};
use crate::http::read_message;
use crate::{ChatError, Result};

/// An endpoint: `base` is the API root, e.g. `http://127.0.0.1:8080/v1`.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    host: String,
    port: u16,
    path: String,
    /// Sent as the request's `model`.
    pub model: String,
    /// Sent as a bearer token when set (`OPENAI_API_KEY` style).
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl Client {
    /// A client for `base` (`http://host[:port]/prefix`). `https://` is refused with a clear error:
    /// put a local proxy in front of a TLS endpoint.
    pub fn new(base: &str, model: &str) -> Result<Client> {
        let err = |what: &str| ChatError::Connect {
            url: base.to_string(),
            what: what.to_string(),
        };
        let rest = if let Some(r) = base.strip_prefix("http://") {
            r
        } else if base.starts_with("https://") {
            return Err(err(
                "https is not supported: use a plain-HTTP endpoint or a local proxy",
            ));
        } else {
            return Err(err("expected a URL starting with http://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| err("bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            path: format!("/{}", path.trim_end_matches('/')),
            model: model.to_string(),
            api_key: None,
            timeout: Duration::from_secs(600),
        })
    }

    /// The API root this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `messages` and returns the first choice's text.
    pub fn chat(
        &self,
        messages: &[Message],
        max_tokens: usize,
        temperature: f64,
    ) -> Result<String> {
        let req = ChatRequest {
            max_tokens: Some(max_tokens),
            temperature: Some(temperature),
            ..self.request(messages)
        };
        let resp = self.complete(&req)?;
        resp.choices
            .into_iter()
            .next()
            .map(|c| c.message.content)
            .ok_or_else(|| ChatError::Reply {
                url: self.url(),
                what: "no choices".into(),
            })
    }

    /// Asks for one token at temperature 0 and returns it with the endpoint's `top` most likely
    /// first tokens and their log-probabilities (empty when the endpoint gives none).
    pub fn first_token_logprobs(
        &self,
        messages: &[Message],
        top: usize,
    ) -> Result<(String, Vec<(String, f64)>)> {
        let req = ChatRequest {
            max_tokens: Some(1),
            temperature: Some(0.0),
            logprobs: Some(true),
            top_logprobs: Some(top),
            ..self.request(messages)
        };
        let resp = self.complete(&req)?;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(ChatError::Reply {
                url: self.url(),
                what: "no choices".into(),
            });
        };
        let tops = choice
            .logprobs
            .and_then(|l| l.content.into_iter().next())
            .map(|t| {
                t.top_logprobs
                    .into_iter()
                    .map(|x| (x.token, x.logprob))
                    .collect()
            })
            .unwrap_or_default();
        Ok((choice.message.content, tops))
    }

    /// A non-streaming request for `messages` to this client's model, seed 0.
    fn request(&self, messages: &[Message]) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: messages.to_vec(),
            seed: Some(0),
            stream: Some(false),
            ..ChatRequest::default()
        }
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.base)
    }

    /// Sends a full request.
    pub fn complete(&self, req: &ChatRequest) -> Result<ChatResponse> {
        let url = self.url();
        let connect = |what: String| ChatError::Connect {
            url: url.clone(),
            what,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| connect(e.to_string()))?
            .next()
            .ok_or_else(|| connect("host has no address".into()))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| connect(e.to_string()))?;
        s.set_read_timeout(Some(self.timeout))?;
        let body = serde_json::to_vec(req).expect("request serializes");
        let auth = self
            .api_key
            .as_ref()
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "POST {}/chat/completions HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.path.trim_end_matches('/'),
            self.host,
            self.port,
            body.len()
        )?;
        s.write_all(&body)?;
        let m = read_message(&mut s, true).map_err(|e| ChatError::Reply {
            url: url.clone(),
            what: e.to_string(),
        })?;
        let status: u16 = m.start.1.parse().unwrap_or(0);
        if status != 200 {
            return Err(ChatError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&m.body).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&m.body).map_err(|e| ChatError::Reply {
            url,
            what: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_urls() {
        let c = Client::new("http://127.0.0.1:8080/v1/", "m").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("127.0.0.1", 8080, "/v1")
        );
        assert_eq!(c.base(), "http://127.0.0.1:8080/v1");
        let c = Client::new("http://localhost", "m").unwrap();
        assert_eq!((c.port, c.path.as_str()), (80, "/"));
        let e = Client::new("https://api.openai.com/v1", "m").unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(Client::new("ftp://x", "m").is_err());
        assert!(Client::new("http://x:notaport/v1", "m").is_err());
    }

    #[test]
    fn a_refused_connection_names_the_url() {
        // Bind then drop a listener: nothing listens on that port now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}/v1"), "m").unwrap();
        let e = c.chat(&[Message::new("user", "hi")], 4, 0.0).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("127.0.0.1:{port}/v1/chat/completions")),
            "{e}"
        );
    }
}
