//! `memodiff sample` and `memodiff resume`: build the run from the options, sample into
//! the run folder (checkpointed when asked), write run.json and print the summary.

use crate::cli::options::ImageArgs;
use crate::cli::parse::{parse_count, parse_count_usize, parse_scale};
use crate::cli::print::print_summary;
use crate::cli::progress::StepBar;
use crate::engine::{Backend, SamplerKind};
use crate::error::Result;
use crate::model::dataset::Dataset;
use crate::run::report::RunReport;
use crate::run::spec::{self, ExtraOutputs, RunSpec};
use crate::run::to_folder::{resume_in_folder, sample_to_folder, FolderControl};
use clap::Args;
use std::path::PathBuf;

/// Options of `memodiff sample`. The defaults reproduce the reference memorization
/// experiment: 8 points on the unit circle, beta in [0.001, 3], 100 time points,
/// 1,000,000 particles, seed 0.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Number of particles P (accepts 1000000, 1_000_000 or 1e6). Memory grows as P·D
    /// (two f32 arrays of P×D for the .npy files; a batch's P·D on the device) and time
    /// as P·N·D per step.
    #[arg(long, default_value_t = spec::DEFAULT_PARTICLES, value_parser = parse_count)]
    pub particles: u64,

    /// Number of time points S of the grid linspace(1/(S-1), 1, S): S-1 Euler–Maruyama steps.
    #[arg(long, default_value_t = spec::DEFAULT_TIME_POINTS)]
    pub steps: usize,

    /// Seed of the Philox streams: particle i's noise depends only on (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// beta(t) at t = 0 (linear schedule beta_min + t (beta_max - beta_min)).
    #[arg(long, default_value_t = spec::DEFAULT_BETA_MIN, allow_negative_numbers = true)]
    pub beta_min: f64,

    /// beta(t) at t = 1.
    #[arg(long, default_value_t = spec::DEFAULT_BETA_MAX, allow_negative_numbers = true)]
    pub beta_max: f64,

    /// The noise schedule: `vp-linear` (the tutorial's linear beta from --beta-min to
    /// --beta-max), `vp-cosine` (alpha_bar(t) = cos^2(pi t / 2.016), as in Kamb &
    /// Ganguli's code) or `edm` (Karras et al.: x_t = x_0 + t z, data unscaled, --steps
    /// S points of their rho = 7 grid from sigma = 80 to 0.002 and then 0, from N(0, 80^2
    /// I); with --sampler heun their deterministic sampler). --beta-min and --beta-max
    /// apply to vp-linear only.
    #[arg(long, value_enum, default_value_t = crate::model::schedule::ScheduleShape::Linear)]
    pub schedule: crate::model::schedule::ScheduleShape,

    /// The forward time of the first step: the grid then runs in --steps - 1 equal steps
    /// from it down to --t-min, starting from N(0, I) as DDIM code does (without it: the
    /// tutorial's grid, linspace(1/(S-1), 1, S) in reverse time, from N(0, sigma2(1) I)).
    #[arg(long, value_name = "T0")]
    pub grid_start: Option<f64>,

    /// eta of `--sampler ddim`, in [0, 1]: 0 (the default) is deterministic DDIM; eta > 0
    /// replaces part of each step's predicted noise by fresh noise, 1 being the DDPM
    /// posterior's variance (Song et al., eq. 16).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,

    /// A published set-up in one flag: `kamb-ganguli` (Kamb & Ganguli, ICML 2025: the
    /// cosine schedule, deterministic DDIM on t_i = i/20, 19 updates from N(0, I) at
    /// t = 0.95) or `gu-memorization` (Gu et al. 2023: EDM with Heun, 18 steps; memorized
    /// = d1/d2 < 1/3 as in run.json); both for training data in [-1, 1]. Sets --schedule,
    /// --sampler, --steps and --grid-start, which cannot be given with it.
    #[arg(long, value_enum, conflicts_with_all = ["schedule", "sampler", "steps", "grid_start", "eta"])]
    pub preset: Option<spec::Preset>,

    /// Training set: `circle:N` (N points on the unit circle); `gaussian:N:D[:sigma]` (N
    /// points from N(0, sigma^2 I), sigma = 1); `two-gaussians:N:D[:sigma]` (half around
    /// +(1,...,1), half around -(1,...,1)); `moons:N[:noise]` (scikit-learn's two moons);
    /// `spiral:N` (two turns of a spiral); `grid:K` (K x K points on [-1,1]^2); `digits`
    /// (scikit-learn's 1,797 8×8 digits in [0, 1], with labels, once exported by
    /// `scripts/export-digits.py`); a `.npy` file of shape (N, D) in f32/f64, or of images
    /// (N, H, W) / (N, H, W, C) in f32/f64 or uint8 (with --scale), flattened to D = H W C;
    /// or a `.csv` file of N rows of D numbers. D may be 1 to 4096 (e.g. 28×28
    /// images = 784, 32×32×3 = 3072); D ≤ 4 runs on the fastest kernels. Time grows as
    /// P·N·D per step; the GPU holds the N×D points (padded to a multiple of 4) in one
    /// storage buffer and a batch's particles in buffers of P·D floats, and refuses with
    /// the numbers what exceeds its largest storage buffer binding.
    #[arg(long, default_value = spec::DEFAULT_DATASET)]
    pub dataset: String,

    /// Seed of the random training sets (gaussian, two-gaussians, noisy moons): the set
    /// depends only on its spec and this seed, not on --seed.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,

    /// uint8 images (MNIST, CIFAR-10 in their native form): map 0..255 linearly onto LO,HI,
    /// e.g. `--scale 0,1` or `--scale -1,1`. Required for uint8 data, refused for floats.
    #[arg(long, value_name = "LO,HI", value_parser = parse_scale, allow_hyphen_values = true)]
    pub scale: Option<(f64, f64)>,

    /// The training images' labels: a .npy of shape (N,) of integers, one per image (the
    /// digits bring their own). Used with --class.
    #[arg(long, value_name = "FILE.npy", requires = "class")]
    pub labels: Option<PathBuf>,

    /// Keep only the training images of this class (class-conditional sampling), by the
    /// labels of --labels or of the digits.
    #[arg(long, value_name = "C", allow_hyphen_values = true)]
    pub class: Option<i64>,

    /// Image training sets: draw the first K samples back as images, each next to its
    /// nearest training image, into samples_grid.png.
    #[arg(long, value_name = "K", value_parser = parse_count_usize)]
    pub image_grid: Option<usize>,

    /// Where to run: `auto` uses a hardware GPU if there is one and the cpu engine
    /// otherwise; `gpu` uses any wgpu adapter, software ones (lavapipe) included.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Integrator on the same time grid and from the same initial noise: `em`
    /// (Euler–Maruyama on the reverse SDE, the tutorial's), `heun` (Heun's method on the
    /// probability-flow ODE: deterministic after the initial noise, two score evaluations
    /// a step; the last step, to t = 0 where the score is singular, is an Euler step) or
    /// `ddim` (deterministic DDIM, eta = 0: one score evaluation a step, the last step
    /// lands on the predicted data).
    #[arg(long, value_enum, default_value_t = SamplerKind::default())]
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
    #[arg(long, default_value = spec::DEFAULT_FIGURE_SIZE, value_parser = crate::plot::figure::parse_size, help_heading = "Figures")]
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
    /// which memorizes), `kde:h` (the score of the training set smoothed by a Gaussian of
    /// width h, components N(s x_i, (sigma2 + s^2 h^2) I); kde:0 is the empirical score),
    /// or, on image data, a patch-local score with odd patch size k (Kamb & Ganguli):
    /// `local:k` (each pixel's posterior over the training patches at its own position),
    /// `els:k` (over every k×k patch of every training image, image read circularly) or
    /// `bbels:k` (els with zero padding, edge pixels matched to patches at their own
    /// distance from the edge). Every engine runs patch scores; the GPU takes at most 4
    /// channels and 256 values a patch.
    #[arg(long, default_value = "empirical")]
    pub score: crate::model::schedule::ScoreKind,

    /// A patch-size schedule for a patch score: comma-separated odd sizes, one per step
    /// (--steps - 1 of them, from the first step at the highest noise), or one for all
    /// steps; it replaces the k of --score local:k, els:k or bbels:k.
    #[arg(long, value_name = "K,K,...", value_delimiter = ',')]
    pub patch_size: Option<Vec<usize>>,

    /// Early stopping: end the reverse process at forward time t_min (the grid of --steps
    /// points then runs from 1 - 1/(S-1) down to t_min) and output each sample's denoised
    /// mean E[x_0 | x_{t_min}] (the posterior mean of the training points for the empirical
    /// score). 0 runs to t = 0 as usual.
    #[arg(long, default_value_t = 0.0)]
    pub t_min: f64,

    /// Start from the positions in FILE.npy (float32 or float64, shape (P, D): one row per
    /// particle of the whole run) instead of the Philox draw of x_T; the steps' noise is
    /// still the seed's. With the same seed, a run's own initial.npy gives its samples
    /// again. Not with --checkpoint-every.
    #[arg(long, value_name = "FILE.npy")]
    pub initial: Option<PathBuf>,

    /// Record the posterior concentration (mean of max_i w_i, and how often the current
    /// argmax is the final nearest training point) at about this many points along the
    /// trajectory; 0 turns it off.
    #[arg(long, default_value_t = spec::DEFAULT_POSTERIOR_RECORDS)]
    pub posterior_records: usize,

    /// Record the posterior concentration over the particles of index below this (the same
    /// particles in every shard); its cost is this many times N per record.
    #[arg(long, default_value_t = spec::DEFAULT_POSTERIOR_PARTICLES, value_parser = parse_count)]
    pub posterior_particles: u64,
}

