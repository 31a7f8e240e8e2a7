//! The encoder's top-k picks from a bf16 screen decided in f32: the same result as the f32
//! product, from AMX tiles or AVX512-BF16 dot products.
//!
//! A TopK training step needs, of the encoder product `x · W_encᵀ + b_enc` (its one dense
//! product: 4096 x 9216 x 576 on the benchmark shape), only each row's top k. AMX multiplies bf16
//! tiles at about 2 TFLOP/s a core, twenty times the f32 vector units (AVX512-BF16's dot
//! products, on CPUs without AMX, at most twice them), but bf16 keeps 8 significant bits, so a
//! bf16 product can rank two close latents the other way round. Here it
//! only screens: each approximate pre-activation `a` lies within a margin `E` of the f32 one,
//! bounded from the actual bf16 rounding errors of the row and of the latent by Cauchy-Schwarz
//! (see [`Margin`]: about `u‖x‖‖w_j‖` with `u = 2⁻⁸`, half the worst case). A latent
//! whose upper bound `a + E` is not above the k-th largest lower bound `a - E` (or not above 0,
//! the ReLU) cannot be among the row's top k. The few that survive (k and a few dozen more)
//! get their pre-activation recomputed as an f32 dot product, and the top k is taken among
//! those: the picks and values of the f32 path, up to the order of the f32 additions.
//!
//! Tile loads read rows straddling two cache lines at half speed, so every buffer here is
//! 64-byte aligned. Used by [`crate::Sae::encode_picks`] when [`kernel`] finds one.

use crate::linalg::dot;
use crate::sae::Pick;
use crate::topk::{rank_order, BlockPicks, Codes};
use rayon::prelude::*;

/// The product a screen runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (Intel Sapphire Rapids and later): TDPBF16PS on 16 x 32 tiles.
    Amx,
    /// AVX512-BF16 dot products (AMD Zen 4, Intel Cooper Lake and later): VDPBF16PS. Only
    /// when asked for: on Sapphire Rapids it is no faster than the f32 product (`cargo bench
    /// -p lantern-sae --bench encoder`), and it has not been measured on Zen 4, whose f32 FMAs
    /// it should outrun twice.
    Avx512Bf16,
}

impl Kernel {
    /// Whether this process can run it: the CPU has the instructions (and AVX-512F), and for
    /// AMX Linux grants the tile state.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Amx => {
                static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
                *OK.get_or_init(|| Kernel::Avx512Bf16.supported() && tiles::enable())
            }
            Kernel::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
        }
    }
}

/// The screen's kernel for this process: `LANTERN_SCREEN` names one (`amx`, `avx512`) or turns
/// the screen off (`off`, which keeps the f32 product everywhere, to compare the two); unset,
/// AMX where this process can use it, else none.
pub fn kernel() -> Option<Kernel> {
    static PICK: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    *PICK.get_or_init(|| {
        let wanted = match std::env::var("LANTERN_SCREEN").as_deref() {
            Ok("off") | Ok("0") => return None,
            Ok("amx") => vec![Kernel::Amx],
            Ok("avx512") => vec![Kernel::Avx512Bf16],
            _ => vec![Kernel::Amx],
        };
        wanted.into_iter().find(|k| k.supported())
    })
}

/// How much the bf16 screen let through: candidates recomputed in f32 against picks made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScreenStats {
    /// Latents whose pre-activation was recomputed in f32, over all rows and picks.
    pub candidates: usize,
    /// Latents picked, over all rows and picks.
    pub picked: usize,
}

