//! Framed figures a person reads: an image (or an empty white field) over a data extent,
//! with a title, x/y axis ticks and labels, an optional colorbar with its scale, training
//! point markers and arrows (quiver plots).
//!
//! The API does not care how the image was shaded: the caller passes the RGB pixels, the
//! extent they cover and, for the colorbar, the colormap and where its tick labels go
//! (positions in [0, 1] along the bar). [`Colorbar::linear`] and [`Colorbar::log10`] build
//! the ticks of plain linear and log10 scales; `crate::plot::colorbar::colorbar` those of the density
//! images' norms (linear, log1p, eq-hist). An image too large to hold is drawn through a
//! [`PlotCapture`], which keeps only the pixels the plot area reads.
//!
//! Layout (tick values, where they land) is computed by pure functions ([`nice_ticks`],
//! [`axis_ticks`]) that the tests check; plotters only rasterizes text and shapes, with
//! the font of [`crate::plot::font`].

use crate::density::extent::Extent;
use crate::error::{Error, Result};
use crate::image::colormap::Colormap;
use crate::plot::font::FAMILY;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Smallest and largest total figure side, in pixels: below the minimum the labels do not
/// fit; the maximum bounds memory (3 bytes a pixel).
pub const MIN_SIDE: u32 = 160;
pub const MAX_SIDE: u32 = 8192;

/// One tick of an axis or colorbar: its value, where it lands (pixels along the axis, or
/// a position in [0, 1] along a colorbar) and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub at: f64,
    pub label: String,
}

/// "Nice" tick values in `[lo, hi]`: multiples of a step of 1, 2, 2.5 or 5 times a power of
/// ten, the smallest such step that gives at most `max_count` ticks, in increasing order.
/// At least 2 ticks always: when no step gives between 2 and `max_count` (a budget of 2
/// on an interval like [-3, 3]), the coarsest step with 2 or more. Returns the values
/// and the step.
pub fn nice_ticks(lo: f64, hi: f64, max_count: usize) -> (Vec<f64>, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        let v = if lo.is_finite() { lo } else { 0.0 };
        return (vec![v], 0.0);
    }
    let max_count = max_count.max(2) as f64;
    let count = |step: f64| (hi / step + 1e-9).floor() - (lo / step - 1e-9).ceil() + 1.0;
    // From well below the spacing of max_count ticks upwards, steps in increasing order.
    let mut decade = 10f64.powf(((hi - lo) / max_count).log10().floor() - 1.0);
    let mut last_with_two = None;
    let step = 'search: loop {
        for m in [1.0, 2.0, 2.5, 5.0] {
            let step = m * decade;
            let n = count(step);
            if n < 2.0 {
                // Coarser steps only give fewer: take the last one with two ticks.
                break 'search last_with_two.unwrap_or(step);
            }
            last_with_two = Some(step);
            if n <= max_count {
                break 'search step;
            }
        }
        decade *= 10.0;
    };
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let values = (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            // Snap exact multiples to their decimal form (0.1 * 3 = 0.30000000000000004).
            let snapped = format!("{:.12e}", v).parse::<f64>().unwrap_or(v);
            if snapped == 0.0 {
                0.0
            } else {
                snapped
            }
        })
        .collect();
    (values, step)
}

/// A tick label for `v` on a scale of ticks `step` apart: as many decimals as the step
/// needs, scientific notation for very large or very small magnitudes.
pub fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs();
    if !(1e-4..1e6).contains(&mag) || (step > 0.0 && step < 1e-4) {
        // Significant digits the step needs, relative to the value's own magnitude.
        let digits = if step > 0.0 {
            ((mag.log10().floor() - step.log10().floor()).max(0.0) as usize).min(6)
        } else {
            2
        };
        return format!("{v:.digits$e}");
    }
    let decimals = if step > 0.0 {
        let d = -(step.log10().floor());
        // 2.5 x 10^k needs one more decimal than 10^k.
        let mantissa = step / 10f64.powf(step.log10().floor());
        let extra = if (mantissa - 2.5).abs() < 1e-9 {
            1.0
        } else {
            0.0
        };
        (d + extra).max(0.0) as usize
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        s
    }
}

