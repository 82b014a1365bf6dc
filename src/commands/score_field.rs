//! `memodiff score-field`: the empirical score on a grid of points at one forward time t,
//! drawn as a quiver plot (the reference tutorial's picture) and written as a (G, 4) f32
//! `.npy` of x, y, score_x, score_y for comparison with other implementations.
//!
//! The score is evaluated by the GPU score kernel when a GPU is used, by the scalar CPU
//! twin (`cpu::score`) or by the f64 reference otherwise: the same stages `sample` uses.

use crate::density::extent::Extent;
use crate::engine::score_at::ScoreEvaluator;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use crate::model::schedule::VpSchedule;
use crate::plot::figure::{Arrow, Figure};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Options of `memodiff score-field`.
#[derive(Debug, Clone, Args)]
pub struct ScoreFieldArgs {
    /// Forward (diffusion) time t in (0, 1] at which the score is evaluated: the marginal
    /// there is the training set scaled by s(t) and blurred by sigma2(t) (t = 0.005 is the
    /// tutorial's picture: arrows pointing at the nearest training point).
    #[arg(long = "t", default_value_t = 0.005, allow_negative_numbers = true)]
    pub t: f64,

    /// Training set: `circle:N`, a `.npy` (N, 2) or a `.csv` of N rows of 2 numbers
    /// (the plot needs D = 2).
    #[arg(long, default_value = "circle:8")]
    pub dataset: String,

    /// Grid points per side: G = n × n query points, evenly spaced over --extent with the
    /// first and last on its edges (numpy.linspace).
    #[arg(long, default_value_t = 32)]
    pub grid: usize,

    /// Extent of the grid as xmin,xmax,ymin,ymax.
    #[arg(long, default_value = "-1.5,1.5,-1.5,1.5", allow_hyphen_values = true)]
    pub extent: Extent,

    /// The score: `empirical` (the exact score of the training set) or `kde:h` (the
    /// training set smoothed by a Gaussian of width h), as `sample --score`.
    #[arg(long, default_value = "empirical")]
    pub score: crate::model::schedule::ScoreKind,

    /// beta(t) at t = 0 of the linear schedule.
    #[arg(long, default_value_t = 0.001, allow_negative_numbers = true)]
    pub beta_min: f64,

    /// beta(t) at t = 1.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub beta_max: f64,

    /// Who evaluates the score: `auto` is the GPU score kernel on a hardware GPU and the
    /// CPU twin without one; `gpu` any wgpu adapter (lavapipe included); `cpu` the scalar
    /// CPU twin (f32); `reference` the f64 formulas.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Evaluate on GPU adapter N of `memodiff devices` (implies the gpu backend).
    #[arg(long)]
    pub device: Option<usize>,

    /// Output folder (created if missing): score_field.png, score_field.npy (G, 4) f32 of
    /// x, y, score_x, score_y, and score_field.json. An existing non-empty folder needs
    /// --force.
    #[arg(long, default_value = "memodiff-score-field")]
    pub out: PathBuf,

    /// Write into an existing non-empty --out folder (files of the same names are replaced).
    #[arg(long)]
    pub force: bool,

    /// Size of the PNG, `WxH` or `N` for N×N.
    #[arg(long, default_value = "640x640", value_parser = crate::plot::figure::parse_size)]
    pub size: (u32, u32),

    /// Do not draw the training points.
    #[arg(long)]
    pub no_markers: bool,
}

/// The `n × n` query points over `extent`, row-major (x, y) pairs: y = ymin row first,
/// x varying fastest, both `linspace`d edge to edge.
pub fn grid_points(extent: &Extent, n: usize) -> Vec<f32> {
    let xs = crate::model::schedule::linspace(extent.xmin, extent.xmax, n);
    let ys = crate::model::schedule::linspace(extent.ymin, extent.ymax, n);
    ys.iter()
        .flat_map(|&y| xs.iter().flat_map(move |&x| [x as f32, y as f32]))
        .collect()
}

/// Arrows for `scores` at `points` (row-major (x, y) pairs), all scaled by one factor so
/// that the longest finite one is `longest` data units long. Returns the arrows and the
/// factor (data units per unit of score); non-finite scores get no arrow.
pub fn quiver_arrows(points: &[f32], scores: &[f32], longest: f64) -> (Vec<Arrow>, f64) {
    let max = scores
        .chunks(2)
        .map(|s| (s[0] as f64).hypot(s[1] as f64))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let scale = if max > 0.0 { longest / max } else { 0.0 };
    let arrows = points
        .chunks(2)
        .zip(scores.chunks(2))
        .filter(|(_, s)| s[0].is_finite() && s[1].is_finite())
        .map(|(p, s)| {
            let (x, y) = (p[0] as f64, p[1] as f64);
            Arrow {
                from: (x, y),
                to: (x + scale * s[0] as f64, y + scale * s[1] as f64),
            }
        })
        .collect();
    (arrows, scale)
}

