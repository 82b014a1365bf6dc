//! The reference backend: the formulas of docs/architecture.md §1 in f64, written for clarity, not
//! speed. It draws the same Philox normals (Box–Muller in f64), so it follows the same
//! trajectories as the f32 engines up to rounding.

use crate::engine::cpu::run_blocks;
use crate::engine::{Backend, BatchWork, Engine, PosteriorTap, Problem, SamplerKind};
use crate::error::Result;
use crate::model::dataset::Dataset;
use crate::model::patch_score::PatchReference;
use crate::model::philox::{fill_normals_f64, INITIAL_NOISE_STEP};
use crate::model::posterior::{max_weight as max_weight_of, softmax_in_place};
use crate::model::schedule::ScorePoint;
use crate::model::schedule::{ReverseStep, VpSchedule};

/// Potentials `-|x - s x_i|^2 / (2 v)` of all training points at `x`.
fn potentials(dataset: &Dataset, x: &[f64], s: f64, v: f64) -> Vec<f64> {
    (0..dataset.len())
        .map(|i| {
            let d2: f64 = dataset
                .point(i)
                .iter()
                .zip(x)
                .map(|(xi, xk)| (xk - s * xi).powi(2))
                .sum();
            -d2 / (2.0 * v)
        })
        .collect()
}

/// Softmax weights of the training points at `x`, forward time with scale `s`, variance `v`.
fn posterior_weights(dataset: &Dataset, x: &[f64], s: f64, v: f64) -> Vec<f64> {
    let mut weights = potentials(dataset, x, s, v);
    let (_, total) = softmax_in_place(&mut weights);
    weights.iter_mut().for_each(|w| *w /= total);
    weights
}

/// The empirical score `grad_x log p_tau(x) = (s sum_i w_i x_i - x) / sigma2`.
pub fn score(dataset: &Dataset, schedule: &VpSchedule, tau: f64, x: &[f64]) -> Vec<f64> {
    score_with(dataset, schedule.mean_scale(tau), schedule.sigma2(tau), x)
}

/// The score of the mixture `(1/N) sum_i N(s x_i, v I)`: `(s sum_i w_i x_i - x) / v`. With
/// `v = sigma2(tau)` it is the empirical score; `kde:h` steps carry `v = sigma2 + s^2 h^2`.
pub fn score_with(dataset: &Dataset, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
    let w = posterior_weights(dataset, x, s, v);
    (0..dataset.dim)
        .map(|d| {
            let mean: f64 = (0..dataset.len()).map(|i| w[i] * dataset.point(i)[d]).sum();
            (s * mean - x[d]) / v
        })
        .collect()
}

/// `log p_tau(x)` of the forward marginal `(1/N) sum_i N(x; s x_i, sigma2 I)`, via
/// log-sum-exp. Its gradient is `score` (tested by finite differences).
pub fn log_density(dataset: &Dataset, schedule: &VpSchedule, tau: f64, x: &[f64]) -> f64 {
    let s = schedule.mean_scale(tau);
    let v = schedule.sigma2(tau);
    let dim = dataset.dim as f64;
    let mut weights = potentials(dataset, x, s, v);
    let (max, total) = softmax_in_place(&mut weights);
    let lse = max + total.ln();
    lse - (dataset.len() as f64).ln() - 0.5 * dim * (std::f64::consts::TAU * v).ln()
}

/// What the reference's steps evaluate: the score of the training set, whole points or
/// (with a patch score) patches.
#[derive(Debug, Clone, Copy)]
pub struct ScoreModel<'a> {
    /// The training set.
    pub dataset: &'a Dataset,
    /// The patch-local score, if the run uses one; else the empirical (or kde) score.
    pub patch: Option<&'a PatchReference>,
}

impl ScoreModel<'_> {
    /// The score at `x` of the mixture at mean scale `s` and component variance `v`.
    pub fn score(&self, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
        match self.patch {
            Some(reference) => reference.score(s, v, x),
            None => score_with(self.dataset, s, v, x),
        }
    }
}

