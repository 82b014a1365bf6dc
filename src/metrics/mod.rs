//! Memorization summary: how many generated samples sit on a training point.
//!
//! For every sample, the nearest and second-nearest training points and their distances
//! d1 <= d2 (brute force, Euclidean, f64 arithmetic on the f32 sample promoted to f64; ties
//! go to the lowest index; the GPU path of `gpu::nearest` gives the same values). A sample
//! is *memorized* by the ratio criterion of Gu et al. ("On memorization in diffusion
//! models") when d1 / d2 < 1/3; with a single training point d2 = infinity (the ratio is
//! 0), and a sample exactly on a training point (d1 = 0) is memorized even when a duplicate
//! point makes d2 = 0 too. Counts are integers, so a counter fed batch by batch, or several
//! counters merged, give exactly the same summary as one counter fed everything at once;
//! everything in the summary (fractions, bootstrap interval, distinct points, chi-square,
//! posterior concentration) is a function of those counts.

mod posterior;
pub mod stats;

pub use posterior::{PosteriorCounts, PosteriorPoint, PosteriorSummaryPoint, WEIGHT_SCALE};

use crate::engine::nearest::{nearest_two, Neighbours};
use crate::error::{Error, Result};
use crate::metrics::stats::{bootstrap_interval, chi_square_uniform, ChiSquare};
use rayon::prelude::*;
use serde::Serialize;

/// The two memorization radii, in the data's units.
pub const RADIUS_0_05: f64 = 0.05;
pub const RADIUS_0_1: f64 = 0.1;

/// The ratio criterion's threshold: memorized when d1 / d2 < 1/3.
pub const RATIO_THRESHOLD: f64 = 1.0 / 3.0;

/// Samples per rayon task (each task keeps its own per-training-point counts).
const CHUNK: usize = 8192;

/// Training sets larger than this are screened in f32 before the exact f64 recheck
/// (smaller ones cost a few f64 distances per sample by brute force anyway).
const SCREEN_MIN_POINTS: usize = 32;

/// The memorization criterion, beside the other thresholds of this module.
impl Neighbours {
    /// The ratio criterion: d1 / d2 < 1/3, with d1 = 0 always memorized.
    pub fn memorized(&self) -> bool {
        self.d1 == 0.0 || self.d1 < RATIO_THRESHOLD * self.d2
    }
}

/// Running memorization counts over batches of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorizationCounter {
    dim: usize,
    /// Row-major `(n, dim)` training points.
    training: Vec<f64>,
    /// The same as f32 columns and their largest norm, for the f32 screening of
    /// `add_batch_nearest` (empty for small training sets, done by brute force).
    screen_columns: Vec<f32>,
    screen_max_norm: f64,
    particles: u64,
    within_0_05: u64,
    within_0_1: u64,
    nearest_counts: Vec<u64>,
    nonfinite: u64,
    memorized_counts: Vec<u64>,
    pub(crate) posterior: Option<PosteriorCounts>,
}

/// The summary written to the run's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// The ratio criterion's threshold (d1 / d2 below it: memorized).
    pub ratio_threshold: f64,
    /// Fraction of all samples memorized by the ratio criterion.
    pub memorized_fraction: f64,
    /// 95% percentile bootstrap interval of `memorized_fraction` (see
    /// `crate::metrics::stats::bootstrap_interval`: a function of the counts alone).
    pub memorized_interval_95: [f64; 2],
    /// For each training point, the memorized samples nearest to it.
    pub memorized_counts: Vec<u64>,
    /// Training points reproduced: those with at least one memorized sample.
    pub distinct_memorized: u64,
    /// Training points that are the nearest of at least one sample.
    pub distinct_nearest: u64,
    /// Pearson's chi-square of `nearest_counts` (the occupancy of the training points)
    /// against uniform occupancy: statistic, degrees of freedom (N - 1), p-value. Null
    /// with one training point or no finite sample.
    pub occupancy_chi_square: Option<ChiSquare>,
    /// Posterior concentration along the trajectory, when it was recorded.
    pub posterior: Option<Vec<PosteriorSummaryPoint>>,
}