/// What score_field.json records.
#[derive(Debug, Serialize)]
pub struct ScoreFieldReport {
    pub memodiff_version: &'static str,
    pub command: Vec<String>,
    /// Forward time t and the marginal's parameters there.
    pub t: f64,
    pub sigma2: f64,
    pub mean_scale: f64,
    pub beta_min: f64,
    pub beta_max: f64,
    pub dataset: String,
    /// The score, when it is not the empirical one (`kde:h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    pub n_train: usize,
    /// Points per side; G = grid^2 rows in score_field.npy, y-major (x varies fastest).
    pub grid: usize,
    pub extent: [f64; 4],
    pub backend: &'static str,
    pub backend_note: Option<String>,
    pub device: String,
    /// Largest |score| on the grid, and the arrow scale: data units per unit of score
    /// (the longest arrow is 0.9 of a grid cell).
    pub max_score_norm: f64,
    pub arrow_scale: f64,
    pub files: Vec<String>,
}

/// Fraction of a grid cell the longest arrow spans: long enough to read, short enough not
/// to cross its neighbour.
pub const LONGEST_ARROW_CELLS: f64 = 0.9;

/// `memodiff score-field`.
pub fn run(args: &ScoreFieldArgs) -> Result<ScoreFieldReport> {
    if !(args.t.is_finite() && args.t > 0.0 && args.t <= 1.0) {
        return Err(Error::invalid(
            "--t",
            format!(
                "{} is outside (0, 1]: the forward time must be positive (at t = 0 the \
                 score is undefined) and at most 1",
                args.t
            ),
        ));
    }
    if !(2..=512).contains(&args.grid) {
        return Err(Error::invalid(
            "--grid",
            format!("must be in 2..=512 points per side, got {}", args.grid),
        ));
    }
    let schedule = VpSchedule::new(args.beta_min, args.beta_max);
    let (lo, hi) = (schedule.beta_min, schedule.beta_max);
    if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo < hi) {
        return Err(Error::invalid(
            "--beta-min/--beta-max",
            format!("need finite 0 <= beta_min < beta_max, got {lo} and {hi}"),
        ));
    }
    let dataset = Dataset::parse(&args.dataset)?;
    if dataset.dim != 2 {
        return Err(Error::invalid(
            "--dataset",
            format!(
                "the score field is drawn in the plane: it needs D = 2, got D = {}",
                dataset.dim
            ),
        ));
    }
    args.extent.validate()?;
    crate::io::out_dir::check_out(&args.out, args.force)?;
    let (mut evaluator, note) = ScoreEvaluator::open(args.backend, args.device)?;
    if let Some(note) = &note {
        println!("{note}");
    }
    let points = grid_points(&args.extent, args.grid);
    let scores = evaluator.evaluate(&dataset, &schedule, args.score, args.t, &points)?;

    let e = args.extent;
    let cell = ((e.xmax - e.xmin) / (args.grid - 1) as f64)
        .min((e.ymax - e.ymin) / (args.grid - 1) as f64);
    let (arrows, scale) = quiver_arrows(&points, &scores, LONGEST_ARROW_CELLS * cell);
    let max_norm = if scale > 0.0 {
        LONGEST_ARROW_CELLS * cell / scale
    } else {
        0.0
    };
    let markers: Vec<(f64, f64)> = if args.no_markers {
        Vec::new()
    } else {
        dataset.points.chunks(2).map(|p| (p[0], p[1])).collect()
    };
    let sigma2 = schedule.sigma2(args.t);
    let figure = Figure {
        title: format!(
            "{} score of {} at t = {} (σ² = {sigma2:.2e})\n\
             arrows ∝ score, the longest |score| = {max_norm:.3e}",
            args.score.label(),
            dataset.name,
            args.t,
        ),
        markers: &markers,
        arrows: &arrows,
        ..Figure::new(None, e)
    };
    let image = figure.render(args.size.0, args.size.1)?;

    // The three files arrive in --out together, score_field.json last.
    let staging = super::begin_out(&args.out)?;
    let mut table = Vec::with_capacity(points.len() * 2);
    for (p, s) in points.chunks(2).zip(scores.chunks(2)) {
        table.extend_from_slice(&[p[0], p[1], s[0], s[1]]);
    }
    let g = (args.grid * args.grid) as u64;
    crate::io::write_npy_f32(&staging.path("score_field.npy"), g, 4, &table)?;
    crate::io::write_png(&staging.path("score_field.png"), &image)?;
    let report = ScoreFieldReport {
        memodiff_version: env!("CARGO_PKG_VERSION"),
        command: crate::cli::command_line(),
        t: args.t,
        sigma2,
        mean_scale: schedule.mean_scale(args.t),
        beta_min: schedule.beta_min,
        beta_max: schedule.beta_max,
        dataset: dataset.name.clone(),
        score: (args.score != crate::model::schedule::ScoreKind::Empirical)
            .then(|| args.score.label()),
        n_train: dataset.len(),
        grid: args.grid,
        extent: [e.xmin, e.xmax, e.ymin, e.ymax],
        backend: evaluator.backend().name(),
        backend_note: note,
        device: evaluator.device_name(),
        max_score_norm: max_norm,
        arrow_scale: scale,
        files: vec![
            "score_field.png".into(),
            "score_field.npy".into(),
            "score_field.json".into(),
        ],
    };
    crate::io::write_json(&staging.path("score_field.json"), &report)?;
    let previous = crate::io::staging::listed_files(&args.out.join("score_field.json"));
    staging.commit("score_field.json", &previous)?;
    println!(
        "score field at t = {} on a {g}x{g} grid ({} backend on {}); largest |score| {:.4e}; \
         wrote {}: {}",
        args.t,
        report.backend,
        report.device,
        max_norm,
        args.out.display(),
        report.files.join(", "),
        g = args.grid,
    );
    Ok(report)
}
