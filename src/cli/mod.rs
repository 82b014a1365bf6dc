//! The command-line interface: typed options (clap derive) and the commands they run.
//! `main.rs` only parses, calls `run` and prints errors.

use crate::density::heatmap::Extent;
use crate::engine::{Backend, SamplerKind};
use crate::error::Result;
use crate::metrics::MemorizationSummary;
use crate::model::dataset::Dataset;
use crate::model::schedule::VpSchedule;
use crate::run::driver::{self, SampleConfig, SampleTiming};
use crate::run::folder::{prepare_dir, ImageSettings, RunFolder};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Set by the binary's Ctrl-C handler: `sample` stops at the next step boundary.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Parser)]
#[command(
    name = "memodiff",
    version,
    about = "Reverse-time diffusion sampling with the exact empirical score: watch samples \
             collapse onto the training points (memorization), at millions of particles, \
             on the GPU (wgpu/WGSL) or the CPU."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the reverse SDE and write samples, density images, metrics and run.json.
    Sample(SampleArgs),
    /// Time the engines on a matrix of workloads and print a markdown table.
    Bench(BenchArgs),
    /// Combine the folders of the shards of one run (`sample --shard k/n`) into one run
    /// folder, bit-identical to the unsharded run on the same backend.
    Merge(MergeArgs),
    /// Continue a run of `sample --checkpoint-every K` that was stopped (Ctrl-C, a kill, a
    /// crash) from its last checkpoint; the results are bit-identical to an uninterrupted
    /// run on the same backend.
    Resume(ResumeArgs),
    /// List the GPU adapters (the indices `sample --device N` takes) and their limits.
    Devices(DevicesArgs),
    /// Draw the density image of existing particles ((P, 2) `.npy`/`.csv`, e.g. a run's
    /// samples.npy) without sampling, or re-shade / sum density grids (`*_density.npy` with
    /// their `.json` sidecars) of the same extent and size.
    Render(RenderArgs),
    /// Evaluate the empirical score on a grid at one forward time t: a quiver plot
    /// (score_field.png) and the vectors as score_field.npy, shape (G, 4): x, y, score_x,
    /// score_y.
    ScoreField(crate::commands::score_field::ScoreFieldArgs),
    /// Measure the collapse time of the reverse process on Gaussian training sets for a
    /// grid of (N, d) and compare it with the prediction of Biroli et al. (2024),
    /// t_C = 1/2 ln(1 + sigma^2 / (N^(2/d) - 1)); writes a CSV and a plot. Measured t_C:
    /// the Ornstein–Uhlenbeck time B(tau)/2 at which the normalised mean of max_i w_i,
    /// (m - 1/N) / (1 - 1/N), first reaches 1/2 along the reverse process.
    Collapse(crate::commands::collapse::CollapseArgs),
    /// Sweep one parameter (N, D, kde width h or t-min) over a list of values and write the
    /// memorized fraction (d1/d2 < 1/3, with its 95% bootstrap interval) as a CSV and a plot.
    Sweep(crate::commands::sweep::SweepArgs),
}

/// Options of `memodiff bench`. Each cell runs `--warmup` untimed and `--repeats` timed
/// runs of the sampler (initial noise, all steps, readback; no file output) on the
/// training set circle:N in D = 2, gaussian:N:D in other dimensions.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Particle counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1e4,1e5,1e6", value_parser = parse_count)]
    pub particles: Vec<u64>,

    /// Training-set sizes N, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,1024,65536", value_parser = parse_count_usize)]
    pub training_points: Vec<usize>,

    /// Dimensions D, comma-separated: every (P, N) is run in each.
    #[arg(long, value_delimiter = ',', default_value = "2", value_parser = parse_count_usize)]
    pub dims: Vec<usize>,

    /// Explicit cells P:N:D, comma-separated (e.g. 1e6:1024:2,1000:10000:784), instead of
    /// the grid of --particles x --training-points x --dims.
    #[arg(long, value_delimiter = ',')]
    pub cells: Vec<crate::commands::bench::BenchCell>,

    /// Backends to measure, comma-separated (unavailable ones are reported as such).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "gpu,cpu,reference"
    )]
    pub backends: Vec<Backend>,

    /// Number of time points S (S-1 steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Untimed runs before the timed ones (pipeline compilation, caches, thread pools).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,

    /// Timed runs per cell; the table shows their median, min and max.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,

    /// Skip a cell whose estimated time (from the cells measured before it, warm-up and
    /// repeats included) exceeds this many seconds. The table says which were skipped.
    #[arg(long, default_value_t = 8.0)]
    pub max_cell_seconds: f64,

    /// Run the cpu engine with exact culling (D > 4: it skips the training points whose
    /// weights are provably below 2^-25 / N of the best; off by default: where measured
    /// it cost more than it saved). The table's `culled` column gives the fraction of
    /// pairs skipped.
    #[arg(long)]
    pub cull: bool,

    /// Also write one JSON document (every cell, the machine, the adapters) to this file;
    /// `-` writes it to standard output (the table then goes to standard error).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `memodiff sample`. The defaults reproduce the reference memorization
