//! Parameter blocks shared by the host and the shaders.
//!
//! Keep in sync with `shaders/common/params.wgsl`: same fields, same order, same types.
//! Both are `#[repr(C)]`/WGSL uniform layouts made only of 4-byte scalars, padded to a
//! multiple of 16 bytes, so the byte images match without any std140 surprises.

use crate::engine::SamplerKind;
use crate::model::schedule::ReverseStep;
use bytemuck::{Pod, Zeroable};
use std::ops::Range;

/// Largest dimension the simple (register-resident, `vec4`) kernels handle. Larger D
/// runs on the general-D kernels (`em_step_general.wgsl`, `cpu/em_step_general.rs`).
pub const MAX_DIM: usize = 4;

/// Largest dimension any engine accepts (64 x 64 images; 32 x 32 x 3 = 3072 fits).
/// Keep in sync with `MAX_COLUMNS` (= MAX_DIMENSION / 4) in
/// `shaders/common/reduce_general.wgsl`.
pub const MAX_DIMENSION: usize = 4096;

/// Invocations of one general-D workgroup, and training points per tile (the logits of
/// a tile: one point per invocation). Keep in sync with `GENERAL_WG`/`GENERAL_TILE` in
/// `shaders/common/reduce_general.wgsl` and `cpu/reduce_general.rs`.
pub const GENERAL_WG: usize = 64;
/// Training points per general-D tile.
pub const GENERAL_TILE: usize = 64;
/// Particles one general-D workgroup owns (the query tile of the flash-attention-shaped
/// kernel), and columns of 4 coordinates of the particle tile staged in workgroup memory
/// at a time. Keep in sync with `shaders/common/reduce_general.wgsl`.
pub const GENERAL_PARTICLES: usize = 16;
/// Columns of 4 coordinates of the particle tile staged at a time.
pub const GENERAL_X_COLUMNS: usize = 16;

/// Loop iterations one general-D invocation may spend on the tiles of one dispatch:
/// half of lavapipe's 65,535, the rest is left for loading, storing and updating.
const GENERAL_LOOP_BUDGET: usize = 32_768;

/// Loop iterations one invocation of the general-D kernel runs per tile of
/// `GENERAL_TILE` points, counting every loop as not unrolled: zeroing its distance
/// accumulators, the particle-tile loads of every column block, its point's distances
/// (per column, one pass over the particle tile), its potentials and weights, a
/// particle's max and sum, and per owned column a pass over the tile and the particles.
pub fn general_loop_iterations_per_tile(dim: usize) -> usize {
    let columns = dim.div_ceil(4);
    let blocks = columns.div_ceil(GENERAL_X_COLUMNS);
    let loads = (GENERAL_PARTICLES * GENERAL_X_COLUMNS).div_ceil(GENERAL_WG);
    let owned = columns.div_ceil(GENERAL_WG);
    GENERAL_PARTICLES
        + blocks * (loads + 1)
        + columns * (GENERAL_PARTICLES + 1)
        + 2 * GENERAL_PARTICLES
        + 2 * GENERAL_TILE
        + owned * (2 * GENERAL_PARTICLES + GENERAL_TILE * (GENERAL_PARTICLES + 1) + 1)
        + 1
}

/// Training points one general-D dispatch reduces over on a software adapter, chosen from
/// D so that every invocation stays far below lavapipe's loop limit. A multiple of
/// `GENERAL_TILE`, so tiles (and results) do not depend on the chunking.
pub fn general_chunk_points(dim: usize) -> usize {
    (GENERAL_LOOP_BUDGET / general_loop_iterations_per_tile(dim)).max(1) * GENERAL_TILE
}

/// Particle-coordinate x training-point products one dispatch may cover on a hardware
/// adapter (2^32, about 1.7e10 flops counting 4 a product): a few ms on a fast GPU, tens
/// of ms on a slow one, never seconds (display-attached GPUs kill long dispatches).
pub const HARDWARE_DISPATCH_WORK: u64 = 1 << 32;

/// Training points per dispatch on a hardware adapter for `particles` particles of
/// dimension `dim`: bounded by work (`HARDWARE_DISPATCH_WORK`, at least one tile), not by
/// loop counts, and a multiple of `GENERAL_TILE` (and of `TRAINING_TILE` for D <= 4) so results do not
/// depend on it.
pub fn hardware_chunk_points(dim: usize, particles: usize) -> usize {
    let per_point = (particles.max(1) * dim.max(1)) as u64;
    let points = (HARDWARE_DISPATCH_WORK / per_point).max(1) as usize;
    let tile = 256; // a multiple of GENERAL_TILE and of the D <= 4 kernels' tile
    (points / tile).max(1) * tile
}