/// Each pick's per-row top k (largest first, positive values only, of equal values the earlier
/// latent) of `relu(centered · w_encᵀ + b_enc)` over the pick's allowed latents, for
/// `centered [rows, d]` and `w_enc [n, d]`: what `top_k_row` gives on the f32 product. `None`
/// when this process has no [`kernel`].
pub fn encode_picks(
    centered: &[f32],
    w_enc: &[f32],
    b_enc: &[f32],
    dims: (usize, usize, usize),
    picks: &[Pick<'_>],
) -> Option<(Vec<Codes>, ScreenStats)> {
    encode_picks_with(kernel()?, centered, w_enc, b_enc, dims, picks)
}

/// [`encode_picks`] on a given kernel; `None` when this process cannot run it.
pub fn encode_picks_with(
    kernel: Kernel,
    centered: &[f32],
    w_enc: &[f32],
    b_enc: &[f32],
    (rows, n, d): (usize, usize, usize),
    picks: &[Pick<'_>],
) -> Option<(Vec<Codes>, ScreenStats)> {
    assert_eq!(centered.len(), rows * d, "input is not {rows}x{d}");
    assert_eq!(w_enc.len(), n * d, "encoder is not {n}x{d}");
    assert_eq!(b_enc.len(), n, "encoder bias is not {n} long");
    if !kernel.supported() || d == 0 || n == 0 {
        return None;
    }
    let enc = Packed::new(w_enc, b_enc, n, d);
    let x = Rows::new(centered, rows, d);
    let allowed: Vec<Option<Vec<u32>>> = picks
        .iter()
        .map(|p| p.allowed.map(|a| bits(a, enc.n_pad)))
        .collect();
    let job = Job {
        kernel,
        d,
        x: &x,
        centered,
        enc: &enc,
        w_enc,
        picks,
        allowed: &allowed,
    };
    let blocks: Vec<(BlockPicks, ScreenStats)> = (0..rows.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|b| job.block(b * BLOCK_ROWS, BLOCK_ROWS.min(rows - b * BLOCK_ROWS)))
        .collect();
    let mut stats = ScreenStats::default();
    for (_, s) in &blocks {
        stats.candidates += s.candidates;
        stats.picked += s.picked;
    }
    let codes = Codes::from_blocks(picks.len(), blocks.into_iter().map(|(b, _)| b));
    Some((codes, stats))
}

/// Rows of `x` per task: each pair of encoder panels (36 KB) is loaded once per block and
/// used by its four 32-row sub-blocks.
const BLOCK_ROWS: usize = 128;

/// The worst-case relative error of an f32 sum of `d` products, in any order (`γ_d`, with a
/// little room for the f32 norms the bound is computed from).
fn gamma(d: usize) -> f32 {
    1.01 * d as f32 * 2f32.powi(-24)
}

/// The allowed mask as bits, 32 latents a word, zero past its end.
fn bits(allowed: &[bool], n_pad: usize) -> Vec<u32> {
    let mut out = vec![0u32; n_pad / 32];
    for (j, _) in allowed.iter().enumerate().filter(|(_, &a)| a) {
        out[j / 32] |= 1 << (j % 32);
    }
    out
}

/// One cache line of 16 words: the unit of the aligned buffers.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// A zeroed, 64-byte aligned buffer of 32-bit words.
struct Lines(Vec<Line>);

impl Lines {
    fn zeroed(words: usize) -> Lines {
        Lines(vec![Line([0; 16]); words.div_ceil(16)])
    }

    fn words(&self) -> &[u32] {
        // SAFETY: `Line` is 16 `u32`s with no padding (repr C, 64 bytes, align 64).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 16) }
    }

    fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as in `words`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 16) }
    }
}

/// `src` in bf16 (round to nearest even), two values a word, the first in the low half: the
/// pair layout both tile operands use along the inner dimension. `dst` holds
/// `src.len().div_ceil(32) * 16` words; the tail past `src` is zero. Returns the norms of the
/// rounded values, of the rounding errors and of the values, `(‖x̃‖, ‖x - x̃‖, ‖x‖)`, where a
/// bf16 value the tiles would treat as zero (subnormal) counts as zero.
fn to_bf16_pairs(src: &[f32], dst: &mut [u32]) -> (f32, f32, f32) {
    let whole = src.len() / 32;
    assert!(
        dst.len() >= src.len().div_ceil(32) * 16,
        "bf16 destination too short"
    );
    for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(16)) {
        // SAFETY: `Kernel::supported` checked AVX512-BF16 before any packing; 32 in, 16 out.
        unsafe { tiles::bf16x32(s.try_into().expect("32"), d.try_into().expect("16")) };
    }
    let rest = &src[whole * 32..];
    if !rest.is_empty() {
        let mut pad = [0f32; 32];
        pad[..rest.len()].copy_from_slice(rest);
        let last = (&mut dst[whole * 16..whole * 16 + 16])
            .try_into()
            .expect("16");
        // SAFETY: as above.
        unsafe { tiles::bf16x32(&pad, last) };
    }
    // Three sums of squares in one pass, each in 16 lanes so that the loop vectorises.
    let mut sums = [[0f32; 16]; 3];
    for (i, &x) in src.iter().enumerate() {
        let t = f32::from_bits(dst[i / 2] >> (16 * (i % 2)) << 16);
        let t = if t.abs() < f32::MIN_POSITIVE { 0.0 } else { t };
        let lane = i % 16;
        sums[0][lane] += t * t;
        // Exact: x and its rounding share an exponent range (or t is 0).
        sums[1][lane] += (x - t) * (x - t);
        sums[2][lane] += x * x;
    }
    let [rounded, error, norm] = sums.map(|s| s.iter().sum::<f32>().sqrt());
    (rounded, error, norm)
}

/// The rows of `x` in bf16, row-major, `d` padded to a multiple of 32 and the rows to a
/// multiple of 32 (zeros), with each row's two factors of the screen's margin (see [`Margin`]).
struct Rows {
    data: Lines,
    /// Words (bf16 pairs) per row.
    wpr: usize,
    /// Per row `‖x̃‖`, and `‖x - x̃‖ + 2γ‖x‖`, each with room for the norms' own rounding.
    rounded: Vec<f32>,
    error: Vec<f32>,
}

