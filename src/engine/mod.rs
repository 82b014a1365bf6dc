//! What every backend implements: advance a contiguous range of particles through all
//! reverse steps. The host-side driver (`run::driver`) splits a run into such batches.
//! [`open_backend`] opens the engine a command asks for, with the one "auto: a hardware
//! GPU if there is one, else the cpu engine" policy. The [`Engine`] trait names no GPU
//! type: what only the GPU engine offers (its device, its particles in device memory) is
//! the optional [`gpu::DeviceOutputs`] capability.

pub mod cpu;
pub mod gpu;
pub mod layout;
pub mod nearest;
pub mod records;
pub mod reference;
pub mod score_at;

use crate::error::Result;
use crate::model::dataset::Dataset;
use crate::model::schedule::{ReverseStep, VpSchedule};
use serde::Serialize;
use std::ops::Range;
use std::sync::atomic::AtomicBool;

/// A cancel flag that is never set, for runs that cannot be interrupted.
pub static NEVER: AtomicBool = AtomicBool::new(false);

/// A memory size from the environment variable `var`, a whole number of `unit` bytes,
/// in bytes; `None` where unset or empty; otherwise refused as not `what` (say, "a whole
/// number of MiB"). The engines' dictionary limits (`MEMODIFF_DICTIONARY_MEMORY`,
/// `MEMODIFF_GPU_DICTIONARY_BUFFER`) are read with it.
pub(crate) fn memory_from_env(var: &'static str, unit: u64, what: &str) -> Result<Option<u64>> {
    let Ok(text) = std::env::var(var) else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(unit))
        .map(Some)
        .ok_or_else(|| crate::error::Error::invalid(var, format!("{text:?} is not {what}")))
}

/// The backends a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A hardware GPU if there is one, otherwise the cpu engine.
    Auto,
    /// wgpu + WGSL compute shaders (software adapters such as lavapipe included).
    Gpu,
    /// The CPU twin of the shaders, f32, multi-threaded.
    Cpu,
    /// A plain f64 implementation of the formulas, for cross-checks.
    Reference,
}

impl Backend {
    /// The name the options and run.json use.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Gpu => "gpu",
            Backend::Cpu => "cpu",
            Backend::Reference => "reference",
        }
    }
}

/// A backend's device, once opened: what [`open_backend`] makes an engine of, and what a
/// command that needs only a device (render's GPU deposit, the score field) uses as it is.
pub enum OpenedDevice {
    /// A GPU device: `gpu`, `auto` with a hardware GPU, or an adapter picked by index.
    Gpu(Box<gpu::GpuContext>),
    /// The CPU, for the cpu engine (also `auto` without a hardware GPU).
    Cpu,
    /// The CPU, for the f64 reference engine.
    Reference,
}

