//! The colorbar of a density figure: ticks placed by the very function that shades the
//! pixels ([`crate::image::norm`]), so that a tick's colour is the colour of its value in
//! the image, with labels that do not overlap.

use crate::image::norm::{normalize, Norm, Shading, Stats};

/// One colorbar tick: where it sits along the bar (`[0, 1]`, the normalized value that
/// gets that colour), the density value there and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct BarTick {
    /// Where along the bar, in [0, 1].
    pub pos: f64,
    /// The density value there.
    pub value: f64,
    /// Its label.
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
