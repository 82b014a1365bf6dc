//! Density images of particle clouds, as in the reference tutorial.
//!
//! The density at a pixel centre `c` is `sum_p exp(-|p - c|^2 / (2 h^2))` over the particles
//! `p`; the tutorial's `exp(-350 |p - c|^2)` is `h = 1/sqrt(700)` ([`DEFAULT_BANDWIDTH`]).
//! Pixel centres lie on `linspace` grids: column `j` at `x_j = linspace(xmin, xmax, W)[j]`,
//! row `r` at `y = linspace(ymin, ymax, H)[H - 1 - r]`, so row 0 is the top of the image
//! (`y = ymax`) and the y axis points up.
//!
//! Both paths use the separability of the kernel, `exp(-|p - c|^2 a) = g(x_j - px)
//! g(y - py)`, truncated at the cut-off radius `R = sqrt(2 ln 1e7) h` (the truncated tail is
//! below 1e-7 of a particle's peak). Which path a grid takes depends only on its size, extent
//! and bandwidth, never on the particles or the batches.
//!
//! * **Split path**, when the kernel spans at least 10 pixels each way (e.g. the default
//!   bandwidth at 512x512: `R` ~ 18 pixels) and the sub-grid below fits the memory budget.
//!   A fine square *sub-grid* of spacing `d = h / 8` (independent of the pixels) covers the
//!   extent plus `R`. A particle is placed on it by 8-point Lagrange interpolation in each
//!   axis: it adds `Lx_i(tx) Ly_k(ty)` to the 8x8 sub-grid nodes around it, so that
//!   `g(x - px) g(y - py) ~ sum_ik Lx_i Ly_k g(x - x_i) g(y - y_k)` — one 8-wide
//!   multiply-add per stencil row, 8 a particle, no `exp`. The error of placing `py` (or
//!   `px`) this way is the interpolation remainder of `g(y - .)`, at most
//!   `sup|He_8(u) exp(-u^2/2)| / 8! * max|w_8| * (d/h)^8 = 105 / 40320 * 43.07 * 8^-8`
//!   = 6.7e-9 of the particle's peak per axis (measured: 5e-9 of the image's peak against
//!   the exact f64 sum). Pixels are the sub-grid *folded* through the kernel,
//!   `pixel(r, j) = sum_k g(y_r - y_k) sum_i g(x_j - x_i) T[k][i]` over the ~110 sub-rows and
//!   sub-columns within `R + 8 d`: first along y (into one sub-row per pixel row), then
//!   along x. That is a fixed cost (about 6 ms for 512x512 at the default bandwidth on two
//!   cores, independent of the particle count), paid on the first read after a change
//!   ([`DensityGrid::data`] and everything built on it), not per batch; slightly negative
//!   folded values (interpolation error far from every particle) are clamped to zero.
//!   Memory: the sub-grid holds `(X + 2 R) (Y + 2 R) / d^2` i64 (X, Y the extent's sides),
//!   about 1,372 x 1,376 values = 15 MB for [-3,3]^2 at the default bandwidth, whatever the
//!   image size, allocated on the first deposit, plus the folded pixels. It is used only
//!   while it stays below max(4 x the pixels, 2^23 values = 64 MiB); larger sub-grids (a
//!   bandwidth small relative to the extent, e.g. under ~1.5 pixels at 512x512) take the
//!   direct path, so memory never exceeds ~5x the pixel grid or 64 MiB more.
//!   Work is split into fixed bands of sub-rows (particles partitioned stably, in input
//!   order, per chunk of particles), run as two phases of alternate bands so that neighbours
//!   never write the same sub-row at the same time.
//! * **Direct path** (small bandwidths relative to the pixel spacing, single-row or
//!   single-column grids, sub-grids over budget): for each particle, 1-D weights over the
//!   columns and rows within `R` and their outer product added to the pixels, split into
//!   bands of rows, one rayon task each.
//!
//! * **Histogram** ([`Kernel::Histogram`]): each particle adds one whole unit to the pixel
//!   whose centre is nearest (direct path storage).
//!
//! Large grids are read band by band ([`DensityGrid::read_rows`], used by
//! [`crate::image::raster`]): a band of the split path is folded from the sub-grid for its rows only,
//! bit for bit the same rows as the whole fold, so memory stays at the sub-grid plus a band.
//! The split path's sub-grid can also be filled elsewhere (the GPU deposit,
//! [`crate::engine::gpu::raster`]) through [`DensityGrid::sub_grid`] and
//! [`DensityGrid::add_sub_grid_counts`].
//!
//! Both accumulate in integer fixed point: each deposited weight (a sub-grid node's
//! `Lx_i Ly_k`, or a pixel's `g g`) is rounded once to a multiple of `2^-32` of a particle's
//! peak and added to an `i64`, so sums are exact, associative and order-independent: two
//! batches equal one batch, and grids of shards added ([`DensityGrid::merge`], raw sums
//! through [`DensityGrid::raw_counts`] / [`DensityGrid::save_raw`]) equal the grid of the
//! whole run, bit for bit, up to [`EXACT_PARTICLES`] (2^31 - 1) particles reaching one
//! cell (beyond that the adds saturate rather than wrap). The rounding adds at most
//! `2^-33` of a peak per deposit (about 64 per particle on the split path). Reads convert
//! the sums to f64 deterministically: the f64 values are a function of the integers only.
//! Every f64 step (weights, fold) is taken in an order fixed by the grid's shape, whatever
//! the thread count or vector unit (no FMA contraction).

use crate::error::{Error, Result};
use crate::image::colormap::Colormap;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

/// The tutorial's kernel bandwidth: `exp(-350 d^2) = exp(-d^2 / (2 h^2))` with `h = 1/sqrt(700)`.
pub const DEFAULT_BANDWIDTH: f64 = 0.037_796_447_300_922_72; // 1 / sqrt(700)

/// What a particle adds to the pixels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// `exp(-|p - c|^2 / (2 h^2))` at every pixel centre `c` (h = --bandwidth).
    #[default]
    Gaussian,
    /// Plain counts: each particle adds 1 to the pixel whose centre is nearest (the pixel
    /// cells tile the extent widened by half a pixel each side).
    Histogram,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Gaussian => "gaussian",
            Kernel::Histogram => "histogram",
        }
    }
}

/// Largest width or height of a density grid.
pub const MAX_SIDE: usize = 16384;

/// Kernel cut-off in bandwidths: `exp(-CUTOFF^2 / 2) = 1e-7`.
fn cutoff_sigmas() -> f64 {
    (2.0 * (1e7f64).ln()).sqrt()
}

/// Particles handled per internal sub-batch (bounds the per-call scratch memory).
const SUB_BATCH: usize = 1 << 22;

/// Split path: sub-grid nodes per bandwidth (spacing `d = h / SUB_PER_H`).
const SUB_PER_H: f64 = 8.0;

/// Split path: points of the Lagrange stencil that places a particle on the sub-grid, each
/// axis (nodes `-(STENCIL/2 - 1) ..= STENCIL/2` around the node below it).
const STENCIL: usize = 8;

/// The split path is taken when an exact footprint would span at least this many rows and
/// columns (`2 R / dy + 3`, i.e. a bandwidth of at least ~0.6 pixel spacings).
const MIN_SPLIT_ROWS: f64 = 10.0;

/// The sub-grid may hold up to max(4 x the pixels, this many) values.
const SPLIT_MIN_BUDGET: usize = 1 << 23;

/// Particles per task in the split path's partition pass.
const PARTITION_CHUNK: usize = 1 << 14;

/// Fixed point: one unit of an accumulator is `2^-QUANTUM_BITS` of a particle's peak
/// weight (see [`DensityGrid::raw_counts`]).
pub const QUANTUM_BITS: u32 = 32;

/// `2^QUANTUM_BITS`.
const SCALE: f64 = (1u64 << QUANTUM_BITS) as f64;

/// Particles a grid sums exactly whatever their positions: a deposit adds at most
/// `2^QUANTUM_BITS` units (every weight is at most 1 in magnitude) to a cell, so up to
/// `2^31 - 1` particles (about 2.1e9) reaching one cell stay below `i64::MAX`. Past this
/// many particles in a grid (merges included) the adds saturate instead of wrapping: still
/// exact wherever fewer than `2^31` particles reach a cell, pinned at the `i64` bounds where
/// more do.
pub const EXACT_PARTICLES: u64 = (1 << 31) - 1;

/// `1.5 * 2^52`: adding it to an f64 of magnitude below `2^51` rounds to the nearest integer
/// (ties to even) in the low mantissa bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// `scaled` rounded to the nearest integer (ties to even), for `|scaled| < 2^51`: an exact,
/// vectorizable f64 -> i64 conversion (AVX2 has no packed one).
#[inline(always)]
fn quantize(scaled: f64) -> i64 {
    ((scaled + MAGIC).to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64)
}

/// An accumulator's value in units of a particle's peak weight.
#[inline(always)]
fn dequantize(v: i64) -> f64 {
    v as f64 * (1.0 / SCALE)
}

/// `acc += d`, wrapping (never reached: see [`EXACT_PARTICLES`]) or saturating.
#[inline(always)]
fn add_fixed<const SAT: bool>(acc: i64, d: i64) -> i64 {
    if SAT {
        acc.saturating_add(d)
    } else {
        acc.wrapping_add(d)
    }
}

/// The rectangle of the plane an image covers: `[xmin, xmax] x [ymin, ymax]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Extent {
    pub xmin: f64,
    pub xmax: f64,
    pub ymin: f64,
    pub ymax: f64,
}

impl Extent {
    /// A validated extent: all bounds finite, `xmin < xmax`, `ymin < ymax`.
    pub fn new(xmin: f64, xmax: f64, ymin: f64, ymax: f64) -> Result<Self> {
        let e = Extent {
            xmin,
            xmax,
            ymin,
            ymax,
        };
        e.validate()?;
        Ok(e)
    }

    /// The square `[a, b]^2`.
    pub fn square(a: f64, b: f64) -> Result<Self> {
        Self::new(a, b, a, b)
    }

    /// Check the invariants of [`Extent::new`] (fields are public, so re-check before use).
    pub fn validate(&self) -> Result<()> {
        let all = [self.xmin, self.xmax, self.ymin, self.ymax];
        if all.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "extent",
                format!("bounds must be finite, got {}", self),
            ));
        }
        if !(self.xmin < self.xmax && self.ymin < self.ymax) {
            return Err(Error::invalid(
                "extent",
                format!("need xmin < xmax and ymin < ymax, got {}", self),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.xmin, self.xmax, self.ymin, self.ymax)
    }
}

impl FromStr for Extent {
    type Err = Error;

    /// Parse `"xmin,xmax,ymin,ymax"`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 4 {
            return Err(Error::invalid(
                "extent",
                format!("expected \"xmin,xmax,ymin,ymax\", got \"{s}\""),
            ));
        }
        let mut v = [0.0f64; 4];
        for (slot, part) in v.iter_mut().zip(&parts) {
            *slot = part.parse::<f64>().map_err(|_| {
                Error::invalid("extent", format!("\"{part}\" is not a number (in \"{s}\")"))
            })?;
        }
        Extent::new(v[0], v[1], v[2], v[3])
    }
}

