//! The figures of a `sample` run: `--figure` (framed `samples_figure.png` and
//! `initial_figure.png`) and `--snapshots K` (the particle cloud at K time points: framed
//! frames `snapshots/frame_000.png ...`, `snapshots/snapshots.json` and the animation
//! `collapse.gif`).
//!
//! [`RunFigures`] rides along a [`crate::run::folder::RunFolder`]: it accumulates one
//! density grid per snapshot across batches (the sampler stops each batch at the snapshot
//! steps, see [`crate::run::driver::BatchSink::snapshot_steps`]) and draws everything when the
//! folder is finished. Every file is written atomically.

use crate::density::extent::Extent;
use crate::density::heatmap::DensityGrid;
use crate::error::{Error, Result};
use crate::image::colormap::Colormap;
use crate::model::dataset::Dataset;
use crate::plot::figure::{Colorbar, Figure};
use crate::run::spec::{snapshot_plan, RunSpec};
use image::RgbImage;
use serde::Serialize;
use std::path::Path;

/// Decades of density the snapshot frames show: the colour scale is log10 from
/// `max / 10^SNAPSHOT_DECADES` to `max`, the largest value over all frames.
pub const SNAPSHOT_DECADES: f64 = 3.0;

/// How long each GIF frame shows: the first and last frames linger so a viewer sees the
/// starting blob and the collapsed result.
pub const GIF_FRAME_MS: u32 = 250;
pub const GIF_FIRST_MS: u32 = 800;
pub const GIF_LAST_MS: u32 = 2000;

/// Forward time t of the particles after `k` of the `steps` steps: the initial noise is
/// drawn at t = 1; after k >= 1 steps they stand at `1 - ts[k]` of the time grid (0 at the
/// end).
pub fn time_after(steps: &[crate::model::schedule::ReverseStep], k: usize) -> f64 {
    match k {
        0 => 1.0,
        k if k < steps.len() => steps[k].tau,
        _ => 0.0,
    }
}

/// Shade a grid with a log10 scale from `vmin` (first colour; values at or below it,
/// zeros included) to `vmax` (last colour).
pub fn shade_log(grid: &DensityGrid, colormap: Colormap, vmin: f64, vmax: f64) -> RgbImage {
    let lut = colormap.lut();
    let (lo, hi) = (vmin.log10(), vmax.log10());
    let span = hi - lo;
    let mut img = RgbImage::new(grid.width() as u32, grid.height() as u32);
    for (px, &v) in img.pixels_mut().zip(grid.data()) {
        let t = if v > vmin && span > 0.0 {
            (v.log10() - lo) / span
        } else {
            0.0
        };
        px.0 = lut[crate::image::colormap::lut_index(t)];
    }
    img
}

/// What the figures show and how big they are.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    pub size: (u32, u32),
    /// Training points to mark (empty: none).
    pub markers: Vec<(f64, f64)>,
    /// One line describing the run, shown under each title.
    pub description: String,
    pub colormap: Colormap,
    /// Draw samples_figure.png and initial_figure.png.
    pub figure: bool,
}

/// The snapshot grids of a run, filled batch by batch.
#[derive(Debug)]
struct Snapshots {
    steps: Vec<usize>,
    times: Vec<f64>,
    n_steps: usize,
    accumulator: Accumulator,
}

/// Adds snapshot positions to their density grids on a thread of its own: the sampler
/// hands over a copy of the state and goes on with the next segment of the batch (on a
/// GPU, the device keeps working) while the kernels are summed. At most one copy waits in
/// the channel, which bounds the memory to two batch states. The sums are integers, so the
/// grids do not depend on this (tested: bit-identical frames). The sums run on a rayon
/// pool of their own: a thread of the global pool waiting to hand over a batch can then
/// never hold up the accumulation it waits for.
#[derive(Debug)]
struct Accumulator {
    sender: Option<std::sync::mpsc::SyncSender<(usize, Vec<f32>)>>,
    worker: Option<std::thread::JoinHandle<Vec<DensityGrid>>>,
}

impl Accumulator {
    fn new(mut grids: Vec<DensityGrid>) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("snapshot-sums-{i}"))
            .build()
            .map_err(|e| Error::Output(format!("cannot start the snapshot threads: {e}")))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(usize, Vec<f32>)>(1);
        let worker = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                for (i, points) in receiver {
                    pool.install(|| grids[i].accumulate(&points));
                }
                grids
            })
            .map_err(|e| Error::Output(format!("cannot start the snapshot thread: {e}")))?;
        Ok(Accumulator {
            sender: Some(sender),
            worker: Some(worker),
        })
    }

    /// Queue `points` for `grid`; blocks while another batch state waits.
    fn add(&self, grid: usize, points: &[f32]) {
        if let Some(sender) = &self.sender {
            // A failed send means the worker died; `grids` reports it.
            let _ = sender.send((grid, points.to_vec()));
        }
    }

    /// Wait for every sum and return the grids.
    fn grids(&mut self) -> Result<Vec<DensityGrid>> {
        drop(self.sender.take());
        self.worker
            .take()
            .ok_or_else(|| Error::Output("snapshot grids already taken".into()))?
            .join()
            .map_err(|_| Error::Output("the snapshot density accumulation failed".into()))
    }
}

