//! Soak test (ignored by default): many small runs back to back in one process through the
//! library API, checking that host memory (VmRSS) and device memory do not grow.
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! MEMODIFF_SOAK_RUNS=5000 MEMODIFF_SOAK_PARTICLES=10000 cargo test --release --test soak -- --ignored --nocapture
//! ```

mod common;

use memodiff::testing::engine::Engine;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;
use std::time::Instant;

/// Allowed growth of the resident set between the end of the warm-up and the last run.
const RSS_BOUND: u64 = 16 << 20;
const WARMUP_RUNS: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident set size, from /proc/self/status (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One run of `particles` particles on `engine` with seed `k`, alternating two training
/// sets so that per-dataset state is rebuilt as well as reused.
fn one_run(name: &str, engine: &mut dyn Engine, datasets: &[Dataset; 2], particles: u64, k: usize) {
    let mut config = SampleConfig::new(datasets[k % 2].clone());
    config.particles = particles;
    config.seed = k as u64;
    let out = run_collect(&config, engine).unwrap_or_else(|e| panic!("{name} run {k}: {e}"));
    assert_eq!(out.samples.len(), particles as usize * 2);
    assert!(out.samples.iter().all(|v| v.is_finite()), "{name} run {k}");
}

fn datasets() -> [Dataset; 2] {
    [Dataset::circle(8).unwrap(), Dataset::circle(64).unwrap()]
}

/// `WARMUP_RUNS` then `runs` calls of `run(k)`; returns (RSS after the warm-up, RSS at the
/// end, seconds for the measured runs).
fn soak(name: &str, runs: usize, particles: u64, mut run: impl FnMut(usize)) -> (u64, u64, f64) {
    for k in 0..WARMUP_RUNS {
        run(k);
    }
    let before = rss_bytes().expect("VmRSS in /proc/self/status");
    let started = Instant::now();
    for k in WARMUP_RUNS..WARMUP_RUNS + runs {
        run(k);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap();
    println!(
        "{name}: {runs} runs of {particles} particles after {WARMUP_RUNS} warm-up runs in \
         {seconds:.1} s ({:.1} ms a run); VmRSS {:.1} MB -> {:.1} MB ({:+.2} MB)",
        1e3 * seconds / runs as f64,
        mb(before),
        mb(after),
        (after as f64 - before as f64) / (1 << 20) as f64
    );
    (before, after, seconds)
}

#[test]
#[ignore = "soak test: cargo test --release --test soak -- --ignored --nocapture"]
fn soak_cpu_engine() {
    let runs = env_usize("MEMODIFF_SOAK_RUNS", 1000);
    let particles = env_usize("MEMODIFF_SOAK_PARTICLES", 2000) as u64;
    let mut engine = memodiff::testing::engine::cpu::CpuEngine::new();
    let data = datasets();
    let (before, after, _) = soak("cpu", runs, particles, |k| {
        one_run("cpu", &mut engine, &data, particles, k)
    });
    assert!(
        after <= before + RSS_BOUND,
        "cpu: VmRSS grew from {:.1} MB to {:.1} MB over {runs} runs",
        mb(before),
        mb(after)
    );
}

#[test]
#[ignore = "soak test: cargo test --release --test soak -- --ignored --nocapture"]
fn soak_gpu_engine_reused() {
    let runs = env_usize("MEMODIFF_SOAK_RUNS", 1000);
    let particles = env_usize("MEMODIFF_SOAK_PARTICLES", 2000) as u64;
    let Some(mut engine) = common::gpu_engine("soak_gpu_engine_reused") else {
        return;
    };
    println!(
        "gpu adapter: {} ({:?})",
        engine.context().info.name,
        engine.context().info.backend
    );
    let data = datasets();
    // Device memory after each measured run, when the backend reports it.
    let mut device: Vec<(u64, u64, usize)> = Vec::new();
    let (before, after, _) = soak("gpu", runs, particles, |k| {
        one_run("gpu", &mut engine, &data, particles, k);
        if k >= WARMUP_RUNS {
            if let Some(r) = engine.context().device.generate_allocator_report() {
                device.push((
                    r.total_allocated_bytes,
                    r.total_reserved_bytes,
                    r.blocks.len(),
                ));
            }
        }
    });
    match (device.first(), device.last()) {
        (Some(first), Some(last)) => {
            println!(
                "gpu device memory (wgpu allocator report): allocated {:.2} MB -> {:.2} MB, \
                 reserved {:.2} MB -> {:.2} MB, blocks {} -> {}; max allocated {:.2} MB",
                mb(first.0),
                mb(last.0),
                mb(first.1),
                mb(last.1),
                first.2,
                last.2,
                mb(device.iter().map(|d| d.0).max().unwrap())
            );
            assert!(
                last.0 <= first.0 + (1 << 20) && last.1 <= first.1 + (16 << 20),
                "device memory grew: {first:?} -> {last:?}"
            );
        }
        _ => println!(
            "gpu device memory: generate_allocator_report() returned None on this backend; \
             not measured"
        ),
    }
    assert!(
        after <= before + RSS_BOUND,
        "gpu: VmRSS grew from {:.1} MB to {:.1} MB over {runs} runs",
        mb(before),
        mb(after)
    );
}
