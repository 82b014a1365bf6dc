//! Posterior concentration: fixed-point sums, at the recorded steps, of how concentrated each
//! tracked particle's posterior over the training points is, and whether its argmax is the
//! final nearest point. Integers, so shards add exactly ([`super::MemorizationCounts`]).

use crate::error::{Error, Result};
use serde::Serialize;

/// Fixed-point scale of the posterior weight sums: integers add exactly over shards.
pub const WEIGHT_SCALE: f64 = 4_294_967_296.0; // 2^32

/// Posterior concentration sums at the recorded steps, over the particles whose index is
/// below `limit` (so that every shard records the same particles as the unsharded run).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PosteriorCounts {
    pub limit: u64,
    pub points: Vec<PosteriorPoint>,
    /// The batch in flight: for each recorded point it has passed, the argmax of each of its
    /// tracked particles, until the batch's final samples are counted. Empty between
    /// batches; a mid-batch checkpoint saves it so that a resumed run counts the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Vec<u32>>,
}

/// Sums at one recorded step.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PosteriorPoint {
    /// Steps done (0: the initial noise).
    pub step: usize,
    /// Forward time of the state and its Ornstein–Uhlenbeck time `B(tau) / 2`, as the bits
    /// of their f64 (JSON readers may round decimal floats; integers are kept exactly, so
    /// a merge rewrites the same file).
    pub tau_bits: u64,
    pub ou_time_bits: u64,
    pub particles: u64,
    /// Sum over particles of `round(max_i w_i 2^32)`.
    pub max_weight_sum: u64,
    /// Particles whose argmax_i w_i here is the nearest training point of their sample.
    pub argmax_is_final: u64,
}

/// The posterior concentration at one recorded step, as run.json shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PosteriorSummaryPoint {
    pub step: usize,
    pub tau: f64,
    pub ou_time: f64,
    pub particles: u64,
    /// Mean over particles of `max_i w_i`.
    pub mean_max_weight: f64,
    /// Fraction of particles whose current argmax is their final nearest training point.
    pub fraction_argmax_final: f64,
}

impl PosteriorCounts {
    pub fn merge(&mut self, other: &PosteriorCounts) -> Result<()> {
        let same = self.limit == other.limit
            && self.points.len() == other.points.len()
            && self
                .points
                .iter()
                .zip(&other.points)
                .all(|(a, b)| a.step == b.step && a.tau_bits == b.tau_bits);
        if !same {
            return Err(Error::invalid(
                "memorization counts",
                "the posterior concentration was recorded at different steps",
            ));
        }
        for (a, b) in self.points.iter_mut().zip(&other.points) {
            a.particles += b.particles;
            a.max_weight_sum += b.max_weight_sum;
            a.argmax_is_final += b.argmax_is_final;
        }
        // Only one part can have a batch in flight (a checkpoint added to a fresh counter).
        let busy = |p: &PosteriorCounts| p.pending.iter().any(|v| !v.is_empty());
        match (busy(self), busy(other)) {
            (true, true) => {
                return Err(Error::invalid(
                    "memorization counts",
                    "both parts have a batch in flight",
                ))
            }
            (false, true) => self.pending = other.pending.clone(),
            _ => {}
        }
        Ok(())
    }

    pub fn summary(&self) -> Vec<PosteriorSummaryPoint> {
        self.points
            .iter()
            .map(|p| {
                let n = p.particles.max(1) as f64;
                PosteriorSummaryPoint {
                    step: p.step,
                    tau: f64::from_bits(p.tau_bits),
                    ou_time: f64::from_bits(p.ou_time_bits),
                    particles: p.particles,
                    mean_max_weight: p.max_weight_sum as f64 / WEIGHT_SCALE / n,
                    fraction_argmax_final: p.argmax_is_final as f64 / n,
                }
            })
            .collect()
    }
}