/// Ticks of an axis from value `lo` at pixel `pixel_lo` to value `hi` at pixel `pixel_hi`
/// (a y axis passes its bottom pixel as `pixel_lo`: values increase upwards, pixels
/// downwards). At most `max_count` ticks; `at` is the pixel of each.
pub fn axis_ticks(lo: f64, hi: f64, pixel_lo: f64, pixel_hi: f64, max_count: usize) -> Vec<Tick> {
    let (values, step) = nice_ticks(lo, hi, max_count);
    values
        .into_iter()
        .map(|v| Tick {
            value: v,
            at: pixel_lo + (v - lo) / (hi - lo) * (pixel_hi - pixel_lo),
            label: format_tick(v, step),
        })
        .collect()
}

/// A colorbar: the colormap from its first colour (bottom) to its last (top), and tick
/// labels at positions in [0, 1] along it.
#[derive(Debug, Clone, PartialEq)]
pub struct Colorbar {
    /// The colour table.
    pub colormap: Colormap,
    /// (position along the bar in [0, 1], 0 = bottom = first colour; label)
    pub ticks: Vec<(f64, String)>,
    /// The label along the bar.
    pub label: String,
}

impl Colorbar {
    /// The bar of a linear normalization from `vmin` (position 0) to `vmax` (1), with nice
    /// tick values between them.
    pub fn linear(colormap: Colormap, vmin: f64, vmax: f64, label: impl Into<String>) -> Self {
        let ticks = if vmax > vmin && vmin.is_finite() && vmax.is_finite() {
            let (values, step) = nice_ticks(vmin, vmax, 6);
            values
                .into_iter()
                .map(|v| ((v - vmin) / (vmax - vmin), format_tick(v, step)))
                .collect()
        } else {
            // A constant image maps to the first colour: one tick at the bottom.
            vec![(0.0, format_tick(vmin, 0.0))]
        };
        Colorbar {
            colormap,
            ticks,
            label: label.into(),
        }
    }

    /// The bar of a log10 normalization from `vmin` (position 0) to `vmax` (1), both > 0,
    /// with a tick at each power of ten between them (labelled `1e-3` ... as the values).
    pub fn log10(colormap: Colormap, vmin: f64, vmax: f64, label: impl Into<String>) -> Self {
        let mut ticks = Vec::new();
        if vmin > 0.0 && vmax > vmin && vmax.is_finite() {
            let (lo, hi) = (vmin.log10(), vmax.log10());
            let mut k = (lo - 1e-9).ceil() as i32;
            while (k as f64) <= hi + 1e-9 {
                let label = match k {
                    0 => "1".to_string(),
                    1 => "10".to_string(),
                    -1 => "0.1".to_string(),
                    _ => format!("1e{k}"),
                };
                ticks.push((((k as f64) - lo) / (hi - lo), label));
                k += 1;
            }
        }
        Colorbar {
            colormap,
            ticks,
            label: label.into(),
        }
    }
}

/// An arrow in data coordinates, from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrow {
    pub from: (f64, f64),
    pub to: (f64, f64),
}

/// Everything a framed figure shows. `image` covers `extent` (its first row at the top,
/// y = ymax, its pixel centres spread from edge to edge as the density grids' are); `None`
/// leaves the plot area white.
#[derive(Debug, Clone)]
pub struct Figure<'a> {
    /// The image in the plot area, or `None` for white.
    pub image: Option<&'a RgbImage>,
    /// The rectangle of the plane the plot area shows.
    pub extent: Extent,
    /// The title; `\n` separates lines.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// A colorbar right of the plot area.
    pub colorbar: Option<Colorbar>,
    /// Training points (x, y), drawn as rings; points outside the extent are left out.
    pub markers: &'a [(f64, f64)],
    /// Arrows in data coordinates, drawn over the image.
    pub arrows: &'a [Arrow],
    /// The plot area's pixels, already resampled from an image too large to hold (see
    /// `PlotCapture`); exactly `layout(width, height).plot` in size. Drawn instead of
    /// `image` when given.
    pub plot_pixels: Option<&'a RgbImage>,
}

