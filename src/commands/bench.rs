//! `memodiff bench`: a matrix of workloads on each available backend, timed with warm-up
//! and the median of repeats, printed as a markdown table (and JSON for machines).

use crate::cli::parse::{parse_count, parse_count_usize};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Backend, Engine};
use crate::error::Result;
use crate::model::dataset::Dataset;
use crate::run::driver::{self, BatchSink, NoProgress, SampleConfig};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// One workload: `particles` particles against `training_points` training points in
/// `dim` dimensions (circle:N for D = 2, gaussian:N:D otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BenchCell {
    pub particles: u64,
    pub training_points: usize,
    pub dim: usize,
}

impl BenchCell {
    /// The training set of this cell: the circle in D = 2 (as the benchmark always
    /// measured), a Gaussian cloud (data seed 0) in any other dimension.
    pub fn dataset(&self) -> Result<Dataset> {
        if self.dim == 2 {
            Dataset::circle(self.training_points)
        } else {
            Dataset::parse(&format!("gaussian:{}:{}", self.training_points, self.dim))
        }
    }

    /// Every combination of the three axes, in the order the benchmark runs them.
    pub fn grid(particles: &[u64], training_points: &[usize], dims: &[usize]) -> Vec<Self> {
        let mut cells = Vec::new();
        for &dim in dims {
            for &training_points in training_points {
                for &particles in particles {
                    cells.push(Self {
                        particles,
                        training_points,
                        dim,
                    });
                }
            }
        }
        cells
    }
}

impl std::str::FromStr for BenchCell {
    type Err = String;
    /// `P:N:D` (counts may be written 1e6).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let count = |v: &str| -> std::result::Result<u64, String> {
            let value: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}' in cell '{text}' is not a number"))?;
            if value < 1.0 || value.fract() != 0.0 || value > 1e15 {
                return Err(format!(
                    "'{v}' in cell '{text}' is not a positive whole count"
                ));
            }
            Ok(value as u64)
        };
        match parts.as_slice() {
            [p, n, d] => Ok(Self {
                particles: count(p)?,
                training_points: count(n)? as usize,
                dim: count(d)? as usize,
            }),
            _ => Err(format!(
                "cell '{text}' is not of the form P:N:D (e.g. 1e6:1024:2)"
            )),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// The workloads, in order; cells sharing (N, D) share one probe.
    pub cells: Vec<BenchCell>,
    pub backends: Vec<Backend>,
    pub time_points: usize,
    pub warmup: usize,
    pub repeats: usize,
    /// A cell whose estimated time (warm-up and repeats included) exceeds this is
    /// skipped, and says so. Estimates come from the cells already measured.
    pub max_cell_seconds: f64,
    /// The cpu engine with exact culling (`CpuEngine::with_culling`); each row reports
    /// the fraction of pairs it culled.
    pub cull: bool,
}

impl Default for BenchPlan {
    fn default() -> Self {
        Self {
            cells: BenchCell::grid(&[10_000, 100_000, 1_000_000], &[8, 1024, 65536], &[2]),
            backends: vec![Backend::Gpu, Backend::Cpu, Backend::Reference],
            time_points: 100,
            warmup: 1,
            repeats: 3,
            max_cell_seconds: 8.0,
            cull: false,
        }
    }
}

/// One measured (or skipped) workload.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub backend: &'static str,
    pub device: String,
    pub particles: u64,
    pub training_points: usize,
    pub dim: usize,
    pub steps: usize,
    /// None when the cell was skipped (see `note`).
    pub median_s: Option<f64>,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Median GPU time of the steps from timestamp queries, where available.
    pub kernel_median_s: Option<f64>,
    pub particle_steps_per_s: Option<f64>,
    pub evaluations_per_s: Option<f64>,
    /// Counting 4·D flops per particle × training-point evaluation (difference, square and
    /// accumulate per coordinate for the logit, multiply-add for the weighted mean): the
    /// work of the score as a pair of GEMMs, for comparison with a GEMM peak.
    pub gflops: Option<f64>,
    /// cpu engine's median over this backend's median, for the same workload.
    pub speedup_vs_cpu: Option<f64>,
    /// The fraction of (particle, training point) pairs exact culling skipped in the
    /// timed runs, measured by the engine, where it culls (`gflops` counts them all).
    pub culled_fraction: Option<f64>,
    pub note: Option<String>,
}

