//! memodiff: reverse-time diffusion sampling driven by the exact empirical score of a
//! finite training set, on the GPU (wgpu/WGSL) with a CPU twin of every stage and an f64
//! reference, to show and measure memorization.
//!
//! This is the library under the `memodiff` binary and the Python package: every item
//! below is what a program needs to run the sampler, evaluate the score, draw densities
//! and count memorization. Particle `i`'s trajectory depends only on the seed and `i`, so
//! every engine, batch size and shard gives the same run (the f32 engines bit for bit).
//!
//! - **A run**: a [`RunSpec`] (with [`Execution`]: backend, device, batch, checkpoints)
//!   runs into a folder with [`sample_to_folder`] and is continued with
//!   [`resume_in_folder`]; both return the [`RunReport`] written as run.json. For samples
//!   in memory, open a [`Sampler`] and run a [`SampleConfig`] into a [`SampleSink`] (or
//!   [`Sampler::collect`] it). Cancellation is an `AtomicBool` the caller sets and
//!   progress a [`Progress`]: the library installs no signal handler.
//! - **The model**: training sets ([`Dataset`], [`datasets`]), the schedule
//!   ([`VpSchedule`]), the score ([`ScoreKind`], evaluated at points by
//!   [`ScoreEvaluator`]), the integrators ([`SamplerKind`]).
//! - **Pictures**: kernel density grids ([`DensityGrid`] over an [`Extent`]) and their
//!   colours ([`shade`] with a [`Colormap`] and a [`Norm`]), exactly as in the PNGs.
//! - **Memorization**: [`MemorizationCounter`] and its [`MemorizationSummary`].
//! - **Devices**: [`devices`] lists the GPU adapters a [`Backend`] can use.
//!
//! docs/architecture.md in the repository describes the layers inside.
#![warn(missing_docs)]

mod cli;
mod commands;
mod density;
mod engine;
mod error;
mod image;
mod io;
mod isa;
mod metrics;
mod model;
mod plot;
mod run;

pub use error::{Error, Result};

// A run: its definition, into a folder, or in memory.
pub use run::driver::{NoProgress, Progress, SampleConfig, SampleTiming, Shard};
pub use run::report::RunReport;
pub use run::sampler::{Collected, SampleSink, Sampler};
pub use run::spec::{Execution, ExtraOutputs, ImageSpec, Preset, PresetSettings, RunSpec};
pub use run::speciation::{
    clone_seed, largest_covariance_eigenvalue, Classes, ClonePoint, Speciation,
};
pub use run::to_folder::{resume_in_folder, sample_to_folder, FolderControl};

// The model and the engines.
pub use engine::score_at::ScoreEvaluator;
pub use engine::{Backend, SamplerKind};
pub use model::dataset::images::{digits_file, digits_labels_file};
pub use model::dataset::{Dataset, ImageShape};
pub use model::patch_score::{Locality, PatchScore};
pub use model::schedule::{ScheduleShape, ScoreKind, VpSchedule};

// Pictures.
pub use density::extent::Extent;
pub use density::heatmap::{DensityGrid, Kernel, DEFAULT_BANDWIDTH};
pub use image::colormap::Colormap;
pub use image::norm::{Norm, Shading};
pub use image::shade;

// Memorization.
pub use metrics::{MemorizationCounter, MemorizationSummary};

// Devices.
pub use engine::gpu::context::{describe_adapters as devices, AdapterSummary};

/// The built-in training sets, by the specs `--dataset` takes.
pub mod datasets {
    pub use crate::model::dataset::synthetic::generate;
}

/// What the `memodiff` binary runs: its command line and the flag its Ctrl-C handler
/// sets. Not part of the library's API.
#[doc(hidden)]
pub mod binary {
    pub use crate::cli::INTERRUPTED;
    pub use crate::commands::{run, Cli};
}

#[doc(hidden)]
pub mod testing;
