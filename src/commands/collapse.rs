//! `memodiff collapse`: the collapse time of the reverse process, measured from the
//! posterior concentration, against the prediction of Biroli, Bonnaire, de Bortoli and
//! Mézard, "Dynamical regimes of diffusion models" (2024):
//!
//! ```text
//! t_C = 1/2 ln(1 + sigma^2 / (N^(2/d) - 1))      (Ornstein–Uhlenbeck time)
//! ```
//!
//! for N points drawn from a d-dimensional Gaussian of variance sigma^2. memodiff's VP-SDE
//! is that OU process in the time `t_OU = B(tau) / 2` (`s = exp(-t_OU)`,
//! `sigma2 = 1 - exp(-2 t_OU)`).
//!
//! **Measured collapse time.** Each run records, after every step, the mean over particles
//! of `max_i w_i` (the largest softmax weight of the score). It rises from near `1/N`
//! (weights spread over the training set) to 1 (one training point owns the particle). Its
//! normalised form `c(t) = (mean max w - 1/N) / (1 - 1/N)` runs from 0 to 1 whatever N;
//! the measured `t_C` is the OU time at which `c` first reaches 1/2 along the reverse
//! process, interpolated linearly in OU time between the two recorded steps around the
//! crossing. Why 1/2: in the theory's limit (d -> infinity with ln N / d fixed) the
//! concentration jumps from 0 to 1 at t_C, and any level would do; at finite d the
//! transition has a width and its midpoint is the natural, level-symmetric estimate. The
//! same crossing is also reported for the fraction of particles whose current argmax is
//! their final nearest training point (normalised the same way), a trajectory-based view of
//! the same event.

use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::metrics::stats::crossing_time;
use crate::metrics::PosteriorSummaryPoint;
use crate::model::dataset::Dataset;
use crate::model::schedule::VpSchedule;
use crate::run::driver::{self, NoProgress, SampleConfig};
use crate::run::measure::{MetricsSink, PosteriorPlan};
use clap::Args;
use std::path::PathBuf;

/// Options of `memodiff collapse`.
#[derive(Debug, Clone, Args)]
pub struct CollapseArgs {
    /// Training-set sizes N, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,16,64,256")]
    pub n: Vec<usize>,

    /// Dimensions d, comma-separated (1 to 4096; time grows as particles · N · d per step).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub d: Vec<usize>,

    /// Standard deviation sigma of the Gaussian the training points are drawn from.
    #[arg(long, default_value_t = 1.0)]
    pub sigma: f64,

    /// Particles per run (the posterior concentration is averaged over all of them).
    #[arg(long, default_value = "2000", value_parser = crate::cli::parse::parse_count)]
    pub particles: u64,

    /// Time points S of each run's grid; the concentration is recorded after every step.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,

    /// beta at t = 0.
    #[arg(long, default_value_t = 0.001)]
    pub beta_min: f64,

    /// beta at t = 1: the run starts at OU time B(1)/2 (about 5.0 with the default 20), which
    /// must be well above the collapse times studied.
    #[arg(long, default_value_t = 20.0)]
    pub beta_max: f64,

    /// Seed of the particles' noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Seed of the training sets (point i of the (N, d) set is Philox normals of (seed, i)).
    #[arg(long, default_value_t = 1)]
    pub data_seed: u64,

    /// Engine: cpu (default), gpu or reference.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,

    /// Output folder: collapse.csv, collapse_curves.csv, collapse.png.
    #[arg(long, default_value = "memodiff-collapse")]
    pub out: PathBuf,

    /// Write into an existing non-empty --out folder (files of the same names are replaced;
    /// others are left alone). Without it such a folder is refused.
    #[arg(long)]
    pub force: bool,
}

/// The prediction of Biroli et al.: `1/2 ln(1 + sigma^2 / (N^(2/d) - 1))`, infinite for
/// N = 1.
pub fn predicted_collapse_time(n: usize, d: usize, sigma: f64) -> f64 {
    let denom = (n as f64).powf(2.0 / d as f64) - 1.0;
    0.5 * (1.0 + sigma * sigma / denom).ln()
}

/// N points drawn from N(0, sigma^2 I_d) with data seed `seed` (see `crate::model::dataset::synthetic`).
pub fn gaussian_dataset(n: usize, d: usize, sigma: f64, seed: u64) -> Result<Dataset> {
    // The `gaussian:N:D:sigma` training set of `sample --dataset`, so a case can be rerun
    // (and looked at) with `memodiff sample --dataset gaussian:N:D:sigma --data-seed S`.
    Dataset::parse_seeded(&format!("gaussian:{n}:{d}:{sigma}"), seed)
}

