//! The CPU engine: the same stages as the shaders, in f32, one file per stage with the
//! shader's name (the scalar twins, the specification), and `fast.rs`, the SIMD kernel
//! that runs them for real, over particles in parallel with rayon.

pub mod approx;
pub mod em_step;
pub mod fast;
pub mod init_noise;
pub mod nearest;
pub mod score;

use crate::engine::{Backend, Engine, Problem};
use crate::error::{Error, Result};
use crate::params::{StepParams, MAX_DIM};
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
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::invalid(
                "dimension",
                format!("the cpu engine supports 1..={MAX_DIM} dimensions, the dataset has {dim}"),
            ));
        }
        let training = score::pad_training(&problem.dataset.points, dim);
        if training.is_empty() {
            return Err(Error::invalid("dataset", "the training set is empty"));
        }
        let fast_steps: Vec<fast::FastStep> = problem.steps[steps.clone()]
            .iter()
            .map(|step| fast::FastStep::new(&StepParams::from_step(step)))
            .collect();
        let kernel = fast::Kernel {
            dim,
            training: &training,
            steps: &fast_steps,
            key: crate::philox::seed_key(problem.seed),
            initial_std: problem.initial_std as f32,
        };
        let isa = fast::Isa::detect();
        let n = state.len() / dim;
        let block = block_len(n);
        let skipped = AtomicBool::new(false);
        let start = steps.start;
        // A work item runs its particles through all the steps of the range: Ctrl-C stops
        // the batch at the next work item.
        let item =
            |c: usize, initial: Option<&mut [f32]>, state: &mut [f32], done: &AtomicUsize| {
                if cancel.load(Ordering::Relaxed) {
                    skipped.store(true, Ordering::Relaxed);
                    return;
                }
                let first = first_particle + (c * block) as u64;
                fast::advance(&kernel, isa, first, initial, state);
                done.fetch_add(state.len() / dim, Ordering::Relaxed);
            };
        run_with_progress(
            n,
            fast_steps.len(),
            &mut |k| on_step(start + k),
            |done| match initial {
                Some(initial) => initial
                    .par_chunks_mut(block * dim)
                    .zip(state.par_chunks_mut(block * dim))
                    .enumerate()
                    .for_each(|(c, (initial, state))| item(c, Some(initial), state, done)),
                None => state
                    .par_chunks_mut(block * dim)
                    .enumerate()
                    .for_each(|(c, state)| item(c, None, state, done)),
            },
        );
        if skipped.load(Ordering::Relaxed) {
            return Err(Error::Interrupted("interrupted".into()));
        }
        Ok(())
    }
}