/// experiment: 8 points on the unit circle, beta in [0.001, 3], 100 time points,
/// 1,000,000 particles, seed 0.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Number of particles P (accepts 1000000, 1_000_000 or 1e6). Memory grows as P·D
    /// (two f32 arrays of P×D for the .npy files; a batch's P·D on the device) and time
    /// as P·N·D per step.
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    pub particles: u64,

    /// Number of time points S of the grid linspace(1/(S-1), 1, S): S-1 Euler–Maruyama steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Seed of the Philox streams: particle i's noise depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// beta(t) at t = 0 (linear schedule beta_min + t (beta_max - beta_min)).
    #[arg(long, default_value_t = 0.001, allow_negative_numbers = true)]
    pub beta_min: f64,

    /// beta(t) at t = 1.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub beta_max: f64,

    /// Training set: `circle:N` (N points on the unit circle); `gaussian:N:D[:sigma]` (N
    /// points from N(0, sigma^2 I), sigma = 1); `two-gaussians:N:D[:sigma]` (half around
    /// +(1,...,1), half around -(1,...,1)); `moons:N[:noise]` (scikit-learn's two moons);
    /// `spiral:N` (two turns of a spiral); `grid:K` (K x K points on [-1,1]^2); a `.npy` file
    /// of shape (N, D) in f32/f64, or of images (N, H, W) / (N, H, W, C), flattened to
    /// D = H W C; or a `.csv` file of N rows of D numbers. D may be 1 to 4096 (e.g. 28×28
    /// images = 784, 32×32×3 = 3072); D ≤ 4 runs on the fastest kernels. Time grows as
    /// P·N·D per step; the GPU holds the N×D points (padded to a multiple of 4) in one
    /// storage buffer and a batch's particles in buffers of P·D floats, and refuses with
    /// the numbers what exceeds its largest storage buffer binding.
    #[arg(long, default_value = "circle:8")]
    pub dataset: String,

    /// Seed of the random training sets (gaussian, two-gaussians, noisy moons): the set
    /// depends only on its spec and this seed, not on --seed.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,

    /// Image training sets: draw the first K samples back as images, each next to its
    /// nearest training image, into samples_grid.png.
    #[arg(long, value_name = "K", value_parser = parse_count_usize)]
    pub image_grid: Option<usize>,

    /// Where to run: `auto` uses a hardware GPU if there is one and the cpu engine
    /// otherwise; `gpu` uses any wgpu adapter, software ones (lavapipe) included.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Integrator on the same time grid and from the same initial noise: `em`
    /// (Euler–Maruyama on the reverse SDE, the tutorial's) or `heun` (Heun's method on the
    /// probability-flow ODE: deterministic after the initial noise, two score evaluations
    /// a step; the last step, to t = 0 where the score is singular, is an Euler step).
    #[arg(long, value_enum, default_value_t = SamplerKind::Em)]
    pub sampler: SamplerKind,

    /// Output folder; created if missing. An existing non-empty folder needs --force.
    /// Every file is written under a temporary name and renamed into place.
    #[arg(long, default_value = "memodiff-out")]
    pub out: PathBuf,

    #[command(flatten)]
    pub image: ImageArgs,

    /// Particles per batch (default: as many as one GPU buffer holds, at most 4,194,304
    /// and at most 16,777,216 / D, i.e. 64 MiB of coordinates per array). Results do not
    /// depend on it.
    #[arg(long, value_parser = parse_count_usize)]
    pub batch: Option<usize>,

    /// Do not write samples.npy and initial.npy: only images, metrics and run.json, in
    /// memory bounded by the batch size whatever --particles is.
    #[arg(long)]
    pub no_samples: bool,

    /// Simulate only shard k of n (0-based), a contiguous range of particle indices, e.g.
    /// `--shard 3/8`. Particle i's trajectory depends only on (seed, i), so the shards of
    /// a run together are exactly the unsharded run.
    #[arg(long)]
    pub shard: Option<crate::run::driver::Shard>,

    /// Run on GPU adapter N of `memodiff devices` (implies the gpu backend with the default
    /// --backend auto; an error with --backend cpu or reference).
    #[arg(long)]
    pub device: Option<usize>,

    /// Write into an existing non-empty --out folder (its files of the same names are
    /// replaced; others are left alone). Without it such a folder is refused.
    #[arg(long)]
    pub force: bool,

    /// Save a checkpoint in OUT/checkpoint/ every K steps of a batch and after each batch;
    /// `memodiff resume OUT` continues a stopped run bit-identically (cpu and gpu backends;
    /// not with --backend reference).
    #[arg(long, value_parser = parse_count_usize)]
    pub checkpoint_every: Option<usize>,

    /// Also draw framed figures of the density images, samples_figure.png and
    /// initial_figure.png: title, x/y axes with ticks, the very colours of samples.png /
    /// initial.png (same --norm, --colormap and --kernel, bilinearly resampled into the plot
    /// area) and a colorbar whose ticks follow the norm (D = 2 only).
    #[arg(long, help_heading = "Figures")]
    pub figure: bool,

    /// Mark the training points (rings) on --figure and --snapshots images.
    #[arg(long, help_heading = "Figures")]
    pub markers: bool,

    /// Size of each figure and snapshot frame in pixels, `WxH` or `N` for N×N (the density
    /// behind it keeps --resolution).
    #[arg(long, default_value = "720x600", value_parser = crate::plot::figure::parse_size, help_heading = "Figures")]
    pub figure_size: (u32, u32),

    /// Record the particle cloud at K time points (K >= 2, at most --steps), evenly spaced
    /// in steps, the initial noise and the final samples included: framed frames
    /// snapshots/frame_000.png ..., snapshots/snapshots.json (step and t of each) and the
    /// looping animation collapse.gif. All frames share one colour scale, log10 over the
    /// 3 decades below the largest density of any frame, so both the spread-out starting
    /// blob and the collapsed points stay visible. Each batch stops at the snapshot steps
    /// to read its state back. Frames cover --extent at --resolution; D = 2 only; not with
    /// --shard or --checkpoint-every.
    #[arg(long, value_parser = parse_count_usize, help_heading = "Figures")]
    pub snapshots: Option<usize>,

    /// The score driving the sampler: `empirical` (the exact score of the training set,
    /// which memorizes) or `kde:h` (the score of the training set smoothed by a Gaussian of
    /// width h, components N(s x_i, (sigma2 + s^2 h^2) I); kde:0 is the empirical score).
    #[arg(long, default_value = "empirical")]
    pub score: crate::model::schedule::ScoreKind,

    /// Early stopping: end the reverse process at forward time t_min (the grid of --steps
    /// points then runs from 1 - 1/(S-1) down to t_min) and output each sample's denoised
    /// mean E[x_0 | x_{t_min}] (the posterior mean of the training points for the empirical
    /// score). 0 runs to t = 0 as usual.
    #[arg(long, default_value_t = 0.0)]
    pub t_min: f64,

    /// Record the posterior concentration (mean of max_i w_i, and how often the current
    /// argmax is the final nearest training point) at about this many points along the
    /// trajectory; 0 turns it off.
    #[arg(long, default_value_t = 20)]
    pub posterior_records: usize,

    /// Record the posterior concentration over the particles of index below this (the same
    /// particles in every shard); its cost is this many times N per record.
    #[arg(long, default_value = "100000", value_parser = parse_count)]
    pub posterior_particles: u64,
}

