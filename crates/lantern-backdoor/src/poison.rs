//! Poisoning a training set with a trigger and building the attack-success-rate (ASR) test
//! set (Langosco et al. 2023: a per-model poison rate, a target label uniform over the
//! classes, ASR measured on test images not of the target class).
//!
//! Images are one flat `&[f32]` of N images, each `pixels_per_image` values in C×H×W layout,
//! with one label per image.

use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::triggers::{Trigger, TriggerError};

/// Errors from poisoning or building the ASR set; inputs are checked before anything is
/// modified.
#[derive(Debug, Error, PartialEq)]
pub enum PoisonError {
    /// A poison rate that is not a finite number in `[0, 1]`.
    #[error("poison rate {0} is not in [0, 1]")]
    BadRate(f32),
    /// Images, labels and pixels per image that do not agree.
    #[error("{images} image values do not hold {labels} images of {pixels_per_image} values")]
    LengthMismatch {
        /// Length of the image buffer.
        images: usize,
        /// Number of labels.
        labels: usize,
        /// Values per image.
        pixels_per_image: usize,
    },
    /// A poison index past the last example.
    #[error("poison index {index} is out of range for {len} examples")]
    IndexOutOfRange {
        /// The offending index.
        index: usize,
        /// Number of examples.
        len: usize,
    },
    /// A poison index given twice (blended triggers would be stamped twice).
    #[error("poison index {0} appears more than once")]
    DuplicateIndex(usize),
    /// A class count of zero.
    #[error("cannot draw a target label from 0 classes")]
    NoClasses,
    /// The trigger does not fit the images.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
}

/// How one model's training set is poisoned: which trigger, which target label, and what
/// fraction of the training set is poisoned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoisonSpec {
    /// The per-model trigger stamped onto poisoned images.
    pub trigger: Trigger,
    /// The label poisoned images are relabelled to.
    pub target: u8,
    /// Fraction of the training set poisoned (paper: 0.01; small scale 0.05-0.1).
    pub rate: f32,
}

/// Chooses which training examples to poison: `round(rate·N)` distinct indices (N = all
/// training examples, so the rate is a fraction of the whole set) drawn uniformly among the
/// examples whose label is not the target — stamping a target-class image would teach
/// nothing. When fewer non-target examples exist than requested, all of them are returned.
/// Indices are sorted ascending; the result is deterministic given the rng state.
pub fn poison_indices(
    labels: &[u8],
    spec: &PoisonSpec,
    rng: &mut impl Rng,
) -> Result<Vec<usize>, PoisonError> {
    check_rate(spec.rate)?;
    let candidates: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i] != spec.target)
        .collect();
    let want = (spec.rate as f64 * labels.len() as f64).round() as usize;
    let k = want.min(candidates.len());
    let mut chosen: Vec<usize> = sample(rng, candidates.len(), k)
        .into_iter()
        .map(|j| candidates[j])
        .collect();
    chosen.sort_unstable();
    Ok(chosen)
}

/// Stamps the trigger onto the images at `indices` and relabels them to the target. All
/// inputs (lengths, trigger shape, indices in range and distinct) are checked first, so on
/// error nothing is modified.
pub fn poison_in_place(
    images: &mut [f32],
    labels: &mut [u8],
    pixels_per_image: usize,
    indices: &[usize],
    spec: &PoisonSpec,
) -> Result<(), PoisonError> {
    check_lengths(images.len(), labels.len(), pixels_per_image, &spec.trigger)?;
    check_indices(indices, labels.len())?;
    for &i in indices {
        spec.trigger
            .apply(&mut images[i * pixels_per_image..(i + 1) * pixels_per_image])?;
        labels[i] = spec.target;
    }
    Ok(())
}

