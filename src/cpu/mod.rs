//! The CPU engine: the same stages as the shaders, in f32, one file per stage with the
//! shader's name (the scalar twins, the specification), and `fast.rs`, the SIMD kernel
//! that runs them for real, over particles in parallel with rayon.

pub mod approx;
pub mod deposit;
pub mod em_step;
pub mod em_step_general;
pub mod fast;
pub mod heun_step;
pub mod init_noise;
pub mod nearest;
pub mod reduce_general;
pub mod score;

use crate::engine::{Backend, Engine, Problem, SamplerKind};
use crate::error::{Error, Result};
use crate::params::{HeunParams, StepParams, MAX_DIM, MAX_DIMENSION};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Most particles per rayon work item (a multiple of `fast::MAX_LANES`).
const MAX_BLOCK: usize = 1024;

/// Particles per rayon work item: about 16 items per thread for load balance and
/// progress, a multiple of the SIMD chunk, at most `MAX_BLOCK`.
fn block_len(particles: usize) -> usize {
    let per_item = particles.div_ceil(rayon::current_num_threads().max(1) * 16);
    per_item
        .next_multiple_of(fast::MAX_LANES)
        .clamp(fast::MAX_LANES, MAX_BLOCK)
}

#[derive(Debug, Default)]
pub struct CpuEngine;

impl CpuEngine {
    pub fn new() -> Self {
        Self
    }
}

/// A short description of this CPU for summaries: model name and thread count.
pub fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {} threads", rayon::current_num_threads())
}

/// Run `job` (which counts finished particles in the counter it is given) on a worker
/// thread while the calling thread turns that count into step progress for `on_step`.
pub(crate) fn run_with_progress<F>(
    total_particles: usize,
    steps: usize,
    on_step: &mut dyn FnMut(usize),
    job: F,
) where
    F: FnOnce(&AtomicUsize) + Send,
{
    let done = AtomicUsize::new(0);
    let (finished_tx, finished_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            job(&done);
            // Wake the reporting thread at once: short batches must not wait a tick.
            let _ = finished_tx.send(());
        });
        let mut reported = 0;
        let tick = std::time::Duration::from_millis(50);
        // Disconnected (the job panicked) ends the loop too.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished_rx.recv_timeout(tick) {
            let now = done.load(Ordering::Relaxed) * steps / total_particles.max(1);
            if now > reported {
                reported = now;
                on_step(now);
            }
        }
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    });
    on_step(steps);
}

/// Run `item` over the particles in work items of `block` particles, rayon in parallel,
/// with step progress for `on_step` and Ctrl-C: `item` gets the work item's index, its
/// slice of `initial` (where the batch starts from the initial noise) and of `state`, and
/// runs them through all the steps of `steps`. Once `cancel` is set the items not yet
/// started are skipped and the batch returns `Error::Interrupted`. The engines' paths
/// share this so that their work items, progress and cancelling stay the same.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_blocks<F>(
    dim: usize,
    block: usize,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    steps: Range<usize>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize),
    item: F,
) -> Result<()>
where
    F: Fn(usize, Option<&mut [f32]>, &mut [f32]) + Sync,
{
    let n = state.len() / dim;
    let skipped = AtomicBool::new(false);
    let start = steps.start;
    let job = |c: usize, initial: Option<&mut [f32]>, state: &mut [f32], done: &AtomicUsize| {
        if cancel.load(Ordering::Relaxed) {
            skipped.store(true, Ordering::Relaxed);
            return;
        }
        item(c, initial, state);
        done.fetch_add(state.len() / dim, Ordering::Relaxed);
    };
    run_with_progress(
        n,
        steps.len(),
        &mut |k| on_step(start + k),
        |done| match initial {
            Some(initial) => initial
                .par_chunks_mut(block * dim)
                .zip(state.par_chunks_mut(block * dim))
                .enumerate()
                .for_each(|(c, (initial, state))| job(c, Some(initial), state, done)),
            None => state
                .par_chunks_mut(block * dim)
                .enumerate()
                .for_each(|(c, state)| job(c, None, state, done)),
        },
    );
    if skipped.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("interrupted".into()));
    }
    Ok(())
}

impl Engine for CpuEngine {
    fn backend(&self) -> Backend {
        Backend::Cpu
    }

