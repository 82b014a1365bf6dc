//! The one definition of a sampling run, [`RunSpec`], with every default in one place.
//!
//! `sample` builds it once from its options and validates it once ([`RunSpec::validate`]);
//! run.json's `parameters` (with the derived [`RunFacts`](crate::run::report::RunFacts) next to it, see
//! [`crate::run::report`]), the checkpoint, `resume` and `merge` all serialize and read this
//! same type. Adding a parameter is one field here. Fields that older run.json files do not
//! have are written only when they differ from their default and read back as the default
//! when absent, so a run at the defaults records exactly what it always did.
//!
//! How a run is carried out but not what it computes (backend, device, batch size asked
//! for, checkpoint interval) is [`Execution`]; the checkpoint keeps it next to the spec.

use crate::density::extent::Extent;
use crate::density::heatmap::Kernel;
use crate::engine::{Backend, SamplerKind};
use crate::error::{Error, Result};
use crate::image::colormap::Colormap;
use crate::image::norm::Norm;
use crate::model::dataset::{Dataset, ImageShape};
use crate::model::schedule::{ScheduleShape, ScoreKind, VpSchedule};
use crate::run::driver::{SampleConfig, Shard};
use serde::{Deserialize, Serialize};

/// Particles of a run: the reference experiment's million.
pub const DEFAULT_PARTICLES: u64 = 1_000_000;
/// Time points S of the grid (S - 1 steps).
pub const DEFAULT_TIME_POINTS: usize = 100;
/// beta(t) at t = 0 and at t = 1 of the linear VP schedule.
pub const DEFAULT_BETA_MIN: f64 = 0.001;
pub const DEFAULT_BETA_MAX: f64 = 3.0;
/// The training set: 8 points on the unit circle.
pub const DEFAULT_DATASET: &str = "circle:8";
/// Density images: colormap and norm.
pub const DEFAULT_COLORMAP: Colormap = Colormap::Coolwarm;
pub const DEFAULT_NORM: Norm = Norm::Linear;
/// Density images: width and height in pixels.
pub const DEFAULT_RESOLUTION: [usize; 2] = [512, 512];
/// Kernel bandwidth of the density images: the tutorial's exp(-350 d^2).
pub const DEFAULT_BANDWIDTH: f64 = crate::density::heatmap::DEFAULT_BANDWIDTH;
/// The samples' image covers [-3, 3]^2, the initial noise's [-2, 3]^2.
pub const DEFAULT_EXTENT: [f64; 2] = [-3.0, 3.0];
pub const DEFAULT_INITIAL_EXTENT: [f64; 2] = [-2.0, 3.0];
/// Posterior-concentration records along the trajectory, and over how many particles.
pub const DEFAULT_POSTERIOR_RECORDS: usize = 20;
pub const DEFAULT_POSTERIOR_PARTICLES: u64 = 100_000;
/// Size of `--figure` and snapshot frames in pixels (clap parses this text).
pub const DEFAULT_FIGURE_SIZE: &str = "720x600";
const DEFAULT_FIGURE_SIZE_PIXELS: [u32; 2] = [720, 600];