/// Training points per chunk dispatch for dimension `dim`: `TRAINING_CHUNK` on the
/// vec4 kernels (D <= 4), `general_chunk_points(dim)` on the general ones.
pub fn chunk_points(dim: usize) -> usize {
    if dim <= MAX_DIM {
        TRAINING_CHUNK
    } else {
        general_chunk_points(dim)
    }
}

/// Per-batch parameters. Keep in sync with `RunParams` in `shaders/common/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct RunParams {
    /// The 64-bit seed as (lo, hi): the Philox key.
    pub seed_lo: u32,
    /// High word of the seed.
    pub seed_hi: u32,
    /// Global index of the batch's first particle, as (lo, hi).
    pub first_particle_lo: u32,
    /// High word of the first particle's index.
    pub first_particle_hi: u32,
    /// Particles (or query points) in this batch.
    pub batch_len: u32,
    /// Dimension D of particles and training points (1..=MAX_DIMENSION).
    pub dim: u32,
    /// Number of training points N.
    pub n_train: u32,
    /// Threads per row of the 2-D dispatch grid, to linearise invocation ids.
    pub threads_per_row: u32,
    /// Standard deviation of the initial noise, `sqrt(sigma2(1))`.
    pub initial_std: f32,
    /// Rows of the batch (its first particles) whose posterior a tapped step stage
    /// writes (`shaders/common/tap_on.wgsl`); ignored by the other stages.
    pub tap_rows: u32,
    /// Padding (the size of the WGSL struct).
    pub _pad: [u32; 2],
}

impl RunParams {
    /// The parameters of a batch.
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
            tap_rows: 0,
            _pad: [0; 2],
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
    /// Step length in reverse time.
    pub dt: f32,
    /// beta at the step's forward time.
    pub beta: f32,
    /// Padding (the size of the WGSL struct).
    pub _pad: u32,
}

impl StepParams {
    /// The coefficients of an Euler–Maruyama step, rounded once from f64.
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
    pub fn for_score(schedule: &crate::model::schedule::VpSchedule, tau: f64) -> Self {
        let point = crate::model::schedule::ScorePoint::new(
            schedule,
            crate::model::schedule::ScoreKind::Empirical,
            tau,
        );
        Self::for_point(schedule, &point)
    }

    /// A DDIM step ([`ReverseStep::ddim_coeffs`]) in the em step's record: the same
    /// softmax, DDIM's `keep` and `mean` coefficients, and its noise (none for eta = 0).
    pub fn ddim(schedule: &crate::model::schedule::VpSchedule, step: &ReverseStep) -> Self {
        let (keep, mean, noise) = step.ddim_coeffs(schedule);
        Self {
            keep_coeff: keep as f32,
            mean_coeff: mean as f32,
            noise_coeff: noise as f32,
            ..Self::from_step(step)
        }
    }

    /// The score's parameters at `point` (any score kind: its components' variance
    /// divides, as in the steps).
    pub fn for_point(
        schedule: &crate::model::schedule::VpSchedule,
        point: &crate::model::schedule::ScorePoint,
    ) -> Self {
        let step = ReverseStep {
            index: 0,
            t: 1.0 - point.tau,
            dt: 0.0,
            tau: point.tau,
            beta: schedule.beta(point.tau),
            mean_scale: point.mean_scale,
            sigma2: point.variance,
            ddim_eta: 0.0,
            exploding: schedule.is_exploding(),
        };
        Self::from_step(&step)
    }
}