/// One (N, d) case: prediction, measurements and the recorded curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CollapseCase {
    pub n: usize,
    pub d: usize,
    pub sigma: f64,
    pub predicted: f64,
    /// From the mean of max_i w_i (see the module documentation); None when no crossing.
    pub measured: Option<f64>,
    /// From the fraction whose argmax is their final nearest training point.
    pub measured_argmax: Option<f64>,
    /// OU time at the start of the run (the crossing must lie below it).
    pub start_ou_time: f64,
    /// The OU-time gap between the recorded steps around the crossing (resolution).
    pub resolution: Option<f64>,
    /// Whether the crossing lies before the last step and the recorded steps around it are
    /// at most half its value apart; otherwise the grid only bounds t_C and the case is not
    /// plotted (more --steps or a larger --beta-max resolve it).
    pub resolved: bool,
    pub memorized_fraction: f64,
    pub curve: Vec<PosteriorSummaryPoint>,
}

/// Normalised concentration `(v - 1/N) / (1 - 1/N)` (v itself for N = 1).
fn normalised(v: f64, n: usize) -> f64 {
    if n <= 1 {
        v
    } else {
        let floor = 1.0 / n as f64;
        (v - floor) / (1.0 - floor)
    }
}

/// Run one case and measure its collapse time.
pub fn measure(
    dataset: Dataset,
    sigma: f64,
    args: &CollapseArgs,
    engine: &mut dyn crate::engine::Engine,
) -> Result<CollapseCase> {
    let (n, d) = (dataset.len(), dataset.dim);
    let mut config = SampleConfig::new(dataset);
    config.particles = args.particles;
    config.time_points = args.steps;
    config.seed = args.seed;
    config.schedule = VpSchedule::new(args.beta_min, args.beta_max);
    let plan = PosteriorPlan {
        every: 1,
        particles: args.particles,
    };
    let mut sink = MetricsSink::new(&config, Some(plan))?;
    driver::run(&config, engine, &mut sink, &mut NoProgress)?;
    let summary = sink.counter.summary();
    let curve = summary.posterior.clone().expect("recorded");
    let times: Vec<f64> = curve.iter().map(|p| p.ou_time).collect();
    let conc: Vec<f64> = curve
        .iter()
        .map(|p| normalised(p.mean_max_weight, n))
        .collect();
    let agree: Vec<f64> = curve
        .iter()
        .map(|p| normalised(p.fraction_argmax_final, n))
        .collect();
    let measured = crossing_time(&times, &conc, 0.5);
    // Resolved: the crossing is not in the last interval (down to tau = 0, where max w is
    // 1 by definition) and the recorded steps around it are at most half its value apart.
    let resolved = conc.iter().position(|&v| v >= 0.5).is_some_and(|k| {
        k > 0 && k + 1 < conc.len() && measured.is_some_and(|m| times[k - 1] - times[k] <= 0.5 * m)
    });
    let resolution = conc
        .iter()
        .position(|&v| v >= 0.5)
        .and_then(|k| (k > 0).then(|| times[k - 1] - times[k]));
    Ok(CollapseCase {
        n,
        d,
        sigma,
        predicted: predicted_collapse_time(n, d, sigma),
        measured,
        measured_argmax: crossing_time(&times, &agree, 0.5),
        start_ou_time: times[0],
        resolution,
        resolved,
        memorized_fraction: summary.memorized_fraction,
        curve,
    })
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "nan".into(), |v| format!("{v:.6e}"))
}

