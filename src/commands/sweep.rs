//! `memodiff sweep`: the memorized fraction (ratio criterion d1/d2 < 1/3, with its 95%
//! bootstrap interval) as one parameter varies — training-set size N, dimension D, kde
//! width h or early-stopping time t-min — for one or more series of the other settings;
//! a CSV and a plot. Every point is a full sampler run through the library.

use crate::engine::{Backend, Engine};
use crate::error::{Error, Result};
use crate::model::dataset::Dataset;
use crate::model::schedule::{ScoreKind, VpSchedule};
use crate::run::driver::{self, NoProgress, SampleConfig};
use crate::run::measure::MetricsSink;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The parameter a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum SweepParam {
    /// Training-set size N (the dataset must depend on it: `gaussian` or a `%n` template).
    N,
    /// Dimension D (likewise `gaussian` or a `%d` template).
    D,
    /// Width h of the kde score (`--score kde:h`).
    H,
    /// Early-stopping time (`--t-min`).
    TMin,
}

impl SweepParam {
    fn name(self) -> &'static str {
        match self {
            SweepParam::N => "n",
            SweepParam::D => "d",
            SweepParam::H => "h",
            SweepParam::TMin => "t-min",
        }
    }
}

/// Options of `memodiff sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The parameter to vary.
    #[arg(long, value_enum)]
    pub param: SweepParam,

    /// Its values, comma-separated (whole numbers for n and d).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    pub values: Vec<f64>,

    /// Training-set sizes N; several give one series each (unless --param n).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub n: Vec<usize>,

    /// Dimensions D (1 to 4096); several give one series each (unless --param d).
    #[arg(long, value_delimiter = ',', default_value = "2")]
    pub d: Vec<usize>,

    /// Training set: `gaussian` (N points from N(0, I_D), seeded by --data-seed), or any
    /// --dataset of `sample` in which `%n` and `%d` are replaced by N and D (e.g.
    /// `circle:%n`).
    #[arg(long, default_value = "gaussian")]
    pub dataset: String,

    /// Score for every point (--param h overrides it with kde:h).
    #[arg(long, default_value = "empirical")]
    pub score: ScoreKind,

    /// Early-stopping time for every point (--param t-min overrides it).
    #[arg(long, default_value_t = 0.0)]
    pub t_min: f64,

    /// Particles per point.
    #[arg(long, default_value = "4000", value_parser = crate::cli::parse::parse_count)]
    pub particles: u64,

    /// Time points S of each run (S - 1 steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    #[arg(long, default_value_t = 0.001)]
    pub beta_min: f64,

    #[arg(long, default_value_t = 3.0)]
    pub beta_max: f64,

    /// Seed of the particles' noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Seed of the `gaussian` training sets.
    #[arg(long, default_value_t = 1)]
    pub data_seed: u64,

    /// Engine: cpu (default), gpu (nearest neighbours on the GPU too) or reference.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,

    /// Output folder: sweep.csv and sweep.png.
    #[arg(long, default_value = "memodiff-sweep")]
    pub out: PathBuf,

    /// Write into an existing non-empty --out folder (files of the same names are replaced;
    /// others are left alone). Without it such a folder is refused.
    #[arg(long)]
    pub force: bool,
}

/// One point of a sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepPoint {
    pub value: f64,
    pub n: usize,
    pub d: usize,
    pub score: ScoreKind,
    pub t_min: f64,
    pub memorized_fraction: f64,
    pub interval: [f64; 2],
    pub fraction_within_0_1: f64,
    pub distinct_memorized: u64,
    pub chi_square_p: Option<f64>,
}

/// The training set of one point.
pub fn dataset_for(spec: &str, n: usize, d: usize, data_seed: u64) -> Result<Dataset> {
    if spec == "gaussian" {
        return crate::commands::collapse::gaussian_dataset(n, d, 1.0, data_seed);
    }
    Dataset::parse(
        &spec
            .replace("%n", &n.to_string())
            .replace("%d", &d.to_string()),
    )
}

fn whole(param: SweepParam, v: f64) -> Result<usize> {
    if v.fract() != 0.0 || !(1.0..=1e9).contains(&v) {
        return Err(Error::invalid(
            "--values",
            format!(
                "{v} is not a whole number >= 1 (needed for --param {})",
                param.name()
            ),
        ));
    }
    Ok(v as usize)
}

/// Run every point (checked first: nothing is written unless all of them run).
#[cfg(test)]
pub fn run_points(args: &SweepArgs, engine: &mut dyn Engine) -> Result<Vec<SweepPoint>> {
    run_configs(sweep_configs(args)?, engine)
}