/// One half of a Heun step of the probability-flow ODE (`heun_step.wgsl`), computed on the
/// host in f64 and rounded once to f32. With `v(x, tau) = a x + b m(x, tau)`,
/// `a = beta (1 - 1/sigma2) / 2`, `b = beta s / (2 sigma2)` (the ODE's velocity in reverse
/// time, `beta x / 2 + beta score / 2`), step k from tau_k to tau_{k+1} is
///
/// - predictor (phase 0, at tau_k): `x~ = (1 + dt a0) x + dt b0 m0` replaces x, and the
///   corrector's known part `(1 + dt a0 / 2) x + (dt b0 / 2) m0` goes to the scratch buffer;
/// - corrector (phase 1, at tau_{k+1}, evaluated at x~):
///   `x' = partial + (dt a1 / 2) x~ + (dt b1 / 2) m1`.
///
/// The last step ends at tau = 0 where sigma2 = 0 and the score is singular: it is the
/// predictor alone, an Euler step.
/// Keep in sync with `HeunParams` in `shaders/common/params.wgsl`. It is as large as
/// `StepParams`: both are records of the same step-parameter buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct HeunParams {
    /// 0: predictor, 1: corrector.
    pub phase: u32,
    /// `s(tau)` and `1 / (2 sigma2(tau))` of the score evaluated in this half.
    pub mean_scale: f32,
    /// `1 / (2 sigma2(tau))`.
    pub inv_two_sigma2: f32,
    /// Coefficients of x and m in the new position (predictor) or the increment
    /// (corrector).
    pub x_coeff: f32,
    /// Coefficient of m in the new position or increment.
    pub mean_coeff: f32,
    /// Predictor only: coefficients of x and m0 in the corrector's known part.
    pub partial_x_coeff: f32,
    /// Predictor only: coefficient of m0 in the corrector's known part.
    pub partial_mean_coeff: f32,
    /// Padding (the size of the WGSL struct).
    pub _pad: [u32; 5],
}

const _: () = assert!(std::mem::size_of::<HeunParams>() == std::mem::size_of::<StepParams>());

impl HeunParams {
    /// The one or two halves of step `k` of `steps` (two, but one for the last step).
    pub fn for_step(steps: &[ReverseStep], k: usize) -> Vec<HeunParams> {
        let step = &steps[k];
        let dt = step.dt;
        // EDM (exploding): no drift, `v = beta score / 2`, so `a = -beta / (2 sigma2)`.
        let a = |s: &ReverseStep| {
            if s.exploding {
                -0.5 * s.beta / s.sigma2
            } else {
                0.5 * s.beta * (1.0 - 1.0 / s.sigma2)
            }
        };
        let b = |s: &ReverseStep| 0.5 * s.beta * s.mean_scale / s.sigma2;
        let (a0, b0) = (a(step), b(step));
        let predictor = HeunParams {
            phase: 0,
            mean_scale: step.mean_scale as f32,
            inv_two_sigma2: (0.5 / step.sigma2) as f32,
            x_coeff: (1.0 + dt * a0) as f32,
            mean_coeff: (dt * b0) as f32,
            partial_x_coeff: (1.0 + 0.5 * dt * a0) as f32,
            partial_mean_coeff: (0.5 * dt * b0) as f32,
            _pad: [0; 5],
        };
        let Some(next) = steps.get(k + 1) else {
            return vec![predictor];
        };
        let corrector = HeunParams {
            phase: 1,
            mean_scale: next.mean_scale as f32,
            inv_two_sigma2: (0.5 / next.sigma2) as f32,
            x_coeff: (0.5 * dt * a(next)) as f32,
            mean_coeff: (0.5 * dt * b(next)) as f32,
            partial_x_coeff: 0.0,
            partial_mean_coeff: 0.0,
            _pad: [0; 5],
        };
        vec![predictor, corrector]
    }
}

/// One record of the step-parameter buffer, what every engine's kernel runs once: an
/// Euler–Maruyama step or one half of a Heun step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepRecord {
    /// `x' = keep x + mean_coeff m + noise_coeff z`, z from Philox (step index, particle).
    Em(StepParams),
    /// A Heun half (see [`HeunParams`]): the predictor also keeps the corrector's part.
    Heun(HeunParams),
}

impl StepRecord {
    /// The score's `(s, 1 / (2 σ²))` at this record, as its parameters hold them.
    pub fn score_scale(&self) -> (f32, f32) {
        match self {
            StepRecord::Em(p) => (p.mean_scale, p.inv_two_sigma2),
            StepRecord::Heun(h) => (h.mean_scale, h.inv_two_sigma2),
        }
    }

    /// Its byte image in the shaders' step-parameter buffer (both kinds are one size).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            StepRecord::Em(step) => bytemuck::bytes_of(step),
            StepRecord::Heun(half) => bytemuck::bytes_of(half),
        }
    }
}

/// The records of a range of steps, as every engine runs them: one per em step, or the
/// halves of each heun step (two, but one for the last step of the schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecords {
    pub records: Vec<StepRecord>,
    /// `first[j]`: the index of the first record of step `range.start + j`; one more
    /// entry at the end, the number of records.
    pub first: Vec<usize>,
}