/// Where the parts of a figure go, in pixels of the whole figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Plot area: left, top, width, height.
    pub plot: (i32, i32, i32, i32),
    /// Colorbar: left, top, width, height (zero width without a colorbar).
    pub bar: (i32, i32, i32, i32),
    pub font_px: f64,
}

impl<'a> Figure<'a> {
    /// A figure with no labels, colorbar, markers or arrows.
    pub fn new(image: Option<&'a RgbImage>, extent: Extent) -> Self {
        Figure {
            image,
            extent,
            title: String::new(),
            x_label: "x".into(),
            y_label: "y".into(),
            colorbar: None,
            markers: &[],
            arrows: &[],
            plot_pixels: None,
        }
    }

    /// Where the plot area and colorbar go in a `width` x `height` figure: the plot area
    /// keeps the extent's aspect ratio (one data unit is as long on both axes), centred in
    /// the room the title, labels and colorbar leave.
    pub fn layout(&self, width: u32, height: u32) -> Layout {
        let (w, h) = (width as f64, height as f64);
        let font_px = (w.min(h) / 34.0).clamp(10.0, 28.0);
        let f = font_px;
        // Room for the y tick labels (up to ~6 characters) and the rotated y label.
        let left = f * 5.2;
        let right_pad = f * 1.0;
        let lines = self.title.lines().count() as f64;
        let top = if lines == 0.0 {
            f
        } else {
            f * (1.2 + 1.45 * lines)
        };
        let bottom = f * 3.4;
        let bar_room = if self.colorbar.is_some() {
            // gap + bar + tick labels + rotated label
            f * 1.2 + f * 1.2 + f * 5.0 + f * 1.6
        } else {
            0.0
        };
        let avail_w = (w - left - right_pad - bar_room).max(8.0);
        let avail_h = (h - top - bottom).max(8.0);
        let e = &self.extent;
        let aspect = (e.xmax - e.xmin) / (e.ymax - e.ymin);
        let (pw, ph) = if avail_w / avail_h > aspect {
            (avail_h * aspect, avail_h)
        } else {
            (avail_w, avail_w / aspect)
        };
        let total_w = pw + bar_room;
        let x0 = left + ((w - left - right_pad) - total_w).max(0.0) / 2.0;
        let y0 = top + (avail_h - ph) / 2.0;
        let plot = (
            x0.round() as i32,
            y0.round() as i32,
            pw.round() as i32,
            ph.round() as i32,
        );
        let bar = if self.colorbar.is_some() {
            (
                (x0 + pw + f * 1.2).round() as i32,
                plot.1,
                (f * 1.2).round() as i32,
                plot.3,
            )
        } else {
            (0, 0, 0, 0)
        };
        Layout { plot, bar, font_px }
    }

