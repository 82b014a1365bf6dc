//! The CPU engine: batch invariance and seeds (the GPU twin is tested in gpu.rs).

use memodiff::cpu::CpuEngine;
use memodiff::dataset::Dataset;
use memodiff::sampler::{run_collect, SampleConfig};

#[test]
fn cpu_results_do_not_depend_on_batch_size() {
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = 10_007;
    let whole = run_collect(&config, &mut CpuEngine::new()).unwrap();
    config.batch = Some(999);
    let batched = run_collect(&config, &mut CpuEngine::new()).unwrap();
    assert_eq!(whole.samples, batched.samples);
    assert_eq!(whole.initial, batched.initial);
    config.seed = 7;
    let other = run_collect(&config, &mut CpuEngine::new()).unwrap();
    let same = whole
        .samples
        .iter()
        .zip(&other.samples)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same < whole.samples.len() / 100,
        "{same} values unchanged by a new seed"
    );
}

#[test]
fn cpu_handles_dimensions_one_to_four() {
    for dim in 1..=4 {
        let points: Vec<f64> = (0..5 * dim)
            .map(|k| ((k * 37 % 11) as f64 - 5.0) / 5.0)
            .collect();
        let mut config = SampleConfig::new(Dataset::new(format!("d{dim}"), dim, points).unwrap());
        config.particles = 2_000;
        let out = run_collect(&config, &mut CpuEngine::new()).unwrap();
        assert_eq!(out.samples.len(), 2_000 * dim);
        assert!(out.samples.iter().all(|v| v.is_finite()));
        // Memorization in any D: every sample ends next to one of the 5 training points.
        let near = out
            .samples
            .chunks(dim)
            .filter(|x| {
                config.dataset.points.chunks(dim).any(|p| {
                    p.iter()
                        .zip(x.iter())
                        .map(|(a, b)| (a - *b as f64).powi(2))
                        .sum::<f64>()
                        < 0.04
                })
            })
            .count();
        assert!(
            near >= 1_980,
            "D = {dim}: only {near} of 2000 samples within 0.2 of a training point"
        );
    }
}
