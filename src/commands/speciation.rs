//! `memodiff speciation`: the speciation time of the reverse process, measured with the
//! cloning experiment of Biroli, Bonnaire, de Bortoli and Mézard ("Dynamical regimes of
//! diffusion models", 2024), against their prediction
//!
//! ```text
//! t_S = 1/2 ln Λ      (Ornstein–Uhlenbeck time; Λ the largest eigenvalue of the data's covariance)
//! ```
//!
//! **The experiment.** The particles run the reverse process once; at each of K clone
//! times τ_k the state is kept, and a clone of every particle continues from it to the end
//! with its own noise: the same steps, but the Philox stream of another key,
//! [`speciation::clone_seed`]`(seed)` (the particle's own trajectory is the other clone). φ(τ_k) is
//! the fraction of particles whose two clones end in the same class: the mixture component
//! of the nearest training point for a `two-gaussians` set (its first ⌈N/2⌉ points are one
//! component), the nearest training point itself otherwise. Cloned early, the clones end
//! in independent classes (φ ≈ 1/2 for two balanced classes); cloned after speciation, in
//! the same one (φ → 1). The measured t_S is the OU time where φ first reaches 3/4 (midway)
//! along the reverse process, interpolated linearly between clone times. The OU time of a
//! forward time τ is `B(τ)/2`, as for `collapse`; the default `--beta-max 20` reaches
//! t_OU = 5 at τ = 1, beyond t_S of most data (the tutorial's 3 reaches only 0.75).

use crate::engine::Backend;
use crate::error::Result;
use crate::model::dataset::Dataset;
use crate::model::schedule::VpSchedule;
use crate::run::driver::SampleConfig;
use crate::run::speciation::{self, ClonePoint};
use clap::Args;
use std::path::PathBuf;

/// Options of `memodiff speciation`.
#[derive(Debug, Clone, Args)]
pub struct SpeciationArgs {
    /// Training set (any `sample --dataset` spec); `two-gaussians:N:D` is classed by
    /// mixture component, others by nearest training point.
    #[arg(long, default_value = "two-gaussians:256:256")]
    pub dataset: String,

    /// Seed of the random training sets.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,

    /// Class the samples by the labels of their nearest training points: a .npy of shape
    /// (N,) of integers, one per training point (`--dataset digits` uses its own labels
    /// unless this is given). Without labels, `two-gaussians` sets are classed by mixture
    /// component and others by nearest training point.
    #[arg(long, value_name = "FILE.npy")]
    pub labels: Option<PathBuf>,

    /// uint8 images: map 0..255 onto LO,HI (as `sample --scale`).
    #[arg(long, value_name = "LO,HI", value_parser = crate::cli::parse::parse_scale, allow_hyphen_values = true)]
    pub scale: Option<(f64, f64)>,

    /// Particles (each has one clone per clone time).
    #[arg(long, default_value = "1000", value_parser = crate::cli::parse::parse_count)]
    pub particles: u64,

    /// Time points S of the grid.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Clone times K, evenly spaced over the steps.
    #[arg(long, default_value_t = 16)]
    pub clones: usize,

    /// beta at t = 0.
    #[arg(long, default_value_t = 0.001)]
    pub beta_min: f64,

    /// beta at t = 1: the run starts at OU time B(1)/2 (about 5.0 with the default 20),
    /// which must be above the speciation time.
    #[arg(long, default_value_t = 20.0)]
    pub beta_max: f64,

    /// Seed of the particles' noise (the clones' is derived from it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Engine: cpu (default), gpu or reference.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,

    /// Output folder: speciation.csv, speciation.png, speciation.json.
    #[arg(long, default_value = "memodiff-speciation")]
    pub out: PathBuf,

    /// Write into an existing non-empty --out folder. Without it such a folder is refused.
    #[arg(long)]
    pub force: bool,
}

/// What `speciation.json` holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpeciationReport {
    pub memodiff_version: &'static str,
    pub command: Vec<String>,
    pub dataset: String,
    pub n_train: usize,
    pub dim: usize,
    pub particles: u64,
    pub steps: usize,
    pub beta_min: f64,
    pub beta_max: f64,
    pub seed: u64,
    pub clone_seed: u64,
    /// "mixture component" or "nearest training point".
    pub classes: &'static str,
    /// Largest eigenvalue of the training set's covariance.
    pub lambda: f64,
    /// 1/2 ln Λ (None when Λ <= 1: no speciation predicted).
    pub predicted_t_s: Option<f64>,
    /// The OU time where φ first reaches 3/4 (None when it does not inside the clones).
    pub measured_t_s: Option<f64>,
    pub backend: &'static str,
    pub device: String,
    pub curve: Vec<ClonePoint>,
    pub files: Vec<String>,
}

