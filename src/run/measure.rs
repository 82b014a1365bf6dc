//! The metrics side of a run, fed batch by batch by the sampler: nearest-neighbour
//! memorization counts (on the GPU when a device is given, else in f64 on the CPU) and the
//! posterior concentration along the trajectory. Used by the run folder of `sample` and,
//! alone, by `collapse` and `sweep`.

use crate::engine::gpu::nearest::GpuNearest;
use crate::error::Result;
use crate::metrics::{MemorizationCounter, PosteriorCounts, PosteriorPoint, WEIGHT_SCALE};
use crate::model::dataset::Dataset;
use crate::model::posterior::{columns, max_weights};
use crate::run::driver::{BatchSink, SampleConfig};

/// Which steps to record the posterior concentration at, and over which particles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosteriorPlan {
    /// Record after every `every` steps (and after the last step, and at step 0).
    pub every: usize,
    /// Only particles with index below this (the same ones in every shard); 0: off.
    pub particles: u64,
}

impl PosteriorPlan {
    /// `records` points along the trajectory (about), over the first `particles` particles.
    pub fn spread(steps: usize, records: usize, particles: u64) -> Self {
        Self {
            every: steps.div_ceil(records.max(1)).max(1),
            particles,
        }
    }
}

/// Recorded argmaxes of the batch in flight, one vector per recorded step.
struct Tracker {
    dataset: Dataset,
    /// The training points column by column, for `posterior::max_weights`.
    columns: Vec<f64>,
    steps: Vec<usize>,
    points: Vec<crate::model::schedule::ScorePoint>,
    limit: u64,
    /// A record at variance 0 (the end of a run to tau = 0) of the batch in flight and its
    /// rows: there the weights are the indicator of the nearest training point, which
    /// `count` finds anyway.
    at_nearest: Option<(usize, usize)>,
}

/// The metrics of a run (see the module documentation).
pub struct MetricsSink {
    /// The memorization counts so far.
    pub counter: MemorizationCounter,
    tracker: Option<Tracker>,
    gpu: Option<GpuNearest>,
}

impl MetricsSink {
    /// Metrics for `config`'s training set; with `plan`, the posterior concentration too.
    pub fn new(config: &SampleConfig, plan: Option<PosteriorPlan>) -> Result<Self> {
        let dataset = &config.dataset;
        let mut counter = MemorizationCounter::new(&dataset.points, dataset.dim)?;
        let tracker = match plan {
            Some(plan) if plan.particles > 0 => {
                let steps = config.reverse_steps();
                let mut record: Vec<usize> = (0..=steps.len()).step_by(plan.every).collect();
                if record.last() != Some(&steps.len()) {
                    record.push(steps.len());
                }
                let points: Vec<_> = record
                    .iter()
                    .map(|&k| config.score_point_after(&steps, k))
                    .collect();
                counter.set_posterior(PosteriorCounts {
                    limit: plan.particles,
                    points: record
                        .iter()
                        .zip(&points)
                        .map(|(&step, p)| PosteriorPoint {
                            step,
                            tau_bits: p.tau.to_bits(),
                            ou_time_bits: p.ou_time(&config.schedule).to_bits(),
                            particles: 0,
                            max_weight_sum: 0,
                            argmax_is_final: 0,
                        })
                        .collect(),
                    pending: vec![Vec::new(); record.len()],
                });
                Some(Tracker {
                    dataset: dataset.clone(),
                    columns: columns(dataset),
                    steps: record,
                    points,
                    limit: plan.particles,
                    at_nearest: None,
                })
            }
            _ => None,
        };
        Ok(Self {
            counter,
            tracker,
            gpu: None,
        })
    }

    /// Memorization counts only, for `dataset`.
    pub fn plain(dataset: &Dataset) -> Result<Self> {
        Ok(Self {
            counter: MemorizationCounter::new(&dataset.points, dataset.dim)?,
            tracker: None,
            gpu: None,
        })
    }

    /// Find nearest neighbours on this GPU device (exact: see `gpu::nearest`).
    pub fn use_gpu(&mut self, ctx: &crate::engine::gpu::GpuContext) -> Result<()> {
        let t = self.counter.training().to_vec();
        self.gpu = Some(GpuNearest::new(ctx, &t, self.counter.dim())?);
        Ok(())
    }

    /// The steps after which the posterior concentration is recorded.
    pub fn observe_steps(&self) -> Vec<usize> {
        self.tracker
            .as_ref()
            .map(|t| t.steps.clone())
            .unwrap_or_default()
    }

    /// Record the posterior concentration of the batch from `first` after `step` steps.
    pub fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> Result<()> {
        let Some(t) = &mut self.tracker else {
            return Ok(());
        };
        let Some(r) = t.steps.iter().position(|&k| k == step) else {
            return Ok(());
        };
        let dim = t.dataset.dim;
        let rows = (state.len() / dim) as u64;
        let tracked = t.limit.saturating_sub(first).min(rows) as usize;
        let point = t.points[r];
        if point.variance <= 0.0 && point.mean_scale == 1.0 {
            // Weight 1 on the nearest training point: `count` records it from the nearest
            // neighbours (the same f64 distances, the same lowest-index ties).
            t.at_nearest = Some((r, tracked));
            return Ok(());
        }
        let results = max_weights(&t.dataset, &t.columns, &state[..tracked * dim], &point);
        self.record(
            r,
            results.iter().map(|&(w, _)| w),
            results.iter().map(|&(_, i)| i).collect(),
        );
        Ok(())
    }

