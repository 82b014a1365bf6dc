//! What defines a sampling run (`SampleConfig`, `Shard`) and its validation: every check a
//! run passes before anything is opened or written, the step records' finiteness and
//! stability included. `driver.rs` runs a validated configuration.

use crate::engine::SamplerKind;
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use crate::model::schedule::{reverse_steps_from, ReverseStep, ScoreKind, ScorePoint, VpSchedule};
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