/// Everything that defines what a sampling run computes and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Particles of the whole run (all shards).
    pub particles: u64,
    /// The shard this folder holds, if any.
    pub shard: Option<Shard>,
    /// Time points S of the grid (S - 1 steps).
    pub time_points: usize,
    /// The integrator (`em` or `heun`).
    pub sampler: SamplerKind,
    /// Seed of the Philox streams: particle i's noise depends only on (seed, i).
    pub seed: u64,
    /// beta(t) at t = 0 of the linear VP schedule.
    pub beta_min: f64,
    /// beta(t) at t = 1.
    pub beta_max: f64,
    /// The schedule's shape (`--schedule`): absent from run.json for the linear one.
    #[serde(default, skip_serializing_if = "is_linear_schedule")]
    pub schedule: ScheduleShape,
    /// The training set's name as [`Dataset::parse_seeded`] gives it (a spec such as
    /// `circle:8`, a path; random sets with their data seed): merge and resume compare it.
    pub dataset: String,
    /// Seed of the random training sets.
    pub data_seed: u64,
    /// `{"kind": "empirical"}` or `{"kind": "kde", "h": ...}`.
    pub score: ScoreKind,
    /// Early stop at forward time t_min (0: the reverse process runs to t = 0).
    pub t_min: f64,
    /// A `.npy` file of (P, D) initial positions x_T to start from instead of the Philox
    /// draw (`--initial`); read when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// The first forward time of an evenly spaced grid from N(0, I) (`--grid-start`);
    /// absent: the tutorial's grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_start: Option<f64>,
    /// eta of the ddim sampler (`--eta`); absent: 0, deterministic.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ddim_eta: f64,
    /// The patch-size schedule of a patch score (`--patch-size`); absent: the score's k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_sizes: Option<Vec<usize>>,
    /// How the density images are drawn.
    #[serde(flatten)]
    pub images: ImageSpec,
    /// The outputs besides the arrays and the density images.
    #[serde(flatten)]
    pub extras: ExtraOutputs,
}

/// How the density images are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The samples' image, [xmin, xmax, ymin, ymax].
    #[serde(rename = "samples_extent", with = "extent_array")]
    pub extent: Extent,
    /// The initial noise's image.
    #[serde(with = "extent_array")]
    pub initial_extent: Extent,
    /// [width, height] in pixels.
    pub resolution: [usize; 2],
    /// Width (standard deviation) of the density kernel.
    #[serde(rename = "kernel_bandwidth")]
    pub bandwidth: f64,
    /// `kernel`, `norm` and `png16` are absent from run.json files of older builds: their
    /// defaults then.
    #[serde(default)]
    pub kernel: Kernel,
    /// The colour table.
    #[serde(with = "colormap_name")]
    pub colormap: Colormap,
    /// How densities map to colours.
    #[serde(default)]
    pub norm: Norm,
    /// Also write `NAME_gray16.png`, the raw density as 16-bit grayscale.
    #[serde(default)]
    pub png16: bool,
}

impl Default for ImageSpec {
    /// The reference tutorial's pictures: 512×512, kernel exp(-350 |p - x|^2), coolwarm,
    /// samples on [-3, 3]^2 and the initial noise on [-2, 3]^2.
    fn default() -> Self {
        let [a, b] = DEFAULT_EXTENT;
        let [c, d] = DEFAULT_INITIAL_EXTENT;
        Self {
            extent: Extent::square(a, b).expect("valid"),
            initial_extent: Extent::square(c, d).expect("valid"),
            resolution: DEFAULT_RESOLUTION,
            bandwidth: DEFAULT_BANDWIDTH,
            kernel: Kernel::default(),
            colormap: DEFAULT_COLORMAP,
            norm: DEFAULT_NORM,
            png16: false,
        }
    }
}

impl ImageSpec {
    /// Width of the images in pixels.
    pub fn width(&self) -> usize {
        self.resolution[0]
    }
    /// Height of the images in pixels.
    pub fn height(&self) -> usize {
        self.resolution[1]
    }
    /// The colormap and norm of the images.
    pub fn shading(&self) -> crate::image::norm::Shading {
        crate::image::norm::Shading {
            colormap: self.colormap,
            norm: self.norm,
        }
    }
}

