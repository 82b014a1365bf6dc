//! The CPU engine: batch invariance and seeds (the GPU twin is tested in gpu.rs).

mod common;

use common::scattered;
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

#[test]
fn cpu_engine_matches_reference_with_a_million_training_points() {
    use memodiff::reference::ReferenceEngine;
    let mut config = SampleConfig::new(scattered(1_000_000, 2, 3));
    config.particles = 40;
    config.time_points = 4;
    let fast = run_collect(&config, &mut CpuEngine::new()).unwrap();
    let reference = run_collect(&config, &mut ReferenceEngine::new(config.schedule)).unwrap();
    for (i, (a, b)) in fast
        .samples
        .chunks(2)
        .zip(reference.samples.chunks(2))
        .enumerate()
    {
        let d = (a[0] - b[0]).abs().max((a[1] - b[1]).abs());
        assert!(d <= 1e-3, "particle {i}: cpu {a:?} vs reference {b:?}");
    }
}

#[test]
fn cpu_engine_matches_reference_at_tile_boundaries_and_dimensions() {
    use memodiff::reference::ReferenceEngine;
    // N = 1, below a tile, around the AVX-512 tile (64) and the AVX2 tile (128), around
    // the shaders' block (256), and several tiles with a ragged end; D = 1, 2, 3.
    for (n, dim) in [
        (1, 1),
        (17, 3),
        (63, 2),
        (65, 1),
        (129, 2),
        (257, 3),
        (1000, 2),
    ] {
        let mut config = SampleConfig::new(scattered(n, dim, 11 + n as u64));
        config.particles = 2_000;
        let fast = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let reference = run_collect(&config, &mut ReferenceEngine::new(config.schedule)).unwrap();
        assert!(fast.samples.iter().all(|v| v.is_finite()));
        let close = fast
            .samples
            .chunks(dim)
            .zip(reference.samples.chunks(dim))
            .filter(|(a, b)| a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= 1e-3))
            .count();
        assert!(
            close >= 1_998,
            "N = {n}, D = {dim}: only {close} of 2000 agree within 1e-3"
        );
    }
}

#[test]
fn cpu_batch_in_step_ranges_is_bit_identical_to_one_go() {
    use memodiff::engine::{Engine, Problem, NEVER};
    use memodiff::schedule::{reverse_steps, VpSchedule};
    let dataset = Dataset::circle(100).unwrap();
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let problem = Problem {
        dataset: &dataset,
        steps: &steps,
        seed: 11,
        initial_std: schedule.sigma2(1.0).sqrt(),
        sampler: Default::default(),
    };
    let (n, first) = (3_001, 12_345);
    let mut engine = CpuEngine::new();
    let (mut init_a, mut out_a) = (vec![0f32; 2 * n], vec![0f32; 2 * n]);
    engine
        .run_batch(&problem, first, &mut init_a, &mut out_a, &mut |_| {})
        .unwrap();
    // Initial noise alone (an empty range), then uneven ranges from the saved state.
    let (mut init_b, mut state) = (vec![0f32; 2 * n], vec![0f32; 2 * n]);
    let mut run = |initial: Option<&mut [f32]>, state: &mut [f32], range| {
        engine
            .advance_batch(&problem, first, initial, state, range, &NEVER, &mut |_| {})
            .unwrap()
    };
    run(Some(&mut init_b), &mut state, 0..0);
    assert_eq!(init_a, init_b);
    assert_eq!(
        state, init_b,
        "after no step the state is the initial noise"
    );
    for range in [0..1, 1..37, 37..38, 38..99] {
        run(None, &mut state, range);
    }
    assert_eq!(out_a, state, "segmented run differs from the one-go run");
    // Starting from the noise with a first range, then the rest.
    let mut init_c = vec![0f32; 2 * n];
    run(Some(&mut init_c), &mut state, 0..50);
    run(None, &mut state, 50..99);
    assert_eq!(out_a, state);
}

#[test]
fn cpu_cancelled_batch_returns_interrupted() {
    use memodiff::engine::{Engine, Problem};
    use memodiff::schedule::{reverse_steps, VpSchedule};
    let dataset = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let problem = Problem {
        dataset: &dataset,
        steps: &steps,
        seed: 0,
        initial_std: schedule.sigma2(1.0).sqrt(),
        sampler: Default::default(),
    };
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let (mut init, mut out) = (vec![0f32; 2_000], vec![0f32; 2_000]);
    let result = CpuEngine::new().advance_batch(
        &problem,
        0,
        Some(&mut init),
        &mut out,
        0..99,
        &cancel,
        &mut |_| {},
    );
    assert!(
        matches!(result, Err(memodiff::Error::Interrupted(_))),
        "{result:?}"
    );
}

