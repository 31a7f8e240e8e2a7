//! Unit tests: gradient check, permutation invariance, training, safetensors, timing.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tiny_cfg() -> CnnConfig {
    crate::cnn::test_config(8, &[2, 3], 3)
}

fn random_images(n: usize, cfg: &CnnConfig, rng: &mut StdRng) -> Vec<f32> {
    (0..n * cfg.image_len())
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect()
}

#[test]
fn gradient_matches_finite_differences() {
    let cfg = tiny_cfg();
    let mut rng = StdRng::seed_from_u64(7);
    let mut p = Params::init(&cfg, &mut rng);
    // Non-trivial LayerNorm affines so their gradients are exercised off the identity.
    for t in 0..p.tensors.len() {
        if p.names()[t].contains(".ln") {
            p.tensors[t]
                .iter_mut()
                .for_each(|v| *v += rng.gen_range(-0.3..0.3));
        }
    }
    let batch = 3;
    let images = random_images(batch, &cfg, &mut rng);
    let labels = [0u8, 2, 1];
    let (_, grads) = loss_and_grad(&p, &cfg, &images, &labels, batch);
    let mut worst = 0.0f32;
    // Small enough that block 0 (2 channels, strongly curved through its LayerNorms) is
    // locally linear, large enough that f32 rounding of the loss stays ~1e-5.
    let eps = 1e-3f32;
    for t in 0..p.tensors.len() {
        let n = p.tensors[t].len();
        for j in [0, n / 2, n - 1, (n * 3) / 4] {
            let orig = p.tensors[t][j];
            p.tensors[t][j] = orig + eps;
            let (lp, _) = loss_and_grad(&p, &cfg, &images, &labels, batch);
            p.tensors[t][j] = orig - eps;
            let (lm, _) = loss_and_grad(&p, &cfg, &images, &labels, batch);
            p.tensors[t][j] = orig;
            let num = (lp - lm) / (2.0 * eps);
            let ana = grads.tensors[t][j];
            let rel = (num - ana).abs() / num.abs().max(ana.abs()).max(1e-2);
            assert!(
                rel < 1e-2,
                "{}[{j}]: analytic {ana} numeric {num} rel {rel}",
                p.names()[t]
            );
            worst = worst.max(rel);
        }
    }
    eprintln!("gradient check worst relative error {worst:.2e}");
}

#[test]
fn permuted_network_computes_the_same_function() {
    let cfg = CnnConfig {
        in_channels: 3,
        height: 12,
        width: 12,
        widths: vec![4, 5, 6],
        classes: 10,
    };
    let mut rng = StdRng::seed_from_u64(3);
    let mut p = Params::init(&cfg, &mut rng);
    for t in 0..p.tensors.len() {
        p.tensors[t]
            .iter_mut()
            .for_each(|v| *v += rng.gen_range(-0.2..0.2));
    }
    let q = permute_hidden_units(&p, &cfg, &mut rng);
    assert_ne!(p.flatten(), q.flatten());
    let images = random_images(5, &cfg, &mut rng);
    let a = forward(&p, &cfg, &images, 5);
    let b = forward(&q, &cfg, &images, 5);
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "max abs logit diff {diff}");
}

/// 2 classes: a bright 3×3 square top-left (0) or bottom-right (1), on noise.
fn squares(n: usize, rng: &mut StdRng) -> (Vec<f32>, Vec<u8>) {
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as u8;
        let off = if label == 0 { 0 } else { 5 };
        for y in 0..8 {
            for x in 0..8 {
                let inside = (off..off + 3).contains(&y) && (off..off + 3).contains(&x);
                images.push(if inside { 1.0 } else { 0.0 } + rng.gen_range(-0.2..0.2));
            }
        }
        labels.push(label);
    }
    (images, labels)
}

