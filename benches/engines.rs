//! Regression benchmarks of the engines at a small size (criterion). The full matrix
//! with GPU timestamps is `memodiff bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use memodiff::testing::density::extent::Extent;
use memodiff::testing::density::heatmap::{DensityGrid, DEFAULT_BANDWIDTH};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::gpu::{AdapterChoice, GpuEngine};
use memodiff::testing::engine::Engine;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

fn config(particles: u64, n_train: usize) -> SampleConfig {
    let mut config = SampleConfig::new(Dataset::circle(n_train).unwrap());
    config.particles = particles;
    config
}

fn bench_engine(c: &mut Criterion, name: &str, engine: &mut dyn Engine) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for (particles, n_train) in [(10_000u64, 8usize), (2_000, 1024)] {
        let config = config(particles, n_train);
        group.throughput(Throughput::Elements(particles * 99));
        group.bench_function(format!("P={particles} N={n_train} 99 steps"), |b| {
            b.iter(|| run_collect(&config, engine).unwrap())
        });
    }
    group.finish();
}

/// The cpu engine for D > 4 (the fused attention kernel) on two of the workloads,
/// scaled down so a criterion sample stays short: throughput in particle x point pairs
/// per step (4·D flops each). With exact culling too: on these i.i.d. sets it culls
/// nothing, so the difference is its cost.
fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu attention");
    group.sample_size(10);
    for (dim, n_train, particles) in [(64usize, 2000usize, 500u64), (784, 2000, 100)] {
        let mut config =
            SampleConfig::new(Dataset::parse(&format!("gaussian:{n_train}:{dim}")).unwrap());
        config.particles = particles;
        group.throughput(Throughput::Elements(particles * n_train as u64 * 99));
        for cull in [false, true] {
            let culled = if cull { " culled" } else { "" };
            group.bench_function(
                format!("D={dim} N={n_train} P={particles} 99 steps{culled}"),
                |b| b.iter(|| run_collect(&config, &mut CpuEngine::with_culling(cull)).unwrap()),
            );
        }
    }
    group.finish();
}

fn engines(c: &mut Criterion) {
    bench_engine(c, "cpu", &mut CpuEngine::new());
    bench_attention(c);
    match GpuEngine::new(AdapterChoice::Any) {
        Ok(mut gpu) => bench_engine(c, "gpu", &mut gpu),
        Err(e) => eprintln!("gpu benchmarks not run: {e}"),
    }
}

/// Density-grid accumulation of 1M particles at 512x512 (default bandwidth): a Gaussian
/// cloud and a cloud collapsed onto 8 points, as `sample` draws them.
fn density_grid(c: &mut Criterion) {
    let mut group = c.benchmark_group("density_grid");
    group.sample_size(10);
    let mut state = 7u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut cloud = Vec::with_capacity(2_000_000);
    let mut collapsed = Vec::with_capacity(2_000_000);
    for _ in 0..1_000_000 {
        // Box–Muller for the Gaussian cloud; 8 circle points for the collapsed one.
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt() * 0.9;
        cloud.extend([
            r * (std::f32::consts::TAU * u2).cos(),
            r * (std::f32::consts::TAU * u2).sin(),
        ]);
        let a = (u2 * 8.0).floor() * std::f32::consts::TAU / 8.0;
        collapsed.extend([a.cos() + 0.01 * (u1 - 0.5), a.sin()]);
    }
    let extent = Extent::square(-3.0, 3.0).unwrap();
    group.throughput(Throughput::Elements(1_000_000));
    for (name, points) in [
        ("gaussian cloud", &cloud),
        ("collapsed on 8 points", &collapsed),
    ] {
        group.bench_function(format!("accumulate 1M, 512x512, {name}"), |b| {
            b.iter(|| {
                let mut grid = DensityGrid::new(extent, 512, 512, DEFAULT_BANDWIDTH).unwrap();
                grid.accumulate(points);
                grid.min_max()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engines, density_grid);
criterion_main!(benches);
