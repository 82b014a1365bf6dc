//! `memodiff bench`: a matrix of workloads on each available backend, timed with warm-up
//! and the median of repeats, printed as a markdown table (and JSON for machines).

use crate::cpu::CpuEngine;
use crate::dataset::Dataset;
use crate::engine::{Backend, Engine};
use crate::error::Result;
use crate::gpu::{AdapterChoice, GpuEngine};
use crate::reference::ReferenceEngine;
use crate::sampler::{self, BatchSink, NoProgress, SampleConfig};
use crate::schedule::VpSchedule;
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub particles: Vec<u64>,
    pub training_points: Vec<usize>,
    pub backends: Vec<Backend>,
    pub time_points: usize,
    pub warmup: usize,
    pub repeats: usize,
    /// A cell whose estimated time (warm-up and repeats included) exceeds this is
    /// skipped, and says so. Estimates come from the cells already measured.
    pub max_cell_seconds: f64,
}

impl Default for BenchPlan {
    fn default() -> Self {
        Self {
            particles: vec![10_000, 100_000, 1_000_000],
            training_points: vec![8, 1024, 65536],
            backends: vec![Backend::Gpu, Backend::Cpu, Backend::Reference],
            time_points: 100,
            warmup: 1,
            repeats: 3,
            max_cell_seconds: 8.0,
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
    /// cpu engine's median over this backend's median, for the same workload.
    pub speedup_vs_cpu: Option<f64>,
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
fn open(backend: Backend) -> std::result::Result<Box<dyn Engine>, String> {
    match backend {
        Backend::Gpu => GpuEngine::new(AdapterChoice::Any)
            .map(|e| Box::new(e) as Box<dyn Engine>)
            .map_err(|e| e.to_string()),
        Backend::Cpu => Ok(Box::new(CpuEngine::new())),
        Backend::Reference => Ok(Box::new(ReferenceEngine::new(VpSchedule::default()))),
        Backend::Auto => Err("auto is not a backend to benchmark".into()),
    }
}

/// Run the plan; `report` is called with each row as it is finished.
pub fn run(plan: &BenchPlan, report: &mut dyn FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    let mut rows: Vec<BenchRow> = Vec::new();
    let steps = plan.time_points - 1;
    for &backend in &plan.backends {
        let mut engine = match open(backend) {
            Ok(engine) => engine,
            Err(why) => {
                let row = skipped(
                    backend,
                    "-".into(),
                    0,
                    0,
                    steps,
                    format!("unavailable: {why}"),
                );
                report(&row);
                rows.push(row);
                continue;
            }
        };
        let device = engine.device_name();
        for &n_train in &plan.training_points {
            let dataset = Dataset::circle(n_train)?;
            // Probe before committing to a cell: the cost per particle-step varies a lot
            // with N and with the backend. Two 2-step runs (1 particle, then the smallest
            // count) separate the fixed cost per run from the cost per particle-step.
            let probe_particles = plan
                .particles
                .iter()
                .copied()
                .min()
                .unwrap_or(1)
                .min(10_000);
            let mut probe_time = |particles: u64| -> Result<f64> {
                let mut probe = SampleConfig::new(dataset.clone());
                probe.particles = particles;
                probe.time_points = 3;
                let started = Instant::now();
                sampler::run(&probe, engine.as_mut(), &mut Discard, &mut NoProgress)?;
                Ok(started.elapsed().as_secs_f64())
            };
            let fixed = probe_time(1)?;
            let per_particle_step =
                (probe_time(probe_particles)? - fixed).max(0.0) / (probe_particles as f64 * 2.0);
            for &particles in &plan.particles {
                let work = particles as f64 * n_train as f64 * steps as f64;
                let runs = (plan.warmup + plan.repeats) as f64;
                let estimate = (fixed + per_particle_step * particles as f64 * steps as f64) * runs;
                if estimate > plan.max_cell_seconds {
                    let row = skipped(
                        backend,
                        device.clone(),
                        particles,
                        n_train,
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
                let mut config = SampleConfig::new(dataset.clone());
                config.particles = particles;
                config.time_points = plan.time_points;
                let mut times = Vec::new();
                let mut kernels = Vec::new();
                for run in 0..plan.warmup + plan.repeats {
                    let started = Instant::now();
                    sampler::run(&config, engine.as_mut(), &mut Discard, &mut NoProgress)?;
                    let elapsed = started.elapsed().as_secs_f64();
                    if run >= plan.warmup {
                        times.push(elapsed);
                        kernels.extend(engine.kernel_seconds());
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
                    dim: 2,
                    steps,
                    median_s: Some(med),
                    min_s: Some(min),
                    max_s: Some(max),
                    kernel_median_s: (!kernels.is_empty()).then(|| median(&mut kernels)),
                    particle_steps_per_s: Some(particles as f64 * steps as f64 / med),
                    evaluations_per_s: Some(work / med),
                    speedup_vs_cpu: None,
                    note: None,
                };
                report(&row);
                rows.push(row);
            }
        }
    }
    // Speed-ups against the cpu engine, where both ran the same workload.
    let cpu: Vec<(u64, usize, f64)> = rows
        .iter()
        .filter(|r| r.backend == "cpu")
        .filter_map(|r| r.median_s.map(|m| (r.particles, r.training_points, m)))
        .collect();
    for row in &mut rows {
        if let (Some(m), Some((_, _, c))) = (
            row.median_s,
            cpu.iter()
                .find(|(p, n, _)| *p == row.particles && *n == row.training_points),
        ) {
            row.speedup_vs_cpu = Some(c / m);
        }
    }
    Ok(rows)
}

fn skipped(
    backend: Backend,
    device: String,
    particles: u64,
    training_points: usize,
    steps: usize,
    note: String,
) -> BenchRow {
    BenchRow {
        backend: backend.name(),
        device,
        particles,
        training_points,
        dim: 2,
        steps,
        median_s: None,
        min_s: None,
        max_s: None,
        kernel_median_s: None,
        particle_steps_per_s: None,
        evaluations_per_s: None,
        speedup_vs_cpu: None,
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
        "| backend | device | P | N | median s | min–max s | GPU kernel s | particle-steps/s | evaluations/s | vs cpu |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.backend,
            r.device,
            r.particles,
            r.training_points,
            timing,
            match (r.min_s, r.max_s) {
                (Some(a), Some(b)) => format!("{a:.4}–{b:.4}"),
                _ => "—".into(),
            },
            opt(r.kernel_median_s, &|v| format!("{v:.4}")),
            opt(r.particle_steps_per_s, &si),
            opt(r.evaluations_per_s, &si),
            opt(r.speedup_vs_cpu, &|v| format!("{v:.2}×")),
        ));
    }
    out
}
