//! The host-side driver: validates a run, opens the engine, splits the particles into
//! batches (memory) and hands each finished batch to a sink (files, images, metrics).

use crate::engine::gpu::DeviceOutputs;
use crate::engine::{BatchWork, Engine, Problem};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use super::config::{SampleConfig, Shard};

/// Largest batch by default: bounds host memory (two f32 arrays of this many rows) while
/// keeping a GPU busy.
pub const DEFAULT_MAX_BATCH: usize = 1 << 22;

/// Largest default batch in coordinates (P D): 64 MiB per f32 array, so a high-D run's
/// host memory stays bounded (for D <= 4 `DEFAULT_MAX_BATCH` is the smaller bound).
pub const DEFAULT_MAX_BATCH_VALUES: usize = 1 << 24;

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
        argmax: Vec<u32>,
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
                // The segment's records as columns, side by side (the engine is idle
                // meanwhile: at the default run this was 5% of the whole process on one
                // thread).
                let records = tap_steps.len();
                let live: Vec<usize> = (0..records)
                    .filter(|&j| (step..end).contains(&tap_steps[j]))
                    .collect();
                let columns: Vec<(Vec<f32>, Vec<u32>)> = live
                    .par_iter()
                    .map(|&j| {
                        let column = |at: usize| (at..tap_rows * records).step_by(records);
                        (
                            column(j).map(|at| tap_weight[at]).collect(),
                            column(j).map(|at| tap_argmax[at]).collect(),
                        )
                    })
                    .collect();
                for (&j, (weights, argmax)) in live.iter().zip(columns) {
                    sink.observe_tapped(first, tap_steps[j], &weights, argmax)?;
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