/// Counts of one chunk of samples.
#[derive(Debug, Clone)]
struct Partial {
    within_0_05: u64,
    within_0_1: u64,
    nearest_counts: Vec<u64>,
    memorized_counts: Vec<u64>,
    nonfinite: u64,
}

impl Partial {
    fn new(n: usize) -> Self {
        Partial {
            within_0_05: 0,
            within_0_1: 0,
            nearest_counts: vec![0; n],
            memorized_counts: vec![0; n],
            nonfinite: 0,
        }
    }

    fn count(&mut self, n: &Neighbours) {
        let i = n.nearest as usize;
        self.nearest_counts[i] += 1;
        self.memorized_counts[i] += n.memorized() as u64;
        self.within_0_05 += (n.d1 <= RADIUS_0_05) as u64;
        self.within_0_1 += (n.d1 <= RADIUS_0_1) as u64;
    }

    fn add(mut self, other: Partial) -> Self {
        self.within_0_05 += other.within_0_05;
        self.within_0_1 += other.within_0_1;
        self.nonfinite += other.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&other.nearest_counts) {
            *a += b;
        }
        for (a, b) in self
            .memorized_counts
            .iter_mut()
            .zip(&other.memorized_counts)
        {
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
        let n = training.len() / dim;
        let screened = n > SCREEN_MIN_POINTS;
        Ok(MemorizationCounter {
            dim,
            training: training.to_vec(),
            screen_columns: if screened {
                crate::engine::cpu::nearest::columns_f32(training, dim)
            } else {
                Vec::new()
            },
            screen_max_norm: if screened {
                crate::engine::nearest::max_norm(training, dim)
            } else {
                0.0
            },
            particles: 0,
            within_0_05: 0,
            within_0_1: 0,
            nearest_counts: vec![0; training.len() / dim],
            nonfinite: 0,
            memorized_counts: vec![0; training.len() / dim],
            posterior: None,
        })
    }

    /// The row-major `(n, dim)` training points.
    pub fn training(&self) -> &[f64] {
        &self.training
    }

    /// Nearest and second-nearest training points of one sample (f64, brute force), or
    /// `None` when a coordinate is not finite.
    pub fn neighbours(&self, sample: &[f32]) -> Option<Neighbours> {
        assert_eq!(sample.len(), self.dim, "sample dimension");
        if sample.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(nearest_two(&self.training, self.dim, sample))
    }

    /// Count samples whose neighbours were found elsewhere (the GPU path): `None` for a
    /// non-finite sample.
    pub fn add_neighbours(&mut self, list: &[Option<Neighbours>]) {
        let mut part = Partial::new(self.nearest_counts.len());
        for n in list {
            match n {
                None => part.nonfinite += 1,
                Some(n) => part.count(n),
            }
        }
        self.particles += list.len() as u64;
        self.add_partial(part);
    }

    fn add_partial(&mut self, total: Partial) {
        self.within_0_05 += total.within_0_05;
        self.within_0_1 += total.within_0_1;
        self.nonfinite += total.nonfinite;
        for (a, b) in self.nearest_counts.iter_mut().zip(&total.nearest_counts) {
            *a += b;
        }
        for (a, b) in self
            .memorized_counts
            .iter_mut()
            .zip(&total.memorized_counts)
        {
            *a += b;
        }
    }

    /// Start recording posterior concentration (see `PosteriorCounts`).
    pub fn set_posterior(&mut self, posterior: PosteriorCounts) {
        self.posterior = Some(posterior);
    }

    /// The posterior-concentration sums, if they are recorded.
    pub fn posterior_mut(&mut self) -> Option<&mut PosteriorCounts> {
        self.posterior.as_mut()
    }

    /// Same as [`MemorizationCounter::new`] for f32 training points.
    pub fn from_f32(training: &[f32], dim: usize) -> Result<Self> {
        let t: Vec<f64> = training.iter().map(|&v| v as f64).collect();
        Self::new(&t, dim)
    }

    /// Dimension D of the samples.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The nearest training point of one sample and the Euclidean distance to it, or `None`
    /// when a coordinate is not finite. Ties go to the lowest index.
    pub fn nearest(&self, sample: &[f32]) -> Option<(usize, f64)> {
        self.neighbours(sample).map(|n| (n.nearest as usize, n.d1))
    }

