//! Image data sets for the CNN zoo: Fashion-MNIST (IDX files), MNIST-5k (a CSV of 5000
//! digits) and CIFAR-10 (the binary batch format), all loaded into one [`Dataset`] type.
//!
//! Every loader checks the file against its format (magic numbers, header dimensions, byte
//! lengths, label ranges) and reports a [`DataError`] naming the file and what is wrong,
//! rather than panicking or silently truncating: a zoo trained on a half-read file would
//! be wrong in ways that are hard to notice later.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (N × H × W images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (N labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Bytes in one CIFAR-10 binary record: 1 label byte, then 3 × 32 × 32 pixel bytes.
pub const CIFAR10_RECORD: usize = 1 + 3 * 32 * 32;
/// Training examples per class in the MNIST-5k split (the rest of each class is test).
pub const MNIST_5K_TRAIN_PER_CLASS: usize = 400;

/// What went wrong loading a data set; every message names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read (or its gzip stream could not be decoded).
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the magic number its role requires.
    #[error("{file}: magic {found}, expected {expected} ({what})")]
    Magic {
        /// The file.
        file: String,
        /// The magic number read.
        found: u32,
        /// The magic number required.
        expected: u32,
        /// What the file was meant to hold ("images" or "labels").
        what: &'static str,
    },
    /// The file's length disagrees with its header, or the header is cut short.
    #[error("{file}: {detail}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// An image file and its label file hold different numbers of items.
    #[error("count mismatch: {images} images, {labels} labels ({image_file}, {label_file})")]
    CountMismatch {
        /// Images in the image file.
        images: usize,
        /// Labels in the label file.
        labels: usize,
        /// The image file.
        image_file: String,
        /// The label file.
        label_file: String,
    },
    /// A fixed-record image file (CIFAR-10) whose size is not a whole number of records.
    #[error("image file of the wrong size: {file}: {len} bytes is not a positive multiple of the {record}-byte record")]
    WrongSize {
        /// The file.
        file: String,
        /// Its size in bytes.
        len: usize,
        /// The record size it should be a multiple of.
        record: usize,
    },
    /// A label outside `0..classes`.
    #[error("{file}: label {label} at item {index} is not below {classes} classes")]
    Label {
        /// The file.
        file: String,
        /// The item's index in the file.
        index: usize,
        /// The label read.
        label: u8,
        /// The number of classes the data set has.
        classes: usize,
    },
    /// A malformed CSV line.
    #[error("{file}: line {line}: {detail}")]
    Csv {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The data set's asset could not be fetched.
    #[error("asset {name}: {source}")]
    Asset {
        /// The asset name.
        name: &'static str,
        /// The underlying error.
        source: lantern_assets::AssetError,
    },
    /// A data set name [`by_name`] does not know.
    #[error("unknown data set {0:?}: expected fashion-mnist, mnist-5k or cifar10:PATH")]
    UnknownName(String),
}

/// Result with a [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// A labelled image set, stored densely so a batch is a contiguous slice.
///
/// `images` is row-major N × C × H × W with pixels scaled to [0, 1]; `labels[i]` is the
/// class of image `i`, below `classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixels, N × C × H × W, each in [0, 1].
    pub images: Vec<f32>,
    /// One class label per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 for grey, 3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes; every label is below it.
    pub classes: usize,
}

/// A data set's training and test parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The training images.
    pub train: Dataset,
    /// The held-out test images.
    pub test: Dataset,
}

/// Maps a byte pixel to [0, 1] exactly as `p / 255` (a table, so decoding is one lookup).
fn byte_to_unit() -> [f32; 256] {
    std::array::from_fn(|i| i as f32 / 255.0)
}

/// Scales byte pixels to `f32` in [0, 1].
fn scale_pixels(pixels: &[u8]) -> Vec<f32> {
    let lut = byte_to_unit();
    pixels.iter().map(|&p| lut[p as usize]).collect()
}