/// What a run writes or records besides the arrays and density images. Written to
/// run.json only where they differ from their defaults (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraOutputs {
    /// Leave out samples.npy and initial.npy (`--no-samples`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_samples: bool,
    /// Draw the first K samples of an image training set into samples_grid.png.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_grid: Option<usize>,
    /// Posterior-concentration records along the trajectory (0: none).
    #[serde(
        default = "default_posterior_records",
        skip_serializing_if = "is_default_posterior_records"
    )]
    pub posterior_records: usize,
    /// ... over the particles of index below this.
    #[serde(
        default = "default_posterior_particles",
        skip_serializing_if = "is_default_posterior_particles"
    )]
    pub posterior_particles: u64,
    /// Framed figures of the density images (`--figure`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub figure: bool,
    /// Mark the training points on figures and snapshots.
    #[serde(default, skip_serializing_if = "is_false")]
    pub markers: bool,
    /// [width, height] of figures and snapshot frames.
    #[serde(
        default = "default_figure_size",
        skip_serializing_if = "is_default_figure_size"
    )]
    pub figure_size: [u32; 2],
    /// Snapshots of the particle cloud at K time points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<usize>,
}

impl Default for ExtraOutputs {
    fn default() -> Self {
        Self {
            no_samples: false,
            image_grid: None,
            posterior_records: DEFAULT_POSTERIOR_RECORDS,
            posterior_particles: DEFAULT_POSTERIOR_PARTICLES,
            figure: false,
            markers: false,
            figure_size: DEFAULT_FIGURE_SIZE_PIXELS,
            snapshots: None,
        }
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}
fn default_posterior_records() -> usize {
    DEFAULT_POSTERIOR_RECORDS
}
fn is_default_posterior_records(v: &usize) -> bool {
    *v == DEFAULT_POSTERIOR_RECORDS
}
fn default_posterior_particles() -> u64 {
    DEFAULT_POSTERIOR_PARTICLES
}
fn is_default_posterior_particles(v: &u64) -> bool {
    *v == DEFAULT_POSTERIOR_PARTICLES
}
fn default_figure_size() -> [u32; 2] {
    DEFAULT_FIGURE_SIZE_PIXELS
}
fn is_default_figure_size(v: &[u32; 2]) -> bool {
    *v == DEFAULT_FIGURE_SIZE_PIXELS
}

/// How a run is carried out, not what it computes: kept by the checkpoint so that `resume`
/// continues on the same backend and device with the same batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The backend asked for (`auto` included).
    #[serde(with = "backend_name")]
    pub backend: Backend,
    /// GPU adapter index of `memodiff devices`.
    pub device: Option<usize>,
    /// Particles per batch asked for (`None`: the engine's limit).
    pub batch: Option<usize>,
    /// Save a checkpoint every K steps (`None`: no checkpoints).
    pub checkpoint_every: Option<usize>,
}

impl Default for Execution {
    fn default() -> Self {
        Self {
            backend: Backend::Auto,
            device: None,
            batch: None,
            checkpoint_every: None,
        }
    }
}

/// Published set-ups in one flag (`--preset`): the schedule, sampler and time grid of a
/// paper's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Kamb & Ganguli (ICML 2025): the cosine schedule, deterministic DDIM on t_i = i/20 —
    /// 19 updates from N(0, I) at t = 0.95 — on data in [-1, 1].
    #[value(name = "kamb-ganguli")]
    KambGanguli,
    /// Gu et al. ("On memorization in diffusion models", 2023): Karras et al.'s EDM
    /// schedule and deterministic Heun sampler, 18 steps on the rho = 7 grid from sigma =
    /// 80 to 0.002 then 0, on data in [-1, 1]; memorization by the d1/d2 < 1/3 criterion
    /// (run.json's `memorized`).
    #[value(name = "gu-memorization")]
    GuMemorization,
}

/// What a [`Preset`] sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetSettings {
    /// The schedule.
    pub schedule: ScheduleShape,
    /// The integrator.
    pub sampler: SamplerKind,
    /// Time points S of the grid (S - 1 updates).
    pub time_points: usize,
    /// The grid's first forward time (`None`: the tutorial's grid).
    pub grid_start: Option<f64>,
    /// The range the training data must lie in, if the set-up assumes one.
    pub data_range: Option<(f64, f64)>,
}