/// One Euler–Maruyama step exactly as written in docs/architecture.md §1:
/// `x <- x + dt (-f(x, tau) + g(tau)^2 score) + sqrt(dt) g(tau) z`.
pub fn em_step(
    model: &ScoreModel,
    schedule: &VpSchedule,
    step: &ReverseStep,
    x: &mut [f64],
    z: &[f64],
) {
    // The step's own mean scale and component variance: the empirical score's
    // `sigma2(tau)`, or `sigma2 + s^2 h^2` for `kde:h` (schedule::reverse_steps_with).
    let sc = model.score(step.mean_scale, step.sigma2, x);
    let g = schedule.diffusion(step.tau);
    for d in 0..x.len() {
        let drift = -schedule.drift(x[d], step.tau) + g * g * sc[d];
        x[d] += step.dt * drift + step.dt.sqrt() * g * z[d];
    }
}

/// A DDIM step from the definition (Song et al., eq. 12 and 16): the predicted noise
/// `eps = -sigma score`, the predicted data `x0 = (x - sigma eps) / s`, then
/// `x' = s' x0 + sqrt(sigma'^2 - sigma_eta^2) eps + sigma_eta z` at the next time
/// `tau - dt`, with `sigma_eta = eta (sigma'/sigma) sqrt(1 - s^2/s'^2)` (0 for eta = 0).
pub fn ddim_step(
    model: &ScoreModel,
    schedule: &VpSchedule,
    step: &ReverseStep,
    x: &mut [f64],
    z: &[f64],
) {
    let sc = model.score(step.mean_scale, step.sigma2, x);
    let (s, sigma) = (step.mean_scale, schedule.sigma2(step.tau).sqrt());
    let next = (step.tau - step.dt).max(0.0);
    let (s_next, sigma_next) = (schedule.mean_scale(next), schedule.sigma2(next).sqrt());
    let sigma_eta =
        step.ddim_eta * (sigma_next / sigma) * (1.0 - (s * s) / (s_next * s_next)).max(0.0).sqrt();
    let kept = (sigma_next * sigma_next - sigma_eta * sigma_eta)
        .max(0.0)
        .sqrt();
    for d in 0..x.len() {
        let eps = -sigma * sc[d];
        let x0 = (x[d] - sigma * eps) / s;
        x[d] = s_next * x0 + kept * eps + sigma_eta * z[d];
    }
}

/// The probability-flow velocity at a step's point (`tau`, and the score's component
/// variance `step.sigma2`: `sigma2(tau)`, or `sigma2 + s^2 h^2` for `kde:h`):
/// `v = -f(x, tau) + g(tau)^2 score / 2`.
fn step_velocity(
    model: &ScoreModel,
    schedule: &VpSchedule,
    step: &ReverseStep,
    x: &[f64],
) -> Vec<f64> {
    let sc = model.score(step.mean_scale, step.sigma2, x);
    let g = schedule.diffusion(step.tau);
    x.iter()
        .zip(&sc)
        .map(|(&xd, &sd)| -schedule.drift(xd, step.tau) + 0.5 * g * g * sd)
        .collect()
}

/// One Heun step of the probability-flow ODE from `step.tau` to `next.tau`:
/// `x~ = x + dt v(x, tau)`, `x' = x + dt/2 (v(x, tau) + v(x~, next.tau))`, the score at each
/// point that of its step (so `kde:h` applies). With `next = None` (the last step, to
/// tau = 0 where sigma2 = 0 and the score is singular, or to `--t-min`) it is the Euler
/// step `x' = x~`.
pub fn heun_step(
    model: &ScoreModel,
    schedule: &VpSchedule,
    step: &ReverseStep,
    next: Option<&ReverseStep>,
    x: &mut [f64],
) {
    let v0 = step_velocity(model, schedule, step, x);
    let predicted: Vec<f64> = x.iter().zip(&v0).map(|(a, v)| a + step.dt * v).collect();
    match next {
        None => x.copy_from_slice(&predicted),
        Some(next) => {
            let v1 = step_velocity(model, schedule, next, &predicted);
            for d in 0..x.len() {
                x[d] += 0.5 * step.dt * (v0[d] + v1[d]);
            }
        }
    }
}

/// A row's piece of a [`PosteriorTap`]'s buffers, taken by the work item of that row.
type Piece<'t> = std::sync::Mutex<Option<(&'t mut [f32], &'t mut [u32])>>;

/// The reference engine. It re-evaluates f, g and the score from their definitions, with
/// the schedule of each problem ([`Problem::schedule`]), not only the steps' records.
#[derive(Debug, Clone, Default)]
pub struct ReferenceEngine;

impl ReferenceEngine {
    /// The engine (it takes the schedule with each problem).
    pub fn new() -> Self {
        Self
    }
}