    fn device_name(&self) -> String {
        format!("{} ({})", cpu_name(), fast::Isa::detect().name())
    }

    fn max_batch_particles(&self, _dim: usize) -> usize {
        usize::MAX
    }

    fn advance_batch(
        &mut self,
        problem: &Problem,
        first_particle: u64,
        initial: Option<&mut [f32]>,
        state: &mut [f32],
        steps: Range<usize>,
        cancel: &AtomicBool,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let dim = problem.dataset.dim;
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(Error::invalid(
                "dimension",
                format!(
                    "the cpu engine supports 1..={MAX_DIMENSION} dimensions, the dataset has {dim}"
                ),
            ));
        }
        if problem.sampler == SamplerKind::Heun && dim > MAX_DIM {
            return advance_heun(
                problem,
                first_particle,
                initial,
                state,
                steps,
                cancel,
                on_step,
            );
        }
        if dim > MAX_DIM {
            return advance_general(
                problem,
                first_particle,
                initial,
                state,
                steps,
                cancel,
                on_step,
            );
        }
        advance_fast(
            problem,
            first_particle,
            initial,
            state,
            steps,
            None,
            cancel,
            on_step,
        )
    }

    /// The D <= 4 SIMD engine reads the softmax state of its lanes. HOOK (D > 4): once the
    /// blocked D > 4 kernel reports each row's `1 / weight_sum` and argmax at a step, return
    /// true for it too and fill the tap in `advance_batch_tapped` like `advance_fast` does.
    fn posterior_tap(&self, problem: &Problem) -> bool {
        (1..=MAX_DIM).contains(&problem.dataset.dim)
    }

    fn advance_batch_tapped(
        &mut self,
        problem: &Problem,
        first_particle: u64,
        initial: Option<&mut [f32]>,
        state: &mut [f32],
        steps: Range<usize>,
        tap: &mut crate::engine::PosteriorTap,
        cancel: &AtomicBool,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if !self.posterior_tap(problem) {
            return Err(Error::invalid(
                "posterior tap",
                format!(
                    "the cpu engine reports its softmax weights for D <= {MAX_DIM} only \
                     (the dataset has D = {})",
                    problem.dataset.dim
                ),
            ));
        }
        advance_fast(
            problem,
            first_particle,
            initial,
            state,
            steps,
            Some(tap),
            cancel,
            on_step,
        )
    }
}

/// The D <= 4 path: the SIMD engine (`fast.rs`) over work items of `block_len` particles,
/// filling `tap` where given.
#[allow(clippy::too_many_arguments)]
fn advance_fast(
    problem: &Problem,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    steps: Range<usize>,
    tap: Option<&mut crate::engine::PosteriorTap>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize),
) -> Result<()> {
    {
        let dim = problem.dataset.dim;
        let training = score::pad_training(&problem.dataset.points, dim);
        if training.is_empty() {
            return Err(Error::invalid("dataset", "the training set is empty"));
        }
        // The SIMD engine runs records: one per em step, or the halves of each heun step.
        let fast_steps: Vec<fast::FastStep> = match problem.sampler {
            SamplerKind::Em => problem.steps[steps.clone()]
                .iter()
                .map(|step| fast::FastStep::new(&StepParams::from_step(step)))
                .collect(),
            SamplerKind::Heun => steps
                .clone()
                .flat_map(|k| HeunParams::for_step(problem.steps, k))
                .map(|half| fast::FastStep::heun(&half))
                .collect(),
        };
        let kernel = fast::Kernel {
            dim,
            training: &training,
            steps: &fast_steps,
            key: crate::philox::seed_key(problem.seed),
            initial_std: problem.initial_std as f32,
        };
        let isa = fast::Isa::detect();
        let block = block_len(state.len() / dim);
        // The kernel record at which each tapped step evaluates its score: em, one record
        // per step; heun, the predictor half of each step, two records per step.
        let records_per_step = match problem.sampler {
            SamplerKind::Em => 1,
            SamplerKind::Heun => 2,
        };
        let mut slots = vec![None; fast_steps.len()];
        // Each work item's piece of the tap's buffers (row-major, so consecutive rows are
        // one contiguous piece), taken by the item that owns those rows.
        type Piece<'t> = std::sync::Mutex<Option<(&'t mut [f32], &'t mut [u32])>>;
        let (records, tap_rows, pieces): (usize, usize, Vec<Piece>) = match tap {
            Some(tap) => {
                tap.check();
                assert!(tap.rows <= state.len() / dim, "tap rows beyond the batch");
                for (j, &k) in tap.steps.iter().enumerate() {
                    if steps.contains(&k) {
                        slots[(k - steps.start) * records_per_step] = Some(j);
                    }
                }
                let records = tap.steps.len();
                let pieces = tap
                    .max_weight
                    .chunks_mut((block * records).max(1))
                    .zip(tap.argmax.chunks_mut((block * records).max(1)))
                    .map(|p| std::sync::Mutex::new(Some(p)))
                    .collect();
                (records, tap.rows, pieces)
            }
            None => (0, 0, Vec::new()),
        };
        // A work item runs its particles through all the steps of the range: Ctrl-C stops
        // the batch at the next work item.
        run_blocks(
            dim,
            block,
            initial,
            state,
            steps,
            cancel,
            on_step,
            |c, initial, state| {
                let first = first_particle + (c * block) as u64;
                let piece = pieces
                    .get(c)
                    .and_then(|p| p.lock().expect("tap piece").take());
                match piece {
                    Some((max_weight, argmax)) if records > 0 => {
                        let mut chunk_tap = fast::ChunkTap {
                            slots: &slots,
                            records,
                            rows: tap_rows.saturating_sub(c * block).min(block),
                            max_weight,
                            argmax,
                        };
                        fast::advance_tapped(
                            &kernel,
                            isa,
                            first,
                            initial,
                            state,
                            Some(&mut chunk_tap),
                        );
                    }
                    _ => fast::advance(&kernel, isa, first, initial, state),
                }
            },
        )
    }
}

