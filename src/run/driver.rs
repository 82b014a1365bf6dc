//! The host-side driver: validates a run, opens the engine, splits the particles into
//! batches (memory) and hands each finished batch to a sink (files, images, metrics).

use crate::engine::gpu::DeviceOutputs;
use crate::engine::{BatchWork, Engine, Problem, SamplerKind};
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use crate::model::schedule::{reverse_steps_from, ReverseStep, ScoreKind, ScorePoint, VpSchedule};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Largest batch by default: bounds host memory (two f32 arrays of this many rows) while
/// keeping a GPU busy.
pub const DEFAULT_MAX_BATCH: usize = 1 << 22;

/// Largest default batch in coordinates (P D): 64 MiB per f32 array, so a high-D run's
/// host memory stays bounded (for D <= 4 `DEFAULT_MAX_BATCH` is the smaller bound).
pub const DEFAULT_MAX_BATCH_VALUES: usize = 1 << 24;

/// Most particles a run may ask for: far beyond any machine, but it keeps index arithmetic
/// and the (P, D) file shape far from overflow.
pub const MAX_PARTICLES: u64 = 1 << 40;

/// What defines a sampling run.
#[derive(Debug, Clone)]
pub struct SampleConfig {
    /// Particles P of the whole run (a shard runs its part of them).
    pub particles: u64,
    /// Number of time points S of the grid (S - 1 Euler–Maruyama steps).
    pub time_points: usize,
    /// Seed of the Philox streams: particle i's noise depends only on (seed, i).
    pub seed: u64,
    /// The noise schedule.
    pub schedule: VpSchedule,
    /// The training set.
    pub dataset: Dataset,
    /// Particles per batch; `None` picks the engine's limit capped at `DEFAULT_MAX_BATCH`.
    pub batch: Option<usize>,
    /// Simulate only shard `k` of `n`: a contiguous range of particle indices. Every
    /// particle's trajectory depends only on the seed and its index, so the shards of a
    /// run together are exactly the unsharded run.
    pub shard: Option<Shard>,
    /// The integrator: Euler–Maruyama (default) or Heun on the probability-flow ODE.
    pub sampler: SamplerKind,
    /// The score driving the sampler (`--score`): empirical, or `kde:h`.
    pub score: ScoreKind,
    /// Early stopping (`--t-min`): the grid ends at forward time `t_min` instead of 0 and
    /// each sample is replaced by its denoised mean `E[x_0 | x_{t_min}]` (see
    /// [`crate::model::schedule::reverse_steps_with`], [`crate::model::posterior::denoise`]). 0: off.
    pub t_min: f64,
    /// Start from these positions x_T instead of the Philox draw: row-major (P, D), one
    /// row per particle of the whole run (a shard takes its range). The steps' noise is
    /// still the seed's, so the same rows and seed give the same samples on every engine.
    pub initial: Option<std::sync::Arc<[f32]>>,
    /// The forward time of the first step (`--grid-start`): `None` is the tutorial's grid,
    /// `linspace(1/(S-1), 1, S)` in reverse time, from N(0, sigma2(1) I); `Some(t0)` is
    /// `S - 1` equal steps from `t0` down to `t_min`, from N(0, I) as DDIM code starts.
    pub grid_start: Option<f64>,
    /// eta of `SamplerKind::Ddim` (`--eta`, in [0, 1]): 0 is deterministic DDIM, 1 draws
    /// the DDPM posterior's noise at each step.
    pub ddim_eta: f64,
    /// A patch-size schedule for a patch score (`--patch-size`): one odd size per step,
    /// or one for all; `None`: the score's own k at every step.
    pub patch_sizes: Option<Vec<usize>>,
}

/// Shard `index` of `count` (0-based): particles `[P index / count, P (index+1) / count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: u64,
    /// How many shards the run is cut into.
    pub count: u64,
}

impl Shard {
    /// The particle-index range of this shard of a run of `particles` particles.
    pub fn range(&self, particles: u64) -> std::ops::Range<u64> {
        let at = |k: u64| ((particles as u128 * k as u128) / self.count as u128) as u64;
        at(self.index)..at(self.index + 1)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// `k/n` with 0 <= k < n.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not of the form k/n (e.g. 0/4)"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("'{text}': '{v}' is not a whole number"))
        };
        let (index, count) = (parse(k)?, parse(n)?);
        if count == 0 || index >= count {
            return Err(format!("'{text}': need 0 <= k < n"));
        }
        Ok(Shard { index, count })
    }
}