    /// Count a batch of row-major `(m, dim)` f32 samples.
    pub fn add_batch(&mut self, samples: &[f32], dim: usize) -> Result<()> {
        self.add_batch_nearest(samples, dim).map(|_| ())
    }

    /// [`add_batch`](Self::add_batch), returning each sample's nearest training point
    /// (`u32::MAX` for a non-finite sample).
    pub fn add_batch_nearest(&mut self, samples: &[f32], dim: usize) -> Result<Vec<u32>> {
        self.check_batch(samples, dim)?;
        let n = self.nearest_counts.len();
        let mut nearest = vec![u32::MAX; samples.len() / dim];
        // Large training sets: smaller tasks, so that a few thousand samples still keep
        // every thread busy.
        let chunk = if n * dim > 4096 { 256 } else { CHUNK };
        let total = samples
            .par_chunks(chunk * dim)
            .zip(nearest.par_chunks_mut(chunk))
            .map(|(chunk, out)| {
                let mut part = Partial::new(n);
                // Large training sets: f32 screening (blocked), then the exact f64 nearest
                // two from its top three (`exact_neighbours`: proven within the f32 error
                // bound, else brute force in f64): the same neighbours as `neighbours`.
                let screened = (!self.screen_columns.is_empty()).then(|| {
                    crate::engine::cpu::nearest::nearest_three_blocked(
                        chunk,
                        &self.screen_columns,
                        dim,
                    )
                });
                for (r, (s, o)) in chunk.chunks_exact(dim).zip(out).enumerate() {
                    let found = match &screened {
                        Some(_) if s.iter().any(|v| !v.is_finite()) => None,
                        Some(best) => Some(
                            crate::engine::nearest::exact_neighbours(
                                &self.training,
                                dim,
                                self.screen_max_norm,
                                s,
                                &best[r],
                            )
                            .0,
                        ),
                        None => self.neighbours(s),
                    };
                    match found {
                        None => part.nonfinite += 1,
                        Some(nb) => {
                            *o = nb.nearest;
                            part.count(&nb);
                        }
                    }
                }
                part
            })
            .reduce(|| Partial::new(n), Partial::add);
        self.particles += (samples.len() / dim) as u64;
        self.add_partial(total);
        Ok(nearest)
    }

    /// The errors of a batch of the wrong shape.
    pub fn check_batch(&self, samples: &[f32], dim: usize) -> Result<()> {
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
        self.add_counts(&other.counts())
    }

    /// The metrics of the samples counted so far.
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
        self.memorized_counts = mine.memorized_counts;
        self.posterior = mine.posterior;
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
            memorized_counts: self.memorized_counts.clone(),
            posterior: self.posterior.clone(),
        }
    }
}

