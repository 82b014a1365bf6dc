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
//! [`crate::plot::raster`]): a band of the split path is folded from the sub-grid for its rows only,
//! bit for bit the same rows as the whole fold, so memory stays at the sub-grid plus a band.
//! The split path's sub-grid can also be filled elsewhere (the GPU deposit,
//! [`crate::engine::gpu::raster`]) through [`DensityGrid::sub_grid`] and
//! [`DensityGrid::add_sub_grid_rows`].
//!
//! Both accumulate in integer fixed point: each deposited weight (a sub-grid node's
//! `Lx_i Ly_k`, or a pixel's `g g`) is rounded once to a multiple of `2^-32` of a particle's
//! peak and added to an `i64`, so sums are exact, associative and order-independent: two
//! batches equal one batch, and grids of shards added ([`DensityGrid::merge`], raw sums
//! through [`DensityGrid::raw_counts`] / [`crate::image::grid_file::write_raw`]) equal the grid of the
//! whole run, bit for bit. The sums are exact up to [`EXACT_PARTICLES`] (2^31 - 1) particles
//! reaching one cell; past that they wrap modulo 2^64 on every engine, identically (CPU, GPU
//! and merges add alike, so grids still agree bit for bit). The rounding adds at most
//! `2^-33` of a peak per deposit (about 64 per particle on the split path). Reads convert
//! the sums to f64 deterministically: the f64 values are a function of the integers only.
//! Every f64 step (weights, fold) is taken in an order fixed by the grid's shape, whatever
//! the thread count or vector unit (no FMA contraction).
//!
//! The grid type and its reads are here; each stage has its file in `heatmap/`: `direct`
//! (direct path and histogram), `split` (the sub-grid and its deposit), `fold` (sub-grid to
//! pixels), `weights` (1-D kernel weights), `fixed_point` (the integer sums) and `raw` (the
//! sums as data, for shards and checkpoints; their files are [`crate::image::grid_file`]'s).

mod direct;
mod fixed_point;
mod fold;
mod raw;
mod split;
mod weights;

use crate::density::extent::Extent;
use crate::error::{Error, Result};
// Re-exported where `DensityGrid::new` takes it and where callers have long found it.
use fixed_point::{add_counts, dequantize};
pub use fixed_point::{EXACT_PARTICLES, QUANTUM_BITS};
pub use raw::{RawGridMeta, RAW_FORMAT};
use rayon::prelude::*;
use serde::Serialize;
use split::{Split, SplitPlan};
pub use split::{SubGrid, LAGRANGE_COEFFICIENTS};
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
    /// The name the options and the sidecars use.
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
    /// [`EXACT_PARTICLES`] a cell's sum may have wrapped.
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

    /// Columns.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The rectangle of the plane it covers.
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// Width (standard deviation) of the kernel.
    pub fn bandwidth(&self) -> f64 {
        self.bandwidth
    }

    /// The kernel.
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

    /// The values, row-major from the top row, as [`data`](Self::data) gives them.
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

    /// Add the kernels of row-major `(n, 2)` points. Non-finite points are skipped, and so
    /// are points whose kernel does not reach the grid. Each kernel value is rounded to the
    /// fixed point once and added as an integer, so the result does not depend on how the
    /// points are split into batches, on their order or on grids merged: bit for bit, and
    /// exact up to `EXACT_PARTICLES` particles reaching a cell (past that the sums wrap,
    /// alike on every engine).
    pub fn accumulate(&mut self, points: &[f32]) {
        assert!(
            points.len().is_multiple_of(2),
            "points must be row-major (n, 2), got {} floats",
            points.len()
        );
        for sub in points.chunks(2 * SUB_BATCH) {
            let n = (sub.len() / 2) as u64;
            self.deposits = self.deposits.saturating_add(n);
            match self.store {
                Store::Direct(_) if self.kernel == Kernel::Histogram => {
                    self.accumulate_histogram(sub)
                }
                Store::Direct(_) => self.accumulate_direct(sub),
                Store::Split(_) => self.accumulate_split(sub),
            }
        }
    }

    /// Whether every sum is exact: at most `EXACT_PARTICLES` particles were accumulated or
    /// merged in. Past that a cell's sum may have wrapped (alike on every engine); run.json
    /// says so (`density_inexact`).
    pub fn is_exact(&self) -> bool {
        Self::exact_for(self.deposits)
    }

    /// Whether a grid of `particles` deposits is exact (see [`is_exact`](Self::is_exact)).
    pub fn exact_for(particles: u64) -> bool {
        particles <= EXACT_PARTICLES
    }

    /// Count `particles` more deposits (see [`add_sub_grid_rows`](Self::add_sub_grid_rows)).
    pub fn add_deposits(&mut self, particles: u64) {
        self.deposits = self.deposits.saturating_add(particles);
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
mod tests;
