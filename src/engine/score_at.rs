//! The score at given points: the score stage of each engine on its own, for `score-field`
//! and for programs that want the function the sampler follows (the reference tutorial
//! differentiates it with JAX). The GPU runs its score kernel, the CPU the twin of that
//! kernel (the D <= 4 kernel or the general one), the reference engine f64.

use super::layout::pad_general;
use super::records::{StepParams, MAX_DIM};
use super::{cpu, gpu, reference, Backend, Engine};
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use crate::model::patch_score;
use crate::model::schedule::{ScoreKind, ScorePoint, VpSchedule};

/// Who evaluates the score: an engine's score stage.
pub enum ScoreEvaluator {
    /// The GPU engine's score kernel.
    Gpu(Box<gpu::GpuEngine>),
    /// The CPU twin of that kernel (f32).
    Cpu,
    /// The f64 reference.
    Reference,
}

impl ScoreEvaluator {
    /// Open the evaluator for `backend` (on adapter `device`); the note says why `auto`
    /// fell back to the CPU.
    pub fn open(backend: Backend, device: Option<usize>) -> Result<(Self, Option<String>)> {
        use super::OpenedDevice;
        let (opened, fallback) = super::open_device(backend, device)?;
        let evaluator = match opened {
            OpenedDevice::Gpu(ctx) => ScoreEvaluator::Gpu(Box::new(gpu::GpuEngine::on(*ctx)?)),
            OpenedDevice::Cpu => ScoreEvaluator::Cpu,
            OpenedDevice::Reference => ScoreEvaluator::Reference,
        };
        Ok((
            evaluator,
            fallback.map(|why| format!("{why}; using the cpu score")),
        ))
    }

    /// The backend that evaluates.
    pub fn backend(&self) -> Backend {
        match self {
            ScoreEvaluator::Gpu(_) => Backend::Gpu,
            ScoreEvaluator::Cpu => Backend::Cpu,
            ScoreEvaluator::Reference => Backend::Reference,
        }
    }

    /// The device that evaluates, as run.json names it.
    pub fn device_name(&self) -> String {
        match self {
            ScoreEvaluator::Gpu(g) => g.device_name(),
            ScoreEvaluator::Cpu => cpu::CpuEngine::new().device_name(),
            ScoreEvaluator::Reference => "host (f64)".into(),
        }
    }

    /// The score of kind `score` (the empirical score, `kde:h`, or a patch score, always
    /// from the f64 reference) of the training set `dataset` at the row-major
    /// (n, D) `points` at forward time `tau` of `schedule`, row-major (n, D). Refuses a
    /// `tau` outside (0, 1] (at 0 the score is undefined), no points, a length that is not
    /// a whole number of D-vectors, and non-finite coordinates.
    pub fn evaluate(
        &mut self,
        dataset: &Dataset,
        schedule: &VpSchedule,
        score: ScoreKind,
        tau: f64,
        points: &[f32],
    ) -> Result<Vec<f32>> {
        let dim = dataset.dim;
        if !(tau.is_finite() && tau > 0.0 && tau <= 1.0) {
            return Err(Error::invalid(
                "t",
                format!("{tau} is outside (0, 1]: at t = 0 the score is undefined"),
            ));
        }
        if points.is_empty() || !points.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "points",
                format!(
                    "{} values are not a non-empty set of points of dimension D = {dim}",
                    points.len()
                ),
            ));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "points",
                format!(
                    "point {} has a non-finite coordinate ({})",
                    i / dim,
                    points[i]
                ),
            ));
        }
        let point = ScorePoint::new(schedule, score, tau);
        if let ScoreKind::Patch(patch) = score {
            // Patch scores at points: the f64 reference on every engine (the score of a
            // handful of images; the engines' patch kernels run inside `sample`).
            let geometry = patch
                .on(dataset.image_shape)
                .map_err(|why| Error::invalid("score", why))?;
            let reference = patch_score::PatchReference::new(&geometry, dataset);
            return Ok(points
                .chunks(dim)
                .flat_map(|p| {
                    let x: Vec<f64> = p.iter().map(|&v| v as f64).collect();
                    reference
                        .score(point.mean_scale, point.variance, &x)
                        .into_iter()
                        .map(|v| v as f32)
                })
                .collect());
        }
        let step = StepParams::for_point(schedule, &point);
        match self {
            ScoreEvaluator::Gpu(g) => g.evaluate_score_of(dataset, &step, points),
            ScoreEvaluator::Cpu => Ok(if dim <= MAX_DIM {
                let training = cpu::score::pad_training(&dataset.points, dim);
                cpu::score::score_points(points, dim, &training, &step)
            } else {
                let training = pad_general(&dataset.points, dim);
                cpu::reduce_general::score_points_general(points, dim, &training, &step)
            }),
            ScoreEvaluator::Reference => Ok(points
                .chunks(dim)
                .flat_map(|p| {
                    let x: Vec<f64> = p.iter().map(|&v| v as f64).collect();
                    reference::score_with(dataset, point.mean_scale, point.variance, &x)
                        .into_iter()
                        .map(|v| v as f32)
                })
                .collect()),
        }
    }
}