impl SampleConfig {
    /// The reverse steps of this run (time grid, score variant, early stop).
    pub fn reverse_steps(&self) -> Vec<ReverseStep> {
        let mut steps = reverse_steps_from(
            &self.schedule,
            self.grid_start,
            self.time_points,
            self.score,
            self.t_min,
        );
        for step in &mut steps {
            step.ddim_eta = self.ddim_eta;
        }
        steps
    }

    /// The patch score of every step (a patch-size schedule), `None` for other scores,
    /// or why the score does not fit the training images.
    pub fn patch_plan(&self) -> Result<Option<crate::model::patch_score::PatchPlan>> {
        let ScoreKind::Patch(patch) = self.score else {
            return Ok(None);
        };
        crate::model::patch_score::PatchPlan::new(
            patch,
            self.dataset.image_shape,
            self.time_points.saturating_sub(1),
            self.patch_sizes.as_deref(),
        )
        .map(Some)
        .map_err(|why| {
            let parameter = if self.patch_sizes.is_some() {
                "patch_size"
            } else {
                "score"
            };
            Error::invalid(parameter, why)
        })
    }

    /// Standard deviation of the initial noise x_T: sigma(1) of the schedule on the
    /// tutorial's grid (sigma = 80 for EDM), 1 on a grid of `grid_start`.
    pub fn initial_std(&self) -> f64 {
        match self.grid_start {
            None => self.schedule.sigma2(self.schedule.horizon()).sqrt(),
            Some(_) => 1.0,
        }
    }

    /// Where the state is after `k` of the steps: the forward time of step `k` (the point
    /// at which that step evaluates the score), or `t_min` once all steps are done.
    pub fn score_point_after(&self, steps: &[ReverseStep], k: usize) -> ScorePoint {
        let tau = steps.get(k).map_or(self.t_min, |s| s.tau);
        ScorePoint::new(&self.schedule, self.score, tau)
    }

    /// The particle indices this run simulates: all of them, or its shard's range.
    pub fn particle_range(&self) -> std::ops::Range<u64> {
        match self.shard {
            Some(shard) => shard.range(self.particles),
            None => 0..self.particles,
        }
    }