/// The figures of a run folder (see the module docs).
#[derive(Debug)]
pub struct RunFigures {
    options: FigureOptions,
    snapshots: Option<Snapshots>,
}

/// A frame of snapshots.json.
#[derive(Debug, Serialize)]
struct FrameInfo {
    file: String,
    step: usize,
    t: f64,
    max_density: f64,
}

#[derive(Debug, Serialize)]
struct SnapshotsReport {
    frames: Vec<FrameInfo>,
    steps: usize,
    /// The colour scale shared by all frames.
    scale: &'static str,
    vmin: f64,
    vmax: f64,
    extent: [f64; 4],
    resolution: [usize; 2],
    kernel_bandwidth: f64,
    gif: &'static str,
    gif_frame_ms: [u32; 3],
}

impl RunFigures {
    /// Figures for a run on `extent` at `resolution`, with `snapshots: Some(k)` frames over
    /// the `steps` of the run.
    pub fn new(
        options: FigureOptions,
        snapshots: Option<usize>,
        steps: &[crate::model::schedule::ReverseStep],
        extent: Extent,
        resolution: (usize, usize),
        bandwidth: f64,
    ) -> Result<Self> {
        let snapshots = match snapshots {
            None => None,
            Some(k) => {
                let plan = snapshot_plan(steps.len(), k)?;
                let grids = plan
                    .iter()
                    .map(|_| DensityGrid::new(extent, resolution.0, resolution.1, bandwidth))
                    .collect::<Result<Vec<_>>>()?;
                Some(Snapshots {
                    times: plan.iter().map(|&s| time_after(steps, s)).collect(),
                    steps: plan,
                    n_steps: steps.len(),
                    accumulator: Accumulator::new(grids)?,
                })
            }
        };
        Ok(RunFigures { options, snapshots })
    }

    /// The steps strictly inside the run at which the sampler must hand over the state.
    pub fn snapshot_steps(&self) -> Vec<usize> {
        match &self.snapshots {
            Some(s) => s
                .steps
                .iter()
                .copied()
                .filter(|&k| k > 0 && k < s.n_steps)
                .collect(),
            None => Vec::new(),
        }
    }

    /// A finished batch: its initial noise is the first snapshot, its samples the last.
    pub fn consume(&mut self, initial: &[f32], samples: &[f32]) {
        if let Some(s) = &self.snapshots {
            s.accumulator.add(0, initial);
            s.accumulator.add(s.steps.len() - 1, samples);
        }
    }

    /// The batch's positions after `step` steps.
    pub fn snapshot(&mut self, step: usize, positions: &[f32]) {
        if let Some(s) = &self.snapshots {
            if let Ok(i) = s.steps.binary_search(&step) {
                s.accumulator.add(i, positions);
            }
        }
    }

    /// The framed figure of density image `name` (`samples` or `initial`) with `--figure`,
    /// for [`crate::plot::raster::write_grid_outputs`] to draw from the PNG's own colours (same
    /// norm, colormap and kernel as `NAME.png`).
    pub fn figure_request(
        &self,
        dir: &Path,
        name: &str,
        grid: &DensityGrid,
    ) -> Option<crate::plot::raster::FigureRequest> {
        let o = &self.options;
        if !o.figure {
            return None;
        }
        let what = match name {
            "initial" => "initial noise x₁",
            other => other,
        };
        Some(crate::plot::raster::FigureRequest {
            path: dir.join(format!("{name}_figure.png")),
            size: o.size,
            title: format!("{what}\n{}", o.description),
            quantity: quantity_of(grid.kernel()).into(),
            markers: o.markers.clone(),
        })
    }

    /// Draw and write the snapshot frames into `dir` (the `--figure` figures are written
    /// with their density images, [`figure_request`](Self::figure_request)); returns the
    /// names written (relative to `dir`).
    pub fn finish(mut self, dir: &Path) -> Result<Vec<String>> {
        let mut written = Vec::new();
        if let Some(mut s) = self.snapshots.take() {
            let grids = s.accumulator.grids()?;
            written.extend(self.write_snapshots(dir, &s, &grids)?);
        }
        Ok(written)
    }