    /// The rows of the batch starting at `first` whose posterior is recorded.
    pub fn tap_rows(&self, first: u64, n: usize) -> Option<usize> {
        self.tracker
            .as_ref()
            .map(|t| t.limit.saturating_sub(first).min(n as u64) as usize)
    }

    /// [`observe`](Self::observe) from the engine's own score evaluation (see
    /// `BatchSink::observe_tapped`): f32 weights, the engine's argmax.
    pub fn observe_tapped(
        &mut self,
        first: u64,
        step: usize,
        max_weight: &[f32],
        argmax: Vec<u32>,
    ) -> Result<()> {
        let Some(t) = &self.tracker else {
            return Ok(());
        };
        let Some(r) = t.steps.iter().position(|&k| k == step) else {
            return Ok(());
        };
        debug_assert_eq!(
            Some(max_weight.len()),
            self.tap_rows(first, max_weight.len())
        );
        self.record(r, max_weight.iter().map(|&w| w as f64), argmax);
        Ok(())
    }

    /// Add one batch's record `r`: its rows' largest weights and argmaxes.
    fn record(&mut self, r: usize, weights: impl Iterator<Item = f64>, argmax: Vec<u32>) {
        let counts = self.counter.posterior_mut().expect("set with the tracker");
        let p = &mut counts.points[r];
        p.particles += argmax.len() as u64;
        p.max_weight_sum += weights.map(|w| round_to_u64(w * WEIGHT_SCALE)).sum::<u64>();
        counts.pending[r] = argmax;
    }

    /// Count a finished batch of samples (the posterior argmaxes recorded for it are
    /// matched row by row).
    pub fn count(&mut self, samples: &[f32]) -> Result<()> {
        let dim = self.counter.dim();
        let nearest: Vec<u32> = match &mut self.gpu {
            Some(gpu) => {
                self.counter.check_batch(samples, dim)?;
                let found = gpu.neighbours(samples)?;
                self.counter.add_neighbours(&found);
                found
                    .iter()
                    .map(|n| n.map_or(u32::MAX, |n| n.nearest))
                    .collect()
            }
            None => self.counter.add_batch_nearest(samples, dim)?,
        };
        if let Some((r, rows)) = self.tracker.as_mut().and_then(|t| t.at_nearest.take()) {
            // `posterior::max_weight` at variance 0: weight 1, the nearest point (0, its
            // first index, for a row with a non-finite coordinate).
            let argmax = nearest[..rows]
                .iter()
                .map(|&i| if i == u32::MAX { 0 } else { i })
                .collect();
            self.record(r, std::iter::repeat_n(1.0, rows), argmax);
        }
        if self.tracker.is_some() {
            let counts = self
                .counter
                .posterior
                .as_mut()
                .expect("set with the tracker");
            for (p, pending) in counts.points.iter_mut().zip(&mut counts.pending) {
                p.argmax_is_final +=
                    pending.iter().zip(&nearest).filter(|(a, b)| a == b).count() as u64;
                pending.clear();
            }
        }
        Ok(())
    }
}

impl BatchSink for MetricsSink {
    fn consume(&mut self, _first: u64, _initial: &[f32], samples: &[f32]) -> Result<()> {
        self.count(samples)
    }

    fn observe_steps(&self) -> Vec<usize> {
        MetricsSink::observe_steps(self)
    }

    fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> Result<()> {
        MetricsSink::observe(self, first, step, state)
    }

    fn tap_rows(&self, first: u64, n: usize) -> Option<usize> {
        MetricsSink::tap_rows(self, first, n)
    }

    fn observe_tapped(
        &mut self,
        first: u64,
        step: usize,
        max_weight: &[f32],
        argmax: Vec<u32>,
    ) -> Result<()> {
        MetricsSink::observe_tapped(self, first, step, max_weight, argmax)
    }
}

/// `x.round() as u64` (halves away from zero, negatives and NaN to 0, saturating), without
/// `f64::round`: on baseline x86-64 (no SSE4.1) that is a libm call per value, 2 ms of the
/// default run's posterior records. `x - trunc(x)` is exact below 2^53, and above it `x` is
/// an integer.
fn round_to_u64(x: f64) -> u64 {
    let whole = x as u64;
    whole.saturating_add(u64::from(x - whole as f64 >= 0.5))
}

#[cfg(test)]
mod tests {
    use super::round_to_u64;

    #[test]
    fn round_to_u64_is_round_as_u64() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            0.499_999_999_999_999_94,
            4_294_967_295.5,
            4_294_967_296.0,
            9_007_199_254_740_993.0,
            1e30,
            f64::INFINITY,
            f64::NAN,
            -0.3,
            -7.5,
        ];
        // Weights in [0, 1] scaled by 2^32, as the posterior records round them.
        let mut state = 1u64;
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            values.push((state >> 11) as f64 / (1u64 << 53) as f64 * 4_294_967_296.0);
        }
        for x in values {
            assert_eq!(round_to_u64(x), x.round() as u64, "x = {x:e}");
        }
    }
}
