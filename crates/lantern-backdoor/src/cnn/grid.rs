//! [`Grid`]: the zero-padded, channel-major layout every layer of a chunk of samples uses.
//!
//! A 3×3 convolution with padding 1 needs a zero on every side of each plane. Stored rows
//! are `w + 1` values (the last one zero) and each plane starts with a zero row, so the
//! zero after a row is also the left neighbour of the next row, and the zero row before a
//! sample is also the bottom neighbour of the sample before it: `n` samples of one
//! channel take `n·(h+1)·(w+1)` values, plus one leading zero and one trailing zero row.
//! Channels follow each other: `[C, channel]`. With the zeros in memory a 3×3 tap is one
//! constant offset from any pixel, so a padded convolution of the whole chunk is a sum of
//! shifted copies of each input channel — long contiguous vectors, no im2col matrix (see
//! `kernels.rs`). Zeros sit in every buffer a convolution reads; in a convolution's output
//! those places hold junk that no layer reads (layers visit interior rows only,
//! [`Grid::rows`]).

use std::ops::Range;

/// Geometry of the padded layout of `n` samples of `h × w` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    /// Samples in the chunk.
    pub n: usize,
    /// Interior height.
    pub h: usize,
    /// Interior width.
    pub w: usize,
}

impl Grid {
    /// Values per stored row (`w + 1`).
    pub fn stride(&self) -> usize {
        self.w + 1
    }

    /// Values per stored plane, its leading zero row included (`(h + 1)·(w + 1)`).
    pub fn plane(&self) -> usize {
        (self.h + 1) * self.stride()
    }

    /// Values per channel: a leading zero, `n` planes and a trailing zero row.
    pub fn channel(&self) -> usize {
        1 + self.n * self.plane() + self.stride()
    }

    /// Interior pixels per channel and sample (`h·w`).
    pub fn area(&self) -> usize {
        self.h * self.w
    }

    /// The grid of a 2×2 max-pool's output (sizes floored).
    pub fn pooled(&self) -> Grid {
        Grid {
            n: self.n,
            h: self.h / 2,
            w: self.w / 2,
        }
    }

    /// Index of interior pixel `(y, x)` of channel `c`, sample `s`.
    #[inline]
    pub fn at(&self, c: usize, s: usize, y: usize, x: usize) -> usize {
        c * self.channel() + 1 + s * self.plane() + (y + 1) * self.stride() + x
    }

    /// The `h` interior rows of plane `(c, s)`, each `w` values.
    pub fn rows(&self, c: usize, s: usize) -> impl Iterator<Item = Range<usize>> {
        let g = *self;
        (0..g.h).map(move |y| {
            let start = g.at(c, s, y, 0);
            start..start + g.w
        })
    }

    /// The interior rows of every plane of `c` channels, in storage order (channel, then
    /// sample, then row) — the order [`maxpool2`](super::forward::maxpool2) records its
    /// winners in.
    pub fn all_rows(&self, c: usize) -> impl Iterator<Item = Range<usize>> {
        let g = *self;
        (0..c).flat_map(move |ch| (0..g.n).flat_map(move |s| g.rows(ch, s)))
    }

    /// Offsets of the nine taps of a 3×3 kernel, `tap = ky·3 + kx` reading pixel
    /// `(y + ky − 1, x + kx − 1)`.
    pub fn taps(&self) -> [isize; 9] {
        let s = self.stride() as isize;
        std::array::from_fn(|t| (t as isize / 3 - 1) * s + (t as isize % 3 - 1))
    }

    /// The positions of a channel a convolution computes: every interior pixel lies inside,
    /// and every tap from inside stays inside the channel.
    pub fn span(&self) -> Range<usize> {
        self.stride() + 1..self.channel() - self.stride() - 1
    }

    /// The stored values of plane `(c, s)`: its leading zero row and its `h` rows, each
    /// with its trailing zero.
    pub fn plane_range(&self, c: usize, s: usize) -> Range<usize> {
        let start = c * self.channel() + 1 + s * self.plane();
        start..start + self.plane()
    }

    /// Zeros per plane (`plane − h·w`).
    pub fn pads(&self) -> usize {
        self.plane() - self.area()
    }

    /// Sets the zero places of every plane of the `c` channels of `x` back to zero (after a
    /// layer that wrote whole planes).
    pub fn zero_pads(&self, x: &mut [f32], c: usize) {
        for ch in 0..c {
            for s in 0..self.n {
                let p = self.plane_range(ch, s);
                x[p.start..p.start + self.stride()].fill(0.0);
                for y in 0..self.h {
                    x[self.at(ch, s, y, self.w)] = 0.0;
                }
            }
        }
    }

    /// `n` images `[n, c, h, w]` in this layout, zeros in place.
    pub fn pad(&self, images: &[f32], c: usize) -> Vec<f32> {
        assert_eq!(
            images.len(),
            self.n * c * self.area(),
            "images for the grid"
        );
        let mut out = vec![0.0f32; c * self.channel()];
        let mut src = images.chunks_exact(self.w);
        for s in 0..self.n {
            for ch in 0..c {
                for r in self.rows(ch, s) {
                    out[r].copy_from_slice(src.next().expect("sized above"));
                }
            }
        }
        out
    }

    /// The interior of a buffer in this layout as `[n, c, h, w]` (the inverse of
    /// [`Grid::pad`]).
    pub fn unpad(&self, x: &[f32], c: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * c * self.area());
        for s in 0..self.n {
            for ch in 0..c {
                for r in self.rows(ch, s) {
                    out.extend_from_slice(&x[r]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_round_trips_and_taps_reach_neighbours() {
        let g = Grid { n: 2, h: 3, w: 4 };
        let images: Vec<f32> = (0..2 * 2 * 12).map(|v| v as f32 + 1.0).collect();
        let p = g.pad(&images, 2);
        assert_eq!(p.len(), 2 * (1 + 2 * 4 * 5 + 5));
        assert_eq!(g.unpad(&p, 2), images);
        // Borders are zero: the sum is unchanged.
        assert_eq!(p.iter().sum::<f32>(), images.iter().sum::<f32>());
        // Sample 1, channel 0, pixel (1, 2) is image value index 2*12 + 1*4 + 2.
        let at = g.at(0, 1, 1, 2);
        assert_eq!(p[at], images[2 * 12 + 6]);
        let taps = g.taps();
        assert_eq!(p[(at as isize + taps[1]) as usize], images[2 * 12 + 2]); // up
        assert_eq!(p[(at as isize + taps[5]) as usize], images[2 * 12 + 7]); // right
        assert_eq!(p[(at as isize + taps[8]) as usize], images[2 * 12 + 11]); // down-right
        let span = g.span();
        for c in 0..2 {
            for s in 0..2 {
                for r in g.rows(c, s) {
                    let base = c * g.channel();
                    assert!(r.start - base >= span.start && r.end - base <= span.end);
                }
            }
        }
        assert_eq!(span.start as isize + taps[0], 0);
        assert_eq!(span.end as isize - 1 + taps[8], g.channel() as isize - 1);
    }
}