/// How density images are drawn: shared by `sample` and `render`.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Extent of the image as xmin,xmax,ymin,ymax [default: -3,3,-3,3; `render` of density
    /// grids: theirs]. For `sample` this is samples.png's; initial.png always covers [-2,3]^2.
    #[arg(long, allow_hyphen_values = true)]
    pub extent: Option<Extent>,

    /// Image size in pixels, `N` for N×N or `WxH`, each side up to 16384 [default: 512;
    /// `render` of density grids: theirs]. Large images are computed and written band by
    /// band, in memory bounded by a band.
    #[arg(long, value_parser = parse_resolution)]
    pub resolution: Option<(usize, usize)>,

    /// Kernel bandwidth h, exp(-|p - x|^2 / (2 h^2)); must be finite and > 0 [default:
    /// 1/sqrt(700) ≈ 0.0378, the reference tutorial's exp(-350 |p - x|^2)].
    #[arg(long, value_parser = parse_bandwidth, allow_negative_numbers = true)]
    pub bandwidth: Option<f64>,

    /// `gaussian`: the kernel above at every pixel centre; `histogram`: plain counts of the
    /// particles per pixel (nearest pixel centre) [default: gaussian].
    #[arg(long, value_enum)]
    pub kernel: Option<crate::density::heatmap::Kernel>,

    /// Colormap of the density images (matplotlib's tables, byte for byte).
    #[arg(long, value_enum, default_value_t = crate::image::colormap::Colormap::Coolwarm)]
    pub colormap: crate::image::colormap::Colormap,

    /// How densities map to colours: `linear` from min to max (the tutorial's), `log`
    /// (log1p(v - min) / log1p(max - min)), `eq-hist` (histogram equalization as
    /// datashader's eq_hist: each colour covers about as many pixels).
    #[arg(long, value_enum, default_value_t = crate::image::raster::Norm::Linear)]
    pub norm: crate::image::raster::Norm,

    /// Also write the raw density as a 16-bit grayscale PNG (NAME_gray16.png):
    /// round(65535 v / max), max in the grid's .json sidecar.
    #[arg(long)]
    pub png16: bool,
}

impl ImageArgs {
    pub fn extent_or_default(&self) -> Extent {
        self.extent.unwrap_or(ImageSettings::default().extent)
    }
    pub fn resolution_or_default(&self) -> (usize, usize) {
        self.resolution.unwrap_or((512, 512))
    }
    pub fn bandwidth_or_default(&self) -> f64 {
        self.bandwidth
            .unwrap_or(crate::density::heatmap::DEFAULT_BANDWIDTH)
    }
    pub fn kernel_or_default(&self) -> crate::density::heatmap::Kernel {
        self.kernel.unwrap_or_default()
    }
    pub fn shading(&self) -> crate::image::raster::Shading {
        crate::image::raster::Shading {
            colormap: self.colormap,
            norm: self.norm,
        }
    }
}

/// Options of `memodiff resume`.
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The --out folder of the stopped run (it holds `checkpoint/`).
    pub dir: PathBuf,
}

/// Parse a kernel bandwidth: a finite number > 0.
pub fn parse_bandwidth(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 => Ok(h),
        Ok(h) => Err(format!(
            "'{text}': the bandwidth must be finite and > 0, got {h}"
        )),
        Err(_) => Err(format!("'{text}' is not a number")),
    }
}

/// Parse a count: digits with optional `_` or `,` separators, or an integral `1e6`.
pub fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let cleaned: String = text.chars().filter(|c| *c != '_' && *c != ',').collect();
    if let Ok(v) = cleaned.parse::<u64>() {
        return Ok(v);
    }
    match cleaned.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19 => Ok(v as u64),
        _ => Err(format!("'{text}' is not a whole non-negative number")),
    }
}

fn parse_count_usize(text: &str) -> std::result::Result<usize, String> {
    parse_count(text).and_then(|v| usize::try_from(v).map_err(|_| format!("{v} is too large")))
}

/// Parse `N` or `WxH` (each 1..=16384). Too large a size is refused with the memory its
/// two images (f64 densities and RGB pixels, 11 bytes a pixel each) would need.
pub fn parse_resolution(text: &str) -> std::result::Result<(usize, usize), String> {
    const MAX: u64 = 16384;
    let (w, h) = text.split_once(['x', 'X']).unwrap_or((text, text));
    let side = |s: &str| s.trim().parse::<u64>().ok();
    match (side(w), side(h)) {
        (Some(w @ 1..=MAX), Some(h @ 1..=MAX)) => Ok((w as usize, h as usize)),
        (Some(w), Some(h)) if (w > MAX || h > MAX) && w > 0 && h > 0 => Err(format!(
            "'{text}': each side must be in 1..={MAX} pixels; two {w}x{h} images would \
             need {}",
            crate::io::human_bytes(22 * u128::from(w) * u128::from(h))
        )),
        _ => Err(format!(
            "'{text}': each side must be a whole number in 1..={MAX}"
        )),
    }
}

/// Everything about a finished `sample` run, as written to run.json.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub memodiff_version: &'static str,
    pub command: Vec<String>,
    pub parameters: RunParameters,
    pub backend: &'static str,
    pub backend_requested: &'static str,
    pub backend_note: Option<String>,
    pub device: String,
    pub timings_s: Timings,
    /// Exact culling of the score's (particle, training point) pairs, as the engine
    /// counted it in this process, where the engine culls (cpu engine, D > 4); absent
    /// elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culled_pairs: Option<CulledPairs>,
    pub memorization: MemorizationSummary,
    pub files: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RunParameters {
    /// Particles of the whole run (all shards).
    pub particles: u64,
    /// The shard this folder holds, if any, and its particle-index range [start, end).
    pub shard: Option<crate::run::driver::Shard>,
    pub particle_range: [u64; 2],
    pub time_points: usize,
    pub steps: usize,
    /// The integrator (`em` or `heun`).
    pub sampler: SamplerKind,
    pub seed: u64,
    pub beta_min: f64,
    pub beta_max: f64,
    pub dataset: String,
    pub data_seed: u64,
    pub n_train: usize,
    pub dim: usize,
    /// (H, W, C) of one image, for image training sets.
    pub image_shape: Option<crate::model::dataset::ImageShape>,
    pub batch_size: usize,
    pub batches: usize,
    pub samples_extent: [f64; 4],
    pub initial_extent: [f64; 4],
    pub resolution: [usize; 2],
    pub kernel_bandwidth: f64,
    pub kernel: crate::density::heatmap::Kernel,
    pub colormap: &'static str,
    pub norm: crate::image::raster::Norm,
    pub png16: bool,
    /// `--score`: `{"kind": "empirical"}` or `{"kind": "kde", "h": ...}`.
    pub score: crate::model::schedule::ScoreKind,
    /// `--t-min` (0: the reverse process runs to t = 0).
    pub t_min: f64,
    /// Where the metrics' nearest neighbours were found ("gpu" or "cpu"; exact either way).
    pub nearest_neighbours_on: &'static str,
    /// Where the density grids were computed (samples on the engine's GPU where it can
    /// serve the grid; see docs/density-images.md).
    pub density_on: crate::run::folder::DensityOn,
}

#[derive(Debug, Serialize)]
pub struct CulledPairs {
    pub pairs: u64,
    pub culled: u64,
    pub fraction: f64,
}

#[derive(Debug, Serialize)]
pub struct Timings {
    pub setup: f64,
    pub sampling: f64,
    pub outputs: f64,
    pub finish: f64,
    pub total: f64,
}

fn extent_array(e: &Extent) -> [f64; 4] {
    [e.xmin, e.xmax, e.ymin, e.ymax]
}