/// `numpy.linspace(start, stop, n)[k]`, bit for bit.
fn linspace_at(start: f64, stop: f64, n: usize, k: usize) -> f64 {
    if n == 1 {
        return start;
    }
    if k == n - 1 {
        return stop;
    }
    let step = (stop - start) / (n - 1) as f64;
    k as f64 * step + start
}

/// A grid of kernel-density values; `data[r * width + c]`, row 0 at the top (`y = ymax`).
///
/// Equality compares the shape (size, extent, bandwidth) and the values of [`data`](Self::data).
#[derive(Clone)]
pub struct DensityGrid {
    width: usize,
    height: usize,
    extent: Extent,
    bandwidth: f64,
    kernel: Kernel,
    store: Store,
    /// Particles accumulated or merged in so far (non-finite and far ones included): past
    /// [`EXACT_PARTICLES`] the adds saturate.
    deposits: u64,
}

/// Where the sums live; which variant a grid has depends only on its shape.
#[derive(Clone)]
enum Store {
    /// Kernels added straight to the pixels (row-major, row 0 at the top).
    Direct(Box<Direct>),
    /// Kernels added to sub-rows, folded into pixels when read.
    Split(Box<Split>),
}

/// The direct path's integer pixel sums and their f64 values (converted on first read).
#[derive(Clone)]
struct Direct {
    acc: Vec<i64>,
    pixels: OnceLock<Vec<f64>>,
}

/// The split path's geometry (see the module documentation): a square sub-grid of spacing
/// `d`, node `(s, u)` at `(x0 + u d, y0 + s d)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SplitPlan {
    x0: f64,
    y0: f64,
    d: f64,
    inv_d: f64,
    /// Stored sub-columns a sub-row (a multiple of 8; the last ones may be padding).
    stride: usize,
    n_sub: usize,
    /// Sub-rows per band, a power of two (a particle belongs to the band of its anchor
    /// sub-row).
    band: usize,
    n_bands: usize,
}

#[derive(Clone)]
struct Split {
    plan: SplitPlan,
    /// `n_sub x stride` fixed-point sums, row-major by sub-row; empty (all zero) until
    /// the first deposit.
    rows: Vec<i64>,
    /// The folded pixels, computed on the first read after a change.
    pixels: OnceLock<Vec<f64>>,
}

impl Split {
    /// Allocate the sub-rows on first use, writing the zeros (in parallel): pages first
    /// touched by the deposit's read-modify-write would fault twice, the second time with a
    /// TLB shoot-down across threads.
    fn allocate(&mut self) {
        if self.rows.is_empty() {
            let n = self.plan.n_sub * self.plan.stride;
            let mut rows = Vec::with_capacity(n);
            rows.par_extend(rayon::iter::repeat_n(0i64, n));
            self.rows = rows;
        }
    }
}

impl SplitPlan {
    /// The plan for a grid, or `None` when the direct path is the better (or only) choice.
    fn new(extent: &Extent, width: usize, height: usize, bandwidth: f64) -> Option<SplitPlan> {
        if width < 2 || height < 2 {
            return None;
        }
        let radius = cutoff_sigmas() * bandwidth;
        let dx = (extent.xmax - extent.xmin) / (width - 1) as f64;
        let dy = (extent.ymax - extent.ymin) / (height - 1) as f64;
        if !(2.0 * radius / dx + 3.0 >= MIN_SPLIT_ROWS && 2.0 * radius / dy + 3.0 >= MIN_SPLIT_ROWS)
        {
            return None;
        }
        let d = bandwidth / SUB_PER_H;
        let margin = (STENCIL / 2 + 1) as f64 * d;
        let (x0, y0) = (extent.xmin - radius - margin, extent.ymin - radius - margin);
        let extra = (STENCIL / 2 + 2) as f64;
        let n_x = ((extent.xmax + radius - x0) / d).ceil() + extra;
        let n_y = ((extent.ymax + radius - y0) / d).ceil() + extra;
        let budget = (4.0 * width as f64 * height as f64).max(SPLIT_MIN_BUDGET as f64);
        if !(n_x.is_finite() && n_y.is_finite() && (n_x + 8.0) * n_y <= budget) {
            return None;
        }
        let stride = (n_x as usize).next_multiple_of(8);
        let n_sub = n_y as usize;
        // Bands of about 512 KiB of sub-rows (at least 2 STENCIL rows, so that the write
        // ranges of bands two apart never overlap).
        let band = ((1usize << 16) / stride)
            .clamp(2 * STENCIL, 1024)
            .next_power_of_two();
        Some(SplitPlan {
            x0,
            y0,
            d,
            inv_d: 1.0 / d,
            stride,
            n_sub,
            band,
            n_bands: n_sub.div_ceil(band),
        })
    }
}

/// The split path's sub-grid, as [`DensityGrid::sub_grid`] describes it: node `(s, u)` at
/// `(x0 + u d, y0 + s d)`, `n_sub` sub-rows of `stride` nodes. A particle at `(x, y)` within
/// `accept` (`[x_lo, x_hi, y_lo, y_hi]`) adds `L_k(ty) L_i(tx)` to the nodes `(iy - 3 + k,
/// ix - 3 + i)`, `k, i` in `0..8`, where `ix + tx = (x - x0) / d` (`tx` in `[0, 1)`), and
/// `L` are the weights of [`LAGRANGE_COEFFICIENTS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubGrid {
    pub x0: f64,
    pub y0: f64,
    pub d: f64,
    pub stride: usize,
    pub n_sub: usize,
    pub accept: [f64; 4],
}

/// The coefficients of the 8-point Lagrange weights: `LAGRANGE_COEFFICIENTS[n][k]` is the
/// coefficient of `tau^n` in weight `k`, `tau = t - 1/2` (Horner from `n = 7` down).
pub const LAGRANGE_COEFFICIENTS: [[f64; STENCIL]; STENCIL] = LAGRANGE;

/// One particle's footprint on the grid (inclusive index ranges).
#[derive(Debug, Clone, Copy)]
struct Footprint {
    x: f64,
    y: f64,
    c0: u32,
    c1: u32,
    /// Top row (smallest row index) and bottom row.
    r0: u32,
    r1: u32,
}