impl Engine for ReferenceEngine {
    fn backend(&self) -> Backend {
        Backend::Reference
    }

    fn device_name(&self) -> String {
        crate::engine::cpu::cpu_name()
    }

    fn max_batch_particles(&self, _dim: usize) -> usize {
        usize::MAX
    }

    fn posterior_tap(&self, _problem: &Problem) -> bool {
        true
    }

    /// `advance_batch`, with the posterior tap where given. At every tapped step the state
    /// is rounded to f32 first, for all particles, as it is where the driver splits a batch
    /// at the recorded steps: a run gives the same trajectories with or without the tap.
    /// The tap's values are `posterior::max_weight` (f64) of the rounded state, rounded to
    /// f32.
    fn advance_steps(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: Option<&mut PosteriorTap>,
    ) -> Result<()> {
        let dim = problem.dataset.dim;
        let (first_particle, steps) = (work.first_particle, work.steps.clone());
        let schedule = problem.schedule;
        // The dictionaries of each patch size of a patch score, built once for the batch.
        let distinct = problem.patch.map_or(Vec::new(), |plan| plan.distinct());
        let references: Vec<PatchReference> = distinct
            .iter()
            .map(|g| PatchReference::new(g, problem.dataset))
            .collect();
        let (tap_steps, tap_rows, pieces): (&[usize], usize, Vec<Piece>) = match tap {
            Some(tap) => {
                tap.check();
                let records = tap.steps.len().max(1);
                let pieces = tap
                    .max_weight
                    .chunks_mut(records)
                    .zip(tap.argmax.chunks_mut(records))
                    .map(|p| std::sync::Mutex::new(Some(p)))
                    .collect();
                (tap.steps, tap.rows, pieces)
            }
            None => (&[], 0, Vec::new()),
        };
        // One particle per work item: an f64 particle-step is slow, so items balance well.
        run_blocks(dim, 1, work, |i, x0, out| {
            let particle = first_particle + i as u64;
            let mut x = vec![0.0; dim];
            match x0 {
                Some(x0) => {
                    fill_normals_f64(problem.seed, particle, INITIAL_NOISE_STEP, &mut x);
                    x.iter_mut().for_each(|v| *v *= problem.initial_std);
                    for (o, v) in x0.iter_mut().zip(&x) {
                        *o = *v as f32;
                    }
                }
                // A state saved between ranges is f32: the f64 trajectory is rounded there.
                None => x
                    .iter_mut()
                    .zip(out.iter())
                    .for_each(|(v, o)| *v = *o as f64),
            }
            let mut z = vec![0.0; dim];
            let mut piece = if i < tap_rows {
                pieces[i].lock().expect("tap piece").take()
            } else {
                None
            };
            for k in steps.clone() {
                let step = &problem.steps[k];
                // The step's patch size, where the run has a patch-size schedule.
                let model = ScoreModel {
                    dataset: problem.dataset,
                    patch: problem.patch.map(|plan| {
                        let at = distinct.iter().position(|g| *g == plan.steps[k]);
                        &references[at.expect("every step's geometry is prepared")]
                    }),
                };
                if let Some(j) = tap_steps.iter().position(|&t| t == k) {
                    let rounded: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    x.iter_mut().zip(&rounded).for_each(|(v, &r)| *v = r as f64);
                    if let Some((max_weight, argmax)) = piece.as_mut() {
                        let point = ScorePoint {
                            tau: step.tau,
                            mean_scale: step.mean_scale,
                            sigma2: step.sigma2,
                            variance: step.sigma2,
                        };
                        let (w, a) = max_weight_of(problem.dataset, &rounded, &point);
                        max_weight[j] = w as f32;
                        argmax[j] = a;
                    }
                }
                match problem.sampler {
                    SamplerKind::Em => {
                        fill_normals_f64(problem.seed, particle, step.index, &mut z);
                        em_step(&model, &schedule, step, &mut x, &z);
                    }
                    SamplerKind::Heun => {
                        let next = problem.steps.get(k + 1);
                        heun_step(&model, &schedule, step, next, &mut x);
                    }
                    SamplerKind::Ddim => {
                        // The same normals as an em step's (zero-weighted for eta = 0).
                        fill_normals_f64(problem.seed, particle, step.index, &mut z);
                        ddim_step(&model, &schedule, step, &mut x, &z);
                    }
                }
            }
            for (o, v) in out.iter_mut().zip(&x) {
                *o = *v as f32;
            }
        })
    }
}