/// A progress bar over the time steps, drawn only when stdout is a terminal.
struct StepBar {
    bar: Option<indicatif::ProgressBar>,
    particles: u64,
}

impl driver::Progress for StepBar {
    fn start(&mut self, total: u64) {
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total / self.particles.max(1)),
                indicatif::ProgressDrawTarget::stdout(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} sampling [{bar:40}] step {pos}/{len} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
    }
    fn advance_to(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done / self.particles.max(1));
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Refuse a run whose samples.npy and initial.npy (P x D f32 each) cannot fit in the free
/// space of the file system of `out`, before anything is allocated or written.
fn check_free_space(config: &SampleConfig, out: &std::path::Path) -> Result<()> {
    let range = config.particle_range();
    let rows = u128::from(range.end.saturating_sub(range.start));
    let needed = rows * config.dataset.dim as u128 * 4 * 2;
    let Some(free) = crate::io::available_space(out) else {
        return Ok(()); // unknown here: the writes themselves will report a full disk
    };
    if needed > u128::from(free) {
        return Err(crate::Error::invalid(
            "--particles",
            format!(
                "samples.npy and initial.npy for {rows} particles of dimension {} would need \
                 {needed} bytes ({}), but {} has only {free} bytes ({}) free; use fewer \
                 particles, --shard k/n or --no-samples",
                config.dataset.dim,
                crate::io::human_bytes(needed),
                out.display(),
                crate::io::human_bytes(u128::from(free)),
            ),
        ));
    }
    Ok(())
}

