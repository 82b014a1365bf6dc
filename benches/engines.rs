//! Regression benchmarks of the engines at a small size (criterion). The full matrix
//! with GPU timestamps is `memodiff bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use memodiff::cpu::CpuEngine;
use memodiff::dataset::Dataset;
use memodiff::engine::Engine;
use memodiff::gpu::{AdapterChoice, GpuEngine};
use memodiff::sampler::{run_collect, SampleConfig};

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

fn engines(c: &mut Criterion) {
    bench_engine(c, "cpu", &mut CpuEngine::new());
    match GpuEngine::new(AdapterChoice::Any) {
        Ok(mut gpu) => bench_engine(c, "gpu", &mut gpu),
        Err(e) => eprintln!("gpu benchmarks not run: {e}"),
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
