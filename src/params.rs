//! Parameter blocks shared by the host and the shaders.
//!
//! Keep in sync with `shaders/common/params.wgsl`: same fields, same order, same types.
//! Both are `#[repr(C)]`/WGSL uniform layouts made only of 4-byte scalars, padded to a
//! multiple of 16 bytes, so the byte images match without any std140 surprises.

use crate::schedule::ReverseStep;
use bytemuck::{Pod, Zeroable};

/// Largest dimension the simple (register-resident, `vec4`) kernels handle.
pub const MAX_DIM: usize = 4;

/// Per-batch parameters. Keep in sync with `RunParams` in `shaders/common/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct RunParams {
    /// The 64-bit seed as (lo, hi): the Philox key.
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// Global index of the batch's first particle, as (lo, hi).
    pub first_particle_lo: u32,
    pub first_particle_hi: u32,
    /// Particles (or query points) in this batch.
    pub batch_len: u32,
    /// Dimension D of particles and training points (1..=MAX_DIM).
    pub dim: u32,
    /// Number of training points N.
    pub n_train: u32,
    /// Threads per row of the 2-D dispatch grid, to linearise invocation ids.
    pub threads_per_row: u32,
    /// Standard deviation of the initial noise, `sqrt(sigma2(1))`.
    pub initial_std: f32,
    pub _pad: [u32; 3],
}

impl RunParams {
    pub fn new(seed: u64, first_particle: u64, batch_len: u32, dim: u32, n_train: u32) -> Self {
        Self {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            first_particle_lo: first_particle as u32,
            first_particle_hi: (first_particle >> 32) as u32,
            batch_len,
            dim,
            n_train,
            threads_per_row: 0,
            initial_std: 0.0,
            _pad: [0; 3],
        }
    }
}

/// One reverse step, computed on the host in f64 and rounded once to f32.
/// Keep in sync with `StepParams` in `shaders/common/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct StepParams {
    /// Philox counter word for this step's noise (the step index k).
    pub step_index: u32,
    /// `s(tau)`, the mean scale of the forward marginal.
    pub mean_scale: f32,
    /// `sigma2(tau)`.
    pub sigma2: f32,
    /// `1 / (2 sigma2(tau))`, the softmax temperature of the potentials.
    pub inv_two_sigma2: f32,
    /// `a = 1 + dt beta (1/2 - 1/sigma2)`: coefficient of x in the folded update.
    pub keep_coeff: f32,
    /// `c = dt beta s / sigma2`: coefficient of the softmax-weighted training mean.
    pub mean_coeff: f32,
    /// `e = sqrt(dt beta)`: coefficient of the standard normal noise.
    pub noise_coeff: f32,
    /// `1 / sigma2`, for the score itself.
    pub inv_sigma2: f32,
    /// Informational (reverse time, step, beta); not used by the update.
    pub t: f32,
    pub dt: f32,
    pub beta: f32,
    pub _pad: u32,
}

impl StepParams {
    pub fn from_step(step: &ReverseStep) -> Self {
        Self {
            step_index: step.index,
            mean_scale: step.mean_scale as f32,
            sigma2: step.sigma2 as f32,
            inv_two_sigma2: (0.5 / step.sigma2) as f32,
            keep_coeff: step.keep_coeff() as f32,
            mean_coeff: step.mean_coeff() as f32,
            noise_coeff: step.noise_coeff() as f32,
            inv_sigma2: (1.0 / step.sigma2) as f32,
            t: step.t as f32,
            dt: step.dt as f32,
            beta: step.beta as f32,
            _pad: 0,
        }
    }

    /// Parameters for evaluating the score alone at forward time `tau`.
    pub fn for_score(schedule: &crate::schedule::VpSchedule, tau: f64) -> Self {
        let step = ReverseStep {
            index: 0,
            t: 1.0 - tau,
            dt: 0.0,
            tau,
            beta: schedule.beta(tau),
            mean_scale: schedule.mean_scale(tau),
            sigma2: schedule.sigma2(tau),
        };
        Self::from_step(&step)
    }
}

/// The range of training points one dispatch reduces over (see `em_step.wgsl`).
/// Keep in sync with `ChunkParams` in `shaders/common/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct ChunkParams {
    pub start: u32,
    pub count: u32,
    /// 1 for the first chunk of a step (fresh softmax state), else 0.
    pub first: u32,
    /// 1 for the last chunk of a step (finish the update), else 0.
    pub last: u32,
}

/// Training points one dispatch reduces over at most. Software rasterizers end any loop
/// after 65535 iterations per invocation in total (llvmpipe's loop limiter), so one
/// dispatch stays well below that; on hardware GPUs it only splits huge training sets
/// into a few dispatches per step.
pub const TRAINING_CHUNK: usize = 32_768;

/// Split `n_train` training points into chunks of at most `TRAINING_CHUNK`.
pub fn training_chunks(n_train: usize) -> Vec<ChunkParams> {
    let n = n_train.div_ceil(TRAINING_CHUNK).max(1);
    (0..n)
        .map(|c| {
            let start = c * TRAINING_CHUNK;
            ChunkParams {
                start: start as u32,
                count: (n_train - start).min(TRAINING_CHUNK) as u32,
                first: (c == 0) as u32,
                last: (c + 1 == n) as u32,
            }
        })
        .collect()
}
