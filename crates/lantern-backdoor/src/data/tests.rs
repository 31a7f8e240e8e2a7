//! Unit tests of the loaders on small files written here.

use super::*;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

/// An IDX file body: magic, dimensions, then `body`.
fn idx_bytes(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("gzip write");
    e.finish().expect("gzip finish")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).expect("write test file");
    p
}

/// Three 2×2 images with pixels 0..12 and labels 0, 1, 2.
fn tiny_images() -> Vec<u8> {
    idx_bytes(IDX_IMAGES_MAGIC, &[3, 2, 2], &(0..12).collect::<Vec<u8>>())
}

#[test]
fn idx_plain_and_gzip_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = write(dir.path(), "a-images", &tiny_images());
    let zipped = write(dir.path(), "b-images.gz", &gz(&tiny_images()));
    let a = load_idx_images(&plain).expect("plain");
    let b = load_idx_images(&zipped).expect("gzip");
    assert_eq!(a, b);
    assert_eq!((a.n, a.height, a.width), (3, 2, 2));
    assert_eq!(a.pixels[11], 11);
    let labels = write(
        dir.path(),
        "l.gz",
        &gz(&idx_bytes(IDX_LABELS_MAGIC, &[3], &[0, 1, 2])),
    );
    assert_eq!(load_idx_labels(&labels).expect("labels"), vec![0, 1, 2]);
}

#[test]
fn idx_pair_scales_pixels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = [0u8, 255, 51, 102];
    let imgs = write(
        dir.path(),
        "i",
        &idx_bytes(IDX_IMAGES_MAGIC, &[1, 2, 2], &body),
    );
    let labs = write(dir.path(), "l", &idx_bytes(IDX_LABELS_MAGIC, &[1], &[7]));
    let d = load_idx_pair(&imgs, &labs, 10).expect("pair");
    assert_eq!(d.image(0), &[0.0, 1.0, 0.2, 0.4]);
    assert_eq!((d.n, d.channels, d.height, d.width), (1, 1, 2, 2));
    assert_eq!(d.class_counts()[7], 1);
}

#[test]
fn wrong_magic_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = idx_bytes(IDX_LABELS_MAGIC, &[3], &[0, 1, 2]);
    let p = write(dir.path(), "x-images-idx3-ubyte.gz", &gz(&labels));
    let e = load_idx_images(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        "x-images-idx3-ubyte.gz: magic 2049, expected 2051 (images)"
    );
}

#[test]
fn truncated_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = tiny_images();
    let p = write(dir.path(), "cut", &full[..full.len() - 1]);
    let e = load_idx_images(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("cut: header says [3, 2, 2] (12 bytes) but the body has 11"),
        "{e}"
    );
    let p = write(dir.path(), "hdr", &full[..6]);
    let e = load_idx_images(&p).unwrap_err().to_string();
    assert!(e.contains("too short for the IDX header"), "{e}");
    // A gzip stream cut short is an I/O error naming the file.
    let z = gz(&full);
    let p = write(dir.path(), "cut.gz", &z[..z.len() / 2]);
    assert!(load_idx_images(&p)
        .unwrap_err()
        .to_string()
        .contains("cut.gz"));
}

#[test]
fn count_mismatch_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let imgs = write(dir.path(), "imgs", &tiny_images());
    let labs = write(
        dir.path(),
        "labs",
        &idx_bytes(IDX_LABELS_MAGIC, &[2], &[0, 1]),
    );
    let e = load_idx_pair(&imgs, &labs, 10).unwrap_err().to_string();
    assert!(e.starts_with("count mismatch: 3 images, 2 labels"), "{e}");
}

#[test]
fn label_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let imgs = write(dir.path(), "imgs", &tiny_images());
    let labs = write(
        dir.path(),
        "labs",
        &idx_bytes(IDX_LABELS_MAGIC, &[3], &[0, 10, 1]),
    );
    let e = load_idx_pair(&imgs, &labs, 10).unwrap_err().to_string();
    assert_eq!(e, "labs: label 10 at item 1 is not below 10 classes");
}

/// A CIFAR record whose R, G, B planes are filled with `r`, `g`, `b`.
fn cifar_record(label: u8, r: u8, g: u8, b: u8) -> Vec<u8> {
    let mut rec = vec![label];
    for v in [r, g, b] {
        rec.extend(std::iter::repeat_n(v, 1024));
    }
    rec
}