/// Discards the batches: the benchmark measures the sampler alone.
struct Discard;
impl BatchSink for Discard {
    fn consume(&mut self, _: u64, _: &[f32], samples: &[f32]) -> Result<()> {
        std::hint::black_box(samples);
        Ok(())
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Open the engine of one backend, or say why it is unavailable.
fn open(backend: Backend, cull: bool) -> std::result::Result<Box<dyn Engine>, String> {
    match backend {
        Backend::Auto => Err("auto is not a backend to benchmark".into()),
        Backend::Cpu => Ok(Box::new(CpuEngine::with_culling(cull))),
        _ => crate::engine::open_backend(backend, None)
            .map(|(engine, _)| engine)
            .map_err(|e| e.to_string()),
    }
}

/// Run the plan; `report` is called with each row as it is finished.
pub fn run_matrix(plan: &BenchPlan, report: &mut dyn FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    let mut rows: Vec<BenchRow> = Vec::new();
    let steps = plan.time_points - 1;
    for &backend in &plan.backends {
        let mut engine = match open(backend, plan.cull) {
            Ok(engine) => engine,
            Err(why) => {
                let none = BenchCell {
                    particles: 0,
                    training_points: 0,
                    dim: 0,
                };
                let row = skipped(
                    backend,
                    "-".into(),
                    none,
                    steps,
                    format!("unavailable: {why}"),
                );
                report(&row);
                rows.push(row);
                continue;
            }
        };
        let device = engine.device_name();
        let mut probed: Vec<((usize, usize), (f64, f64))> = Vec::new();
        for &cell in &plan.cells {
            let dataset = cell.dataset()?;
            let (n_train, dim) = (cell.training_points, cell.dim);
            // Probe before committing to a cell: the cost per particle-step varies a lot
            // with N, D and the backend. Two 2-step runs (1 particle, then the smallest
            // count of the cells with this N and D) separate the fixed cost per run from
            // the cost per particle-step.
            let (fixed, per_particle_step) = match probed.iter().find(|(k, _)| *k == (n_train, dim))
            {
                Some((_, cost)) => *cost,
                None => {
                    let probe_particles = plan
                        .cells
                        .iter()
                        .filter(|c| (c.training_points, c.dim) == (n_train, dim))
                        .map(|c| c.particles)
                        .min()
                        .unwrap_or(1)
                        .min(10_000);
                    let mut probe_time = |particles: u64| -> Result<f64> {
                        let mut probe = SampleConfig::new(dataset.clone());
                        probe.particles = particles;
                        probe.time_points = 3;
                        let started = Instant::now();
                        driver::run(&probe, engine.as_mut(), &mut Discard, &mut NoProgress)?;
                        Ok(started.elapsed().as_secs_f64())
                    };
                    let fixed = probe_time(1)?;
                    let per = (probe_time(probe_particles)? - fixed).max(0.0)
                        / (probe_particles as f64 * 2.0);
                    probed.push(((n_train, dim), (fixed, per)));
                    (fixed, per)
                }
            };
            let particles = cell.particles;
            let work = particles as f64 * n_train as f64 * steps as f64;
            let runs = (plan.warmup + plan.repeats) as f64;
            let estimate = (fixed + per_particle_step * particles as f64 * steps as f64) * runs;
            if estimate > plan.max_cell_seconds {
                let row = skipped(
                    backend,
                    device.clone(),
                    cell,
                    steps,
                    format!(
                        "skipped: ~{estimate:.0} s estimated, over the {} s budget (--max-cell-seconds)",
                        plan.max_cell_seconds
                    ),
                );
                report(&row);
                rows.push(row);
                continue;
            }
            let mut config = SampleConfig::new(dataset);
            config.particles = particles;
            config.time_points = plan.time_points;
            let mut times = Vec::new();
            let mut kernels = Vec::new();
            let mut timed_pairs = (0u64, 0u64);
            for run in 0..plan.warmup + plan.repeats {
                let before = engine.pair_counts().unwrap_or((0, 0));
                let started = Instant::now();
                driver::run(&config, engine.as_mut(), &mut Discard, &mut NoProgress)?;
                let elapsed = started.elapsed().as_secs_f64();
                if run >= plan.warmup {
                    times.push(elapsed);
                    kernels.extend(engine.kernel_seconds());
                    if let Some((pairs, culled)) = engine.pair_counts() {
                        timed_pairs.0 += pairs - before.0;
                        timed_pairs.1 += culled - before.1;
                    }
                }
            }
            let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = times.iter().cloned().fold(0.0, f64::max);
            let med = median(&mut times);
            let row = BenchRow {
                backend: backend.name(),
                device: device.clone(),
                particles,
                training_points: n_train,
                dim,
                steps,
                median_s: Some(med),
                min_s: Some(min),
                max_s: Some(max),
                kernel_median_s: (!kernels.is_empty()).then(|| median(&mut kernels)),
                particle_steps_per_s: Some(particles as f64 * steps as f64 / med),
                evaluations_per_s: Some(work / med),
                gflops: Some(4.0 * dim as f64 * work / med / 1e9),
                speedup_vs_cpu: None,
                culled_fraction: (timed_pairs.0 > 0)
                    .then(|| timed_pairs.1 as f64 / timed_pairs.0 as f64),
                note: None,
            };
            report(&row);
            rows.push(row);
        }
    }
    // Speed-ups against the cpu engine, where both ran the same workload.
    let cpu: Vec<(u64, usize, usize, f64)> = rows
        .iter()
        .filter(|r| r.backend == "cpu")
        .filter_map(|r| {
            r.median_s
                .map(|m| (r.particles, r.training_points, r.dim, m))
        })
        .collect();
    for row in &mut rows {
        if let (Some(m), Some((_, _, _, c))) = (
            row.median_s,
            cpu.iter()
                .find(|(p, n, d, _)| (*p, *n, *d) == (row.particles, row.training_points, row.dim)),
        ) {
            row.speedup_vs_cpu = Some(c / m);
        }
    }
    Ok(rows)
}

fn skipped(
    backend: Backend,
    device: String,
    cell: BenchCell,
    steps: usize,
    note: String,
) -> BenchRow {
    BenchRow {
        backend: backend.name(),
        device,
        particles: cell.particles,
        training_points: cell.training_points,
        dim: cell.dim,
        steps,
        median_s: None,
        min_s: None,
        max_s: None,
        kernel_median_s: None,
        particle_steps_per_s: None,
        evaluations_per_s: None,
        gflops: None,
        speedup_vs_cpu: None,
        culled_fraction: None,
        note: Some(note),
    }
}

fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2} G", v / 1e9),
        v if v >= 1e6 => format!("{:.1} M", v / 1e6),
        v if v >= 1e3 => format!("{:.1} k", v / 1e3),
        v => format!("{v:.1}"),
    }
}

