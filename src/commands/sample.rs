//! `memodiff sample` and `memodiff resume`: build the run from the options, sample into
//! the run folder (checkpointed when asked), write run.json and print the summary.

use crate::cli::options::ImageArgs;
use crate::cli::parse::{parse_count, parse_count_usize};
use crate::cli::print::print_summary;
use crate::cli::progress::StepBar;
use crate::density::heatmap::DensityGrid;
use crate::engine::{Backend, SamplerKind};
use crate::error::Result;
use crate::io::out_dir::refuse_non_empty_out;
use crate::model::dataset::{Dataset, ImageShape};
use crate::run::checkpoint::CheckpointedRun;
use crate::run::driver::{self, SampleConfig, SampleTiming};
use crate::run::folder::{prepare_dir, RunFolder};
use crate::run::report::{CulledPairs, RunFacts, RunParameters, RunReport, SampleTimings, Timings};
use crate::run::spec::{self, ExtraOutputs, RunSpec};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    #[arg(long, default_value = spec::DEFAULT_DATASET)]
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
            dataset: training.name.clone(),
            data_seed: self.data_seed,
            score: self.score,
            t_min: self.t_min,
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

/// Refuse a run whose samples.npy and initial.npy (P x D f32 each) cannot fit in the free
/// space of the file system of `out`, before anything is allocated or written.
fn check_free_space(spec: &RunSpec, dim: usize, out: &Path) -> Result<()> {
    let range = spec.particle_range();
    let rows = u128::from(range.end.saturating_sub(range.start));
    let needed = rows * dim as u128 * 4 * 2;
    let Some(free) = crate::io::available_space(out) else {
        return Ok(()); // unknown here: the writes themselves will report a full disk
    };
    if needed > u128::from(free) {
        return Err(crate::Error::invalid(
            "--particles",
            format!(
                "samples.npy and initial.npy for {rows} particles of dimension {dim} would \
                 need {needed} bytes ({}), but {} has only {free} bytes ({}) free; use fewer \
                 particles, --shard k/n or --no-samples",
                crate::io::human_bytes(needed),
                out.display(),
                crate::io::human_bytes(u128::from(free)),
            ),
        ));
    }
    Ok(())
}

/// `memodiff sample`: run, write the folder, print a summary.
pub fn run(args: &SampleArgs) -> Result<RunReport> {
    let started = Instant::now();
    let training = Dataset::parse_seeded(&args.dataset, args.data_seed)?;
    let (spec, execution) = args.spec(&training);
    // Before the other checks: a run too large for the disk is told so, even when it is
    // also too large to run.
    if spec.write_arrays() {
        check_free_space(&spec, training.dim, &args.out)?;
    }
    let image_grid = spec.validate(&training, &execution)?;
    if !args.force {
        refuse_non_empty_out(&args.out)?;
    }
    let config = spec.sample_config(training, execution.batch);
    // Open the engine before touching --out: a run that cannot start writes nothing.
    let (engine, note) = crate::engine::open_backend(execution.backend, execution.device)?;
    if let Some(note) = &note {
        println!("{note}");
    }
    prepare_dir(&args.out)?;
    let command: Vec<String> = std::env::args().collect();
    let folder = match execution.checkpoint_every {
        None => RunFolder::create(&args.out, &config.dataset, &spec)?,
        Some(_) => {
            // A checkpoint left by an earlier run in this folder (--force) is stale.
            crate::run::checkpoint::remove(&args.out)?;
            let run = CheckpointedRun {
                spec: spec.clone(),
                execution: execution.clone(),
                batch_size: driver::batch_size(&config, engine.as_ref()),
                backend: engine.backend(),
                device_name: engine.device_name(),
                backend_note: note.clone(),
                command: command.clone(),
                image_shape: config.dataset.image_shape,
            };
            RunFolder::create_checkpointed(&args.out, &config.dataset, run)?
        }
    };
    let mut folder = folder.with_figures(crate::run::figures::from_spec(&spec, &config.dataset)?);
    folder.set_metrics(crate::run::measure::MetricsSink::new(
        &config,
        posterior_plan(&spec),
    )?);
    let checkpoints = driver::Checkpoints {
        every: execution.checkpoint_every,
        resume: None,
    };
    let run = Prepared {
        started,
        spec,
        config,
        engine,
        note,
        backend_requested: execution.backend,
        command,
        image_grid,
    };
    complete(run, &args.out, folder, checkpoints)
}

