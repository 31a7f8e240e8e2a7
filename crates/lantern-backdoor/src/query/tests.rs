//! Tests of the candle CNN forward and the query detector.

use super::*;
use crate::cnn;
use crate::metrics::auroc;
use candle_core::DType;
use rand::Rng;

/// A random-init CNN with LayerNorm γ/β moved away from 1/0 so affine bugs show.
fn random_cnn(cfg: &CnnConfig, rng: &mut StdRng) -> Params {
    let mut p = Params::init(cfg, rng);
    for i in 0..p.tensors.len() {
        if p.names()[i].contains(".ln") {
            let base = if p.names()[i].ends_with("weight") {
                1.0
            } else {
                0.0
            };
            for v in p.tensors[i].iter_mut() {
                *v = base + rng.gen_range(-0.5..0.5);
            }
        }
    }
    p
}

fn random_images(cfg: &CnnConfig, n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n * cfg.image_len())
        .map(|_| rng.gen_range(0.0..1.0))
        .collect()
}

fn check_matches_plain_forward(cfg: &CnnConfig, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = random_cnn(cfg, &mut rng);
    let n = 5;
    let images = random_images(cfg, n, &mut rng);
    let want = cnn::forward(&p, cfg, &images, n);
    let shape = (n, cfg.in_channels, cfg.height, cfg.width);
    let x = Tensor::from_vec(images, shape, &Device::Cpu).unwrap();
    let got = cnn_logits(&p, cfg, &x).unwrap();
    assert_eq!(got.dims(), [n, cfg.classes]);
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, (a, b)) in got.iter().zip(&want.data).enumerate() {
        assert!((a - b).abs() < 1e-4, "logit {i}: candle {a} vs plain {b}");
    }
}

#[test]
fn cnn_logits_matches_plain_forward() {
    let cfg = crate::cnn::test_config(12, &[4, 8], 10);
    check_matches_plain_forward(&cfg, 1);
}

#[test]
fn cnn_logits_matches_plain_forward_odd_sizes_and_channels() {
    // 14 -> 7 -> 3 (the 7x7 max-pool floors), and 3 input channels.
    let cfg = CnnConfig {
        in_channels: 3,
        height: 14,
        width: 10,
        widths: vec![4, 6, 5],
        classes: 7,
    };
    check_matches_plain_forward(&cfg, 2);
}

#[test]
fn cnn_logits_rejects_wrong_image_shape() {
    let cfg = small_cfg();
    let p = Params::init(&cfg, &mut StdRng::seed_from_u64(0));
    let x = Tensor::zeros((2, 1, 10, 12), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        cnn_logits(&p, &cfg, &x),
        Err(QueryError::Shape(_))
    ));
}

/// 2×2 max-pool of `[N, C, H, W]` flooring odd sizes, from candle reductions (candle's own
/// `max_pool2d` backward scales the gradient by 1/4 and misaligns odd sizes).
fn maxpool2(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let (ph, pw) = (h / 2, w / 2);
    let x = x
        .narrow(2, 0, 2 * ph)
        .unwrap()
        .narrow(3, 0, 2 * pw)
        .unwrap();
    let x = x
        .contiguous()
        .unwrap()
        .reshape(vec![n, c, ph, 2, pw, 2])
        .unwrap();
    x.max(5).unwrap().max(3).unwrap()
}

/// Reference CNN built from candle ops (native conv2d, LayerNorm and pooling by hand) for
/// one model on images `[N, C, H, W]`.
fn graph_logits(p: &Params, cfg: &CnnConfig, x: &Tensor) -> Tensor {
    let t = |i: usize| Tensor::from_slice(&p.tensors[i], p.shapes()[i].as_slice(), &Device::Cpu);
    let t = |i| t(i).unwrap();
    let conv = |x: &Tensor, i| {
        let b = t(i + 1).reshape((1, (), 1, 1)).unwrap();
        x.conv2d(&t(i), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b)
            .unwrap()
    };
    let ln_relu = |x: &Tensor, i| -> candle_core::Result<Tensor> {
        let flat = x.flatten_from(1)?;
        let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let xhat = centred
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .reshape(x.shape())?;
        let g = t(i).reshape((1, (), 1, 1))?;
        let b = t(i + 1).reshape((1, (), 1, 1))?;
        xhat.broadcast_mul(&g)?.broadcast_add(&b)?.relu()
    };
    let mut x = x.clone();
    for b in 0..cfg.widths.len() {
        let o = b * 8;
        x = ln_relu(&conv(&x, o), o + 2).unwrap();
        x = ln_relu(&maxpool2(&conv(&x, o + 4)), o + 6).unwrap();
    }
    let hi = p.tensors.len() - 2;
    let feat = x.flatten_from(2).unwrap().max(2).unwrap();
    let z = feat.matmul(&t(hi).t().unwrap()).unwrap();
    z.broadcast_add(&t(hi + 1)).unwrap()
}