/// `memodiff collapse`: run the grid, write the CSVs and the plot, print a table.
pub fn run(args: &CollapseArgs) -> Result<Vec<CollapseCase>> {
    if args.n.is_empty() || args.d.is_empty() || args.n.contains(&0) || args.d.contains(&0) {
        return Err(Error::invalid(
            "--n/--d",
            "give at least one N >= 1 and one d >= 1",
        ));
    }
    if !(args.sigma.is_finite() && args.sigma > 0.0) {
        return Err(Error::invalid("--sigma", "must be finite and > 0"));
    }
    if args.particles == 0 {
        return Err(Error::invalid("--particles", "must be at least 1"));
    }
    // Validate the schedule and grid once, before any work.
    let mut probe = SampleConfig::new(gaussian_dataset(1, 1, 1.0, 0)?);
    probe.time_points = args.steps;
    probe.schedule = VpSchedule::new(args.beta_min, args.beta_max);
    probe.particles = args.particles;
    probe.validate()?;
    crate::io::out_dir::check_out(&args.out, args.force)?;
    let mut engine = super::open_engine(args.backend)?;
    // The files arrive in --out together when every case is measured.
    let staging = super::begin_out(&args.out)?;
    let start = 0.5 * probe.schedule.integrated_beta(1.0);
    println!(
        "collapse time, OU time t = B(tau)/2 (start {start:.3}), sigma = {}, {} particles, {} steps, beta in [{}, {}]",
        args.sigma, args.particles, args.steps - 1, args.beta_min, args.beta_max
    );
    println!("|   N |  d | predicted t_C | measured (max w) | measured (argmax) | memorized |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut cases = Vec::new();
    for &d in &args.d {
        for &n in &args.n {
            let dataset = gaussian_dataset(n, d, args.sigma, args.data_seed)?;
            let case = measure(dataset, args.sigma, args, engine.as_mut())?;
            let last = case.curve[case.curve.len() - 2].ou_time;
            println!(
                "| {n} | {d} | {:.3e} | {} | {} | {:.3} |",
                case.predicted,
                match case.measured {
                    Some(v) if case.resolved => format!("{v:.3e}"),
                    Some(v) => format!("{v:.1e} (unresolved, last step at {last:.1e})"),
                    None => "none".into(),
                },
                case.measured_argmax
                    .map_or("none".into(), |v| format!("{v:.3e}")),
                case.memorized_fraction
            );
            cases.push(case);
        }
    }
    let mut csv = String::from(
        "n,d,sigma,predicted_t_c,measured_t_c,measured_t_c_argmax,resolved,start_ou_time,resolution,memorized_fraction\n",
    );
    let mut curves = String::from(
        "n,d,step,tau,ou_time,mean_max_weight,normalised_concentration,fraction_argmax_final\n",
    );
    for c in &cases {
        csv.push_str(&format!(
            "{},{},{},{:.6},{},{},{},{:.6},{},{:.6}\n",
            c.n,
            c.d,
            c.sigma,
            c.predicted,
            fmt(c.measured),
            fmt(c.measured_argmax),
            c.resolved,
            c.start_ou_time,
            fmt(c.resolution),
            c.memorized_fraction
        ));
        for p in &c.curve {
            curves.push_str(&format!(
                "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6}\n",
                c.n,
                c.d,
                p.step,
                p.tau,
                p.ou_time,
                p.mean_max_weight,
                normalised(p.mean_max_weight, c.n),
                p.fraction_argmax_final
            ));
        }
    }
    let write = |name: &str, text: &str| {
        crate::io::write_atomically(&staging.path(name), |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
    };
    write("collapse.csv", &csv)?;
    write("collapse_curves.csv", &curves)?;
    let mut dims: Vec<usize> = args.d.clone();
    dims.dedup();
    let series = dims
        .iter()
        .map(|&d| crate::plot::charts::Series {
            label: format!("d = {d}"),
            points: cases
                .iter()
                .filter(|c| c.d == d && c.predicted.is_finite() && c.resolved)
                .filter_map(|c| c.measured.map(|m| (c.predicted, m)))
                .collect(),
            intervals: None,
            lines: false,
        })
        .filter(|s| !s.points.is_empty())
        .collect::<Vec<_>>();
    let mut written = "collapse.csv, collapse_curves.csv";
    if series.is_empty() {
        println!("no case collapsed inside the run: no plot (raise --beta-max?)");
    } else {
        written = "collapse.csv, collapse_curves.csv, collapse.png";
        let chart = crate::plot::charts::Chart {
            title: format!("collapse time, Gaussian data (sigma = {})", args.sigma),
            x_label: "predicted t_C = ½ ln(1 + σ²/(N^(2/d) − 1))".into(),
            y_label: "measured t_C (OU time)".into(),
            log_x: true,
            log_y: true,
            diagonal: true,
            y_range: None,
            series,
        };
        crate::plot::charts::write_png(&chart, &staging.path("collapse.png"), 720, 560)?;
    }
    // A collapse.png of an earlier collapse run into this folder goes when this one
    // draws none.
    let previous = ["collapse.csv", "collapse_curves.csv", "collapse.png"].map(String::from);
    staging.commit("collapse.csv", &previous)?;
    println!("wrote {}: {written}", args.out.display());
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_by_hand() {
        // N = 16, d = 4: N^(1/2) - 1 = 3, t_C = ln(4/3) / 2.
        assert!((predicted_collapse_time(16, 4, 1.0) - 0.143_841_036_225_890_2).abs() < 1e-12);
        // N = 4, d = 2, sigma = 2: 1/2 ln(1 + 4/3).
        assert!((predicted_collapse_time(4, 2, 2.0) - 0.5 * (7.0f64 / 3.0).ln()).abs() < 1e-12);
        assert!(predicted_collapse_time(1, 3, 1.0).is_infinite());
    }

    #[test]
    fn crossing_by_hand() {
        // Along the reverse process (decreasing time), 0.1 -> 0.4 -> 0.8: the level 0.5 is
        // a quarter of the way from 0.4 (t = 0.3) to 0.8 (t = 0.2): t = 0.275.
        let t = crossing_time(&[0.5, 0.3, 0.2, 0.1], &[0.1, 0.4, 0.8, 1.0], 0.5).unwrap();
        assert!((t - 0.275).abs() < 1e-15);
        assert_eq!(crossing_time(&[0.5, 0.3], &[0.6, 0.9], 0.5), None);
        assert_eq!(crossing_time(&[0.5, 0.3], &[0.1, 0.2], 0.5), None);
        assert_eq!(normalised(0.25, 4), 0.0);
        assert_eq!(normalised(1.0, 4), 1.0);
    }

    #[test]
    fn gaussian_training_sets_are_deterministic_and_scaled() {
        let a = gaussian_dataset(2000, 2, 3.0, 1).unwrap();
        assert_eq!(a.points, gaussian_dataset(2000, 2, 3.0, 1).unwrap().points);
        let var = a.points.iter().map(|v| v * v).sum::<f64>() / a.points.len() as f64;
        assert!((var / 9.0 - 1.0).abs() < 0.1, "variance {var}");
    }
}
