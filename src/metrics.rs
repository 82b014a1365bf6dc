//! Memorization summary: how many generated samples sit on a training point.
//!
//! For every sample, the nearest training point (brute force, Euclidean, f64 arithmetic on
//! the f32 sample promoted to f64; ties go to the lowest index). Counts are integers, so a
//! counter fed batch by batch, or several counters merged, give exactly the same summary as
//! one counter fed everything at once.

use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;

/// The two memorization radii, in the data's units.
pub const RADIUS_0_05: f64 = 0.05;
pub const RADIUS_0_1: f64 = 0.1;

/// Samples per rayon task (each task keeps its own per-training-point counts).
const CHUNK: usize = 8192;

/// Running memorization counts over batches of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorizationCounter {
    dim: usize,
    /// Row-major `(n, dim)` training points.
    training: Vec<f64>,
    particles: u64,
    within_0_05: u64,
    within_0_1: u64,
    nearest_counts: Vec<u64>,
    nonfinite: u64,
}

/// The summary written to the run's metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorizationSummary {
    /// All samples seen, non-finite ones included.
    pub particles: u64,
    /// Fraction of all samples within 0.05 of their nearest training point (0 when none).
    pub fraction_within_0_05: f64,
    /// Fraction of all samples within 0.1 of their nearest training point (0 when none).
    pub fraction_within_0_1: f64,
    /// For each training point, the number of (finite) samples nearest to it.
    pub nearest_counts: Vec<u64>,
    /// Samples with a NaN or infinite coordinate (counted in `particles`, in no other count).
    pub nonfinite: u64,
}

/// Counts of one chunk of samples.
#[derive(Debug, Clone)]
struct Partial {
    within_0_05: u64,
    within_0_1: u64,
    nearest_counts: Vec<u64>,
    nonfinite: u64,
}

impl Partial {
    fn new(n: usize) -> Self {
        Partial {
            within_0_05: 0,
            within_0_1: 0,
            nearest_counts: vec![0; n],
            nonfinite: 0,
        }
    }

    fn add(mut self, other: Partial) -> Self {
        self.within_0_05 += other.within_0_05;
        self.within_0_1 += other.within_0_1;
        self.nonfinite += other.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&other.nearest_counts) {
            *a += b;
        }
        self
    }
}

