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
//! grid written to `.npy` and rendered again gives the same PNG bytes. The norms are
//! [`crate::image::norm`]'s, the `.npy` grid format [`crate::image::grid_file`]'s.

use crate::density::heatmap::DensityGrid;
use crate::error::{Error, Result};
use crate::image::colormap::{lut_index, Colormap};
use crate::image::grid_file::{meta_extent, GridFile, GridMeta};
use crate::image::norm::{
    add_histogram, eq_hist_from_counts, min_max, normalize, Norm, Shading, Stats, EQ_HIST_BINS,
};
use crate::plot::colorbar::colorbar;
// Re-exported where the run folder and the commands have long found them.
use crate::io::AtomicFile;
use image::ImageEncoder;
use rayon::prelude::*;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Grids up to this many pixels (4096 x 4096) are kept in memory as f32 between passes;
/// larger ones are streamed to disk and read back band by band.
pub const IN_MEMORY_PIXELS: usize = 1 << 24;

/// Pixels per band (rows of the band = this / width, at least one).
const BAND_PIXELS: usize = 1 << 22;

/// Something that produces rows of a grid (row 0 = top) as f64.
pub trait RowSource: Sync {
    /// Columns per row.
    fn width(&self) -> usize;
    /// Rows.
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
/// follow the norm (`colorbar`). Memory: a `crate::plot::figure::PlotCapture`, bounded by the
/// figure's size whatever the image's.
#[derive(Debug, Clone, Default)]
pub struct FigureRequest {
    /// Where the figure is written.
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
                "figure_size",
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

/// The zlib level of the density PNGs. Measured on the default run's 512 x 512 images
/// (AMD EPYC, 2026-12-05): level 3 writes `initial.png` in 34 ms against 56 ms at the png
/// crate's default level 6, for files 1-8% larger (the pixels are the same).
const PNG_DEFLATE_LEVEL: u8 = 3;

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
    enc.set_deflate_compression(png::DeflateCompression::Level(PNG_DEFLATE_LEVEL));
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
    /// Columns of every part.
    pub width: usize,
    /// Rows of every part.
    pub height: usize,
    /// Grids computed from particles.
    pub parts: Vec<&'a dyn RowSource>,
    /// Grids read from files.
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

/// A grid's image: values normalized linearly from the grid's min (first colour) to its max
/// (last colour). A constant grid is all the first colour.
pub fn linear_rgb_image(grid: &DensityGrid, colormap: Colormap) -> image::RgbImage {
    let lut = colormap.lut();
    let (lo, hi) = grid.min_max();
    let range = hi - lo;
    let scale = if range > 0.0 && range.is_finite() {
        1.0 / range
    } else {
        0.0
    };
    let mut img = image::RgbImage::new(grid.width() as u32, grid.height() as u32);
    img.par_chunks_mut(3)
        .zip(grid.data().par_iter())
        .for_each(|(px, &v)| {
            let t = if scale > 0.0 { (v - lo) * scale } else { 0.0 };
            px.copy_from_slice(&lut[crate::image::colormap::lut_index(t)]);
        });
    img
}

// For the density unit tests (the run folder writes through write_grid_outputs).
#[cfg(test)]
/// Write the image as a PNG, atomically ([`crate::io::AtomicFile`]). On failure nothing
/// is left behind.
pub fn write_linear_png(
    grid: &DensityGrid,
    path: impl AsRef<Path>,
    colormap: Colormap,
) -> Result<()> {
    crate::io::write_png(path.as_ref(), &linear_rgb_image(grid, colormap))
}