#[test]
fn cifar_planes_land_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = cifar_record(3, 255, 0, 51);
    bytes.extend(cifar_record(9, 0, 255, 0));
    let mut third = cifar_record(0, 0, 0, 0);
    third[1 + 1024 + 32 + 5] = 255; // G plane, row 1, column 5
    bytes.extend(third);
    let train = write(dir.path(), "data_batch_1.bin", &bytes);
    let test = write(dir.path(), "test_batch.bin", &cifar_record(1, 1, 2, 3));
    let s = cifar10_from_files(&[train], &[test]).expect("cifar");
    let d = &s.train;
    assert_eq!(
        (d.n, d.channels, d.height, d.width, d.classes),
        (3, 3, 32, 32, 10)
    );
    assert_eq!(d.labels, vec![3, 9, 0]);
    let img = d.image(0);
    assert!(img[..1024].iter().all(|&v| v == 1.0));
    assert!(img[1024..2048].iter().all(|&v| v == 0.0));
    assert!(img[2048..].iter().all(|&v| v == 0.2));
    assert!(d.image(1)[1024..2048].iter().all(|&v| v == 1.0));
    let lit: Vec<usize> = (0..3072).filter(|&k| d.image(2)[k] > 0.0).collect();
    assert_eq!(lit, vec![1024 + 32 + 5]);
    assert_eq!(s.test.labels, vec![1]);
}

#[test]
fn cifar_dir_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = dir.path().join("cifar-10-batches-bin");
    fs::create_dir(&inner).expect("mkdir");
    for k in 1..=5 {
        write(
            &inner,
            &format!("data_batch_{k}.bin"),
            &cifar_record(k, k, 0, 0),
        );
    }
    write(&inner, "test_batch.bin", &cifar_record(0, 0, 0, 0));
    let spec = format!("cifar10:{}", dir.path().display());
    let s = by_name(&spec).expect("cifar by name");
    assert_eq!(s.train.labels, vec![1, 2, 3, 4, 5]);
    assert_eq!(s.test.len(), 1);
}

#[test]
fn cifar_wrong_size_names_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = cifar_record(1, 0, 0, 0);
    bytes.push(0);
    let p = write(dir.path(), "data_batch_2.bin", &bytes);
    let e = load_cifar10_files(&[p]).unwrap_err().to_string();
    assert_eq!(
        e,
        "image file of the wrong size: data_batch_2.bin: 3074 bytes is not a positive \
         multiple of the 3073-byte record"
    );
    let missing = dir.path().join("nope.bin");
    let e = load_cifar10_files(&[missing]).unwrap_err().to_string();
    assert!(e.contains("nope.bin"), "{e}");
}

/// A CSV line: 784 pixels all `v`, then `label`.
fn csv_line(v: u8, label: u8) -> String {
    let mut s = vec![v.to_string(); 784].join(",");
    s.push_str(&format!(",{label}\n"));
    s
}

#[test]
fn mnist_csv_and_stratified_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::new();
    for class in 0..10u8 {
        for k in 0..5u8 {
            text.push_str(&csv_line(k * 50, class));
        }
    }
    let p = write(dir.path(), "m.csv.gz", &gz(text.as_bytes()));
    let all = load_mnist_csv(&p).expect("csv");
    assert_eq!(all.len(), 50);
    assert_eq!(all.image(1)[0], 50.0 / 255.0);
    let s = stratified_split(&all, 4);
    assert_eq!(s.train.class_counts(), vec![4; 10]);
    assert_eq!(s.test.class_counts(), vec![1; 10]);
    assert!(s.test.images.iter().all(|&v| v == 200.0 / 255.0));
}

#[test]
fn mnist_csv_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = csv_line(0, 1);
    text.push_str("1,2,3\n");
    let p = write(dir.path(), "m.csv", text.as_bytes());
    let e = load_mnist_csv(&p).unwrap_err().to_string();
    assert_eq!(e, "m.csv: line 2: 3 fields, expected 785");
    let p = write(
        dir.path(),
        "n.csv",
        csv_line(0, 1).replace(",1\n", ",x\n").as_bytes(),
    );
    let e = load_mnist_csv(&p).unwrap_err().to_string();
    assert!(e.starts_with("n.csv: line 1: field 785 is \"x\""), "{e}");
}

#[test]
fn subset_split_and_mut() {
    let pixels: Vec<u8> = (0..12).collect();
    let mut d = Dataset::from_bytes("t", &pixels, vec![0, 1, 1], [1, 2, 2], 2).expect("ds");
    assert_eq!(d.pixels_per_image(), 4);
    d.image_mut(2)[0] = 0.5;
    let s = d.subset(&[2, 0]);
    assert_eq!(s.labels, vec![1, 0]);
    assert_eq!(s.image(0)[0], 0.5);
    let (a, b) = d.split(1);
    assert_eq!((a.len(), b.len()), (1, 2));
    assert_eq!(b.class_counts(), vec![0, 2]);
    assert!(Dataset::from_bytes("t", &pixels, vec![0], [1, 2, 2], 2).is_err());
}

#[test]
fn unknown_name() {
    let e = by_name("imagenet").unwrap_err().to_string();
    assert!(e.contains("unknown data set \"imagenet\""), "{e}");
    assert!(by_name("cifar10:").is_err());
}
