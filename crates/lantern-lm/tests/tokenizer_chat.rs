//! Chat templates rendered by hand must equal what Jinja2 renders from the real templates
//! (`tokenizer_fixtures/chat_templates.json`, made by `make_chat_fixture.py`): SmolLM2's (from
//! its GGUF), Qwen2.5's, Llama 3.0, 3.1 and 2's.

mod tokenizer_common;

use lantern_lm::gguf::GgufFile;
use lantern_lm::tokenizer::{ChatFormat, Tokenizer};
use serde_json::Value;
use tokenizer_common::{smollm2_gguf, LlamaCppIds};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tokenizer_fixtures/chat_templates.json"
    );
    serde_json::from_slice(&std::fs::read(path).expect("read fixture")).expect("parse fixture")
}

#[test]
fn renders_like_jinja() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let t = &fx["templates"][name];
        let format = ChatFormat::detect(
            t["text"].as_str().unwrap(),
            t["bos"].as_str().unwrap(),
            t["eos"].as_str().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages: Vec<(String, String)> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m[0].as_str().unwrap().to_string(),
                    m[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let got = format.render(&messages, gen);
        match case["expected"].as_str() {
            Some(want) => assert_eq!(got.unwrap(), want, "{name} {messages:?} gen={gen}"),
            None => assert!(
                got.is_err(),
                "{name} {messages:?}: Jinja raised, we rendered"
            ),
        }
    }
}

#[test]
fn smollm2_chat_prompt_encodes_like_llama_cpp() {
    let tok = Tokenizer::from_gguf(&GgufFile::open(smollm2_gguf()).unwrap()).unwrap();
    let prompt = tok
        .apply_chat_template(&[("user", "What is 2+2?")], true)
        .unwrap();
    let fx = LlamaCppIds::load();
    let i = fx
        .texts
        .iter()
        .position(|t| *t == prompt)
        .expect("prompt is a fixture text");
    let ids = tok.encode(&prompt, false).unwrap();
    assert_eq!(ids, fx.ids("smollm2", true)[i]);
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    assert_eq!(tok.decode(&ids).unwrap(), prompt);
    assert_eq!(
        tok.eos_ids(),
        vec![0, 2, 4],
        "<|endoftext|>, <|im_end|>, <reponame>"
    );
    assert!(tok.is_eog(2));
    assert_eq!(tok.bos_id(), Some(1));
    assert!(!tok.add_bos_default());
}
