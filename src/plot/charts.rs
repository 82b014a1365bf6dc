//! Line and scatter charts for `collapse` and `sweep` (plotters into an RGB buffer, written
//! as a PNG by [`crate::io::write_png`], text in the font of [`crate::plot::font`]).

use crate::error::{Error, Result};
use crate::plot::font::FAMILY;
use plotters::prelude::*;
use std::path::Path;

/// One series: points (x, y) and, optionally, an interval [lo, hi] per point.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub intervals: Option<Vec<(f64, f64)>>,
    /// Join the points with lines (else markers only).
    pub lines: bool,
}

/// A chart: series over shared axes.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis (base 10); x must be > 0.
    pub log_x: bool,
    /// Logarithmic y axis (base 10); y must be > 0.
    pub log_y: bool,
    /// Draw the diagonal y = x (measured against predicted).
    pub diagonal: bool,
    /// Fixed y range; default: the data's range with a margin.
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn range_of(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    (lo <= hi).then_some((lo, hi))
}

fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = if hi > lo {
        0.06 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1e-3)
    };
    (lo - pad, hi + pad)
}

/// Draw `chart` into a `width` × `height` PNG at `path` (written atomically).
pub fn write_png(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<()> {
    crate::plot::font::ensure_registered()?;
    let fx = |x: f64| if chart.log_x { x.log10() } else { x };
    let fy = |y: f64| if chart.log_y { y.log10() } else { y };
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| fx(p.0)));
    let ys = chart.series.iter().flat_map(|s| {
        s.points.iter().map(|p| fy(p.1)).chain(
            s.intervals
                .iter()
                .flat_map(|iv| iv.iter().flat_map(|&(a, b)| [fy(a), fy(b)])),
        )
    });
    let bad = || Error::invalid("chart", "nothing finite to plot");
    let (mut x0, mut x1) = padded(range_of(xs).ok_or_else(bad)?);
    let (mut y0, mut y1) = match chart.y_range {
        Some((a, b)) => (fy(a), fy(b)),
        None => padded(range_of(ys).ok_or_else(bad)?),
    };
    if chart.diagonal {
        // Same range on both axes so that y = x is the diagonal.
        let (lo, hi) = (x0.min(y0), x1.max(y1));
        (x0, x1, y0, y1) = (lo, hi, lo, hi);
    }
    // The legend goes to the corner with the fewest data points.
    let corners = [
        (SeriesLabelPosition::UpperLeft, (0.0, 0.45), (0.55, 1.0)),
        (SeriesLabelPosition::UpperRight, (0.55, 1.0), (0.55, 1.0)),
        (SeriesLabelPosition::LowerLeft, (0.0, 0.45), (0.0, 0.45)),
        (SeriesLabelPosition::LowerRight, (0.55, 1.0), (0.0, 0.45)),
    ];
    let normalised: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|&(x, y)| ((fx(x) - x0) / (x1 - x0), (fy(y) - y0) / (y1 - y0)))
        .collect();
    let legend_corner = corners
        .iter()
        .min_by_key(|(_, (xa, xb), (ya, yb))| {
            normalised
                .iter()
                .filter(|(x, y)| (*xa..=*xb).contains(x) && (*ya..=*yb).contains(y))
                .count()
        })
        .map(|c| c.0.clone())
        .expect("four corners");
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let draw_error =
        |e: &dyn std::fmt::Display| Error::Output(format!("drawing {}: {e}", path.display()));
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(&e))?;
        let mut ctx = ChartBuilder::on(&root)
            .caption(&chart.title, (FAMILY, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| draw_error(&e))?;
        let tick = |log: bool| {
            move |v: &f64| {
                let x = if log { 10f64.powf(*v) } else { *v };
                if x.abs() >= 10.0 && (log || x.abs() >= 100.0) {
                    format!("{x:.0}")
                } else if x != 0.0 && x.abs() < 1e-3 {
                    format!("{x:.0e}")
                } else {
                    let digits = if log { 4 } else { 3 };
                    let text = format!("{x:.digits$}");
                    text.trim_end_matches('0').trim_end_matches('.').to_string()
                }
            }
        };
        let (x_fmt, y_fmt) = (tick(chart.log_x), tick(chart.log_y));
        ctx.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| draw_error(&e))?;
        if chart.diagonal {
            ctx.draw_series(LineSeries::new(
                [(x0, x0), (x1, x1)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(|e| draw_error(&e))?
            .label("measured = predicted")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(150, 150, 150)));
        }
        for (k, s) in chart.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (fx(x), fy(y)))
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            if let Some(iv) = &s.intervals {
                for (&(x, _), &(lo, hi)) in s.points.iter().zip(iv) {
                    if lo.is_finite() && hi.is_finite() {
                        let x = fx(x);
                        ctx.draw_series(std::iter::once(PathElement::new(
                            [(x, fy(lo)), (x, fy(hi))],
                            color.stroke_width(2),
                        )))
                        .map_err(|e| draw_error(&e))?;
                    }
                }
            }
            if s.lines {
                ctx.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|e| draw_error(&e))?;
            }
            ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| draw_error(&e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        }
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FAMILY, 14))
            .position(legend_corner)
            .draw()
            .map_err(|e| draw_error(&e))?;
        root.present().map_err(|e| draw_error(&e))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).expect("buffer of the right size");
    crate::io::write_png(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let chart = Chart {
            title: "test".into(),
            x_label: "N".into(),
            y_label: "fraction".into(),
            log_x: true,
            log_y: false,
            diagonal: false,
            y_range: Some((0.0, 1.0)),
            series: vec![Series {
                label: "D = 2".into(),
                points: vec![(16.0, 0.9), (64.0, 0.5), (256.0, 0.1)],
                intervals: Some(vec![(0.85, 0.95), (0.45, 0.55), (0.05, 0.15)]),
                lines: true,
            }],
        };
        write_png(&chart, &path, 400, 300).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (400, 300));
        // Something other than white was drawn: the series' blue.
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
    }
}