impl std::fmt::Debug for DensityGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match &self.store {
            Store::Direct(_) => "direct",
            Store::Split(_) => "split",
        };
        f.debug_struct("DensityGrid")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("extent", &self.extent)
            .field("bandwidth", &self.bandwidth)
            .field("path", &path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DensityGrid {
    fn eq(&self, other: &Self) -> bool {
        self.same_shape(other) && self.data() == other.data()
    }
}

impl DensityGrid {
    /// An all-zero grid of the Gaussian kernel. Sides must be in `1..=16384`, the bandwidth
    /// finite and positive.
    pub fn new(extent: Extent, width: usize, height: usize, bandwidth: f64) -> Result<Self> {
        Self::with_kernel(extent, width, height, bandwidth, Kernel::Gaussian)
    }

    /// An all-zero grid of `kernel` ([`Kernel::Histogram`] ignores the bandwidth, which must
    /// still be valid: it is part of the grid's description).
    pub fn with_kernel(
        extent: Extent,
        width: usize,
        height: usize,
        bandwidth: f64,
        kernel: Kernel,
    ) -> Result<Self> {
        extent.validate()?;
        for (name, v) in [("width", width), ("height", height)] {
            if v == 0 || v > MAX_SIDE {
                return Err(Error::invalid(
                    name,
                    format!("must be in 1..={MAX_SIDE} pixels, got {v}"),
                ));
            }
        }
        if !(bandwidth.is_finite() && bandwidth > 0.0) {
            return Err(Error::invalid(
                "bandwidth",
                format!("must be finite and > 0, got {bandwidth}"),
            ));
        }
        let plan = match kernel {
            Kernel::Gaussian => SplitPlan::new(&extent, width, height, bandwidth),
            Kernel::Histogram => None,
        };
        let store = match plan {
            Some(plan) => Store::Split(Box::new(Split {
                plan,
                rows: Vec::new(),
                pixels: OnceLock::new(),
            })),
            None => Store::Direct(Box::new(Direct {
                acc: vec![0; width * height],
                pixels: OnceLock::new(),
            })),
        };
        Ok(DensityGrid {
            width,
            height,
            extent,
            bandwidth,
            kernel,
            store,
            deposits: 0,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn extent(&self) -> Extent {
        self.extent
    }
    pub fn bandwidth(&self) -> f64 {
        self.bandwidth
    }
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// Particles accumulated or merged in so far (far and non-finite ones included).
    pub fn deposits(&self) -> u64 {
        self.deposits
    }
    /// Row-major values, row 0 at the top: a pure function of the integer sums
    /// ([`raw_counts`](Self::raw_counts)). The first read after an
    /// [`accumulate`](Self::accumulate) or [`merge`](Self::merge) converts them (on the split
    /// path: folds the sub-rows into the pixels, a few milliseconds at 512x512); later reads
    /// return the stored result.
    pub fn data(&self) -> &[f64] {
        match &self.store {
            Store::Direct(direct) => direct
                .pixels
                .get_or_init(|| direct.acc.par_iter().map(|&v| dequantize(v)).collect()),
            Store::Split(split) => {
                if let Some(v) = split.pixels.get() {
                    return v;
                }
                // No lock is held while folding: concurrent first readers each fold (the
                // same values) and the first to finish stores its result.
                let v = self.fold(split);
                let _ = split.pixels.set(v);
                split.pixels.get().expect("set just above")
            }
        }
    }
    pub fn into_data(self) -> Vec<f64> {
        self.data();
        match self.store {
            Store::Direct(direct) => direct.pixels.into_inner().expect("converted just above"),
            Store::Split(split) => split.pixels.into_inner().expect("folded just above"),
        }
    }
    /// The value at row `row` (0 = top) and column `col`.
    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.data()[row * self.width + col]
    }
    /// Smallest and largest value.
    pub fn min_max(&self) -> (f64, f64) {
        self.data()
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// x of column `col`'s centre.
    pub fn column_x(&self, col: usize) -> f64 {
        linspace_at(self.extent.xmin, self.extent.xmax, self.width, col)
    }
    /// y of row `row`'s centre (row 0 = top = ymax).
    pub fn row_y(&self, row: usize) -> f64 {
        linspace_at(
            self.extent.ymin,
            self.extent.ymax,
            self.height,
            self.height - 1 - row,
        )
    }

    /// Inclusive index range of grid nodes `linspace(lo, hi, n)` within `radius` of `p`,
    /// or `None` when empty.
    #[inline(always)]
    fn node_range(lo: f64, hi: f64, n: usize, p: f64, radius: f64) -> Option<(u32, u32)> {
        if n == 1 {
            return ((p - lo).abs() <= radius).then_some((0, 0));
        }
        let step = (hi - lo) / (n - 1) as f64;
        let a = ((p - radius - lo) / step).ceil();
        let b = ((p + radius - lo) / step).floor();
        let last = (n - 1) as f64;
        if !(a <= last && b >= 0.0 && a <= b) {
            return None;
        }
        // Widen by one node each side: the exact test happens in the weight computation
        // (nodes beyond the radius get weight < 1e-7 of the peak, which is harmless).
        let a = (a - 1.0).max(0.0) as u32;
        let b = (b + 1.0).min(last) as u32;
        Some((a, b))
    }

    /// The footprints of row-major `(n, 2)` points (cut at `cutoff_sigmas` bandwidths) that
    /// `keep` accepts, in point order, computed in parallel.
    fn footprints(
        &self,
        points: &[f32],
        keep: impl Fn(&Footprint) -> bool + Sync,
    ) -> Vec<Footprint> {
        let radius = cutoff_sigmas() * self.bandwidth;
        points
            .par_chunks(2 * 4096)
            .flat_map_iter(|chunk| {
                chunk
                    .chunks_exact(2)
                    .filter_map(|p| self.footprint(p[0], p[1], radius))
                    .filter(|f| keep(f))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn footprint(&self, x: f32, y: f32, radius: f64) -> Option<Footprint> {
        let (x, y) = (x as f64, y as f64);
        if !(x.is_finite() && y.is_finite()) {
            return None;
        }
        let e = &self.extent;
        let (c0, c1) = Self::node_range(e.xmin, e.xmax, self.width, x, radius)?;
        let (k0, k1) = Self::node_range(e.ymin, e.ymax, self.height, y, radius)?;
        let top = (self.height - 1) as u32;
        Some(Footprint {
            x,
            y,
            c0,
            c1,
            r0: top - k1,
            r1: top - k0,
        })
    }

    /// Add the kernels of row-major `(n, 2)` points. Non-finite points are skipped, and so
    /// are points whose kernel does not reach the grid. Each kernel value is rounded to the
    /// fixed point once and added as an integer, so the result does not depend on how the
    /// points are split into batches, on their order or on grids merged: bit for bit (up to
    /// [`EXACT_PARTICLES`] particles reaching a cell).
    pub fn accumulate(&mut self, points: &[f32]) {
        assert!(
            points.len().is_multiple_of(2),
            "points must be row-major (n, 2), got {} floats",
            points.len()
        );
        for sub in points.chunks(2 * SUB_BATCH) {
            let n = (sub.len() / 2) as u64;
            self.deposits = self.deposits.saturating_add(n);
            let sat = self.deposits > EXACT_PARTICLES;
            match self.store {
                Store::Direct(_) if self.kernel == Kernel::Histogram => {
                    self.accumulate_histogram(sub, sat)
                }
                Store::Direct(_) => self.accumulate_direct(sub, sat),
                Store::Split(_) => self.accumulate_split(sub, sat),
            }
        }
    }

    /// The direct path's x-direction constants: column centres, spacing, weight table.
    fn column_setup(&self) -> (Vec<f64>, f64, Vec<f64>) {
        let (w, e) = (self.width, &self.extent);
        let inv2h2 = 1.0 / (2.0 * self.bandwidth * self.bandwidth);
        let step_x = if w > 1 {
            (e.xmax - e.xmin) / (w - 1) as f64
        } else {
            0.0
        };
        let xs = (0..w).map(|c| linspace_at(e.xmin, e.xmax, w, c)).collect();
        (xs, step_x, square_table(w, step_x, inv2h2))
    }

    /// The sub-grid of the split path, for deposits made elsewhere (the GPU): `None` when the
    /// grid takes the direct path (small bandwidths, the histogram kernel).
    pub fn sub_grid(&self) -> Option<SubGrid> {
        let Store::Split(split) = &self.store else {
            return None;
        };
        let plan = split.plan;
        let radius = cutoff_sigmas() * self.bandwidth;
        let e = self.extent;
        Some(SubGrid {
            x0: plan.x0,
            y0: plan.y0,
            d: plan.d,
            stride: plan.stride,
            n_sub: plan.n_sub,
            accept: [
                e.xmin - radius,
                e.xmax + radius,
                e.ymin - radius,
                e.ymax + radius,
            ],
        })
    }

    /// Add fixed-point sums deposited on [`sub_grid`](Self::sub_grid) elsewhere (`n_sub x
    /// stride` values, row-major by sub-row, units of `2^-QUANTUM_BITS` of a peak) for
    /// `particles` particles.
    pub fn add_sub_grid_counts(&mut self, counts: &[i64], particles: u64) -> Result<()> {
        let mut meta = self.raw_meta();
        if meta.path != "split" || counts.len() != meta.shape[0] * meta.shape[1] {
            return Err(Error::invalid(
                "density grid",
                format!(
                    "{} sub-grid sums do not fit a {} grid of shape {:?}",
                    counts.len(),
                    meta.path,
                    meta.shape
                ),
            ));
        }
        meta.deposits = particles;
        let other = DensityGrid::from_raw(&meta, counts.to_vec())?;
        self.merge(&other)
    }

    /// Add fixed-point sums of the sub-rows `row0 ..` of [`sub_grid`](Self::sub_grid) (a
    /// whole number of sub-rows, row-major) deposited elsewhere: one tile of a GPU sub-grid.
    /// The particles they hold are counted separately ([`add_deposits`](Self::add_deposits)),
    /// since a particle may reach two tiles.
    pub fn add_sub_grid_rows(&mut self, row0: usize, counts: &[i64]) -> Result<()> {
        let Store::Split(split) = &mut self.store else {
            return Err(Error::invalid(
                "density grid",
                "sub-grid sums do not fit a grid on the direct path",
            ));
        };
        let plan = split.plan;
        if !counts.len().is_multiple_of(plan.stride)
            || row0 * plan.stride + counts.len() > plan.n_sub * plan.stride
        {
            return Err(Error::invalid(
                "density grid",
                format!(
                    "{} sub-grid sums from sub-row {row0} do not fit {} sub-rows of {}",
                    counts.len(),
                    plan.n_sub,
                    plan.stride
                ),
            ));
        }
        if counts.iter().all(|&c| c == 0) {
            return Ok(());
        }
        split.allocate();
        add_counts(
            &mut split.rows[row0 * plan.stride..][..counts.len()],
            counts,
        );
        split.pixels = OnceLock::new();
        Ok(())
    }

    /// Count `particles` more deposits (see [`add_sub_grid_rows`](Self::add_sub_grid_rows)).
    pub fn add_deposits(&mut self, particles: u64) {
        self.deposits = self.deposits.saturating_add(particles);
    }

    /// [`Kernel::Histogram`]: one whole unit (`2^QUANTUM_BITS`) on the pixel whose centre is
    /// nearest, for points within half a pixel of the extent's pixel centres.
    fn accumulate_histogram(&mut self, points: &[f32], sat: bool) {
        let cells = self.histogram_cells(points, |_| true);
        let Store::Direct(direct) = &mut self.store else {
            unreachable!("histograms are direct stores")
        };
        direct.pixels = OnceLock::new();
        let unit = SCALE as i64;
        for i in cells {
            direct.acc[i] = if sat {
                add_fixed::<true>(direct.acc[i], unit)
            } else {
                add_fixed::<false>(direct.acc[i], unit)
            };
        }
    }

    /// Rows `r0..` of the values (as many as `out` holds, `out.len()` a multiple of the
    /// width), equal to the same rows of [`data`](Self::data), computed for these rows only
    /// when the whole grid has not been converted: large images are read band by band in
    /// memory proportional to the band (plus the split path's sub-grid).
    pub fn read_rows(&self, r0: usize, out: &mut [f64]) {
        let w = self.width;
        assert!(
            out.len().is_multiple_of(w) && r0 * w + out.len() <= w * self.height,
            "rows {r0}.. ({} values) outside a {}x{} grid",
            out.len(),
            w,
            self.height
        );
        match &self.store {
            Store::Direct(direct) => match direct.pixels.get() {
                Some(v) => out.copy_from_slice(&v[r0 * w..r0 * w + out.len()]),
                None => {
                    let n = out.len();
                    out.par_iter_mut()
                        .zip(direct.acc[r0 * w..r0 * w + n].par_iter())
                        .for_each(|(o, &v)| *o = dequantize(v))
                }
            },
            Store::Split(split) => match split.pixels.get() {
                Some(v) => out.copy_from_slice(&v[r0 * w..r0 * w + out.len()]),
                None => self.fold_rows(split, r0, out),
            },
        }
    }

    fn accumulate_split(&mut self, points: &[f32], sat: bool) {
        let Store::Split(split) = &self.store else {
            unreachable!("split path without a split store")
        };
        let plan = split.plan;
        let radius = cutoff_sigmas() * self.bandwidth;
        let e = self.extent;
        let ctx = DepositContext {
            plan,
            x_lo: e.xmin - radius,
            x_hi: e.xmax + radius,
            y_lo: e.ymin - radius,
            y_hi: e.ymax + radius,
        };
        let parts = ctx.partition(points);
        let counts: Vec<usize> = (0..plan.n_bands)
            .map(|b| parts.count(b, plan.n_bands))
            .collect();
        if counts.iter().all(|&c| c == 0) {
            return;
        }
        let Store::Split(split) = &mut self.store else {
            unreachable!("split path without a split store")
        };
        let split = &mut **split;
        split.allocate();
        split.pixels = OnceLock::new();
        let ctx = &ctx;
        let deposit = |(b, lo, rows): (usize, usize, &mut [i64])| {
            if sat {
                ctx.deposit_band::<true>(&parts, b, lo, rows)
            } else {
                ctx.deposit_band::<false>(&parts, b, lo, rows)
            }
        };
        let (half, stride) = (STENCIL / 2, plan.stride);
        // Band b writes sub-rows [b band - (half - 1), (b + 1) band + half): bands of one
        // parity never overlap, so each phase runs its bands side by side, and every sub-row
        // gets its particles in a fixed order (its own band's, then its neighbours').
        for parity in 0..2 {
            let mut regions = Vec::new();
            let mut rest_rows: &mut [i64] = &mut split.rows;
            let mut at = 0;
            for b in (parity..plan.n_bands).step_by(2) {
                if counts[b] == 0 {
                    continue;
                }
                let lo = (b * plan.band).saturating_sub(half - 1);
                let hi = ((b + 1) * plan.band + half).min(plan.n_sub);
                let (_, r) = std::mem::take(&mut rest_rows).split_at_mut((lo - at) * stride);
                let (mine, r) = r.split_at_mut((hi - lo) * stride);
                rest_rows = r;
                at = hi;
                regions.push((b, lo, mine));
            }
            regions.into_par_iter().for_each(deposit);
        }
    }

    /// The direct path's bands: footprints sorted (stably, counting sort) by top row, so a
    /// band finds its particles in one slice, and the weight tables.
    fn band_context(&self, footprints: Vec<Footprint>) -> BandContext {
        // Stable counting sort by top row, so a band finds its particles in one slice.
        let h = self.height;
        let mut starts = vec![0usize; h + 1];
        let mut span = 0u32;
        for f in &footprints {
            starts[f.r0 as usize + 1] += 1;
            span = span.max(f.r1 - f.r0 + 1);
        }
        for r in 0..h {
            starts[r + 1] += starts[r];
        }
        let sorted: Vec<Footprint> = {
            let mut next = starts.clone();
            let mut sorted = footprints.clone();
            for f in &footprints {
                sorted[next[f.r0 as usize]] = *f;
                next[f.r0 as usize] += 1;
            }
            sorted
        };
        drop(footprints);

        let w = self.width;
        let (ymin, ymax) = (self.extent.ymin, self.extent.ymax);
        let inv2h2 = 1.0 / (2.0 * self.bandwidth * self.bandwidth);
        let step_y = if h > 1 {
            -(ymax - ymin) / (h - 1) as f64
        } else {
            0.0
        };
        let (xs, step_x, table_x) = self.column_setup();
        BandContext {
            width: w,
            span: span as usize,
            inv2h2,
            step_x,
            step_y,
            table_x,
            table_y: square_table(h, step_y, inv2h2),
            xs,
            ys: (0..h)
                .map(|r| linspace_at(ymin, ymax, h, h - 1 - r))
                .collect(),
            starts,
            sorted,
        }
    }

    /// Rows `r0..` (as many as `out` holds) of the values this (empty) direct-path grid
    /// would have after [`accumulate`](Self::accumulate)`(points)`, bit for bit, computed for
    /// these rows only: large histogram or small-bandwidth images of particles held in memory
    /// are rendered band by band without the `8 x pixels` bytes of the whole grid's sums.
    /// Split-path grids (and grids with deposits) read their own rows instead.
    pub fn rows_of_points(&self, points: &[f32], r0: usize, out: &mut [f64]) {
        let w = self.width;
        let k = out.len() / w;
        let r1 = r0 + k;
        if matches!(self.store, Store::Split(_)) || self.deposits > 0 {
            return self.read_rows(r0, out);
        }
        let sat = (points.len() / 2) as u64 > EXACT_PARTICLES;
        let mut acc = vec![0i64; out.len()];
        if self.kernel == Kernel::Histogram {
            let cells = self.histogram_cells(points, |i| i >= r0 * w && i < r1 * w);
            let unit = SCALE as i64;
            for i in cells {
                let a = &mut acc[i - r0 * w];
                *a = if sat {
                    add_fixed::<true>(*a, unit)
                } else {
                    add_fixed::<false>(*a, unit)
                };
            }
        } else {
            let footprints =
                self.footprints(points, |f| (f.r1 as usize) >= r0 && (f.r0 as usize) < r1);
            if !footprints.is_empty() {
                let ctx = self.band_context(footprints);
                let threads = rayon::current_num_threads().max(1);
                let sub = k.div_ceil(8 * threads).max(1);
                ctx.add_bands(r0, sub, w, &mut acc, sat);
            }
        }
        out.par_iter_mut()
            .zip(acc.par_iter())
            .for_each(|(o, &v)| *o = dequantize(v));
    }

    /// The [`histogram_cell`](Self::histogram_cell)s of row-major `(n, 2)` points that
    /// `keep` accepts, in point order, computed in parallel.
    fn histogram_cells(&self, points: &[f32], keep: impl Fn(usize) -> bool + Sync) -> Vec<usize> {
        points
            .par_chunks(2 * 4096)
            .flat_map_iter(|chunk| {
                chunk
                    .chunks_exact(2)
                    .filter_map(|p| self.histogram_cell(p[0], p[1]))
                    .filter(|&i| keep(i))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// [`Kernel::Histogram`]: the index of the pixel whose centre is nearest `(x, y)`, for
    /// points within half a pixel of the extent's pixel centres.
    fn histogram_cell(&self, x: f32, y: f32) -> Option<usize> {
        let (w, h, e) = (self.width, self.height, self.extent);
        // Cell index along one axis: round((p - lo) / step), valid in 0..n.
        let cell = |p: f64, lo: f64, hi: f64, n: usize| -> Option<usize> {
            if n == 1 {
                let half = (hi - lo) / 2.0;
                return (p.is_finite() && (p - (lo + half)).abs() <= half).then_some(0);
            }
            let k = ((p - lo) / ((hi - lo) / (n - 1) as f64)).round();
            (k >= 0.0 && k < n as f64).then_some(k as usize)
        };
        let c = cell(x as f64, e.xmin, e.xmax, w)?;
        let k = cell(y as f64, e.ymin, e.ymax, h)?;
        Some((h - 1 - k) * w + c)
    }

    fn accumulate_direct(&mut self, points: &[f32], sat: bool) {
        let footprints = self.footprints(points, |_| true);
        if footprints.is_empty() {
            return;
        }

        let ctx = self.band_context(footprints);
        let h = self.height;
        let threads = rayon::current_num_threads().max(1);
        let bands = h.min(8 * threads).max(1);
        let band_rows = h.div_ceil(bands);
        let w = self.width;
        let Store::Direct(direct) = &mut self.store else {
            unreachable!("direct path without a direct store")
        };
        direct.pixels = OnceLock::new();
        ctx.add_bands(0, band_rows, w, &mut direct.acc, sat);
    }

    /// The pixels of a split store: `pixel(r, j) = sum_s gy(y_r - y_s) T[s][j]` over the
    /// non-zero sub-rows within `R + STENCIL d` of `y_r`, in increasing `s`, `T` the integer
    /// sums converted to f64 (so the pixels depend on the sums only, not on their history).
    fn fold(&self, split: &Split) -> Vec<f64> {
        let mut out = vec![0.0; self.width * self.height];
        self.fold_rows(split, 0, &mut out);
        out
    }

    /// [`fold`](Self::fold) of the rows `r0..` that `out` holds (each row's value depends on
    /// that row only: a band equals the same rows of the whole fold, bit for bit).
    fn fold_rows(&self, split: &Split, r0: usize, out: &mut [f64]) {
        let plan = &split.plan;
        let (w, stride) = (self.width, plan.stride);
        out.fill(0.0);
        if split.rows.is_empty() || out.is_empty() {
            return;
        }
        let inv2h2 = 1.0 / (2.0 * self.bandwidth * self.bandwidth);
        // A particle within R of a pixel has its whole stencil within R + STENCIL d of it; a
        // stencil cut by this window lies beyond R + d (weights < 1e-7 of the peak).
        let reach = cutoff_sigmas() * self.bandwidth + STENCIL as f64 * plan.d;
        let last = (plan.n_sub - 1) as f64;
        // Only the sub-rows these rows reach are converted (a band of a large image reads
        // a band of the sub-grid); each row's window below lies within, the same values.
        let k = out.len() / w;
        let (y_top, y_bottom) = (self.row_y(r0), self.row_y(r0 + k - 1));
        let lo_s = ((y_bottom - reach - plan.y0) * plan.inv_d).ceil().max(0.0);
        let hi_s = ((y_top + reach - plan.y0) * plan.inv_d).floor().min(last);
        if lo_s > hi_s {
            return;
        }
        let (lo_s, hi_s) = (lo_s as usize, hi_s as usize);
        let window = &split.rows[lo_s * stride..(hi_s + 1) * stride];
        let mut values: Vec<f64> = Vec::with_capacity(window.len());
        values.par_extend(window.par_iter().map(|&v| dequantize(v)));
        let touched: Vec<bool> = window
            .par_chunks(stride)
            .map(|row| row.iter().any(|&v| v != 0))
            .collect();
        if !touched.iter().any(|&t| t) {
            return;
        }
        let (rows, touched) = (&values[..], &touched[..]);
        let span = (2.0 * reach * plan.inv_d).ceil() as usize + 2;
        // Along x: every column sums a window of `len` sub-columns from `starts[j]`.
        let len = span.next_multiple_of(8).min(stride);
        let table = square_table(span.max(len), plan.d, inv2h2);
        let starts: Vec<usize> = (0..w)
            .map(|j| {
                let a = ((self.column_x(j) - reach - plan.x0) * plan.inv_d).ceil();
                (a.max(0.0) as usize).min(stride - len)
            })
            .collect();
        let mut wx = vec![0.0; w * len];
        for (j, (ws, &a)) in wx.chunks_exact_mut(len).zip(&starts).enumerate() {
            let d0 = (a as f64 * plan.d + plan.x0) - self.column_x(j);
            gauss_into(d0, plan.d, inv2h2, &table, ws);
        }
        out.par_chunks_mut(w).enumerate().for_each_init(
            || (vec![0.0; stride], Vec::new(), Vec::new()),
            |(acc, weights, picked), (r, row)| {
                let y = self.row_y(r0 + r);
                let a = ((y - reach - plan.y0) * plan.inv_d).ceil().max(0.0);
                let b = ((y + reach - plan.y0) * plan.inv_d).floor().min(last);
                if a > b {
                    return;
                }
                let (a, b) = (a as usize, b as usize);
                debug_assert!(a >= lo_s && b <= hi_s);
                if !touched[a - lo_s..=b - lo_s].iter().any(|&t| t) {
                    return;
                }
                weights.resize(b - a + 1, 0.0);
                let d0 = (a as f64 * plan.d + plan.y0) - y;
                gauss_into(d0, plan.d, inv2h2, &table, weights);
                picked.clear();
                picked.extend(
                    weights
                        .iter()
                        .zip(&touched[a - lo_s..=b - lo_s])
                        .enumerate()
                        .filter(|(_, (_, &t))| t)
                        .map(|(k, (&wk, _))| ((a + k - lo_s) * stride, wk)),
                );
                fold_row(acc, rows, picked);
                columns_row(row, acc, &starts, &wx, len);
            },
        );
    }

    /// Whether the grid takes the split path (tests).
    #[cfg(test)]
    fn is_split(&self) -> bool {
        matches!(self.store, Store::Split(_))
    }

    fn same_shape(&self, other: &DensityGrid) -> bool {
        self.width == other.width
            && self.height == other.height
            && self.extent == other.extent
            && self.bandwidth == other.bandwidth
            && self.kernel == other.kernel
    }

    /// Add another grid of the same size, extent and bandwidth.
    pub fn merge(&mut self, other: &DensityGrid) -> Result<()> {
        if !self.same_shape(other) {
            return Err(Error::invalid(
                "density grid",
                format!(
                    "cannot merge a {}x{} grid over {} (bandwidth {}) into a {}x{} grid over {} (bandwidth {})",
                    other.width,
                    other.height,
                    other.extent,
                    other.bandwidth,
                    self.width,
                    self.height,
                    self.extent,
                    self.bandwidth
                ),
            ));
        }
        self.deposits = self.deposits.saturating_add(other.deposits);
        match (&mut self.store, &other.store) {
            (Store::Direct(a), Store::Direct(b)) => {
                add_counts(&mut a.acc, &b.acc);
                a.pixels = OnceLock::new();
            }
            (Store::Split(a), Store::Split(b)) => {
                if b.rows.is_empty() {
                    return Ok(());
                }
                a.allocate();
                add_counts(&mut a.rows, &b.rows);
                a.pixels = OnceLock::new();
            }
            _ => unreachable!("grids of the same shape take the same path"),
        }
        Ok(())
    }

    /// The image: values normalized linearly from the grid's min (first colour) to its max
    /// (last colour). A constant grid is all the first colour.
    pub fn to_rgb_image(&self, colormap: Colormap) -> image::RgbImage {
        let lut = colormap.lut();
        let (lo, hi) = self.min_max();
        let range = hi - lo;
        let scale = if range > 0.0 && range.is_finite() {
            1.0 / range
        } else {
            0.0
        };
        let mut img = image::RgbImage::new(self.width as u32, self.height as u32);
        img.par_chunks_mut(3)
            .zip(self.data().par_iter())
            .for_each(|(px, &v)| {
                let t = if scale > 0.0 { (v - lo) * scale } else { 0.0 };
                px.copy_from_slice(&lut[crate::image::colormap::lut_index(t)]);
            });
        img
    }

    /// Write the image as a PNG, atomically ([`crate::io::AtomicFile`]). On failure nothing
    /// is left behind.
    pub fn write_png(&self, path: impl AsRef<Path>, colormap: Colormap) -> Result<()> {
        crate::io::write_png(path.as_ref(), &self.to_rgb_image(colormap))
    }
}

/// Identifies the raw grid files written by [`DensityGrid::save_raw`].
pub const RAW_FORMAT: &str = "memodiff-density-raw-1";

/// What a raw (mergeable) density grid is: everything [`DensityGrid::from_raw`] checks
/// before it accepts integer sums, so that grids of different shapes are never added.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RawGridMeta {
    /// [`RAW_FORMAT`].
    pub format: String,
    pub width: usize,
    pub height: usize,
    /// `[xmin, xmax, ymin, ymax]`.
    pub extent: [f64; 4],
    pub bandwidth: f64,
    /// `"split"` (sums on the sub-grid), `"direct"` (sums on the pixels, row 0 = top) or
    /// `"histogram"` (counts on the pixels, [`Kernel::Histogram`]).
    pub path: String,
    /// Shape of the integer array: `[sub-rows, stored sub-columns]` or `[height, width]`.
    pub shape: [usize; 2],
    /// Value of one unit, in particle peak weights: `2^-QUANTUM_BITS`.
    pub quantum: f64,
    /// Particles accumulated (all shards, for a merged grid).
    pub deposits: u64,
}

impl DensityGrid {
    /// The metadata of [`raw_counts`](Self::raw_counts).
    pub fn raw_meta(&self) -> RawGridMeta {
        let (path, shape) = match &self.store {
            Store::Direct(_) if self.kernel == Kernel::Histogram => {
                ("histogram", [self.height, self.width])
            }
            Store::Direct(_) => ("direct", [self.height, self.width]),
            Store::Split(split) => ("split", [split.plan.n_sub, split.plan.stride]),
        };
        let e = self.extent;
        RawGridMeta {
            format: RAW_FORMAT.to_string(),
            width: self.width,
            height: self.height,
            extent: [e.xmin, e.xmax, e.ymin, e.ymax],
            bandwidth: self.bandwidth,
            path: path.to_string(),
            shape,
            quantum: 1.0 / SCALE,
            deposits: self.deposits,
        }
    }

    /// The integer sums, row-major of shape `raw_meta().shape`: the whole state of the grid
    /// ([`data`](Self::data) is a function of them). Sums of grids of the same shape add
    /// exactly: `from_raw` of the element-wise sum is the grid of all their particles.
    pub fn raw_counts(&self) -> std::borrow::Cow<'_, [i64]> {
        match &self.store {
            Store::Direct(direct) => std::borrow::Cow::Borrowed(&direct.acc),
            Store::Split(split) if split.rows.is_empty() => {
                std::borrow::Cow::Owned(vec![0; split.plan.n_sub * split.plan.stride])
            }
            Store::Split(split) => std::borrow::Cow::Borrowed(&split.rows),
        }
    }

    /// A grid from its raw sums; refuses metadata that does not describe a grid memodiff
    /// would build for that size, extent and bandwidth (or a count of values that does not
    /// fill the shape).
    pub fn from_raw(meta: &RawGridMeta, counts: Vec<i64>) -> Result<Self> {
        let bad = |why: String| Error::invalid("raw density grid", why);
        if meta.format != RAW_FORMAT {
            return Err(bad(format!(
                "format '{}', expected '{RAW_FORMAT}'",
                meta.format
            )));
        }
        if meta.quantum != 1.0 / SCALE {
            return Err(bad(format!(
                "quantum {} is not 2^-{QUANTUM_BITS}",
                meta.quantum
            )));
        }
        let [xmin, xmax, ymin, ymax] = meta.extent;
        let extent = Extent::new(xmin, xmax, ymin, ymax)?;
        let kernel = if meta.path == "histogram" {
            Kernel::Histogram
        } else {
            Kernel::Gaussian
        };
        let mut grid =
            DensityGrid::with_kernel(extent, meta.width, meta.height, meta.bandwidth, kernel)?;
        let expected = grid.raw_meta();
        if (expected.path.as_str(), expected.shape) != (meta.path.as_str(), meta.shape) {
            return Err(bad(format!(
                "a {}x{} grid over {extent} (bandwidth {}) is a {} grid of shape {:?}, not {} {:?}",
                meta.width,
                meta.height,
                meta.bandwidth,
                expected.path,
                expected.shape,
                meta.path,
                meta.shape
            )));
        }
        if counts.len() != meta.shape[0] * meta.shape[1] {
            return Err(bad(format!(
                "{} values do not fill shape {:?}",
                counts.len(),
                meta.shape
            )));
        }
        grid.deposits = meta.deposits;
        match &mut grid.store {
            Store::Direct(direct) => direct.acc = counts,
            Store::Split(split) => split.rows = counts,
        }
        Ok(grid)
    }

    /// Write the raw sums as `path` (`.npy`, `<i8`, C order, shape `raw_meta().shape`) and
    /// their metadata as `path` with extension `.json`, each atomically.
    pub fn save_raw(&self, path: &Path) -> Result<()> {
        let meta = self.raw_meta();
        let counts = self.raw_counts();
        let header = crate::io::npy_header("<i8", &meta.shape);
        crate::io::write_atomically(path, |w| {
            use std::io::Write;
            w.write_all(&header)?;
            for chunk in counts.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Ok(())
        })?;
        crate::io::write_json(&path.with_extension("json"), &meta)
    }

    /// Read a grid written by [`save_raw`](Self::save_raw), checking the file against its
    /// metadata (header, size) and the metadata against the grid it describes.
    pub fn load_raw(path: &Path) -> Result<Self> {
        let meta_path = path.with_extension("json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: RawGridMeta = serde_json::from_str(&text).map_err(|e| {
            Error::invalid("raw density grid", format!("{}: {e}", meta_path.display()))
        })?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let header = crate::io::npy_header("<i8", &meta.shape);
        let n = meta.shape[0].saturating_mul(meta.shape[1]);
        if !bytes.starts_with(&header)
            || Some(bytes.len()) != n.checked_mul(8).map(|b| b + header.len())
        {
            return Err(Error::invalid(
                "raw density grid",
                format!(
                    "{} is not the <i8 array of shape {:?} that {} describes",
                    path.display(),
                    meta.shape,
                    meta_path.display()
                ),
            ));
        }
        let counts = bytes[header.len()..]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        Self::from_raw(&meta, counts)
    }
}

/// `a += b`, saturating (integer sums: exact and order-independent short of saturation).
fn add_counts(a: &mut [i64], b: &[i64]) {
    a.par_chunks_mut(1 << 16)
        .zip(b.par_chunks(1 << 16))
        .for_each(|(a, b)| {
            a.iter_mut()
                .zip(b)
                .for_each(|(x, &y)| *x = x.saturating_add(y))
        });
}

/// What every band of rows needs to add its particles' kernels.
struct BandContext {
    width: usize,
    /// Most rows any footprint covers.
    span: usize,
    inv2h2: f64,
    /// Column and row centres (row 0 = top).
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// Node spacing along a row (positive) and down a column (negative), and the
    /// particle-independent factors of the weights ([`square_table`]).
    step_x: f64,
    step_y: f64,
    table_x: Vec<f64>,
    table_y: Vec<f64>,
    /// `sorted[starts[r]..starts[r + 1]]`: the footprints whose top row is `r`.
    starts: Vec<usize>,
    sorted: Vec<Footprint>,
}

impl BandContext {
    /// Add the kernels into `acc` (rows `first_row..` of `width` pixels), rayon over
    /// bands of `band_rows` rows, with the saturating or the exact sum (`sat`).
    fn add_bands(
        &self,
        first_row: usize,
        band_rows: usize,
        width: usize,
        acc: &mut [i64],
        sat: bool,
    ) {
        acc.par_chunks_mut(band_rows * width)
            .enumerate()
            .for_each(|(band, rows)| {
                if sat {
                    self.add_band::<true>(first_row + band * band_rows, rows)
                } else {
                    self.add_band::<false>(first_row + band * band_rows, rows)
                }
            });
    }

    /// Add the kernels reaching rows `b0..` (as many as `rows` holds) into `rows`.
    fn add_band<const SAT: bool>(&self, b0: usize, rows: &mut [i64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { self.add_band_avx2::<SAT>(b0, rows) };
                return;
            }
        }
        self.add_band_generic::<SAT>(b0, rows);
    }

    /// The same code compiled for AVX2 (4-wide f64 multiply-adds in the row loop). The
    /// arithmetic is identical (no FMA contraction), so results do not depend on the CPU.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_band_avx2<const SAT: bool>(&self, b0: usize, rows: &mut [i64]) {
        self.add_band_generic::<SAT>(b0, rows);
    }

    #[inline(always)]
    fn add_band_generic<const SAT: bool>(&self, b0: usize, rows: &mut [i64]) {
        let w = self.width;
        let b1 = b0 + rows.len() / w; // exclusive
        let first_top = b0.saturating_sub(self.span - 1);
        let (lo, hi) = (self.starts[first_top], self.starts[b1]);
        let mut wx = Vec::with_capacity(w);
        let mut wy = Vec::with_capacity(self.ys.len());
        for f in &self.sorted[lo..hi] {
            let r_lo = (f.r0 as usize).max(b0);
            let r_hi = (f.r1 as usize).min(b1 - 1);
            if r_lo > r_hi {
                continue;
            }
            let (c0, c1) = (f.c0 as usize, f.c1 as usize);
            kernel_weights(
                &self.xs[c0..=c1],
                f.x,
                self.step_x,
                self.inv2h2,
                &self.table_x,
                &mut wx,
            );
            // Rows go down while y goes down: a negative step.
            kernel_weights(
                &self.ys[r_lo..=r_hi],
                f.y,
                self.step_y,
                self.inv2h2,
                &self.table_y,
                &mut wy,
            );
            for (r, &wyv) in (r_lo..=r_hi).zip(&wy) {
                let row = &mut rows[(r - b0) * w + c0..(r - b0) * w + c1 + 1];
                // The fixed point's scale on the row weight (a power of two: exact).
                let wys = wyv * SCALE;
                for (dst, &wxv) in row.iter_mut().zip(&wx) {
                    *dst = add_fixed::<SAT>(*dst, quantize(wys * wxv));
                }
            }
        }
    }
}

/// `exp(-(j step)^2 inv2h2)` for `j = 0..n`: the part of the kernel weights that does not
/// depend on the particle.
fn square_table(n: usize, step: f64, inv2h2: f64) -> Vec<f64> {
    (0..n)
        .map(|j| {
            let d = j as f64 * step;
            (-(d * d) * inv2h2).exp()
        })
        .collect()
}

/// `out[j] = exp(-(nodes[j] - p)^2 inv2h2)` for `nodes[j] = nodes[0] + j step` (a slice of a
/// `linspace`, `step` negative for decreasing nodes), `table` from [`square_table`].
///
/// With `d0 = nodes[0] - p`: `exp(-(d0 + j s)^2 a) = exp(-d0^2 a) * B^j * table[j]`,
/// `B = exp(-2 d0 s a)`. Two `exp` a call; the powers `B^j` come from four independent
/// product chains (`B^(j+4) = B^j B^4`), so the loop is short-latency and vectorizable.
/// Relative error: a few ulps times `j / 4`. Falls back to one `exp` a node where the
/// factors could leave the f64 range (nodes far apart relative to the bandwidth).
#[inline(always)]
fn kernel_weights(
    nodes: &[f64],
    p: f64,
    step: f64,
    inv2h2: f64,
    table: &[f64],
    out: &mut Vec<f64>,
) {
    let n = nodes.len();
    out.clear();
    out.resize(n, 0.0);
    let span = n as f64 * step;
    if n < 8 || span * span * inv2h2 > 300.0 || table.len() < n {
        for (o, &t) in out.iter_mut().zip(nodes) {
            let d = t - p;
            *o = (-(d * d) * inv2h2).exp();
        }
        return;
    }
    let d0 = nodes[0] - p;
    let a = (-(d0 * d0) * inv2h2).exp();
    let b = (-2.0 * d0 * step * inv2h2).exp();
    let b2 = b * b;
    let b4 = b2 * b2;
    let mut pw = [a, a * b, a * b2, a * b2 * b];
    let mut out_chunks = out.chunks_exact_mut(4);
    let mut table_chunks = table[..n].chunks_exact(4);
    for (o, t) in (&mut out_chunks).zip(&mut table_chunks) {
        for k in 0..4 {
            o[k] = pw[k] * t[k];
            pw[k] *= b4;
        }
    }
    for ((o, t), pwk) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(table_chunks.remainder())
        .zip(pw)
    {
        *o = pwk * t;
    }
}

/// `out[j] = exp(-(d0 + j step)^2 inv2h2)`, `table` from [`square_table`] (at least as long).
///
/// The split path's version of [`kernel_weights`], eight product chains wide:
/// `exp(-d0^2 a) * B^j * table[j]` with `B = exp(-2 d0 step a)` and `B^(j+8) = B^j B^8`.
/// Relative error: a few ulps times `j / 8`. Falls back to one `exp` a node where the
/// factors could leave the f64 range.
#[inline(always)]
fn gauss_into(d0: f64, step: f64, inv2h2: f64, table: &[f64], out: &mut [f64]) {
    let n = out.len();
    let span = n as f64 * step;
    if n < 8 || span * span * inv2h2 > 300.0 || table.len() < n {
        for (j, o) in out.iter_mut().enumerate() {
            let d = d0 + j as f64 * step;
            *o = (-(d * d) * inv2h2).exp();
        }
        return;
    }
    let a = (-(d0 * d0) * inv2h2).exp();
    let b = (-2.0 * d0 * step * inv2h2).exp();
    let mut pw = [a; 8];
    for k in 1..8 {
        pw[k] = pw[k - 1] * b;
    }
    let b2 = b * b;
    let b4 = b2 * b2;
    let b8 = b4 * b4;
    let mut out_chunks = out.chunks_exact_mut(8);
    let mut table_chunks = table[..n].chunks_exact(8);
    for (o, t) in (&mut out_chunks).zip(&mut table_chunks) {
        for k in 0..8 {
            o[k] = pw[k] * t[k];
            pw[k] *= b8;
        }
    }
    for ((o, t), pwk) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(table_chunks.remainder())
        .zip(pw)
    {
        *o = pwk * t;
    }
}

/// The Lagrange basis polynomials of the nodes `k - (STENCIL - 1) / 2` (`k` in
/// `0..STENCIL`, i.e. -3.5 ..= 3.5), in powers of `tau`: `LAGRANGE[n][k]` is the coefficient
/// of `tau^n` in `L_k(tau)` (lane `k` of a Horner evaluation).
const LAGRANGE: [[f64; STENCIL]; STENCIL] = {
    let mut out = [[0.0; STENCIL]; STENCIL];
    let centre = (STENCIL - 1) as f64 / 2.0;
    let mut k = 0;
    while k < STENCIL {
        // poly = prod_{m != k} (tau - node_m) / (node_k - node_m), built one factor at a time.
        let mut poly = [0.0f64; STENCIL];
        poly[0] = 1.0;
        let mut deg = 0;
        let mut m = 0;
        while m < STENCIL {
            if m != k {
                let node_m = m as f64 - centre;
                let scale = 1.0 / (k as f64 - m as f64);
                // poly <- poly * (tau - node_m) * scale
                let mut n = deg + 1;
                while n > 0 {
                    poly[n] = (poly[n - 1] - node_m * poly[n]) * scale;
                    n -= 1;
                }
                poly[0] = -node_m * poly[0] * scale;
                deg += 1;
            }
            m += 1;
        }
        let mut n = 0;
        while n < STENCIL {
            out[n][k] = poly[n];
            n += 1;
        }
        k += 1;
    }
    out
};

/// Lagrange weights at `t` (in `[0, 1)`) of the nodes `-(STENCIL/2 - 1) ..= STENCIL/2`:
/// `sum_k L_k f(k - STENCIL/2 + 1) ~ f(t)`, exactly for polynomials of degree < STENCIL.
/// Horner's rule in `tau = t - 1/2` (in `[-1/2, 1/2)`), all weights side by side.
#[inline(always)]
fn lagrange(t: f64) -> [f64; STENCIL] {
    let tau = t - 0.5;
    let mut v = LAGRANGE[STENCIL - 1];
    for coef in LAGRANGE[..STENCIL - 1].iter().rev() {
        for k in 0..STENCIL {
            v[k] = v[k] * tau + coef[k];
        }
    }
    v
}

/// The particles grouped by band, chunk by chunk: chunk `c` (input particles
/// `c PARTITION_CHUNK ..`) keeps its particles of band `b` at
/// `points[c PARTITION_CHUNK + offsets[c][b] .. c PARTITION_CHUNK + offsets[c][b + 1]]`,
/// in input order (`offsets[c]` is `offsets[c (n_bands + 1)..][..n_bands + 1]`).
struct Parts {
    points: Vec<[f32; 2]>,
    offsets: Vec<u32>,
}

impl Parts {
    /// Band `b`'s particles, chunk by chunk.
    fn band(&self, b: usize, n_bands: usize) -> impl Iterator<Item = &[[f32; 2]]> {
        self.offsets
            .chunks_exact(n_bands + 1)
            .enumerate()
            .map(move |(c, offs)| {
                let base = c * PARTITION_CHUNK;
                &self.points[base + offs[b] as usize..base + offs[b + 1] as usize]
            })
    }

    /// How many particles band `b` has.
    fn count(&self, b: usize, n_bands: usize) -> usize {
        self.offsets
            .chunks_exact(n_bands + 1)
            .map(|offs| (offs[b + 1] - offs[b]) as usize)
            .sum()
    }
}

/// What the split path's deposit needs.
struct DepositContext {
    plan: SplitPlan,
    /// Particles outside `[x_lo, x_hi] x [y_lo, y_hi]` do not reach the grid.
    x_lo: f64,
    x_hi: f64,
    y_lo: f64,
    y_hi: f64,
}

impl DepositContext {
    /// `(ix, tx, iy, ty)`: the sub-column and sub-row at or below the particle and its
    /// position (in `[0, 1)`) from there to the next; `None` when it cannot reach the grid
    /// (non-finite points included).
    #[inline(always)]
    fn anchor(&self, x: f32, y: f32) -> Option<(usize, f64, usize, f64)> {
        let (x, y) = (x as f64, y as f64);
        if !(x >= self.x_lo && x <= self.x_hi && y >= self.y_lo && y <= self.y_hi) {
            return None;
        }
        let u = (x - self.plan.x0) * self.plan.inv_d;
        let v = (y - self.plan.y0) * self.plan.inv_d;
        // Both are positive (the sub-grid starts below the accepted ranges): truncation is
        // the floor.
        let (iu, iv) = (u as usize, v as usize);
        Some((iu, u - iu as f64, iv, v - iv as f64))
    }

    /// Group the particles by band, per chunk (stable: input order within a band).
    fn partition(&self, points: &[f32]) -> Parts {
        let nb = self.plan.n_bands;
        let shift = self.plan.band.trailing_zeros();
        let n = points.len() / 2;
        let mut sorted = vec![[0f32; 2]; n];
        let mut offsets = vec![0u32; n.div_ceil(PARTITION_CHUNK) * (nb + 1)];
        sorted
            .par_chunks_mut(PARTITION_CHUNK)
            .zip(offsets.par_chunks_mut(nb + 1))
            .zip(points.par_chunks(2 * PARTITION_CHUNK))
            .for_each_init(Vec::new, |keys, ((out, offs), chunk)| {
                keys.clear();
                for p in chunk.chunks_exact(2) {
                    let key = match self.anchor(p[0], p[1]) {
                        Some((_, _, i, _)) => {
                            let b = i >> shift;
                            offs[b + 1] += 1;
                            b as u32
                        }
                        None => u32::MAX,
                    };
                    keys.push(key);
                }
                for b in 0..nb {
                    offs[b + 1] += offs[b];
                }
                let mut next = offs[..nb].to_vec();
                for (p, &key) in chunk.chunks_exact(2).zip(keys.iter()) {
                    if key != u32::MAX {
                        let slot = &mut next[key as usize];
                        out[*slot as usize] = [p[0], p[1]];
                        *slot += 1;
                    }
                }
            });
        Parts {
            points: sorted,
            offsets,
        }
    }

    /// Deposit band `b`'s particles into `rows` (sub-rows `lo..`, as many as it holds).
    fn deposit_band<const SAT: bool>(&self, parts: &Parts, b: usize, lo: usize, rows: &mut [i64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                unsafe { self.deposit_band_avx512::<SAT>(parts, b, lo, rows) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { self.deposit_band_avx2::<SAT>(parts, b, lo, rows) };
                return;
            }
        }
        self.deposit_band_generic::<SAT>(parts, b, lo, rows);
    }

    /// The same code compiled for AVX-512 / AVX2 (wider multiply-adds; identical arithmetic,
    /// no FMA contraction, so results do not depend on the CPU).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn deposit_band_avx512<const SAT: bool>(
        &self,
        parts: &Parts,
        b: usize,
        lo: usize,
        rows: &mut [i64],
    ) {
        self.deposit_band_generic::<SAT>(parts, b, lo, rows);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn deposit_band_avx2<const SAT: bool>(
        &self,
        parts: &Parts,
        b: usize,
        lo: usize,
        rows: &mut [i64],
    ) {
        self.deposit_band_generic::<SAT>(parts, b, lo, rows);
    }

    #[inline(always)]
    fn deposit_band_generic<const SAT: bool>(
        &self,
        parts: &Parts,
        b: usize,
        lo: usize,
        rows: &mut [i64],
    ) {
        let stride = self.plan.stride;
        let below = STENCIL / 2 - 1;
        for chunk in parts.band(b, self.plan.n_bands) {
            for p in chunk {
                let Some((ix, tx, iy, ty)) = self.anchor(p[0], p[1]) else {
                    continue;
                };
                let (lx, ly) = (lagrange(tx), lagrange(ty));
                let row0 = iy - below - lo;
                let col = ix - below;
                for (k, &lk) in ly.iter().enumerate() {
                    // The fixed point's scale on the row weight (a power of two: exact).
                    let lk = lk * SCALE;
                    let start = (row0 + k) * stride + col;
                    let dst: &mut [i64; STENCIL] = (&mut rows[start..start + STENCIL])
                        .try_into()
                        .expect("STENCIL values");
                    // Through a local (loads before stores), so that it vectorizes.
                    let mut v = *dst;
                    for q in 0..STENCIL {
                        v[q] = add_fixed::<SAT>(v[q], quantize(lk * lx[q]));
                    }
                    *dst = v;
                }
            }
        }
    }
}

/// `row[j] = sum_k wx[j len + k] acc[starts[j] + k]`: the fold along x, eight partial sums
/// a column combined in a fixed order (the same on every vector unit).
fn columns_row(row: &mut [f64], acc: &[f64], starts: &[usize], wx: &[f64], len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { columns_row_avx512(row, acc, starts, wx, len) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { columns_row_avx2(row, acc, starts, wx, len) };
            return;
        }
    }
    columns_row_generic(row, acc, starts, wx, len);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns_row_avx512(
    row: &mut [f64],
    acc: &[f64],
    starts: &[usize],
    wx: &[f64],
    len: usize,
) {
    columns_row_generic(row, acc, starts, wx, len);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn columns_row_avx2(row: &mut [f64], acc: &[f64], starts: &[usize], wx: &[f64], len: usize) {
    columns_row_generic(row, acc, starts, wx, len);
}

#[inline(always)]
fn columns_row_generic(row: &mut [f64], acc: &[f64], starts: &[usize], wx: &[f64], len: usize) {
    for ((o, &a), ws) in row.iter_mut().zip(starts).zip(wx.chunks_exact(len)) {
        let src = &acc[a..a + len];
        let mut lanes = [0.0f64; 8];
        let mut ws8 = ws.chunks_exact(8);
        let mut src8 = src.chunks_exact(8);
        for (w8, s8) in (&mut ws8).zip(&mut src8) {
            let (w8, s8): (&[f64; 8], &[f64; 8]) = (
                w8.try_into().expect("8 values"),
                s8.try_into().expect("8 values"),
            );
            for q in 0..8 {
                lanes[q] += w8[q] * s8[q];
            }
        }
        for (q, (&wk, &sk)) in ws8.remainder().iter().zip(src8.remainder()).enumerate() {
            lanes[q] += wk * sk;
        }
        let sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        // A density is never negative; the interpolation's (signed) error is ~1e-8 of the
        // peak, so far from every particle it could dip just below zero.
        *o = sum.max(0.0);
    }
}

/// `row[j] = sum over picked (offset, w) of w * rows[offset + j]`, added in the order given.
fn fold_row(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { fold_row_avx512(row, rows, picked) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { fold_row_avx2(row, rows, picked) };
            return;
        }
    }
    fold_row_generic(row, rows, picked);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fold_row_avx512(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
    fold_row_generic(row, rows, picked);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_row_avx2(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
    fold_row_generic(row, rows, picked);
}

#[inline(always)]
fn fold_row_generic(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
    let w = row.len();
    row.fill(0.0);
    // Four sub-rows a pass (the sum stays in a register), same order as one at a time.
    let mut groups = picked.chunks_exact(4);
    for g in &mut groups {
        let (s0, s1, s2, s3) = (
            &rows[g[0].0..g[0].0 + w],
            &rows[g[1].0..g[1].0 + w],
            &rows[g[2].0..g[2].0 + w],
            &rows[g[3].0..g[3].0 + w],
        );
        let (w0, w1, w2, w3) = (g[0].1, g[1].1, g[2].1, g[3].1);
        for ((((o, &a), &b), &c), &d) in row.iter_mut().zip(s0).zip(s1).zip(s2).zip(s3) {
            *o = (((*o + w0 * a) + w1 * b) + w2 * c) + w3 * d;
        }
    }
    for &(off, wk) in groups.remainder() {
        for (o, &a) in row.iter_mut().zip(&rows[off..off + w]) {
            *o += wk * a;
        }
    }
}

/// The plain `O(pixels x particles)` f64 sum of the untruncated kernel, row 0 at the top.
/// For tests and cross-checks. Non-finite points are skipped.
pub fn direct_sum(
    extent: Extent,
    width: usize,
    height: usize,
    bandwidth: f64,
    points: &[f32],
) -> Vec<f64> {
    let inv2h2 = 1.0 / (2.0 * bandwidth * bandwidth);
    let pts: Vec<(f64, f64)> = points
        .chunks_exact(2)
        .map(|p| (p[0] as f64, p[1] as f64))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut out = vec![0.0; width * height];
    out.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let cy = linspace_at(extent.ymin, extent.ymax, height, height - 1 - r);
        for (c, dst) in row.iter_mut().enumerate() {
            let cx = linspace_at(extent.xmin, extent.xmax, width, c);
            *dst = pts
                .iter()
                .map(|&(x, y)| {
                    let d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                    (-d2 * inv2h2).exp()
                })
                .sum();
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Normal-ish points (sum of uniforms) spread over [-3, 3]^2, a few outside.
    fn cloud(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..2 * n)
            .map(|_| {
                let s: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
                s * 2.2
            })
            .collect()
    }

    fn max_abs(a: &[f64]) -> f64 {
        a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    fn compare_with_direct(bandwidth: f64) {
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(2000, 7);
        let mut grid = DensityGrid::new(extent, 512, 512, bandwidth).unwrap();
        grid.accumulate(&pts);
        let direct = direct_sum(extent, 512, 512, bandwidth, &pts);
        let peak = max_abs(&direct);
        assert!(peak > 1.0);
        let diff: Vec<f64> = grid
            .data()
            .iter()
            .zip(&direct)
            .map(|(a, b)| a - b)
            .collect();
        let err = max_abs(&diff);
        assert!(
            err <= 1e-3 * peak,
            "h = {bandwidth}: max diff {err} vs peak {peak}"
        );
        // The truncation bound is far tighter than the requirement: 2000 * 2e-7 at worst.
        assert!(err <= 2000.0 * 2e-7, "h = {bandwidth}: max diff {err}");
        eprintln!(
            "h = {bandwidth} ({} path): max |diff| {err:.3e}, peak {peak:.4}, ratio {:.3e}",
            if grid.is_split() { "split" } else { "direct" },
            err / peak
        );
    }

    #[test]
    fn paths_are_chosen_by_shape() {
        let sq = Extent::square(-3.0, 3.0).unwrap();
        let grid = |w, h, bw| DensityGrid::new(sq, w, h, bw).unwrap();
        assert!(grid(512, 512, DEFAULT_BANDWIDTH).is_split());
        assert!(!grid(512, 512, 0.005).is_split());
        assert!(!grid(1, 512, DEFAULT_BANDWIDTH).is_split());
        assert!(!grid(512, 1, DEFAULT_BANDWIDTH).is_split());
        // Sub-grid memory stays below max(4 x pixels, 2^23 values) at every size.
        for (w, h, bw) in [
            (512, 512, DEFAULT_BANDWIDTH),
            (MAX_SIDE, MAX_SIDE, DEFAULT_BANDWIDTH),
            (MAX_SIDE, 64, DEFAULT_BANDWIDTH),
            (MAX_SIDE, MAX_SIDE, 0.0012),
            (2048, 2048, 0.004),
            (4096, 4096, 0.01),
            (512, 512, 0.009),
        ] {
            if let Some(plan) = SplitPlan::new(&sq, w, h, bw) {
                let cells = plan.n_sub * plan.stride;
                assert!(
                    cells <= (4 * w * h).max(SPLIT_MIN_BUDGET),
                    "{w}x{h}, h = {bw}: {cells} sub-grid values"
                );
                assert!(plan.band >= 2 * STENCIL && plan.band.is_power_of_two());
            }
        }
        // The default image's sub-grid: about 1,370 x 1,376 values (15 MB).
        let plan = SplitPlan::new(&sq, 512, 512, DEFAULT_BANDWIDTH).unwrap();
        assert!(plan.n_sub * plan.stride < 2_000_000);
        // Too fine a sub-grid for the budget: the direct path.
        assert!(SplitPlan::new(&sq, 512, 512, 0.009).is_none());
        assert!(SplitPlan::new(&sq, 2048, 2048, 0.004).is_none());
        assert!(SplitPlan::new(&sq, 4096, 4096, 0.01).is_some());
    }

    #[test]
    fn split_path_matches_direct_sum_across_bandwidths() {
        // From just above the split threshold to wide kernels, odd sizes, off-centre extent.
        let extent = Extent::new(-2.0, 3.0, -1.5, 1.0).unwrap();
        let pts = cloud(1500, 13);
        for (w, h, bw) in [
            (400, 300, 0.03),
            (257, 129, 0.11),
            (64, 48, 0.2),
            (300, 200, 0.05),
        ] {
            let mut grid = DensityGrid::new(extent, w, h, bw).unwrap();
            assert!(grid.is_split(), "{w}x{h}, h = {bw}");
            grid.accumulate(&pts);
            let direct = direct_sum(extent, w, h, bw, &pts);
            let peak = max_abs(&direct);
            let err = grid
                .data()
                .iter()
                .zip(&direct)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-7 * peak,
                "{w}x{h}, h = {bw}: {err} vs peak {peak}"
            );
        }
    }

    #[test]
    fn lagrange_weights_interpolate_polynomials() {
        for t in [0.0, 0.1, 0.25, 0.5, 0.77, 0.999] {
            let l = lagrange(t);
            // Nodes -3..=4: exact for degree < 8.
            for deg in 0..8 {
                let interp: f64 = l
                    .iter()
                    .enumerate()
                    .map(|(k, lk)| lk * (k as f64 - 3.0).powi(deg))
                    .sum();
                let exact = t.powi(deg);
                assert!(
                    (interp - exact).abs() <= 1e-11 * (1.0 + 4f64.powi(deg)),
                    "t = {t}, degree {deg}: {interp} vs {exact}"
                );
            }
        }
        let at0 = lagrange(0.0);
        assert!(
            (at0[3] - 1.0).abs() < 1e-14 && at0.iter().map(|v| v.abs()).sum::<f64>() < 1.0 + 1e-13
        );
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(60_000, 21);
        for bw in [DEFAULT_BANDWIDTH, 0.005] {
            let run = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| {
                        let mut grid = DensityGrid::new(extent, 256, 192, bw).unwrap();
                        grid.accumulate(&pts[..50_000]);
                        grid.accumulate(&pts[50_000..]);
                        grid.into_data()
                    })
            };
            let one = run(1);
            assert!(one.iter().any(|&v| v > 1.0));
            for threads in [2, 3, 5] {
                assert!(one == run(threads), "h = {bw}, {threads} threads");
            }
        }
    }

    #[test]
    fn reads_between_batches_see_everything() {
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(4000, 17);
        let mut all = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
        assert!(all.is_split());
        assert!(all.data().iter().all(|&v| v == 0.0));
        all.accumulate(&pts);
        let mut steps = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
        steps.accumulate(&pts[..2000]);
        let half = steps.data().to_vec();
        let (lo, hi) = steps.min_max();
        assert!(lo == 0.0 && hi > 1.0);
        steps.accumulate(&pts[2000..]);
        let peak = max_abs(all.data());
        for ((a, b), h) in all.data().iter().zip(steps.data()).zip(&half) {
            assert!((a - b).abs() <= 1e-12 * peak);
            // More particles never lower the density (beyond the interpolation error).
            assert!(*b >= *h - 1e-8 * peak);
        }
        // Clones, equality and into_data agree with data.
        let copy = steps.clone();
        assert_eq!(copy, steps);
        assert_eq!(copy.get(100, 100), steps.data()[100 * 200 + 100]);
        assert_eq!(steps.clone().into_data(), steps.data());
        // Merging an empty grid changes nothing; merging into an empty one copies.
        let empty = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
        let before = steps.data().to_vec();
        steps.merge(&empty).unwrap();
        assert_eq!(steps.data(), &before[..]);
        let mut target = empty.clone();
        target.merge(&steps).unwrap();
        assert_eq!(target.data(), &before[..]);
    }

    #[test]
    fn fast_path_matches_direct_sum_default_bandwidth() {
        compare_with_direct(DEFAULT_BANDWIDTH);
    }

    #[test]
    fn fast_path_matches_direct_sum_small_bandwidth() {
        compare_with_direct(0.005);
    }

    #[test]
    fn default_bandwidth_is_the_tutorials_kernel() {
        let h = DEFAULT_BANDWIDTH;
        assert!((1.0 / (2.0 * h * h) - 350.0).abs() < 1e-9);
    }

    #[test]
    fn non_square_and_odd_sizes_match_direct_sum() {
        let extent = Extent::new(-2.0, 3.0, -1.0, 1.5).unwrap();
        let pts = cloud(300, 3);
        for (w, h) in [(300, 200), (1, 7), (9, 1), (1, 1), (37, 211)] {
            let mut grid = DensityGrid::new(extent, w, h, 0.05).unwrap();
            grid.accumulate(&pts);
            let direct = direct_sum(extent, w, h, 0.05, &pts);
            let peak = max_abs(&direct).max(1e-300);
            for (a, b) in grid.data().iter().zip(&direct) {
                assert!((a - b).abs() <= 1e-6 * peak.max(1.0), "{w}x{h}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn png_has_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let mut grid = DensityGrid::new(extent, 300, 200, DEFAULT_BANDWIDTH).unwrap();
        grid.accumulate(&cloud(500, 1));
        let path = dir.path().join("density.png");
        grid.write_png(&path, Colormap::Coolwarm).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (300, 200));
        assert_eq!(img, grid.to_rgb_image(Colormap::Coolwarm));
        // No temporary left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("density.png")]);
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let grid = DensityGrid::new(Extent::square(0.0, 1.0).unwrap(), 4, 4, 0.1).unwrap();
        let path = dir.path().join("missing").join("x.png");
        assert!(grid.write_png(&path, Colormap::Gray).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn y_axis_points_up() {
        let extent = Extent::square(-2.0, 2.0).unwrap();
        let (w, h) = (64, 48);
        let mut grid = DensityGrid::new(extent, w, h, DEFAULT_BANDWIDTH).unwrap();
        grid.accumulate(&[0.0, 1.0]);
        let (mut best, mut at) = (f64::NEG_INFINITY, (0, 0));
        for r in 0..h {
            for c in 0..w {
                if grid.get(r, c) > best {
                    best = grid.get(r, c);
                    at = (r, c);
                }
            }
        }
        assert!(
            at.0 < h / 2,
            "brightest row {} should be in the upper half",
            at.0
        );
        // y = 1 is three quarters up: row ~ (h - 1) / 4.
        assert!((grid.row_y(at.0) - 1.0).abs() <= 2.0 / (h - 1) as f64);
        // x = 0 is midway between two columns: their values tie (in the fixed point) and
        // the first wins, at distance 2 / (w - 1) up to rounding.
        assert!((grid.column_x(at.1)).abs() <= 2.0 / (w - 1) as f64 * (1.0 + 1e-12));
        assert_eq!(grid.get(at.0, w / 2 - 1), grid.get(at.0, w / 2));
        assert_eq!(grid.row_y(0), 2.0);
        assert_eq!(grid.row_y(h - 1), -2.0);
        // And in the image: the brightest pixel is the last colour of the map.
        let img = grid.to_rgb_image(Colormap::Viridis);
        assert_eq!(
            img.get_pixel(at.1 as u32, at.0 as u32).0,
            Colormap::Viridis.lut()[255]
        );
    }

    #[test]
    fn two_batches_equal_one_batch_and_merge() {
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(5000, 11);
        // Split path (default bandwidth) and direct path (small bandwidth): bit for bit.
        for bw in [DEFAULT_BANDWIDTH, 0.005] {
            let mut one = DensityGrid::new(extent, 256, 192, bw).unwrap();
            one.accumulate(&pts);
            let mut two = DensityGrid::new(extent, 256, 192, bw).unwrap();
            two.accumulate(&pts[..4000]);
            two.accumulate(&pts[4000..]);
            assert!(one.data() == two.data(), "h = {bw}");
            assert!(one.raw_counts() == two.raw_counts(), "h = {bw}");
            let mut left = DensityGrid::new(extent, 256, 192, bw).unwrap();
            left.accumulate(&pts[..6000]);
            let mut right = DensityGrid::new(extent, 256, 192, bw).unwrap();
            right.accumulate(&pts[6000..]);
            left.merge(&right).unwrap();
            assert!(one.data() == left.data(), "h = {bw}");
            // Order does not matter either: the particles reversed.
            let reversed: Vec<f32> = pts.chunks_exact(2).rev().flatten().copied().collect();
            let mut back = DensityGrid::new(extent, 256, 192, bw).unwrap();
            back.accumulate(&reversed);
            assert!(one.data() == back.data(), "h = {bw}");
            assert_eq!(one.raw_meta().deposits, 5000);
            let other = DensityGrid::new(extent, 256, 191, bw).unwrap();
            assert!(left.merge(&other).is_err());
        }
        let mut left = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
        let other = DensityGrid::new(Extent::square(-3.0, 3.5).unwrap(), 256, 192, 0.1).unwrap();
        assert!(left.merge(&other).is_err());
    }

    #[test]
    fn raw_grids_round_trip_and_refuse_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(3000, 5);
        for (bw, split) in [(DEFAULT_BANDWIDTH, true), (0.005, false)] {
            let mut grid = DensityGrid::new(extent, 256, 192, bw).unwrap();
            assert_eq!(grid.is_split(), split);
            // Before any deposit: all zero, still round-trips.
            let path = dir.path().join("g.npy");
            grid.save_raw(&path).unwrap();
            assert!(DensityGrid::load_raw(&path)
                .unwrap()
                .data()
                .iter()
                .all(|&v| v == 0.0));
            grid.accumulate(&pts);
            grid.save_raw(&path).unwrap();
            let back = DensityGrid::load_raw(&path).unwrap();
            assert!(back.data() == grid.data());
            assert_eq!(back.raw_meta(), grid.raw_meta());
            // Summing raw counts = merging.
            let mut a = DensityGrid::new(extent, 256, 192, bw).unwrap();
            a.accumulate(&pts[..2000]);
            let mut b = DensityGrid::new(extent, 256, 192, bw).unwrap();
            b.accumulate(&pts[2000..]);
            let sum: Vec<i64> = a
                .raw_counts()
                .iter()
                .zip(b.raw_counts().iter())
                .map(|(x, y)| x + y)
                .collect();
            let mut meta = a.raw_meta();
            meta.deposits += b.raw_meta().deposits;
            assert!(DensityGrid::from_raw(&meta, sum).unwrap().data() == grid.data());
            // Mismatches are refused.
            let mut wrong = grid.raw_meta();
            wrong.bandwidth *= 1.5;
            // Refused when read (a different sub-grid) or when merged (a different grid).
            assert!(
                DensityGrid::from_raw(&wrong, grid.raw_counts().into_owned())
                    .and_then(|other| grid.clone().merge(&other))
                    .is_err()
            );
            let mut wrong = grid.raw_meta();
            wrong.path = if split { "direct" } else { "split" }.into();
            assert!(DensityGrid::from_raw(&wrong, grid.raw_counts().into_owned()).is_err());
            assert!(DensityGrid::from_raw(&grid.raw_meta(), vec![0; 5]).is_err());
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.pop();
            std::fs::write(&path, &bytes).unwrap();
            assert!(DensityGrid::load_raw(&path).is_err());
        }
    }

    #[test]
    fn fixed_point_quantize_and_headroom() {
        for v in [
            0.0,
            0.4,
            0.5,
            0.6,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -3.7,
            4294967296.0,
            -4294967296.0,
        ] {
            assert_eq!(quantize(v), v.round_ties_even() as i64, "{v}");
        }
        // Every deposited weight is at most 1 in magnitude (one particle's peak).
        let mut worst = 0.0f64;
        for k in 0..=1000 {
            let l = lagrange(k as f64 / 1000.0);
            worst = worst.max(l.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        }
        assert!(worst <= 1.0 + 1e-12, "{worst}");
        let per_deposit = (SCALE * (1.0 + 1e-12)).ceil() as i128;
        assert!(EXACT_PARTICLES as i128 * per_deposit <= i64::MAX as i128);
        assert_eq!(add_fixed::<true>(i64::MAX - 1, 5), i64::MAX);
    }

    #[test]
    fn skips_nan_and_far_points() {
        let extent = Extent::square(-1.0, 1.0).unwrap();
        let mut grid = DensityGrid::new(extent, 32, 32, 0.05).unwrap();
        grid.accumulate(&[
            f32::NAN,
            0.0,
            0.0,
            f32::INFINITY,
            100.0,
            0.0,
            -1e30,
            1e30,
            3.0,
            -3.0,
        ]);
        assert!(grid.data().iter().all(|&v| v == 0.0));
        // A constant grid maps to the low colour.
        let img = grid.to_rgb_image(Colormap::Coolwarm);
        assert!(img.pixels().all(|p| p.0 == Colormap::Coolwarm.lut()[0]));
        // A point just outside the extent still lights the border.
        grid.accumulate(&[1.02, 0.0]);
        assert!(grid.data().iter().any(|&v| v > 0.5));
    }

    #[test]
    fn validation() {
        assert!(Extent::new(0.0, 0.0, 0.0, 1.0).is_err());
        assert!(Extent::new(0.0, 1.0, 2.0, 1.0).is_err());
        assert!(Extent::new(f64::NAN, 1.0, 0.0, 1.0).is_err());
        assert!(Extent::square(1.0, f64::INFINITY).is_err());
        let e: Extent = "-3, 3,-2.5,2".parse().unwrap();
        assert_eq!(e, Extent::new(-3.0, 3.0, -2.5, 2.0).unwrap());
        assert_eq!(e.to_string().parse::<Extent>().unwrap(), e);
        assert!("1,2,3".parse::<Extent>().is_err());
        assert!("1,2,x,4".parse::<Extent>().is_err());
        assert!("2,1,3,4".parse::<Extent>().is_err());
        assert!("0,1,0,1,0".parse::<Extent>().is_err());
        let sq = Extent::square(-3.0, 3.0).unwrap();
        assert!(DensityGrid::new(sq, 0, 10, 0.1).is_err());
        assert!(DensityGrid::new(sq, 10, MAX_SIDE + 1, 0.1).is_err());
        assert!(DensityGrid::new(sq, 10, 10, 0.0).is_err());
        assert!(DensityGrid::new(sq, 10, 10, f64::NAN).is_err());
        assert!(DensityGrid::new(sq, MAX_SIDE, 1, 0.1).is_ok());
    }
}
