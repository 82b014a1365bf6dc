//! The split path's deposit: the fine sub-grid (its plan and storage), particles placed
//! on it by 8-point Lagrange interpolation band by band of sub-rows, and sums deposited
//! elsewhere (the GPU) added to it. Reading it back is [`super::fold`].

use super::fixed_point::{add_counts, add_fixed, quantize, SCALE};
use super::{cutoff_sigmas, DensityGrid, Extent, Store};
use crate::error::{Error, Result};
use crate::isa::{isa_dispatch, Isa};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Split path: sub-grid nodes per bandwidth (spacing `d = h / SUB_PER_H`).
pub(super) const SUB_PER_H: f64 = 8.0;

/// Split path: points of the Lagrange stencil that places a particle on the sub-grid, each
/// axis (nodes `-(STENCIL/2 - 1) ..= STENCIL/2` around the node below it).
pub(super) const STENCIL: usize = 8;

/// The split path is taken when an exact footprint would span at least this many rows and
/// columns (`2 R / dy + 3`, i.e. a bandwidth of at least ~0.6 pixel spacings).
pub(super) const MIN_SPLIT_ROWS: f64 = 10.0;

/// The sub-grid may hold up to max(4 x the pixels, this many) values.
pub(super) const SPLIT_MIN_BUDGET: usize = 1 << 23;

/// Particles per task in the split path's partition pass.
pub(super) const PARTITION_CHUNK: usize = 1 << 14;

/// The split path's geometry (see the module documentation): a square sub-grid of spacing
/// `d`, node `(s, u)` at `(x0 + u d, y0 + s d)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SplitPlan {
    pub(super) x0: f64,
    pub(super) y0: f64,
    pub(super) d: f64,
    pub(super) inv_d: f64,
    /// Stored sub-columns a sub-row (a multiple of 8; the last ones may be padding).
    pub(super) stride: usize,
    pub(super) n_sub: usize,
    /// Sub-rows per band, a power of two (a particle belongs to the band of its anchor
    /// sub-row).
    pub(super) band: usize,
    pub(super) n_bands: usize,
}

#[derive(Clone)]
pub(super) struct Split {
    pub(super) plan: SplitPlan,
    /// `n_sub x stride` fixed-point sums, row-major by sub-row; empty (all zero) until
    /// the first deposit.
    pub(super) rows: Vec<i64>,
    /// The folded pixels, computed on the first read after a change.
    pub(super) pixels: OnceLock<Vec<f64>>,
}

impl Split {
    /// Allocate the sub-rows on first use, writing the zeros (in parallel): pages first
    /// touched by the deposit's read-modify-write would fault twice, the second time with a
    /// TLB shoot-down across threads.
    pub(super) fn allocate(&mut self) {
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
    pub(super) fn new(
        extent: &Extent,
        width: usize,
        height: usize,
        bandwidth: f64,
    ) -> Option<SplitPlan> {
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

impl DensityGrid {
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

    pub(super) fn accumulate_split(&mut self, points: &[f32]) {
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
        let deposit =
            |(b, lo, rows): (usize, usize, &mut [i64])| ctx.deposit_band(&parts, b, lo, rows);
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
}

/// The Lagrange basis polynomials of the nodes `k - (STENCIL - 1) / 2` (`k` in
/// `0..STENCIL`, i.e. -3.5 ..= 3.5), in powers of `tau`: `LAGRANGE[n][k]` is the coefficient
/// of `tau^n` in `L_k(tau)` (lane `k` of a Horner evaluation).
pub(super) const LAGRANGE: [[f64; STENCIL]; STENCIL] = {
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
pub(super) fn lagrange(t: f64) -> [f64; STENCIL] {
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
pub(super) struct Parts {
    pub(super) points: Vec<[f32; 2]>,
    pub(super) offsets: Vec<u32>,
}

impl Parts {
    /// Band `b`'s particles, chunk by chunk.
    pub(super) fn band(&self, b: usize, n_bands: usize) -> impl Iterator<Item = &[[f32; 2]]> {
        self.offsets
            .chunks_exact(n_bands + 1)
            .enumerate()
            .map(move |(c, offs)| {
                let base = c * PARTITION_CHUNK;
                &self.points[base + offs[b] as usize..base + offs[b + 1] as usize]
            })
    }

    /// How many particles band `b` has.
    pub(super) fn count(&self, b: usize, n_bands: usize) -> usize {
        self.offsets
            .chunks_exact(n_bands + 1)
            .map(|offs| (offs[b + 1] - offs[b]) as usize)
            .sum()
    }
}

/// What the split path's deposit needs.
pub(super) struct DepositContext {
    pub(super) plan: SplitPlan,
    /// Particles outside `[x_lo, x_hi] x [y_lo, y_hi]` do not reach the grid.
    pub(super) x_lo: f64,
    pub(super) x_hi: f64,
    pub(super) y_lo: f64,
    pub(super) y_hi: f64,
}

impl DepositContext {
    /// `(ix, tx, iy, ty)`: the sub-column and sub-row at or below the particle and its
    /// position (in `[0, 1)`) from there to the next; `None` when it cannot reach the grid
    /// (non-finite points included).
    #[inline(always)]
    pub(super) fn anchor(&self, x: f32, y: f32) -> Option<(usize, f64, usize, f64)> {
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
    pub(super) fn partition(&self, points: &[f32]) -> Parts {
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
    pub(super) fn deposit_band(&self, parts: &Parts, b: usize, lo: usize, rows: &mut [i64]) {
        deposit_band_on(Isa::for_exact_kernels(), self, parts, b, lo, rows);
    }

    #[inline(always)]
    pub(super) fn deposit_band_generic(
        &self,
        parts: &Parts,
        b: usize,
        lo: usize,
        rows: &mut [i64],
    ) {
        let stride = self.plan.stride;
        let below = STENCIL / 2 - 1;
        // The weights of a few particles first, then their stencils: each weight is a
        // chain of dependent multiply-adds, and with the stencil's adds in between the
        // processor could not overlap one particle's chains with the next one's.
        const AHEAD: usize = 8;
        let mut ahead = [(0usize, 0usize, [0.0f64; STENCIL], [0.0f64; STENCIL]); AHEAD];
        for group in parts
            .band(b, self.plan.n_bands)
            .flat_map(|c| c.chunks(AHEAD))
        {
            let mut found = 0;
            for p in group {
                if let Some((ix, tx, iy, ty)) = self.anchor(p[0], p[1]) {
                    ahead[found] = (ix, iy, lagrange(tx), lagrange(ty));
                    found += 1;
                }
            }
            for &(ix, iy, lx, ly) in &ahead[..found] {
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
                        v[q] = add_fixed(v[q], quantize(lk * lx[q]));
                    }
                    *dst = v;
                }
            }
        }
    }
}

isa_dispatch! {
    /// [`DepositContext::deposit_band_generic`] compiled for `isa` (wider multiply-adds; identical
    /// arithmetic, no FMA contraction, so results do not depend on the CPU).
    fn deposit_band_on(split: &DepositContext, parts: &Parts, b: usize, lo: usize, rows: &mut [i64]) {
        Avx512 => split.deposit_band_generic(parts, b, lo, rows),
        Avx2 => split.deposit_band_generic(parts, b, lo, rows),
        Portable => split.deposit_band_generic(parts, b, lo, rows),
    }
}