impl StepRecords {
    /// The records of steps `range` of `steps` (the whole schedule: a heun step's
    /// corrector needs the next step) run with `sampler`.
    pub fn new(
        sampler: SamplerKind,
        schedule: &crate::model::schedule::VpSchedule,
        steps: &[ReverseStep],
        range: Range<usize>,
    ) -> Self {
        let mut records = Vec::with_capacity(range.len() * 2);
        let mut first = Vec::with_capacity(range.len() + 1);
        for k in range {
            first.push(records.len());
            match sampler {
                SamplerKind::Em => records.push(StepRecord::Em(StepParams::from_step(&steps[k]))),
                // The em kernels' folded update with DDIM's coefficients and no noise.
                SamplerKind::Ddim => {
                    records.push(StepRecord::Em(StepParams::ddim(schedule, &steps[k])))
                }
                SamplerKind::Heun => records.extend(
                    HeunParams::for_step(steps, k)
                        .into_iter()
                        .map(StepRecord::Heun),
                ),
            }
        }
        first.push(records.len());
        Self { records, first }
    }
}

/// The range of training points one dispatch reduces over (see `em_step.wgsl`).
/// Keep in sync with `ChunkParams` in `shaders/common/params.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable, PartialEq)]
pub struct ChunkParams {
    /// First training point of the chunk.
    pub start: u32,
    /// Training points of the chunk.
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

/// Split `n_train` training points into chunks of at most `chunk` points.
pub fn training_chunks_of(n_train: usize, chunk: usize) -> Vec<ChunkParams> {
    let n = n_train.div_ceil(chunk).max(1);
    (0..n)
        .map(|c| {
            let start = c * chunk;
            ChunkParams {
                start: start as u32,
                count: (n_train - start).min(chunk) as u32,
                first: (c == 0) as u32,
                last: (c + 1 == n) as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn general_chunks_keep_every_invocation_far_below_the_loop_limit() {
        for dim in [5, 17, 64, 784, 3072, MAX_DIMENSION] {
            let points = general_chunk_points(dim);
            assert_eq!(points % GENERAL_TILE, 0);
            let columns = dim.div_ceil(4);
            let owned = columns.div_ceil(GENERAL_WG);
            let tiles = points / GENERAL_TILE;
            // Tiles, plus zeroing, loading and storing the accumulators of the state, the
            // update, and the one-block particle load.
            let state = GENERAL_PARTICLES * (owned + 1);
            let total = tiles * general_loop_iterations_per_tile(dim) + 4 * state + 16;
            assert!(total < 45_000, "D = {dim}: {total} iterations");
        }
        assert_eq!(chunk_points(4), TRAINING_CHUNK);
        assert_eq!(general_chunk_points(MAX_DIMENSION), GENERAL_TILE);
    }

    #[test]
    fn step_records_are_one_per_em_step_and_the_halves_of_each_heun_step() {
        let schedule = crate::model::schedule::VpSchedule::default();
        let steps = crate::model::schedule::reverse_steps(&schedule, 6);
        let n = steps.len();
        let em = StepRecords::new(SamplerKind::Em, &schedule, &steps, 1..n);
        assert_eq!(em.first, (0..n).collect::<Vec<_>>());
        assert_eq!(
            em.records[0],
            StepRecord::Em(StepParams::from_step(&steps[1]))
        );
        let heun = StepRecords::new(SamplerKind::Heun, &schedule, &steps, 2..n);
        // Two halves a step, one for the schedule's last step.
        let want: Vec<usize> = (0..n - 2).map(|j| 2 * j).chain([2 * (n - 2) - 1]).collect();
        assert_eq!(heun.first, want);
        let halves = HeunParams::for_step(&steps, 2);
        assert_eq!(
            heun.records[..2],
            [StepRecord::Heun(halves[0]), StepRecord::Heun(halves[1])]
        );
        assert_eq!(heun.records[0].as_bytes(), bytemuck::bytes_of(&halves[0]));
    }

    #[test]
    fn hardware_chunks_are_whole_tiles_bounded_by_work() {
        for (dim, particles) in [(5, 1), (64, 1000), (784, 1 << 20), (4096, 1 << 22)] {
            let points = hardware_chunk_points(dim, particles);
            assert_eq!(points % 256, 0);
            assert!(points >= 256);
            let work = (points * dim * particles) as u64;
            assert!(
                work <= HARDWARE_DISPATCH_WORK || points == 256,
                "{dim} {particles}"
            );
        }
    }
}
