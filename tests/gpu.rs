//! GPU kernels against their CPU twins and the f64 reference. These run on any wgpu
//! adapter; CI uses lavapipe (mesa-vulkan-drivers).

mod common;

use common::{
    assert_initial_noise_agrees, assert_trajectories_agree, gpu_engine, gpu_engine_with,
    normals_tolerance, row_distance, scattered, NoiseSource,
};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::gpu::diagnostics::philox_on_gpu;
use memodiff::testing::engine::reference::{self, ReferenceEngine};
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::philox::{
    counter, gpu_normals_error_bound, normals4_f64, philox4x32_10, seed_key,
};
use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

#[test]
fn philox_known_answers_on_gpu() {
    let Some(engine) = gpu_engine("philox_known_answers_on_gpu") else {
        return;
    };
    // Random123 kat_vectors for philox4x32_10.
    let known = [
        (
            [0u32; 4],
            [0u32; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    // Plus many counters as the sampler forms them, to compare words and normals with
    // the CPU twin.
    let mut cases: Vec<([u32; 4], [u32; 2])> = known.iter().map(|(c, k, _)| (*c, *k)).collect();
    for i in 0..1000u64 {
        let particle = i * 0x9E37_79B9_7F4A_7C15;
        cases.push((
            counter(particle, (i % 99) as u32, (i % 3) as u32),
            seed_key(i ^ 0xDEAD_BEEF_0000_0001),
        ));
    }
    let (words, normals) = philox_on_gpu(engine.context(), &cases).expect("gpu philox");
    for (i, (_, _, expected)) in known.iter().enumerate() {
        assert_eq!(words[i], *expected, "known answer {i}");
    }
    // Same integers; the floats may differ by what WGSL's log/sqrt/cos/sin accuracies
    // allow (philox::normals_error_bound: up to ~3e-3 for the largest radii), checked
    // value by value against the exact normals and against the CPU twin.
    let mut worst_ratio = 0f64;
    for (i, (c, k)) in cases.iter().enumerate() {
        let cpu = philox4x32_10(*c, *k);
        assert_eq!(words[i], cpu, "case {i}: GPU and CPU words differ");
        let exact = normals4_f64(cpu);
        let bound = gpu_normals_error_bound(cpu);
        let tolerance = normals_tolerance(NoiseSource::Gpu, NoiseSource::Cpu, cpu);
        let twin = memodiff::testing::model::philox::normals4_f32(cpu);
        for lane in 0..4 {
            let z = normals[i][lane] as f64;
            assert!(z.is_finite(), "case {i} lane {lane}: {z}");
            let err = (z - exact[lane]).abs();
            assert!(
                err <= bound[lane],
                "case {i} lane {lane}: GPU normal {z} is {err:e} from the exact {}, more \
                 than WGSL's accuracies allow ({:e})",
                exact[lane],
                bound[lane]
            );
            let diff = (z - twin[lane] as f64).abs();
            assert!(
                diff <= tolerance[lane],
                "case {i} lane {lane}: GPU vs CPU {diff:e}"
            );
            worst_ratio = worst_ratio.max(err / bound[lane]);
        }
    }
    eprintln!("GPU normals: largest error / WGSL-derived bound = {worst_ratio:.3e}");
}

fn grid_points(n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let step = (hi - lo) / (n - 1) as f32;
    let mut pts = Vec::with_capacity(n * n * 2);
    for j in 0..n {
        for i in 0..n {
            pts.push(lo + i as f32 * step);
            pts.push(lo + j as f32 * step);
        }
    }
    pts
}

#[test]
fn gpu_score_matches_reference_on_a_grid() {
    let Some(mut engine) = gpu_engine("gpu_score_matches_reference_on_a_grid") else {
        return;
    };
    let data = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let points = grid_points(32, -1.5, 1.5);
    for tau in [0.005, 0.5] {
        let gpu = engine
            .evaluate_score(&data, &schedule, tau, &points)
            .unwrap();
        let sigma2 = schedule.sigma2(tau);
        let (mut err2, mut ref2, mut worst) = (0f64, 0f64, 0f64);
        for (i, p) in points.chunks(2).enumerate() {
            let x = [p[0] as f64, p[1] as f64];
            let r = reference::score(&data, &schedule, tau, &x);
            let g = [gpu[2 * i] as f64, gpu[2 * i + 1] as f64];
            assert!(g.iter().all(|v| v.is_finite()), "non-finite score at {x:?}");
            let err = (g[0] - r[0]).hypot(g[1] - r[1]);
            err2 += err * err;
            ref2 += r[0] * r[0] + r[1] * r[1];
            // Pointwise: relative to the score, except where the score nearly vanishes
            // (s m ~ x): there f32 cancellation of the O(|x| / sigma2) terms sets the
            // floor, so the error is measured relative to that scale instead.
            let terms = x[0].hypot(x[1]) / sigma2;
            let scale = r[0].hypot(r[1]).max(0.01 * terms);
            worst = worst.max(err / scale);
        }
        let global = (err2 / ref2).sqrt();
        assert!(
            global < 1e-4,
            "t = {tau}: relative L2 error over the grid {global:e}"
        );
        assert!(
            worst < 1e-4,
            "t = {tau}: worst pointwise relative error {worst:e}"
        );
    }
}

#[test]
fn gpu_score_is_finite_far_away_at_the_smallest_time() {
    let Some(mut engine) = gpu_engine("gpu_score_is_finite_far_away_at_the_smallest_time") else {
        return;
    };
    let data = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let smallest_tau = reverse_steps(&schedule, 100).last().unwrap().tau;
    let mut points = Vec::new();
    for k in 0..64 {
        let a = k as f32 * 0.1;
        points.extend([1e3 * a.cos(), 1e3 * a.sin()]);
    }
    points.extend([1e3, 0.0, 0.0, -1e3]);
    let gpu = engine
        .evaluate_score(&data, &schedule, smallest_tau, &points)
        .unwrap();
    for (i, p) in points.chunks(2).enumerate() {
        let x = [p[0] as f64, p[1] as f64];
        let r = reference::score(&data, &schedule, smallest_tau, &x);
        for d in 0..2 {
            assert!(
                gpu[2 * i + d].is_finite(),
                "score at {x:?} is {}",
                gpu[2 * i + d]
            );
            let rel = (gpu[2 * i + d] as f64 - r[d]).abs() / (r[0].hypot(r[1]));
            assert!(
                rel < 1e-4,
                "score at {x:?}: gpu {} vs reference {}",
                gpu[2 * i + d],
                r[d]
            );
        }
    }
}

fn default_config(particles: u64) -> SampleConfig {
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = particles;
    config
}

#[test]
fn gpu_cpu_and_reference_trajectories_agree() {
    let Some(mut gpu) = gpu_engine("gpu_cpu_and_reference_trajectories_agree") else {
        return;
    };
    let config = default_config(100_000);
    let (mut cpu, mut reference) = (CpuEngine::new(), ReferenceEngine::new());
    let g = run_collect(&config, &mut gpu).unwrap();
    let c = run_collect(&config, &mut cpu).unwrap();
    let r = run_collect(&config, &mut reference).unwrap();
    let initial_std = config.schedule.sigma2(1.0).sqrt();
    for (name, (a, a_source), (b, b_source)) in [
        ("gpu/cpu", (&g, NoiseSource::Gpu), (&c, NoiseSource::Cpu)),
        (
            "gpu/reference",
            (&g, NoiseSource::Gpu),
            (&r, NoiseSource::Reference),
        ),
        (
            "cpu/reference",
            (&c, NoiseSource::Cpu),
            (&r, NoiseSource::Reference),
        ),
    ] {
        let ratio = assert_initial_noise_agrees(
            name,
            (&a.initial, a_source),
            (&b.initial, b_source),
            config.seed,
            initial_std,
            2,
        );
        eprintln!("{name}: initial noise within {ratio:.3e} of its tolerance");
    }
    assert_trajectories_agree(
        "gpu/cpu",
        &config,
        (&g.samples, &mut gpu),
        (&c.samples, &mut cpu),
        1e-3,
    );
    assert_trajectories_agree(
        "gpu/reference",
        &config,
        (&g.samples, &mut gpu),
        (&r.samples, &mut reference),
        1e-3,
    );
    assert_trajectories_agree(
        "cpu/reference",
        &config,
        (&c.samples, &mut cpu),
        (&r.samples, &mut reference),
        1e-3,
    );
}

#[test]
fn gpu_results_do_not_depend_on_batch_or_workgroup_size() {
    let Some(mut gpu) = gpu_engine("gpu_results_do_not_depend_on_batch_or_workgroup_size") else {
        return;
    };
    let mut config = default_config(20_011);
    let whole = run_collect(&config, &mut gpu).unwrap();
    config.batch = Some(3_000);
    let batched = run_collect(&config, &mut gpu).unwrap();
    assert_eq!(
        whole.samples, batched.samples,
        "batching changed the samples"
    );
    assert_eq!(whole.initial, batched.initial);
    let mut wide = gpu_engine_with("workgroup 256", 256).unwrap();
    config.batch = Some(7_777);
    let other_geometry = run_collect(&config, &mut wide).unwrap();
    assert_eq!(
        whole.samples, other_geometry.samples,
        "workgroup size changed the samples"
    );
    config.seed = 1;
    let other_seed = run_collect(&config, &mut gpu).unwrap();
    let differing = whole
        .samples
        .iter()
        .zip(&other_seed.samples)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > whole.samples.len() / 2,
        "a new seed changed only {differing} values"
    );
}

#[test]
fn gpu_samples_memorize_the_training_set() {
    let Some(mut gpu) = gpu_engine("gpu_samples_memorize_the_training_set") else {
        return;
    };
    let config = default_config(100_000);
    let out = run_collect(&config, &mut gpu).unwrap();
    let data = &config.dataset;
    let mut counts = [0usize; 8];
    let mut within = 0;
    for p in out.samples.chunks(2) {
        let (best, dist) = (0..8)
            .map(|i| {
                let q = data.point(i);
                (
                    i,
                    ((p[0] as f64 - q[0]).powi(2) + (p[1] as f64 - q[1]).powi(2)).sqrt(),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        counts[best] += 1;
        within += (dist < 0.1) as usize;
    }
    let n = out.samples.len() / 2;
    assert!(
        within as f64 >= 0.99 * n as f64,
        "only {within} of {n} within 0.1"
    );
    for (i, c) in counts.iter().enumerate() {
        let share = *c as f64 / n as f64;
        assert!(
            (0.10..=0.15).contains(&share),
            "training point {i} holds {share}"
        );
    }
}

#[test]
fn gpu_matches_cpu_in_dimensions_one_to_four() {
    let Some(mut gpu) = gpu_engine("gpu_matches_cpu_in_dimensions_one_to_four") else {
        return;
    };
    for dim in 1..=4 {
        let points: Vec<f64> = (0..6 * dim)
            .map(|k| ((k * 37 % 13) as f64 - 6.0) / 6.0)
            .collect();
        let mut config = SampleConfig::new(Dataset::new(format!("d{dim}"), dim, points).unwrap());
        config.particles = 5_000;
        let mut cpu = CpuEngine::new();
        let g = run_collect(&config, &mut gpu).unwrap();
        let c = run_collect(&config, &mut cpu).unwrap();
        assert_trajectories_agree(
            &format!("D = {dim}: gpu/cpu"),
            &config,
            (&g.samples, &mut gpu),
            (&c.samples, &mut cpu),
            1e-3,
        );
    }
}

#[test]
fn tiled_and_simple_kernels_agree_at_tile_boundaries() {
    use memodiff::testing::engine::gpu::engine::Reduction;
    let Some(mut gpu) = gpu_engine("tiled_and_simple_kernels_agree_at_tile_boundaries") else {
        return;
    };
    // N = 1, below a tile, one short of, exactly and one past a tile (256), and several
    // tiles with a ragged end; D = 1, 2, 3.
    for (n, dim) in [(1, 2), (17, 3), (255, 2), (256, 1), (257, 2), (1000, 3)] {
        let mut config = SampleConfig::new(scattered(n, dim, n as u64));
        config.particles = 3_001;
        gpu.set_reduction(Reduction::Simple);
        let simple = run_collect(&config, &mut gpu).unwrap();
        gpu.set_reduction(Reduction::Tiled);
        let tiled = run_collect(&config, &mut gpu).unwrap();
        let mut reference_engine = ReferenceEngine::new();
        let reference = run_collect(&config, &mut reference_engine).unwrap();
        // The replays of the tiled run (near-tie checks) need the engine set to tiled.
        assert_trajectories_agree(
            &format!("N = {n}, D = {dim}: tiled/reference"),
            &config,
            (&tiled.samples, &mut gpu),
            (&reference.samples, &mut reference_engine),
            1e-3,
        );
        let mut cpu_reference = ReferenceEngine::new();
        gpu.set_reduction(Reduction::Simple);
        assert_trajectories_agree(
            &format!("N = {n}, D = {dim}: simple/reference"),
            &config,
            (&simple.samples, &mut gpu),
            (&reference.samples, &mut cpu_reference),
            1e-3,
        );
    }
    gpu.set_reduction(Reduction::Auto);
}

#[test]
fn tiled_score_handles_a_million_training_points() {
    use memodiff::testing::engine::gpu::engine::Reduction;
    let Some(mut gpu) = gpu_engine("tiled_score_handles_a_million_training_points") else {
        return;
    };
    let data = scattered(1_000_000, 2, 99);
    let schedule = VpSchedule::default();
    gpu.set_reduction(Reduction::Auto);
    assert!(gpu.uses_tiled(data.len()));
    let points = grid_points(6, -1.2, 1.2);
    for tau in [0.01, 0.3] {
        let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
        let sigma2 = schedule.sigma2(tau);
        for (i, p) in points.chunks(2).enumerate() {
            let x = [p[0] as f64, p[1] as f64];
            let r = reference::score(&data, &schedule, tau, &x);
            let err = (scores[2 * i] as f64 - r[0]).hypot(scores[2 * i + 1] as f64 - r[1]);
            // Relative to the size of the terms (s m - x) / sigma2 cancels: near a dense
            // cloud of training points the score is a small difference of large terms
            // and no f32 evaluation can resolve it to 1e-4 of itself.
            let scale = r[0].hypot(r[1]).max(x[0].hypot(x[1]) / sigma2);
            assert!(
                err / scale < 1e-4,
                "tau {tau}, x {x:?}: gpu {:?} vs {r:?}",
                &scores[2 * i..2 * i + 2]
            );
        }
    }
}

#[test]
fn trajectories_with_more_training_points_than_one_chunk() {
    use memodiff::testing::engine::gpu::engine::Reduction;
    use memodiff::testing::engine::records::TRAINING_CHUNK;
    let Some(mut gpu) = gpu_engine("trajectories_with_more_training_points_than_one_chunk") else {
        return;
    };
    // Two full chunks and a ragged third: the softmax state crosses dispatches.
    let n = 2 * TRAINING_CHUNK + 1_234;
    let mut config = SampleConfig::new(scattered(n, 2, 5));
    config.particles = 300;
    config.time_points = 6;
    let mut reference_engine = ReferenceEngine::new();
    let reference = run_collect(&config, &mut reference_engine).unwrap();
    for reduction in [Reduction::Simple, Reduction::Tiled] {
        gpu.set_reduction(reduction);
        let out = run_collect(&config, &mut gpu).unwrap();
        assert_trajectories_agree(
            &format!("{reduction:?}/reference"),
            &config,
            (&out.samples, &mut gpu),
            (&reference.samples, &mut reference_engine),
            1e-3,
        );
    }
    gpu.set_reduction(Reduction::Auto);
}

#[test]
fn gpu_trajectories_with_a_million_training_points() {
    let Some(mut gpu) = gpu_engine("gpu_trajectories_with_a_million_training_points") else {
        return;
    };
    let mut config = SampleConfig::new(scattered(1_000_000, 2, 3));
    config.particles = 40;
    config.time_points = 4;
    let out = run_collect(&config, &mut gpu).unwrap();
    let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
    for i in 0..40 {
        let d = row_distance(&out.samples, &reference.samples, 2, i);
        assert!(d <= 1e-3, "particle {i} differs from the reference by {d}");
    }
}

#[test]
fn a_lost_device_gives_a_clear_error_not_a_panic_or_hang() {
    let Some(mut gpu) = gpu_engine("a_lost_device_gives_a_clear_error_not_a_panic_or_hang") else {
        return;
    };
    let config = default_config(1_000);
    run_collect(&config, &mut gpu).expect("a healthy device runs");
    // Destroying the device is how wgpu simulates a device loss (driver reset, GPU
    // removed): every later operation must fail with an error that says what to do.
    gpu.context().device.destroy();
    let err = run_collect(&config, &mut gpu).expect_err("a lost device cannot run");
    let message = err.to_string();
    assert!(message.contains("GPU error"), "{message}");
    assert!(
        message.contains("--batch") && message.contains("--backend cpu"),
        "the error should say what to do: {message}"
    );
}

/// Trajectories in D = 1, 3 (the vec4 kernels), 17 and 784 (the general-D kernels, one
/// workgroup per particle) against the f64 reference, with the same tolerance as in
/// D = 2; D = 784 with a training set of several chunk dispatches.
#[test]
fn gpu_matches_reference_in_any_dimension() {
    use memodiff::testing::engine::records::general_chunk_points;
    let Some(mut gpu) = gpu_engine("gpu_matches_reference_in_any_dimension") else {
        return;
    };
    for (dim, n_train, particles) in [
        (1, 6, 1_000),
        (3, 6, 1_000),
        (17, 40, 200),
        (784, general_chunk_points(784) + 70, 6),
    ] {
        let mut config = SampleConfig::new(scattered(n_train, dim, dim as u64));
        config.particles = particles as u64;
        let mut reference_engine = ReferenceEngine::new();
        let g = run_collect(&config, &mut gpu).unwrap();
        let r = run_collect(&config, &mut reference_engine).unwrap();
        assert_initial_noise_agrees(
            &format!("D = {dim}"),
            (&g.initial, NoiseSource::Gpu),
            (&r.initial, NoiseSource::Reference),
            config.seed,
            config.schedule.sigma2(1.0).sqrt(),
            dim,
        );
        assert_trajectories_agree(
            &format!("D = {dim}: gpu/reference"),
            &config,
            (&g.samples, &mut gpu),
            (&r.samples, &mut reference_engine),
            1e-3,
        );
    }
}

/// The general-D score against the f64 reference, the training set spread over several
/// chunk dispatches (the state carried in the storage buffer) and a ragged last tile.
#[test]
fn general_gpu_score_matches_reference_across_chunks() {
    use memodiff::testing::engine::records::general_chunk_points;
    let Some(mut gpu) = gpu_engine("general_gpu_score_matches_reference_across_chunks") else {
        return;
    };
    let schedule = VpSchedule::default();
    for (dim, n_train) in [
        (5, 2 * general_chunk_points(5) + 33),
        (784, general_chunk_points(784) + 1),
        // The largest D: the most loop iterations per invocation. One dispatch over these
        // 2,689 points would pass lavapipe's 65,535 iterations and silently end early (seen:
        // relative error ~1 instead of 1e-7); the query next to the last point notices.
        (4096, 3 * general_chunk_points(4096) + 1),
    ] {
        let data = scattered(n_train, dim, 11);
        // Query points near training points (so many weights matter) and one far away.
        let mut points: Vec<f32> = Vec::new();
        for (k, i) in [0, n_train / 2, n_train - 1].into_iter().enumerate() {
            points.extend(
                data.point(i)
                    .iter()
                    .map(|v| (0.9 * v + 0.01 * k as f64) as f32),
            );
        }
        points.extend((0..dim).map(|d| if d % 2 == 0 { 30.0 } else { -30.0 }));
        for tau in [0.01, 0.5] {
            let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
            let sigma2 = schedule.sigma2(tau);
            for (i, x) in points.chunks(dim).enumerate() {
                let x: Vec<f64> = x.iter().map(|v| *v as f64).collect();
                let r = reference::score(&data, &schedule, tau, &x);
                let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>().sqrt();
                let err = norm(&mut (0..dim).map(|d| scores[i * dim + d] as f64 - r[d]));
                // Relative to the terms (s m - x) / sigma2, as for the million-point test.
                let scale = norm(&mut r.iter().copied()).max(norm(&mut x.iter().copied()) / sigma2);
                assert!(
                    err / scale < 1e-4,
                    "D = {dim}, tau {tau}, point {i}: error {err} of {scale}"
                );
            }
        }
    }
}

/// Batching and the dispatch grid do not change general-D results, bit for bit.
#[test]
fn general_gpu_results_do_not_depend_on_batch_size() {
    let Some(mut gpu) = gpu_engine("general_gpu_results_do_not_depend_on_batch_size") else {
        return;
    };
    let mut config = SampleConfig::new(scattered(30, 9, 4));
    config.particles = 101;
    config.time_points = 20;
    let whole = run_collect(&config, &mut gpu).unwrap();
    config.batch = Some(17);
    let batched = run_collect(&config, &mut gpu).unwrap();
    assert_eq!(whole.samples, batched.samples);
    assert_eq!(whole.initial, batched.initial);
    let mut cpu = CpuEngine::new();
    let c = run_collect(&config, &mut cpu).unwrap();
    assert_trajectories_agree(
        "D = 9: gpu/cpu",
        &config,
        (&whole.samples, &mut gpu),
        (&c.samples, &mut cpu),
        1e-3,
    );
}

/// The trajectory check itself (no GPU needed): a run whose last particle is wrong fails
/// it, as a wrong last workgroup would, rather than passing as one of 0.1% outliers.
#[test]
#[should_panic(expected = "particle 1999 ends")]
fn a_wrong_last_particle_fails_the_trajectory_check() {
    let mut config = default_config(2_000);
    config.time_points = 30;
    let (mut cpu, mut reference) = (CpuEngine::new(), ReferenceEngine::new());
    let c = run_collect(&config, &mut cpu).unwrap();
    let mut r = run_collect(&config, &mut reference).unwrap();
    let last = r.samples.len() - 2;
    r.samples[last] += 0.5;
    assert_trajectories_agree(
        "cpu/corrupted reference",
        &config,
        (&c.samples, &mut cpu),
        (&r.samples, &mut reference),
        1e-3,
    );
}

/// The default batch of 2^22 particles and a partial batch in the D <= 4 kernels (4.2M
/// particles: init_noise's one invocation each needs 65,625 workgroups of 64, a 2-D grid;
/// the step's two particles per invocation need 32,813, one row; the step's 2-D grid is
/// tested in gpu_kernels.rs, small_d_score_covers_a_two_dimensional_grid) and more than
/// 65,535 workgroups in the general-D ones (one workgroup per particle, 70,000 of them),
/// every particle checked, the last rows of the grid included.
#[test]
fn the_two_dimensional_dispatch_grid_covers_every_particle() {
    let Some(mut gpu) = gpu_engine("the_two_dimensional_dispatch_grid_covers_every_particle")
    else {
        return;
    };
    for (data, particles) in [
        (Dataset::circle(8).unwrap(), 4_200_000u64),
        (scattered(4, 5, 7), 70_000),
    ] {
        let dim = data.dim;
        let mut config = SampleConfig::new(data);
        config.particles = particles;
        config.time_points = 3;
        let mut cpu = CpuEngine::new();
        let g = run_collect(&config, &mut gpu).unwrap();
        let c = run_collect(&config, &mut cpu).unwrap();
        assert_trajectories_agree(
            &format!("2-D grid, D = {dim}, {particles} particles"),
            &config,
            (&g.samples, &mut gpu),
            (&c.samples, &mut cpu),
            1e-3,
        );
    }
}
