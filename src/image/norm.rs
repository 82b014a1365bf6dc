//! How density values become colours: the norms (linear, log, datashader's `eq_hist`),
//! the statistics they need (min, max, the eq-hist histogram, gathered band by band by
//! [`crate::plot::raster`]) and the colour index of a value. The colorbar's ticks are
//! computed from the same functions ([`crate::plot::colorbar`]).

use crate::image::colormap::{lut_index, Colormap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Bins of the `eq-hist` histogram (datashader's `eq_hist` default, `nbins = 256 * 256`).
pub const EQ_HIST_BINS: usize = 256 * 256;

/// How density values become colours.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// (v - min) / (max - min): the reference tutorial's picture.
    #[default]
    Linear,
    /// log1p(v - min) / log1p(max - min), as datashader's `how="log"`: faint regions
    /// become visible next to sharp peaks.
    Log,
    /// Histogram equalization, as datashader's `eq_hist`: every colour covers about the
    /// same number of pixels.
    EqHist,
}

impl Norm {
    /// The name the options and run.json use.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linear => "linear",
            Norm::Log => "log",
            Norm::EqHist => "eq-hist",
        }
    }
}

/// How a grid is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shading {
    /// The colour table.
    pub colormap: Colormap,
    /// How values map to the table.
    pub norm: Norm,
}

impl Default for Shading {
    fn default() -> Self {
        Shading {
            colormap: Colormap::Coolwarm,
            norm: Norm::Linear,
        }
    }
}

/// Normalization statistics of a grid (finite values only).
#[derive(Debug, Clone)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    /// `eq-hist` only.
    pub eq: Option<EqHist>,
}

/// datashader's `eq_hist` for float data, as a mapping from a value to `[0, 1]`:
/// `d = v - min`; a histogram of `d` with [`EQ_HIST_BINS`] equal bins over `[0, max - min]`
/// (numpy's `histogram` binning); empty bins dropped; the normalized cumulative counts
/// `cdf` interpolated linearly (numpy's `interp`) at `d` between the kept bins' centres;
/// then rescaled from `[min cdf, max cdf]` (datashader's span) to `[0, 1]`. Float grids are
/// not masked (datashader masks only NaN for float aggregates; zero pixels count), so the
/// large empty background takes the low end of the colormap. `rescale_discrete_levels` is
/// off (datashader's default).
#[derive(Debug, Clone)]
pub struct EqHist {
    lo: f64,
    /// `max - min`.
    range: f64,
    /// Centres and cdf values of the kept (non-empty) bins.
    centres: Vec<f64>,
    cdf: Vec<f64>,
    /// For each bin, the index in `centres` of the last kept bin at or below it (or
    /// `usize::MAX` when none).
    last_kept: Vec<usize>,
    span: (f64, f64),
}

impl EqHist {
    /// numpy's bin of `d` in `[0, range]` with `n` equal bins (edges `linspace(0, range,
    /// n + 1)`; the last bin is closed).
    fn bin(&self, d: f64) -> usize {
        bin_of(d, self.range, EQ_HIST_BINS)
    }

    fn interp(&self, v: f64) -> f64 {
        let d = v - self.lo;
        if d.is_nan() {
            return f64::NAN;
        }
        let n = self.centres.len();
        let d = d.clamp(0.0, self.range);
        let mut j = self.last_kept[self.bin(d)];
        // The last kept centre at or below d (the bin's own centre may lie above d).
        while j != usize::MAX && self.centres[j] > d {
            j = if j == 0 { usize::MAX } else { j - 1 };
        }
        if j == usize::MAX {
            return self.cdf[0];
        }
        if j + 1 >= n {
            return self.cdf[n - 1];
        }
        let (x0, x1) = (self.centres[j], self.centres[j + 1]);
        let (f0, f1) = (self.cdf[j], self.cdf[j + 1]);
        let slope = (f1 - f0) / (x1 - x0);
        slope * (d - x0) + f0
    }

    /// `v` mapped to `[0, 1]`.
    pub fn map(&self, v: f64) -> f64 {
        let (a, b) = self.span;
        if b > a {
            (self.interp(v) - a) / (b - a)
        } else {
            0.0
        }
    }
}

