//! Sampling in a program's own memory: an engine opened once ([`Sampler`]) runs a
//! [`SampleConfig`] and hands each finished batch to the caller's [`SampleSink`]. The run
//! folder, its images and metrics are [`crate::run::to_folder`]'s business; this is the
//! plain sampler under them, with the same engines, seeds and bit-for-bit results.

use crate::engine::{open_backend, Backend, Engine};
use crate::error::Result;
use crate::run::driver::{self, BatchSink, Progress, SampleConfig, SampleTiming};
use std::sync::atomic::AtomicBool;

/// Receives the finished batches of a run, in particle order.
pub trait SampleSink {
    /// Particles `first_particle .. first_particle + n`: their initial noise and their
    /// final positions, both row-major (n, D).
    fn consume(&mut self, first_particle: u64, initial: &[f32], samples: &[f32]) -> Result<()>;

    /// Step counts strictly between 0 and the number of updates, increasing, after which
    /// the sink wants each batch's positions through [`snapshot`](Self::snapshot) (the
    /// states after 0 steps and after all of them are `consume`'s). None by default.
    fn snapshot_steps(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The positions (row-major (n, D)) of particles `first_particle ..` after `step`
    /// updates. Stopping a batch there does not change its results.
    fn snapshot(&mut self, first_particle: u64, step: usize, positions: &[f32]) -> Result<()> {
        let _ = (first_particle, step, positions);
        Ok(())
    }
}

/// A sink that keeps every batch: the initial noise and the samples of the whole run,
/// row-major (P, D).
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// The initial noise x_T of each particle.
    pub initial: Vec<f32>,
    /// The final positions (the samples).
    pub samples: Vec<f32>,
}

impl SampleSink for Collected {
    fn consume(&mut self, _: u64, initial: &[f32], samples: &[f32]) -> Result<()> {
        self.initial.extend_from_slice(initial);
        self.samples.extend_from_slice(samples);
        Ok(())
    }
}

/// The driver's sink for a caller's [`SampleSink`]: whole batches and snapshots.
struct Batches<'a>(&'a mut dyn SampleSink);

impl BatchSink for Batches<'_> {
    fn consume(&mut self, first_particle: u64, initial: &[f32], samples: &[f32]) -> Result<()> {
        self.0.consume(first_particle, initial, samples)
    }

    fn snapshot_steps(&self) -> Vec<usize> {
        self.0.snapshot_steps()
    }

    fn snapshot(&mut self, first_particle: u64, step: usize, positions: &[f32]) -> Result<()> {
        self.0.snapshot(first_particle, step, positions)
    }
}

/// An engine, opened once and used for any number of runs.
pub struct Sampler {
    engine: Box<dyn Engine>,
    note: Option<String>,
}

impl Sampler {
    /// Open the engine of `backend`, on GPU adapter `device` (an index of
    /// [`crate::devices`]) when given: `auto` picks a hardware GPU and falls back to the
    /// cpu engine (then [`note`](Self::note) says why).
    pub fn open(backend: Backend, device: Option<usize>) -> Result<Self> {
        let (engine, note) = open_backend(backend, device)?;
        Ok(Sampler { engine, note })
    }

    /// [`open`](Self::open) for a run with the patch score `plan`, where it has one: `auto`
    /// means the cpu engine for a patch score the GPU's kernels cannot run.
    pub fn open_for(
        backend: Backend,
        device: Option<usize>,
        plan: Option<&crate::model::patch_score::PatchPlan>,
    ) -> Result<Self> {
        let (backend, score_note) = crate::engine::backend_for_score(backend, device, plan)?;
        let mut sampler = Self::open(backend, device)?;
        sampler.note = score_note.or(sampler.note);
        Ok(sampler)
    }

    /// The backend that runs (never `auto`).
    pub fn backend(&self) -> Backend {
        self.engine.backend()
    }

    /// The device that runs, as run.json names it.
    pub fn device_name(&self) -> String {
        self.engine.device_name()
    }

    /// Why `auto` did not get a GPU, when it did not.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Run `config` (all its particles, or its shard's), batch by batch, into `sink`.
    /// Stops at the next step boundary once `cancel` is set, with
    /// [`crate::Error::Interrupted`]; the sink then has the batches finished before.
    pub fn run(
        &mut self,
        config: &SampleConfig,
        sink: &mut dyn SampleSink,
        progress: &mut dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<SampleTiming> {
        driver::run_with_cancel(
            config,
            self.engine.as_mut(),
            &mut Batches(sink),
            progress,
            cancel,
        )
    }

    /// Biroli et al.'s cloning experiment on `config` with `clones` clone times (see
    /// [`crate::Speciation`]): φ, the fraction of particles whose clones end in the same
    /// class, along the reverse process, and the speciation time against 1/2 ln Λ.
    pub fn speciation(
        &mut self,
        config: &SampleConfig,
        clones: usize,
        classes: &crate::run::speciation::Classes,
    ) -> Result<crate::run::speciation::Speciation> {
        crate::run::speciation::measure(config, clones, classes, self.engine.as_mut())
    }

    /// Run `config` and keep everything in memory.
    pub fn collect(&mut self, config: &SampleConfig) -> Result<Collected> {
        run_collect(config, self.engine.as_mut())
    }
}

/// Run `config` on `engine` and keep everything in memory.
pub fn run_collect(config: &SampleConfig, engine: &mut dyn Engine) -> Result<Collected> {
    let mut sink = Collected::default();
    driver::run(
        config,
        engine,
        &mut Batches(&mut sink),
        &mut driver::NoProgress,
    )?;
    Ok(sink)
}