impl Rows {
    fn new(x: &[f32], rows: usize, d: usize) -> Rows {
        let wpr = d.div_ceil(32) * 16;
        let mut data = Lines::zeroed(rows.next_multiple_of(32) * wpr);
        let g = gamma(d);
        let (rounded, error) = data
            .words_mut()
            .par_chunks_mut(wpr)
            .zip(x.par_chunks(d))
            .map(|(dst, row)| {
                let (rounded, error, norm) = to_bf16_pairs(row, dst);
                (1.01 * rounded, 1.01 * (error + 2.1 * g * norm) + 1e-30)
            })
            .unzip();
        Rows {
            data,
            wpr,
            rounded,
            error,
        }
    }
}

/// The encoder as tile operands: panels of 16 latents, each a run of `chunks` tiles of 16 x 16
/// words where word `[r][j]` holds latent `16p + j`'s inputs `32c + 2r` and `32c + 2r + 1`
/// (the pair layout TDPBF16PS reads its second operand in). Latents are padded to a multiple
/// of 32 (pairs of panels) with zero rows; the bias and the margin's per-latent factors
/// are padded alike (with zeros).
struct Packed {
    tiles: Lines,
    chunks: usize,
    n: usize,
    n_pad: usize,
    bias: Vec<f32>,
    /// `‖w_j - w̃_j‖`, the factor of a row's `‖x̃‖` in the margin.
    error: Vec<f32>,
    /// `‖w_j‖`, the factor of a row's error term.
    norm: Vec<f32>,
}

impl Packed {
    fn new(w: &[f32], bias: &[f32], n: usize, d: usize) -> Packed {
        let chunks = d.div_ceil(32);
        let n_pad = n.next_multiple_of(32);
        let mut tiles = Lines::zeroed(n_pad * chunks * 16);
        let mut error = vec![0f32; n_pad];
        let mut norm = vec![0f32; n_pad];
        tiles
            .words_mut()
            .par_chunks_mut(chunks * 256)
            .zip(error.par_chunks_mut(16).zip(norm.par_chunks_mut(16)))
            .enumerate()
            .for_each(|(p, (dst, (error, norm)))| {
                // Each latent's pairs in a row of `rowwise`, then transposed into the panel:
                // word i of latent j goes to tile i / 16, pair row i % 16, column j.
                let wpr = chunks * 16;
                let mut rowwise = vec![0u32; 16 * wpr];
                let latents = 16.min(n.saturating_sub(p * 16));
                for j in 0..latents {
                    let row = &w[(p * 16 + j) * d..(p * 16 + j + 1) * d];
                    let dst = &mut rowwise[j * wpr..(j + 1) * wpr];
                    (_, error[j], norm[j]) = to_bf16_pairs(row, dst);
                }
                for (i, words) in dst.chunks_exact_mut(16).enumerate() {
                    for (j, word) in words.iter_mut().enumerate() {
                        *word = rowwise[j * wpr + i];
                    }
                }
            });
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(n_pad, 0.0);
        Packed {
            tiles,
            chunks,
            n,
            n_pad,
            bias: padded_bias,
            error,
            norm,
        }
    }
}