/// The markdown table of `rows`.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| backend | device | P | N | D | median s | min–max s | GPU kernel s | particle-steps/s | evaluations/s | GFLOP/s | vs cpu | culled |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let opt =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "—".into());
        let timing = match (r.median_s, &r.note) {
            (Some(m), _) => format!("{m:.4}"),
            (None, Some(note)) => note.clone(),
            (None, None) => "—".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.backend,
            r.device,
            r.particles,
            r.training_points,
            r.dim,
            timing,
            match (r.min_s, r.max_s) {
                (Some(a), Some(b)) => format!("{a:.4}–{b:.4}"),
                _ => "—".into(),
            },
            opt(r.kernel_median_s, &|v| format!("{v:.4}")),
            opt(r.particle_steps_per_s, &si),
            opt(r.evaluations_per_s, &si),
            opt(r.gflops, &|v| format!("{v:.1}")),
            opt(r.speedup_vs_cpu, &|v| format!("{v:.2}×")),
            opt(r.culled_fraction, &|v| format!("{:.1}%", 100.0 * v)),
        ));
    }
    out
}

/// The machine a benchmark ran on, for its JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: Option<String>,
    pub os: &'static str,
    pub arch: &'static str,
    /// `model name` of /proc/cpuinfo, where there is one.
    pub cpu_model: Option<String>,
    /// Threads this process may use (`available_parallelism`).
    pub cpu_threads: usize,
    pub memodiff_version: &'static str,
}