/// Open the device of `backend`, on adapter `device` (an index of `memodiff devices`,
/// GPU only) when given. The one place of the policy every command follows:
/// - `auto`: a hardware GPU if there is one, else the CPU, and the second value says why
///   ("no hardware GPU (…)") for the caller's note; without a GPU device node (Linux) the
///   drivers are not asked ([`gpu::context::no_gpu_device_reason`]);
/// - `gpu`: the best adapter, software ones (lavapipe) included;
/// - a `device` with `auto` or `gpu`: that adapter, whatever its type; with `cpu` or
///   `reference`, an error.
pub fn open_device(
    backend: Backend,
    device: Option<usize>,
) -> Result<(OpenedDevice, Option<String>)> {
    use gpu::{AdapterChoice, GpuContext};
    Ok(match (backend, device) {
        (Backend::Cpu | Backend::Reference, Some(_)) => {
            return Err(crate::error::Error::invalid(
                "device",
                format!(
                    "picks a GPU adapter; it cannot be used with --backend {}",
                    backend.name()
                ),
            ))
        }
        (_, Some(n)) => (
            OpenedDevice::Gpu(Box::new(GpuContext::new(AdapterChoice::Index(n))?)),
            None,
        ),
        (Backend::Gpu, None) => (
            OpenedDevice::Gpu(Box::new(GpuContext::new(AdapterChoice::Any)?)),
            None,
        ),
        (Backend::Cpu, None) => (OpenedDevice::Cpu, None),
        (Backend::Reference, None) => (OpenedDevice::Reference, None),
        (Backend::Auto, None) => {
            let opened = match gpu::context::no_gpu_device_reason() {
                Some(why) => Err(crate::error::Error::NoAdapter(why)),
                None => GpuContext::new(AdapterChoice::HardwareOnly),
            };
            match opened {
                Ok(ctx) => (OpenedDevice::Gpu(Box::new(ctx)), None),
                Err(crate::error::Error::NoAdapter(why)) => {
                    (OpenedDevice::Cpu, Some(format!("no hardware GPU ({why})")))
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// The backend `auto` means for a run with the patch score `plan`, where it has one: the
/// cpu engine, with a note saying why, when the GPU's patch kernels cannot run it (more
/// than 4 channels, patches of more than 256 values); `backend` otherwise. Such a run
/// on the GPU (`--backend gpu`, `--device N`) is refused before anything runs.
pub fn backend_for_score(
    backend: Backend,
    device: Option<usize>,
    plan: Option<&crate::model::patch_score::PatchPlan>,
) -> Result<(Backend, Option<String>)> {
    let why = plan
        .into_iter()
        .flat_map(|plan| plan.distinct())
        .find_map(|geometry| gpu::patch::unsupported(&geometry));
    let Some(why) = why else {
        return Ok((backend, None));
    };
    match (backend, device) {
        (Backend::Auto, None) => Ok((Backend::Cpu, Some(format!("cpu engine: {why}")))),
        (Backend::Gpu | Backend::Auto, _) => Err(crate::error::Error::invalid("backend", why)),
        _ => Ok((backend, None)),
    }
}

/// Open the engine of `backend` on adapter `device` (see [`open_device`]). The second
/// value says why `auto` fell back to the cpu engine.
pub fn open_backend(
    backend: Backend,
    device: Option<usize>,
) -> Result<(Box<dyn Engine>, Option<String>)> {
    let (opened, fallback) = open_device(backend, device)?;
    let engine: Box<dyn Engine> = match opened {
        OpenedDevice::Gpu(ctx) => Box::new(gpu::GpuEngine::on(*ctx)?),
        OpenedDevice::Cpu => Box::new(cpu::CpuEngine::new()),
        OpenedDevice::Reference => Box::new(reference::ReferenceEngine::new()),
    };
    Ok((
        engine,
        fallback.map(|why| format!("{why}; using the cpu engine")),
    ))
}

/// The integrator of the reverse process.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Euler–Maruyama on the reverse SDE (the tutorial's sampler, stochastic).
    #[default]
    Em,
    /// Heun's method on the probability-flow ODE (deterministic after the initial noise;
    /// the last step, to tau = 0 where the score is singular, is an Euler step).
    Heun,
    /// DDIM (Song et al.), deterministic (eta = 0), on the same grid: each step moves to
    /// the next time's marginal along the predicted noise,
    /// `x' = s' x0 + sigma' eps` with `eps = -sigma score`, `x0 = (x - sigma eps) / s`.
    Ddim,
}

impl SamplerKind {
    /// The name the options and run.json use.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Em => "em",
            SamplerKind::Heun => "heun",
            SamplerKind::Ddim => "ddim",
        }
    }
}

/// Everything that defines a run's trajectories, shared by all batches.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    /// The training set.
    pub dataset: &'a Dataset,
    /// The reverse steps (time grid and coefficients).
    pub steps: &'a [ReverseStep],
    /// Seed of the Philox streams.
    pub seed: u64,
    /// The noise schedule `steps` was made from: the reference engine re-evaluates the
    /// drift and diffusion from it; the f32 engines need only the steps' records.
    pub schedule: VpSchedule,
    /// `sqrt(sigma2(1))`, the standard deviation of the initial particles.
    pub initial_std: f64,
    /// Which integrator runs the steps (same grid, same initial noise).
    pub sampler: SamplerKind,
    /// The patch-local score on the training images, step by step, where the run uses
    /// one (`--score local:k` ..., `--patch-size`); `None`: the score of whole training
    /// points (empirical, or kde:h through the steps' variances).
    pub patch: Option<&'a crate::model::patch_score::PatchPlan>,
}

/// Where an engine writes the posterior concentration it meets in its own score
/// evaluations (see [`Engine::advance_batch_tapped`]): for each step index of `steps`, the
/// largest softmax weight `max_i w_i` and its argmax (ties: lowest index, up to the
/// engine's rounding) of the first `rows` rows of the batch. The score of step `k` is
/// evaluated at the positions after `k` steps, at that step's mean scale and component
/// variance: exactly the posterior of the state after `k` steps (for Heun: its
/// predictor's evaluation).
#[derive(Debug)]
pub struct PosteriorTap<'a> {
    /// Absolute step indices (into `Problem::steps`), strictly increasing. A call fills
    /// those inside its `steps` range and leaves the others alone.
    pub steps: &'a [usize],
    /// Rows of the batch recorded: particles `first_particle .. first_particle + rows`.
    pub rows: usize,
    /// `rows * steps.len()` values, row-major: row `r`'s value at `steps[j]` is at
    /// `r * steps.len() + j` (a work item of consecutive rows writes one contiguous piece).
    pub max_weight: &'a mut [f32],
    /// The first training index having the largest weight, laid out like `max_weight`.
    pub argmax: &'a mut [u32],
}

impl PosteriorTap<'_> {
    /// Panics unless the buffers hold `rows * steps.len()` values each.
    pub fn check(&self) {
        let want = self.rows * self.steps.len();
        assert_eq!(
            self.max_weight.len(),
            want,
            "posterior tap: max_weight length"
        );
        assert_eq!(self.argmax.len(), want, "posterior tap: argmax length");
    }
}

