//! Density images of any size: a density grid read band by band, written as the f32 raw
//! grid (`.npy`, row 0 = top, with a JSON sidecar), an RGB PNG through a normalization and
//! a colormap, and optionally a 16-bit grayscale PNG of the raw density.
//!
//! Memory is bounded by a band of rows, whatever the image size: the values of a band are
//! computed ([`DensityGrid::read_rows`]), rounded to f32 and either kept (images up to
//! [`IN_MEMORY_PIXELS`]) or streamed to the `.npy` file (to a hidden temporary file when no
//! `.npy` was asked for), then read back for the statistics the normalization needs (min
//! and max; the histogram of `eq-hist`) and once more to shade the PNG rows, which go
//! through a streaming PNG encoder. The picture is a function of the f32 grid only, so a
//! grid written to `.npy` and rendered again gives the same PNG bytes.

use crate::density::heatmap::DensityGrid;
use crate::error::{Error, Result};
use crate::image::colormap::{lut_index, Colormap};
use crate::image::grid_file::{meta_extent, GridFile, GridMeta};
use crate::io::AtomicFile;
use image::ImageEncoder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Grids up to this many pixels (4096 x 4096) are kept in memory as f32 between passes;
/// larger ones are streamed to disk and read back band by band.
pub const IN_MEMORY_PIXELS: usize = 1 << 24;

/// Pixels per band (rows of the band = this / width, at least one).
const BAND_PIXELS: usize = 1 << 22;

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
    pub colormap: Colormap,
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

/// Something that produces rows of a grid (row 0 = top) as f64.
pub trait RowSource: Sync {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// Rows `r0..` (as many as `out` holds).
    fn read_rows(&self, r0: usize, out: &mut [f64]) -> Result<()>;
}

impl RowSource for DensityGrid {
    fn width(&self) -> usize {
        DensityGrid::width(self)
    }
    fn height(&self) -> usize {
        DensityGrid::height(self)
    }
    fn read_rows(&self, r0: usize, out: &mut [f64]) -> Result<()> {
        DensityGrid::read_rows(self, r0, out);
        Ok(())
    }
}

/// Where a grid's files go; `None` skips a file.
#[derive(Debug, Clone, Default)]
pub struct GridOutputs {
    /// The RGB image.
    pub png: Option<PathBuf>,
    /// The 16-bit grayscale image of the raw density: `round(65535 v / max)`.
    pub png16: Option<PathBuf>,
    /// The f32 grid (`.npy`, row 0 = top); its sidecar is the same path with `.json`.
    pub npy: Option<PathBuf>,
    /// A framed figure of the RGB image (see [`FigureRequest`]).
    pub figure: Option<FigureRequest>,
}

/// A framed figure ([`crate::plot::figure::Figure`]) of a grid's RGB image, drawn from the very
/// colours of the PNG while its rows are streamed (so it shows the PNG's norm, colormap and
/// kernel exactly, bilinearly resampled into the plot area), with a colorbar whose ticks
/// follow the norm ([`colorbar`]). Memory: a [`crate::plot::figure::PlotCapture`], bounded by the
/// figure's size whatever the image's.
#[derive(Debug, Clone, Default)]
pub struct FigureRequest {
    pub path: PathBuf,
    /// Total size in pixels (each side in `figure::MIN_SIDE..=figure::MAX_SIDE`).
    pub size: (u32, u32),
    /// `\n` separates lines.
    pub title: String,
    /// What the values are, for the colorbar's label (e.g. `density`).
    pub quantity: String,
    /// Points to mark with rings (data coordinates).
    pub markers: Vec<(f64, f64)>,
}

impl GridOutputs {
    /// The file names written, in order.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(p) = &self.png {
            out.extend(name(p));
        }
        if let Some(p) = &self.npy {
            out.extend(name(p));
            out.extend(name(&p.with_extension("json")));
        }
        if let Some(p) = &self.png16 {
            out.extend(name(p));
        }
        if let Some(f) = &self.figure {
            out.extend(name(&f.path));
        }
        out
    }
}