    fn write_snapshots(
        &self,
        dir: &Path,
        s: &Snapshots,
        grids: &[DensityGrid],
    ) -> Result<Vec<String>> {
        let o = &self.options;
        // One colour scale for all frames: log10 over SNAPSHOT_DECADES below the largest
        // value of any frame. The collapsed points are ~30x denser than the starting blob,
        // so a linear scale would show the blob as the background colour.
        let vmax = grids.iter().map(|g| g.min_max().1).fold(0.0f64, f64::max);
        let vmax = if vmax > 0.0 { vmax } else { 1.0 };
        let vmin = vmax / 10f64.powf(SNAPSHOT_DECADES);
        let colorbar = Colorbar::log10(
            o.colormap,
            vmin / vmax,
            1.0,
            "density / max over frames (log)",
        );
        let frames_dir = dir.join("snapshots");
        std::fs::create_dir_all(&frames_dir).map_err(|e| Error::io(&frames_dir, e))?;
        let mut frames = Vec::with_capacity(grids.len());
        let mut info = Vec::with_capacity(grids.len());
        for (i, grid) in grids.iter().enumerate() {
            let img = shade_log(grid, o.colormap, vmin, vmax);
            let when = match s.steps[i] {
                0 => "initial noise".to_string(),
                k => format!("step {k} of {}", s.n_steps),
            };
            let figure = Figure {
                title: format!("{when}, t = {:.3}\n{}", s.times[i], o.description),
                colorbar: Some(colorbar.clone()),
                markers: &o.markers,
                ..Figure::new(Some(&img), grid.extent())
            };
            let png = figure.render(o.size.0, o.size.1)?;
            let name = format!("frame_{i:03}.png");
            crate::io::write_png(&frames_dir.join(&name), &png)?;
            info.push(FrameInfo {
                file: format!("snapshots/{name}"),
                step: s.steps[i],
                t: s.times[i],
                max_density: grid.min_max().1,
            });
            frames.push(png);
        }
        write_gif(&dir.join("collapse.gif"), &frames)?;
        let e = grids[0].extent();
        crate::io::write_json(
            &frames_dir.join("snapshots.json"),
            &SnapshotsReport {
                frames: info,
                steps: s.n_steps,
                scale: "log10",
                vmin,
                vmax,
                extent: [e.xmin, e.xmax, e.ymin, e.ymax],
                resolution: [grids[0].width(), grids[0].height()],
                kernel_bandwidth: grids[0].bandwidth(),
                gif: "collapse.gif",
                gif_frame_ms: [GIF_FIRST_MS, GIF_FRAME_MS, GIF_LAST_MS],
            },
        )?;
        let mut names: Vec<String> = (0..frames.len())
            .map(|i| format!("snapshots/frame_{i:03}.png"))
            .collect();
        names.push("snapshots/snapshots.json".into());
        names.push("collapse.gif".into());
        Ok(names)
    }
}

/// Write `frames` as an animated GIF that loops forever, atomically. The first and last
/// frames show longer ([`GIF_FIRST_MS`], [`GIF_LAST_MS`]).
pub fn write_gif(path: &Path, frames: &[RgbImage]) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame};
    crate::io::write_atomically(path, |w| {
        // Speed 10 of 1..30: NeuQuant quality that keeps the colormap's gradient smooth
        // at a fraction of the best setting's time.
        let mut encoder = GifEncoder::new_with_speed(w, 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(std::io::Error::other)?;
        let last = frames.len().saturating_sub(1);
        for (i, img) in frames.iter().enumerate() {
            let ms = match i {
                0 => GIF_FIRST_MS,
                i if i == last => GIF_LAST_MS,
                _ => GIF_FRAME_MS,
            };
            let rgba = image::DynamicImage::ImageRgb8(img.clone()).to_rgba8();
            encoder
                .encode_frame(Frame::from_parts(
                    rgba,
                    0,
                    0,
                    Delay::from_numer_denom_ms(ms, 1),
                ))
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    })
}

/// The figures `spec` asks for on `training`, or `None`.
pub fn from_spec(spec: &RunSpec, training: &Dataset) -> Result<Option<RunFigures>> {
    let extras = &spec.extras;
    if !(extras.figure || extras.snapshots.is_some()) || training.dim != 2 {
        return Ok(None);
    }
    let range = spec.particle_range();
    let markers = if extras.markers {
        training.points.chunks(2).map(|p| (p[0], p[1])).collect()
    } else {
        Vec::new()
    };
    let images = &spec.images;
    let options = FigureOptions {
        size: (extras.figure_size[0], extras.figure_size[1]),
        markers,
        description: format!(
            "{} particles, {} (N = {}), {} steps, seed {}",
            group_thousands(range.end - range.start),
            spec.dataset,
            training.len(),
            spec.time_points - 1,
            spec.seed
        ),
        colormap: images.colormap,
        figure: extras.figure,
    };
    let steps = crate::model::schedule::reverse_steps(&spec.schedule(), spec.time_points);
    RunFigures::new(
        options,
        extras.snapshots,
        &steps,
        images.extent,
        (images.width(), images.height()),
        images.bandwidth,
    )
    .map(Some)
}

/// What a grid of `kernel` holds, for colorbar labels.
pub fn quantity_of(kernel: crate::density::heatmap::Kernel) -> &'static str {
    match kernel {
        crate::density::heatmap::Kernel::Histogram => "particles per pixel",
        _ => "density",
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