/// Options of `memodiff resume`.
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The --out folder of the stopped run (it holds `checkpoint/`).
    pub dir: PathBuf,
}

impl SampleArgs {
    /// The run these options ask for, on the training set `training` (loaded from
    /// `--dataset`), and how to carry it out.
    pub fn spec(&self, training: &Dataset) -> (RunSpec, spec::Execution) {
        let spec = RunSpec {
            particles: self.particles,
            shard: self.shard,
            time_points: self.steps,
            sampler: self.sampler,
            seed: self.seed,
            beta_min: self.beta_min,
            beta_max: self.beta_max,
            schedule: self.schedule,
            grid_start: self.grid_start,
            ddim_eta: self.eta,
            patch_sizes: self.patch_size.clone(),
            dataset: training.name.clone(),
            data_seed: self.data_seed,
            score: self.score,
            t_min: self.t_min,
            initial: self
                .initial
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            images: self.image.spec(),
            extras: ExtraOutputs {
                no_samples: self.no_samples,
                image_grid: self.image_grid,
                posterior_records: self.posterior_records,
                posterior_particles: self.posterior_particles,
                figure: self.figure,
                markers: self.markers,
                figure_size: [self.figure_size.0, self.figure_size.1],
                snapshots: self.snapshots,
            },
        };
        let execution = spec::Execution {
            backend: self.backend,
            device: self.device,
            batch: self.batch,
            checkpoint_every: self.checkpoint_every,
        };
        (spec, execution)
    }
}