impl Machine {
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            hostname: read("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu_model: read("/proc/cpuinfo").and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            }),
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memodiff_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// `memodiff bench --json`: every cell, the machine and the adapters, in one document.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    /// The adapters wgpu offers (`memodiff devices`); the gpu backend opens the first
    /// acceptable one, named in each row's `device`.
    pub adapters: Vec<crate::engine::gpu::context::AdapterSummary>,
    pub time_points: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub max_cell_seconds: f64,
    pub cull: bool,
    pub rows: Vec<BenchRow>,
}

/// Options of `memodiff bench`. Each cell runs `--warmup` untimed and `--repeats` timed
/// runs of the sampler (initial noise, all steps, readback; no file output) on the
/// training set circle:N in D = 2, gaussian:N:D in other dimensions.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Particle counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1e4,1e5,1e6", value_parser = parse_count)]
    pub particles: Vec<u64>,

    /// Training-set sizes N, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,1024,65536", value_parser = parse_count_usize)]
    pub training_points: Vec<usize>,

    /// Dimensions D, comma-separated: every (P, N) is run in each.
    #[arg(long, value_delimiter = ',', default_value = "2", value_parser = parse_count_usize)]
    pub dims: Vec<usize>,

    /// Explicit cells P:N:D, comma-separated (e.g. 1e6:1024:2,1000:10000:784), instead of
    /// the grid of --particles x --training-points x --dims.
    #[arg(long, value_delimiter = ',')]
    pub cells: Vec<crate::commands::bench::BenchCell>,

