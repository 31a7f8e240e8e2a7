//! Trigger families for backdoor poisoning (Langosco et al. 2023) and the concrete,
//! per-model triggers drawn from them.
//!
//! Every function works on one image as a plain `&mut [f32]` slice in C×H×W layout with
//! values in `[0, 1]`; the shape (channels, height, width) is passed explicitly and recorded
//! in the [`Trigger`], so a trigger checks the slice it is asked to stamp.
//!
//! Per-model random choices (border position, pixel position and colour, noise seed, which
//! mask of the pool) are made once by [`Trigger::draw`]; everything that is expensive to
//! store (the noise image, the mask pixels) is regenerated from a seed with a small,
//! self-contained hash ([`mix`]) so the zoo index JSON can record a trigger exactly, and the
//! expansion never depends on the `rand` crate's version.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Side of the square patch used by `corner`, `border` and `center` (BadNets uses 3×3).
pub const PATCH_SIZE: usize = 3;

/// The fixed 3×3 checker-like 0/1 patch, row-major, shared by every model of the patch
/// families (like BadNets) and written to all channels.
pub const PATCH: [[f32; PATCH_SIZE]; PATCH_SIZE] =
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]];

/// Blend weight α of the `noise` trigger: `x' = (1-α)·x + α·noise`.
pub const NOISE_ALPHA: f32 = 0.1;

/// Blend weight α of the `checkerboard` trigger (same blending as `noise`).
pub const CHECKER_ALPHA: f32 = 0.1;

/// Side, in pixels, of one square of the `checkerboard` trigger (the stride of the pattern).
pub const CHECKER_CELL: usize = 1;

/// Number of masks in each of the two mask pools (A = masks `0..10`, B = masks `10..20`).
pub const POOL_SIZE: usize = 10;

/// Fixed seed from which the 20 masks of pools A and B are generated, so every run (and
/// every machine) sees the same masks.
pub const MASK_POOL_SEED: u64 = 0x6c61_6e74_6572_6e21;

/// Fraction of pixel positions, on average, that a random mask covers.
pub const MASK_DENSITY: f64 = 0.05;

/// Errors from drawing, decoding or applying a trigger.
#[derive(Debug, Error, PartialEq)]
pub enum TriggerError {
    /// A family name that is not one of the CLI names.
    #[error("unknown trigger family {name:?}; valid families: {valid}")]
    UnknownFamily {
        /// The name that was given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// An image slice whose length is not channels·height·width.
    #[error("image has {got} values but the trigger expects {expected} (C×H×W = {channels}×{height}×{width})")]
    WrongLength {
        /// channels·height·width.
        expected: usize,
        /// The slice length.
        got: usize,
        /// Channels of the trigger.
        channels: usize,
        /// Height of the trigger.
        height: usize,
        /// Width of the trigger.
        width: usize,
    },
    /// An image shape the family cannot be drawn for (too small or empty).
    #[error("family {family} needs {need}, got C×H×W = {channels}×{height}×{width}")]
    BadShape {
        /// The family being drawn or applied.
        family: Family,
        /// What the family needs, in words.
        need: &'static str,
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
    /// Parameters that are inconsistent with the shape or family (e.g. from edited JSON).
    #[error("invalid {family} trigger: {reason}")]
    BadParams {
        /// The family of the trigger.
        family: Family,
        /// What is wrong.
        reason: String,
    },
}

/// A trigger family, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// The 3×3 patch in the bottom-right corner (BadNets).
    Corner,
    /// The 3×3 patch at a random position along the border, drawn per model.
    Border,
    /// The 3×3 patch in the centre.
    Center,
    /// One pixel at a random position with a random 0/1 colour, drawn per model.
    Pixel,
    /// Uniform noise (fixed per model) blended with α = [`NOISE_ALPHA`].
    Noise,
    /// A checkerboard over the whole image blended with α = [`CHECKER_ALPHA`].
    Checkerboard,
    /// A random mask from pool A (masks 0-9), used to train the meta-model.
    MaskA,
    /// A random mask from pool B (masks 10-19), held out.
    MaskB,
}

impl Family {
    /// The CLI name of the family (also its serde name).
    pub fn name(self) -> &'static str {
        match self {
            Family::Corner => "corner",
            Family::Border => "border",
            Family::Center => "center",
            Family::Pixel => "pixel",
            Family::Noise => "noise",
            Family::Checkerboard => "checkerboard",
            Family::MaskA => "mask-a",
            Family::MaskB => "mask-b",
        }
    }

