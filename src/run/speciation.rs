//! Biroli et al.'s cloning experiment, the measurement under `memodiff speciation` and
//! `memodiff.speciation` in Python: see the command's documentation
//! (`crate::commands::speciation`) and docs/memorization.md.

use crate::engine::{BatchWork, Engine, Problem};
use crate::error::{Error, Result};
use crate::metrics::stats::crossing_time;
use crate::metrics::MemorizationCounter;
use crate::model::dataset::Dataset;
use crate::run::driver::{self, BatchSink, NoProgress, SampleConfig};

/// The key of the clones' Philox streams: the run's seed with its bits flipped by a fixed
/// odd constant (the 64-bit golden ratio), so that a clone's noise is independent of its
/// particle's while particle i's is still a function of (seed, i) alone.
pub fn clone_seed(seed: u64) -> u64 {
    seed ^ 0x9E37_79B9_7F4A_7C15
}

/// φ at one clone time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClonePoint {
    /// Steps done when the clones part.
    pub step: usize,
    /// Forward time there.
    pub tau: f64,
    /// Its OU time, B(tau)/2.
    pub ou_time: f64,
    /// Fraction of particles whose clones end in the same class.
    pub phi: f64,
}

/// Keeps a run's final samples and its states at the clone steps.
struct Keep {
    clone_steps: Vec<usize>,
    samples: Vec<f32>,
    states: Vec<Vec<f32>>,
}

impl BatchSink for Keep {
    fn consume(&mut self, _: u64, _: &[f32], samples: &[f32]) -> Result<()> {
        self.samples.extend_from_slice(samples);
        Ok(())
    }
    fn snapshot_steps(&self) -> Vec<usize> {
        self.clone_steps.clone()
    }
    fn snapshot(&mut self, _: u64, step: usize, positions: &[f32]) -> Result<()> {
        let j = self
            .clone_steps
            .iter()
            .position(|&k| k == step)
            .expect("a clone step");
        self.states[j].extend_from_slice(positions);
        Ok(())
    }
}

/// The largest eigenvalue of the covariance of `dataset` (power iteration in f64, without
/// forming the matrix).
pub fn largest_covariance_eigenvalue(dataset: &Dataset) -> f64 {
    let (n, d) = (dataset.len(), dataset.dim);
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for (m, x) in mean.iter_mut().zip(dataset.point(i)) {
            *m += x / n as f64;
        }
    }
    let mut v: Vec<f64> = (0..d).map(|j| 1.0 + (j as f64 * 0.618).fract()).collect();
    let mut lambda = 0.0;
    for _ in 0..500 {
        let mut next = vec![0.0; d];
        for i in 0..n {
            let p = dataset.point(i);
            let proj: f64 = (0..d).map(|j| (p[j] - mean[j]) * v[j]).sum();
            for j in 0..d {
                next[j] += (p[j] - mean[j]) * proj / n as f64;
            }
        }
        let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        let previous = lambda;
        lambda = norm / v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = next.into_iter().map(|x| x / norm).collect();
        if (lambda - previous).abs() <= 1e-12 * lambda {
            break;
        }
    }
    lambda
}

/// How a final sample's class is decided: by the training point nearest to it, through
/// that point's class.
#[derive(Debug, Clone, PartialEq)]
pub enum Classes {
    /// Every training point is its own class.
    Nearest,
    /// The first ⌈N/2⌉ training points are one class, the rest the other (the mixture
    /// components of `two-gaussians`).
    TwoHalves,
    /// One label per training point (`--labels`, the digits' labels).
    Labels(Vec<i64>),
}

impl Classes {
    /// The default for `dataset`: its mixture components for a `two-gaussians` set, its
    /// points otherwise.
    pub fn of(dataset: &crate::model::dataset::Dataset) -> Self {
        if dataset.name.starts_with("two-gaussians") {
            Classes::TwoHalves
        } else {
            Classes::Nearest
        }
    }

    /// What run files call it.
    pub fn describe(&self) -> &'static str {
        match self {
            Classes::Nearest => "nearest training point",
            Classes::TwoHalves => "mixture component",
            Classes::Labels(_) => "label of the nearest training point",
        }
    }
}

