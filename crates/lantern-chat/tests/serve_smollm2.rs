//! The chat server on the real SmolLM2-135M-Instruct, spoken to through our own client and raw
//! HTTP: the served answer equals a direct greedy generation with the chat template.

use std::io::{Read, Write};
use std::net::TcpStream;

use lantern_chat::api::{ChatRequest, Stop};
use lantern_chat::server::Server;
use lantern_chat::{ChatError, Client, Message};
use lantern_lm::model::WeightMode;
use lantern_lm::runtime::{self, Sampling, DEFAULT_MODEL};

fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_chat_completions_like_a_direct_generation() {
    let lm = runtime::load(DEFAULT_MODEL, WeightMode::Inference).unwrap();
    let question = "What is the capital of France?";
    // The reference: the chat template, then greedy decoding, without the server.
    let text = lm
        .tokenizer
        .apply_chat_template(&[("user", question)], true)
        .unwrap();
    let prompt = lm.tokenizer.encode(&text, false).unwrap();
    let s = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_tokens: 12,
        stop_ids: lm.tokenizer.eos_ids(),
    };
    let direct = runtime::generate(&lm.model, &prompt, &s, |_| {}).unwrap();
    let ids = direct.visible(&s.stop_ids);
    let want = lm.tokenizer.decode(&ids).unwrap();

    let server = Server::bind(lm, "smollm2", "127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let client = Client::new(&server.url(), "smollm2").unwrap();
    server.spawn();

    let got = client
        .chat(&[Message::new("user", question)], 12, 0.0)
        .unwrap();
    assert_eq!(got, want);
    // A stop string: the answer's second word.
    let word = want
        .split_whitespace()
        .nth(1)
        .expect("a reply of two words")
        .to_string();

    // Usage counts and a stop string.
    let req = ChatRequest {
        model: "x".into(),
        messages: vec![Message::new("user", question)],
        max_tokens: Some(12),
        temperature: Some(0.0),
        stop: Some(Stop::One(word.clone())),
        ..ChatRequest::default()
    };
    let r = client.complete(&req).unwrap();
    let u = r.usage.unwrap();
    assert_eq!(u.prompt_tokens, prompt.len());
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        r.choices[0].message.content,
        want[..want.find(&word).unwrap()]
    );

    // Log-probabilities of the first token: the greedy token is the most likely one, the top
    // list is sorted, and its probabilities sum to at most 1.
    let (first, tops) = client
        .first_token_logprobs(&[Message::new("user", question)], 5)
        .unwrap();
    assert_eq!(tops.len(), 5);
    assert_eq!(tops[0].0, first);
    assert!(want.starts_with(&first), "{first:?} vs {want:?}");
    assert!(tops.windows(2).all(|w| w[0].1 >= w[1].1));
    let mass: f64 = tops.iter().map(|t| t.1.exp()).sum();
    assert!(mass > 0.0 && mass <= 1.0 + 1e-6, "{mass}");

    // Bad requests get 400 with a message, unknown routes 404.
    let mut bad = req.clone();
    bad.messages.clear();
    match client.complete(&bad).unwrap_err() {
        ChatError::Status { status, body, .. } => {
            assert_eq!(status, 400);
            assert!(body.contains("messages is empty"), "{body}");
        }
        e => panic!("{e}"),
    }
    bad = req.clone();
    bad.stream = Some(true);
    assert!(client
        .complete(&bad)
        .unwrap_err()
        .to_string()
        .contains("streaming"));
    let resp = raw(
        addr,
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\n\r\n{oops",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(addr, "GET /v1/models HTTP/1.1\r\n\r\n");
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"smollm2\""),
        "{resp}"
    );
    let resp = raw(addr, "GET /nowhere HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}