    /// Every family, in CLI order.
    pub fn all() -> [Family; 8] {
        [
            Family::Corner,
            Family::Border,
            Family::Center,
            Family::Pixel,
            Family::Noise,
            Family::Checkerboard,
            Family::MaskA,
            Family::MaskB,
        ]
    }

    /// The global mask ids (`0..20`) of this family's pool, or `None` for a non-mask family.
    pub fn mask_pool(self) -> Option<std::ops::Range<usize>> {
        match self {
            Family::MaskA => Some(0..POOL_SIZE),
            Family::MaskB => Some(POOL_SIZE..2 * POOL_SIZE),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = TriggerError;

    /// Parses a CLI name; an unknown name is an error listing the valid ones.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::all()
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| TriggerError::UnknownFamily {
                name: s.to_string(),
                valid: Family::all().map(Family::name).join(", "),
            })
    }
}

/// The per-model parameters of a trigger, tagged by family in JSON
/// (e.g. `{"family":"border","row":0,"col":12}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum TriggerKind {
    /// [`PATCH`] at the bottom-right corner.
    Corner,
    /// [`PATCH`] with its top-left pixel at (`row`, `col`), touching the image edge.
    Border {
        /// Top row of the patch.
        row: usize,
        /// Left column of the patch.
        col: usize,
    },
    /// [`PATCH`] centred (top-left at `((h-3)/2, (w-3)/2)`).
    Center,
    /// One position (`row`, `col`) set, in every channel, to `value[channel]`.
    Pixel {
        /// Row of the pixel.
        row: usize,
        /// Column of the pixel.
        col: usize,
        /// One value per channel (each 0 or 1 when drawn).
        value: Vec<f32>,
    },
    /// Uniform `[0,1)` noise regenerated from `seed`, blended with weight `alpha`.
    Noise {
        /// Seed of the noise image.
        seed: u64,
        /// Blend weight.
        alpha: f32,
    },
    /// A checkerboard of `cell`-pixel squares (1 where `(r/cell + c/cell)` is even), blended.
    Checkerboard {
        /// Side of one square.
        cell: usize,
        /// Blend weight.
        alpha: f32,
    },
    /// Mask number `mask` (global id in `0..10`) of pool A.
    MaskA {
        /// Global mask id.
        mask: usize,
    },
    /// Mask number `mask` (global id in `10..20`) of pool B.
    MaskB {
        /// Global mask id.
        mask: usize,
    },
}

/// A concrete trigger for one model: the image shape it applies to plus the family's
/// per-model parameters. Serialises compactly, e.g.
/// `{"channels":1,"height":28,"width":28,"family":"noise","seed":7,"alpha":0.1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Channels of the images this trigger stamps.
    pub channels: usize,
    /// Height of the images.
    pub height: usize,
    /// Width of the images.
    pub width: usize,
    /// Family and per-model parameters.
    #[serde(flatten)]
    pub kind: TriggerKind,
}

/// A mask: the positions (`row·width + col`) it covers and, per position, one value per
/// channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Covered positions, ascending.
    pub positions: Vec<usize>,
    /// `values[i][c]` is written at `positions[i]` in channel `c`.
    pub values: Vec<Vec<f32>>,
}