/// The f32 values between passes: in memory, or in a file (the `.npy` being written, or a
/// scratch file) at `offset`.
enum Values {
    Memory(Vec<f32>),
    File { file: File, offset: u64 },
}

impl Values {
    fn read_band(
        &mut self,
        width: usize,
        r0: usize,
        out: &mut Vec<f32>,
        rows: usize,
    ) -> Result<()> {
        out.resize(rows * width, 0.0);
        match self {
            Values::Memory(v) => out.copy_from_slice(&v[r0 * width..(r0 + rows) * width]),
            Values::File { file, offset } => {
                let at = *offset + (r0 * width * 4) as u64;
                let mut bytes = vec![0u8; rows * width * 4];
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| Error::Output(format!("reading back the density grid: {e}")))?;
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
        }
        Ok(())
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
fn eq_hist_from_counts(lo: f64, range: f64, counts: &[u64]) -> EqHist {
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
fn normalize(v: f64, norm: Norm, stats: &Stats) -> f64 {
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

/// One colorbar tick: where it sits along the bar (`[0, 1]`, the normalized value that
/// gets that colour), the density value there and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct BarTick {
    pub pos: f64,
    pub value: f64,
    pub label: String,
}

/// Ticks closer than this (a fraction of the bar) would overlap their labels.
const MIN_TICK_GAP: f64 = 0.06;

/// The colorbar ticks of `norm` with `stats`: positions are computed by the very function
/// that shades the pixels, so a tick's colour is the colour of its value in the image.
///
/// - linear: nice values (1, 2, 2.5, 5 × 10^k steps) between min and max;
/// - log (`log1p(v - min) / log1p(max - min)`): `min` and `min + 10^k` (with 2 and 5 ×
///   10^k while fewer than three decades fit; nice linear steps under a range of 10, where
///   log1p is nearly linear), thinned so that labels do not overlap;
/// - eq-hist: positions 0, 0.25, 0.5, 0.75 and 1 labelled with the smallest value that maps
///   at or above them, found by bisection (the equalization is monotone but has no closed
///   inverse).
///
/// A constant grid (all one colour) gets one tick at the bottom.
pub fn colorbar_ticks(norm: Norm, stats: &Stats) -> Vec<BarTick> {
    let (lo, hi) = (stats.min, stats.max);
    let range = hi - lo;
    if !(range > 0.0 && range.is_finite()) {
        return vec![BarTick {
            pos: 0.0,
            value: lo,
            label: crate::plot::figure::format_tick(lo, 0.0),
        }];
    }
    let at = |value: f64, step: f64| BarTick {
        pos: normalize(value, norm, stats).clamp(0.0, 1.0),
        value,
        label: crate::plot::figure::format_tick(value, step),
    };
    // A label precise enough to tell a value from its neighbours: 3 significant digits.
    let sig = |v: f64| {
        if v == 0.0 {
            0.0
        } else {
            10f64.powf(v.abs().log10().floor() - 2.0)
        }
    };
    let mut ticks: Vec<BarTick> = match norm {
        Norm::Linear => {
            let (values, step) = crate::plot::figure::nice_ticks(lo, hi, 6);
            values.into_iter().map(|v| at(v, step)).collect()
        }
        Norm::Log => {
            let offsets: Vec<(f64, f64)> = if range < 10.0 {
                let (d, step) = crate::plot::figure::nice_ticks(0.0, range, 5);
                d.into_iter().map(|d| (d, step)).collect()
            } else {
                let top = range.log10().floor() as i32;
                let decades = top + 1;
                let mults: &[f64] = if decades < 3 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                let mut d = vec![(0.0, if lo == 0.0 { 1.0 } else { sig(lo) })];
                for k in 0..=top {
                    let p = 10f64.powi(k);
                    d.extend(
                        mults
                            .iter()
                            .map(|m| (m * p, p))
                            .filter(|(v, _)| *v <= range),
                    );
                }
                d
            };
            let mut ticks: Vec<BarTick> = offsets
                .into_iter()
                .map(|(d, step)| at(lo + d, step))
                .collect();
            // Keep the largest ticks (the decades the eye reads first) and the bottom one.
            ticks.sort_by(|a, b| b.pos.total_cmp(&a.pos));
            let mut kept: Vec<BarTick> = Vec::new();
            let bottom = ticks.pop();
            for t in ticks {
                if kept.last().is_none_or(|k| k.pos - t.pos >= MIN_TICK_GAP) {
                    kept.push(t);
                }
            }
            if let Some(b) = bottom {
                if kept.last().is_some_and(|k| k.pos - b.pos < MIN_TICK_GAP) {
                    kept.pop();
                }
                kept.push(b);
            }
            kept.reverse();
            kept
        }
        Norm::EqHist => [0.0, 0.25, 0.5, 0.75, 1.0]
            .into_iter()
            .map(|p| {
                let v = inverse_of_norm(p, norm, stats);
                BarTick {
                    pos: p,
                    value: v,
                    label: crate::plot::figure::format_tick(v, sig(v)),
                }
            })
            .collect(),
    };
    // Equal labels (values closer than the labels' digits) would read as one value twice.
    ticks.dedup_by(|b, a| a.label == b.label);
    ticks
}

/// The smallest value in `[stats.min, stats.max]` that `norm` maps at or above `p`, by
/// bisection (to f64 precision; every norm is monotone in the value).
pub fn inverse_of_norm(p: f64, norm: Norm, stats: &Stats) -> f64 {
    let (mut a, mut b) = (stats.min, stats.max);
    if normalize(a, norm, stats) >= p {
        return a;
    }
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if normalize(m, norm, stats) >= p {
            b = m;
        } else {
            a = m;
        }
    }
    b
}

/// The colorbar of `shading` with `stats`: [`colorbar_ticks`], labelled with `quantity`
/// and the norm.
pub fn colorbar(shading: Shading, stats: &Stats, quantity: &str) -> crate::plot::figure::Colorbar {
    let how = match shading.norm {
        Norm::Linear => "linear",
        Norm::Log => "log: log1p(v − min)",
        Norm::EqHist => "eq-hist: equal pixel counts",
    };
    crate::plot::figure::Colorbar {
        colormap: shading.colormap,
        ticks: colorbar_ticks(shading.norm, stats)
            .into_iter()
            .map(|t| (t.pos, t.label))
            .collect(),
        label: format!("{quantity} ({how})"),
    }
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

fn min_max(values: &[f32]) -> (f64, f64) {
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

fn add_histogram(values: &[f32], lo: f64, range: f64, counts: &mut [u64]) {
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

/// Write `source` (a `width x height` grid described by `meta`) as `outputs`, shaded with
/// `shading`. Every file is written under a temporary name and renamed into place only once
/// all of them are complete; on failure none is left behind. Returns the grid's metadata
/// with its min and max filled in.
pub fn write_grid_outputs(
    source: &dyn RowSource,
    meta: GridMeta,
    shading: Shading,
    outputs: &GridOutputs,
) -> Result<GridMeta> {
    write_grid_outputs_banded(source, meta, shading, outputs, BandLimits::default())
}

/// How [`write_grid_outputs`] splits its work (tests shrink these to exercise the
/// streamed path on small grids).
#[derive(Debug, Clone, Copy)]
pub struct BandLimits {
    /// Grids of at most this many pixels stay in memory between passes.
    pub in_memory_pixels: usize,
    /// Pixels per band.
    pub band_pixels: usize,
}

impl Default for BandLimits {
    fn default() -> Self {
        BandLimits {
            in_memory_pixels: IN_MEMORY_PIXELS,
            band_pixels: BAND_PIXELS,
        }
    }
}

/// [`write_grid_outputs`] with explicit band limits.
pub fn write_grid_outputs_banded(
    source: &dyn RowSource,
    mut meta: GridMeta,
    shading: Shading,
    outputs: &GridOutputs,
    limits: BandLimits,
) -> Result<GridMeta> {
    let (w, h) = (source.width(), source.height());
    let rows_per_band = (limits.band_pixels / w.max(1)).max(1);
    let in_memory = w * h <= limits.in_memory_pixels;
    if let Some(f) = &outputs.figure {
        // Checked before any work: the figure is drawn last.
        let sides = [f.size.0, f.size.1];
        if sides
            .iter()
            .any(|s| !(crate::plot::figure::MIN_SIDE..=crate::plot::figure::MAX_SIDE).contains(s))
        {
            return Err(Error::invalid(
                "--figure-size",
                format!(
                    "each side must be in {}..={} pixels, got {}x{}",
                    crate::plot::figure::MIN_SIDE,
                    crate::plot::figure::MAX_SIDE,
                    f.size.0,
                    f.size.1
                ),
            ));
        }
    }

    // Pass 1: the f32 values, band by band, into memory or into the .npy (or scratch) file.
    let header = crate::io::npy_header("<f4", &[h as u64, w as u64]);
    let mut npy_file = match &outputs.npy {
        Some(p) => Some(AtomicFile::create(p)?),
        None => None,
    };
    let mut scratch: Option<AtomicFile> = None;
    let mut memory: Vec<f32> = Vec::new();
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    {
        if let Some(f) = npy_file.as_mut() {
            f.write(|w| w.write_all(&header))?;
        } else if !in_memory {
            let base = outputs
                .png
                .as_ref()
                .or(outputs.png16.as_ref())
                .or(outputs.figure.as_ref().map(|f| &f.path))
                .ok_or_else(|| Error::Output("no output asked for".into()))?;
            let mut name = base.file_name().unwrap_or_default().to_os_string();
            name.push(".grid");
            scratch = Some(AtomicFile::create(&base.with_file_name(name))?);
        }
        if in_memory {
            memory.reserve_exact(w * h);
        }
        let mut band = vec![0.0f64; rows_per_band * w];
        let mut bytes = Vec::new();
        for r0 in (0..h).step_by(rows_per_band) {
            let rows = rows_per_band.min(h - r0);
            let band = &mut band[..rows * w];
            source.read_rows(r0, band)?;
            let vals: Vec<f32> = band.par_iter().map(|&v| v as f32).collect();
            let (a, b) = min_max(&vals);
            if a <= b && vals.iter().any(|v| v.is_finite()) {
                lo = lo.min(a as f32);
                hi = hi.max(b as f32);
            }
            let sink = npy_file.as_mut().or(scratch.as_mut());
            if let Some(f) = sink {
                bytes.clear();
                bytes.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
                f.write(|w| w.write_all(&bytes))?;
            }
            if in_memory {
                memory.extend_from_slice(&vals);
            }
        }
    }
    let (min, max) = if lo <= hi {
        (lo as f64, hi as f64)
    } else {
        (0.0, 0.0)
    };
    meta.min = min;
    meta.max = max;
    let mut values = if in_memory {
        Values::Memory(memory)
    } else {
        let (f, offset) = match (npy_file.as_mut(), scratch.as_mut()) {
            (Some(f), _) => (f, header.len() as u64),
            (None, Some(f)) => (f, 0),
            (None, None) => unreachable!("a file holds the values"),
        };
        f.write(|w| w.flush())?;
        let file = File::open(f.temp_path()).map_err(|e| Error::io(f.temp_path(), e))?;
        Values::File { file, offset }
    };

    // Pass 2 (eq-hist only): the histogram.
    let mut stats = Stats { min, max, eq: None };
    let shaded = outputs.png.is_some() || outputs.figure.is_some();
    if shading.norm == Norm::EqHist && max > min && shaded {
        let mut counts = vec![0u64; EQ_HIST_BINS];
        let mut buf = Vec::new();
        for r0 in (0..h).step_by(rows_per_band) {
            let rows = rows_per_band.min(h - r0);
            values.read_band(w, r0, &mut buf, rows)?;
            add_histogram(&buf, min, max - min, &mut counts);
        }
        stats.eq = Some(eq_hist_from_counts(min, max - min, &counts));
    }

    // Pass 3: the PNG rows (and the 16-bit ones), band by band through streaming encoders.
    // A figure keeps the RGB pixels its plot area reads from the same rows.
    let figure = match &outputs.figure {
        Some(req) => {
            let e = meta_extent(&meta)?;
            let fig = crate::plot::figure::Figure {
                title: req.title.clone(),
                colorbar: Some(colorbar(shading, &stats, &req.quantity)),
                ..crate::plot::figure::Figure::new(None, e)
            };
            let (_, _, pw, ph) = fig.layout(req.size.0, req.size.1).plot;
            let capture =
                crate::plot::figure::PlotCapture::new(w, h, pw.max(1) as usize, ph.max(1) as usize);
            Some((req, fig, capture))
        }
        None => None,
    };
    let mut capture = figure.as_ref().map(|(_, _, c)| c.clone());
    let lut = shading.colormap.lut();
    let (norm, stats_ref) = (shading.norm, &stats);
    let mut shade_band = |r0: usize, rows: usize, bytes: &mut Vec<u8>| -> Result<()> {
        let mut buf = Vec::new();
        values.read_band(w, r0, &mut buf, rows)?;
        bytes.resize(buf.len() * 3, 0);
        bytes
            .par_chunks_mut(3)
            .zip(buf.par_iter())
            .for_each(|(px, &v)| {
                px.copy_from_slice(&lut[lut_index(normalize(v as f64, norm, stats_ref))])
            });
        if let Some(c) = capture.as_mut() {
            c.add_rows(r0, bytes);
        }
        Ok(())
    };
    let mut png = match &outputs.png {
        Some(p) => Some(AtomicFile::create(p)?),
        None => None,
    };
    if let Some(f) = png.as_mut() {
        stream_png(
            f,
            w,
            h,
            rows_per_band,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            &mut shade_band,
        )?;
    } else if figure.is_some() {
        let mut bytes = Vec::new();
        for r0 in (0..h).step_by(rows_per_band) {
            shade_band(r0, rows_per_band.min(h - r0), &mut bytes)?;
        }
    }
    let figure_file = match (figure, capture) {
        (Some((req, mut fig, _)), Some(capture)) => {
            let plot = capture.finish();
            drop(capture);
            fig.plot_pixels = Some(&plot);
            fig.markers = &req.markers;
            let img = fig.render(req.size.0, req.size.1)?;
            let mut f = AtomicFile::create(&req.path)?;
            let path = f.path().to_path_buf();
            image::codecs::png::PngEncoder::new(f.writer()?)
                .write_image(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| Error::Output(format!("{}: {e}", path.display())))?;
            Some(f)
        }
        _ => None,
    };
    let mut png16 = match &outputs.png16 {
        Some(p) => Some(AtomicFile::create(p)?),
        None => None,
    };
    if let Some(f) = png16.as_mut() {
        let scale = if max > 0.0 { 65535.0 / max } else { 0.0 };
        stream_png(
            f,
            w,
            h,
            rows_per_band,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            |r0, rows, bytes| {
                let mut buf = Vec::new();
                values.read_band(w, r0, &mut buf, rows)?;
                bytes.resize(buf.len() * 2, 0);
                bytes
                    .par_chunks_mut(2)
                    .zip(buf.par_iter())
                    .for_each(|(px, &v)| {
                        let g = (v as f64 * scale).round().clamp(0.0, 65535.0);
                        let g = if g.is_nan() { 0 } else { g as u16 };
                        px.copy_from_slice(&g.to_be_bytes()); // PNG samples are big-endian
                    });
                Ok(())
            },
        )?;
    }
    drop(values);
    drop(scratch);
    // Everything is complete: rename into place (the sidecar last, once its grid is there).
    if let Some(f) = png {
        f.commit()?;
    }
    if let Some(f) = png16 {
        f.commit()?;
    }
    if let Some(f) = figure_file {
        f.commit()?;
    }
    if let Some(f) = npy_file {
        let path = f.path().to_path_buf();
        f.commit()?;
        crate::io::write_json(&path.with_extension("json"), &meta)?;
    }
    Ok(meta)
}

/// Encode a `w x h` PNG into `file`, band by band: `fill(r0, rows, bytes)` writes the
/// samples of rows `r0..r0 + rows` into `bytes`.
fn stream_png(
    file: &mut AtomicFile,
    w: usize,
    h: usize,
    rows_per_band: usize,
    color: png::ColorType,
    depth: png::BitDepth,
    mut fill: impl FnMut(usize, usize, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let path = file.path().to_path_buf();
    let err = |e: png::EncodingError| match e {
        png::EncodingError::IoError(io) => Error::io(&path, io),
        other => Error::Output(format!("{}: {other}", path.display())),
    };
    let mut enc = png::Encoder::new(file.writer()?, w as u32, h as u32);
    enc.set_color(color);
    enc.set_depth(depth);
    let mut writer = enc.write_header().map_err(err)?;
    {
        let mut stream = writer.stream_writer().map_err(err)?;
        let mut bytes = Vec::new();
        for r0 in (0..h).step_by(rows_per_band) {
            let rows = rows_per_band.min(h - r0);
            bytes.clear();
            fill(r0, rows, &mut bytes)?;
            stream.write_all(&bytes).map_err(|e| Error::io(&path, e))?;
        }
        stream.finish().map_err(err)?;
    }
    writer.finish().map_err(err)
}

/// Write a density grid as `DIR/NAME.png`, `DIR/NAME_density.npy` (f32, row 0 = top) with
/// its sidecar `NAME_density.json`, with `png16` `DIR/NAME_gray16.png`, with `raw` the
/// integer sums `NAME_density_raw.npy` + `NAME_density_raw.json` (what `memodiff merge`
/// adds up, [`crate::image::grid_file`]) and with `figure` a framed figure drawn from the
/// PNG's own colours. Large grids are written band by band. Returns the names written.
pub fn write_named(
    dir: &Path,
    name: &str,
    grid: &DensityGrid,
    shading: Shading,
    png16: bool,
    raw: bool,
    figure: Option<FigureRequest>,
) -> Result<Vec<String>> {
    let outputs = GridOutputs {
        png: Some(dir.join(format!("{name}.png"))),
        png16: png16.then(|| dir.join(format!("{name}_gray16.png"))),
        npy: Some(dir.join(format!("{name}_density.npy"))),
        figure,
    };
    write_grid_outputs(grid, GridMeta::of(grid), shading, &outputs)?;
    let mut names = outputs.names();
    if raw {
        let raw = format!("{name}_density_raw.npy");
        crate::image::grid_file::write_raw(&dir.join(&raw), grid)?;
        names.extend([raw, format!("{name}_density_raw.json")]);
    }
    Ok(names)
}

/// The rows an empty direct-path grid would hold for `points`, computed band by band
/// ([`DensityGrid::rows_of_points`]): large histogram and small-bandwidth images in memory
/// bounded by a band.
pub struct PointRows<'a> {
    pub grid: &'a DensityGrid,
    pub points: &'a [f32],
}

impl RowSource for PointRows<'_> {
    fn width(&self) -> usize {
        self.grid.width()
    }
    fn height(&self) -> usize {
        self.grid.height()
    }
    fn read_rows(&self, r0: usize, out: &mut [f64]) -> Result<()> {
        self.grid.rows_of_points(self.points, r0, out);
        Ok(())
    }
}

/// A sum of density grids of one shape: row sources (particle grids, read band by band)
/// and f32 grid files.
pub struct GridSum<'a> {
    pub width: usize,
    pub height: usize,
    pub parts: Vec<&'a dyn RowSource>,
    pub files: Vec<GridFile>,
}

impl RowSource for GridSum<'_> {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn read_rows(&self, r0: usize, out: &mut [f64]) -> Result<()> {
        out.fill(0.0);
        let mut band = vec![0.0; out.len()];
        for g in &self.parts {
            g.read_rows(r0, &mut band)?;
            out.iter_mut().zip(&band).for_each(|(o, v)| *o += v);
        }
        for f in &self.files {
            f.add_rows(r0, out)?;
        }
        Ok(())
    }
}