    /// Reject what cannot run, before anything is allocated or written.
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::invalid("particles", "must be at least 1"));
        }
        if self.particles > MAX_PARTICLES {
            return Err(Error::invalid(
                "particles",
                format!("{} exceeds the maximum of {MAX_PARTICLES}", self.particles),
            ));
        }
        if self.time_points < 3 {
            return Err(Error::invalid(
                "time points",
                format!(
                    "{} time points are too few: the grid linspace(1/(S-1), 1, S) then puts \
                     its only step at forward time 0, where sigma^2 = 0 and the score is \
                     singular; use at least 3 (the default is 100)",
                    self.time_points
                ),
            ));
        }
        if self.time_points > 1_000_000 {
            return Err(Error::invalid(
                "time points",
                "at most 1,000,000 time points",
            ));
        }
        let VpSchedule {
            beta_min, beta_max, ..
        } = self.schedule;
        if !beta_min.is_finite() || !beta_max.is_finite() {
            return Err(Error::invalid("beta_min/beta_max", "must be finite"));
        }
        if beta_min < 0.0 {
            return Err(Error::invalid(
                "beta_min",
                format!("{beta_min} is negative; beta must be >= 0"),
            ));
        }
        if beta_min >= beta_max {
            return Err(Error::invalid(
                "beta_min",
                format!("{beta_min} must be smaller than --beta-max {beta_max}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.ddim_eta) {
            return Err(Error::invalid(
                "eta",
                format!("{} is outside [0, 1]", self.ddim_eta),
            ));
        }
        if self.ddim_eta > 0.0 && self.sampler != SamplerKind::Ddim {
            return Err(Error::invalid(
                "eta",
                "applies to the ddim sampler only (--sampler ddim)",
            ));
        }
        if let Some(t0) = self.grid_start {
            if !(t0.is_finite() && t0 > self.t_min && t0 <= 1.0) {
                return Err(Error::invalid(
                    "grid_start",
                    format!(
                        "{t0} must be in (t_min, 1] = ({}, 1]: the grid runs from it down to \
                         t_min",
                        self.t_min
                    ),
                ));
            }
        }
        if let Some(initial) = &self.initial {
            let dim = self.dataset.dim;
            let rows = initial.len() / dim.max(1);
            if initial.len() != rows * dim || rows as u64 != self.particles {
                return Err(Error::invalid(
                    "initial",
                    format!(
                        "holds {} values, not the {} x {dim} of the run's particles",
                        initial.len(),
                        self.particles
                    ),
                ));
            }
            if let Some(i) = initial.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    "initial",
                    format!("row {} has a non-finite value ({})", i / dim, initial[i]),
                ));
            }
        }
        if let Some(shard) = self.shard {
            if shard.count > self.particles {
                return Err(Error::invalid(
                    "shard",
                    format!(
                        "{} shards for {} particles would leave shards empty",
                        shard.count, self.particles
                    ),
                ));
            }
        }
        let dim = self.dataset.dim;
        if dim > crate::engine::records::MAX_DIMENSION {
            return Err(Error::invalid(
                "training set",
                format!(
                    "points of dimension {dim}: the engines support D = 1 to {}",
                    crate::engine::records::MAX_DIMENSION
                ),
            ));
        }
        if !self.t_min.is_finite() || self.t_min < 0.0 {
            return Err(Error::invalid(
                "t_min",
                format!("{} must be a finite number >= 0", self.t_min),
            ));
        }
        let first_tau = 1.0 - 1.0 / (self.time_points - 1) as f64;
        if self.t_min > 0.0 && self.t_min >= first_tau {
            return Err(Error::invalid(
                "t_min",
                format!(
                    "{} leaves no step: the grid of {} time points starts at forward time \
                     {first_tau}; use a smaller --t-min or more --steps",
                    self.t_min, self.time_points
                ),
            ));
        }
        if let ScoreKind::Kde { h } = self.score {
            if !h.is_finite() || h < 0.0 {
                return Err(Error::invalid("score", "kde:h needs a finite h >= 0"));
            }
        }
        if self.schedule.is_exploding() && (self.grid_start.is_some() || self.t_min > 0.0) {
            return Err(Error::invalid(
                "schedule",
                "edm runs on its own grid, from sigma = 80 to 0: --grid-start and --t-min do \
                 not apply",
            ));
        }
        if self.dataset.uint8 {
            return Err(Error::invalid(
                "scale",
                format!(
                    "{} holds uint8 images: map 0..255 onto their range first (--scale 0,1 \
                     or -1,1)",
                    self.dataset.name
                ),
            ));
        }
        self.patch_plan()?;
        if self.patch_sizes.is_some() && !matches!(self.score, ScoreKind::Patch(_)) {
            return Err(Error::invalid(
                "patch_size",
                "applies to a patch score: --score local:k, els:k or bbels:k",
            ));
        }
        if self.batch == Some(0) {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        check_step_records(&self.reverse_steps(), &self.schedule, self.sampler)
    }
}

/// Largest factor by which the steps of a run may amplify the state (the product of the
/// coefficients of x over any run of consecutive steps): beyond it the samples, and the
/// squared distances of the score, overflow f32.
pub const MAX_STEP_GROWTH: f64 = 1e15;

/// Refuse a schedule whose steps cannot give finite samples: every coefficient of the
/// records the engines run (rounded to f32) must be finite, sigma^2 > 0 at every step, and
/// the integrator must not blow the state up (an unstable explicit step, `--beta-max`
/// large against `--steps`).
fn check_step_records(
    steps: &[ReverseStep],
    schedule: &VpSchedule,
    sampler: SamplerKind,
) -> Result<()> {
    use crate::engine::records::{HeunParams, StepParams};
    let bad = |why: String| Error::invalid("beta_min/beta_max", why);
    // ln of the largest growth of x over any suffix of the steps processed so far.
    let (mut growth, mut worst) = (0.0f64, 0.0f64);
    for (k, step) in steps.iter().enumerate() {
        if !(step.sigma2 > 0.0 && (step.sigma2 as f32) > 0.0) {
            return Err(bad(format!(
                "sigma^2 = {:e} at step {k} (forward time {}): the score needs sigma^2 > 0",
                step.sigma2, step.tau
            )));
        }
        let (values, factor): (Vec<f32>, f64) = match sampler {
            SamplerKind::Em | SamplerKind::Ddim => {
                let p = match sampler {
                    SamplerKind::Ddim => StepParams::ddim(schedule, step),
                    _ => StepParams::from_step(step),
                };
                let values = vec![
                    p.mean_scale,
                    p.sigma2,
                    p.inv_two_sigma2,
                    p.keep_coeff,
                    p.mean_coeff,
                    p.noise_coeff,
                    p.inv_sigma2,
                ];
                let keep = match sampler {
                    SamplerKind::Ddim => step.ddim_coeffs(schedule).0,

                    _ => step.keep_coeff(),
                };
                (values, keep)
            }
            SamplerKind::Heun => {
                let halves = HeunParams::for_step(steps, k);
                let mut values = Vec::new();
                for h in &halves {
                    values.extend([
                        h.mean_scale,
                        h.inv_two_sigma2,
                        h.x_coeff,
                        h.mean_coeff,
                        h.partial_x_coeff,
                        h.partial_mean_coeff,
                    ]);
                }
                let p = &halves[0];
                let factor = match halves.get(1) {
                    Some(c) => p.partial_x_coeff as f64 + c.x_coeff as f64 * p.x_coeff as f64,
                    None => p.x_coeff as f64,
                };
                (values, factor)
            }
        };
        if values.iter().any(|v| !v.is_finite()) || !factor.is_finite() {
            return Err(bad(format!(
                "the coefficients of step {k} (forward time {}) overflow f32",
                step.tau
            )));
        }
        growth = (growth + factor.abs().ln()).max(0.0);
        worst = worst.max(growth);
        if worst > MAX_STEP_GROWTH.ln() {
            return Err(bad(format!(
                "the steps of this schedule are unstable: they amplify the state by more \
                 than {MAX_STEP_GROWTH:e} (by {:.3} at step {k}, where dt beta = {:.3}), so the \
                 samples would overflow; use a smaller --beta-max or more --steps",
                factor.abs(),
                step.dt * step.beta
            )));
        }
    }
    Ok(())
}

