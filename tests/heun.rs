//! `--sampler heun`: Heun's method on the probability-flow ODE, on every engine, against
//! the exact flow of a single Gaussian and against the f64 reference.

mod common;

use common::{gpu_engine, row_distance, scattered};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::reference::ReferenceEngine;
use memodiff::testing::engine::{BatchWork, Engine, Problem, SamplerKind};
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

/// Run `n` particles through steps `0..end` of the Heun sampler on `engine`; returns
/// (initial, positions).
fn heun_until(
    engine: &mut dyn Engine,
    dataset: &Dataset,
    time_points: usize,
    n: usize,
    end: usize,
) -> (Vec<f32>, Vec<f32>) {
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, time_points);
    let problem = Problem {
        dataset,
        steps: &steps,
        seed: 3,
        initial_std: schedule.sigma2(1.0).sqrt(),
        schedule,
        sampler: SamplerKind::Heun,
        patch: None,
    };
    let dim = dataset.dim;
    let (mut initial, mut state) = (vec![0.0; n * dim], vec![0.0; n * dim]);
    engine
        .advance_batch(
            &problem,
            BatchWork::new(0, Some(&mut initial), &mut state, 0..end),
        )
        .unwrap();
    (initial, state)
}

/// The exact probability-flow ODE from a single training point mu, started at x0 at forward
/// time tau0 (the grid's first tau): x(tau) = s(tau) mu + sqrt(sigma2(tau) / sigma2(tau0))
/// (x0 - s(tau0) mu). It reaches mu exactly at tau = 0.
fn exact(mu: &[f64], x0: &[f32], tau0: f64, tau: f64) -> Vec<f64> {
    let sch = VpSchedule::default();
    let ratio = (sch.sigma2(tau) / sch.sigma2(tau0)).sqrt();
    mu.iter()
        .zip(x0)
        .map(|(m, &x)| sch.mean_scale(tau) * m + ratio * (x as f64 - sch.mean_scale(tau0) * m))
        .collect()
}

/// Heun on a training set of one point mu: every engine follows the exact flow to the
/// last grid point before t = 1 (tau = dt) within Heun's O(dt^2) error, and the final
/// Euler step (to tau = 0, where the score is singular) lands next to mu.
#[test]
fn heun_follows_the_exact_flow_of_a_single_gaussian() {
    let time_points = 100;
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, time_points);
    let last = steps[steps.len() - 1];
    let tau0 = steps[0].tau;
    let n = 50;
    for dim in [3usize, 9] {
        let mu: Vec<f64> = (0..dim).map(|d| 0.7 - 0.3 * d as f64).collect();
        let dataset = Dataset::new("mu", dim, mu.clone()).unwrap();
        let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![
            ("reference", Box::new(ReferenceEngine::new())),
            ("cpu", Box::new(CpuEngine::new())),
        ];
        if let Some(gpu) = gpu_engine("heun_follows_the_exact_flow_of_a_single_gaussian") {
            engines.push(("gpu", Box::new(gpu)));
        }
        let mut reference_end = Vec::new();
        for (name, engine) in engines.iter_mut() {
            let (x0, before) =
                heun_until(engine.as_mut(), &dataset, time_points, n, steps.len() - 1);
            let (_, end) = heun_until(engine.as_mut(), &dataset, time_points, n, steps.len());
            let (mut worst_before, mut worst_euler, mut worst_mu) = (0f64, 0f64, 0f64);
            for i in 0..n {
                let e = exact(&mu, &x0[i * dim..(i + 1) * dim], tau0, last.tau);
                // The last step is Euler on v = beta x / 2 + beta score / 2 from tau = dt.
                let v = |d: usize| {
                    0.5 * last.beta * e[d]
                        + 0.5 * last.beta * (last.mean_scale * mu[d] - e[d]) / last.sigma2
                };
                for d in 0..dim {
                    let k = i * dim + d;
                    worst_before = worst_before.max((before[k] as f64 - e[d]).abs());
                    worst_euler = worst_euler.max((end[k] as f64 - (e[d] + last.dt * v(d))).abs());
                    worst_mu = worst_mu.max((end[k] as f64 - mu[d]).abs());
                }
            }
            // Measured: 4.8e-5 (D = 3) and 1.1e-4 (D = 9) before the last step; the Euler
            // step damps that error about 20-fold; its own error leaves ~1.3e-3 to mu.
            assert!(
                worst_before < 2e-4,
                "{name} D = {dim}: {worst_before:e} from the exact flow at tau = dt"
            );
            assert!(
                worst_euler < 2e-5,
                "{name} D = {dim}: {worst_euler:e} from the exact flow's Euler step"
            );
            assert!(
                worst_mu < 2e-3,
                "{name} D = {dim}: ends {worst_mu:e} from mu"
            );
            if *name == "reference" {
                reference_end = end;
            } else {
                let diff = (0..n)
                    .map(|i| row_distance(&end, &reference_end, dim, i))
                    .fold(0.0, f32::max);
                assert!(diff < 1e-5, "{name} D = {dim}: {diff:e} from the reference");
            }
        }
    }
}