#[test]
fn adamw_trains_a_tiny_model() {
    let cfg = CnnConfig {
        in_channels: 1,
        height: 8,
        width: 8,
        widths: vec![4, 8],
        classes: 2,
    };
    let mut rng = StdRng::seed_from_u64(11);
    let (images, labels) = squares(64, &mut rng);
    let mut p = Params::init(&cfg, &mut rng);
    let mut opt = AdamW::new(0.01);
    let total = 200;
    for step in 0..total {
        let (_, mut g) = loss_and_grad(&p, &cfg, &images, &labels, 64);
        clip_grad_norm(&mut g, 5.0);
        opt.step(&mut p, &g, triangle_lr(step, total, 0.01));
    }
    let acc = accuracy(&p, &cfg, &images, &labels, 64);
    assert!(acc > 0.95, "train accuracy {acc}");
}

#[test]
fn triangle_schedule_shape() {
    assert!(triangle_lr(0, 100, 1.0) > 0.0);
    assert_eq!(triangle_lr(49, 100, 1.0), 1.0);
    assert!(triangle_lr(99, 100, 1.0) < 0.05);
    assert_eq!(triangle_lr(100, 100, 1.0), 0.0);
}

#[test]
fn clipping_bounds_the_norm() {
    let cfg = tiny_cfg();
    let mut g = Params::zeros(&cfg);
    g.tensors[0].fill(10.0);
    let before = clip_grad_norm(&mut g, 5.0);
    assert!(before > 5.0);
    let after = g.flatten().iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((after - 5.0).abs() < 1e-3);
}

#[test]
fn flat_round_trip_and_names() {
    let cfg = tiny_cfg();
    let p = Params::init(&cfg, &mut StdRng::seed_from_u64(1));
    assert_eq!(p.names()[0], "blocks.0.conv1.weight");
    assert_eq!(p.shapes()[0], vec![2, 1, 3, 3]);
    assert_eq!(p.names().last().unwrap(), "head.bias");
    let q = Params::from_flat(&cfg, &p.flatten()).unwrap();
    assert_eq!(p, q);
    assert!(matches!(
        Params::from_flat(&cfg, &[0.0; 3]),
        Err(CnnError::FlatLength { .. })
    ));
}

#[test]
fn safetensors_round_trip_and_mismatch() {
    let cfg = tiny_cfg();
    let p = Params::init(&cfg, &mut StdRng::seed_from_u64(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    p.save_safetensors(&path).unwrap();
    assert_eq!(Params::load_safetensors(&cfg, &path).unwrap(), p);

    let other = CnnConfig {
        widths: vec![2, 4],
        ..cfg.clone()
    };
    let err = Params::load_safetensors(&other, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.1.conv1.weight") && err.contains("m.safetensors"),
        "{err}"
    );

    let deeper = CnnConfig {
        widths: vec![2, 3, 4],
        height: 16,
        width: 16,
        ..cfg.clone()
    };
    let err = Params::load_safetensors(&deeper, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head.weight") || err.contains("blocks.2"),
        "{err}"
    );

    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        Params::load_safetensors(&cfg, &path),
        Err(CnnError::Format { .. })
    ));
}

/// The adjoint of [`forward::conv3x3_direct`] by direct loops: weight, bias and input
/// gradients of one unpadded image given `dout [c_out, h, w]`.
fn conv3x3_direct_backward(
    x: &[f32],
    c_in: usize,
    h: usize,
    w: usize,
    k: &[f32],
    dout: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hw = h * w;
    let c_out = dout.len() / hw;
    let (mut dk, mut db, mut dx) = (vec![0.0; k.len()], vec![0.0; c_out], vec![0.0; x.len()]);
    for o in 0..c_out {
        let d = &dout[o * hw..(o + 1) * hw];
        db[o] = d.iter().sum();
        for i in 0..c_in {
            forward::for_each_tap_row(h, w, |t, oo, io, len| {
                for q in 0..len {
                    dk[(o * c_in + i) * 9 + t] += d[oo + q] * x[i * hw + io + q];
                    dx[i * hw + io + q] += d[oo + q] * k[(o * c_in + i) * 9 + t];
                }
            });
        }
    }
    (dk, db, dx)
}

