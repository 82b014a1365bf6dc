//! The GPU kernels shaped for hardware: the flash-attention-shaped general-D kernels
//! (D > 4: a workgroup per tile of particles, training points streamed in tiles) against
//! their CPU twins (same arithmetic order: only exp's ulps and contractions differ) and
//! the f64 reference, at particle-tile and point-tile boundaries, over chunked
//! dispatches and over a 2-D dispatch grid. Runs on any adapter (CI: lavapipe).

mod common;

use common::{gpu_engine, gpu_engine_with, row_distance, scattered};
use memodiff::testing::engine::cpu::em_step_general::em_step_general;
use memodiff::testing::engine::cpu::heun_step::heun_half_step_general;
use memodiff::testing::engine::cpu::reduce_general::score_points_general;
use memodiff::testing::engine::cpu::score::{pad_training, score_points};
use memodiff::testing::engine::gpu::engine::{Reduction, PARTICLES_PER_INVOCATION};
use memodiff::testing::engine::gpu::GpuEngine;
use memodiff::testing::engine::layout::{pad_general, padded_width};
use memodiff::testing::engine::records::{HeunParams, StepParams, GENERAL_PARTICLES, GENERAL_TILE};
use memodiff::testing::engine::reference::{self, ReferenceEngine};
use memodiff::testing::engine::SamplerKind;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::philox::seed_key;
use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

/// Dimensions of the general-D kernels under test: just past the vec4 kernels, ragged
/// columns (17 = 4 columns + 1), one particle block of workgroup memory (64), and an
/// image (784: 13 blocks of 16 columns, 49 owned columns per invocation).
const DIMENSIONS: [usize; 4] = [5, 17, 64, 784];

/// Training points: not a multiple of the point tile (64) nor of the forced chunk (256),
/// so the last tile of the last chunk is ragged.
fn n_train_for(dim: usize) -> usize {
    if dim >= 784 {
        2 * 256 + GENERAL_TILE + 7
    } else {
        3 * 256 + 2 * GENERAL_TILE + 9
    }
}

/// Particles: not a multiple of the particle tile (16), so the last workgroup has rows
/// past the batch (computed on zeros, never stored).
fn particles_for(dim: usize) -> usize {
    if dim >= 784 {
        2 * GENERAL_PARTICLES + 3
    } else {
        5 * GENERAL_PARTICLES + 11
    }
}

fn print_adapter(gpu: &GpuEngine, test: &str) {
    let ctx = gpu.context();
    eprintln!(
        "{test}: adapter {} (software: {})",
        ctx.adapter_name(),
        ctx.is_software()
    );
}

/// Query points near training points (many weights matter) plus one far from all.
fn queries_near(data: &Dataset, count: usize) -> Vec<f32> {
    let dim = data.dim;
    let mut points = Vec::new();
    for k in 0..count - 1 {
        let i = (k * 37) % data.len();
        points.extend(
            data.point(i)
                .iter()
                .enumerate()
                .map(|(d, v)| (0.9 * v + 0.02 * ((k + d) % 5) as f64) as f32),
        );
    }
    points.extend((0..dim).map(|d| if d % 2 == 0 { 3.0 } else { -3.0 }));
    points
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|a| a * a).sum::<f64>().sqrt()
}

/// The score kernel against the twin (every coordinate) and the f64 reference, with the
/// training set over several chunk dispatches (state carried in the storage buffer).
#[test]
fn flash_score_matches_twin_and_reference_at_tile_boundaries() {
    let test = "flash_score_matches_twin_and_reference_at_tile_boundaries";
    let Some(mut gpu) = gpu_engine(test) else {
        return;
    };
    print_adapter(&gpu, test);
    let schedule = VpSchedule::default();
    for dim in DIMENSIONS {
        let data = scattered(n_train_for(dim), dim, dim as u64);
        let points = queries_near(&data, particles_for(dim));
        let padded = pad_general(&data.points, dim);
        for chunk in [Some(256), None] {
            gpu.set_chunk_points(chunk);
            for tau in [0.01, 0.3] {
                let step = StepParams::for_score(&schedule, tau);
                let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
                let twin = score_points_general(&points, dim, &padded, &step);
                let sigma2 = schedule.sigma2(tau);
                for (i, x) in points.chunks(dim).enumerate() {
                    let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
                    let r = reference::score(&data, &schedule, tau, &x64);
                    // Relative to the terms (s m - x) / sigma2.
                    let scale = norm(r.iter().copied()).max(norm(x64.iter().copied()) / sigma2);
                    let row = i * dim..(i + 1) * dim;
                    let to_twin = norm(
                        scores[row.clone()]
                            .iter()
                            .zip(&twin[row.clone()])
                            .map(|(g, t)| (*g - *t) as f64),
                    );
                    let to_reference = norm(scores[row].iter().zip(&r).map(|(g, r)| *g as f64 - r));
                    assert!(
                        to_twin / scale < 1e-5,
                        "D = {dim}, chunk {chunk:?}, tau {tau}, point {i}: twin differs by \
                         {to_twin} of {scale}"
                    );
                    assert!(
                        to_reference / scale < 1e-4,
                        "D = {dim}, chunk {chunk:?}, tau {tau}, point {i}: reference differs \
                         by {to_reference} of {scale}"
                    );
                }
            }
        }
    }
}