/// Receives each finished batch, in particle-index order.
pub trait BatchSink {
    /// `initial` and `samples` are row-major (n, D) for particles `first .. first + n`.
    fn consume(&mut self, first_particle: u64, initial: &[f32], samples: &[f32]) -> Result<()>;

    /// Take the finished batch's final positions (particles `0..n` of the batch) from the
    /// engine's device before [`consume`](Self::consume); called only for engines with
    /// [`Engine::device_outputs`]. A sink that keeps a density grid on that device
    /// deposits them there (`DeviceOutputs::deposit_samples`) and then leaves that grid
    /// alone in `consume`.
    fn consume_on_device(&mut self, device: &dyn DeviceOutputs, n: usize) -> Result<()> {
        let _ = (device, n);
        Ok(())
    }

    /// Save a checkpoint (runs with [`Checkpoints::every`] only): the sink holds every
    /// batch before `at.first`, and `at` the state of the batch in flight.
    fn checkpoint(&mut self, at: &CheckpointAt) -> Result<()> {
        let _ = at;
        Ok(())
    }

    /// Step counts strictly between 0 and the number of steps, increasing, after which the
    /// sink wants each batch's positions through [`snapshot`](Self::snapshot) (`sample
    /// --snapshots`). The states after 0 steps and after all steps arrive via `consume`.
    fn snapshot_steps(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The positions (row-major (n, D)) of batch `first_particle ..` after `step` steps.
    fn snapshot(&mut self, first_particle: u64, step: usize, positions: &[f32]) -> Result<()> {
        let _ = (first_particle, step, positions);
        Ok(())
    }

    /// Numbers of steps done (0 ..= S-1, 0 being the initial noise) after which the
    /// sampler shows each batch's positions to [`observe`](Self::observe). Splitting a
    /// batch's steps there does not change its results (see `Engine::advance_batch`).
    fn observe_steps(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The positions (row-major (n, D)) of the batch starting at `first_particle` after
    /// `step` steps, before any `--t-min` denoising.
    fn observe(&mut self, first_particle: u64, step: usize, state: &[f32]) -> Result<()> {
        let _ = (first_particle, step, state);
        Ok(())
    }

    /// How many rows of the batch `first_particle .. first_particle + n` the sink wants
    /// the posterior concentration of, or `None` when it wants the positions themselves
    /// through [`observe`](Self::observe). With `Some`, an engine that evaluates the
    /// posterior in its own score ([`Engine::posterior_tap`]) reports it through
    /// [`observe_tapped`](Self::observe_tapped) for the observed steps before the last
    /// (the batch is then not split there), and `observe` gets the others.
    fn tap_rows(&self, first_particle: u64, n: usize) -> Option<usize> {
        let _ = (first_particle, n);
        None
    }

    /// The posterior concentration of the first `max_weight.len()` rows of the batch
    /// starting at `first_particle` after `step` steps, as the engine's score evaluation
    /// of step `step` found it (largest softmax weight, its training point).
    fn observe_tapped(
        &mut self,
        first_particle: u64,
        step: usize,
        max_weight: &[f32],
        argmax: &[u32],
    ) -> Result<()> {
        let _ = (first_particle, step, max_weight, argmax);
        Err(Error::invalid(
            "posterior tap",
            "this sink takes positions, not tapped weights",
        ))
    }
}

/// Where a checkpointed run stands: batch `first .. first + n` has done `step` steps.
/// `step == 0` means the batch has not started (`initial` and `state` are then empty);
/// `first` equal to the end of the run's range means all batches are done.
#[derive(Debug)]
pub struct CheckpointAt<'a> {
    pub first: u64,
    pub n: usize,
    pub step: usize,
    /// Batches finished (handed to the sink).
    pub batches_done: usize,
    pub batch_size: usize,
    /// The batch's initial noise and its positions after `step` steps (row-major (n, D)).
    pub initial: &'a [f32],
    pub state: &'a [f32],
}

/// A saved [`CheckpointAt`] to continue from.
#[derive(Debug, Clone, Default)]
pub struct ResumePoint {
    pub first: u64,
    pub step: usize,
    pub batches_done: usize,
    pub initial: Vec<f32>,
    pub state: Vec<f32>,
}

/// Checkpointing of a run: save every `every` steps and at batch ends; continue from
/// `resume`.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    /// Save every this many steps of a batch (and after each batch).
    pub every: Option<usize>,
    /// Continue the run from this point.
    pub resume: Option<ResumePoint>,
}