/// Refuse an existing non-empty folder `out` (a run would replace files in it): the user
/// must say `--force`. A missing folder, an empty one or a non-folder (reported later by
/// `prepare_dir`) passes.
pub(crate) fn refuse_non_empty_out(out: &std::path::Path) -> Result<()> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if non_empty {
        return Err(crate::Error::Output(format!(
            "the --out folder {} exists and is not empty; pass --force to write into it \
             (files of the same names are replaced) or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// `memodiff sample`: run, write the folder, print a summary.
pub fn sample(args: &SampleArgs) -> Result<RunReport> {
    let started = Instant::now();
    let dataset: Dataset = Dataset::parse_seeded(&args.dataset, args.data_seed)?;
    let image_grid = match args.image_grid {
        Some(count) => Some((
            crate::plot::image_grid::validate(&dataset, count, !args.no_samples)?,
            count,
        )),
        None => None,
    };
    let config = SampleConfig {
        particles: args.particles,
        time_points: args.steps,
        seed: args.seed,
        schedule: VpSchedule::new(args.beta_min, args.beta_max),
        dataset,
        batch: args.batch,
        shard: args.shard,
        sampler: args.sampler,
        score: args.score,
        t_min: args.t_min,
    };
    if !args.no_samples {
        check_free_space(&config, &args.out)?;
    }
    config.validate()?;
    match args.checkpoint_every {
        Some(0) => {
            return Err(crate::Error::invalid(
                "--checkpoint-every",
                "must be at least 1",
            ))
        }
        Some(_) if args.backend == Backend::Reference => {
            return Err(crate::Error::invalid(
                "--checkpoint-every",
                "cannot be used with --backend reference: its f64 state is rounded to f32 \
                 at a checkpoint, so a resumed run would not be bit-identical; use cpu or gpu",
            ))
        }
        _ => {}
    }
    crate::plot::run_figures::check_args(args, &config)?;
    if !args.force {
        refuse_non_empty_out(&args.out)?;
    }
    let (width, height) = args.image.resolution_or_default();
    let images = ImageSettings {
        extent: args.image.extent_or_default(),
        width,
        height,
        write_arrays: !args.no_samples,
        write_raw_grids: args.shard.is_some(),
        bandwidth: args.image.bandwidth_or_default(),
        colormap: args.image.colormap,
        kernel: args.image.kernel_or_default(),
        norm: args.image.norm,
        png16: args.image.png16,
        ..ImageSettings::default()
    };
    // Open the engine before touching --out: a run that cannot start writes nothing.
    let (engine, note) = driver::open_engine_on(args.backend, config.schedule, args.device)?;
    if let Some(note) = &note {
        println!("{note}");
    }
    prepare_dir(&args.out)?;
    let range = config.particle_range();
    let particles = range.end - range.start;
    let command: Vec<String> = std::env::args().collect();
    let folder = match args.checkpoint_every {
        None => RunFolder::create(&args.out, particles, &config.dataset, &images)?,
        Some(every) => {
            // A checkpoint left by an earlier run in this folder (--force) is stale.
            crate::run::checkpoint::remove(&args.out)?;
            let e = images.extent;
            let spec = crate::run::checkpoint::RunSpec {
                particles: config.particles,
                time_points: config.time_points,
                seed: config.seed,
                beta_min_bits: config.schedule.beta_min.to_bits(),
                beta_max_bits: config.schedule.beta_max.to_bits(),
                dataset: config.dataset.name.clone(),
                shard: config.shard.map(|s| [s.index, s.count]),
                batch_size: driver::batch_size(&config, engine.as_ref()),
                extent_bits: [e.xmin, e.xmax, e.ymin, e.ymax].map(f64::to_bits),
                resolution: [images.width, images.height],
                bandwidth_bits: images.bandwidth.to_bits(),
                colormap: images.colormap.name().to_string(),
                kernel: images.kernel,
                norm: images.norm,
                png16: images.png16,
                write_arrays: images.write_arrays,
                checkpoint_every: every,
                sampler: config.sampler,
                backend_requested: args.backend.name().to_string(),
                backend: engine.backend().name().to_string(),
                device_name: engine.device_name(),
                device_index: args.device,
                backend_note: note.clone(),
                command: command.clone(),
                posterior_records: args.posterior_records,
                posterior_particles: args.posterior_particles,
                score: config.score,
                t_min_bits: config.t_min.to_bits(),
                data_seed: args.data_seed,
            };
            RunFolder::create_checkpointed(&args.out, particles, &config.dataset, &images, spec)?
        }
    };
    let mut folder =
        folder.with_figures(crate::plot::run_figures::from_args(args, &config, &images)?);
    let plan = posterior_plan(&config, args.posterior_records, args.posterior_particles);
    folder.set_metrics(crate::metrics::measure::MetricsSink::new(&config, plan)?);
    let checkpoints = driver::Checkpoints {
        every: args.checkpoint_every,
        resume: None,
    };
    let run = Prepared {
        started,
        config,
        images,
        engine,
        note,
        backend_requested: args.backend.name(),
        command,
        image_grid,
        data_seed: args.data_seed,
    };
    complete(run, &args.out, folder, checkpoints)
}

/// The posterior-concentration recording of `--posterior-records R --posterior-particles M`
/// (none when either is 0).
fn posterior_plan(
    config: &SampleConfig,
    records: usize,
    particles: u64,
) -> Option<crate::metrics::measure::PosteriorPlan> {
    (records > 0 && particles > 0).then(|| {
        crate::metrics::measure::PosteriorPlan::spread(config.time_points - 1, records, particles)
    })
}

/// What `sample` and `resume` have set up before sampling.
struct Prepared {
    started: Instant,
    config: SampleConfig,
    images: ImageSettings,
    engine: Box<dyn crate::engine::Engine>,
    note: Option<String>,
    backend_requested: &'static str,
    command: Vec<String>,
    /// `--image-grid K`: the image shape and K.
    image_grid: Option<(crate::model::dataset::ImageShape, usize)>,
    data_seed: u64,
}

/// Sample into `folder`, finish it, write run.json and print the summary (`sample` and
/// `resume`). A checkpointed run removes its checkpoint once everything is written.
fn complete(
    run: Prepared,
    out: &std::path::Path,
    mut folder: RunFolder,
    checkpoints: driver::Checkpoints,
) -> Result<RunReport> {
    let Prepared {
        started,
        config,
        images,
        mut engine,
        note,
        backend_requested,
        command,
        image_grid,
        data_seed,
    } = run;
    let checkpointed = checkpoints.every.is_some();
    // The metrics' nearest neighbours on the run's GPU, when it has one (exact either way).
    let nearest_on = match engine.gpu_context() {
        Some(ctx) => {
            folder.use_gpu_nearest(ctx)?;
            "gpu"
        }
        None => "cpu",
    };
    let density_on = folder.use_gpu_density(engine.gpu_context(), config.t_min);
    let range = config.particle_range();
    let setup = started.elapsed().as_secs_f64();
    let mut bar = StepBar {
        bar: None,
        particles: range.end - range.start,
    };
    let timing: SampleTiming = driver::run_checkpointed(
        &config,
        engine.as_mut(),
        &mut folder,
        &mut bar,
        &INTERRUPTED,
        checkpoints,
    )
    .map_err(|e| match e {
        crate::Error::Interrupted(m) if checkpointed => crate::Error::Interrupted(format!(
            "{m}; `memodiff resume {}` continues the run",
            out.display()
        )),
        e => e,
    })?;

    let finishing = Instant::now();
    let (mut files, metrics) = folder.finish()?;
    if let Some((shape, count)) = image_grid {
        crate::plot::image_grid::write(
            &out.join("samples.npy"),
            &config.dataset,
            shape,
            count,
            &out.join("samples_grid.png"),
        )?;
        files.push("samples_grid.png".into());
    }
    if config.dataset.dim != 2 {
        println!(
            "dataset has D = {}: density images are drawn for D = 2 only, skipping the PNGs",
            config.dataset.dim
        );
    }
    files.push("run.json".into());
    let finish = finishing.elapsed().as_secs_f64();
    let report = RunReport {
        memodiff_version: env!("CARGO_PKG_VERSION"),
        command,
        parameters: RunParameters {
            particles: config.particles,
            shard: config.shard,
            particle_range: [range.start, range.end],
            time_points: config.time_points,
            steps: config.time_points - 1,
            sampler: config.sampler,
            seed: config.seed,
            beta_min: config.schedule.beta_min,
            beta_max: config.schedule.beta_max,
            dataset: config.dataset.name.clone(),
            data_seed,
            n_train: config.dataset.len(),
            dim: config.dataset.dim,
            image_shape: config.dataset.image_shape,
            batch_size: timing.batch_size,
            batches: timing.batches,
            samples_extent: extent_array(&images.extent),
            initial_extent: extent_array(&images.initial_extent),
            resolution: [images.width, images.height],
            kernel_bandwidth: images.bandwidth,
            kernel: images.kernel,
            colormap: images.colormap.name(),
            norm: images.norm,
            png16: images.png16,
            score: config.score,
            t_min: config.t_min,
            nearest_neighbours_on: nearest_on,
            density_on,
        },
        backend: engine.backend().name(),
        backend_requested,
        backend_note: note,
        device: engine.device_name(),
        timings_s: Timings {
            setup,
            sampling: timing.sampling_s,
            outputs: timing.consume_s,
            finish,
            total: started.elapsed().as_secs_f64(),
        },
        culled_pairs: engine.pair_counts().map(|(pairs, culled)| CulledPairs {
            pairs,
            culled,
            fraction: culled as f64 / pairs as f64,
        }),
        memorization: metrics.summary(),
        files,
    };
    crate::io::write_json(&out.join("run.json"), &report)?;
    if checkpointed {
        crate::run::checkpoint::remove(out)?;
    }
    print_summary(&report, out);
    Ok(report)
}

/// `memodiff resume DIR`: continue a checkpointed run from `DIR/checkpoint/` on the backend
/// and device it used, then finish it exactly like `sample`.
pub fn resume(args: &ResumeArgs) -> Result<RunReport> {
    let started = Instant::now();
    let out = &args.dir;
    let mut saved = crate::run::checkpoint::load(out)?;
    let spec = saved.meta.run.clone();
    let bad = |why: String| crate::Error::invalid("checkpoint", why);
    let backend = <Backend as clap::ValueEnum>::from_str(&spec.backend, false)
        .map_err(|_| bad(format!("unknown backend '{}'", spec.backend)))?;
    let backend_requested = <Backend as clap::ValueEnum>::from_str(&spec.backend_requested, false)
        .map_err(|_| bad(format!("unknown backend '{}'", spec.backend_requested)))?;
    if backend == Backend::Reference {
        return Err(bad(
            "the reference backend cannot resume bit-identically".into()
        ));
    }
    let colormap =
        <crate::image::colormap::Colormap as clap::ValueEnum>::from_str(&spec.colormap, false)
            .map_err(|_| bad(format!("unknown colormap '{}'", spec.colormap)))?;
    let config = SampleConfig {
        particles: spec.particles,
        time_points: spec.time_points,
        seed: spec.seed,
        schedule: VpSchedule::new(
            f64::from_bits(spec.beta_min_bits),
            f64::from_bits(spec.beta_max_bits),
        ),
        dataset: saved.training.clone(),
        batch: Some(spec.batch_size),
        shard: spec
            .shard
            .map(|[index, count]| crate::run::driver::Shard { index, count }),
        sampler: spec.sampler,
        score: spec.score,
        t_min: f64::from_bits(spec.t_min_bits),
    };
    config.validate()?;
    let [xmin, xmax, ymin, ymax] = spec.extent_bits.map(f64::from_bits);
    let images = ImageSettings {
        extent: Extent::new(xmin, xmax, ymin, ymax)?,
        width: spec.resolution[0],
        height: spec.resolution[1],
        write_arrays: spec.write_arrays,
        write_raw_grids: spec.shard.is_some(),
        bandwidth: f64::from_bits(spec.bandwidth_bits),
        colormap,
        kernel: spec.kernel,
        norm: spec.norm,
        png16: spec.png16,
        ..ImageSettings::default()
    };
    // The same backend and device as the stopped run, or nothing.
    let (engine, _) = driver::open_engine_on(backend, config.schedule, spec.device_index)?;
    if engine.backend() != backend || engine.device_name() != spec.device_name {
        return Err(bad(format!(
            "the run used the {} backend on {}, but this resume got the {} backend on {}; \
             results would not be bit-identical, so it is refused",
            spec.backend,
            spec.device_name,
            engine.backend().name(),
            engine.device_name()
        )));
    }
    if driver::batch_size(&config, engine.as_ref()) != spec.batch_size {
        return Err(bad(format!(
            "the batch size {} of the run does not fit this device",
            spec.batch_size
        )));
    }
    let range = config.particle_range();
    let plan = posterior_plan(&config, spec.posterior_records, spec.posterior_particles);
    let metrics = crate::metrics::measure::MetricsSink::new(&config, plan)?;
    let folder = RunFolder::resume(out, range.end - range.start, &images, &mut saved, metrics)?;
    let at = &saved.meta;
    println!(
        "resuming {} from {}: batch {} at step {} of {}",
        out.display(),
        crate::run::checkpoint::CHECKPOINT_DIR,
        at.batches_done + 1,
        at.step,
        config.time_points - 1
    );
    let checkpoints = driver::Checkpoints {
        every: Some(spec.checkpoint_every),
        resume: Some(std::mem::take(&mut saved.resume)),
    };
    let run = Prepared {
        started,
        config,
        images,
        engine,
        note: spec.backend_note.clone(),
        backend_requested: backend_requested.name(),
        command: spec.command.clone(),
        // Not redrawn on resume: training.npy keeps the points, not the image shape.
        image_grid: None,
        data_seed: spec.data_seed,
    };
    complete(run, out, folder, checkpoints)
}

fn print_summary(r: &RunReport, out: &std::path::Path) {
    let p = &r.parameters;
    let rate = (p.particles as f64 * p.steps as f64) / r.timings_s.sampling.max(1e-9);
    println!(
        "{} particles, dataset {} (N = {}, D = {}), {} steps ({}), seed {}",
        p.particles,
        p.dataset,
        p.n_train,
        p.dim,
        p.steps,
        p.sampler.name(),
        p.seed
    );
    println!("backend {} on {}", r.backend, r.device);
    println!(
        "sampling {:.3} s ({:.1} M particle-steps/s), total {:.3} s",
        r.timings_s.sampling,
        rate / 1e6,
        r.timings_s.total
    );
    let m = &r.memorization;
    println!(
        "memorized: {:.2}% of samples within 0.05 and {:.2}% within 0.1 of a training point",
        100.0 * m.fraction_within_0_05,
        100.0 * m.fraction_within_0_1
    );
    print_memorization(m);
    println!("wrote {}: {}", out.display(), r.files.join(", "));
}

/// The ratio-criterion and posterior lines of a run's summary.
pub fn print_memorization(m: &MemorizationSummary) {
    let [lo, hi] = m.memorized_interval_95;
    println!(
        "memorized (d1/d2 < 1/3): {:.2}% [95% bootstrap {:.2}%, {:.2}%]; {} of {} training \
         points reproduced, {} nearest to some sample",
        100.0 * m.memorized_fraction,
        100.0 * lo,
        100.0 * hi,
        m.distinct_memorized,
        m.nearest_counts.len(),
        m.distinct_nearest
    );
    if let Some(c) = &m.occupancy_chi_square {
        println!(
            "occupancy of the training points vs uniform: chi-square {:.4} on {} dof, p = {:.4}",
            c.statistic, c.dof, c.p_value
        );
    }
    if let Some(points) = &m.posterior {
        let line: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.3}:{:.3}/{:.3}",
                    p.ou_time, p.mean_max_weight, p.fraction_argmax_final
                )
            })
            .collect();
        println!(
            "posterior concentration (OU time: mean max w / argmax = final nearest), {} particles: {}",
            points.first().map_or(0, |p| p.particles),
            line.join(" ")
        );
    }
}