/// Euler–Maruyama and Heun trajectories of the general-D step kernels against their
/// twins run from the GPU's own initial noise (every particle, every coordinate), and
/// against the f64 reference.
#[test]
fn flash_steps_match_twins_and_reference_at_tile_boundaries() {
    let test = "flash_steps_match_twins_and_reference_at_tile_boundaries";
    let Some(mut gpu) = gpu_engine(test) else {
        return;
    };
    print_adapter(&gpu, test);
    gpu.set_chunk_points(Some(256));
    for dim in DIMENSIONS {
        for sampler in [SamplerKind::Em, SamplerKind::Heun, SamplerKind::Ddim] {
            let data = scattered(n_train_for(dim), dim, 3 + dim as u64);
            let particles = particles_for(dim);
            let mut config = SampleConfig::new(data.clone());
            config.particles = particles as u64;
            config.time_points = 6;
            config.sampler = sampler;
            let g = run_collect(&config, &mut gpu).unwrap();
            let twin = twin_trajectories(&config, &g.initial);
            let r = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
            let mut worst_twin = 0f32;
            let mut worst_reference = 0f32;
            for i in 0..particles {
                worst_twin = worst_twin.max(row_distance(&g.samples, &twin, dim, i));
                worst_reference = worst_reference.max(row_distance(&g.samples, &r.samples, dim, i));
            }
            eprintln!(
                "D = {dim} {sampler:?}: worst |gpu - twin| {worst_twin:e}, \
                 |gpu - reference| {worst_reference:e}"
            );
            // Heun and DDIM have no noise: only the softmax's exp differs from the twin. EM adds the
            // Box–Muller normals, whose log and cos WGSL lets a conforming GPU compute to
            // 2^-21 and 2^-11 absolute (lavapipe: within 1e-4 here), scaled up by the
            // last steps' coefficients: the reference's bound.
            let bound = match sampler {
                SamplerKind::Heun | SamplerKind::Ddim => 1e-4,
                SamplerKind::Em => 1e-3,
            };
            assert!(
                worst_twin < bound,
                "D = {dim} {sampler:?}: a particle differs from the twin by {worst_twin}"
            );
            assert!(
                worst_reference < 1e-3,
                "D = {dim} {sampler:?}: a particle differs from the reference by \
                 {worst_reference}"
            );
        }
    }
}

/// The twins' trajectories (em_step_general / heun_half_step_general) from `initial`.
fn twin_trajectories(config: &SampleConfig, initial: &[f32]) -> Vec<f32> {
    let dim = config.dataset.dim;
    let width = padded_width(dim);
    let training = pad_general(&config.dataset.points, dim);
    let steps = reverse_steps(&config.schedule, config.time_points);
    let key = seed_key(config.seed);
    let mut out = Vec::with_capacity(initial.len());
    for (i, row) in initial.chunks(dim).enumerate() {
        let mut x = vec![0f32; width];
        x[..dim].copy_from_slice(row);
        let mut partial = vec![0f32; width];
        for (k, step) in steps.iter().enumerate() {
            match config.sampler {
                SamplerKind::Em => em_step_general(
                    &mut x,
                    dim,
                    &training,
                    &StepParams::from_step(step),
                    key,
                    i as u64,
                ),
                SamplerKind::Ddim => em_step_general(
                    &mut x,
                    dim,
                    &training,
                    &StepParams::ddim(&config.schedule, step),
                    key,
                    i as u64,
                ),
                SamplerKind::Heun => {
                    for half in HeunParams::for_step(&steps, k) {
                        heun_half_step_general(&mut x, dim, &training, &half, &mut partial);
                    }
                }
            }
        }
        out.extend_from_slice(&x[..dim]);
    }
    out
}