/// The general-D (D > 4) Euler–Maruyama path: the scalar twins `init_noise_into` and
/// `em_step_general`, rayon over blocks of particles.
#[allow(clippy::too_many_arguments)]
fn advance_general(
    problem: &Problem,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    steps: Range<usize>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize),
) -> Result<()> {
    let dim = problem.dataset.dim;
    let training = reduce_general::pad_general(&problem.dataset.points, dim);
    let params: Vec<StepParams> = problem.steps[steps.clone()]
        .iter()
        .map(StepParams::from_step)
        .collect();
    let key = crate::philox::seed_key(problem.seed);
    let isa = fast::Isa::detect();
    let run = |x: &mut [f32], particle: u64| {
        em_steps_on(isa, x, dim, &training, &params, key, particle);
    };
    advance_rows(
        problem,
        first_particle,
        initial,
        state,
        steps,
        cancel,
        on_step,
        &run,
    )
}

/// The Heun (probability-flow ODE) path for D > 4 (D <= 4 runs on the SIMD engine):
/// `heun_half_step_general`, rayon over blocks of particles. The initial noise is the
/// same as for Euler–Maruyama; there is no other noise.
#[allow(clippy::too_many_arguments)]
fn advance_heun(
    problem: &Problem,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    steps: Range<usize>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize),
) -> Result<()> {
    let dim = problem.dataset.dim;
    let halves: Vec<HeunParams> = steps
        .clone()
        .flat_map(|k| HeunParams::for_step(problem.steps, k))
        .collect();
    let padded = reduce_general::pad_general(&problem.dataset.points, dim);
    let isa = fast::Isa::detect();
    let run = |x: &mut [f32], _particle: u64| heun_halves_on(isa, x, dim, &padded, &halves);
    advance_rows(
        problem,
        first_particle,
        initial,
        state,
        steps,
        cancel,
        on_step,
        &run,
    )
}

/// The D > 4 inner loops: all steps of a block of particles `particle ..` (`x`: their
/// padded rows), each step reading each tile of training points once for the block, with
/// the engine's 16-lane distance (`general_potential_wide`), compiled for the best
/// instruction set of this CPU. The
/// operations and their order are the same on every ISA (Rust never contracts a * b + c
/// into an FMA by itself), so the bits are too; only the vector width changes.
#[inline(always)]
fn em_steps(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    params: &[StepParams],
    key: [u32; 2],
    particle: u64,
) {
    let width = reduce_general::padded_width(dim);
    let mut scratch = reduce_general::BlockScratch::new(x.len() / width, width);
    for step in params {
        em_step_general::em_step_general_block(
            x,
            width,
            dim,
            training,
            step,
            key,
            particle,
            &mut scratch,
        );
    }
}

