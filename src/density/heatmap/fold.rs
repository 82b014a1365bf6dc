//! The split path's read: the sub-grid folded through the kernel into pixels, first along
//! y (into one sub-row per pixel row), then along x, eight partial sums a column combined
//! in a fixed order, so that every vector unit gives the same bits.

use super::cutoff_sigmas;
use super::fixed_point::dequantize;
use super::split::{Split, STENCIL};
use super::weights::{gauss_into, square_table};
use super::DensityGrid;
use crate::isa::{isa_dispatch, Isa};
use rayon::prelude::*;

impl DensityGrid {
    /// The pixels of a split store: `pixel(r, j) = sum_s gy(y_r - y_s) T[s][j]` over the
    /// non-zero sub-rows within `R + STENCIL d` of `y_r`, in increasing `s`, `T` the integer
    /// sums converted to f64 (so the pixels depend on the sums only, not on their history).
    pub(super) fn fold(&self, split: &Split) -> Vec<f64> {
        let mut out = vec![0.0; self.width * self.height];
        self.fold_rows(split, 0, &mut out);
        out
    }

    /// [`fold`](Self::fold) of the rows `r0..` that `out` holds (each row's value depends on
    /// that row only: a band equals the same rows of the whole fold, bit for bit).
    pub(super) fn fold_rows(&self, split: &Split, r0: usize, out: &mut [f64]) {
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
}

/// `row[j] = sum_k wx[j len + k] acc[starts[j] + k]`: the fold along x, eight partial sums
/// a column combined in a fixed order (the same on every vector unit).
pub(super) fn columns_row(row: &mut [f64], acc: &[f64], starts: &[usize], wx: &[f64], len: usize) {
    columns_row_on(Isa::for_exact_kernels(), row, acc, starts, wx, len);
}

isa_dispatch! {
    /// [`columns_row_generic`] compiled for `isa` (wider adds; the same arithmetic).
    fn columns_row_on(row: &mut [f64], acc: &[f64], starts: &[usize], wx: &[f64], len: usize) {
        Avx512 => columns_row_generic(row, acc, starts, wx, len),
        Avx2 => columns_row_generic(row, acc, starts, wx, len),
        Portable => columns_row_generic(row, acc, starts, wx, len),
    }
}

#[inline(always)]
pub(super) fn columns_row_generic(
    row: &mut [f64],
    acc: &[f64],
    starts: &[usize],
    wx: &[f64],
    len: usize,
) {
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
pub(super) fn fold_row(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
    fold_row_on(Isa::for_exact_kernels(), row, rows, picked);
}

isa_dispatch! {
    /// [`fold_row_generic`] compiled for `isa` (wider multiply-adds; the same arithmetic).
    fn fold_row_on(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
        Avx512 => fold_row_generic(row, rows, picked),
        Avx2 => fold_row_generic(row, rows, picked),
        Portable => fold_row_generic(row, rows, picked),
    }
}

#[inline(always)]
pub(super) fn fold_row_generic(row: &mut [f64], rows: &[f64], picked: &[(usize, f64)]) {
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