/// More than 65,535 workgroups: the general-D grid spills into a second row. Every query
/// point (the last workgroup's, past the first row, included) matches the twin, and the
/// grid's rows are balanced.
#[test]
fn flash_score_covers_a_two_dimensional_grid() {
    let test = "flash_score_covers_a_two_dimensional_grid";
    let Some(mut gpu) = gpu_engine(test) else {
        return;
    };
    print_adapter(&gpu, test);
    let max_x = gpu.context().limits.max_compute_workgroups_per_dimension as usize;
    let dim = 5;
    let n = max_x * GENERAL_PARTICLES + 2 * GENERAL_PARTICLES + 5;
    let (gx, gy) = gpu.general_grid(n);
    assert!(gy >= 2, "{n} particles fit one row of {max_x} workgroups");
    let groups = n.div_ceil(GENERAL_PARTICLES);
    assert!((gx as usize) * (gy as usize) >= groups);
    assert!(
        (gx as usize) * (gy as usize) - groups < gy as usize,
        "unbalanced grid {gx} x {gy} for {groups} workgroups"
    );
    let data = scattered(9, dim, 17);
    let mut points = vec![0f32; n * dim];
    // Every query point distinct (an LCG), so a misplaced workgroup shows.
    let mut state = 12345u64;
    for v in points.iter_mut() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *v = ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    }
    let schedule = VpSchedule::default();
    let tau = 0.2;
    let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
    let twin = score_points_general(
        &points,
        dim,
        &pad_general(&data.points, dim),
        &StepParams::for_score(&schedule, tau),
    );
    let mut worst = 0f32;
    let mut worst_at = 0;
    for i in 0..n {
        let d = row_distance(&scores, &twin, dim, i);
        if d > worst {
            (worst, worst_at) = (d, i);
        }
    }
    // Scores are O(1 / sigma2) ~ 5 here: a few f32 ulps of that.
    assert!(
        worst < 1e-4,
        "point {worst_at} of {n}: GPU and twin scores differ by {worst}"
    );
    // The last workgroup (second row, mostly past the batch) wrote its live particles.
    let last = n - 1;
    assert!(row_distance(&scores, &twin, dim, last) < 1e-4);
    assert!(scores[last * dim..]
        .iter()
        .all(|v| v.is_finite() && *v != 0.0));
}

/// A run cut into segments (posterior records observe the particles every few steps, so
/// the sampler calls the engine once per segment and the engine keeps the particles on
/// the device between them instead of uploading them again) ends bit-identical to the
/// same run in one segment, in D <= 4 and D > 4.
#[test]
fn segmented_gpu_runs_match_whole_runs_bit_for_bit() {
    let test = "segmented_gpu_runs_match_whole_runs_bit_for_bit";
    let Some(gpu) = gpu_engine(test) else {
        return;
    };
    print_adapter(&gpu, test);
    drop(gpu);
    let dir = tempfile::tempdir().unwrap();
    for dataset in ["circle:8", "gaussian:70:17"] {
        let mut outputs = Vec::new();
        for records in ["0", "7"] {
            let out = dir
                .path()
                .join(format!("{}-{records}", dataset.replace(':', "-")));
            let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("memodiff"))
                .args(["sample", "--backend", "gpu", "--dataset", dataset])
                .args(["--particles", "300", "--steps", "30", "--force"])
                .args(["--posterior-records", records, "--out"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                status.status.success(),
                "{dataset}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            outputs.push(std::fs::read(out.join("samples.npy")).unwrap());
        }
        assert!(
            outputs[0] == outputs[1],
            "{dataset}: segmented and whole runs differ"
        );
    }
}

/// Deterministic query points in [-1.5, 1.5]^dim (an LCG): every one distinct, so a
/// particle written to the wrong slot shows.
fn lcg_points(n: usize, dim: usize, salt: u64) -> Vec<f32> {
    let mut state = salt;
    (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 3.0 - 1.5
        })
        .collect()
}