    /// Draw the figure, `width` x `height` pixels in all.
    pub fn render(&self, width: u32, height: u32) -> Result<RgbImage> {
        for (name, v) in [("figure width", width), ("figure height", height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                return Err(Error::invalid(
                    name,
                    format!("must be in {MIN_SIDE}..={MAX_SIDE} pixels, got {v}"),
                ));
            }
        }
        self.extent.validate()?;
        crate::plot::font::ensure_registered()?;
        let layout = self.layout(width, height);
        let mut buf = vec![255u8; width as usize * height as usize * 3];
        // Pixels first, straight into the buffer; plotters then draws on top of them.
        if let Some(plot) = self.plot_pixels {
            let (px, py, pw, ph) = layout.plot;
            if (plot.width() as i32, plot.height() as i32) != (pw, ph) {
                return Err(Error::Output(format!(
                    "figure: plot pixels of {}x{} for a plot area of {pw}x{ph}",
                    plot.width(),
                    plot.height()
                )));
            }
            for (x, y, p) in plot.enumerate_pixels() {
                put(&mut buf, width, px + x as i32, py + y as i32, p.0);
            }
        } else if let Some(img) = self.image {
            blit_resampled(&mut buf, width, img, layout.plot);
        }
        if let Some(bar) = &self.colorbar {
            let (bx, by, bw, bh) = layout.bar;
            let lut = bar.colormap.lut();
            for row in 0..bh {
                // Row 0 is the top of the bar: the last colour.
                let v = 1.0 - (row as f64 + 0.5) / bh as f64;
                let c = lut[crate::image::colormap::lut_index(v)];
                for col in 0..bw {
                    put(&mut buf, width, bx + col, by + row, c);
                }
            }
        }
        self.draw_overlay(&mut buf, width, height, &layout)
            .map_err(|e| Error::Output(format!("drawing a figure: {e}")))?;
        Ok(RgbImage::from_raw(width, height, buf).expect("buffer of the figure's size"))
    }