/// Bin of `d` among `n` equal bins over `[0, range]` (numpy's rule: `floor(d n / range)`,
/// corrected against the edges `linspace(0, range, n + 1)`, the last bin closed).
fn bin_of(d: f64, range: f64, n: usize) -> usize {
    // NaN ranges included.
    if range.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return 0;
    }
    let edge = |k: usize| {
        if k == n {
            range
        } else {
            k as f64 * (range / n as f64)
        }
    };
    let mut k = ((d * (n as f64 / range)) as usize).min(n - 1);
    if d < edge(k) && k > 0 {
        k -= 1;
    }
    if k + 1 < n && d >= edge(k + 1) {
        k += 1;
    }
    k
}

/// Build the `eq-hist` mapping from a histogram of `d = v - lo` over `[0, range]`.
pub(crate) fn eq_hist_from_counts(lo: f64, range: f64, counts: &[u64]) -> EqHist {
    let n = counts.len();
    let width = range / n as f64;
    let mut centres = Vec::new();
    let mut cdf = Vec::new();
    let mut last_kept = vec![usize::MAX; n];
    let mut total = 0u64;
    for (k, &c) in counts.iter().enumerate() {
        if c > 0 {
            // numpy: (edges[:-1] + edges[1:]) / 2
            let (a, b) = (
                k as f64 * width,
                if k + 1 == n {
                    range
                } else {
                    (k + 1) as f64 * width
                },
            );
            centres.push((a + b) / 2.0);
            total += c;
            cdf.push(total as f64);
        }
        last_kept[k] = if centres.is_empty() {
            usize::MAX
        } else {
            centres.len() - 1
        };
    }
    let norm = total.max(1) as f64;
    cdf.iter_mut().for_each(|v| *v /= norm);
    let mut eq = EqHist {
        lo,
        range,
        centres,
        cdf,
        last_kept,
        span: (0.0, 1.0),
    };
    if eq.centres.is_empty() {
        return eq;
    }
    // datashader's span: the min and max of the equalized values, i.e. at the extremes.
    eq.span = (eq.interp(lo), eq.interp(lo + range));
    eq
}

/// Map a value to `[0, 1]` under `norm` with `stats`.
#[inline]
pub(crate) fn normalize(v: f64, norm: Norm, stats: &Stats) -> f64 {
    let (lo, hi) = (stats.min, stats.max);
    let range = hi - lo;
    if !(range > 0.0 && range.is_finite()) {
        return if v.is_nan() { f64::NAN } else { 0.0 };
    }
    match norm {
        Norm::Linear => (v - lo) * (1.0 / range),
        Norm::Log => (v - lo).max(0.0).ln_1p() / range.ln_1p(),
        Norm::EqHist => stats.eq.as_ref().map_or(0.0, |e| e.map(v)),
    }
}

/// The colour index of each value in `values` under `shading` and `stats` (exposed for
/// tests and for callers that shade their own arrays).
pub fn shade_indices(values: &[f32], norm: Norm, stats: &Stats) -> Vec<usize> {
    values
        .par_iter()
        .map(|&v| lut_index(normalize(v as f64, norm, stats)))
        .collect()
}

/// Statistics of a whole in-memory array (tests, small grids).
pub fn stats_of(values: &[f32], norm: Norm) -> Stats {
    let (min, max) = min_max(values);
    let mut stats = Stats { min, max, eq: None };
    if norm == Norm::EqHist && max > min {
        let mut counts = vec![0u64; EQ_HIST_BINS];
        add_histogram(values, min, max - min, &mut counts);
        stats.eq = Some(eq_hist_from_counts(min, max - min, &counts));
    }
    stats
}

pub(crate) fn min_max(values: &[f32]) -> (f64, f64) {
    let (lo, hi) = values
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                })
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        );
    if lo > hi {
        (0.0, 0.0) // no finite value
    } else {
        (lo as f64, hi as f64)
    }
}

pub(crate) fn add_histogram(values: &[f32], lo: f64, range: f64, counts: &mut [u64]) {
    let n = counts.len();
    let partial = values
        .par_chunks(1 << 18)
        .map(|c| {
            let mut h = vec![0u64; n];
            for &v in c {
                if v.is_finite() {
                    h[bin_of((v as f64 - lo).clamp(0.0, range), range, n)] += 1;
                }
            }
            h
        })
        .reduce(
            || vec![0u64; n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    counts.iter_mut().zip(&partial).for_each(|(x, y)| *x += y);
}
