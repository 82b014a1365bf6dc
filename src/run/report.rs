//! run.json: everything about a finished run ([`RunReport`]), written by `sample`,
//! `resume` and `merge`, and read back typed by `merge`.
//!
//! Its `parameters` are the run's [`RunSpec`] and the values derived from it and from the
//! run ([`RunFacts`]), side by side in one JSON object.

use crate::engine::Backend;
use crate::metrics::MemorizationSummary;
use crate::model::dataset::ImageShape;
use crate::run::spec::RunSpec;
use serde::{Deserialize, Serialize};

/// run.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The version that wrote it.
    pub memodiff_version: String,
    /// What started the run (the command line for the CLI).
    pub command: Vec<String>,
    /// The run's spec and the facts that follow from it.
    pub parameters: RunParameters,
    /// The backend the run used.
    #[serde(with = "crate::run::spec::backend_name")]
    pub backend: Backend,
    /// The backend asked for.
    #[serde(with = "crate::run::spec::backend_name")]
    pub backend_requested: Backend,
    /// Why `auto` did not get a GPU, when it did not.
    pub backend_note: Option<String>,
    /// The device that ran.
    pub device: String,
    /// Where the time went, in seconds.
    pub timings_s: Timings,
    /// Exact culling of the score's (particle, training point) pairs, as the engine
    /// counted it in this process, where the engine culls (cpu engine, D > 4); absent
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culled_pairs: Option<CulledPairs>,
    /// The memorization metrics.
    pub memorization: MemorizationSummary,
    /// The shard folders a merged run was made from (`merge` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<String>>,
    /// The files of the run folder, run.json last.
    pub files: Vec<String>,
}

/// run.json's `parameters`: the spec and what follows from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParameters {
    #[serde(flatten)]
    pub spec: RunSpec,
    #[serde(flatten)]
    pub facts: RunFacts,
}

/// What follows from a run's spec, its training set, its engine and its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    /// The particle indices of this folder, [start, end).
    pub particle_range: [u64; 2],
    /// time_points - 1.
    pub steps: usize,
    pub n_train: usize,
    pub dim: usize,
    /// (H, W, C) of one image, for image training sets.
    pub image_shape: Option<ImageShape>,
    pub batch_size: usize,
    pub batches: usize,
    /// Where the metrics' nearest neighbours were found ("gpu" or "cpu"; exact either way).
    pub nearest_neighbours_on: String,
    /// Where the density grids were computed (samples on the engine's GPU where it can
    /// serve the grid; see docs/density-images.md).
    pub density_on: DensityOn,
    /// A density grid received more than `EXACT_PARTICLES` (2^31 - 1) particles: its sums
    /// may have wrapped (identically on every engine, see docs/density-images.md). Written
    /// only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub density_inexact: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CulledPairs {
    pub pairs: u64,
    pub culled: u64,
    pub fraction: f64,
}

/// Where the time went: a sampled run's phases, or a merge's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timings {
    Sample(SampleTimings),
    Merge(MergeTimings),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleTimings {
    pub setup: f64,
    pub sampling: f64,
    pub outputs: f64,
    pub finish: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeTimings {
    pub merge: f64,
    /// The shards' sampling times added up.
    pub shards_sampling: f64,
}

impl Timings {
    /// Engine time of the run (of all its shards, for a merged run).
    pub fn sampling(&self) -> f64 {
        match self {
            Timings::Sample(t) => t.sampling,
            Timings::Merge(t) => t.shards_sampling,
        }
    }
}

impl RunReport {
    /// Read `dir/run.json`.
    pub fn read(dir: &std::path::Path) -> crate::error::Result<Self> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| crate::Error::invalid("run.json", format!("{}: {e}", path.display())))
    }
}

/// Where a run's density grids were computed (run.json's `density_on`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DensityOn {
    /// `"gpu"`: deposited on the engine's device straight from its particle buffer;
    /// `"cpu"`: accumulated on the host from the batches read back; `"none"`: no density
    /// images (D != 2).
    #[serde(deserialize_with = "place")]
    pub samples: Place,
    /// The initial noise: on the CPU (it comes back for initial.npy anyway), or `"none"`.
    #[serde(deserialize_with = "place")]
    pub initial: Place,
    /// Why the samples' grid is on the CPU on a GPU run.
    pub note: Option<String>,
    /// Row tiles of the GPU sub-grid (more than 1 when it exceeds one storage buffer).
    pub gpu_tiles: Option<usize>,
}

/// Where a density grid was computed: `"gpu"`, `"cpu"` or `"none"`. (An alias: serde
/// would take a `&'static str` field to borrow from its input.)
pub type Place = &'static str;

/// One of the places [`DensityOn`] names, read back from run.json.
fn place<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Place, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(d)?;
    ["gpu", "cpu", "none"]
        .into_iter()
        .find(|p| *p == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown place '{name}'")))
}
