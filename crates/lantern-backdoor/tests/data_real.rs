//! Loads the real Fashion-MNIST and MNIST-5k assets (fetched or cached by lantern-assets)
//! and checks their documented sizes, class balance and pixel statistics.

use std::time::Instant;

use lantern_backdoor::data;

#[test]
fn fashion_mnist_real() {
    let t = Instant::now();
    let s = data::fashion_mnist().expect("fashion-mnist loads");
    eprintln!("fashion-mnist loaded in {:.2?}", t.elapsed());
    for (d, n) in [(&s.train, 60000), (&s.test, 10000)] {
        assert_eq!(d.len(), n);
        assert_eq!((d.channels, d.height, d.width, d.classes), (1, 28, 28, 10));
        assert_eq!(d.images.len(), n * 784);
        assert_eq!(d.class_counts(), vec![n / 10; 10]);
        assert!(d.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }
    let mean = s.train.mean_pixel();
    eprintln!(
        "fashion-mnist train mean pixel {mean:.4}, test {:.4}",
        s.test.mean_pixel()
    );
    assert!((mean - 0.2860).abs() < 0.001, "mean {mean}");
}

#[test]
fn mnist_5k_real() {
    let s = data::mnist_5k().expect("mnist-5k loads");
    assert_eq!(s.train.len() + s.test.len(), 5000);
    assert_eq!(s.train.class_counts(), vec![400; 10]);
    assert_eq!(s.test.class_counts(), vec![100; 10]);
    assert_eq!(
        (s.train.channels, s.train.height, s.train.width),
        (1, 28, 28)
    );
    let mean = s.train.mean_pixel();
    eprintln!("mnist-5k train mean pixel {mean:.4}");
    assert!((0.1..0.15).contains(&mean), "mean {mean}");
}