/// What the cloning experiment measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Speciation {
    /// "mixture component" (a `two-gaussians` set), "nearest training point" or "label of
    /// the nearest training point".
    pub classes: &'static str,
    /// Largest eigenvalue of the training set's covariance.
    pub lambda: f64,
    /// 1/2 ln Λ (None when Λ <= 1: no speciation predicted).
    pub predicted_t_s: Option<f64>,
    /// The OU time where φ first reaches 3/4 (None when it does not inside the clones).
    pub measured_t_s: Option<f64>,
    /// The key of the clones' noise.
    pub clone_seed: u64,
    /// φ at each clone time, along the reverse process.
    pub curve: Vec<ClonePoint>,
}

/// Refuse clone counts that do not fit strictly between the first and the last step of
/// a grid of `time_points` points.
pub fn check_clones(clones: usize, time_points: usize) -> Result<()> {
    if clones == 0 || clones + 1 >= time_points {
        return Err(Error::invalid(
            "clones",
            format!(
                "needs 1 <= K < S - 1 clone times between the first and the last step, got \
                 {clones} with {time_points} time points"
            ),
        ));
    }
    Ok(())
}

/// Run `config` on `engine` with `clones` clone times evenly spaced over its steps and
/// measure φ at each (see the module documentation).
pub fn measure(
    config: &SampleConfig,
    clones: usize,
    classes: &Classes,
    engine: &mut dyn Engine,
) -> Result<Speciation> {
    config.validate()?;
    if let Classes::Labels(labels) = classes {
        if labels.len() != config.dataset.len() {
            return Err(Error::invalid(
                "labels",
                format!(
                    "{} labels for the {} training points",
                    labels.len(),
                    config.dataset.len()
                ),
            ));
        }
    }
    check_clones(clones, config.time_points)?;
    let dataset = &config.dataset;
    let steps = config.reverse_steps();
    let updates = steps.len();
    let mut clone_steps: Vec<usize> = (1..=clones)
        .map(|j| ((j * updates) as f64 / (clones + 1) as f64).round() as usize)
        .filter(|&k| k > 0 && k < updates)
        .collect();
    clone_steps.dedup();
    let range = config.particle_range();
    let particles = (range.end - range.start) as usize;
    let dim = dataset.dim;
    let mut keep = Keep {
        states: vec![Vec::with_capacity(particles * dim); clone_steps.len()],
        clone_steps: clone_steps.clone(),
        samples: Vec::with_capacity(particles * dim),
    };
    driver::run(config, engine, &mut keep, &mut NoProgress)?;

    let counter = MemorizationCounter::new(&dataset.points, dim)?;
    let first_component = dataset.len().div_ceil(2);
    let class = |sample: &[f32]| -> i64 {
        let Some((nearest, _)) = counter.nearest(sample) else {
            return i64::MIN;
        };
        match classes {
            Classes::Nearest => nearest as i64,
            Classes::TwoHalves => i64::from(nearest >= first_component),
            Classes::Labels(labels) => labels[nearest],
        }
    };
    let original: Vec<i64> = keep.samples.chunks(dim).map(class).collect();
    let problem = Problem {
        dataset,
        steps: &steps,
        seed: clone_seed(config.seed),
        initial_std: config.initial_std(),
        schedule: config.schedule,
        sampler: config.sampler,
        patch: None,
    };
    let batch = driver::batch_size(config, engine);
    let mut curve = Vec::new();
    for (j, &k) in clone_steps.iter().enumerate() {
        let mut state = std::mem::take(&mut keep.states[j]);
        for (b, chunk) in state.chunks_mut(batch * dim).enumerate() {
            let first = range.start + (b * batch) as u64;
            engine.advance_batch(&problem, BatchWork::new(first, None, chunk, k..updates))?;
        }
        let same = state
            .chunks(dim)
            .zip(&original)
            .filter(|(clone, &c)| class(clone) == c)
            .count();
        let tau = steps[k].tau;
        curve.push(ClonePoint {
            step: k,
            tau,
            ou_time: 0.5 * config.schedule.integrated_beta(tau),
            phi: same as f64 / particles as f64,
        });
    }
    let lambda = largest_covariance_eigenvalue(dataset);
    let times: Vec<f64> = curve.iter().map(|p| p.ou_time).collect();
    let phis: Vec<f64> = curve.iter().map(|p| p.phi).collect();
    Ok(Speciation {
        classes: classes.describe(),
        lambda,
        predicted_t_s: (lambda > 1.0).then(|| 0.5 * lambda.ln()),
        measured_t_s: crossing_time(&times, &phis, 0.75),
        clone_seed: clone_seed(config.seed),
        curve,
    })
}