/// `memodiff bench`: run the matrix, print a markdown table, optionally write JSON.
pub fn bench(args: &BenchArgs) -> Result<()> {
    if args.repeats == 0 {
        return Err(crate::Error::invalid("--repeats", "must be at least 1"));
    }
    if args.steps < 2 {
        return Err(crate::Error::invalid("--steps", "must be at least 2"));
    }
    if args.particles.contains(&0) || args.training_points.contains(&0) || args.dims.contains(&0) {
        return Err(crate::Error::invalid(
            "--particles/--training-points/--dims",
            "must be at least 1",
        ));
    }
    if args.max_cell_seconds.is_nan() || args.max_cell_seconds < 0.0 {
        return Err(crate::Error::invalid(
            "--max-cell-seconds",
            "must be a number of seconds, 0 or more",
        ));
    }
    if args.backends.contains(&Backend::Auto) {
        return Err(crate::Error::invalid(
            "--backends",
            "name the backends to measure: gpu, cpu, reference",
        ));
    }
    let cells = if args.cells.is_empty() {
        crate::commands::bench::BenchCell::grid(&args.particles, &args.training_points, &args.dims)
    } else {
        args.cells.clone()
    };
    let plan = crate::commands::bench::BenchPlan {
        cells,
        backends: args.backends.clone(),
        time_points: args.steps,
        warmup: args.warmup,
        repeats: args.repeats,
        max_cell_seconds: args.max_cell_seconds,
        cull: args.cull,
    };
    let interactive = std::io::stderr().is_terminal();
    let rows = crate::commands::bench::run(&plan, &mut |row| {
        if interactive {
            let what = match (row.median_s, &row.note) {
                (Some(m), _) => format!("{m:.4} s"),
                (None, Some(note)) => note.clone(),
                _ => String::new(),
            };
            eprintln!(
                "{} P={} N={} D={}: {what}",
                row.backend, row.particles, row.training_points, row.dim
            );
        }
    })?;
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let table = crate::commands::bench::markdown(&rows);
    if json_to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    if let Some(path) = &args.json {
        let report = crate::commands::bench::BenchReport {
            machine: crate::commands::bench::Machine::detect(),
            adapters: crate::engine::gpu::context::describe_adapters(),
            time_points: plan.time_points,
            warmup: plan.warmup,
            repeats: plan.repeats,
            max_cell_seconds: plan.max_cell_seconds,
            cull: plan.cull,
            rows,
        };
        if json_to_stdout {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("the report serializes")
            );
        } else {
            crate::io::write_json(path, &report)?;
        }
    }
    Ok(())
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sample(args) => sample(&args).map(|_| ()),
        Command::Bench(args) => bench(&args),
        Command::Merge(args) => merge(&args),
        Command::Resume(args) => resume(&args).map(|_| ()),
        Command::Devices(args) => devices(&args),
        Command::Render(args) => render(&args).map(|_| ()),
        Command::ScoreField(args) => crate::commands::score_field::run(&args).map(|_| ()),
        Command::Collapse(args) => crate::commands::collapse::run(&args).map(|_| ()),
        Command::Sweep(args) => crate::commands::sweep::run(&args).map(|_| ()),
    }
}