/// The posterior-concentration recording of `spec` (none when it records no step or no
/// particle).
fn posterior_plan(spec: &RunSpec) -> Option<crate::run::measure::PosteriorPlan> {
    let ExtraOutputs {
        posterior_records: records,
        posterior_particles: particles,
        ..
    } = spec.extras;
    (records > 0 && particles > 0).then(|| {
        crate::run::measure::PosteriorPlan::spread(spec.time_points - 1, records, particles)
    })
}

/// What `sample` and `resume` have set up before sampling.
struct Prepared {
    started: Instant,
    spec: RunSpec,
    config: SampleConfig,
    engine: Box<dyn crate::engine::Engine>,
    note: Option<String>,
    backend_requested: Backend,
    command: Vec<String>,
    /// `--image-grid K`: the image shape and K.
    image_grid: Option<(ImageShape, usize)>,
}

/// Sample into `folder`, finish it, write run.json and print the summary (`sample` and
/// `resume`). A checkpointed run removes its checkpoint once everything is written.
fn complete(
    run: Prepared,
    out: &Path,
    mut folder: RunFolder,
    checkpoints: driver::Checkpoints,
) -> Result<RunReport> {
    let Prepared {
        started,
        spec,
        config,
        mut engine,
        note,
        backend_requested,
        command,
        image_grid,
    } = run;
    let checkpointed = checkpoints.every.is_some();
    // The metrics' nearest neighbours on the run's GPU, when it has one (exact either way).
    let device = engine.device_outputs().map(|d| d.context());
    let nearest_on = match device {
        Some(ctx) => {
            folder.use_gpu_nearest(ctx)?;
            "gpu"
        }
        None => "cpu",
    };
    let density_on = folder.use_gpu_density(device, config.t_min);
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
        &crate::cli::INTERRUPTED,
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
        memodiff_version: env!("CARGO_PKG_VERSION").into(),
        command,
        parameters: RunParameters {
            facts: RunFacts {
                particle_range: [range.start, range.end],
                steps: spec.time_points - 1,
                n_train: config.dataset.len(),
                dim: config.dataset.dim,
                image_shape: config.dataset.image_shape,
                batch_size: timing.batch_size,
                batches: timing.batches,
                nearest_neighbours_on: nearest_on.into(),
                density_on,
                density_inexact: config.dataset.dim == 2
                    && !DensityGrid::exact_for(range.end - range.start),
            },
            spec,
        },
        backend: engine.backend(),
        backend_requested,
        backend_note: note,
        device: engine.device_name(),
        timings_s: Timings::Sample(SampleTimings {
            setup,
            sampling: timing.sampling_s,
            outputs: timing.consume_s,
            finish,
            total: started.elapsed().as_secs_f64(),
        }),
        culled_pairs: engine.pair_counts().map(|(pairs, culled)| CulledPairs {
            pairs,
            culled,
            fraction: culled as f64 / pairs as f64,
        }),
        memorization: metrics.summary(),
        merged_from: None,
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
    let run = saved.meta.run.clone();
    let bad = |why: String| crate::Error::invalid("checkpoint", why);
    if run.backend == Backend::Reference {
        return Err(bad(
            "the reference backend cannot resume bit-identically".into()
        ));
    }
    let image_grid = run.spec.validate(&saved.training, &run.execution)?;
    let config = run
        .spec
        .sample_config(saved.training.clone(), Some(run.batch_size));
    // The same backend and device as the stopped run, or nothing.
    let (engine, _) = crate::engine::open_backend(run.backend, run.execution.device)?;
    if engine.backend() != run.backend || engine.device_name() != run.device_name {
        return Err(bad(format!(
            "the run used the {} backend on {}, but this resume got the {} backend on {}; \
             results would not be bit-identical, so it is refused",
            run.backend.name(),
            run.device_name,
            engine.backend().name(),
            engine.device_name()
        )));
    }
    if driver::batch_size(&config, engine.as_ref()) != run.batch_size {
        return Err(bad(format!(
            "the batch size {} of the run does not fit this device",
            run.batch_size
        )));
    }
    let metrics = crate::run::measure::MetricsSink::new(&config, posterior_plan(&run.spec))?;
    let folder = RunFolder::resume(out, &mut saved, metrics)?;
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
        every: run.execution.checkpoint_every,
        resume: Some(std::mem::take(&mut saved.resume)),
    };
    let prepared = Prepared {
        started,
        spec: run.spec,
        config,
        engine,
        note: run.backend_note,
        backend_requested: run.execution.backend,
        command: run.command,
        image_grid,
    };
    complete(prepared, out, folder, checkpoints)
}