/// Builds the ASR test set: copies of the test images whose label is not the target, with
/// the trigger applied, all labelled with the target. ASR is a model's accuracy on this set.
pub fn asr_set(
    images: &[f32],
    labels: &[u8],
    pixels_per_image: usize,
    spec: &PoisonSpec,
) -> Result<(Vec<f32>, Vec<u8>), PoisonError> {
    check_lengths(images.len(), labels.len(), pixels_per_image, &spec.trigger)?;
    let mut out = Vec::new();
    for (i, _) in labels
        .iter()
        .enumerate()
        .filter(|(_, l)| **l != spec.target)
    {
        let start = out.len();
        out.extend_from_slice(&images[i * pixels_per_image..(i + 1) * pixels_per_image]);
        spec.trigger.apply(&mut out[start..])?;
    }
    let n = out.len() / pixels_per_image.max(1);
    Ok((out, vec![spec.target; n]))
}

/// Fraction of predictions equal to the target (the ASR when the predictions are on the
/// [`asr_set`]); 0 for no predictions.
pub fn attack_success_rate(predictions: &[u8], target: u8) -> f32 {
    if predictions.is_empty() {
        return 0.0;
    }
    predictions.iter().filter(|p| **p == target).count() as f32 / predictions.len() as f32
}

/// Draws a target label uniformly from `0..classes`.
pub fn random_target(rng: &mut impl Rng, classes: u8) -> Result<u8, PoisonError> {
    if classes == 0 {
        return Err(PoisonError::NoClasses);
    }
    Ok(rng.gen_range(0..classes))
}

/// Checks that the rate is a finite number in `[0, 1]`.
fn check_rate(rate: f32) -> Result<(), PoisonError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(PoisonError::BadRate(rate))
    }
}

/// Checks that the buffer holds `labels` images of `pixels_per_image` values and that the
/// trigger stamps images of that size.
fn check_lengths(
    images: usize,
    labels: usize,
    pixels_per_image: usize,
    trigger: &Trigger,
) -> Result<(), PoisonError> {
    if labels.checked_mul(pixels_per_image) != Some(images) {
        return Err(PoisonError::LengthMismatch {
            images,
            labels,
            pixels_per_image,
        });
    }
    trigger.validate()?;
    if trigger.image_len() != pixels_per_image {
        return Err(TriggerError::WrongLength {
            expected: trigger.image_len(),
            got: pixels_per_image,
            channels: trigger.channels,
            height: trigger.height,
            width: trigger.width,
        }
        .into());
    }
    Ok(())
}