impl Preset {
    /// The name `--preset` takes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::KambGanguli => "kamb-ganguli",
            Preset::GuMemorization => "gu-memorization",
        }
    }

    /// What the preset sets.
    pub fn settings(self) -> PresetSettings {
        match self {
            Preset::KambGanguli => PresetSettings {
                schedule: ScheduleShape::Cosine,
                sampler: SamplerKind::Ddim,
                time_points: 20,
                grid_start: Some(0.95),
                data_range: Some((-1.0, 1.0)),
            },
            Preset::GuMemorization => PresetSettings {
                schedule: ScheduleShape::Edm,
                sampler: SamplerKind::Heun,
                // 18 noise levels, then 0: 18 updates (the last an Euler step).
                time_points: 19,
                grid_start: None,
                data_range: Some((-1.0, 1.0)),
            },
        }
    }

    /// Set the preset's parameters in `spec`.
    pub fn apply(self, spec: &mut RunSpec) {
        let s = self.settings();
        spec.schedule = s.schedule;
        spec.sampler = s.sampler;
        spec.time_points = s.time_points;
        spec.grid_start = s.grid_start;
    }

    /// Set the preset's parameters in a run in memory (the Python package's), after
    /// refusing a training set outside the range the set-up assumes.
    pub fn apply_to_config(self, config: &mut SampleConfig) -> Result<()> {
        self.check_training(&config.dataset)?;
        let s = self.settings();
        config.schedule.shape = s.schedule;
        config.sampler = s.sampler;
        config.time_points = s.time_points;
        config.grid_start = s.grid_start;
        Ok(())
    }

    /// Refuse a training set outside the range the set-up assumes.
    pub fn check_training(self, training: &Dataset) -> Result<()> {
        let Some((lo, hi)) = self.settings().data_range else {
            return Ok(());
        };
        if let Some(i) = training.points.iter().position(|&v| v < lo || v > hi) {
            return Err(Error::invalid(
                "preset",
                format!(
                    "{} expects training data in [{lo}, {hi}], but coordinate {} of training \
                     point {} is {}; rescale the data first",
                    self.name(),
                    i % training.dim,
                    i / training.dim,
                    training.points[i]
                ),
            ));
        }
        Ok(())
    }
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_linear_schedule(shape: &ScheduleShape) -> bool {
    *shape == ScheduleShape::Linear
}

impl RunSpec {
    /// A run of the defaults on the training set named `dataset`.
    pub fn new(dataset: impl Into<String>) -> Self {
        Self {
            particles: DEFAULT_PARTICLES,
            shard: None,
            time_points: DEFAULT_TIME_POINTS,
            sampler: SamplerKind::default(),
            seed: 0,
            beta_min: DEFAULT_BETA_MIN,
            beta_max: DEFAULT_BETA_MAX,
            schedule: ScheduleShape::Linear,
            dataset: dataset.into(),
            data_seed: 0,
            score: ScoreKind::default(),
            t_min: 0.0,
            initial: None,
            grid_start: None,
            ddim_eta: 0.0,
            patch_sizes: None,
            images: ImageSpec::default(),
            extras: ExtraOutputs::default(),
        }
    }

    /// The noise schedule: its shape, and beta_min and beta_max for the linear one.
    pub fn schedule(&self) -> VpSchedule {
        VpSchedule {
            shape: self.schedule,
            ..VpSchedule::new(self.beta_min, self.beta_max)
        }
    }

    /// Whether samples.npy and initial.npy are written.
    pub fn write_arrays(&self) -> bool {
        !self.extras.no_samples
    }

    /// The particle indices this run simulates: all of them, or its shard's range.
    pub fn particle_range(&self) -> std::ops::Range<u64> {
        match self.shard {
            Some(shard) => shard.range(self.particles),
            None => 0..self.particles,
        }
    }

