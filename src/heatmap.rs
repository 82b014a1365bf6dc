//! Density images of particle clouds, as in the reference tutorial.
//!
//! The density at a pixel centre `c` is `sum_p exp(-|p - c|^2 / (2 h^2))` over the particles
//! `p`; the tutorial's `exp(-350 |p - c|^2)` is `h = 1/sqrt(700)` ([`DEFAULT_BANDWIDTH`]).
//! Pixel centres lie on `linspace` grids: column `j` at `x_j = linspace(xmin, xmax, W)[j]`,
//! row `r` at `y = linspace(ymin, ymax, H)[H - 1 - r]`, so row 0 is the top of the image
//! (`y = ymax`) and the y axis points up.
//!
//! The fast path ([`DensityGrid::accumulate`]) uses the separability of the kernel: for each
//! particle, 1-D weights over the columns and rows within a cut-off radius
//! `sqrt(2 ln 1e7) h` (the truncated tail is below 1e-7 of a particle's peak), and the
//! outer product added to the grid. Work is split into bands of rows, one rayon task each;
//! every pixel sums its particles in the same order whatever the thread count, so the result
//! is deterministic.

use crate::colormap::Colormap;
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;

/// The tutorial's kernel bandwidth: `exp(-350 d^2) = exp(-d^2 / (2 h^2))` with `h = 1/sqrt(700)`.
pub const DEFAULT_BANDWIDTH: f64 = 0.037_796_447_300_922_72; // 1 / sqrt(700)

/// Largest width or height of a density grid.
pub const MAX_SIDE: usize = 16384;

/// Kernel cut-off in bandwidths: `exp(-CUTOFF^2 / 2) = 1e-7`.
fn cutoff_sigmas() -> f64 {
    (2.0 * (1e7f64).ln()).sqrt()
}

/// Particles handled per internal sub-batch (bounds the per-call scratch memory).
const SUB_BATCH: usize = 1 << 22;

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
#[derive(Debug, Clone, PartialEq)]
pub struct DensityGrid {
    width: usize,
    height: usize,
    extent: Extent,
    bandwidth: f64,
    data: Vec<f64>,
}

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

impl DensityGrid {
    /// An all-zero grid. Sides must be in `1..=16384`, the bandwidth finite and positive.
    pub fn new(extent: Extent, width: usize, height: usize, bandwidth: f64) -> Result<Self> {
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
        Ok(DensityGrid {
            width,
            height,
            extent,
            bandwidth,
            data: vec![0.0; width * height],
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
    /// Row-major values, row 0 at the top.
    pub fn data(&self) -> &[f64] {
        &self.data
    }
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }
    /// The value at row `row` (0 = top) and column `col`.
    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.data[row * self.width + col]
    }
    /// Smallest and largest value.
    pub fn min_max(&self) -> (f64, f64) {
        self.data
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
    /// are points whose kernel does not reach the grid. Call once per batch.
    pub fn accumulate(&mut self, points: &[f32]) {
        assert!(
            points.len().is_multiple_of(2),
            "points must be row-major (n, 2), got {} floats",
            points.len()
        );
        for sub in points.chunks(2 * SUB_BATCH) {
            self.accumulate_sub(sub);
        }
    }

    fn accumulate_sub(&mut self, points: &[f32]) {
        let radius = cutoff_sigmas() * self.bandwidth;
        let footprints: Vec<Footprint> = points
            .par_chunks(2 * 4096)
            .flat_map_iter(|chunk| {
                chunk
                    .chunks_exact(2)
                    .filter_map(|p| self.footprint(p[0], p[1], radius))
                    .collect::<Vec<_>>()
            })
            .collect();
        if footprints.is_empty() {
            return;
        }

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

        let threads = rayon::current_num_threads().max(1);
        let bands = h.min(8 * threads).max(1);
        let band_rows = h.div_ceil(bands);
        let w = self.width;
        let (xmin, xmax, ymin, ymax) = (
            self.extent.xmin,
            self.extent.xmax,
            self.extent.ymin,
            self.extent.ymax,
        );
        let inv2h2 = 1.0 / (2.0 * self.bandwidth * self.bandwidth);
        let step_x = if w > 1 {
            (xmax - xmin) / (w - 1) as f64
        } else {
            0.0
        };
        let step_y = if h > 1 {
            -(ymax - ymin) / (h - 1) as f64
        } else {
            0.0
        };
        let ctx = BandContext {
            width: w,
            span: span as usize,
            inv2h2,
            step_x,
            step_y,
            table_x: square_table(w, step_x, inv2h2),
            table_y: square_table(h, step_y, inv2h2),
            xs: (0..w).map(|c| linspace_at(xmin, xmax, w, c)).collect(),
            ys: (0..h)
                .map(|r| linspace_at(ymin, ymax, h, h - 1 - r))
                .collect(),
            starts,
            sorted,
        };
        self.data
            .par_chunks_mut(band_rows * w)
            .enumerate()
            .for_each(|(band, rows)| ctx.add_band(band * band_rows, rows));
    }

    fn same_shape(&self, other: &DensityGrid) -> bool {
        self.width == other.width
            && self.height == other.height
            && self.extent == other.extent
            && self.bandwidth == other.bandwidth
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
        self.data
            .par_iter_mut()
            .zip(other.data.par_iter())
            .for_each(|(a, b)| *a += b);
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
            .zip(self.data.par_iter())
            .for_each(|(px, &v)| {
                let t = if scale > 0.0 { (v - lo) * scale } else { 0.0 };
                px.copy_from_slice(&lut[crate::colormap::lut_index(t)]);
            });
        img
    }

    /// Write the image as a PNG, atomically: a temporary file `.NAME.tmp` in the same folder,
    /// then a rename into place. On failure nothing is left behind.
    pub fn write_png(&self, path: impl AsRef<Path>, colormap: Colormap) -> Result<()> {
        let img = self.to_rgb_image(colormap);
        write_png_atomic(&img, path.as_ref())
    }
}

/// Write an RGB image to `path` as a PNG through a temporary file and a rename.
pub fn write_png_atomic(img: &image::RgbImage, path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Output(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut writer = std::io::BufWriter::new(file);
        img.write_to(&mut writer, image::ImageFormat::Png)
            .map_err(|e| match e {
                image::ImageError::IoError(io) => Error::io(&tmp, io),
                other => Error::Output(format!("{}: {other}", path.display())),
            })?;
        let file = writer
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
    /// Add the kernels reaching rows `b0..` (as many as `rows` holds) into `rows`.
    fn add_band(&self, b0: usize, rows: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { self.add_band_avx2(b0, rows) };
                return;
            }
        }
        self.add_band_generic(b0, rows);
    }

    /// The same code compiled for AVX2 (4-wide f64 multiply-adds in the row loop). The
    /// arithmetic is identical (no FMA contraction), so results do not depend on the CPU.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_band_avx2(&self, b0: usize, rows: &mut [f64]) {
        self.add_band_generic(b0, rows);
    }