/// One batch's work for an engine: which particles, where they start, through which
/// steps, and how the caller watches it (a cancel flag, step progress). What every
/// [`Engine`] advance takes besides the problem (and the optional posterior tap).
pub struct BatchWork<'a> {
    /// The global index of the batch's first particle (it keys the particles' noise).
    pub first_particle: u64,
    /// `Some(buf)`: start from the initial noise: write it into `buf` and start from it
    /// (`steps` then normally starts at 0; the content of `state` is ignored). `None`:
    /// start from the positions in `state` (after `steps.start` steps).
    pub initial: Option<&'a mut [f32]>,
    /// The batch's positions, row-major (n, dim): n = `state.len() / dim` particles.
    pub state: &'a mut [f32],
    /// The steps to run, indices into `problem.steps`.
    pub steps: Range<usize>,
    /// Set by someone else to stop the batch early ([`NEVER`] where nobody can).
    pub cancel: &'a AtomicBool,
    /// Called with the number of steps of the batch finished (absolute, up to
    /// `steps.end`), where given.
    pub on_step: Option<&'a mut dyn FnMut(usize)>,
}

impl<'a> BatchWork<'a> {
    /// Particles `first_particle ..` (as many as `state` holds) from `initial` (see the
    /// field) through `steps`, not cancellable, reporting no progress.
    pub fn new(
        first_particle: u64,
        initial: Option<&'a mut [f32]>,
        state: &'a mut [f32],
        steps: Range<usize>,
    ) -> Self {
        Self {
            first_particle,
            initial,
            state,
            steps,
            cancel: &NEVER,
            on_step: None,
        }
    }

    /// The same work, stopped early once `cancel` is set.
    pub fn cancellable_by(self, cancel: &'a AtomicBool) -> Self {
        Self { cancel, ..self }
    }