/// Heun on several training points: the GPU (simple, tiled and general-D kernels, the last
/// with several chunk dispatches) against the f64 reference, the same tolerance as em.
#[test]
fn gpu_heun_matches_the_reference() {
    use memodiff::testing::engine::records::general_chunk_points;
    let Some(mut gpu) = gpu_engine("gpu_heun_matches_the_reference") else {
        return;
    };
    // (training set, particles, time points): the chunked one on a short grid.
    for (data, particles, time_points) in [
        (Dataset::circle(8).unwrap(), 2_000, 100),
        (scattered(300, 2, 1), 300, 100),
        (scattered(2 * general_chunk_points(17) + 5, 17, 2), 20, 6),
    ] {
        let dim = data.dim;
        let mut config = SampleConfig::new(data);
        config.particles = particles as u64;
        config.time_points = time_points;
        config.sampler = SamplerKind::Heun;
        let g = run_collect(&config, &mut gpu).unwrap();
        let r = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        let c = run_collect(&config, &mut CpuEngine::new()).unwrap();
        for (name, other) in [("reference", &r), ("cpu", &c)] {
            let close = (0..particles)
                .filter(|&i| row_distance(&g.samples, &other.samples, dim, i) <= 1e-3)
                .count();
            assert!(
                close as f64 >= 0.999 * particles as f64,
                "{} D = {dim}: gpu vs {name}: {close} of {particles} agree within 1e-3",
                config.dataset.name
            );
        }
        // Same initial noise as em; deterministic afterwards.
        config.sampler = SamplerKind::Em;
        let em = run_collect(&config, &mut gpu).unwrap();
        assert_eq!(em.initial, g.initial);
        config.sampler = SamplerKind::Heun;
        config.batch = Some(particles / 3 + 1);
        let again = run_collect(&config, &mut gpu).unwrap();
        assert_eq!(again.samples, g.samples, "batching changed heun's samples");
    }
}

/// A batch advanced in step ranges (checkpoints) gives the same bits as in one go: each
/// Heun step is complete within a range (predictor and corrector).
#[test]
fn heun_in_step_ranges_is_bit_identical_to_one_go() {
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 30);
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![("cpu", Box::new(CpuEngine::new()))];
    if let Some(gpu) = gpu_engine("heun_in_step_ranges_is_bit_identical_to_one_go") {
        engines.push(("gpu", Box::new(gpu)));
    }
    for dataset in [Dataset::circle(8).unwrap(), scattered(40, 6, 9)] {
        let dim = dataset.dim;
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 5,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler: SamplerKind::Heun,
            patch: None,
        };
        let n = 257;
        for (name, engine) in engines.iter_mut() {
            let (mut initial, mut whole) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            let all = 0..steps.len();
            engine
                .advance_batch(
                    &problem,
                    BatchWork::new(0, Some(&mut initial), &mut whole, all),
                )
                .unwrap();
            let (mut initial2, mut state) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            engine
                .advance_batch(
                    &problem,
                    BatchWork::new(0, Some(&mut initial2), &mut state, 0..11),
                )
                .unwrap();
            engine
                .advance_batch(
                    &problem,
                    BatchWork::new(0, None, &mut state, 11..steps.len()),
                )
                .unwrap();
            assert_eq!(initial, initial2, "{name} D = {dim}");
            assert_eq!(
                whole, state,
                "{name} D = {dim}: step ranges changed the bits"
            );
        }
    }
}

/// Heun with more training points than one chunk dispatch on the vec4 kernels (D = 2):
/// the softmax state crosses dispatches in both halves of a step.
#[test]
fn gpu_heun_with_more_training_points_than_one_chunk() {
    use memodiff::testing::engine::records::TRAINING_CHUNK;
    let Some(mut gpu) = gpu_engine("gpu_heun_with_more_training_points_than_one_chunk") else {
        return;
    };
    let mut config = SampleConfig::new(scattered(2 * TRAINING_CHUNK + 99, 2, 8));
    config.particles = 50;
    config.time_points = 5;
    config.sampler = SamplerKind::Heun;
    let g = run_collect(&config, &mut gpu).unwrap();
    let r = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
    for i in 0..50 {
        let d = row_distance(&g.samples, &r.samples, 2, i);
        assert!(d <= 1e-3, "particle {i} differs from the reference by {d}");
    }
}