/// Progress of a run, counted in particle-steps (one particle advanced by one step).
pub trait Progress {
    /// The run is about to sample `particles` particles through `steps` steps each.
    fn start(&mut self, particles: u64, steps: u64);
    /// `particle_steps_done` of the `particles * steps` are done (it only grows).
    fn advance_to(&mut self, particle_steps_done: u64);
    /// The sampling is over (also when it stopped early).
    fn finish(&mut self);
}

/// No progress display.
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&mut self, _: u64, _: u64) {}
    fn advance_to(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// Where the time of a run went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SampleTiming {
    /// Engine time: initial noise, all steps, readback.
    pub sampling_s: f64,
    /// Time spent in the sink (file writes, images, metrics).
    pub consume_s: f64,
    /// Batches the particles were split into.
    pub batches: usize,
    /// Particles per batch (the last one may hold fewer).
    pub batch_size: usize,
}

/// Batch size used for a run on `engine`.
pub fn batch_size(config: &SampleConfig, engine: &dyn Engine) -> usize {
    let limit = engine.max_batch_particles(config.dataset.dim);
    let dim = config.dataset.dim.max(1);
    let wanted = config
        .batch
        .unwrap_or(DEFAULT_MAX_BATCH.min((DEFAULT_MAX_BATCH_VALUES / dim).max(1)));
    let range = config.particle_range();
    wanted
        .min(limit)
        .min((range.end - range.start) as usize)
        .max(1)
}

/// Run the sampler over the particles of `config` (all, or its shard's index range),
/// batch by batch, feeding `sink` in index order.
pub fn run(
    config: &SampleConfig,
    engine: &mut dyn Engine,
    sink: &mut dyn BatchSink,
    progress: &mut dyn Progress,
) -> Result<SampleTiming> {
    run_with_cancel(config, engine, sink, progress, &crate::engine::NEVER)
}