    /// The driver's configuration of this run on its loaded training set, in batches of
    /// `batch` particles (`None`: the engine's limit).
    pub fn sample_config(&self, training: Dataset, batch: Option<usize>) -> SampleConfig {
        SampleConfig {
            particles: self.particles,
            time_points: self.time_points,
            seed: self.seed,
            schedule: self.schedule(),
            dataset: training,
            batch,
            shard: self.shard,
            sampler: self.sampler,
            score: self.score,
            t_min: self.t_min,
            initial: None,
            grid_start: self.grid_start,
            ddim_eta: self.ddim_eta,
            patch_sizes: self.patch_sizes.clone(),
        }
    }

    /// Reject what cannot run, before anything is allocated or written: the sampling
    /// parameters on the training set `training` (see [`SampleConfig::validate`]), the
    /// images, the extra outputs and how the run is carried out. Returns the image shape of
    /// `--image-grid` (image training sets only).
    pub fn validate(
        &self,
        training: &Dataset,
        execution: &Execution,
    ) -> Result<Option<(ImageShape, usize)>> {
        self.sample_config(training.clone(), execution.batch)
            .validate()?;
        self.images.extent.validate()?;
        self.images.initial_extent.validate()?;
        match execution.checkpoint_every {
            Some(0) => return Err(Error::invalid("checkpoint_every", "must be at least 1")),
            Some(_) if self.initial.is_some() => {
                return Err(Error::invalid(
                    "initial",
                    "cannot be combined with checkpoints: a resume would need the file \
                     again",
                ))
            }
            Some(_) if execution.backend == Backend::Reference => {
                return Err(Error::invalid(
                    "checkpoint_every",
                    "cannot be used with --backend reference: its f64 state is rounded to \
                     f32 at a checkpoint, so a resumed run would not be bit-identical; use \
                     cpu or gpu",
                ))
            }
            _ => {}
        }
        check_figures(self, training, execution.checkpoint_every)?;
        self.extras
            .image_grid
            .map(|count| {
                crate::plot::image_grid::validate(training, count, self.write_arrays())
                    .map(|shape| (shape, count))
            })
            .transpose()
    }
}

/// The driver's configuration at the defaults of this module. (Here, next to the
/// defaults, so that the driver does not depend on the spec.)
impl SampleConfig {
    /// The defaults of this module on `dataset`.
    pub fn new(dataset: Dataset) -> Self {
        Self {
            particles: DEFAULT_PARTICLES,
            time_points: DEFAULT_TIME_POINTS,
            seed: 0,
            schedule: VpSchedule::new(DEFAULT_BETA_MIN, DEFAULT_BETA_MAX),
            dataset,
            batch: None,
            shard: None,
            sampler: SamplerKind::Em,
            score: ScoreKind::Empirical,
            t_min: 0.0,
            initial: None,
            grid_start: None,
            ddim_eta: 0.0,
            patch_sizes: None,
        }
    }
}

/// Most snapshots a run may ask for: each holds a density grid in memory until the end.
pub const MAX_SNAPSHOTS: usize = 256;

/// The step counts at which `k` snapshots are taken in a run of `n_steps` steps: evenly
/// spaced (rounded to the nearest step), the first at 0 (the initial noise) and the last
/// at `n_steps` (the samples). Needs `2 <= k <= n_steps + 1` so that they are distinct.
pub fn snapshot_plan(n_steps: usize, k: usize) -> Result<Vec<usize>> {
    if k < 2 {
        return Err(Error::invalid(
            "snapshots",
            format!("needs at least 2 (the first and the last time point), got {k}"),
        ));
    }
    if k > n_steps + 1 {
        return Err(Error::invalid(
            "snapshots",
            format!(
                "{k} snapshots of a run of {n_steps} steps would repeat time points; use at \
                 most {} (--steps time points)",
                n_steps + 1
            ),
        ));
    }
    if k > MAX_SNAPSHOTS {
        return Err(Error::invalid(
            "snapshots",
            format!("at most {MAX_SNAPSHOTS}, got {k}"),
        ));
    }
    let gaps = k - 1;
    Ok((0..k).map(|j| (j * n_steps + gaps / 2) / gaps).collect())
}