/// Gradient of `Σ r · logits` w.r.t. the images, through `f`.
fn image_grad(x: &Var, r: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let loss = (f(x.as_tensor()) * r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("images get a gradient");
    g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn cnn_op_matches_candle_graph_in_values_and_image_gradient() {
    let cfg = CnnConfig {
        in_channels: 2,
        height: 14,
        width: 14,
        widths: vec![4, 6, 5],
        classes: 7,
    };
    let mut rng = StdRng::seed_from_u64(4);
    let p = random_cnn(&cfg, &mut rng);
    let n = 3;
    let shape = (n, cfg.in_channels, cfg.height, cfg.width);
    let x = Var::from_vec(random_images(&cfg, n, &mut rng), shape, &Device::Cpu).unwrap();
    let r: Vec<f32> = (0..n * cfg.classes)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let r = Tensor::from_vec(r, (n, cfg.classes), &Device::Cpu).unwrap();
    let fast = |x: &Tensor| cnn_logits(&p, &cfg, x).unwrap();
    let slow = |x: &Tensor| graph_logits(&p, &cfg, x);
    let (a, b) = (fast(x.as_tensor()), slow(x.as_tensor()));
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    let (ga, gb) = (image_grad(&x, &r, fast), image_grad(&x, &r, slow));
    let scale = gb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for (i, (u, v)) in ga.iter().zip(&gb).enumerate() {
        assert!(
            (u - v).abs() < 1e-3 * scale,
            "pixel {i}: op {u} vs graph {v}"
        );
    }
}

#[test]
fn query_gradient_is_nonzero_and_finite() {
    let cfg = small_cfg();
    let mut rng = StdRng::seed_from_u64(3);
    let models: Vec<Params> = (0..3).map(|_| random_cnn(&cfg, &mut rng)).collect();
    let qc = QueryConfig::default();
    let vars = init_vars(&mut rng, &cfg, &qc).unwrap();
    let op = CnnOp {
        models: Arc::new(models),
        ids: vec![2, 0, 1],
        cfg: cfg.clone(),
    };
    let y = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
    let loss = bce_with_logits(&learned_of(&vars).logits(op).unwrap(), &y).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads
        .get(vars[0].as_tensor())
        .expect("queries get a gradient");
    let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    assert!(g.iter().any(|&v| v != 0.0));
}

fn small_cfg() -> CnnConfig {
    crate::cnn::test_config(12, &[4, 8], 10)
}

#[test]
fn fit_learns_synthetic_backdoor_and_round_trips() {
    let cfg = small_cfg();
    let (train, train_labels) = synthetic_zoo(&cfg, 40, 10);
    let (test, test_labels) = synthetic_zoo(&cfg, 20, 11);
    let qc = QueryConfig {
        epochs: 30,
        batch: 8,
        lr: 1e-2,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let det = QueryDetector::fit(&train, &train_labels, &cfg, &qc, |_, l| losses.push(l)).unwrap();
    assert_eq!(losses.len(), qc.epochs);
    let scores = det.score_all(&test).unwrap();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let auc = auroc(&scores, &test_labels).unwrap();
    assert!(auc > 0.9, "AUROC {auc}, losses {losses:?}");
    let q = det
        .queries()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(q.iter().all(|v| (0.0..=1.0).contains(v)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("query.safetensors");
    det.save(&path).unwrap();
    let back = QueryDetector::load(&path, &cfg).unwrap();
    assert_eq!(back.score_all(&test).unwrap(), scores);
    let other = CnnConfig {
        classes: 9,
        ..cfg.clone()
    };
    let err = QueryDetector::load(&path, &other)
        .err()
        .expect("config mismatch");
    assert!(matches!(err, QueryError::ConfigMismatch { .. }));
    assert!(err.to_string().contains("query.safetensors"), "{err}");
}

#[test]
fn fit_is_deterministic() {
    let cfg = small_cfg();
    let (models, labels) = synthetic_zoo(&cfg, 8, 5);
    let qc = QueryConfig {
        epochs: 2,
        batch: 4,
        ..Default::default()
    };
    let a = QueryDetector::fit(&models, &labels, &cfg, &qc, |_, _| {}).unwrap();
    let b = QueryDetector::fit(&models, &labels, &cfg, &qc, |_, _| {}).unwrap();
    assert_eq!(a.score_all(&models).unwrap(), b.score_all(&models).unwrap());
}

#[test]
fn fit_rejects_bad_training_sets() {
    let cfg = small_cfg();
    let (models, _) = synthetic_zoo(&cfg, 4, 6);
    let qc = QueryConfig::default();
    let one_class = QueryDetector::fit(&models, &[false; 4], &cfg, &qc, |_, _| {});
    assert!(matches!(
        one_class,
        Err(QueryError::OneClass {
            clean: 4,
            backdoored: 0
        })
    ));
    let empty = QueryDetector::fit(&[], &[], &cfg, &qc, |_, _| {});
    assert!(matches!(empty, Err(QueryError::OneClass { .. })));
    let count = QueryDetector::fit(&models, &[true, false], &cfg, &qc, |_, _| {});
    assert!(matches!(count, Err(QueryError::LabelCount { .. })));
    let zero = QueryConfig {
        queries: 0,
        ..qc.clone()
    };
    let labels = [true, false, true, false];
    let bad = QueryDetector::fit(&models, &labels, &cfg, &zero, |_, _| {});
    assert!(matches!(bad, Err(QueryError::Config(_))));
}