impl MemorizationCounter {
    /// A counter for row-major `(n, dim)` f64 training points (n >= 1, dim >= 1, all finite).
    pub fn new(training: &[f64], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("dimension", "must be at least 1"));
        }
        if training.is_empty() || !training.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "training points",
                format!(
                    "need a non-empty row-major (n, {dim}) array, got {} values",
                    training.len()
                ),
            ));
        }
        if training.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "training points",
                "every coordinate must be finite",
            ));
        }
        Ok(MemorizationCounter {
            dim,
            training: training.to_vec(),
            particles: 0,
            within_0_05: 0,
            within_0_1: 0,
            nearest_counts: vec![0; training.len() / dim],
            nonfinite: 0,
        })
    }

    /// Same as [`MemorizationCounter::new`] for f32 training points.
    pub fn from_f32(training: &[f32], dim: usize) -> Result<Self> {
        let t: Vec<f64> = training.iter().map(|&v| v as f64).collect();
        Self::new(&t, dim)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of training points.
    pub fn training_len(&self) -> usize {
        self.nearest_counts.len()
    }

    /// Samples counted so far.
    pub fn particles(&self) -> u64 {
        self.particles
    }

    /// The nearest training point of one sample and the Euclidean distance to it, or `None`
    /// when a coordinate is not finite. Ties go to the lowest index.
    pub fn nearest(&self, sample: &[f32]) -> Option<(usize, f64)> {
        assert_eq!(sample.len(), self.dim, "sample dimension");
        if sample.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut best = (0usize, f64::INFINITY);
        for (i, t) in self.training.chunks_exact(self.dim).enumerate() {
            let mut d2 = 0.0f64;
            for (&s, &tv) in sample.iter().zip(t) {
                let d = s as f64 - tv;
                d2 += d * d;
            }
            if d2 < best.1 {
                best = (i, d2);
            }
        }
        Some((best.0, best.1.sqrt()))
    }

    /// Count a batch of row-major `(m, dim)` f32 samples.
    pub fn add_batch(&mut self, samples: &[f32], dim: usize) -> Result<()> {
        if dim != self.dim {
            return Err(Error::invalid(
                "dimension",
                format!("samples have dimension {dim}, training points {}", self.dim),
            ));
        }
        if !samples.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "samples",
                format!(
                    "{} values is not a whole number of {dim}-dimensional samples",
                    samples.len()
                ),
            ));
        }
        let n = self.nearest_counts.len();
        let total = samples
            .par_chunks(CHUNK * dim)
            .map(|chunk| {
                let mut part = Partial::new(n);
                for s in chunk.chunks_exact(dim) {
                    match self.nearest(s) {
                        None => part.nonfinite += 1,
                        Some((i, d)) => {
                            part.nearest_counts[i] += 1;
                            part.within_0_05 += (d <= RADIUS_0_05) as u64;
                            part.within_0_1 += (d <= RADIUS_0_1) as u64;
                        }
                    }
                }
                part
            })
            .reduce(|| Partial::new(n), Partial::add);
        self.particles += (samples.len() / dim) as u64;
        self.within_0_05 += total.within_0_05;
        self.within_0_1 += total.within_0_1;
        self.nonfinite += total.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&total.nearest_counts) {
            *a += b;
        }
        Ok(())
    }

    /// Add the counts of another counter built from the same training points.
    pub fn merge(&mut self, other: &MemorizationCounter) -> Result<()> {
        if self.dim != other.dim || self.training != other.training {
            return Err(Error::invalid(
                "memorization counter",
                "cannot merge counters built from different training points",
            ));
        }
        self.particles += other.particles;
        self.within_0_05 += other.within_0_05;
        self.within_0_1 += other.within_0_1;
        self.nonfinite += other.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&other.nearest_counts) {
            *a += b;
        }
        Ok(())
    }

    pub fn summary(&self) -> MemorizationSummary {
        self.counts().summary()
    }

    /// Add `counts` (saved from a counter over the same training points, e.g. by a
    /// checkpoint) to this counter's counts.
    pub fn add_counts(&mut self, counts: &MemorizationCounts) -> Result<()> {
        let mut mine = self.counts();
        mine.merge(counts)?;
        self.particles = mine.particles;
        self.within_0_05 = mine.within_0_05;
        self.within_0_1 = mine.within_0_1;
        self.nonfinite = mine.nonfinite;
        self.nearest_counts = mine.nearest_counts;
        Ok(())
    }

    /// The integer counts (mergeable: see [`MemorizationCounts::merge`]).
    pub fn counts(&self) -> MemorizationCounts {
        MemorizationCounts {
            dim: self.dim,
            particles: self.particles,
            within_0_05: self.within_0_05,
            within_0_1: self.within_0_1,
            nearest_counts: self.nearest_counts.clone(),
            nonfinite: self.nonfinite,
        }
    }
}

/// A counter's integer counts, as written to `metrics_counts.json`: counts of shards add
/// up exactly to the counts of the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemorizationCounts {
    pub dim: usize,
    pub particles: u64,
    pub within_0_05: u64,
    pub within_0_1: u64,
    /// One count per training point.
    pub nearest_counts: Vec<u64>,
    pub nonfinite: u64,
}