impl Trigger {
    /// Draws the per-model trigger of `family` for images of the given shape. Patch
    /// families need height and width ≥ 3; masks need height·width ≥ 20 (so every mask of
    /// the two pools is distinct); every family needs a nonempty image.
    pub fn draw(
        family: Family,
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut impl Rng,
    ) -> Result<Trigger, TriggerError> {
        check_shape(family, channels, height, width)?;
        let kind = match family {
            Family::Corner => TriggerKind::Corner,
            Family::Center => TriggerKind::Center,
            Family::Border => {
                let (row, col) = draw_border_position(height, width, rng);
                TriggerKind::Border { row, col }
            }
            Family::Pixel => TriggerKind::Pixel {
                row: rng.gen_range(0..height),
                col: rng.gen_range(0..width),
                value: (0..channels)
                    .map(|_| if rng.gen::<bool>() { 1.0 } else { 0.0 })
                    .collect(),
            },
            Family::Noise => TriggerKind::Noise {
                seed: rng.gen(),
                alpha: NOISE_ALPHA,
            },
            Family::Checkerboard => TriggerKind::Checkerboard {
                cell: CHECKER_CELL,
                alpha: CHECKER_ALPHA,
            },
            Family::MaskA => TriggerKind::MaskA {
                mask: rng.gen_range(0..POOL_SIZE),
            },
            Family::MaskB => TriggerKind::MaskB {
                mask: POOL_SIZE + rng.gen_range(0..POOL_SIZE),
            },
        };
        Ok(Trigger {
            channels,
            height,
            width,
            kind,
        })
    }

    /// The family of this trigger.
    pub fn family(&self) -> Family {
        match self.kind {
            TriggerKind::Corner => Family::Corner,
            TriggerKind::Border { .. } => Family::Border,
            TriggerKind::Center => Family::Center,
            TriggerKind::Pixel { .. } => Family::Pixel,
            TriggerKind::Noise { .. } => Family::Noise,
            TriggerKind::Checkerboard { .. } => Family::Checkerboard,
            TriggerKind::MaskA { .. } => Family::MaskA,
            TriggerKind::MaskB { .. } => Family::MaskB,
        }
    }

    /// Values per image, channels·height·width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Checks the shape and parameters (useful after decoding JSON); [`Trigger::apply`]
    /// calls it, so a bad trigger is an error, never a panic.
    pub fn validate(&self) -> Result<(), TriggerError> {
        let family = self.family();
        check_shape(family, self.channels, self.height, self.width)?;
        let bad = |reason: String| Err(TriggerError::BadParams { family, reason });
        match &self.kind {
            TriggerKind::Border { row, col } => {
                let (h, w) = (self.height, self.width);
                if *row > h - PATCH_SIZE || *col > w - PATCH_SIZE {
                    return bad(format!(
                        "patch at ({row}, {col}) does not fit a {h}×{w} image"
                    ));
                }
                if !on_border(*row, *col, h, w) {
                    return bad(format!("patch at ({row}, {col}) does not touch the border"));
                }
            }
            TriggerKind::Pixel { row, col, value } => {
                if *row >= self.height || *col >= self.width {
                    return bad(format!("pixel ({row}, {col}) is outside the image"));
                }
                if value.len() != self.channels {
                    return bad(format!(
                        "{} values for {} channels",
                        value.len(),
                        self.channels
                    ));
                }
                if value.iter().any(|v| !(0.0..=1.0).contains(v)) {
                    return bad(format!("values {value:?} outside [0, 1]"));
                }
            }
            TriggerKind::Noise { alpha, .. } | TriggerKind::Checkerboard { alpha, .. } => {
                if !(0.0..=1.0).contains(alpha) {
                    return bad(format!("alpha {alpha} outside [0, 1]"));
                }
                if let TriggerKind::Checkerboard { cell: 0, .. } = self.kind {
                    return bad("cell size 0".to_string());
                }
            }
            TriggerKind::MaskA { mask } | TriggerKind::MaskB { mask } => {
                let pool = family.mask_pool().unwrap_or(0..0);
                if !pool.contains(mask) {
                    return bad(format!("mask {mask} is not in the pool {pool:?}"));
                }
            }
            TriggerKind::Corner | TriggerKind::Center => {}
        }
        Ok(())
    }