/// The configuration of every point, each validated.
fn sweep_configs(args: &SweepArgs) -> Result<Vec<(f64, SampleConfig)>> {
    if args.values.is_empty() {
        return Err(Error::invalid("--values", "give at least one value"));
    }
    let (ns, ds): (Vec<usize>, Vec<usize>) = match args.param {
        SweepParam::N => (vec![0], args.d.clone()),
        SweepParam::D => (args.n.clone(), vec![0]),
        _ => (args.n.clone(), args.d.clone()),
    };
    // Build and validate every configuration before running any.
    let mut configs = Vec::new();
    for &d0 in &ds {
        for &n0 in &ns {
            for &v in &args.values {
                let (mut n, mut d, mut score, mut t_min) = (n0, d0, args.score, args.t_min);
                match args.param {
                    SweepParam::N => n = whole(args.param, v)?,
                    SweepParam::D => d = whole(args.param, v)?,
                    SweepParam::H => score = ScoreKind::Kde { h: v },
                    SweepParam::TMin => t_min = v,
                }
                let mut config =
                    SampleConfig::new(dataset_for(&args.dataset, n, d, args.data_seed)?);
                config.particles = args.particles;
                config.time_points = args.steps;
                config.seed = args.seed;
                config.schedule = VpSchedule::new(args.beta_min, args.beta_max);
                config.score = score;
                config.t_min = t_min;
                config.validate()?;
                configs.push((v, config));
            }
        }
    }
    Ok(configs)
}

/// Run the points of `configs` on `engine`.
fn run_configs(
    configs: Vec<(f64, SampleConfig)>,
    engine: &mut dyn Engine,
) -> Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    for (value, config) in configs {
        let mut sink = MetricsSink::new(&config, None)?;
        if let Some(ctx) = engine.device_outputs().map(|d| d.context()) {
            sink.use_gpu(ctx)?;
        }
        driver::run(&config, engine, &mut sink, &mut NoProgress)?;
        let m = sink.counter.summary();
        points.push(SweepPoint {
            value,
            n: config.dataset.len(),
            d: config.dataset.dim,
            score: config.score,
            t_min: config.t_min,
            memorized_fraction: m.memorized_fraction,
            interval: m.memorized_interval_95,
            fraction_within_0_1: m.fraction_within_0_1,
            distinct_memorized: m.distinct_memorized,
            chi_square_p: m.occupancy_chi_square.map(|c| c.p_value),
        });
    }
    Ok(points)
}