    fn draw_overlay(
        &self,
        buf: &mut [u8],
        width: u32,
        height: u32,
        layout: &Layout,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
        let f = layout.font_px;
        let (px, py, pw, ph) = layout.plot;
        let e = self.extent;
        let font = |size: f64| TextStyle::from((FAMILY, size).into_font()).color(&BLACK);
        let to_px = |x: f64, y: f64| -> (f64, f64) {
            (
                px as f64 + (x - e.xmin) / (e.xmax - e.xmin) * pw as f64,
                (py + ph) as f64 - (y - e.ymin) / (e.ymax - e.ymin) * ph as f64,
            )
        };
        let inside = |(x, y): (f64, f64)| {
            x >= px as f64 && x <= (px + pw) as f64 && y >= py as f64 && y <= (py + ph) as f64
        };

        // Arrows (under the frame and markers).
        let arrow_color = RGBColor(20, 40, 110);
        for a in self.arrows {
            let (x0, y0) = to_px(a.from.0, a.from.1);
            let (x1, y1) = to_px(a.to.0, a.to.1);
            let (dx, dy) = (x1 - x0, y1 - y0);
            let len = dx.hypot(dy);
            if !len.is_finite() || !inside((x0, y0)) {
                continue;
            }
            if len < 0.5 {
                continue;
            }
            let stroke = (f / 10.0).clamp(1.0, 3.0) as u32;
            root.draw(&PathElement::new(
                vec![(x0 as i32, y0 as i32), (x1 as i32, y1 as i32)],
                arrow_color.stroke_width(stroke),
            ))?;
            // A filled head, a third of the arrow long at most, so short arrows stay arrows.
            let head = (len * 0.35).min(f * 0.7);
            let (ux, uy) = (dx / len, dy / len);
            let (bx, by) = (x1 - ux * head, y1 - uy * head);
            let half = head * 0.45;
            root.draw(&Polygon::new(
                vec![
                    (x1.round() as i32, y1.round() as i32),
                    (
                        (bx - uy * half).round() as i32,
                        (by + ux * half).round() as i32,
                    ),
                    (
                        (bx + uy * half).round() as i32,
                        (by - ux * half).round() as i32,
                    ),
                ],
                arrow_color.filled(),
            ))?;
        }

        // Markers: thin black ring inside a white one, readable on any colormap, wide
        // enough to leave the density peak under it visible.
        let r = (f * 0.75).max(4.0) as i32;
        for &(x, y) in self.markers {
            let p = to_px(x, y);
            if !(x.is_finite() && y.is_finite() && inside(p)) {
                continue;
            }
            let c = (p.0.round() as i32, p.1.round() as i32);
            root.draw(&Circle::new(c, r + 1, WHITE.stroke_width(1)))?;
            root.draw(&Circle::new(c, r, BLACK.stroke_width(1)))?;
        }

        // Frame.
        root.draw(&Rectangle::new(
            [(px, py), (px + pw, py + ph)],
            BLACK.stroke_width(1),
        ))?;

        // Ticks and labels. Tick counts follow the room: one per 3.6 font heights across (labels
        // of up to ~5 characters), one per 3 font heights up.
        let tick_len = (f * 0.4).round() as i32;
        let max_x = ((pw as f64) / (f * 3.6)).floor().max(2.0) as usize;
        let max_y = ((ph as f64) / (f * 3.0)).floor().max(2.0) as usize;
        let label_font = font(f);
        for t in axis_ticks(e.xmin, e.xmax, px as f64, (px + pw) as f64, max_x.min(9)) {
            let x = t.at.round() as i32;
            root.draw(&PathElement::new(
                vec![(x, py + ph), (x, py + ph + tick_len)],
                BLACK.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                t.label,
                (x, py + ph + tick_len + (f * 0.3) as i32),
                label_font.pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
        let y_ticks = axis_ticks(e.ymin, e.ymax, (py + ph) as f64, py as f64, max_y.min(9));
        // The y label sits just left of the widest tick label.
        let mut widest = 0i32;
        for t in &y_ticks {
            widest = widest.max(root.estimate_text_size(&t.label, &label_font)?.0 as i32);
        }
        for t in y_ticks {
            let y = t.at.round() as i32;
            root.draw(&PathElement::new(
                vec![(px - tick_len, y), (px, y)],
                BLACK.stroke_width(1),
            ))?;
            root.draw(&Text::new(
                t.label,
                (px - tick_len - (f * 0.3) as i32, y),
                label_font.pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        let axis_font = font(f * 1.1);
        root.draw(&Text::new(
            self.x_label.clone(),
            (px + pw / 2, py + ph + tick_len + (f * 1.7) as i32),
            axis_font.pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        root.draw(&Text::new(
            self.y_label.clone(),
            (px - tick_len - (f * 1.2) as i32 - widest, py + ph / 2),
            axis_font
                .pos(Pos::new(HPos::Center, VPos::Center))
                .transform(FontTransform::Rotate270),
        ))?;
        // The title, one line under the other, the last just above the plot.
        let lines: Vec<&str> = self.title.lines().collect();
        for (k, line) in lines.iter().enumerate() {
            let above = (lines.len() - 1 - k) as f64 * f * 1.45;
            root.draw(&Text::new(
                line.to_string(),
                (px + pw / 2, py - (f * 0.9 + above) as i32),
                font(f * 1.15).pos(Pos::new(HPos::Center, VPos::Bottom)),
            ))?;
        }

        if let Some(bar) = &self.colorbar {
            let (bx, by, bw, bh) = layout.bar;
            root.draw(&Rectangle::new(
                [(bx, by), (bx + bw, by + bh)],
                BLACK.stroke_width(1),
            ))?;
            let mut widest = 0i32;
            for (_, label) in &bar.ticks {
                widest = widest.max(root.estimate_text_size(label, &label_font)?.0 as i32);
            }
            for (pos, label) in &bar.ticks {
                if !(-1e-9..=1.0 + 1e-9).contains(pos) {
                    continue;
                }
                let y = ((by + bh) as f64 - pos * bh as f64).round() as i32;
                root.draw(&PathElement::new(
                    vec![(bx + bw, y), (bx + bw + tick_len, y)],
                    BLACK.stroke_width(1),
                ))?;
                root.draw(&Text::new(
                    label.clone(),
                    (bx + bw + tick_len + (f * 0.3) as i32, y),
                    label_font.pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            }
            if !bar.label.is_empty() {
                root.draw(&Text::new(
                    bar.label.clone(),
                    (bx + bw + tick_len + (f * 1.2) as i32 + widest, by + bh / 2),
                    font(f)
                        .pos(Pos::new(HPos::Center, VPos::Center))
                        .transform(FontTransform::Rotate90),
                ))?;
            }
        }
        root.present()?;
        Ok(())
    }
}

fn put(buf: &mut [u8], width: u32, x: i32, y: i32, c: [u8; 3]) {
    let height = buf.len() as i64 / (width as i64 * 3);
    if x < 0 || y < 0 || x >= width as i32 || y as i64 >= height {
        return;
    }
    let i = (y as usize * width as usize + x as usize) * 3;
    buf[i..i + 3].copy_from_slice(&c);
}

/// One output pixel's bilinear taps along an axis: source pixels `i0` and `i1` (equal at
/// the last pixel) and the weight `a` of `i1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub a: f64,
}

/// The taps of `dst` output pixels reading `src` source pixels. The image's pixel centres
/// sit on a grid spanning the extent edge to edge (`linspace`, as the density grids are
/// built), so the output pixel at data x reads source position
/// `(x - xmin) / (xmax - xmin) * (src - 1)`, with x at the output pixel's centre.
pub fn taps(src: usize, dst: usize) -> Vec<Tap> {
    (0..dst)
        .map(|k| {
            let u = (k as f64 + 0.5) / dst as f64;
            let f = (u * (src - 1) as f64).clamp(0.0, (src - 1) as f64);
            let i0 = f.floor() as usize;
            Tap {
                i0,
                i1: (i0 + 1).min(src - 1),
                a: f - i0 as f64,
            }
        })
        .collect()
}

/// Bilinear blend of four RGB pixels (top-left, top-right, bottom-left, bottom-right).
#[inline]
fn blend(p00: [u8; 3], p10: [u8; 3], p01: [u8; 3], p11: [u8; 3], ax: f64, ay: f64) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let top = p00[k] as f64 * (1.0 - ax) + p10[k] as f64 * ax;
        let bottom = p01[k] as f64 * (1.0 - ax) + p11[k] as f64 * ax;
        *o = (top * (1.0 - ay) + bottom * ay).round() as u8;
    }
    out
}

/// Output pixel (col, row) for every pair of taps: the blend of the four source pixels
/// that `p(x, y)` gives, handed to `out(col, row, colour)`. Both resamplers (whole image
/// and streamed) go through this, so they give the same pixels.
fn bilinear(
    cols: &[Tap],
    rows: &[Tap],
    p: impl Fn(usize, usize) -> [u8; 3],
    mut out: impl FnMut(usize, usize, [u8; 3]),
) {
    for (row, ty) in rows.iter().enumerate() {
        for (col, tx) in cols.iter().enumerate() {
            let c = blend(
                p(tx.i0, ty.i0),
                p(tx.i1, ty.i0),
                p(tx.i0, ty.i1),
                p(tx.i1, ty.i1),
                tx.a,
                ty.a,
            );
            out(col, row, c);
        }
    }
}

/// Fill the plot rectangle with `img`, bilinearly resampled (see [`taps`]).
fn blit_resampled(buf: &mut [u8], width: u32, img: &RgbImage, plot: (i32, i32, i32, i32)) {
    let (px, py, pw, ph) = plot;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if iw == 0 || ih == 0 || pw <= 0 || ph <= 0 {
        return;
    }
    let (cols, rows) = (taps(iw, pw as usize), taps(ih, ph as usize));
    let p = |x: usize, y: usize| img.get_pixel(x as u32, y as u32).0;
    bilinear(&cols, &rows, p, |col, row, c| {
        put(buf, width, px + col as i32, py + row as i32, c)
    });
}

/// The plot area of a figure resampled from an image that is streamed row by row and never
/// held whole (a 16384² density image is 805 MB of RGB): it keeps only the pixels the
/// bilinear taps read, at most two columns and two rows per plot pixel, so its memory is
/// bounded by 4 × the plot area (12 bytes a plot pixel) whatever the image size. The result
/// is the same as drawing the whole image with [`Figure::image`] (tested).
#[derive(Debug, Clone)]
pub struct PlotCapture {
    width: usize,
    cols: Vec<Tap>,
    rows: Vec<Tap>,
    /// For each source column / row, its slot in `kept` (`usize::MAX`: not needed).
    col_slot: Vec<usize>,
    row_slot: Vec<usize>,
    n_cols: usize,
    /// RGB of the kept pixels, kept rows × kept columns.
    kept: Vec<u8>,
}

impl PlotCapture {
    /// For a `width` x `height` image drawn into a `plot_w` x `plot_h` plot area.
    pub fn new(width: usize, height: usize, plot_w: usize, plot_h: usize) -> Self {
        let (cols, rows) = (taps(width, plot_w), taps(height, plot_h));
        let slots = |n: usize, taps: &[Tap]| {
            let mut slot = vec![usize::MAX; n];
            for t in taps {
                slot[t.i0] = 0;
                slot[t.i1] = 0;
            }
            let mut k = 0;
            for s in slot.iter_mut().filter(|s| **s == 0) {
                *s = k;
                k += 1;
            }
            (slot, k)
        };
        let (col_slot, n_cols) = slots(width, &cols);
        let (row_slot, n_rows) = slots(height, &rows);
        PlotCapture {
            width,
            cols,
            rows,
            col_slot,
            row_slot,
            n_cols,
            kept: vec![0; n_cols * n_rows * 3],
        }
    }

    /// Rows `r0..` of the image, RGB, `width` pixels each.
    pub fn add_rows(&mut self, r0: usize, rgb: &[u8]) {
        for (i, row) in rgb.chunks_exact(self.width * 3).enumerate() {
            let Some(&slot) = self.row_slot.get(r0 + i) else {
                return;
            };
            if slot == usize::MAX {
                continue;
            }
            let out = &mut self.kept[slot * self.n_cols * 3..(slot + 1) * self.n_cols * 3];
            for (c, &s) in self.col_slot.iter().enumerate() {
                if s != usize::MAX {
                    out[s * 3..s * 3 + 3].copy_from_slice(&row[c * 3..c * 3 + 3]);
                }
            }
        }
    }

    /// The plot area's pixels (for [`Figure::plot_pixels`]).
    pub fn finish(&self) -> RgbImage {
        let (pw, ph) = (self.cols.len() as u32, self.rows.len() as u32);
        let p = |c: usize, r: usize| {
            let i = (self.row_slot[r] * self.n_cols + self.col_slot[c]) * 3;
            [self.kept[i], self.kept[i + 1], self.kept[i + 2]]
        };
        let mut img = RgbImage::new(pw, ph);
        bilinear(&self.cols, &self.rows, p, |col, row, c| {
            img.put_pixel(col as u32, row as u32, image::Rgb(c))
        });
        img
    }
}

/// Parse a figure size `WxH` (or `N` for N×N), each side in `MIN_SIDE..=MAX_SIDE`.
pub fn parse_size(text: &str) -> std::result::Result<(u32, u32), String> {
    let t = text.trim();
    let (w, h) = match t.split_once(['x', 'X', '×']) {
        Some((w, h)) => (w.trim(), h.trim()),
        None => (t, t),
    };
    let side = |v: &str| -> std::result::Result<u32, String> {
        match v.parse::<u32>() {
            Ok(n) if (MIN_SIDE..=MAX_SIDE).contains(&n) => Ok(n),
            _ => Err(format!(
                "'{text}': expected WxH with each side a whole number in {MIN_SIDE}..={MAX_SIDE}"
            )),
        }
    };
    Ok((side(w)?, side(h)?))
}