/// A counter's integer counts, as written to `metrics_counts.json`: counts of shards add
/// up exactly to the counts of the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MemorizationCounts {
    /// Dimension D.
    pub dim: usize,
    /// Samples counted (non-finite ones included).
    pub particles: u64,
    /// Samples within 0.05 of their nearest training point.
    pub within_0_05: u64,
    /// Samples within 0.1 of their nearest training point.
    pub within_0_1: u64,
    /// One count per training point.
    pub nearest_counts: Vec<u64>,
    /// Samples with a non-finite coordinate (they have no nearest point).
    pub nonfinite: u64,
    /// Memorized samples (ratio criterion) nearest to each training point.
    #[serde(default)]
    pub memorized_counts: Vec<u64>,
    /// Posterior concentration sums, when recorded.
    #[serde(default)]
    pub posterior: Option<PosteriorCounts>,
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
        // Counts written before the ratio criterion existed have none: zeros.
        self.memorized_counts.resize(self.nearest_counts.len(), 0);
        for (a, b) in self
            .memorized_counts
            .iter_mut()
            .zip(&other.memorized_counts)
        {
            *a += b;
        }
        match (&mut self.posterior, &other.posterior) {
            (Some(a), Some(b)) => a.merge(b)?,
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "memorization counts",
                    "one part recorded the posterior concentration and the other did not",
                ))
            }
        }
        Ok(())
    }

    /// The metrics these counts give.
    pub fn summary(&self) -> MemorizationSummary {
        let frac = |k: u64| {
            if self.particles == 0 {
                0.0
            } else {
                k as f64 / self.particles as f64
            }
        };
        let mut memorized_counts = self.memorized_counts.clone();
        memorized_counts.resize(self.nearest_counts.len(), 0);
        let memorized: u64 = memorized_counts.iter().sum();
        let distinct_memorized = memorized_counts.iter().filter(|&&c| c > 0).count() as u64;
        let (lo, hi) = bootstrap_interval(memorized, self.particles);
        MemorizationSummary {
            particles: self.particles,
            fraction_within_0_05: frac(self.within_0_05),
            fraction_within_0_1: frac(self.within_0_1),
            nearest_counts: self.nearest_counts.clone(),
            nonfinite: self.nonfinite,
            ratio_threshold: RATIO_THRESHOLD,
            memorized_fraction: frac(memorized),
            memorized_interval_95: [lo, hi],
            memorized_counts,
            distinct_memorized,
            distinct_nearest: self.nearest_counts.iter().filter(|&&c| c > 0).count() as u64,
            occupancy_chi_square: chi_square_uniform(&self.nearest_counts),
            posterior: self.posterior.as_ref().map(PosteriorCounts::summary),
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

    #[test]
    fn ratio_criterion_by_hand() {
        let c = counter();
        // d1 / d2 for a sample (x, 0) near point 0 = (1, 0): d1 = |1 - x|,
        // d2 = sqrt(x^2 + 1) (points 1 and 3 tie; the lower index, 1, is second).
        let nb = c.neighbours(&[0.9, 0.0]).unwrap();
        assert_eq!((nb.nearest, nb.second), (0, Some(1)));
        assert!((nb.d1 - 0.1).abs() < 1e-7);
        assert!((nb.d2 - 1.81f64.sqrt()).abs() < 1e-7);
        assert!(nb.memorized()); // 0.1 / 1.345 = 0.074
                                 // At x = 0.5: d1 = 0.5, d2 = sqrt(1.25) = 1.118, ratio 0.447: not memorized.
        assert!(!c.neighbours(&[0.5, 0.0]).unwrap().memorized());
        // The threshold itself: ratio 1/3 exactly is not < 1/3. Two points on a line at
        // 0 and 4, sample at 1: d1 = 1, d2 = 3.
        let line = MemorizationCounter::new(&[0.0, 4.0], 1).unwrap();
        assert!(!line.neighbours(&[1.0]).unwrap().memorized());
        assert!(line.neighbours(&[0.999]).unwrap().memorized());
        // A single training point: d2 infinite, always memorized.
        let single = MemorizationCounter::new(&[0.0, 0.0], 2).unwrap();
        let nb = single.neighbours(&[5.0, 5.0]).unwrap();
        assert_eq!((nb.second, nb.d2), (None, f64::INFINITY));
        assert!(nb.memorized());
        // Duplicate training points, sample on them: d1 = d2 = 0, memorized.
        let dup = MemorizationCounter::new(&[1.0, 1.0, 3.0], 1).unwrap();
        let nb = dup.neighbours(&[1.0]).unwrap();
        assert_eq!(
            (nb.nearest, nb.second, nb.d1, nb.d2),
            (0, Some(1), 0.0, 0.0)
        );
        assert!(nb.memorized());
        // Counting: 3 memorized of 5 samples, on two distinct points.
        let mut c = counter();
        c.add_batch(
            &[1.0, 0.0, 0.95, 0.02, 0.5, 0.5, 0.0, -1.1, f32::NAN, 0.0],
            2,
        )
        .unwrap();
        let s = c.summary();
        assert_eq!(s.memorized_counts, vec![2, 0, 0, 1]);
        assert_eq!(s.memorized_fraction, 3.0 / 5.0);
        assert_eq!(s.distinct_memorized, 2);
        assert_eq!(s.distinct_nearest, 2);
        let [lo, hi] = s.memorized_interval_95;
        assert!(lo <= 0.6 && 0.6 <= hi && lo < hi);
        let chi = s.occupancy_chi_square.unwrap();
        // nearest counts [3, 0, 0, 1]: expected 1 each: 4 + 1 + 1 + 0 = 6, 3 dof.
        assert_eq!(s.nearest_counts, vec![3, 0, 0, 1]);
        assert_eq!((chi.statistic, chi.dof), (6.0, 3));
        assert!(
            (chi.p_value - 0.111_610_225_526_122_4).abs() < 1e-9,
            "{}",
            chi.p_value
        );
    }

    /// Brute force in f64 written independently: sort all distances.
    fn brute(training: &[f64], dim: usize, x: &[f32]) -> (usize, f64, f64) {
        let mut d: Vec<(f64, usize)> = training
            .chunks(dim)
            .enumerate()
            .map(|(i, t)| {
                let d2: f64 = t.iter().zip(x).map(|(a, &b)| (a - b as f64).powi(2)).sum();
                (d2.sqrt(), i)
            })
            .collect();
        d.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (d[0].1, d[0].0, d[1].0)
    }

    #[test]
    fn neighbours_match_brute_force() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for dim in [1usize, 2, 3, 7] {
            let training: Vec<f64> = (0..300 * dim).map(|_| next()).collect();
            let c = MemorizationCounter::new(&training, dim).unwrap();
            let samples: Vec<f32> = (0..500 * dim).map(|_| next() as f32).collect();
            let mut memorized = 0;
            for x in samples.chunks(dim) {
                let nb = c.neighbours(x).unwrap();
                let (i, d1, d2) = brute(&training, dim, x);
                assert_eq!(nb.nearest as usize, i);
                assert!((nb.d1 - d1).abs() <= 1e-15 * d1.max(1.0));
                assert!((nb.d2 - d2).abs() <= 1e-15 * d2.max(1.0));
                memorized += (d1 < d2 / 3.0) as u64;
            }
            let mut counter = MemorizationCounter::new(&training, dim).unwrap();
            counter.add_batch(&samples, dim).unwrap();
            let s = counter.summary();
            assert_eq!(s.memorized_fraction, memorized as f64 / 500.0);
        }
    }

    #[test]
    fn counts_with_posterior_merge_and_round_trip() {
        let point = |step, sum, agree| PosteriorPoint {
            step,
            tau_bits: 0.5f64.to_bits(),
            ou_time_bits: 0.4f64.to_bits(),
            particles: 10,
            max_weight_sum: sum,
            argmax_is_final: agree,
        };
        let mut a = counter();
        a.set_posterior(PosteriorCounts {
            limit: 100,
            points: vec![point(0, 1 << 33, 3)],
            pending: Vec::new(),
        });
        a.add_batch(&[1.0, 0.0, 0.0, 0.9], 2).unwrap();
        let mut b = a.clone();
        b.add_batch(&[0.0, -1.0], 2).unwrap();
        let json = serde_json::to_string(&b.counts()).unwrap();
        let back: MemorizationCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b.counts());
        let mut total = a.counts();
        total.merge(&back).unwrap();
        assert_eq!(total.particles, 5);
        assert_eq!(total.memorized_counts, vec![2, 2, 0, 1]);
        let post = total.summary().posterior.unwrap();
        assert_eq!(post[0].particles, 20);
        assert_eq!(post[0].mean_max_weight, 2.0 * 2.0 / 20.0);
        assert_eq!(post[0].fraction_argmax_final, 6.0 / 20.0);
        // Counts written before the ratio criterion and posterior existed still load.
        let old = r#"{"dim":2,"particles":1,"within_0_05":0,"within_0_1":0,"nearest_counts":[1,0,0,0],"nonfinite":0}"#;
        let mut old: MemorizationCounts = serde_json::from_str(old).unwrap();
        old.merge(&counter().counts()).unwrap();
        assert_eq!(old.summary().memorized_counts, vec![0; 4]);
        // Posterior on one side only, or at other steps: refused.
        assert!(counter().counts().merge(&back).is_err());
        let mut other = counter();
        other.set_posterior(PosteriorCounts {
            limit: 100,
            points: vec![point(1, 0, 0)],
            pending: Vec::new(),
        });
        assert!(other.counts().merge(&back).is_err());
    }
}