/// Options of `memodiff merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shard folders, all n of them, in any order (e.g. `run/shard-*`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    /// Output folder of the merged run (created if missing; not one of the inputs).
    #[arg(long)]
    pub out: PathBuf,
}

/// `memodiff merge`: see [`crate::commands::merge`].
pub fn merge(args: &MergeArgs) -> Result<()> {
    let report = crate::commands::merge::merge(&args.inputs, &args.out)?;
    println!(
        "merged {} shards, {} particles; wrote {}: {}",
        report.shards,
        report.particles,
        args.out.display(),
        report.files.join(", ")
    );
    Ok(())
}

/// Options of `memodiff render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Inputs, summed: particle files ((P, 2) float32/float64 `.npy`, or `.csv` of x,y rows)
    /// and density grids (an f32 (H, W) `.npy` with its `.json` sidecar, as `sample` and
    /// `render --grid` write them). All grids must have the same size, extent and kernel.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,

    /// The PNG to write (replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,

    /// Also write the summed density grid here: f32 `.npy` (row 0 = top) plus its `.json`
    /// sidecar (extent, kernel, bandwidth, particles, min, max), for re-shading or summing.
    #[arg(long)]
    pub grid: Option<PathBuf>,

    #[command(flatten)]
    pub image: ImageArgs,

    /// Where particles are deposited: `auto` uses a hardware GPU if there is one and the CPU
    /// otherwise; `gpu` any adapter (lavapipe included); `cpu` the f64 CPU deposit, which
    /// reproduces the images `sample` writes byte for byte (the GPU's f32 weights differ
    /// from it by ~1e-5 of a peak). Small bandwidths and the histogram kernel always use
    /// the CPU.
    #[arg(long, value_enum, default_value_t = RenderBackend::Auto)]
    pub backend: RenderBackend,

    /// Also write a framed figure next to the image, OUT_figure.png for --out OUT.png:
    /// title, x/y axes with ticks, the image itself (the PNG's very colours, same norm,
    /// colormap and kernel, bilinearly resampled into the plot area) and a colorbar whose
    /// ticks follow the norm. Works at any --resolution: the figure keeps only the pixels
    /// its plot area reads (memory bounded by the figure's size, not the image's).
    #[arg(long, help_heading = "Figures")]
    pub figure: bool,

    /// Size of the figure in pixels, `WxH` or `N` for N×N (160..8192 a side; the image
    /// keeps --resolution).
    #[arg(long, default_value = "720x600", value_parser = crate::plot::figure::parse_size, help_heading = "Figures")]
    pub figure_size: (u32, u32),

    /// Mark these points with rings on the figure: a (N, 2) `.npy` (float32/float64) or a
    /// `.csv` of x,y rows, e.g. the training set. Needs --figure.
    #[arg(long, value_name = "FILE", help_heading = "Figures")]
    pub markers: Option<PathBuf>,

    /// Title of the figure (`\n` starts a new line) [default: the image's file name, then
    /// the particles, kernel and norm].
    #[arg(long, help_heading = "Figures")]
    pub title: Option<String>,
}

impl RenderArgs {
    /// Where `--figure` goes: OUT_figure.png next to --out.
    pub fn figure_path(&self) -> PathBuf {
        let stem = self.out.file_stem().unwrap_or_default().to_string_lossy();
        self.out.with_file_name(format!("{stem}_figure.png"))
    }
}

/// Where `render` deposits particles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderBackend {
    /// A hardware GPU if there is one, otherwise the CPU.
    Auto,
    /// Any wgpu adapter, software ones (lavapipe) included.
    Gpu,
    /// The exact f64 CPU deposit (what `sample` uses).
    Cpu,
}

