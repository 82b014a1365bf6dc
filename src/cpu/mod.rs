//! The CPU engine: the same stages as the shaders, in f32, one file per stage with the
//! shader's name, run over particles in parallel with rayon.

pub mod em_step;
pub mod init_noise;
pub mod score;

use crate::engine::{Backend, Engine, Problem};
use crate::error::{Error, Result};
use crate::params::{StepParams, MAX_DIM};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Particles per work item: small enough to balance, large enough to amortise.
const CHUNK: usize = 1024;

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
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| job(&done));
        let mut reported = 0;
        while !worker.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(20));
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
        cpu_name()
    }

    fn max_batch_particles(&self, _dim: usize) -> usize {
        usize::MAX
    }

    fn run_batch(
        &mut self,
        problem: &Problem,
        first_particle: u64,
        initial: &mut [f32],
        samples: &mut [f32],
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
        let steps: Vec<StepParams> = problem.steps.iter().map(StepParams::from_step).collect();
        let n = samples.len() / dim;
        let initial_std = problem.initial_std as f32;
        let seed = problem.seed;
        run_with_progress(n, steps.len(), on_step, |done| {
            initial
                .par_chunks_mut(CHUNK * dim)
                .zip(samples.par_chunks_mut(CHUNK * dim))
                .enumerate()
                .for_each(|(c, (initial, samples))| {
                    let start = c * CHUNK;
                    let rows = initial.chunks_mut(dim).zip(samples.chunks_mut(dim));
                    for (i, (x0, out)) in rows.enumerate() {
                        let particle = first_particle + (start + i) as u64;
                        let mut x = init_noise::init_noise(seed, particle, initial_std);
                        x[dim..].fill(0.0);
                        x0.copy_from_slice(&x[..dim]);
                        for step in &steps {
                            x = em_step::em_step(x, dim, &training, step, seed, particle);
                        }
                        out.copy_from_slice(&x[..dim]);
                    }
                    done.fetch_add(samples.len() / dim, Ordering::Relaxed);
                });
        });
        Ok(())
    }
}
