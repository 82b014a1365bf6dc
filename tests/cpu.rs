//! The CPU engine: batch invariance and seeds (the GPU twin is tested in gpu.rs).

mod common;

use common::scattered;
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

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
    use memodiff::testing::engine::reference::ReferenceEngine;
    let mut config = SampleConfig::new(scattered(1_000_000, 2, 3));
    config.particles = 40;
    config.time_points = 4;
    let fast = run_collect(&config, &mut CpuEngine::new()).unwrap();
    let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
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
    use memodiff::testing::engine::reference::ReferenceEngine;
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
        let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
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
    use memodiff::testing::engine::{BatchWork, Engine, Problem};
    use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
    let dataset = Dataset::circle(100).unwrap();
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let problem = Problem {
        dataset: &dataset,
        steps: &steps,
        seed: 11,
        initial_std: schedule.sigma2(1.0).sqrt(),
        schedule,
        sampler: Default::default(),
        patch: None,
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
            .advance_batch(&problem, BatchWork::new(first, initial, state, range))
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
    use memodiff::testing::engine::{BatchWork, Engine, Problem};
    use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
    let dataset = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let problem = Problem {
        dataset: &dataset,
        steps: &steps,
        seed: 0,
        initial_std: schedule.sigma2(1.0).sqrt(),
        schedule,
        sampler: Default::default(),
        patch: None,
    };
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let (mut init, mut out) = (vec![0f32; 2_000], vec![0f32; 2_000]);
    let result = CpuEngine::new().advance_batch(
        &problem,
        BatchWork::new(0, Some(&mut init), &mut out, 0..99).cancellable_by(&cancel),
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
    use memodiff::testing::engine::reference::ReferenceEngine;
    use memodiff::testing::engine::{BatchWork, Engine, Problem, SamplerKind};
    use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
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
                schedule,
                sampler,
                patch: None,
            };
            let engines: [Box<dyn Engine>; 2] =
                [Box::new(CpuEngine::new()), Box::new(ReferenceEngine::new())];
            for mut engine in engines {
                let cancel = std::sync::atomic::AtomicBool::new(true);
                let (mut init, mut out) = (vec![0f32; 100 * dim], vec![0f32; 100 * dim]);
                for initial in [Some(&mut init[..]), None] {
                    let result = engine.advance_batch(
                        &problem,
                        BatchWork::new(0, initial, &mut out, 0..steps.len())
                            .cancellable_by(&cancel),
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
    use memodiff::testing::engine::reference::ReferenceEngine;
    for (dim, n_train, particles) in [(5, 20, 300), (17, 50, 100), (784, 30, 6)] {
        let mut config = SampleConfig::new(scattered(n_train, dim, dim as u64 + 1));
        config.particles = particles;
        let c = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let r = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
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
    use memodiff::testing::engine::gpu::engine::check_training_fits;
    assert!(check_training_fits(1000, 784, 1 << 27).is_ok());
    let err = check_training_fits(1_000_000, 784, 1 << 27)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3136000000") && err.contains("134217728"),
        "{err}"
    );
}

/// The fused attention kernel (D > 4) against the f64 reference, per particle, em and
/// heun, at dimensions off the 16/32-lane tiles and training sets off the panels (32
/// points) and blocks (`block_points(D)`): every particle within 1e-3 of the reference.
#[test]
fn attention_kernel_matches_reference_per_particle() {
    use memodiff::testing::engine::cpu::attention::block_points;
    use memodiff::testing::engine::reference::ReferenceEngine;
    use memodiff::testing::engine::SamplerKind;
    assert_eq!(block_points(200), 512);
    for (dim, n_train, particles) in [
        (5, 1, 40),
        (5, 33, 60),
        (17, 31, 40),
        (64, 100, 30),
        (200, 513, 12),
        (784, 40, 9),
    ] {
        for sampler in [SamplerKind::Em, SamplerKind::Heun] {
            let mut config = SampleConfig::new(scattered(n_train, dim, dim as u64 + 3));
            config.particles = particles;
            config.sampler = sampler;
            let c = run_collect(&config, &mut CpuEngine::new()).unwrap();
            let r = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
            for (i, (a, b)) in c.samples.chunks(dim).zip(r.samples.chunks(dim)).enumerate() {
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(
                    d <= 1e-3,
                    "D = {dim}, N = {n_train}, {sampler:?}, particle {i}: off by {d}"
                );
            }
        }
    }
}

/// Bit-identical results whatever the batch (1, 7, 8, 9, whole), hence whatever the
/// register tile or work item a particle shares, em and heun.
#[test]
fn attention_kernel_is_bit_identical_across_batch_sizes() {
    use memodiff::testing::engine::SamplerKind;
    for (dim, n_train) in [(9, 70), (33, 45)] {
        for sampler in [SamplerKind::Em, SamplerKind::Heun] {
            let mut config = SampleConfig::new(scattered(n_train, dim, 5));
            config.particles = 61;
            config.time_points = 30;
            config.sampler = sampler;
            let whole = run_collect(&config, &mut CpuEngine::new()).unwrap();
            for batch in [1, 7, 8, 9, 16] {
                config.batch = Some(batch);
                let batched = run_collect(&config, &mut CpuEngine::new()).unwrap();
                assert_eq!(
                    whole.samples, batched.samples,
                    "D = {dim}, {sampler:?}, batch {batch}"
                );
            }
            config.batch = None;
        }
    }
}

/// `n * dim` deterministic values uniform in [lo, hi] (an LCG).
fn image_like(n: usize, dim: usize, lo: f64, hi: f64, salt: u64) -> Vec<f64> {
    let mut state = salt;
    (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// The accuracy of the logits at t = 0.01 (sigma² ≈ 1.6e-4) for image-like data, D = 784
/// and 3072, values in [0, 1] and [-1, 1], in the four forms: (a) direct |x − s a|² in
/// f32, (b) the dot form, (c) the dot form centred on the training mean, (d) the
/// kernel's (dot form + error bound + direct recompute near the max). Errors are of the
/// logit differences to the particle's best point (the softmax sees nothing else), in
/// nats, over the points whose weight exceeds e^-20 of the max. Prints the table
/// (`--nocapture`) and asserts the kernel's form within 2e-3 nats (a relative weight
/// error of 0.2%) while the dot form is off by more than 0.1.
#[test]
fn attention_logits_are_accurate_at_small_sigma() {
    use memodiff::testing::engine::cpu::attention::{particle_logits, TrainingPanels};
    use memodiff::testing::model::schedule::VpSchedule;
    let schedule = VpSchedule::default();
    let tau = 0.01;
    let (s, sigma2) = (schedule.mean_scale(tau), schedule.sigma2(tau));
    let (s32, its32) = (s as f32, (0.5 / sigma2) as f32);
    println!("sigma2 at t = {tau}: {sigma2:.3e}");
    println!("| data | D | direct f32 | dot f32 | centred dot f32 | kernel | pairs recomputed |");
    let mut worst_kernel = 0f64;
    let mut worst_dot = 0f64;
    for (lo, hi) in [(0.0, 1.0), (-1.0, 1.0)] {
        for dim in [784usize, 3072] {
            let n = 64;
            // 8 random images, each with 7 near-duplicates (per-pixel jitter chosen so the
            // duplicates are a few nats apart at this sigma): the softmax then has many
            // relevant points, where the forms' errors show.
            let bases = image_like(8, dim, lo, hi, dim as u64 + (lo as i64 + 7) as u64);
            let jitter = image_like(n, dim, -1.0, 1.0, 5);
            let eps = (15.0 * sigma2 / dim as f64).sqrt();
            let points: Vec<f64> = (0..n * dim)
                .map(|v| bases[(v / dim / 8) * dim + v % dim] + eps * jitter[v])
                .collect();
            let a32: Vec<f32> = points.iter().map(|&v| v as f32).collect();
            let training = TrainingPanels::new(&points, dim);
            let mean: Vec<f32> = (0..dim)
                .map(|k| (0..n).map(|i| points[i * dim + k]).sum::<f64>() as f32 / n as f32)
                .collect();
            let mut errors = [0f64; 4];
            let mut recomputed = 0u64;
            let mut z_state = 99u64;
            let mut normal = move || {
                z_state = z_state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u1 = ((z_state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                z_state = z_state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u2 = (z_state >> 11) as f64 / (1u64 << 53) as f64;
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            };
            for j in 0..16 {
                // Near point j, or halfway between j and j + 1 (a near-tie).
                let x: Vec<f32> = (0..dim)
                    .map(|k| {
                        let a = if j % 2 == 0 {
                            points[j * 4 * dim + k]
                        } else {
                            0.5 * (points[j * 4 * dim + k] + points[(j * 4 + 1) * dim + k])
                        };
                        (s * a + sigma2.sqrt() * normal()) as f32
                    })
                    .collect();
                let exact: Vec<f64> = (0..n)
                    .map(|i| {
                        -(0..dim)
                            .map(|k| (x[k] as f64 - s * a32[i * dim + k] as f64).powi(2))
                            .sum::<f64>()
                            / (2.0 * sigma2)
                    })
                    .collect();
                let direct: Vec<f32> = (0..n)
                    .map(|i| {
                        let mut d2 = 0f32;
                        for k in 0..dim {
                            let d = x[k] - s32 * a32[i * dim + k];
                            d2 += d * d;
                        }
                        -d2 * its32
                    })
                    .collect();
                let dot_form = |xs: &[f32], centre: &[f32]| -> Vec<f32> {
                    (0..n)
                        .map(|i| {
                            let (mut xa, mut aa) = (0f32, 0f32);
                            for k in 0..dim {
                                let a = a32[i * dim + k] - centre[k];
                                xa += xs[k] * a;
                                aa += a * a;
                            }
                            (s32 * xa - s32 * s32 * 0.5 * aa) * (2.0 * its32)
                        })
                        .collect()
                };
                let zero = vec![0f32; dim];
                let dot = dot_form(&x, &zero);
                let centred_x: Vec<f32> = x.iter().zip(&mean).map(|(&v, &m)| v - s32 * m).collect();
                let centred = dot_form(&centred_x, &mean);
                let (kernel2, r) = particle_logits(&training, &x, s32, its32);
                recomputed += r;
                let kernel: Vec<f32> = kernel2
                    .iter()
                    .map(|&v| v / std::f32::consts::LOG2_E)
                    .collect();
                let best = (0..n)
                    .max_by(|&a, &b| exact[a].total_cmp(&exact[b]))
                    .unwrap();
                for (f, form) in [&direct, &dot, &centred, &kernel].into_iter().enumerate() {
                    for i in (0..n).filter(|&i| exact[best] - exact[i] < 20.0) {
                        let got = (form[i] - form[best]) as f64;
                        let want = exact[i] - exact[best];
                        errors[f] = errors[f].max((got - want).abs());
                    }
                }
            }
            println!(
                "| [{lo}, {hi}] | {dim} | {:.2e} | {:.2e} | {:.2e} | {:.2e} | {recomputed} of {} |",
                errors[0],
                errors[1],
                errors[2],
                errors[3],
                16 * n
            );
            worst_kernel = worst_kernel.max(errors[3]);
            worst_dot = worst_dot.max(errors[1]);
        }
    }
    assert!(
        worst_kernel <= 2e-3,
        "kernel logits off by {worst_kernel} nats"
    );
    assert!(
        worst_dot > 0.1,
        "the dot form was expected to lose digits here ({worst_dot})"
    );
}

/// The posterior tap: at the tapped steps, `(max w, argmax)` of the first rows against
/// an f64 brute force at the same positions (max weight within 1e-4 relative, argmax
/// equal unless the top two weights are within 1e-3 of each other).
#[test]
fn attention_posterior_tap_matches_f64_brute_force() {
    posterior_tap_matches_f64_brute_force(false);
}

/// The same with exact culling on: the points are reordered into panels, so the argmax
/// goes back through the permutation.
#[test]
fn culled_attention_posterior_tap_matches_f64_brute_force() {
    posterior_tap_matches_f64_brute_force(true);
}

fn posterior_tap_matches_f64_brute_force(cull: bool) {
    use memodiff::testing::engine::cpu::CpuEngine;
    use memodiff::testing::engine::{BatchWork, Engine, PosteriorTap, Problem};
    use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
    let (dim, n_train, particles, rows) = (24, 300, 40, 13);
    let dataset = scattered(n_train, dim, 17);
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let problem = Problem {
        dataset: &dataset,
        steps: &steps,
        seed: 3,
        initial_std: schedule.sigma2(1.0).sqrt(),
        schedule,
        sampler: Default::default(),
        patch: None,
    };
    // Through the engine's interface, as the sampler uses it.
    let mut engine = CpuEngine::with_culling(cull);
    assert!(engine.posterior_tap(&problem));
    let tapped = [0usize, 40, 80, 97, 98];
    let mut init = vec![0f32; particles * dim];
    let mut state = vec![0f32; particles * dim];
    engine
        .advance_batch(
            &problem,
            BatchWork::new(0, Some(&mut init), &mut state, 0..0),
        )
        .unwrap();
    let mut checked_ties = 0;
    let mut previous = 0;
    let mut max_weight = vec![f32::NAN; rows * tapped.len()];
    let mut argmax = vec![u32::MAX; rows * tapped.len()];
    for (record, &k) in tapped.iter().enumerate() {
        engine
            .advance_batch(&problem, BatchWork::new(0, None, &mut state, previous..k))
            .unwrap();
        let before = state.clone();
        let mut tap = PosteriorTap {
            steps: &tapped,
            rows,
            max_weight: &mut max_weight,
            argmax: &mut argmax,
        };
        engine
            .advance_batch_tapped(
                &problem,
                BatchWork::new(0, None, &mut state, k..k + 1),
                &mut tap,
            )
            .unwrap();
        previous = k + 1;
        let step = &steps[k];
        for row in 0..rows {
            let x = &before[row * dim..(row + 1) * dim];
            let pots: Vec<f64> = dataset
                .points
                .chunks(dim)
                .map(|a| {
                    -a.iter()
                        .zip(x)
                        .map(|(&a, &x)| (x as f64 - step.mean_scale * (a as f32) as f64).powi(2))
                        .sum::<f64>()
                        / (2.0 * step.sigma2)
                })
                .collect();
            let max = pots.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = pots.iter().map(|p| (p - max).exp()).sum();
            let mut order: Vec<usize> = (0..n_train).collect();
            order.sort_by(|&a, &b| pots[b].total_cmp(&pots[a]));
            let at = row * tapped.len() + record;
            let (w_max, arg) = (max_weight[at], argmax[at]);
            let want = 1.0 / sum;
            assert!(
                ((w_max as f64 - want) / want).abs() < 1e-4,
                "step {k}, row {row}: max weight {w_max} vs {want}"
            );
            let near_tie = pots[order[0]] - pots[order[1]] < 1e-3;
            if near_tie {
                checked_ties += 1;
            } else {
                assert_eq!(arg as usize, order[0], "step {k}, row {row}: argmax");
            }
        }
    }
    assert!(
        checked_ties < rows * tapped.len() / 4,
        "{checked_ties} near-ties"
    );
}

/// `n` points in `dim` dimensions around `clusters` centres uniform in [-1, 1]^dim, each
/// coordinate within `spread` of its centre (an LCG): structured data where exact
/// culling skips much, and where panels are dead for some particles of a tile only.
fn blobs(n: usize, dim: usize, clusters: usize, spread: f64, salt: u64) -> Dataset {
    let mut state = salt;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let centres: Vec<f64> = (0..clusters * dim).map(|_| uniform()).collect();
    let points = (0..n * dim)
        .map(|j| centres[(j / dim) % clusters * dim + j % dim] + spread * uniform())
        .collect();
    Dataset::new(format!("blobs:{n}:{dim}"), dim, points).unwrap()
}

/// Exact culling on, structured data: it culls a good share of the pairs, results are
/// bit-identical whatever the batch (1, 7, 8, 9, 16, whole: panels dead for all, some or
/// none of a tile's particles), shard or step range, and every particle stays within
/// the f64 reference's tolerance (1e-3), em and heun.
#[test]
fn culled_attention_kernel_is_exact_and_batch_invariant() {
    use memodiff::testing::engine::reference::ReferenceEngine;
    use memodiff::testing::engine::{BatchWork, Engine, Problem, SamplerKind};
    use memodiff::testing::run::driver::Shard;
    let (dim, n_train) = (40, 320);
    for sampler in [SamplerKind::Em, SamplerKind::Heun] {
        let mut config = SampleConfig::new(blobs(n_train, dim, 10, 0.05, 9));
        config.particles = 45;
        config.time_points = 40;
        config.sampler = sampler;
        let mut engine = CpuEngine::with_culling(true);
        let whole = run_collect(&config, &mut engine).unwrap();
        let (pairs, culled) = engine.pair_counts().unwrap();
        eprintln!("{sampler:?}: {culled} of {pairs} pairs culled");
        assert_eq!(
            pairs,
            45 * n_train as u64 * (if sampler == SamplerKind::Em { 39 } else { 77 })
        );
        assert!(
            culled * 5 > pairs,
            "{sampler:?}: only {culled} of {pairs} pairs culled"
        );
        let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        for (i, (a, b)) in whole
            .samples
            .chunks(dim)
            .zip(reference.samples.chunks(dim))
            .enumerate()
        {
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-3, "{sampler:?}, particle {i}: off by {d}");
        }
        for batch in [1, 7, 8, 9, 16] {
            config.batch = Some(batch);
            let batched = run_collect(&config, &mut CpuEngine::with_culling(true)).unwrap();
            assert!(
                whole
                    .samples
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(batched.samples.iter().map(|v| v.to_bits())),
                "{sampler:?}, batch {batch}"
            );
        }
        config.batch = None;
        // Shards: each shard's particles are the whole run's, bit for bit.
        let mut merged = Vec::new();
        for index in 0..3 {
            config.shard = Some(Shard { index, count: 3 });
            merged.extend(
                run_collect(&config, &mut CpuEngine::with_culling(true))
                    .unwrap()
                    .samples,
            );
        }
        config.shard = None;
        assert_eq!(merged, whole.samples, "{sampler:?}: shards");
        // Step ranges from a saved state (what resume does) against one go.
        let steps = config.reverse_steps();
        let problem = Problem {
            dataset: &config.dataset,
            steps: &steps,
            seed: config.seed,
            initial_std: config.schedule.sigma2(1.0).sqrt(),
            schedule: config.schedule,
            sampler,
            patch: None,
        };
        let n = 45;
        let (mut init, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
        for (k, range) in [0..13, 13..14, 14..39].into_iter().enumerate() {
            // A fresh engine per range, as a resumed process has.
            CpuEngine::with_culling(true)
                .advance_batch(
                    &problem,
                    BatchWork::new(0, (k == 0).then_some(&mut init[..]), &mut state, range),
                )
                .unwrap();
        }
        assert_eq!(state, whole.samples, "{sampler:?}: step ranges");
    }
}