/// `memodiff render`: see [`RenderArgs`]. Returns the sidecar of the grid drawn.
pub fn render(args: &RenderArgs) -> Result<crate::image::grid_file::GridMeta> {
    use crate::density::heatmap::DensityGrid;
    use crate::image::grid_file::{GridFile, GridMeta};
    use crate::image::raster::{GridOutputs, GridSum};
    if args.out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(crate::Error::invalid(
            "--out",
            format!("{}: the image must be a .png file", args.out.display()),
        ));
    }
    if !args.figure && (args.markers.is_some() || args.title.is_some()) {
        return Err(crate::Error::invalid(
            if args.markers.is_some() {
                "--markers"
            } else {
                "--title"
            },
            "belongs to the framed figure; add --figure",
        ));
    }
    // Read before any work, so that a bad file writes nothing.
    let markers: Vec<(f64, f64)> = match &args.markers {
        Some(path) => read_particles(path)
            .map_err(|e| crate::Error::invalid("--markers", e.to_string()))?
            .chunks_exact(2)
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect(),
        None => Vec::new(),
    };
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let figure_path = args.figure.then(|| args.figure_path());
    for input in &args.inputs {
        let same = |o: &Option<PathBuf>| {
            o.as_ref()
                .is_some_and(|o| canon(o).is_some() && canon(o) == canon(input))
        };
        if same(&Some(args.out.clone())) || same(&args.grid) || same(&figure_path) {
            return Err(crate::Error::invalid(
                "--out",
                format!("{} is also an input", input.display()),
            ));
        }
    }
    // Sort the inputs: density grids (an f32 .npy with a sidecar) and particle files.
    let mut files = Vec::new();
    let mut particle_inputs = Vec::new();
    for input in &args.inputs {
        if crate::image::grid_file::is_declared_f32_grid(input) {
            files.push(GridFile::open(input)?);
        } else {
            particle_inputs.push(input.clone());
        }
    }
    // The grid's shape: the flags, else the first density grid's, else the defaults.
    let first = files.first().map(|f| f.meta.clone());
    let extent = match (args.image.extent, &first) {
        (Some(e), _) => e,
        (None, Some(m)) => crate::image::grid_file::meta_extent(m)?,
        (None, None) => args.image.extent_or_default(),
    };
    let (width, height) = match (args.image.resolution, &first) {
        (Some(r), _) => r,
        (None, Some(m)) => (m.width, m.height),
        (None, None) => args.image.resolution_or_default(),
    };
    let bandwidth = args
        .image
        .bandwidth
        .or(first.as_ref().map(|m| m.bandwidth))
        .unwrap_or(crate::density::heatmap::DEFAULT_BANDWIDTH);
    let kernel = args
        .image
        .kernel
        .or(first.as_ref().map(|m| m.kernel))
        .unwrap_or_default();
    let mut grid = DensityGrid::with_kernel(extent, width, height, bandwidth, kernel)?;
    let want = GridMeta::of(&grid);
    for f in &files {
        if !want.same_shape(&f.meta) {
            return Err(crate::Error::invalid(
                "render",
                format!(
                    "cannot sum density grids of different shapes: {} is {}, but the image is {}",
                    f.path().display(),
                    f.meta.describe(),
                    want.describe()
                ),
            ));
        }
    }
    // The GPU deposits particles on the sub-grid; cpu (and grids the GPU path does not
    // cover: small bandwidths, the histogram kernel) use the exact f64 CPU deposit. No
    // device is opened when there are no particles to deposit.
    let gpu = match args.backend {
        _ if particle_inputs.is_empty() || grid.sub_grid().is_none() => None,
        RenderBackend::Gpu => Some(crate::engine::gpu::raster::GpuRaster::new(
            crate::engine::gpu::GpuContext::new(crate::engine::gpu::AdapterChoice::Any)?,
        )),
        RenderBackend::Auto => {
            crate::engine::gpu::GpuContext::new(crate::engine::gpu::AdapterChoice::HardwareOnly)
                .ok()
                .map(crate::engine::gpu::raster::GpuRaster::new)
        }
        RenderBackend::Cpu => None,
    };
    let gpu = gpu.filter(|g| g.supports(&grid));
    // Large direct-path images (the histogram kernel, bandwidths under ~1.5 pixels) are
    // computed band by band from the particles, not summed into 8 bytes a pixel first.
    let banded = gpu.is_none()
        && grid.sub_grid().is_none()
        && width * height > crate::image::raster::IN_MEMORY_PIXELS;
    let mut held: Vec<f32> = Vec::new();
    for input in &particle_inputs {
        let points = read_particles(input)?;
        match &gpu {
            Some(g) => g.accumulate(&mut grid, &points)?,
            None if banded => held.extend_from_slice(&points),
            None => grid.accumulate(&points),
        }
    }
    let held_particles = (held.len() / 2) as u64;
    let point_rows = crate::image::raster::PointRows {
        grid: &grid,
        points: &held,
    };
    let mut meta = want;
    meta.particles =
        grid.deposits() + held_particles + files.iter().map(|f| f.meta.particles).sum::<u64>();
    let png16 = args.image.png16.then(|| {
        let stem = args.out.file_stem().unwrap_or_default().to_string_lossy();
        args.out.with_file_name(format!("{stem}_gray16.png"))
    });
    let figure = figure_path.map(|path| crate::image::raster::FigureRequest {
        path,
        size: args.figure_size,
        title: match &args.title {
            Some(t) => t.replace("\\n", "\n"),
            None => format!(
                "{}\n{} particles, {} kernel, {} norm",
                args.out.file_name().unwrap_or_default().to_string_lossy(),
                crate::plot::run_figures::group_thousands(meta.particles),
                kernel.name(),
                args.image.norm.name()
            ),
        },
        quantity: crate::plot::run_figures::quantity_of(kernel).into(),
        markers,
    });
    let outputs = GridOutputs {
        png: Some(args.out.clone()),
        png16,
        npy: args.grid.clone(),
        figure,
    };
    let sum = GridSum {
        width,
        height,
        parts: match (particle_inputs.is_empty(), banded) {
            (true, _) => vec![],
            (false, true) => vec![&point_rows],
            (false, false) => vec![&grid],
        },
        files,
    };
    let meta =
        crate::image::raster::write_grid_outputs(&sum, meta, args.image.shading(), &outputs)?;
    let mut written: Vec<String> = vec![args.out.display().to_string()];
    if let Some(g) = &outputs.npy {
        written.push(g.display().to_string());
        written.push(g.with_extension("json").display().to_string());
    }
    if let Some(p) = &outputs.png16 {
        written.push(p.display().to_string());
    }
    if let Some(f) = &outputs.figure {
        written.push(f.path.display().to_string());
    }
    let device = match &gpu {
        Some(g) if !particle_inputs.is_empty() => g.adapter_name(),
        _ => "the CPU".to_string(),
    };
    println!(
        "rendered {} particles into a {}x{} image ({} kernel, {} norm) on {device}; wrote {}",
        meta.particles,
        width,
        height,
        kernel.name(),
        args.image.norm.name(),
        written.join(", ")
    );
    Ok(meta)
}

/// Particles of a (P, 2) `.npy` (float32 or float64) or `.csv` file, row-major f32 pairs.
fn read_particles(path: &std::path::Path) -> Result<Vec<f32>> {
    let bad = |why: String| crate::Error::invalid("render input", why);
    let is_csv = path.extension().and_then(|e| e.to_str()) == Some("csv");
    let (shape, values) = if is_csv {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
        let data = Dataset::from_csv_bytes(&path.display().to_string(), &bytes)?;
        (vec![data.len(), data.dim], data.points_f32())
    } else {
        match crate::io::read_npy_f32(path) {
            Ok(v) => v,
            Err(_) => {
                // float64 (or not an .npy at all: Dataset's reader names the problem).
                let data = Dataset::parse(&path.display().to_string())?;
                (vec![data.len(), data.dim], data.points_f32())
            }
        }
    };
    if shape.len() != 2 || shape[1] != 2 {
        return Err(bad(format!(
            "{}: expected particles of shape (P, 2) or a density grid with its .json \
             sidecar, got shape {shape:?}",
            path.display()
        )));
    }
    Ok(values)
}

/// Options of `memodiff devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `memodiff devices`: the adapters `--device N` picks from (after `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME` filtering), best first.
pub fn devices(args: &DevicesArgs) -> Result<()> {
    let adapters = crate::engine::gpu::context::describe_adapters();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).expect("serializable")
        );
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no GPU adapters found (on headless Linux: apt-get install mesa-vulkan-drivers)");
        return Ok(());
    }
    println!("| index | name | type | backend | driver | max storage binding | max buffer | max workgroup invocations | timestamps |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for a in &adapters {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.index,
            a.name,
            a.device_type,
            a.backend,
            a.driver,
            a.max_storage_buffer_binding_size,
            a.max_buffer_size,
            a.max_compute_invocations_per_workgroup,
            if a.timestamp_query { "yes" } else { "no" }
        );
    }
    Ok(())
}