    /// The same work, reporting the steps finished to `on_step`.
    pub fn reporting_to(self, on_step: &'a mut dyn FnMut(usize)) -> Self {
        Self {
            on_step: Some(on_step),
            ..self
        }
    }
}

/// One backend's sampler.
pub trait Engine {
    /// Which backend this is (never `Auto`).
    fn backend(&self) -> Backend;
    /// The device doing the work, e.g. the GPU adapter's name or the CPU's.
    fn device_name(&self) -> String;
    /// Device time of the last batch's steps, where the device can measure it (GPU
    /// timestamp queries); `None` elsewhere.
    fn kernel_seconds(&self) -> Option<f64> {
        None
    }
    /// `(pairs, culled)`: the (particle, training point) pairs of the score evaluations
    /// since the engine was made, and how many of them exact culling skipped, where the
    /// engine culls (the cpu engine for D > 4); `None` elsewhere.
    fn pair_counts(&self) -> Option<(u64, u64)> {
        None
    }
    /// The engine's device outputs, if its particles live in GPU memory (the GPU engine):
    /// the optional capability through which other GPU stages share its device and take
    /// each batch's positions from there. `None` elsewhere.
    fn device_outputs(&self) -> Option<&dyn gpu::DeviceOutputs> {
        None
    }
    /// Most particles one batch may hold for points of dimension `dim` (memory limits).
    fn max_batch_particles(&self, dim: usize) -> usize;
    /// Advance the particles of `work` through its steps (see [`BatchWork`]).
    ///
    /// On success `work.state` holds the positions after `work.steps.end` steps,
    /// bit-identical however a batch's steps are split into ranges (the f32 engines; the
    /// reference engine rounds its f64 state to f32 at each range boundary). `work.cancel`
    /// is looked at between units of work; once it is set the engine stops early and
    /// returns [`crate::Error::Interrupted`], leaving `work.state` unspecified.
    fn advance_batch(&mut self, problem: &Problem, work: BatchWork) -> Result<()> {
        self.advance_steps(problem, work, None)
    }

    /// Whether [`advance_batch_tapped`](Self::advance_batch_tapped) works for `problem`.
    /// Without it the driver stops each batch at the recorded steps and measures the
    /// posterior in a separate pass over the training set.
    fn posterior_tap(&self, problem: &Problem) -> bool {
        let _ = problem;
        false
    }

    /// [`advance_batch`](Self::advance_batch), also filling `tap` (see [`PosteriorTap`])
    /// for its steps inside `work.steps`. The positions written to `work.state` are
    /// bit-identical to those of `advance_batch` over the same ranges (the reference
    /// engine: to those of `advance_batch` split at every tapped step), whatever
    /// `tap.rows`: a particle's trajectory never depends on whether it is recorded. An
    /// error where [`posterior_tap`](Self::posterior_tap) is false.
    fn advance_batch_tapped(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: &mut PosteriorTap,
    ) -> Result<()> {
        if !self.posterior_tap(problem) {
            return Err(crate::error::Error::invalid(
                "posterior tap",
                format!(
                    "the {} engine does not report its softmax weights for this problem",
                    self.backend().name()
                ),
            ));
        }
        self.advance_steps(problem, work, Some(tap))
    }

    /// What both of the above run: each engine's one implementation, with the tap
    /// optional.
    fn advance_steps(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: Option<&mut PosteriorTap>,
    ) -> Result<()>;

    /// Run particles `first_particle .. first_particle + n` (n = `samples.len() / dim`):
    /// write their initial noise into `initial` and their final positions into `samples`
    /// (both row-major (n, dim)). `on_step` is called with the number of steps finished.
    fn run_batch(
        &mut self,
        problem: &Problem,
        first_particle: u64,
        initial: &mut [f32],
        samples: &mut [f32],
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let all = 0..problem.steps.len();
        let work =
            BatchWork::new(first_particle, Some(initial), samples, all).reporting_to(on_step);
        self.advance_batch(problem, work)
    }
}
