//! The direct path: each particle's 1-D weights over the columns and rows within the
//! cut-off radius, their outer product added to the integer pixel sums band by band of
//! rows; and the histogram kernel (one unit on the nearest pixel).

use super::fixed_point::{add_fixed, dequantize, quantize, SCALE};
use super::weights::{kernel_weights, square_table};
use super::{cutoff_sigmas, linspace_at, DensityGrid, Kernel, Store};
use crate::isa::{isa_dispatch, Isa};
use rayon::prelude::*;
use std::sync::OnceLock;

/// One particle's footprint on the grid (inclusive index ranges).
#[derive(Debug, Clone, Copy)]
pub(super) struct Footprint {
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) c0: u32,
    pub(super) c1: u32,
    /// Top row (smallest row index) and bottom row.
    pub(super) r0: u32,
    pub(super) r1: u32,
}

impl DensityGrid {
    /// Inclusive index range of grid nodes `linspace(lo, hi, n)` within `radius` of `p`,
    /// or `None` when empty.
    #[inline(always)]
    pub(super) fn node_range(
        lo: f64,
        hi: f64,
        n: usize,
        p: f64,
        radius: f64,
    ) -> Option<(u32, u32)> {
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
    pub(super) fn footprints(
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

    pub(super) fn footprint(&self, x: f32, y: f32, radius: f64) -> Option<Footprint> {
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

    /// The direct path's x-direction constants: column centres, spacing, weight table.
    pub(super) fn column_setup(&self) -> (Vec<f64>, f64, Vec<f64>) {
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

    /// [`Kernel::Histogram`]: one whole unit (`2^QUANTUM_BITS`) on the pixel whose centre is
    /// nearest, for points within half a pixel of the extent's pixel centres.
    pub(super) fn accumulate_histogram(&mut self, points: &[f32]) {
        let cells = self.histogram_cells(points, |_| true);
        let Store::Direct(direct) = &mut self.store else {
            unreachable!("histograms are direct stores")
        };
        direct.pixels = OnceLock::new();
        let unit = SCALE as i64;
        for i in cells {
            direct.acc[i] = add_fixed(direct.acc[i], unit);
        }
    }

    /// The direct path's bands: footprints sorted (stably, counting sort) by top row, so a
    /// band finds its particles in one slice, and the weight tables.
    pub(super) fn band_context(&self, footprints: Vec<Footprint>) -> BandContext {
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
        let mut acc = vec![0i64; out.len()];
        if self.kernel == Kernel::Histogram {
            let cells = self.histogram_cells(points, |i| i >= r0 * w && i < r1 * w);
            let unit = SCALE as i64;
            for i in cells {
                let a = &mut acc[i - r0 * w];
                *a = add_fixed(*a, unit);
            }
        } else {
            let footprints =
                self.footprints(points, |f| (f.r1 as usize) >= r0 && (f.r0 as usize) < r1);
            if !footprints.is_empty() {
                let ctx = self.band_context(footprints);
                let threads = rayon::current_num_threads().max(1);
                let sub = k.div_ceil(8 * threads).max(1);
                ctx.add_bands(r0, sub, w, &mut acc);
            }
        }
        out.par_iter_mut()
            .zip(acc.par_iter())
            .for_each(|(o, &v)| *o = dequantize(v));
    }

    /// The [`histogram_cell`](Self::histogram_cell)s of row-major `(n, 2)` points that
    /// `keep` accepts, in point order, computed in parallel.
    pub(super) fn histogram_cells(
        &self,
        points: &[f32],
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Vec<usize> {
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
    pub(super) fn histogram_cell(&self, x: f32, y: f32) -> Option<usize> {
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

    pub(super) fn accumulate_direct(&mut self, points: &[f32]) {
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
        ctx.add_bands(0, band_rows, w, &mut direct.acc);
    }
}

/// What every band of rows needs to add its particles' kernels.
pub(super) struct BandContext {
    pub(super) width: usize,
    /// Most rows any footprint covers.
    pub(super) span: usize,
    pub(super) inv2h2: f64,
    /// Column and row centres (row 0 = top).
    pub(super) xs: Vec<f64>,
    pub(super) ys: Vec<f64>,
    /// Node spacing along a row (positive) and down a column (negative), and the
    /// particle-independent factors of the weights ([`square_table`]).
    pub(super) step_x: f64,
    pub(super) step_y: f64,
    pub(super) table_x: Vec<f64>,
    pub(super) table_y: Vec<f64>,
    /// `sorted[starts[r]..starts[r + 1]]`: the footprints whose top row is `r`.
    pub(super) starts: Vec<usize>,
    pub(super) sorted: Vec<Footprint>,
}

impl BandContext {
    /// Add the kernels into `acc` (rows `first_row..` of `width` pixels), rayon over
    /// bands of `band_rows` rows.
    pub(super) fn add_bands(
        &self,
        first_row: usize,
        band_rows: usize,
        width: usize,
        acc: &mut [i64],
    ) {
        acc.par_chunks_mut(band_rows * width)
            .enumerate()
            .for_each(|(band, rows)| self.add_band(first_row + band * band_rows, rows));
    }

    /// Add the kernels reaching rows `b0..` (as many as `rows` holds) into `rows`.
    pub(super) fn add_band(&self, b0: usize, rows: &mut [i64]) {
        add_band_on(Isa::for_exact_kernels(), self, b0, rows);
    }

    #[inline(always)]
    pub(super) fn add_band_generic(&self, b0: usize, rows: &mut [i64]) {
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
                    *dst = add_fixed(*dst, quantize(wys * wxv));
                }
            }
        }
    }
}

isa_dispatch! {
    /// [`BandContext::add_band_generic`] compiled for `isa` (wider f64 multiply-adds in the row
    /// loop; identical arithmetic, no FMA contraction, so results do not depend on the CPU).
    fn add_band_on(direct: &BandContext, b0: usize, rows: &mut [i64]) {
        Avx512 => direct.add_band_generic(b0, rows),
        Avx2 => direct.add_band_generic(b0, rows),
        Portable => direct.add_band_generic(b0, rows),
    }
}