/// `memodiff sample`: run, write the folder, print a summary.
pub fn run(args: &SampleArgs) -> Result<RunReport> {
    let training = crate::model::dataset::images::prepare(
        Dataset::parse_seeded(&args.dataset, args.data_seed)?,
        args.scale,
        args.labels.as_deref(),
        args.class,
    )?;
    let (mut spec, execution) = args.spec(&training);
    if let Some(preset) = args.preset {
        preset.check_training(&training)?;
        preset.apply(&mut spec);
    }
    let mut bar = StepBar::default();
    let control = FolderControl {
        force: args.force,
        cancel: &crate::cli::INTERRUPTED,
        progress: &mut bar,
        notes: &mut |line| println!("{line}"),
        command: crate::cli::command_line(),
    };
    let report = sample_to_folder(&spec, &execution, training, &args.out, control)?;
    print_summary(&report, &args.out);
    refuse_non_finite(&report.memorization)?;
    Ok(report)
}

/// `memodiff resume DIR`: continue a checkpointed run from `DIR/checkpoint/` on the backend
/// and device it used, then finish it exactly like `sample`.
pub fn resume(args: &ResumeArgs) -> Result<RunReport> {
    let mut bar = StepBar::default();
    let control = FolderControl {
        force: true,
        cancel: &crate::cli::INTERRUPTED,
        progress: &mut bar,
        notes: &mut |line| println!("{line}"),
        command: Vec::new(),
    };
    let report = resume_in_folder(&args.dir, control)?;
    print_summary(&report, &args.dir);
    refuse_non_finite(&report.memorization)?;
    Ok(report)
}

/// A run that ended with non-finite samples is a failure, though its folder is complete
/// (so it can be inspected) and run.json counts them (`memorization.nonfinite`): the
/// command exits non-zero with one line saying how many.
fn refuse_non_finite(m: &crate::metrics::MemorizationSummary) -> Result<()> {
    if m.nonfinite == 0 {
        return Ok(());
    }
    Err(crate::Error::Output(format!(
        "{} of the {} samples are not finite (NaN or infinite); the folder is complete for \
         inspection and run.json counts them (memorization.nonfinite)",
        m.nonfinite, m.particles
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_non_finite_samples_fails_saying_how_many() {
        let training = Dataset::parse("circle:8").unwrap();
        let mut counter = crate::metrics::MemorizationCounter::new(&training.points, 2).unwrap();
        counter
            .add_batch(&[1.0, 0.0, f32::NAN, 0.0, f32::INFINITY, 1.0], 2)
            .unwrap();
        let mut summary = counter.summary();
        let message = refuse_non_finite(&summary).unwrap_err().to_string();
        assert!(
            message.starts_with("2 of the 3 samples are not finite"),
            "{message}"
        );
        summary.nonfinite = 0;
        assert!(refuse_non_finite(&summary).is_ok());
    }
}