#[inline(always)]
fn heun_halves(x: &mut [f32], dim: usize, training: &[f32], halves: &[HeunParams]) {
    let width = reduce_general::padded_width(dim);
    let mut partial = vec![0f32; x.len()];
    let mut scratch = reduce_general::BlockScratch::new(x.len() / width, width);
    for half in halves {
        heun_step::heun_half_step_general_block(
            x,
            width,
            dim,
            training,
            half,
            &mut partial,
            &mut scratch,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma,bmi2")]
fn em_steps_avx512(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    params: &[StepParams],
    key: [u32; 2],
    particle: u64,
) {
    em_steps(x, dim, training, params, key, particle)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn em_steps_avx2(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    params: &[StepParams],
    key: [u32; 2],
    particle: u64,
) {
    em_steps(x, dim, training, params, key, particle)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma,bmi2")]
fn heun_halves_avx512(x: &mut [f32], dim: usize, training: &[f32], halves: &[HeunParams]) {
    heun_halves(x, dim, training, halves)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn heun_halves_avx2(x: &mut [f32], dim: usize, training: &[f32], halves: &[HeunParams]) {
    heun_halves(x, dim, training, halves)
}

fn em_steps_on(
    isa: fast::Isa,
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    params: &[StepParams],
    key: [u32; 2],
    particle: u64,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns an ISA whose features this CPU has.
        fast::Isa::Avx512 => unsafe { em_steps_avx512(x, dim, training, params, key, particle) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        fast::Isa::Avx2 => unsafe { em_steps_avx2(x, dim, training, params, key, particle) },
        _ => em_steps(x, dim, training, params, key, particle),
    }
}

fn heun_halves_on(
    isa: fast::Isa,
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    halves: &[HeunParams],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns an ISA whose features this CPU has.
        fast::Isa::Avx512 => unsafe { heun_halves_avx512(x, dim, training, halves) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        fast::Isa::Avx2 => unsafe { heun_halves_avx2(x, dim, training, halves) },
        _ => heun_halves(x, dim, training, halves),
    }
}

/// Particles per rayon work item of the row-by-row paths: about 16 items per thread, at
/// most 64 particles (a particle-step costs N D here, so items are short anyway).
fn general_block_len(particles: usize) -> usize {
    particles
        .div_ceil(rayon::current_num_threads().max(1) * 16)
        .clamp(1, 64)
}

/// Run the particles through `run` (all steps of the range), rayon over work items of up
/// to 64 particles: each item's particles start from their initial noise
/// (`init_noise_into`, the shader's loop over lane blocks) or their saved positions, in
/// zero-padded rows of `padded_width(D)`, and `run` gets the rows and the item's first
/// particle index.
#[allow(clippy::too_many_arguments)]
fn advance_rows(
    problem: &Problem,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    steps: Range<usize>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(usize),
    run: &(dyn Fn(&mut [f32], u64) + Sync),
) -> Result<()> {
    let dim = problem.dataset.dim;
    if problem.dataset.is_empty() {
        return Err(Error::invalid("dataset", "the training set is empty"));
    }
    let width = reduce_general::padded_width(dim);
    let initial_std = problem.initial_std as f32;
    let block = general_block_len(state.len() / dim);
    run_blocks(
        dim,
        block,
        initial,
        state,
        steps,
        cancel,
        on_step,
        |c, mut initial, rows| {
            // The item's particles, padded rows side by side, run as one block.
            let first = first_particle + (c * block) as u64;
            let mut xs = vec![0f32; rows.len() / dim * width];
            for (r, (row, x)) in rows.chunks(dim).zip(xs.chunks_exact_mut(width)).enumerate() {
                match initial.as_deref_mut() {
                    Some(initial) => {
                        let particle = first + r as u64;
                        init_noise::init_noise_into(
                            problem.seed,
                            particle,
                            initial_std,
                            &mut x[..dim],
                        );
                        initial[r * dim..(r + 1) * dim].copy_from_slice(&x[..dim]);
                    }
                    None => x[..dim].copy_from_slice(row),
                }
            }
            run(&mut xs, first);
            for (row, x) in rows.chunks_mut(dim).zip(xs.chunks_exact(width)) {
                row.copy_from_slice(&x[..dim]);
            }
        },
    )
}