#[test]
fn padded_conv_matches_direct_loops() {
    let mut rng = StdRng::seed_from_u64(9);
    // 5 outputs (a 4-channel tile and one more) and 2 samples of 5×7: the vector tiles and
    // the scalar tail both run, forward and backward.
    let (c_in, c_out, n, h, w) = (3, 5, 2, 5, 7);
    let hw = h * w;
    let mut rand =
        |len: usize| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let (x, k, b, dout) = (
        rand(n * c_in * hw),
        rand(c_out * c_in * 9),
        rand(c_out),
        rand(n * c_out * hw),
    );
    let g = grid::Grid { n, h, w };
    let a = g.unpad(&conv::conv3x3(&g.pad(&x, c_in), c_in, g, &k, &b), c_out);
    let (mut dk, mut db) = (vec![0.0f32; k.len()], vec![0.0f32; c_out]);
    let dx = conv::conv3x3_backward(
        &g.pad(&x, c_in),
        c_in,
        g,
        &k,
        &g.pad(&dout, c_out),
        &mut dk,
        &mut db,
        conv::Wants {
            weights: true,
            input: true,
        },
    )
    .expect("input gradient");
    let dx = g.unpad(&dx, c_in);
    let (mut want_dk, mut want_db) = (vec![0.0f32; k.len()], vec![0.0f32; c_out]);
    let close = |p: f32, q: f32, what: &str| assert!((p - q).abs() < 1e-4, "{what}: {p} vs {q}");
    for s in 0..n {
        let xs = &x[s * c_in * hw..(s + 1) * c_in * hw];
        let ds = &dout[s * c_out * hw..(s + 1) * c_out * hw];
        let want = forward::conv3x3_direct(xs, c_in, h, w, &k, &b);
        for (p, q) in a[s * c_out * hw..(s + 1) * c_out * hw].iter().zip(&want) {
            close(*p, *q, "output");
        }
        let (sk, sb, sx) = conv3x3_direct_backward(xs, c_in, h, w, &k, ds);
        want_dk.iter_mut().zip(&sk).for_each(|(a, b)| *a += b);
        want_db.iter_mut().zip(&sb).for_each(|(a, b)| *a += b);
        for (p, q) in dx[s * c_in * hw..(s + 1) * c_in * hw].iter().zip(&sx) {
            close(*p, *q, "input gradient");
        }
    }
    dk.iter()
        .zip(&want_dk)
        .for_each(|(p, q)| close(*p, *q, "weight gradient"));
    db.iter()
        .zip(&want_db)
        .for_each(|(p, q)| close(*p, *q, "bias gradient"));
}

#[test]
fn chunked_batch_matches_one_image_at_a_time() {
    // Three input channels exercise the channel-major transposition.
    let cfg = CnnConfig {
        in_channels: 3,
        ..crate::cnn::test_config(8, &[2, 3], 4)
    };
    let mut rng = StdRng::seed_from_u64(11);
    let p = Params::init(&cfg, &mut rng);
    let n = 5;
    let images = random_images(n, &cfg, &mut rng);
    let all = forward(&p, &cfg, &images, n);
    let len = cfg.image_len();
    for s in 0..n {
        let one = forward(&p, &cfg, &images[s * len..(s + 1) * len], 1);
        for (a, b) in all.row(s).iter().zip(&one.data) {
            assert!((a - b).abs() < 1e-5, "sample {s}: {a} vs {b}");
        }
    }
    // The batch gradient is the mean of the one-image gradients.
    let labels = [0u8, 3, 1, 2, 3];
    let (_, g) = loss_and_grad(&p, &cfg, &images, &labels, n);
    let mut mean = Params::zeros(&cfg);
    for s in 0..n {
        let (_, gs) = loss_and_grad(&p, &cfg, &images[s * len..(s + 1) * len], &labels[s..=s], 1);
        for (m, t) in mean.tensors.iter_mut().zip(&gs.tensors) {
            m.iter_mut().zip(t).for_each(|(a, b)| *a += b / n as f32);
        }
    }
    for (t, (a, b)) in g.tensors.iter().zip(&mean.tensors).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() < 1e-4 * (1.0 + y.abs()),
                "{}: {x} vs {y}",
                p.names()[t]
            );
        }
    }
}