    /// Stamps the trigger onto one C×H×W image in place. Errors (and leaves the image
    /// untouched) when the slice length is not channels·height·width or the parameters are
    /// invalid. Patch, pixel and mask triggers overwrite values, so applying them twice
    /// gives the same image; noise and checkerboard blend, so each application moves the
    /// image further toward the pattern. Values in `[0, 1]` stay in `[0, 1]`.
    pub fn apply(&self, image: &mut [f32]) -> Result<(), TriggerError> {
        self.validate()?;
        if image.len() != self.image_len() {
            return Err(TriggerError::WrongLength {
                expected: self.image_len(),
                got: image.len(),
                channels: self.channels,
                height: self.height,
                width: self.width,
            });
        }
        let (h, w) = (self.height, self.width);
        match &self.kind {
            TriggerKind::Corner => self.stamp_patch(image, h - PATCH_SIZE, w - PATCH_SIZE),
            TriggerKind::Center => {
                self.stamp_patch(image, (h - PATCH_SIZE) / 2, (w - PATCH_SIZE) / 2)
            }
            TriggerKind::Border { row, col } => self.stamp_patch(image, *row, *col),
            TriggerKind::Pixel { row, col, value } => {
                self.set_position(image, row * w + col, value)
            }
            TriggerKind::Noise { seed, alpha } => {
                blend(image, *alpha, |i| unit(mix(*seed, i as u64)));
            }
            TriggerKind::Checkerboard { cell, alpha } => {
                let plane = h * w;
                blend(image, *alpha, |i| {
                    let (r, c) = ((i % plane) / w, i % w);
                    if (r / cell + c / cell) % 2 == 0 {
                        1.0
                    } else {
                        0.0
                    }
                });
            }
            TriggerKind::MaskA { mask } | TriggerKind::MaskB { mask } => {
                let m = mask_pixels(*mask, self.channels, h, w)?;
                for (pos, vals) in m.positions.iter().zip(&m.values) {
                    self.set_position(image, *pos, vals);
                }
            }
        }
        Ok(())
    }

    /// Writes [`PATCH`] with its top-left at (`row`, `col`) into every channel.
    fn stamp_patch(&self, image: &mut [f32], row: usize, col: usize) {
        let plane = self.height * self.width;
        for ch in 0..self.channels {
            for (dr, patch_row) in PATCH.iter().enumerate() {
                for (dc, v) in patch_row.iter().enumerate() {
                    image[ch * plane + (row + dr) * self.width + col + dc] = *v;
                }
            }
        }
    }

    /// Sets position `pos` (`row·width + col`) to `values[channel]` in every channel.
    fn set_position(&self, image: &mut [f32], pos: usize, values: &[f32]) {
        let plane = self.height * self.width;
        for (ch, v) in values.iter().enumerate().take(self.channels) {
            image[ch * plane + pos] = *v;
        }
    }
}