/// Every path of the CPU engine (SIMD D <= 4, general-D Euler–Maruyama and Heun) and the
/// reference engine stop on a set cancel flag, from the initial noise or a saved state.
#[test]
fn every_cpu_path_returns_interrupted_when_cancelled() {
    use memodiff::engine::{Engine, Problem, SamplerKind};
    use memodiff::reference::ReferenceEngine;
    use memodiff::schedule::{reverse_steps, VpSchedule};
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 20);
    for dim in [2, 8] {
        let dataset = scattered(16, dim, 3);
        for sampler in [SamplerKind::Em, SamplerKind::Heun] {
            let problem = Problem {
                dataset: &dataset,
                steps: &steps,
                seed: 0,
                initial_std: schedule.sigma2(1.0).sqrt(),
                sampler,
            };
            let engines: [Box<dyn Engine>; 2] = [
                Box::new(CpuEngine::new()),
                Box::new(ReferenceEngine::new(schedule)),
            ];
            for mut engine in engines {
                let cancel = std::sync::atomic::AtomicBool::new(true);
                let (mut init, mut out) = (vec![0f32; 100 * dim], vec![0f32; 100 * dim]);
                for initial in [Some(&mut init[..]), None] {
                    let result = engine.advance_batch(
                        &problem,
                        0,
                        initial,
                        &mut out,
                        0..steps.len(),
                        &cancel,
                        &mut |_| {},
                    );
                    assert!(
                        matches!(result, Err(memodiff::Error::Interrupted(_))),
                        "D = {dim}, {sampler:?}, {:?}: {result:?}",
                        engine.backend()
                    );
                }
            }
        }
    }
}

/// The general-D CPU path (D > 4) against the f64 reference, and batch invariance.
#[test]
fn cpu_matches_reference_in_high_dimensions() {
    use memodiff::reference::ReferenceEngine;
    for (dim, n_train, particles) in [(5, 20, 300), (17, 50, 100), (784, 30, 6)] {
        let mut config = SampleConfig::new(scattered(n_train, dim, dim as u64 + 1));
        config.particles = particles;
        let c = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let r = run_collect(&config, &mut ReferenceEngine::new(config.schedule)).unwrap();
        let dist = |a: &[f32], b: &[f32], i: usize| {
            (0..dim)
                .map(|d| (a[i * dim + d] - b[i * dim + d]).abs())
                .fold(0.0, f32::max)
        };
        let n = particles as usize;
        assert!((0..n).all(|i| dist(&c.initial, &r.initial, i) < 1e-5));
        let close = (0..n)
            .filter(|&i| dist(&c.samples, &r.samples, i) <= 1e-3)
            .count();
        assert!(
            close as f64 >= 0.999 * n as f64,
            "D = {dim}: only {close} of {n} agree with the reference"
        );
        config.batch = Some(7);
        let batched = run_collect(&config, &mut CpuEngine::new()).unwrap();
        assert_eq!(
            batched.samples, c.samples,
            "D = {dim}: batching changed the samples"
        );
    }
}

/// D up to 4096 is accepted; beyond, a clear error names the limit.
#[test]
fn dimensions_beyond_4096_are_refused_clearly() {
    let config = SampleConfig::new(scattered(2, 4097, 1));
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("4097") && err.contains("4096"), "{err}");
    let mut config = SampleConfig::new(scattered(2, 4096, 1));
    config.particles = 2;
    config.time_points = 3;
    let out = run_collect(&config, &mut CpuEngine::new()).unwrap();
    assert_eq!(out.samples.len(), 2 * 4096);
    assert!(out.samples.iter().all(|v| v.is_finite()));
}

/// The GPU's training-buffer check says how many bytes are needed and available.
#[test]
fn gpu_training_buffer_limit_is_refused_with_numbers() {
    use memodiff::gpu::engine::check_training_fits;
    assert!(check_training_fits(1000, 784, 1 << 27).is_ok());
    let err = check_training_fits(1_000_000, 784, 1 << 27)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3136000000") && err.contains("134217728"),
        "{err}"
    );
}