impl Dataset {
    /// Builds a data set from byte pixels (N × C × H × W) and labels, scaling pixels to
    /// [0, 1] and checking sizes and label range; `file` names the source in errors.
    pub fn from_bytes(
        file: &str,
        pixels: &[u8],
        labels: Vec<u8>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Dataset> {
        let [channels, height, width] = shape;
        let n = labels.len();
        let per = channels * height * width;
        if pixels.len() != n * per {
            return Err(DataError::Format {
                file: file.to_string(),
                detail: format!(
                    "{} pixel bytes for {n} images of {channels}x{height}x{width}",
                    pixels.len()
                ),
            });
        }
        check_labels(file, &labels, classes)?;
        Ok(Dataset {
            images: scale_pixels(pixels),
            labels,
            n,
            channels,
            height,
            width,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Values per image: channels × height × width.
    pub fn pixels_per_image(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i`'s pixels, C × H × W. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let p = self.pixels_per_image();
        &self.images[i * p..(i + 1) * p]
    }

    /// Image `i`'s pixels, mutable (for stamping triggers). Panics if `i >= len()`.
    pub fn image_mut(&mut self, i: usize) -> &mut [f32] {
        let p = self.pixels_per_image();
        &mut self.images[i * p..(i + 1) * p]
    }

    /// An empty set with this set's shape and classes.
    fn empty_like(&self, capacity: usize) -> Dataset {
        Dataset {
            images: Vec::with_capacity(capacity * self.pixels_per_image()),
            labels: Vec::with_capacity(capacity),
            n: 0,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
        }
    }

    /// Appends image `i` of `self` to `out`.
    fn push_from(&self, i: usize, out: &mut Dataset) {
        out.images.extend_from_slice(self.image(i));
        out.labels.push(self.labels[i]);
        out.n += 1;
    }

    /// A new set of the images at `indices`, in that order (repeats allowed), e.g. a
    /// shuffled or filtered copy. Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut out = self.empty_like(indices.len());
        for &i in indices {
            self.push_from(i, &mut out);
        }
        out
    }

    /// The first `n_first` images and the rest, as two sets (e.g. train / validation).
    /// Panics if `n_first > len()`.
    pub fn split(&self, n_first: usize) -> (Dataset, Dataset) {
        assert!(n_first <= self.n, "split at {n_first} of {} images", self.n);
        let first: Vec<usize> = (0..n_first).collect();
        let rest: Vec<usize> = (n_first..self.n).collect();
        (self.subset(&first), self.subset(&rest))
    }

    /// How many images each class has, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Mean of all pixel values (0 for an empty set); a quick sanity check on loading.
    pub fn mean_pixel(&self) -> f64 {
        if self.images.is_empty() {
            return 0.0;
        }
        self.images.iter().map(|&v| v as f64).sum::<f64>() / self.images.len() as f64
    }
}

/// Checks every label is below `classes`.
fn check_labels(file: &str, labels: &[u8], classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(index) => Err(DataError::Label {
            file: file.to_string(),
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

/// The file's name for error messages (its last component, or the whole path).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads a whole file, decompressing it if it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let io = |source| DataError::Io {
        file: path.display().to_string(),
        source,
    };
    let raw = fs::read(path).map_err(io)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(io)?;
    Ok(out)
}

/// Byte images read from an IDX file: `n` images of `height` × `width`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Pixel bytes, n × height × width.
    pub pixels: Vec<u8>,
}

/// Reads the big-endian `u32` at byte `at`, or reports a header cut short.
fn be_u32(file: &str, bytes: &[u8], at: usize) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DataError::Format {
            file: file.to_string(),
            detail: format!("{} bytes, too short for the IDX header", bytes.len()),
        })
}

/// Checks an IDX file's magic number and returns its dimensions (as many as the magic's
/// low byte says) and the body after the header, whose length must be their product.
fn parse_idx<'a>(
    file: &str,
    bytes: &'a [u8],
    expected: u32,
    what: &'static str,
) -> Result<(Vec<usize>, &'a [u8])> {
    let found = be_u32(file, bytes, 0)?;
    if found != expected {
        return Err(DataError::Magic {
            file: file.to_string(),
            found,
            expected,
            what,
        });
    }
    let ndim = (expected & 0xff) as usize;
    let dims = (0..ndim)
        .map(|d| be_u32(file, bytes, 4 + 4 * d).map(|v| v as usize))
        .collect::<Result<Vec<_>>>()?;
    let body = &bytes[4 + 4 * ndim..];
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if want != Some(body.len()) {
        return Err(DataError::Format {
            file: file.to_string(),
            detail: format!(
                "header says {dims:?} ({} bytes) but the body has {} bytes",
                want.map_or_else(|| "overflowing".to_string(), |w| w.to_string()),
                body.len()
            ),
        });
    }
    Ok((dims, body))
}

/// Loads an IDX file of byte images (magic 0x00000803), gzip-compressed or plain.
pub fn load_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    let (dims, body) = parse_idx(&file_name(path), &bytes, IDX_IMAGES_MAGIC, "images")?;
    Ok(IdxImages {
        n: dims[0],
        height: dims[1],
        width: dims[2],
        pixels: body.to_vec(),
    })
}

/// Loads an IDX file of byte labels (magic 0x00000801), gzip-compressed or plain.
pub fn load_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    let (_, body) = parse_idx(&file_name(path), &bytes, IDX_LABELS_MAGIC, "labels")?;
    Ok(body.to_vec())
}

/// Loads an IDX image file and its label file as one grey-scale [`Dataset`] of `classes`.
pub fn load_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<Dataset> {
    let imgs = load_idx_images(images)?;
    let labs = load_idx_labels(labels)?;
    if imgs.n != labs.len() {
        return Err(DataError::CountMismatch {
            images: imgs.n,
            labels: labs.len(),
            image_file: file_name(images),
            label_file: file_name(labels),
        });
    }
    Dataset::from_bytes(
        &file_name(labels),
        &imgs.pixels,
        labs,
        [1, imgs.height, imgs.width],
        classes,
    )
}

/// Fetches (or finds cached) a catalog asset, mapping its error.
fn fetch_asset(name: &'static str) -> Result<PathBuf> {
    lantern_assets::fetch(name).map_err(|source| DataError::Asset { name, source })
}

/// Fashion-MNIST from the `fashion-mnist` asset: 60000 train / 10000 test grey 28×28
/// images of 10 clothing classes.
pub fn fashion_mnist() -> Result<Split> {
    fashion_mnist_from(&fetch_asset("fashion-mnist")?)
}

/// Fashion-MNIST from a folder holding the four standard `*-idx?-ubyte.gz` files (plain,
/// uncompressed files under the same names also work).
pub fn fashion_mnist_from(dir: &Path) -> Result<Split> {
    let part = |prefix: &str| {
        load_idx_pair(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            10,
        )
    };
    Ok(Split {
        train: part("train")?,
        test: part("t10k")?,
    })
}

/// MNIST-5k from the `mnist-5k` asset; see [`mnist_5k_from`] for the split.
pub fn mnist_5k() -> Result<Split> {
    mnist_5k_from(&fetch_asset("mnist-5k")?)
}

/// MNIST-5k from `mnist_5k.csv(.gz)`: one image per line, 784 pixel values 0..=255
/// (28×28 row-major) and then the label 0..=9; no header.
///
/// The split is deterministic and stratified: of each class, in file order, the first
/// [`MNIST_5K_TRAIN_PER_CLASS`] images (400) are training and the rest (100 in the
/// shipped file) test, giving 4000 / 1000. Both parts keep file order, which in the
/// shipped file is sorted by class, so shuffle before training.
pub fn mnist_5k_from(path: &Path) -> Result<Split> {
    let all = load_mnist_csv(path)?;
    Ok(stratified_split(&all, MNIST_5K_TRAIN_PER_CLASS))
}

/// Loads an MNIST CSV (784 pixels then the label per line) as one [`Dataset`].
pub fn load_mnist_csv(path: &Path) -> Result<Dataset> {
    let file = file_name(path);
    let bytes = read_maybe_gz(path)?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let label = parse_csv_line(line, &mut pixels).map_err(|detail| DataError::Csv {
            file: file.clone(),
            line: i + 1,
            detail,
        })?;
        labels.push(label);
    }
    Dataset::from_bytes(&file, &pixels, labels, [1, 28, 28], 10)
}

/// Parses one CSV line of 784 pixels and a label, appending the pixels; returns the label.
fn parse_csv_line(line: &[u8], pixels: &mut Vec<u8>) -> std::result::Result<u8, String> {
    const FIELDS: usize = 28 * 28 + 1;
    let start = pixels.len();
    let mut label = 0;
    let mut count = 0;
    for field in line.split(|&b| b == b',') {
        let v = parse_byte(field).ok_or_else(|| {
            format!(
                "field {} is {:?}, not an integer 0..=255",
                count + 1,
                String::from_utf8_lossy(field)
            )
        })?;
        count += 1;
        if count < FIELDS {
            pixels.push(v);
        } else {
            label = v;
        }
    }
    if count != FIELDS {
        pixels.truncate(start);
        return Err(format!("{count} fields, expected {FIELDS}"));
    }
    Ok(label)
}

/// Parses a decimal 0..=255 (surrounding spaces allowed; a trailing `.0` too).
fn parse_byte(field: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(field).ok()?.trim();
    let s = s.strip_suffix(".0").unwrap_or(s);
    s.parse::<u8>().ok()
}

/// Splits a set per class: of each class, in order, the first `train_per_class` images
/// go to train and the rest to test; both keep the original order.
pub fn stratified_split(all: &Dataset, train_per_class: usize) -> Split {
    let mut seen = vec![0usize; all.classes];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, &l) in all.labels.iter().enumerate() {
        // Labels are below `classes` for loaded sets; any other label counts as test.
        let taken = seen.get_mut(l as usize).map(|k| {
            *k += 1;
            *k <= train_per_class
        });
        if taken == Some(true) {
            train.push(i);
        } else {
            test.push(i);
        }
    }
    Split {
        train: all.subset(&train),
        test: all.subset(&test),
    }
}

/// CIFAR-10 from the binary distribution: a folder with `data_batch_1.bin` ..
/// `data_batch_5.bin` and `test_batch.bin` (or the folder above it holding
/// `cifar-10-batches-bin`), giving 50000 train / 10000 test RGB 32×32 images.
pub fn cifar10_from(path: &Path) -> Result<Split> {
    let nested = path.join("cifar-10-batches-bin");
    let dir = if nested.is_dir() {
        nested
    } else {
        path.to_path_buf()
    };
    let train: Vec<PathBuf> = (1..=5)
        .map(|k| dir.join(format!("data_batch_{k}.bin")))
        .collect();
    cifar10_from_files(&train, &[dir.join("test_batch.bin")])
}

/// CIFAR-10 from explicit batch files: `train` files concatenated in order, likewise `test`.
pub fn cifar10_from_files(train: &[PathBuf], test: &[PathBuf]) -> Result<Split> {
    Ok(Split {
        train: load_cifar10_files(train)?,
        test: load_cifar10_files(test)?,
    })
}

/// Loads and concatenates CIFAR-10 binary batch files into one [`Dataset`].
pub fn load_cifar10_files(paths: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        read_cifar10_file(path, &mut pixels, &mut labels)?;
    }
    let name = paths.first().map_or_else(String::new, |p| file_name(p));
    Dataset::from_bytes(&name, &pixels, labels, [3, 32, 32], 10)
}

/// Appends one CIFAR-10 batch's pixel planes and labels, checking size and labels.
fn read_cifar10_file(path: &Path, pixels: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    let file = file_name(path);
    let bytes = read_maybe_gz(path)?;
    if bytes.is_empty() || bytes.len() % CIFAR10_RECORD != 0 {
        return Err(DataError::WrongSize {
            file,
            len: bytes.len(),
            record: CIFAR10_RECORD,
        });
    }
    let first = labels.len();
    for rec in bytes.chunks_exact(CIFAR10_RECORD) {
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    check_labels(&file, &labels[first..], 10)
}

/// Loads a data set by the CLI's name: `fashion-mnist`, `mnist-5k` or `cifar10:PATH`
/// (PATH as for [`cifar10_from`]).
pub fn by_name(spec: &str) -> Result<Split> {
    match spec {
        "fashion-mnist" => fashion_mnist(),
        "mnist-5k" => mnist_5k(),
        _ => match spec.strip_prefix("cifar10:") {
            Some(p) if !p.is_empty() => cifar10_from(Path::new(p)),
            _ => Err(DataError::UnknownName(spec.to_string())),
        },
    }
}

#[cfg(test)]
mod tests;
