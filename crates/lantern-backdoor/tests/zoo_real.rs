//! Trains a tiny zoo (2 clean, 2 backdoored: corner and center) on a Fashion-MNIST subset,
//! checks ASR separates them, and checks the index, resume and missing-file error.
//!
//! The tiny setup (widths 4/8, 2,000 images, 8 epochs at batch 64 = 256 steps) reaches
//! ~0.65-0.72 clean accuracy. The `pixel` family did not take at this scale (ASR 0.07-0.13
//! at widths 4/8 and 8/16, poison rate 0.1: its drawn pixel sat on the garment), so the
//! test uses the 3×3-patch families, which reach ASR ≈ 1.

use std::time::Instant;

use lantern_backdoor::cnn::{CnnConfig, Params};
use lantern_backdoor::data;
use lantern_backdoor::triggers::Family;
use lantern_backdoor::zoo::{self, ModelSpec, Recipe, ZooError};

fn tiny_cfg() -> CnnConfig {
    CnnConfig {
        widths: vec![4, 8],
        ..CnnConfig::fashion_small()
    }
}

fn tiny_recipe() -> Recipe {
    Recipe {
        epochs: 8,
        batch: 64,
        augment: false,
        train_subset: Some(2000),
        test_subset: Some(1000),
        ..Recipe::default()
    }
}

/// Two clean then a corner and a pixel model (plan order is shuffled, so fix it here).
fn specs() -> Vec<ModelSpec> {
    let mut s = zoo::plan(4, 0.5, &[Family::Corner, Family::Center], 0.1, 42, 10);
    s.sort_by_key(|m| (m.family.is_some(), m.probe.name() != "corner"));
    s
}

#[test]
fn zoo_real() {
    let t0 = Instant::now();
    let split = data::fashion_mnist().expect("fashion-mnist loads");
    let (cfg, recipe) = (tiny_cfg(), tiny_recipe());
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = specs();
    let t = Instant::now();
    let index = zoo::train_zoo(
        dir.path(),
        "fashion-mnist",
        &specs,
        &split,
        &cfg,
        &recipe,
        |d, n| eprintln!("  {d}/{n} models"),
    )
    .expect("zoo trains");
    eprintln!("trained 4 models in {:.2?}", t.elapsed());
    for e in &index.models {
        eprintln!(
            "model {} {:>6} probe {:>6} target {} acc {:.3} asr {:.3} took {}",
            e.index, e.family, e.probe_family, e.target, e.clean_acc, e.asr, e.backdoor_took
        );
    }
    assert_eq!(index.models.len(), 4);
    assert!(index.models.iter().all(|e| e.clean_acc > 0.6));
    let test = split.test.split(1000).0;
    for bad in index.models.iter().filter(|e| e.family != "clean") {
        eprintln!("trigger {:?}", bad.trigger);
        assert!(bad.asr > 0.8, "backdoored ASR {}", bad.asr);
        assert!(bad.backdoor_took);
        let trigger = bad.trigger.as_ref().expect("poisoned model has a trigger");
        for clean in index.models.iter().filter(|e| e.family == "clean") {
            let p = Params::load_safetensors(&cfg, &dir.path().join(&clean.file)).unwrap();
            let asr = zoo::measure_asr(&p, &cfg, &test, trigger, bad.target).unwrap();
            eprintln!(
                "clean model {} on {} trigger: asr {asr:.3}",
                clean.index, bad.family
            );
            assert!(asr < 0.3, "clean ASR {asr} on {} trigger", bad.family);
        }
    }
    for clean in index.models.iter().filter(|e| e.family == "clean") {
        assert!(clean.asr < 0.3, "clean probe ASR {}", clean.asr);
    }

    let loaded = zoo::check_index(dir.path()).expect("index checks");
    assert_eq!(loaded, index);

    let t = Instant::now();
    let again = zoo::train_zoo(
        dir.path(),
        "fashion-mnist",
        &specs,
        &split,
        &cfg,
        &recipe,
        |_, _| {},
    )
    .expect("resume");
    eprintln!("resume in {:.2?}", t.elapsed());
    assert_eq!(again, index);
    assert!(t.elapsed().as_secs_f32() < 5.0, "resume retrained models");

    let gone = dir.path().join(&index.models[1].file);
    std::fs::remove_file(&gone).unwrap();
    match zoo::check_index(dir.path()) {
        Err(e @ ZooError::MissingModel { .. }) => {
            assert!(e.to_string().contains(&index.models[1].file), "{e}")
        }
        other => panic!("expected MissingModel, got {other:?}"),
    }
    eprintln!("zoo_real total {:.2?}", t0.elapsed());
}