    #[inline(always)]
    fn add_band_generic(&self, b0: usize, rows: &mut [f64]) {
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
                for (dst, &wxv) in row.iter_mut().zip(&wx) {
                    *dst += wyv * wxv;
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
        assert!((grid.column_x(at.1)).abs() <= 2.0 / (w - 1) as f64);
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
        let mut one = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
        one.accumulate(&pts);
        let mut two = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
        two.accumulate(&pts[..4000]);
        two.accumulate(&pts[4000..]);
        let peak = max_abs(one.data());
        for (a, b) in one.data().iter().zip(two.data()) {
            assert!((a - b).abs() <= 1e-12 * peak);
        }
        let mut left = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
        left.accumulate(&pts[..6000]);
        let mut right = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
        right.accumulate(&pts[6000..]);
        left.merge(&right).unwrap();
        for (a, b) in one.data().iter().zip(left.data()) {
            assert!((a - b).abs() <= 1e-12 * peak);
        }
        let other = DensityGrid::new(extent, 256, 191, DEFAULT_BANDWIDTH).unwrap();
        assert!(left.merge(&other).is_err());
        let other = DensityGrid::new(Extent::square(-3.0, 3.5).unwrap(), 256, 192, 0.1).unwrap();
        assert!(left.merge(&other).is_err());
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

    /// Timing of the fast path (run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn bench_accumulate_1m() {
        let extent = Extent::square(-3.0, 3.0).unwrap();
        let pts = cloud(1_000_000, 5);
        let mut grid = DensityGrid::new(extent, 512, 512, DEFAULT_BANDWIDTH).unwrap();
        grid.accumulate(&pts[..2000]);
        // Process CPU time (user + system), from /proc/self/stat, in seconds.
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<f64> = after
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            if f.len() > 12 {
                (f[11] + f[12]) / 100.0
            } else {
                0.0
            }
        };
        let (t, c) = (std::time::Instant::now(), cpu());
        grid.accumulate(&pts);
        let spread = (t.elapsed(), cpu() - c);
        // Memorized-like: all particles on 8 points of the unit circle.
        let mut rng = StdRng::seed_from_u64(9);
        let clustered: Vec<f32> = (0..1_000_000)
            .flat_map(|_| {
                let k = rng.random_range(0..8) as f32;
                let a = k * std::f32::consts::TAU / 8.0;
                [a.cos() + 0.01 * (rng.random::<f32>() - 0.5), a.sin()]
            })
            .collect();
        let (t, c) = (std::time::Instant::now(), cpu());
        grid.accumulate(&clustered);
        let clustered_t = (t.elapsed(), cpu() - c);
        eprintln!(
            "1M particles at 512x512, {} threads: (wall, cpu seconds) spread {:?}, clustered {:?}",
            rayon::current_num_threads(),
            spread,
            clustered_t
        );
    }
}