impl MemorizationCounts {
    /// Add the counts of another part of the same run (same dimension and training-set size).
    pub fn merge(&mut self, other: &MemorizationCounts) -> Result<()> {
        if self.dim != other.dim || self.nearest_counts.len() != other.nearest_counts.len() {
            return Err(Error::invalid(
                "memorization counts",
                format!(
                    "cannot add counts over {} training points in D = {} to counts over {} in D = {}",
                    other.nearest_counts.len(),
                    other.dim,
                    self.nearest_counts.len(),
                    self.dim
                ),
            ));
        }
        self.particles += other.particles;
        self.within_0_05 += other.within_0_05;
        self.within_0_1 += other.within_0_1;
        self.nonfinite += other.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&other.nearest_counts) {
            *a += b;
        }
        Ok(())
    }

    pub fn summary(&self) -> MemorizationSummary {
        let frac = |k: u64| {
            if self.particles == 0 {
                0.0
            } else {
                k as f64 / self.particles as f64
            }
        };
        MemorizationSummary {
            particles: self.particles,
            fraction_within_0_05: frac(self.within_0_05),
            fraction_within_0_1: frac(self.within_0_1),
            nearest_counts: self.nearest_counts.clone(),
            nonfinite: self.nonfinite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four training points on the axes of the plane.
    fn counter() -> MemorizationCounter {
        MemorizationCounter::new(&[1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0], 2).unwrap()
    }

    #[test]
    fn hand_made_counts() {
        let mut c = counter();
        #[rustfmt::skip]
        let samples = [
            1.0, 0.0,      // on point 0: within both
            1.03, 0.0,     // point 0, distance 0.03: within both
            0.0, 1.07,     // point 1, distance 0.07: within 0.1 only
            -1.0, 0.2,     // point 2, distance 0.2: neither
            0.0, -0.5,     // point 3, distance 0.5
            0.0, -0.96,    // point 3, distance 0.04: within both
            f32::NAN, 0.0, // non-finite
            0.0, f32::INFINITY,
        ];
        c.add_batch(&samples, 2).unwrap();
        let s = c.summary();
        assert_eq!(s.particles, 8);
        assert_eq!(s.nonfinite, 2);
        assert_eq!(s.nearest_counts, vec![2, 1, 1, 2]);
        assert_eq!(s.fraction_within_0_05, 3.0 / 8.0);
        assert_eq!(s.fraction_within_0_1, 4.0 / 8.0);
    }

    #[test]
    fn exact_nearest_and_ties() {
        let c = counter();
        // Equidistant from points 0 and 1: the lower index wins.
        assert_eq!(c.nearest(&[0.5, 0.5]).unwrap().0, 0);
        assert_eq!(c.nearest(&[-0.5, -0.5]).unwrap().0, 2);
        // Barely closer to point 1.
        assert_eq!(c.nearest(&[0.5, 0.500_001]).unwrap().0, 1);
        let (i, d) = c.nearest(&[0.0, 0.0]).unwrap();
        assert_eq!((i, d), (0, 1.0));
        assert!(c.nearest(&[f32::NAN, 0.0]).is_none());
    }

    #[test]
    fn batches_and_merge_give_the_same_summary() {
        // 50,000 samples over 3 dimensions, many rayon chunks.
        let training = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 0.0];
        // Sample i: training point i % 3 plus a deterministic offset of up to 0.15 a side.
        let samples: Vec<f32> = (0..50_000usize * 3)
            .map(|k| {
                let (i, c) = (k / 3, k % 3);
                let offset = ((k * 7919 % 1001) as f64 / 1000.0 - 0.5) * 0.3;
                (training[(i % 3) * 3 + c] + offset) as f32
            })
            .collect();
        let mut one = MemorizationCounter::new(&training, 3).unwrap();
        one.add_batch(&samples, 3).unwrap();
        let mut batched = MemorizationCounter::new(&training, 3).unwrap();
        for b in samples.chunks(3 * 7001) {
            batched.add_batch(b, 3).unwrap();
        }
        assert_eq!(one, batched);
        let mut left = MemorizationCounter::new(&training, 3).unwrap();
        left.add_batch(&samples[..3 * 20_000], 3).unwrap();
        let mut right = MemorizationCounter::new(&training, 3).unwrap();
        right.add_batch(&samples[3 * 20_000..], 3).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left.summary(), one.summary());
        let s = one.summary();
        assert_eq!(s.particles, 50_000);
        assert_eq!(s.nearest_counts.iter().sum::<u64>(), 50_000);
        // Sequential cross-check of every count.
        let (mut w05, mut w1, mut counts) = (0, 0, vec![0u64; 3]);
        for p in samples.chunks_exact(3) {
            let (i, d) = one.nearest(p).unwrap();
            counts[i] += 1;
            w05 += (d <= 0.05) as u64;
            w1 += (d <= 0.1) as u64;
        }
        assert_eq!(s.nearest_counts, counts);
        assert_eq!(s.fraction_within_0_05, w05 as f64 / 50_000.0);
        assert_eq!(s.fraction_within_0_1, w1 as f64 / 50_000.0);
        assert!(w05 > 0 && w1 > w05);
    }

    #[test]
    fn errors_and_empty() {
        assert!(MemorizationCounter::new(&[], 2).is_err());
        assert!(MemorizationCounter::new(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(MemorizationCounter::new(&[1.0], 0).is_err());
        assert!(MemorizationCounter::new(&[f64::NAN, 0.0], 2).is_err());
        let mut c = counter();
        assert!(c.add_batch(&[0.0, 0.0, 0.0], 3).is_err());
        assert!(c.add_batch(&[0.0, 0.0, 0.0], 2).is_err());
        let other = MemorizationCounter::from_f32(&[1.0, 0.0], 2).unwrap();
        assert!(c.merge(&other).is_err());
        let s = c.summary();
        assert_eq!(s.particles, 0);
        assert_eq!(s.fraction_within_0_05, 0.0);
        assert_eq!(s.nearest_counts, vec![0; 4]);
        let json = serde_json::to_value(&s).unwrap();
        for key in [
            "particles",
            "fraction_within_0_05",
            "fraction_within_0_1",
            "nearest_counts",
            "nonfinite",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