/// One row's screen for one pick: keeps every latent whose upper bound beats `floor`, the
/// larger of 0 and the k-th largest lower bound seen so far. The k largest lower bounds sit in
/// a min-heap, so the floor rises with every latent that enters them; the kept latents
/// (index, lower and upper bound, in three arrays that vector compress-stores append to) are
/// filtered against it whenever their buffer fills.
struct Screen {
    k: usize,
    floor: f32,
    /// The largest lower bounds seen, at most k, smallest at the root.
    lows: Vec<f32>,
    /// Kept latents: `j[..len]`, `lo[..len]`, `hi[..len]`; each array is 32 longer than `cap`.
    len: usize,
    cap: usize,
    j: Vec<u32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl Screen {
    fn new(k: usize) -> Screen {
        let cap = 2 * k + 64;
        Screen {
            k,
            floor: 0.0,
            lows: Vec::with_capacity(k),
            len: 0,
            cap,
            j: vec![0; cap + 32],
            lo: vec![0.0; cap + 32],
            hi: vec![0.0; cap + 32],
        }
    }

    /// Screens a group of 32 latents: appends those whose upper bound beats the floor (and
    /// whose bit is set in `mask`), then lets their lower bounds raise the floor.
    #[inline]
    fn take(&mut self, g: &Group<'_>, mask: u32) {
        let at = self.len;
        // SAFETY: both kernels need AVX-512F (checked by `Kernel::supported` before any block
        // runs); the
        // three arrays have 32 free entries past `len` (`len < cap` between calls).
        let added = unsafe {
            tiles::compress(
                g,
                self.floor,
                mask,
                (&mut self.j[at..], &mut self.lo[at..], &mut self.hi[at..]),
            )
        };
        self.len += added;
        for i in at..self.len {
            let lo = self.lo[i];
            if self.lows.len() < self.k {
                self.lows.push(lo);
                if self.lows.len() == self.k {
                    heapify(&mut self.lows);
                    self.floor = self.floor.max(self.lows[0]);
                }
            } else if lo > self.lows[0] {
                self.lows[0] = lo;
                sift_down(&mut self.lows, 0);
                self.floor = self.floor.max(self.lows[0]);
            }
        }
        if self.len >= self.cap {
            self.filter();
        }
    }

    /// Drops the kept latents the floor has risen past; a buffer still more than half full
    /// doubles (a wide margin).
    fn filter(&mut self) {
        let mut kept = 0;
        for i in 0..self.len {
            if self.hi[i] > self.floor {
                self.j[kept] = self.j[i];
                self.lo[kept] = self.lo[i];
                self.hi[kept] = self.hi[i];
                kept += 1;
            }
        }
        self.len = kept;
        if 2 * kept > self.cap {
            self.cap *= 2;
            for v in [&mut self.lo, &mut self.hi] {
                v.resize(self.cap + 32, 0.0);
            }
            self.j.resize(self.cap + 32, 0);
        }
    }

    /// The latents that survived the whole row.
    fn survivors(mut self) -> Vec<u32> {
        self.filter();
        self.j.truncate(self.len);
        self.j
    }
}

/// Orders `h` as a min-heap.
fn heapify(h: &mut [f32]) {
    for i in (0..h.len() / 2).rev() {
        sift_down(h, i);
    }
}

/// Moves `h[i]` down a min-heap until both children are at least as large.
fn sift_down(h: &mut [f32], mut i: usize) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < h.len() && h[l] < h[m] {
            m = l;
        }
        if r < h.len() && h[r] < h[m] {
            m = r;
        }
        if m == i {
            return;
        }
        h.swap(i, m);
        i = m;
    }
}

/// Everything a block of rows needs.
struct Job<'a> {
    kernel: Kernel,
    d: usize,
    x: &'a Rows,
    centered: &'a [f32],
    enc: &'a Packed,
    w_enc: &'a [f32],
    picks: &'a [Pick<'a>],
    allowed: &'a [Option<Vec<u32>>],
}