/// `memodiff speciation`.
pub fn run(args: &SpeciationArgs) -> Result<SpeciationReport> {
    let dataset = crate::model::dataset::images::prepare(
        Dataset::parse_seeded(&args.dataset, args.data_seed)?,
        args.scale,
        None,
        None,
    )?;
    let classes = match &args.labels {
        Some(path) => {
            speciation::Classes::Labels(crate::model::dataset::images::read_labels(path)?)
        }
        None if dataset.name == crate::model::dataset::images::DIGITS => {
            speciation::Classes::Labels(crate::model::dataset::images::read_labels(
                &crate::model::dataset::images::digits_labels_file()?,
            )?)
        }
        None => speciation::Classes::of(&dataset),
    };
    let mut config = SampleConfig::new(dataset.clone());
    config.particles = args.particles;
    config.time_points = args.steps;
    config.seed = args.seed;
    config.schedule = VpSchedule::new(args.beta_min, args.beta_max);
    config.validate()?;
    speciation::check_clones(args.clones, args.steps)?;
    crate::io::out_dir::check_out(&args.out, args.force)?;
    let mut engine = super::open_engine(args.backend)?;
    let staging = super::begin_out(&args.out)?;
    let measured = speciation::measure(&config, args.clones, &classes, engine.as_mut())?;
    let (curve, lambda, predicted) = (&measured.curve, measured.lambda, measured.predicted_t_s);
    let dim = dataset.dim;
    println!(
        "speciation of {} (N = {}, D = {dim}): Λ = {lambda:.4}, predicted t_S = ½ ln Λ = {}, \
         {} particles, {} clone times",
        dataset.name,
        dataset.len(),
        predicted.map_or("none (Λ <= 1)".into(), |t| format!("{t:.3}")),
        args.particles,
        curve.len()
    );
    println!("| step | tau | OU time | φ (clones in the same class) |");
    println!("|---:|---:|---:|---:|");
    for p in curve {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} |",
            p.step, p.tau, p.ou_time, p.phi
        );
    }
    println!(
        "measured t_S (φ reaches 3/4): {}",
        measured
            .measured_t_s
            .map_or("none inside the clone times".into(), |t| format!("{t:.3}"))
    );

    let mut csv = String::from("step,tau,ou_time,phi\n");
    for p in curve {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6}\n",
            p.step, p.tau, p.ou_time, p.phi
        ));
    }
    crate::io::write_atomically(&staging.path("speciation.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    let mut series = vec![crate::plot::charts::Series {
        label: "φ measured".into(),
        points: curve.iter().map(|p| (p.ou_time, p.phi)).collect(),
        intervals: None,
        lines: true,
    }];
    if let Some(t) = predicted {
        series.push(crate::plot::charts::Series {
            label: "predicted t_S = ½ ln Λ".into(),
            points: vec![(t, 0.4), (t, 1.05)],
            intervals: None,
            lines: true,
        });
    }
    let chart = crate::plot::charts::Chart {
        title: format!("speciation, {} (cloning)", dataset.name),
        x_label: "OU time of the cloning, B(τ)/2".into(),
        y_label: "φ: both clones in the same class".into(),
        log_x: false,
        log_y: false,
        diagonal: false,
        y_range: Some((0.4, 1.05)),
        series,
    };
    crate::plot::charts::write_png(&chart, &staging.path("speciation.png"), 720, 520)?;
    let report = SpeciationReport {
        memodiff_version: env!("CARGO_PKG_VERSION"),
        command: crate::cli::command_line(),
        dataset: dataset.name.clone(),
        n_train: dataset.len(),
        dim,
        particles: args.particles,
        steps: args.steps,
        beta_min: args.beta_min,
        beta_max: args.beta_max,
        seed: args.seed,
        clone_seed: measured.clone_seed,
        classes: measured.classes,
        lambda,
        predicted_t_s: predicted,
        measured_t_s: measured.measured_t_s,
        backend: engine.backend().name(),
        device: engine.device_name(),
        curve: measured.curve.clone(),
        files: vec![
            "speciation.csv".into(),
            "speciation.png".into(),
            "speciation.json".into(),
        ],
    };
    crate::io::write_json(&staging.path("speciation.json"), &report)?;
    staging.commit("speciation.json", &report.files)?;
    println!(
        "wrote {}: speciation.csv, speciation.png, speciation.json",
        args.out.display()
    );
    Ok(report)
}
