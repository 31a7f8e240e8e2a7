//! GPT-NeoX (Pythia-shaped) against the logits and activations Hugging Face `transformers`
//! computed for the committed tiny random checkpoints (see `fixtures/tiny-gpt-neox/README.md`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use lantern_lm::checkpoint::Checkpoint;
use lantern_lm::hooks::{BlockSite, HookPoint, Hooks};
use lantern_lm::model::{KvCache, LogitsFor, Model, WeightMode};
use lantern_lm::runtime;

fn fixture(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-gpt-neox")
        .join(variant)
}

fn load(variant: &str, mode: WeightMode) -> Model {
    let ckpt = Checkpoint::open(&fixture(variant)).unwrap();
    Model::load(&ckpt, mode).unwrap()
}

fn sequences(variant: &str) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixture(variant).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v["sequences"].clone()).unwrap()
}

fn reference(variant: &str, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(variant).join(file), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn check_logits(variant: &str, mode: WeightMode) {
    let model = load(variant, mode);
    let refs = reference(variant, "logits.safetensors");
    for (i, ids) in sequences(variant).iter().enumerate() {
        let ours = runtime::logits(&model, ids).unwrap();
        let diff = max_abs_diff(&ours, &refs[&format!("logits_{i}")]);
        assert!(diff < 1e-4, "{variant} sequence {i}: max |Δlogit| {diff}");
    }
}

#[test]
fn parallel_residual_logits_match_transformers() {
    check_logits("parallel", WeightMode::Inference);
}

#[test]
fn sequential_residual_logits_match_transformers() {
    check_logits("sequential", WeightMode::Inference);
}

#[test]
fn trainable_weights_give_the_same_logits() {
    check_logits("parallel", WeightMode::Trainable);
}

#[test]
fn hook_points_match_transformers_activations() {
    for variant in ["parallel", "sequential"] {
        let model = load(variant, WeightMode::Inference);
        let refs = reference(variant, "hidden.safetensors");
        let ids = &sequences(variant)[0];
        let t = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut hooks = Hooks::new()
            .read(HookPoint::Embed)
            .read(HookPoint::FinalNorm);
        for l in 0..3 {
            for s in [
                BlockSite::AttnOut,
                BlockSite::MlpAct,
                BlockSite::MlpOut,
                BlockSite::ResidPost,
            ] {
                hooks = hooks.read(HookPoint::block(l, s));
            }
        }
        model.forward(&t, None, &mut hooks, LogitsFor::All).unwrap();
        let mut check = |point: HookPoint, name: &str| {
            let ours = hooks.take(point).unwrap().squeeze(0).unwrap();
            let diff = max_abs_diff(&ours, &refs[name]);
            assert!(diff < 1e-4, "{variant} {point} vs {name}: {diff}");
        };
        check(HookPoint::Embed, "hidden_0");
        check(HookPoint::FinalNorm, "hidden_3");
        for l in 0..3 {
            check(
                HookPoint::block(l, BlockSite::AttnOut),
                &format!("attn_out_{l}"),
            );
            check(
                HookPoint::block(l, BlockSite::MlpAct),
                &format!("mlp_act_{l}"),
            );
            check(
                HookPoint::block(l, BlockSite::MlpOut),
                &format!("mlp_out_{l}"),
            );
            check(
                HookPoint::block(l, BlockSite::ResidPost),
                &format!("resid_post_{l}"),
            );
        }
    }
}

#[test]
fn kv_cache_decoding_matches_a_full_pass() {
    // The fused inference path and the differentiable candle path keep the cache differently.
    for mode in [WeightMode::Inference, WeightMode::Trainable] {
        check_kv_cache(mode);
    }
}

fn check_kv_cache(mode: WeightMode) {
    let model = load("parallel", mode);
    let ids = &sequences("parallel")[1];
    let full = runtime::logits(&model, ids).unwrap();
    let mut cache = KvCache::new(&model.cfg, ids.len());
    let split = 11;
    let first = runtime::step(&model, &ids[..split], &mut cache).unwrap();
    let row = |i: usize| full.get(i).unwrap().to_vec1::<f32>().unwrap();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
    assert!(close(&first, &row(split - 1)));
    for (i, &id) in ids.iter().enumerate().skip(split) {
        let l = runtime::step(&model, &[id], &mut cache).unwrap();
        assert!(
            close(&l, &row(i)),
            "{mode:?}: position {i} differs with the cache"
        );
    }
}

#[test]
fn ragged_batch_matches_single_sequences() {
    let model = load("sequential", WeightMode::Inference);
    let seqs = sequences("sequential");
    let batch = runtime::forward_batch(&model, &seqs, &mut Hooks::new())
        .unwrap()
        .unwrap();
    for (i, s) in seqs.iter().enumerate() {
        let single = runtime::logits(&model, s).unwrap();
        let rows = batch.get(i).unwrap().narrow(0, 0, s.len()).unwrap();
        let diff = max_abs_diff(&rows, &single);
        assert!(diff < 1e-4, "sequence {i}: batched differs by {diff}");
    }
}

#[test]
fn replacing_an_activation_changes_only_later_points() {
    let model = load("parallel", WeightMode::Inference);
    let ids = &sequences("parallel")[0];
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let p = HookPoint::block(1, BlockSite::MlpOut);
    let zero = Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut hooks = Hooks::new()
        .read(HookPoint::block(1, BlockSite::ResidMid))
        .replace(p, zero)
        .read(HookPoint::block(1, BlockSite::ResidPost));
    model.forward(&t, None, &mut hooks, LogitsFor::All).unwrap();
    let mid = hooks
        .take(HookPoint::block(1, BlockSite::ResidMid))
        .unwrap();
    let post = hooks
        .take(HookPoint::block(1, BlockSite::ResidPost))
        .unwrap();
    // With the MLP output zeroed, the block's output is exactly its residual after attention.
    assert_eq!(max_abs_diff(&mid, &post), 0.0);
    let refs = reference("parallel", "hidden.safetensors");
    let hf_post = refs["resid_post_1"].unsqueeze(0).unwrap();
    assert!(
        max_abs_diff(&post, &hf_post) > 1e-2,
        "the replacement had no effect"
    );
}

#[test]
fn stopping_early_returns_no_logits_and_keeps_the_activation() {
    let model = load("parallel", WeightMode::Inference);
    let ids = &sequences("parallel")[0];
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let p = HookPoint::block(0, BlockSite::ResidPost);
    let mut hooks = Hooks::new().read(p).stop_early(true);
    let out = model.forward(&t, None, &mut hooks, LogitsFor::All).unwrap();
    assert!(out.is_none());
    let refs = reference("parallel", "hidden.safetensors");
    let diff = max_abs_diff(
        &hooks.take(p).unwrap().squeeze(0).unwrap(),
        &refs["resid_post_0"],
    );
    assert!(diff < 1e-4);
}

#[test]
fn gradients_flow_to_weights_and_input_embeddings() {
    let model = load("parallel", WeightMode::Trainable);
    assert!(!model.vars().is_empty());
    let ids = &sequences("parallel")[0];
    let t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let emb = candle_core::Var::from_tensor(&model.embed(&t).unwrap()).unwrap();
    let logits = model
        .forward_embeds(emb.as_tensor(), None, &mut Hooks::new(), LogitsFor::All)
        .unwrap()
        .unwrap();
    let loss = logits.sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads
        .get(emb.as_tensor())
        .expect("no gradient for input embeddings");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
    // Every weight but the input embedding table (bypassed by feeding embeddings) gets one.
    for (name, v) in model.vars() {
        let has = grads.get(v.as_tensor()).is_some();
        assert_eq!(
            has,
            name != "token_embd.weight",
            "{name}: gradient present = {has}"
        );
    }
}

#[test]
fn corrupt_checkpoints_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("parallel");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let err = Checkpoint::open(dir.path())
        .err()
        .expect("truncated file accepted")
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "mamba".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    let err = Checkpoint::open(dir.path())
        .unwrap()
        .config()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unsupported architecture \"mamba\""), "{err}");
}