/// [`run`], stopping at the next step boundary (GPU: between submissions of 10 steps;
/// CPU engines: between work items) once `cancel` is set, with
/// [`Error::Interrupted`] saying at which step of which batch. The batch in flight is
/// dropped and the sink gets nothing more.
pub fn run_with_cancel(
    config: &SampleConfig,
    engine: &mut dyn Engine,
    sink: &mut dyn BatchSink,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> Result<SampleTiming> {
    run_checkpointed(
        config,
        engine,
        sink,
        progress,
        cancel,
        Checkpoints::default(),
    )
}

/// Longest a checkpointed run should take to stop once asked (seconds): it runs its
/// batches in ranges of steps about this long and saves a checkpoint where the range
/// ends.
const STOP_LATENCY_S: f64 = 0.5;

/// How many steps the next range of a checkpointed batch takes: one at first, then as
/// many as the steps measured so far say fit in [`STOP_LATENCY_S`].
#[derive(Default)]
struct RangeSteps {
    seconds_per_step: Option<f64>,
}

impl RangeSteps {
    fn len(&self) -> usize {
        match self.seconds_per_step {
            None => 1,
            Some(s) if s > 0.0 => ((STOP_LATENCY_S / s) as usize).max(1),
            Some(_) => usize::MAX,
        }
    }

    fn measured(&mut self, steps: usize, seconds: f64) {
        if steps > 0 {
            self.seconds_per_step = Some(seconds / steps as f64);
        }
    }
}

/// `run_with_cancel` with checkpoints: with `checkpoints.every = Some(K)` each batch runs
/// in segments of K steps and [`BatchSink::checkpoint`] is called before the first batch,
/// at each segment end inside a batch and after each batch; `checkpoints.resume` continues
/// a run from a saved point (its batch from the saved state with `advance_batch(None, ..)`).
/// The f32 engines give results bit-identical to an uninterrupted run.
pub fn run_checkpointed(
    config: &SampleConfig,
    engine: &mut dyn Engine,
    sink: &mut dyn BatchSink,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
    checkpoints: Checkpoints,
) -> Result<SampleTiming> {
    config.validate()?;
    if checkpoints.every == Some(0) {
        return Err(Error::invalid("checkpoint_every", "must be at least 1"));
    }
    if checkpoints.every.is_some() && config.initial.is_some() {
        return Err(Error::invalid(
            "initial",
            "cannot be combined with checkpoints: a resume would need the file again",
        ));
    }
    let steps = config.reverse_steps();
    let mut observe: std::collections::BTreeSet<usize> = sink
        .observe_steps()
        .into_iter()
        .filter(|&k| k <= steps.len())
        .collect();
    let patch_plan = config.patch_plan()?;
    let problem = Problem {
        dataset: &config.dataset,
        steps: &steps,
        seed: config.seed,
        initial_std: config.initial_std(),
        schedule: config.schedule,
        sampler: config.sampler,
        patch: patch_plan.as_ref(),
    };
    // Observed steps whose posterior the engine reports from its own score evaluation:
    // the batch runs through them without stopping. (The state after the last step is
    // no score evaluation: it stays observed.)
    let tap_steps: Vec<usize> = if engine.posterior_tap(&problem)
        && sink.tap_rows(config.particle_range().start, 1).is_some()
    {
        observe.range(..steps.len()).copied().collect()
    } else {
        Vec::new()
    };
    for k in &tap_steps {
        observe.remove(k);
    }
    let (mut tap_weight, mut tap_argmax) = (Vec::new(), Vec::new());
    let dim = config.dataset.dim;
    let batch = batch_size(config, engine);
    let mut initial = vec![0f32; batch * dim];
    let mut samples = vec![0f32; batch * dim];
    let n_steps = steps.len() as u64;
    let range = config.particle_range();
    let batches = (range.end - range.start).div_ceil(batch as u64);
    progress.start(range.end - range.start, n_steps);
    let mut timing = SampleTiming {
        batch_size: batch,
        ..Default::default()
    };
    let mut first = range.start;
    let snapshot_steps = sink.snapshot_steps();
    let mut resume = checkpoints.resume;
    if let Some(point) = &resume {
        let aligned = (point.first - range.start).is_multiple_of(batch as u64);
        if point.first < range.start || point.first > range.end || !aligned {
            return Err(Error::invalid(
                "checkpoint",
                format!("batch start {} does not fit the run", point.first),
            ));
        }
        first = point.first;
        timing.batches = point.batches_done;
        if point.step == 0 {
            resume = None;
        }
    } else if checkpoints.every.is_some() {
        let n = (range.end - first).min(batch as u64) as usize;
        sink.checkpoint(&CheckpointAt {
            first,
            n,
            step: 0,
            batches_done: 0,
            batch_size: batch,
            initial: &[],
            state: &[],
        })?;
    }
    // (batch index, step) of the last checkpoint saved, for the interruption message.
    let mut saved = checkpoints.every.map(|_| (timing.batches + 1, 0usize));
    let checkpointed = checkpoints.every.is_some();
    let mut range_steps = RangeSteps::default();
    while first < range.end {
        let n = (range.end - first).min(batch as u64) as usize;
        let (initial, samples) = (&mut initial[..n * dim], &mut samples[..n * dim]);
        let started = Instant::now();
        let done_before = (first - range.start) * n_steps;
        let batch_index = timing.batches + 1;
        let mut step = 0;
        if let Some(point) = resume.take() {
            if point.initial.len() != n * dim || point.state.len() != n * dim {
                return Err(Error::invalid(
                    "checkpoint",
                    format!("its state does not hold the {n} x {dim} values of its batch"),
                ));
            }
            if point.step > steps.len() {
                return Err(Error::invalid(
                    "checkpoint",
                    format!("step {} is beyond the {n_steps} steps", point.step),
                ));
            }
            initial.copy_from_slice(&point.initial);
            samples.copy_from_slice(&point.state);
            step = point.step;
            saved = Some((batch_index, step));
        }
        let tap_rows = if tap_steps.is_empty() {
            0
        } else {
            sink.tap_rows(first, n).unwrap_or(0).min(n)
        };
        tap_weight.resize(tap_rows * tap_steps.len(), 0f32);
        tap_argmax.resize(tap_rows * tap_steps.len(), 0u32);
        let mut reached = step;
        let mut segment_started = started;
        // Time spent in `sink.observe` (metrics, not sampling) since `segment_started`.
        let mut observed_s = 0.0;
        // Whether the batch's initial noise has been drawn (a resumed batch has it).
        let mut begun = step > 0;
        if let (false, Some(given)) = (begun, &config.initial) {
            let at = (first as usize) * dim;
            initial.copy_from_slice(&given[at..at + n * dim]);
            samples.copy_from_slice(initial);
            begun = true;
            if observe.contains(&0) {
                sink.observe(first, 0, samples)?;
            }
        }
        if !begun && observe.contains(&0) {
            let noise = BatchWork::new(first, Some(&mut *initial), samples, 0..0);
            engine.advance_batch(&problem, noise.cancellable_by(cancel))?;
            begun = true;
            let observing = Instant::now();
            sink.observe(first, 0, samples)?;
            observed_s += observing.elapsed().as_secs_f64();
        }
        while step < steps.len() {
            let mut end = match checkpoints.every {
                Some(k) => ((step / k + 1) * k).min(steps.len()),
                None => steps.len(),
            };
            // Segments also end where the sink looks at the state: snapshot steps (figures)
            // and observed steps (metrics).
            if let Some(&k) = snapshot_steps.iter().find(|&&s| s > step) {
                end = end.min(k);
            }
            if let Some(&k) = observe.range(step + 1..).next() {
                end = end.min(k);
            }
            // A checkpointed run stops only at a step it can save: it runs in ranges of
            // about STOP_LATENCY_S each (results do not depend on how a batch's steps are
            // split), the engine is not interrupted, and a stop saves a checkpoint where
            // the range ended. `natural` ranges end where checkpoints are due anyway.
            let natural = end;
            if checkpointed {
                end = end.min(step.saturating_add(range_steps.len()));
            }
            let range_started = Instant::now();
            let mut on_step = |done| {
                // Once stopping, the CPU engines' final count is not a step reached.
                if !cancel.load(Ordering::Relaxed) {
                    reached = done;
                }
                progress.advance_to(done_before + n as u64 * done as u64)
            };
            let tapped = tap_rows > 0 && tap_steps.iter().any(|k| (step..end).contains(k));
            let from_noise = if begun { None } else { Some(&mut *initial) };
            let work = BatchWork::new(first, from_noise, samples, step..end)
                .cancellable_by(if checkpointed {
                    &crate::engine::NEVER
                } else {
                    cancel
                })
                .reporting_to(&mut on_step);
            let outcome = if cancel.load(Ordering::Relaxed) {
                Err(Error::Interrupted(String::new()))
            } else if tapped {
                let mut tap = crate::engine::PosteriorTap {
                    steps: &tap_steps,
                    rows: tap_rows,
                    max_weight: &mut tap_weight,
                    argmax: &mut tap_argmax,
                };
                engine.advance_batch_tapped(&problem, work, &mut tap)
            } else {
                engine.advance_batch(&problem, work)
            };
            if let Err(e) = outcome {
                progress.finish();
                return Err(match e {
                    Error::Interrupted(_) => {
                        let kept = match saved {
                            Some((b, 0)) => format!(
                                "; the checkpoint at the start of batch {b} of {batches} is kept"
                            ),
                            Some((b, s)) => format!(
                                "; the checkpoint at step {s} of batch {b} of {batches} is kept"
                            ),
                            None => "; no new outputs were written (files already in the out \
                                     folder are untouched)"
                                .to_string(),
                        };
                        Error::Interrupted(format!(
                            "interrupted at step {reached} of {n_steps} of batch {batch_index} \
                             of {batches}{kept}"
                        ))
                    }
                    e => e,
                });
            }
            if tapped {
                let observing = Instant::now();
                // The segment's records, column by column, in one pass over the rows.
                let records = tap_steps.len();
                let live: Vec<usize> = (0..records)
                    .filter(|&j| (step..end).contains(&tap_steps[j]))
                    .collect();
                let mut weights = vec![Vec::with_capacity(tap_rows); live.len()];
                let mut argmax = vec![Vec::with_capacity(tap_rows); live.len()];
                for (row_w, row_a) in tap_weight
                    .chunks_exact(records)
                    .zip(tap_argmax.chunks_exact(records))
                {
                    for (c, &j) in live.iter().enumerate() {
                        weights[c].push(row_w[j]);
                        argmax[c].push(row_a[j]);
                    }
                }
                for (c, &j) in live.iter().enumerate() {
                    sink.observe_tapped(first, tap_steps[j], &weights[c], &argmax[c])?;
                }
                observed_s += observing.elapsed().as_secs_f64();
            }
            range_steps.measured(end - step, range_started.elapsed().as_secs_f64());
            step = end;
            reached = end;
            begun = true;
            let stopping = checkpointed && cancel.load(Ordering::Relaxed);
            if step < natural && !stopping {
                continue;
            }
            if step < steps.len() && snapshot_steps.binary_search(&step).is_ok() {
                let observing = Instant::now();
                sink.snapshot(first, step, samples)?;
                observed_s += observing.elapsed().as_secs_f64();
            }
            if observe.contains(&step) {
                let observing = Instant::now();
                sink.observe(first, step, samples)?;
                observed_s += observing.elapsed().as_secs_f64();
            }
            if checkpoints.every.is_some() && step < steps.len() {
                timing.sampling_s += segment_started.elapsed().as_secs_f64() - observed_s;
                timing.consume_s += std::mem::take(&mut observed_s);
                let started = Instant::now();
                sink.checkpoint(&CheckpointAt {
                    first,
                    n,
                    step,
                    batches_done: timing.batches,
                    batch_size: batch,
                    initial,
                    state: samples,
                })?;
                timing.consume_s += started.elapsed().as_secs_f64();
                saved = Some((batch_index, step));
                segment_started = Instant::now();
            }
        }
        if config.t_min > 0.0 {
            let point = config.score_point_after(&steps, steps.len());
            crate::model::posterior::denoise(&config.dataset, config.score, &point, samples);
        }
        timing.sampling_s += segment_started.elapsed().as_secs_f64() - observed_s;
        timing.consume_s += observed_s;
        let started = Instant::now();
        // The sink's density on the engine's device: deposited from the particle buffer,
        // which still holds this batch's final positions (sinks ask for this only when no
        // host-side change, such as --t-min denoising, follows the last step).
        if let Some(device) = engine.device_outputs() {
            sink.consume_on_device(device, n)?;
        }
        sink.consume(first, initial, samples)?;
        timing.batches += 1;
        first += n as u64;
        if checkpoints.every.is_some() {
            sink.checkpoint(&CheckpointAt {
                first,
                n: (range.end - first).min(batch as u64) as usize,
                step: 0,
                batches_done: timing.batches,
                batch_size: batch,
                initial: &[],
                state: &[],
            })?;
            saved = Some((timing.batches + 1, 0));
        }
        timing.consume_s += started.elapsed().as_secs_f64();
    }
    progress.finish();
    Ok(timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(time_points: usize, beta_max: f64, sampler: SamplerKind) -> SampleConfig {
        let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
        config.time_points = time_points;
        config.schedule = VpSchedule::new(0.001, beta_max);
        config.sampler = sampler;
        config
    }

    #[test]
    fn two_time_points_are_refused_with_the_reason() {
        for sampler in [SamplerKind::Em, SamplerKind::Heun] {
            let err = config(2, 3.0, sampler).validate().unwrap_err().to_string();
            assert!(err.contains("sigma^2 = 0"), "{err}");
            assert!(err.contains("at least 3"), "{err}");
            config(3, 3.0, sampler).validate().unwrap();
        }
    }

    #[test]
    fn schedules_that_cannot_give_finite_samples_are_refused() {
        for beta_max in [2000.0, 1e6, 1e300] {
            let err = config(100, beta_max, SamplerKind::Em)
                .validate()
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("beta_min/beta_max"), "{text}");
            // Heun's probability-flow steps stay bounded there (sigma^2 = 1 and s = 0 leave
            // x as it is): its samples are finite, so it runs.
            config(100, beta_max, SamplerKind::Heun).validate().unwrap();
        }
        for sampler in [SamplerKind::Em, SamplerKind::Heun] {
            // The defaults and the usual VP schedule (beta_max = 20) run.
            for (points, beta_max) in [(100, 3.0), (100, 20.0), (1000, 20.0), (3, 3.0)] {
                config(points, beta_max, sampler).validate().unwrap();
            }
        }
        // The message says why.
        let err = config(100, 2000.0, SamplerKind::Em).validate().unwrap_err();
        assert!(err.to_string().contains("unstable"), "{err}");
    }
}