/// `memodiff sweep`: run, print a table, write sweep.csv and sweep.png.
pub fn run(args: &SweepArgs) -> Result<Vec<SweepPoint>> {
    // Everything is checked before the folder is touched.
    let configs = sweep_configs(args)?;
    crate::io::out_dir::check_out(&args.out, args.force)?;
    let mut engine = super::open_engine(args.backend)?;
    // Both files arrive in --out together when every point is measured.
    let staging = super::begin_out(&args.out)?;
    let points = run_configs(configs, engine.as_mut())?;
    let label = |p: &SweepPoint| match args.param {
        SweepParam::N => format!("D = {}", p.d),
        SweepParam::D => format!("N = {}", p.n),
        _ if args.n.len() * args.d.len() > 1 => format!("N = {}, D = {}", p.n, p.d),
        _ => format!("N = {}, D = {}", p.n, p.d),
    };
    println!(
        "| {} | N | D | score | t-min | memorized (d1/d2 < 1/3) | 95% interval | within 0.1 | distinct | chi-square p |",
        args.param.name()
    );
    println!("|---:|---:|---:|---|---:|---:|---|---:|---:|---:|");
    let mut csv = String::from(
        "param,value,n,d,score,t_min,particles,memorized_fraction,ci_low,ci_high,fraction_within_0_1,distinct_memorized,chi_square_p\n",
    );
    for p in &points {
        let p_value = p.chi_square_p.map_or("nan".into(), |v| format!("{v:.4}"));
        println!(
            "| {} | {} | {} | {} | {} | {:.4} | [{:.4}, {:.4}] | {:.4} | {} | {p_value} |",
            p.value,
            p.n,
            p.d,
            p.score.label(),
            p.t_min,
            p.memorized_fraction,
            p.interval[0],
            p.interval[1],
            p.fraction_within_0_1,
            p.distinct_memorized
        );
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{},{p_value}\n",
            args.param.name(),
            p.value,
            p.n,
            p.d,
            p.score.label(),
            p.t_min,
            args.particles,
            p.memorized_fraction,
            p.interval[0],
            p.interval[1],
            p.fraction_within_0_1,
            p.distinct_memorized
        ));
    }
    let mut series: Vec<crate::plot::charts::Series> = Vec::new();
    for p in &points {
        let name = label(p);
        let s = match series.iter_mut().position(|s| s.label == name) {
            Some(k) => &mut series[k],
            None => {
                series.push(crate::plot::charts::Series {
                    label: name,
                    points: Vec::new(),
                    intervals: Some(Vec::new()),
                    lines: true,
                });
                series.last_mut().expect("pushed")
            }
        };
        s.points.push((p.value, p.memorized_fraction));
        if let Some(iv) = &mut s.intervals {
            iv.push((p.interval[0], p.interval[1]));
        }
    }
    let positive = args.values.iter().all(|&v| v > 0.0);
    let spread = args.values.iter().cloned().fold(0.0, f64::max)
        / args.values.iter().cloned().fold(f64::INFINITY, f64::min);
    let extra = match args.param {
        SweepParam::H | SweepParam::N | SweepParam::D => format!(
            "{}{}",
            match args.score {
                ScoreKind::Empirical if args.param != SweepParam::H => "empirical score".into(),
                s if args.param != SweepParam::H => s.label(),
                _ => "kde score".into(),
            },
            if args.t_min > 0.0 {
                format!(", t-min {}", args.t_min)
            } else {
                String::new()
            }
        ),
        SweepParam::TMin => args.score.label(),
    };
    let chart = crate::plot::charts::Chart {
        title: format!(
            "memorized fraction vs {} ({extra}, {} samples)",
            args.param.name(),
            args.particles
        ),
        x_label: match args.param {
            SweepParam::N => "training-set size N".into(),
            SweepParam::D => "dimension D".into(),
            SweepParam::H => "kde width h".into(),
            SweepParam::TMin => "t-min (forward time where sampling stops)".into(),
        },
        y_label: "memorized fraction (d1/d2 < 1/3), 95% interval".into(),
        log_x: positive && (args.param == SweepParam::N || spread >= 20.0),
        log_y: false,
        diagonal: false,
        y_range: Some((-0.02, 1.02)),
        series,
    };
    crate::io::write_atomically(&staging.path("sweep.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    crate::plot::charts::write_png(&chart, &staging.path("sweep.png"), 720, 520)?;
    staging.commit("sweep.csv", &[])?;
    println!("wrote {}: sweep.csv, sweep.png", args.out.display());
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(param: SweepParam, values: &[f64]) -> SweepArgs {
        SweepArgs {
            param,
            values: values.to_vec(),
            n: vec![8],
            d: vec![2],
            dataset: "gaussian".into(),
            score: ScoreKind::Empirical,
            t_min: 0.0,
            particles: 500,
            steps: 50,
            beta_min: 0.001,
            beta_max: 3.0,
            seed: 0,
            data_seed: 1,
            backend: Backend::Cpu,
            out: PathBuf::new(),
            force: false,
        }
    }

    #[test]
    fn sweeps_run_each_point_and_check_first() {
        let mut engine = crate::engine::cpu::CpuEngine::new();
        // kde width: wider smoothing memorizes less.
        let points = run_points(&args(SweepParam::H, &[0.0, 1.0]), &mut engine).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].score, ScoreKind::Kde { h: 0.0 });
        assert!(
            points[1].memorized_fraction < points[0].memorized_fraction - 0.2,
            "{points:?}"
        );
        // N with two series of D.
        let mut a = args(SweepParam::N, &[2.0, 8.0]);
        a.d = vec![1, 2];
        let points = run_points(&a, &mut engine).unwrap();
        let shape: Vec<(usize, usize)> = points.iter().map(|p| (p.n, p.d)).collect();
        assert_eq!(shape, vec![(2, 1), (8, 1), (2, 2), (8, 2)]);
        // Templates of `sample`'s datasets.
        let mut c = args(SweepParam::N, &[3.0]);
        c.dataset = "circle:%n".into();
        assert_eq!(run_points(&c, &mut engine).unwrap()[0].n, 3);
        // Bad values are refused before anything runs.
        assert!(run_points(&args(SweepParam::N, &[2.5]), &mut engine).is_err());
        assert!(run_points(&args(SweepParam::TMin, &[0.1, 2.0]), &mut engine).is_err());
        assert!(run_points(&args(SweepParam::H, &[]), &mut engine).is_err());
    }
}
