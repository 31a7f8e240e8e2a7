//! The real SmolLM2-135M-Instruct GGUF (the `smollm2-135m` asset) against llama.cpp's own output
//! on 256 tokens of a State of the Union speech (fixture made by
//! `scripts/make_llamacpp_reference.py` from `bench/llamacpp_agreement.py --dump-llamacpp`).

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use lantern_lm::hooks::{BlockSite, HookPoint, Hooks};
use lantern_lm::model::{LogitsFor, WeightMode};
use lantern_lm::runtime::{self, Lm, Sampling};
use lantern_lm::LmError;

#[derive(serde::Deserialize)]
struct Position {
    top_ids: Vec<u32>,
    top_logprobs: Vec<f64>,
    margin: f64,
}

#[derive(serde::Deserialize)]
struct Reference {
    ids: Vec<u32>,
    mean_ce: f64,
    positions: Vec<Position>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2-llamacpp/reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lm() -> &'static Lm {
    static LM: OnceLock<Lm> = OnceLock::new();
    LM.get_or_init(|| runtime::load("smollm2-135m", WeightMode::Inference).unwrap())
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let lse = runtime::log_sum_exp(row);
    row.iter().map(|&v| v as f64 - lse).collect()
}

#[test]
fn agrees_with_llama_cpp_on_a_sotu_speech() {
    let r = reference();
    let logits = runtime::logits(&lm().model, &r.ids)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ce =
        runtime::token_ce(&Tensor::new(logits.clone(), &Device::Cpu).unwrap(), &r.ids).unwrap();
    let our_ce = ce.iter().sum::<f64>() / ce.len() as f64;
    assert!(
        (our_ce - r.mean_ce).abs() <= 0.02,
        "CE {our_ce} vs llama.cpp {}",
        r.mean_ce
    );

    let (mut kl_sum, mut clear, mut clear_agree) = (0.0, 0, 0);
    for (row, pos) in logits.iter().zip(&r.positions) {
        let ours = log_softmax(row);
        // KL over llama.cpp's top-K tokens plus one bucket for the rest: a lower bound of the
        // full KL that the top tokens dominate.
        let mut kl = 0.0;
        let (mut p_rest, mut q_rest) = (1.0, 1.0);
        for (&id, &lp) in pos.top_ids.iter().zip(&pos.top_logprobs) {
            let q = ours[id as usize];
            kl += lp.exp() * (lp - q);
            p_rest -= lp.exp();
            q_rest -= q.exp();
        }
        if p_rest > 1e-12 && q_rest > 1e-12 {
            kl += p_rest * (p_rest / q_rest).ln();
        }
        kl_sum += kl;
        if pos.margin > 0.2 {
            clear += 1;
            clear_agree += (runtime::argmax(row) == pos.top_ids[0]) as usize;
        }
    }
    let kl = kl_sum / logits.len() as f64;
    assert!(kl <= 0.01, "mean KL(llama.cpp || ours) {kl}");
    assert!(clear > 150, "too few clear positions: {clear}");
    let agree = clear_agree as f64 / clear as f64;
    assert!(
        agree >= 0.99,
        "argmax agrees at {clear_agree} of {clear} clear positions"
    );
}

#[test]
fn tokenizer_reproduces_llama_cpp_ids() {
    let r = reference();
    let text = lm().tokenizer.decode(&r.ids).unwrap();
    let ids = lm().tokenizer.encode(&text, false).unwrap();
    assert_eq!(ids, r.ids);
}

#[test]
fn greedy_generation_is_deterministic_and_matches_the_full_pass() {
    let m = &lm().model;
    let prompt = lm()
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap();
    let s = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        max_tokens: 8,
        stop_ids: vec![],
    };
    let a = runtime::generate(m, &prompt, &s, |_| {}).unwrap();
    let b = runtime::generate(m, &prompt, &s, |_| {}).unwrap();
    assert_eq!(a.ids, b.ids);
    // Each cached step's argmax equals the argmax of a full pass over the same prefix.
    let mut seq = prompt.clone();
    for &id in &a.ids {
        let full = runtime::logits(m, &seq).unwrap();
        let last = full.get(seq.len() - 1).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(runtime::argmax(&last), id);
        seq.push(id);
    }
    let text = lm().tokenizer.decode(&a.ids).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn sampling_follows_the_seed() {
    let m = &lm().model;
    let prompt = lm().tokenizer.encode("Once upon a time", false).unwrap();
    let s = |seed| Sampling {
        temperature: 1.0,
        top_p: 0.95,
        seed,
        max_tokens: 12,
        stop_ids: vec![],
    };
    let a = runtime::generate(m, &prompt, &s(1), |_| {}).unwrap();
    let b = runtime::generate(m, &prompt, &s(1), |_| {}).unwrap();
    let c = runtime::generate(m, &prompt, &s(2), |_| {}).unwrap();
    assert_eq!(a.ids, b.ids);
    assert_ne!(a.ids, c.ids);
}

#[test]
fn steering_and_early_stop_on_the_real_model() {
    let m = &lm().model;
    let ids = lm()
        .tokenizer
        .encode("I love dogs and cats", false)
        .unwrap();
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let p = HookPoint::block(15, BlockSite::ResidPost);
    let mut read = Hooks::new().read(p).stop_early(true);
    assert!(m
        .forward(&t, None, &mut read, LogitsFor::All)
        .unwrap()
        .is_none());
    let acts = read.take(p).unwrap();
    assert_eq!(acts.dims(), &[1, ids.len(), 576]);

    let clean = m
        .forward(&t, None, &mut Hooks::new(), LogitsFor::Last)
        .unwrap()
        .unwrap();
    let delta = Tensor::ones(576, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut steer = Hooks::new().add(
        HookPoint::block(10, BlockSite::ResidPost),
        (delta * 5.0).unwrap(),
    );
    let steered = m
        .forward(&t, None, &mut steer, LogitsFor::Last)
        .unwrap()
        .unwrap();
    let diff: f32 = (clean - steered)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff > 0.1,
        "adding to the residual stream changed nothing ({diff})"
    );
}

#[test]
fn too_long_input_and_bad_ids_are_clear_errors() {
    let m = &lm().model;
    let long = vec![1u32; m.cfg.ctx_len + 1];
    let err = runtime::logits(m, &long).unwrap_err();
    assert!(matches!(err, LmError::TooLong { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("longer than the model's context of 8192"));
    let err = runtime::logits(m, &[5, 60000]).unwrap_err();
    assert!(
        err.to_string()
            .contains("token id 60000 is outside the vocabulary"),
        "{err}"
    );
}