    /// Backends to measure, comma-separated (unavailable ones are reported as such).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "gpu,cpu,reference"
    )]
    pub backends: Vec<Backend>,

    /// Number of time points S (S-1 steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Untimed runs before the timed ones (pipeline compilation, caches, thread pools).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,

    /// Timed runs per cell; the table shows their median, min and max.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,

    /// Skip a cell whose estimated time (from the cells measured before it, warm-up and
    /// repeats included) exceeds this many seconds. The table says which were skipped.
    #[arg(long, default_value_t = 8.0)]
    pub max_cell_seconds: f64,

    /// Run the cpu engine with exact culling (D > 4: it skips the training points whose
    /// weights are provably below 2^-25 / N of the best; off by default: where measured
    /// it cost more than it saved). The table's `culled` column gives the fraction of
    /// pairs skipped.
    #[arg(long)]
    pub cull: bool,

    /// Also write one JSON document (every cell, the machine, the adapters) to this file;
    /// `-` writes it to standard output (the table then goes to standard error).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `memodiff bench`: run the matrix, print a markdown table, optionally write JSON.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.repeats == 0 {
        return Err(crate::Error::invalid("--repeats", "must be at least 1"));
    }
    if args.steps < 2 {
        return Err(crate::Error::invalid("--steps", "must be at least 2"));
    }
    if args.particles.contains(&0) || args.training_points.contains(&0) || args.dims.contains(&0) {
        return Err(crate::Error::invalid(
            "--particles/--training-points/--dims",
            "must be at least 1",
        ));
    }
    if args.max_cell_seconds.is_nan() || args.max_cell_seconds < 0.0 {
        return Err(crate::Error::invalid(
            "--max-cell-seconds",
            "must be a number of seconds, 0 or more",
        ));
    }
    if args.backends.contains(&Backend::Auto) {
        return Err(crate::Error::invalid(
            "--backends",
            "name the backends to measure: gpu, cpu, reference",
        ));
    }
    let cells = if args.cells.is_empty() {
        crate::commands::bench::BenchCell::grid(&args.particles, &args.training_points, &args.dims)
    } else {
        args.cells.clone()
    };
    let plan = crate::commands::bench::BenchPlan {
        cells,
        backends: args.backends.clone(),
        time_points: args.steps,
        warmup: args.warmup,
        repeats: args.repeats,
        max_cell_seconds: args.max_cell_seconds,
        cull: args.cull,
    };
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let rows = crate::commands::bench::run_matrix(&plan, &mut |row| {
        if interactive {
            let what = match (row.median_s, &row.note) {
                (Some(m), _) => format!("{m:.4} s"),
                (None, Some(note)) => note.clone(),
                _ => String::new(),
            };
            eprintln!(
                "{} P={} N={} D={}: {what}",
                row.backend, row.particles, row.training_points, row.dim
            );
        }
    })?;
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let table = crate::commands::bench::markdown(&rows);
    if json_to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    if let Some(path) = &args.json {
        let report = crate::commands::bench::BenchReport {
            machine: crate::commands::bench::Machine::detect(),
            adapters: crate::engine::gpu::context::describe_adapters(),
            time_points: plan.time_points,
            warmup: plan.warmup,
            repeats: plan.repeats,
            max_cell_seconds: plan.max_cell_seconds,
            cull: plan.cull,
            rows,
        };
        if json_to_stdout {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("the report serializes")
            );
        } else {
            crate::io::write_json(path, &report)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_parse_as_p_n_d_and_refuse_nonsense() {
        let cell: BenchCell = "1e6:1024:2".parse().unwrap();
        assert_eq!(
            cell,
            BenchCell {
                particles: 1_000_000,
                training_points: 1024,
                dim: 2
            }
        );
        for bad in [
            "1e6:1024", "0:8:2", "10:8:-2", "10:8:2.5", "a:8:2", "1:2:3:4",
        ] {
            assert!(bad.parse::<BenchCell>().is_err(), "{bad} parsed");
        }
        let grid = BenchCell::grid(&[1, 2], &[8], &[2, 64]);
        assert_eq!(grid.len(), 4);
        assert_eq!(grid[3].dim, 64);
        assert_eq!(grid[0].dataset().unwrap().dim, 2);
        assert_eq!(grid[3].dataset().unwrap().dim, 64);
    }

    #[test]
    fn a_cell_reports_its_dimension_and_gflops() {
        let plan = BenchPlan {
            cells: vec![BenchCell {
                particles: 40,
                training_points: 30,
                dim: 64,
            }],
            backends: vec![Backend::Cpu],
            time_points: 3,
            warmup: 0,
            repeats: 1,
            max_cell_seconds: 60.0,
            cull: false,
        };
        let rows = run_matrix(&plan, &mut |_| {}).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.dim, row.particles, row.training_points), (64, 40, 30));
        let median = row.median_s.unwrap();
        let expected = 4.0 * 64.0 * 40.0 * 30.0 * 2.0 / median / 1e9;
        assert!((row.gflops.unwrap() - expected).abs() <= 1e-9 * expected);
    }

    #[test]
    fn negative_or_nan_budgets_are_refused() {
        use clap::Parser;
        for budget in ["-1", "NaN"] {
            let cli = crate::commands::Cli::try_parse_from([
                "memodiff",
                "bench",
                "--backends",
                "cpu",
                &format!("--max-cell-seconds={budget}"),
            ])
            .unwrap();
            let err = crate::commands::run(cli).expect_err(budget).to_string();
            assert!(err.contains("--max-cell-seconds"), "{err}");
        }
    }
}