/// Check the figure options of `spec` (a run on `training`, checkpointed every
/// `checkpoint_every` steps) before anything runs or is written.
fn check_figures(
    spec: &RunSpec,
    training: &Dataset,
    checkpoint_every: Option<usize>,
) -> Result<()> {
    let extras = &spec.extras;
    let framed = extras.figure || extras.snapshots.is_some();
    if !framed && !is_default_figure_size(&extras.figure_size) {
        return Err(Error::invalid(
            "figure_size",
            "is the size of --figure and --snapshots images; give one of them",
        ));
    }
    if !(extras.figure || extras.snapshots.is_some() || extras.markers) {
        return Ok(());
    }
    if extras.markers && !(extras.figure || extras.snapshots.is_some()) {
        return Err(Error::invalid(
            "markers",
            "marks the training points on --figure and --snapshots images; give one of them",
        ));
    }
    if checkpoint_every.is_some() {
        return Err(Error::invalid(
            "figure/snapshots",
            "cannot be combined with --checkpoint-every (a resumed run would not redraw \
             them); run without checkpoints",
        ));
    }
    if let Some(k) = extras.snapshots {
        if training.dim != 2 {
            return Err(Error::invalid(
                "snapshots",
                format!(
                    "the frames are density images in the plane: need D = 2, the dataset \
                     has D = {}",
                    training.dim
                ),
            ));
        }
        if spec.shard.is_some() {
            return Err(Error::invalid(
                "snapshots",
                "cannot be combined with --shard: the frames of shards are not merged",
            ));
        }
        snapshot_plan(spec.time_points.saturating_sub(1), k)?;
    }
    Ok(())
}

/// An [`Extent`] as `[xmin, xmax, ymin, ymax]`.
mod extent_array {
    use crate::density::extent::Extent;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(e: &Extent, s: S) -> Result<S::Ok, S::Error> {
        [e.xmin, e.xmax, e.ymin, e.ymax].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Extent, D::Error> {
        let [xmin, xmax, ymin, ymax] = <[f64; 4]>::deserialize(d)?;
        Extent::new(xmin, xmax, ymin, ymax).map_err(serde::de::Error::custom)
    }
}

/// A [`Colormap`] by its name (`coolwarm`, ...).
mod colormap_name {
    use crate::image::colormap::Colormap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Colormap, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Colormap, D::Error> {
        let name = String::deserialize(d)?;
        Colormap::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown colormap '{name}'")))
    }
}

/// A [`Backend`] by its name (`auto`, `gpu`, `cpu`, `reference`).
pub(crate) mod backend_name {
    use crate::engine::Backend;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Backend, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Backend, D::Error> {
        let name = String::deserialize(d)?;
        <Backend as clap::ValueEnum>::from_str(&name, false)
            .map_err(|_| serde::de::Error::custom(format!("unknown backend '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_through_json_exactly() {
        let mut spec = RunSpec::new("circle:8");
        spec.beta_min = 0.1 + 0.2;
        spec.t_min = 1e-3 / 3.0;
        spec.images.bandwidth = 1.0 / 7.0;
        spec.shard = Some(Shard { index: 1, count: 3 });
        spec.extras.posterior_records = 7;
        spec.extras.image_grid = Some(4);
        let text = serde_json::to_string(&spec).unwrap();
        let back: RunSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.beta_min.to_bits(), spec.beta_min.to_bits());
    }

    #[test]
    fn extras_at_their_defaults_are_not_written() {
        let value = serde_json::to_value(RunSpec::new("circle:8")).unwrap();
        for key in [
            "no_samples",
            "image_grid",
            "posterior_records",
            "figure_size",
        ] {
            assert!(value.get(key).is_none(), "{key} written: {value}");
        }
        assert_eq!(
            value["samples_extent"],
            serde_json::json!([-3.0, 3.0, -3.0, 3.0])
        );
        assert_eq!(value["kernel_bandwidth"], DEFAULT_BANDWIDTH);
    }
}