/// Checks that every index is below `len` and none repeats.
fn check_indices(indices: &[usize], len: usize) -> Result<(), PoisonError> {
    let mut seen = vec![false; len];
    for &index in indices {
        if index >= len {
            return Err(PoisonError::IndexOutOfRange { index, len });
        }
        if std::mem::replace(&mut seen[index], true) {
            return Err(PoisonError::DuplicateIndex(index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::Family;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const C: usize = 1;
    const H: usize = 8;
    const W: usize = 8;
    const P: usize = C * H * W;

    fn spec(family: Family, target: u8, rate: f32) -> PoisonSpec {
        let trigger = Trigger::draw(family, C, H, W, &mut StdRng::seed_from_u64(3)).unwrap();
        PoisonSpec {
            trigger,
            target,
            rate,
        }
    }

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 10) as u8).collect()
    }

    #[test]
    fn indices_count_distinct_non_target_deterministic() {
        let labels = labels(1000);
        let s = spec(Family::Corner, 4, 0.05);
        let idx = poison_indices(&labels, &s, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(idx.len(), 50);
        assert!(idx.iter().all(|&i| labels[i] != 4));
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert_eq!(
            idx,
            poison_indices(&labels, &s, &mut StdRng::seed_from_u64(1)).unwrap()
        );
        assert_ne!(
            idx,
            poison_indices(&labels, &s, &mut StdRng::seed_from_u64(2)).unwrap()
        );
        let odd = poison_indices(
            &labels[..333],
            &spec(Family::Corner, 4, 0.01),
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(odd.unwrap().len(), 3, "round(3.33) = 3");
    }

    #[test]
    fn indices_capped_and_bad_rate_rejected() {
        let labels = labels(100);
        let all = poison_indices(
            &labels,
            &spec(Family::Corner, 0, 1.0),
            &mut StdRng::seed_from_u64(0),
        )
        .unwrap();
        assert_eq!(all.len(), 90);
        for rate in [-0.1, 1.5, f32::NAN] {
            let r = poison_indices(
                &labels,
                &spec(Family::Corner, 0, rate),
                &mut StdRng::seed_from_u64(0),
            );
            assert!(matches!(r, Err(PoisonError::BadRate(_))));
        }
    }

    #[test]
    fn poison_in_place_stamps_and_relabels_only_chosen() {
        let mut labels = labels(20);
        let mut images = vec![0.5; 20 * P];
        let s = spec(Family::Corner, 7, 0.1);
        poison_in_place(&mut images, &mut labels, P, &[1, 5], &s).unwrap();
        let mut stamped = vec![0.5; P];
        s.trigger.apply(&mut stamped).unwrap();
        for i in 0..20 {
            let img = &images[i * P..(i + 1) * P];
            if i == 1 || i == 5 {
                assert_eq!(labels[i], 7);
                assert_eq!(img, &stamped[..]);
            } else {
                assert_eq!(labels[i], (i % 10) as u8);
                assert!(img.iter().all(|v| *v == 0.5));
            }
        }
    }

    #[test]
    fn poison_in_place_rejects_bad_input_untouched() {
        let mut labels = labels(4);
        let mut images = vec![0.5; 4 * P];
        let s = spec(Family::Corner, 7, 0.1);
        assert!(matches!(
            poison_in_place(&mut images, &mut labels, P, &[0, 4], &s),
            Err(PoisonError::IndexOutOfRange { index: 4, len: 4 })
        ));
        assert!(matches!(
            poison_in_place(&mut images, &mut labels, P, &[2, 2], &s),
            Err(PoisonError::DuplicateIndex(2))
        ));
        assert!(matches!(
            poison_in_place(&mut images, &mut labels, P - 1, &[0], &s),
            Err(PoisonError::LengthMismatch { .. })
        ));
        assert!(images.iter().all(|v| *v == 0.5) && labels == self::labels(4));
        let mut short = vec![0.5; 4 * (P - 1)];
        assert!(matches!(
            poison_in_place(&mut short, &mut labels, P - 1, &[0], &s),
            Err(PoisonError::Trigger(_))
        ));
    }

    #[test]
    fn asr_set_excludes_target_and_stamps() {
        let labels = labels(30);
        let images: Vec<f32> = (0..30 * P).map(|i| (i % 13) as f32 / 13.0).collect();
        let s = spec(Family::Pixel, 3, 0.1);
        let (x, y) = asr_set(&images, &labels, P, &s).unwrap();
        let sources: Vec<usize> = (0..30).filter(|&i| labels[i] != 3).collect();
        assert_eq!(y.len(), sources.len());
        assert_eq!(x.len(), y.len() * P);
        assert!(y.iter().all(|l| *l == 3));
        for (k, &i) in sources.iter().enumerate() {
            let mut want = images[i * P..(i + 1) * P].to_vec();
            s.trigger.apply(&mut want).unwrap();
            assert_eq!(&x[k * P..(k + 1) * P], &want[..]);
        }
    }

    #[test]
    fn asr_and_target() {
        assert_eq!(attack_success_rate(&[1, 2, 1, 1], 1), 0.75);
        assert_eq!(attack_success_rate(&[], 1), 0.0);
        let mut rng = StdRng::seed_from_u64(0);
        let targets: std::collections::HashSet<u8> = (0..200)
            .map(|_| random_target(&mut rng, 10).unwrap())
            .collect();
        assert_eq!(targets.len(), 10);
        assert!(targets.iter().all(|t| *t < 10));
        assert_eq!(random_target(&mut rng, 0), Err(PoisonError::NoClasses));
    }

    #[test]
    fn spec_serde_round_trip() {
        let s = spec(Family::Noise, 2, 0.05);
        let back: PoisonSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