impl Job<'_> {
    /// Rows `first..first + rows`: the bf16 product 32 x 32 at a time, each block screened
    /// while in L1, then the survivors recomputed in f32.
    fn block(&self, first: usize, rows: usize) -> (BlockPicks, ScreenStats) {
        let enc = self.enc;
        let mut screens: Vec<Vec<Screen>> = self
            .picks
            .iter()
            .map(|p| (0..rows).map(|_| Screen::new(p.k)).collect())
            .collect();
        let mut tile = Tile([0.0; 32 * 32]);
        let panel_words = enc.chunks * 256;
        let wpr = self.x.wpr;
        // SAFETY: `Kernel::supported` granted the tile state (checked by the caller); the tile
        // configuration is this thread's until the guard drops.
        let _guard = (self.kernel == Kernel::Amx).then(|| unsafe { tiles::configure() });
        for pp in 0..enc.n_pad / 32 {
            let b = &enc.tiles.words()[2 * pp * panel_words..(2 * pp + 2) * panel_words];
            for s in (0..rows).step_by(32) {
                let a = &self.x.data.words()[(first + s) * wpr..];
                // SAFETY: `a` holds 32 padded rows of `wpr` words from here (rows are padded
                // to a multiple of 32), `b` two panels of `chunks` tiles, all 64-byte aligned;
                // the kernel is supported (checked by the caller; AMX's tiles configured).
                unsafe {
                    match self.kernel {
                        Kernel::Amx => {
                            tiles::product(a.as_ptr(), wpr * 4, b.as_ptr(), enc.chunks, &mut tile)
                        }
                        Kernel::Avx512Bf16 => {
                            tiles::dot_product(a.as_ptr(), wpr, b.as_ptr(), enc.chunks, &mut tile)
                        }
                    }
                };
                let here = 32.min(rows - s);
                self.screen_tile(&tile, (first + s, here), pp, &mut screens, s);
            }
        }
        drop(_guard);
        self.decide(first, screens)
    }

    /// Each screen's survivors recomputed in f32 and cut to their top k. The recompute goes
    /// latent by latent over the block, so an encoder row comes from memory once for every
    /// row of the block that needs it (row by row, each survivor would fetch its own).
    fn decide(&self, first: usize, screens: Vec<Vec<Screen>>) -> (BlockPicks, ScreenStats) {
        let d = self.d;
        let survivors: Vec<Vec<Vec<u32>>> = screens
            .into_iter()
            .map(|per_row| per_row.into_iter().map(Screen::survivors).collect())
            .collect();
        // (latent, local row) for every survivor, by latent.
        let mut wanted: Vec<(u32, u32)> = survivors
            .iter()
            .flat_map(|per_row| {
                per_row
                    .iter()
                    .enumerate()
                    .flat_map(|(r, c)| c.iter().map(move |&j| (j, r as u32)))
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        // Where each latent's run of `wanted` starts; the rows of the latent PREFETCH runs
        // ahead are asked for while this one's dot products run (a row is 36 cache lines whose
        // address the hardware prefetcher cannot guess).
        const PREFETCH: usize = 6;
        let starts: Vec<usize> = (0..wanted.len())
            .filter(|&i| i == 0 || wanted[i].0 != wanted[i - 1].0)
            .chain([wanted.len()])
            .collect();
        let mut exact = vec![0f32; wanted.len()];
        for (g, run) in starts.windows(2).enumerate() {
            if let Some(&ahead) = starts.get(g + PREFETCH).filter(|&&a| a < wanted.len()) {
                let j = wanted[ahead].0 as usize;
                crate::linalg::prefetch(&self.w_enc[j * d..(j + 1) * d]);
            }
            let j = wanted[run[0]].0 as usize;
            let w = &self.w_enc[j * d..(j + 1) * d];
            for i in run[0]..run[1] {
                let r = first + wanted[i].1 as usize;
                exact[i] = dot(&self.centered[r * d..(r + 1) * d], w) + self.enc.bias[j];
            }
        }
        let mut stats = ScreenStats::default();
        let out = survivors
            .into_iter()
            .zip(self.picks)
            .map(|(per_row, pick)| {
                per_row
                    .into_iter()
                    .enumerate()
                    .map(|(r, cands)| {
                        stats.candidates += cands.len();
                        let mut top: Vec<(u32, f32)> = cands
                            .iter()
                            .map(|&j| {
                                let at = wanted.binary_search(&(j, r as u32));
                                (j, exact[at.expect("every survivor was recomputed")])
                            })
                            .filter(|&(_, v)| v > 0.0)
                            .collect();
                        top.sort_unstable_by(rank_order);
                        top.truncate(pick.k);
                        stats.picked += top.len();
                        top
                    })
                    .collect()
            })
            .collect();
        (out, stats)
    }

    /// Screens a 32 x 32 block of the product (`rows` rows from global row `row0`, latents
    /// `32 pp ..`) for every pick (`screens[pick][local0 + r]`). Most rows have nothing above
    /// their floor: a vector test finds the few that do.
    fn screen_tile(
        &self,
        tile: &Tile,
        (row0, rows): (usize, usize),
        pp: usize,
        screens: &mut [Vec<Screen>],
        local0: usize,
    ) {
        let enc = self.enc;
        let j0 = pp * 32;
        let (bias, w_error, w_norm) = (
            &enc.bias[j0..j0 + 32],
            &enc.error[j0..j0 + 32],
            &enc.norm[j0..j0 + 32],
        );
        let valid = if enc.n - j0 >= 32 {
            u32::MAX
        } else {
            (1u32 << (enc.n - j0)) - 1
        };
        let per_pick = screens.iter_mut().zip(self.picks).zip(self.allowed);
        for ((screens, pick), allowed) in per_pick {
            if pick.k == 0 {
                continue;
            }
            let mask = valid & allowed.as_ref().map_or(u32::MAX, |a| a[pp]);
            for (r, screen) in screens[local0..local0 + rows].iter_mut().enumerate() {
                let group = Group {
                    approx: &tile.0[r * 32..r * 32 + 32],
                    bias,
                    margin: Margin {
                        rounded: self.x.rounded[row0 + r],
                        error: self.x.error[row0 + r],
                        w_error,
                        w_norm,
                    },
                    j0: j0 as u32,
                };
                // SAFETY: both kernels need AVX-512F, checked by `Kernel::supported` before
                // any block runs; the group's slices hold 32 values.
                if unsafe { tiles::any_above(&group, screen.floor, mask) } {
                    screen.take(&group, mask);
                }
            }
        }
    }
}

/// 32 latents' approximate products for one row, with what turns them into bounds.
struct Group<'a> {
    approx: &'a [f32],
    bias: &'a [f32],
    margin: Margin<'a>,
    /// The first latent's index.
    j0: u32,
}