/// Worst distance between GPU and twin scores over all points, and where.
fn worst_row(gpu: &[f32], twin: &[f32], dim: usize) -> (f32, usize) {
    (0..gpu.len() / dim)
        .map(|i| (row_distance(gpu, twin, dim, i), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The D <= 4 kernels (LANES specialised to D, base-2 potentials, two particles per
/// invocation) against the twin for D = 1, 2, 3, 4, simple and tiled, one dispatch and
/// chunked, at batch tails: the particle counts leave the last workgroup with its first
/// slots live and its second slots past the batch (and one count leaves a lone particle).
/// Each particle's bits do not depend on the workgroup size nor on the batch it is in.
#[test]
fn small_d_scores_match_the_twin_at_batch_tails_for_every_dimension() {
    let test = "small_d_scores_match_the_twin_at_batch_tails_for_every_dimension";
    let (Some(mut wide), Some(mut narrow)) = (gpu_engine_with(test, 64), gpu_engine_with(test, 3))
    else {
        return;
    };
    print_adapter(&wide, test);
    assert_eq!(PARTICLES_PER_INVOCATION, 2);
    let schedule = VpSchedule::default();
    let tau = 0.3;
    for dim in 1..=4 {
        // 300 points: one full tile of 256 and a ragged one.
        let data = scattered(300, dim, 40 + dim as u64);
        let training = pad_training(&data.points, dim);
        let step = StepParams::for_score(&schedule, tau);
        for n in [1, 2 * 64 + 37, 3 * 2 * 64 + 64 + 5] {
            let points = lcg_points(n, dim, 7 * n as u64 + dim as u64);
            let twin = score_points(&points, dim, &training, &step);
            for reduction in [Reduction::Simple, Reduction::Tiled] {
                for chunk in [None, Some(256)] {
                    let mut results = Vec::new();
                    for gpu in [&mut wide, &mut narrow] {
                        gpu.set_reduction(reduction);
                        gpu.set_chunk_points(chunk);
                        let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
                        let (worst, at) = worst_row(&scores, &twin, dim);
                        // Scores are O(1 / sigma2) ~ 4 here: a few f32 ulps of that.
                        assert!(
                            worst < 1e-4,
                            "D = {dim}, n = {n}, {reduction:?}, chunk {chunk:?}: point {at} \
                             differs from the twin by {worst}"
                        );
                        results.push(scores);
                    }
                    assert!(
                        results[0]
                            .iter()
                            .zip(&results[1])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "D = {dim}, n = {n}, {reduction:?}: workgroup sizes 64 and 3 differ"
                    );
                    // The last particle alone (slot 0 of a workgroup whose other slots are
                    // all past the batch) gets the bits it got inside the batch.
                    let last = &points[(n - 1) * dim..];
                    let alone = wide.evaluate_score(&data, &schedule, tau, last).unwrap();
                    assert!(
                        alone
                            .iter()
                            .zip(&results[0][(n - 1) * dim..])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "D = {dim}, n = {n}, {reduction:?}: last particle alone differs"
                    );
                }
            }
        }
    }
}

/// More than 65,535 workgroups in a D <= 4 dispatch (workgroups of 1 invocation, so two
/// particles each): the grid spills into a second row, and the shaders find their
/// particles from the grid's shape. Every point, the second row's included, matches the
/// twin.
#[test]
fn small_d_score_covers_a_two_dimensional_grid() {
    let test = "small_d_score_covers_a_two_dimensional_grid";
    let Some(mut gpu) = gpu_engine_with(test, 1) else {
        return;
    };
    print_adapter(&gpu, test);
    let max_x = gpu.context().limits.max_compute_workgroups_per_dimension as usize;
    let dim = 2;
    let n = PARTICLES_PER_INVOCATION * (max_x + 2) + 1;
    let data = scattered(40, dim, 3);
    let points = lcg_points(n, dim, 99);
    let schedule = VpSchedule::default();
    let tau = 0.3;
    let twin = score_points(
        &points,
        dim,
        &pad_training(&data.points, dim),
        &StepParams::for_score(&schedule, tau),
    );
    for reduction in [Reduction::Simple, Reduction::Tiled] {
        gpu.set_reduction(reduction);
        let scores = gpu.evaluate_score(&data, &schedule, tau, &points).unwrap();
        let (worst, at) = worst_row(&scores, &twin, dim);
        assert!(
            worst < 1e-4,
            "{reduction:?}: point {at} of {n} differs from the twin by {worst}"
        );
    }
}