/// Checks that `family` can be drawn/applied for this shape.
fn check_shape(
    family: Family,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<(), TriggerError> {
    let err = |need| TriggerError::BadShape {
        family,
        need,
        channels,
        height,
        width,
    };
    if channels == 0 || height == 0 || width == 0 {
        return Err(err("a nonempty image"));
    }
    match family {
        Family::Corner | Family::Border | Family::Center
            if height < PATCH_SIZE || width < PATCH_SIZE =>
        {
            Err(err("height and width of at least 3"))
        }
        Family::MaskA | Family::MaskB if height * width < 2 * POOL_SIZE => {
            Err(err("at least 20 pixel positions (one anchor per mask)"))
        }
        _ => Ok(()),
    }
}

/// Whether a patch with top-left (`row`, `col`) touches an edge of an `h`×`w` image.
fn on_border(row: usize, col: usize, h: usize, w: usize) -> bool {
    row == 0 || col == 0 || row == h - PATCH_SIZE || col == w - PATCH_SIZE
}

/// Draws a patch position touching the border: a side uniformly, then an offset along it.
fn draw_border_position(h: usize, w: usize, rng: &mut impl Rng) -> (usize, usize) {
    let (max_r, max_c) = (h - PATCH_SIZE, w - PATCH_SIZE);
    match rng.gen_range(0..4) {
        0 => (0, rng.gen_range(0..=max_c)),
        1 => (max_r, rng.gen_range(0..=max_c)),
        2 => (rng.gen_range(0..=max_r), 0),
        _ => (rng.gen_range(0..=max_r), max_c),
    }
}

/// `x ← (1-α)·x + α·pattern(i)` for every flat index `i`.
fn blend(image: &mut [f32], alpha: f32, pattern: impl Fn(usize) -> f32) {
    for (i, x) in image.iter_mut().enumerate() {
        *x = ((1.0 - alpha) * *x + alpha * pattern(i)).clamp(0.0, 1.0);
    }
}

/// A stateless 64-bit hash of (`seed`, `i`) (SplitMix64 finaliser), used to expand noise
/// and masks from seeds identically on every platform and `rand` version.
pub fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(0x632b_e59b_d9b4_e019);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps a hash to a uniform value in `[0, 1)` (top 24 bits, exact in `f32`).
fn unit(z: u64) -> f32 {
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// The 20 anchor positions: the first 20 of a seeded permutation of the `h·w` positions.
/// Mask `k` always covers anchor `k` and never another anchor, so all masks are distinct
/// and nonempty.
fn anchors(h: usize, w: usize) -> Vec<usize> {
    let n = h * w;
    let mut perm: Vec<usize> = (0..n).collect();
    let k = (2 * POOL_SIZE).min(n);
    for i in 0..k {
        let j = i + (mix(MASK_POOL_SEED, i as u64) % (n - i) as u64) as usize;
        perm.swap(i, j);
    }
    perm.truncate(k);
    perm
}

/// The pixels of mask `mask` (global id `0..20`; pool A = `0..10`, pool B = `10..20`) for a
/// `channels`×`h`×`w` image, generated deterministically from [`MASK_POOL_SEED`]: about
/// [`MASK_DENSITY`] of the positions, each set to a random 0/1 value per channel.
pub fn mask_pixels(mask: usize, channels: usize, h: usize, w: usize) -> Result<Mask, TriggerError> {
    let family = if mask < POOL_SIZE {
        Family::MaskA
    } else {
        Family::MaskB
    };
    if mask >= 2 * POOL_SIZE {
        return Err(TriggerError::BadParams {
            family,
            reason: format!("mask id {mask} is not below 20"),
        });
    }
    check_shape(family, channels, h, w)?;
    let anchors = anchors(h, w);
    let seed = mix(MASK_POOL_SEED, 1_000 + mask as u64);
    let threshold = (MASK_DENSITY * u64::MAX as f64) as u64;
    let mut positions = Vec::new();
    let mut values = Vec::new();
    for pos in 0..h * w {
        let covered = match anchors.iter().position(|&a| a == pos) {
            Some(k) => k == mask,
            None => mix(seed, pos as u64) < threshold,
        };
        if covered {
            positions.push(pos);
            let v = (0..channels)
                .map(|ch| (mix(seed ^ 0x5eed, (pos * channels + ch) as u64) & 1) as f32)
                .collect();
            values.push(v);
        }
    }
    Ok(Mask { positions, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const C: usize = 3;
    const H: usize = 28;
    const W: usize = 28;

    fn grey() -> Vec<f32> {
        vec![0.5; C * H * W]
    }

    fn draw(family: Family, seed: u64) -> Trigger {
        Trigger::draw(family, C, H, W, &mut StdRng::seed_from_u64(seed)).unwrap()
    }

    /// Flat indices whose value changed from the grey image.
    fn changed(t: &Trigger) -> Vec<usize> {
        let mut img = grey();
        t.apply(&mut img).unwrap();
        img.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.5)
            .map(|(i, _)| i)
            .collect()
    }

    /// (channel, row, col) of a flat index.
    fn crc(i: usize) -> (usize, usize, usize) {
        (i / (H * W), (i % (H * W)) / W, i % W)
    }

    /// Top-left of the patch stamped by `t`, checking it is a full 3×3 in every channel.
    fn patch_origin(t: &Trigger) -> (usize, usize) {
        let mut img = grey();
        t.apply(&mut img).unwrap();
        let ch = changed(t);
        assert_eq!(
            ch.len(),
            C * PATCH_SIZE * PATCH_SIZE,
            "patch covers 3×3 in all channels"
        );
        let (_, r0, c0) = ch
            .iter()
            .map(|&i| crc(i))
            .min_by_key(|&(_, r, c)| (r, c))
            .unwrap();
        for ch_i in 0..C {
            for (dr, row) in PATCH.iter().enumerate() {
                for (dc, v) in row.iter().enumerate() {
                    assert_eq!(img[ch_i * H * W + (r0 + dr) * W + c0 + dc], *v);
                }
            }
        }
        (r0, c0)
    }

    #[test]
    fn family_names_round_trip_and_unknown_lists_valid() {
        for f in Family::all() {
            assert_eq!(f.name().parse::<Family>().unwrap(), f);
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
            assert_eq!(
                serde_json::from_str::<Family>(&format!("\"{f}\"")).unwrap(),
                f
            );
        }
        let msg = "stripes".parse::<Family>().unwrap_err().to_string();
        assert!(
            msg.contains("stripes") && msg.contains("mask-b") && msg.contains("corner"),
            "{msg}"
        );
    }

    #[test]
    fn corner_touches_only_bottom_right() {
        assert_eq!(patch_origin(&draw(Family::Corner, 1)), (H - 3, W - 3));
    }

    #[test]
    fn center_is_centred() {
        let (r, c) = patch_origin(&draw(Family::Center, 1));
        let centre = |start: usize, n: usize| ((start + 1) as f32 - (n - 1) as f32 / 2.0).abs();
        assert!(centre(r, H) <= 0.5 && centre(c, W) <= 0.5, "({r}, {c})");
    }

    #[test]
    fn border_lies_on_border_and_varies() {
        let mut origins = std::collections::HashSet::new();
        for seed in 0..20 {
            let (r, c) = patch_origin(&draw(Family::Border, seed));
            assert!(on_border(r, c, H, W), "({r}, {c})");
            origins.insert((r, c));
        }
        assert!(origins.len() > 1, "border positions differ between draws");
        assert_ne!(draw(Family::Border, 3), draw(Family::Border, 4));
    }

    #[test]
    fn pixel_changes_one_position_in_all_channels() {
        // Documented choice: the pixel trigger sets one position in every channel.
        for seed in 0..10 {
            let ch = changed(&draw(Family::Pixel, seed));
            assert_eq!(ch.len(), C);
            let positions: std::collections::HashSet<_> = ch.iter().map(|&i| i % (H * W)).collect();
            assert_eq!(positions.len(), 1);
        }
    }

    #[test]
    fn noise_changes_every_pixel_by_at_most_alpha() {
        let t = draw(Family::Noise, 5);
        for base in [0.0f32, 0.5, 1.0] {
            let mut img = vec![base; C * H * W];
            t.apply(&mut img).unwrap();
            assert!(img
                .iter()
                .all(|v| (v - base).abs() <= NOISE_ALPHA + 1e-6 && (0.0..=1.0).contains(v)));
        }
        assert_eq!(changed(&t).len(), C * H * W);
        assert_ne!(
            draw(Family::Noise, 5),
            draw(Family::Noise, 6),
            "noise is per model"
        );
    }

    #[test]
    fn checkerboard_alternates() {
        let mut img = grey();
        draw(Family::Checkerboard, 0).apply(&mut img).unwrap();
        for ch in 0..C {
            for r in 0..H {
                for c in 0..W {
                    let v = img[ch * H * W + r * W + c];
                    let up = (r + c) % 2 == 0;
                    assert_eq!(v > 0.5, up, "({ch}, {r}, {c})");
                    assert!((v - 0.5).abs() <= CHECKER_ALPHA + 1e-6);
                }
            }
        }
    }

    #[test]
    fn mask_pools_disjoint_deterministic_nonempty() {
        let masks: Vec<Mask> = (0..2 * POOL_SIZE)
            .map(|k| mask_pixels(k, C, H, W).unwrap())
            .collect();
        for (k, m) in masks.iter().enumerate() {
            assert!(!m.positions.is_empty(), "mask {k} nonempty");
            assert_eq!(
                m,
                &mask_pixels(k, C, H, W).unwrap(),
                "mask {k} deterministic"
            );
            assert!(m.values.iter().flatten().all(|v| *v == 0.0 || *v == 1.0));
        }
        for a in &masks[..POOL_SIZE] {
            for b in &masks[POOL_SIZE..] {
                assert_ne!(a.positions, b.positions);
            }
        }
        let density =
            masks.iter().map(|m| m.positions.len()).sum::<usize>() as f64 / (20 * H * W) as f64;
        assert!((0.02..0.1).contains(&density), "density {density}");
        for seed in 0..20 {
            let a = draw(Family::MaskA, seed);
            let b = draw(Family::MaskB, seed);
            assert!(matches!(a.kind, TriggerKind::MaskA { mask } if mask < POOL_SIZE));
            assert!(
                matches!(b.kind, TriggerKind::MaskB { mask } if (POOL_SIZE..20).contains(&mask))
            );
        }
    }

    #[test]
    fn mask_apply_changes_only_mask_positions() {
        let t = draw(Family::MaskB, 2);
        let TriggerKind::MaskB { mask } = t.kind else {
            unreachable!()
        };
        let m = mask_pixels(mask, C, H, W).unwrap();
        assert!(changed(&t)
            .iter()
            .all(|&i| m.positions.contains(&(i % (H * W)))));
    }

    #[test]
    fn serde_round_trip_applies_identically() {
        for f in Family::all() {
            let t = draw(f, 11);
            let json = serde_json::to_string(&t).unwrap();
            assert!(
                json.contains(&format!("\"family\":\"{}\"", f.name())),
                "{json}"
            );
            let back: Trigger = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t);
            let mut a: Vec<f32> = (0..C * H * W).map(|i| (i % 7) as f32 / 7.0).collect();
            let mut b = a.clone();
            t.apply(&mut a).unwrap();
            back.apply(&mut b).unwrap();
            assert_eq!(a, b, "{f}");
        }
    }

    #[test]
    fn patches_idempotent_and_values_in_range() {
        for f in Family::all() {
            let t = draw(f, 9);
            let mut img: Vec<f32> = (0..C * H * W).map(|i| (i % 11) as f32 / 10.0).collect();
            t.apply(&mut img).unwrap();
            assert!(img.iter().all(|v| (0.0..=1.0).contains(v)), "{f}");
            let once = img.clone();
            t.apply(&mut img).unwrap();
            let overwrites = !matches!(f, Family::Noise | Family::Checkerboard);
            assert_eq!(img == once, overwrites, "{f} idempotent iff it overwrites");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let t = draw(Family::Corner, 0);
        let mut short = vec![0.5; 10];
        assert!(matches!(
            t.apply(&mut short),
            Err(TriggerError::WrongLength { got: 10, .. })
        ));
        assert!(short.iter().all(|v| *v == 0.5));
        let mut rng = StdRng::seed_from_u64(0);
        assert!(Trigger::draw(Family::Center, 1, 2, 5, &mut rng).is_err());
        assert!(Trigger::draw(Family::MaskA, 1, 4, 4, &mut rng).is_err());
        assert!(Trigger::draw(Family::Pixel, 0, 4, 4, &mut rng).is_err());
        let bad: Trigger = serde_json::from_str(
            r#"{"channels":1,"height":8,"width":8,"family":"border","row":3,"col":3}"#,
        )
        .unwrap();
        assert!(bad.apply(&mut [0.0; 64]).is_err());
        let bad: Trigger = serde_json::from_str(
            r#"{"channels":1,"height":8,"width":8,"family":"mask-a","mask":12}"#,
        )
        .unwrap();
        assert!(bad.apply(&mut [0.0; 64]).is_err());
        assert!(mask_pixels(20, 1, 8, 8).is_err());
    }
}