/// The screen's margin for one row and 32 latents: the tile product lies within
/// `‖x̃‖·‖w - w̃‖ + (‖x - x̃‖ + 2γ‖x‖)·‖w‖` of the f32 one. (`x·w - x̃·w̃ = x̃·(w - w̃) +
/// (x - x̃)·w`, each term bounded by Cauchy-Schwarz with the actual rounding errors; the tiles'
/// f32 sum and the f32 recompute each add at most `γ‖x‖‖w‖`; the bias sums' roundings are
/// added per value, in `tiles::bounds`.) Typical bf16 rounding errors are half their worst case
/// `u`, so this is about half of `2u‖x‖‖w‖`.
struct Margin<'a> {
    rounded: f32,
    error: f32,
    w_error: &'a [f32],
    w_norm: &'a [f32],
}

/// A 32 x 32 block of the product, row-major, aligned for tile stores.
#[repr(C, align(64))]
struct Tile([f32; 32 * 32]);

/// The AMX instructions, as inline assembly (Rust's AMX intrinsics are not stable).
mod tiles {
    use super::{Group, Tile};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Asks Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
    /// after checking the CPU has AMX-TILE and AMX-BF16.
    pub fn enable() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        let amx = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 22) != 0;
        amx && request_tile_state()
    }

    #[cfg(target_os = "linux")]
    fn request_tile_state() -> bool {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: the arch_prctl system call takes two integer arguments and returns an
        // integer; it only changes this process's permitted extended state.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_state() -> bool {
        false
    }

    /// Releases the tile state when dropped.
    pub struct Configured;

    impl Drop for Configured {
        fn drop(&mut self) {
            // SAFETY: TILERELEASE only resets this thread's tile state.
            unsafe { asm!("tilerelease", options(nostack)) };
        }
    }

    /// Loads the tile configuration: eight tiles of 16 rows x 64 bytes.
    ///
    /// # Safety
    /// The process must have been granted the tile state ([`enable`]).
    pub unsafe fn configure() -> Configured {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut cfg = Config([0; 64]);
        cfg.0[0] = 1; // palette 1
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64; // bytes per row
            cfg.0[48 + t] = 16; // rows
        }
        asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack));
        Configured
    }

    /// `out = a · bᵀ` for 32 rows of `a` (bf16 pairs, `stride` bytes a row) and two panels of
    /// 16 latents (`chunks` tiles each, the second right after the first): four accumulators
    /// (tmm0-3), two row tiles (tmm4-5), two latent tiles (tmm6-7).
    ///
    /// # Safety
    /// The tiles must be configured ([`configure`]); `a` must hold 32 rows of `chunks` x 16
    /// words at `stride` bytes apart, `b` 2 x `chunks` x 256 words.
    pub unsafe fn product(
        a: *const u32,
        stride: usize,
        b: *const u32,
        chunks: usize,
        out: &mut Tile,
    ) {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
        let a1 = a.cast::<u8>().add(16 * stride).cast::<u32>();
        let b1 = b.add(chunks * 256);
        for c in 0..chunks {
            asm!(
                "tileloadd tmm4, [{a0} + {s}]",
                "tileloadd tmm6, [{b0} + {s64}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s64}]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {s}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(c * 16),
                a1 = in(reg) a1.add(c * 16),
                b0 = in(reg) b.add(c * 256),
                b1 = in(reg) b1.add(c * 256),
                s = in(reg) stride,
                s64 = in(reg) 64usize,
                options(nostack),
            );
        }
        let o = out.0.as_mut_ptr();
        asm!(
            "tilestored [{c00} + {s}], tmm0",
            "tilestored [{c01} + {s}], tmm1",
            "tilestored [{c10} + {s}], tmm2",
            "tilestored [{c11} + {s}], tmm3",
            c00 = in(reg) o,
            c01 = in(reg) o.add(16),
            c10 = in(reg) o.add(16 * 32),
            c11 = in(reg) o.add(16 * 32 + 16),
            s = in(reg) 128usize,
            options(nostack),
        );
    }

    /// 32 floats to bf16 (round to nearest even), two a word in order.
    ///
    /// # Safety
    /// The CPU must have AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16x32(src: &[f32; 32], dst: &mut [u32; 16]) {
        let lo = _mm512_loadu_ps(src.as_ptr());
        let hi = _mm512_loadu_ps(src.as_ptr().add(16));
        // The second operand fills the low half of the result.
        let v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(
            dst.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(v),
        );
    }

    /// What [`product`] computes, on AVX512-BF16 dot products: 8 rows x 32 latents at a time
    /// in 16 accumulators, each step one broadcast pair of a row's inputs against the same
    /// pair of 16 latents (a row of a packed tile, which is VDPBF16PS's layout too).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `a` must hold 32 rows of `wpr` words
    /// (`wpr >= chunks * 16`), `b` 2 x `chunks` x 256 words.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dot_product(
        a: *const u32,
        wpr: usize,
        b: *const u32,
        chunks: usize,
        out: &mut Tile,
    ) {
        let b1 = b.add(chunks * 256);
        for r0 in (0..32).step_by(8) {
            let mut acc = [_mm512_setzero_ps(); 16];
            for p in 0..chunks * 16 {
                // Pair p of the inputs: tile p / 16, pair row p % 16.
                let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 16).cast()));
                let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * 16).cast()));
                for (i, acc) in acc.chunks_exact_mut(2).enumerate() {
                    let x = *a.add((r0 + i) * wpr + p) as i32;
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(x));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                }
            }
            for (i, acc) in acc.chunks_exact(2).enumerate() {
                let row = out.0.as_mut_ptr().add((r0 + i) * 32);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(16), acc[1]);
            }
        }
    }

    /// Sixteen latents' bounds from offset `o` of the group: `v ∓ e` around `v = approx + bias`,
    /// with `e` the margin plus `2⁻²²|v|` for the f32 roundings of the bias sums (here and in
    /// the recompute) and of `v ± e` itself. [`any_above`] and [`compress`] share it, so they
    /// agree to the bit.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the group's slices must hold `o + 16` values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn bounds(g: &Group<'_>, o: usize) -> (__m512, __m512) {
        let m = &g.margin;
        let v = _mm512_add_ps(
            _mm512_loadu_ps(g.approx.as_ptr().add(o)),
            _mm512_loadu_ps(g.bias.as_ptr().add(o)),
        );
        let e = _mm512_mul_ps(
            _mm512_set1_ps(m.rounded),
            _mm512_loadu_ps(m.w_error.as_ptr().add(o)),
        );
        let e = _mm512_fmadd_ps(
            _mm512_set1_ps(m.error),
            _mm512_loadu_ps(m.w_norm.as_ptr().add(o)),
            e,
        );
        let e = _mm512_fmadd_ps(_mm512_abs_ps(v), _mm512_set1_ps(2f32.powi(-22)), e);
        (_mm512_sub_ps(v, e), _mm512_add_ps(v, e))
    }

    /// Whether any latent of the group in `mask` has an upper bound above `floor`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the group's slices must hold 32 values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn any_above(g: &Group<'_>, floor: f32, mask: u32) -> bool {
        let f = _mm512_set1_ps(floor);
        let lo_half = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(bounds(g, 0).1, f) as u32;
        let hi_half = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(bounds(g, 16).1, f) as u32;
        (lo_half | hi_half << 16) & mask != 0
    }

    /// The screen on 32 latents, sixteen lanes at a time: the index, lower and upper bound
    /// ([`bounds`]) of each latent in `mask` whose upper bound beats `floor` appended
    /// (compress-stored) to `out`. Returns how many.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the group's slices must hold 32 values and each of `out`
    /// room for 32.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn compress(
        g: &Group<'_>,
        floor: f32,
        mask: u32,
        out: (&mut [u32], &mut [f32], &mut [f32]),
    ) -> usize {
        let m = &g.margin;
        assert!(g.approx.len() >= 32 && g.bias.len() >= 32);
        assert!(m.w_error.len() >= 32 && m.w_norm.len() >= 32);
        assert!(out.0.len() >= 32 && out.1.len() >= 32 && out.2.len() >= 32);
        let f = _mm512_set1_ps(floor);
        let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let mut n = 0;
        for o in [0, 16] {
            let (lo, hi) = bounds(g, o);
            let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(hi, f) & (mask >> o) as u16;
            let j = _mm512_add_epi32(lanes, _mm512_set1_epi32((g.j0 + o as u32) as i32));
            _mm512_mask_compressstoreu_epi32(out.0.as_mut_ptr().add(n).cast(), keep, j);
            _mm512_mask_compressstoreu_ps(out.1.as_mut_ptr().add(n).cast(), keep, lo);
            _mm512_mask_compressstoreu_ps(out.2.as_mut_ptr().add(n).cast(), keep, hi);
            n += keep.count_ones() as usize;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The f64 pre-activations of one row.
    fn exact_row(x: &[f32], w: &[f32], b: &[f32], d: usize) -> Vec<f64> {
        (0..b.len())
            .map(|j| {
                let w = &w[j * d..(j + 1) * d];
                x.iter()
                    .zip(w)
                    .map(|(p, q)| *p as f64 * *q as f64)
                    .sum::<f64>()
                    + b[j] as f64
            })
            .collect()
    }

    /// Checks each pick against f64 arithmetic: values to f32 accuracy, the right count, and
    /// nothing left out that beats what was picked (beyond f32 rounding).
    fn check(
        kernel: Kernel,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        d: usize,
        picks: &[Pick<'_>],
    ) -> ScreenStats {
        let (rows, n) = (x.len() / d, b.len());
        let (got, stats) =
            encode_picks_with(kernel, x, w, b, (rows, n, d), picks).expect("kernel supported");
        for (p, pick) in picks.iter().enumerate() {
            for r in 0..rows {
                let xr = &x[r * d..(r + 1) * d];
                let want = exact_row(xr, w, b, d);
                let ok = |j: usize| pick.allowed.is_none_or(|a| a[j]);
                let tol = 1e-5 * (1.0 + want.iter().fold(0f64, |m, v| m.max(v.abs())));
                let row: Vec<(u32, f32)> = got[p].row(r).map(|(j, v)| (j as u32, v)).collect();
                let positive = (0..n).filter(|&j| ok(j) && want[j] > tol).count();
                assert!(
                    row.len() <= pick.k && row.len() >= pick.k.min(positive),
                    "row {r}"
                );
                for w2 in row.windows(2) {
                    assert!(w2[0].1 >= w2[1].1, "row {r} not largest first");
                }
                for &(j, v) in &row {
                    let j = j as usize;
                    assert!(ok(j), "row {r} picked a latent its pick does not allow");
                    assert!((v as f64 - want[j]).abs() < tol, "row {r} latent {j}");
                }
                let least = row.last().map_or(0.0, |e| e.1 as f64);
                let picked: std::collections::HashSet<u32> = row.iter().map(|e| e.0).collect();
                for j in (0..n).filter(|&j| ok(j) && !picked.contains(&(j as u32))) {
                    let miss = row.len() < pick.k && want[j] > tol;
                    assert!(
                        !miss && want[j] <= least + tol,
                        "row {r} left out latent {j}"
                    );
                }
            }
        }
        stats
    }

    fn random(len: usize, scale: f32, rng: &mut impl Rng) -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-scale..scale)).collect()
    }

    /// The kernels this CPU runs (on one with none, the tests below check nothing and say so).
    fn kernels() -> Vec<Kernel> {
        let all = [Kernel::Amx, Kernel::Avx512Bf16];
        let here: Vec<Kernel> = all.into_iter().filter(|k| k.supported()).collect();
        if here.is_empty() {
            eprintln!("skipped: this CPU has neither AMX nor AVX512-BF16");
        }
        here
    }

    #[test]
    fn screened_picks_equal_the_f32_top_k_on_ragged_shapes() {
        for kernel in kernels() {
            ragged_shapes(kernel);
        }
    }

    fn ragged_shapes(kernel: Kernel) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (rows, n, d) in [(300, 1000, 96), (33, 77, 50), (128, 512, 576), (5, 40, 1)] {
            let x = random(rows * d, 1.0, &mut rng);
            // Encoder rows of very different norms, so the per-latent margin matters.
            let mut w = random(n * d, 0.1, &mut rng);
            for (j, row) in w.chunks_mut(d).enumerate() {
                row.iter_mut().for_each(|v| *v *= 1.0 + (j % 7) as f32);
            }
            let b = random(n, 0.05, &mut rng);
            let dead: Vec<bool> = (0..n).map(|j| j % 3 == 0).collect();
            let picks = [
                Pick {
                    k: 8,
                    allowed: None,
                },
                Pick {
                    k: 32.min(n),
                    allowed: None,
                },
                Pick {
                    k: 5,
                    allowed: Some(&dead),
                },
                Pick {
                    k: 128.min(n),
                    allowed: None,
                },
            ];
            let stats = check(kernel, &x, &w, &b, d, &picks);
            assert!(stats.candidates >= stats.picked);
        }
    }

    #[test]
    fn latents_that_bf16_cannot_tell_apart_are_ranked_in_f32() {
        for kernel in kernels() {
            bf16_ties(kernel);
        }
    }

    fn bf16_ties(kernel: Kernel) {
        // Latent j is latent 0 plus j * 2e-6 along every input: along a positive input the
        // f32 pre-activations rise with j, by far less than bf16 can resolve, so the screen
        // keeps well over a hundred latents a row (more than its first buffer holds) and the
        // order comes from the f32 recompute alone.
        let (n, d, rows) = (256, 64, 16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let base = random(d, 0.2, &mut rng);
        let mut w = Vec::with_capacity(n * d);
        for j in 0..n {
            w.extend(base.iter().map(|v| v + j as f32 * 2e-6));
        }
        let x: Vec<f32> = (0..rows)
            .flat_map(|r| vec![1.0 + r as f32 * 0.1; d])
            .collect();
        let b = vec![1.0f32; n];
        let pick = [Pick {
            k: 4,
            allowed: None,
        }];
        let (got, stats) =
            encode_picks_with(kernel, &x, &w, &b, (rows, n, d), &pick).expect("kernel supported");
        assert!(
            stats.candidates > rows * (2 * 4 + 64),
            "only {} survivors",
            stats.candidates
        );
        for r in 0..rows {
            let idx = got[0].row_slices(r).0.to_vec();
            assert_eq!(idx, vec![255, 254, 253, 252]);
        }
        check(kernel, &x, &w, &b, d, &pick);
    }
}
