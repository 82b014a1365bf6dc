//! The GPU's patch-score kernels (shaders/patch_denoise.wgsl and its update stages)
//! against the cpu engine and the f64 reference, particle by particle: every locality,
//! 1 and 3 channels, em and heun, dictionaries larger than a shared-memory tile and than
//! a dispatch's chunk, batches across workgroups; `local:k` covering the image against
//! the empirical score; and what the GPU refuses.

mod common;

use common::gpu_engine;
use common::images::{images, patch};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::reference::ReferenceEngine;
use memodiff::testing::engine::{backend_for_score, Backend, SamplerKind};
use memodiff::testing::model::dataset::ImageShape;
use memodiff::testing::model::patch_score::PatchPlan;
use memodiff::testing::model::schedule::ScoreKind;
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

/// The largest coordinate difference of each particle (rows of `dim`).
fn particle_differences(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(u, v)| (u - v).abs())
                .fold(0f32, f32::max)
        })
        .collect()
}

fn assert_every_particle_within(what: &str, a: &[f32], b: &[f32], dim: usize, bound: f32) {
    assert_eq!(a.len(), b.len(), "{what}: sample counts");
    for (i, d) in particle_differences(a, b, dim).iter().enumerate() {
        assert!(
            *d < bound,
            "{what}: particle {i} differs by {d} (bound {bound})"
        );
    }
}

/// Whole trajectories, every particle: the GPU against the cpu engine and the reference.
/// Along a trajectory a near-tie of a pixel's posterior amplifies f32 round-off (measured
/// on these cases: the cpu engine within 4e-4 of the reference, the GPU within 1.3e-3),
/// hence the bound of 5e-3; a step's own error is checked tightly by
/// `one_step_from_common_states_agrees_with_the_reference`.
#[test]
fn the_gpu_follows_the_cpu_engine_and_the_reference_particle_by_particle() {
    let Some(mut gpu) = gpu_engine("gpu patch scores") else {
        return;
    };
    // (score, shape, sampler): the cases of the cpu engine's own test
    // (tests/patch_scores.rs), 6 images, 11 particles.
    for (text, (h, w, c), sampler) in [
        ("local:3", (5, 6, 1), SamplerKind::Em),
        ("els:3", (5, 6, 1), SamplerKind::Heun),
        ("bbels:3", (7, 9, 3), SamplerKind::Em),
        ("bbels:5", (7, 9, 3), SamplerKind::Heun),
        ("els:5", (6, 6, 3), SamplerKind::Ddim),
    ] {
        let mut config = SampleConfig::new(images(6, h, w, c, 3));
        config.score = ScoreKind::Patch(patch(text));
        config.particles = 11;
        config.time_points = 40;
        config.sampler = sampler;
        let dim = h * w * c;
        let on_gpu = run_collect(&config, &mut gpu).unwrap();
        let cpu = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        let what = format!("{text} {sampler:?}");
        // The same initial noise (the random-number contract), then the same paths.
        assert_every_particle_within(
            &format!("{what}: initial"),
            &on_gpu.initial,
            &reference.initial,
            dim,
            1e-4,
        );
        for (other, name) in [(&cpu, "cpu"), (&reference, "reference")] {
            assert_every_particle_within(
                &format!("{what}: gpu vs {name}"),
                &on_gpu.samples,
                &other.samples,
                dim,
                5e-3,
            );
        }
        // Particles are independent: batches of 3 give the same bits.
        config.batch = Some(3);
        let split = run_collect(&config, &mut gpu).unwrap();
        assert_eq!(
            split.samples, on_gpu.samples,
            "{what}: batches of 3 changed the bits"
        );
    }
}

/// A dictionary of 80 × 36 = 2,880 patches: several shared-memory tiles (455 patches of 9
/// values) and, on a software adapter, two dispatch chunks (2,520 patches); 70 particles:
/// one workgroup of 64 and part of a second. Batches of 33 and 64 give the bits of one
/// batch (the agreement of each step with the reference is in the one-step test).
#[test]
fn tiles_chunks_and_workgroups_do_not_change_the_bits() {
    let Some(mut gpu) = gpu_engine("gpu patch batches") else {
        return;
    };
    let mut config = SampleConfig::new(images(80, 8, 8, 1, 3));
    config.score = ScoreKind::Patch(patch("els:3"));
    config.particles = 70;
    config.time_points = 10;
    let whole = run_collect(&config, &mut gpu).unwrap();
    for batch in [33, 64] {
        config.batch = Some(batch);
        let split = run_collect(&config, &mut gpu).unwrap();
        assert_eq!(split.samples, whole.samples, "batches of {batch}");
    }
}

#[test]
fn a_local_score_covering_the_image_is_the_empirical_score_on_the_gpu() {
    let Some(mut gpu) = gpu_engine("gpu local score covering the image") else {
        return;
    };
    for (h, w, c) in [(3, 3, 1), (3, 5, 1), (3, 3, 3)] {
        let dataset = images(5, h, w, c, 2);
        let k = (2 * h - 1).max(2 * w - 1);
        let mut config = SampleConfig::new(dataset);
        config.particles = 10;
        config.time_points = 30;
        let empirical = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        config.score = ScoreKind::Patch(patch(&format!("local:{k}")));
        let local = run_collect(&config, &mut gpu).unwrap();
        assert_every_particle_within(
            &format!("{h}x{w}x{c} local:{k}"),
            &local.samples,
            &empirical.samples,
            h * w * c,
            1e-3,
        );
    }
}

#[test]
fn patches_the_gpu_kernels_cannot_hold_are_refused_or_run_on_the_cpu() {
    // 5 channels: more than the kernels' vec4 of centre channels.
    let five = ImageShape {
        height: 4,
        width: 4,
        channels: 5,
    };
    let plan = PatchPlan::new(patch("els:3"), Some(five), 10, None).unwrap();
    let err = backend_for_score(Backend::Gpu, None, Some(&plan)).unwrap_err();
    assert!(err.to_string().contains("at most 4 channels"), "{err}");
    let (backend, note) = backend_for_score(Backend::Auto, None, Some(&plan)).unwrap();
    assert_eq!(backend, Backend::Cpu);
    assert!(note.unwrap().contains("at most 4 channels"));
    // 19 × 19 values: more than a patch the kernels hold in registers.
    let gray = ImageShape {
        height: 10,
        width: 10,
        channels: 1,
    };
    let plan = PatchPlan::new(patch("local:19"), Some(gray), 10, None).unwrap();
    let err = backend_for_score(Backend::Gpu, None, Some(&plan)).unwrap_err();
    assert!(err.to_string().contains("at most 256 values"), "{err}");
    // What the kernels hold stays on the backend asked for.
    let plan = PatchPlan::new(patch("els:3"), Some(gray), 10, None).unwrap();
    assert_eq!(
        backend_for_score(Backend::Auto, None, Some(&plan)).unwrap(),
        (Backend::Auto, None)
    );
    // And the engine itself refuses them before running anything.
    let Some(mut gpu) = gpu_engine("gpu patch refusal") else {
        return;
    };
    let mut config = SampleConfig::new(images(3, 4, 4, 5, 1));
    config.score = ScoreKind::Patch(patch("els:3"));
    config.particles = 2;
    let err = run_collect(&config, &mut gpu).unwrap_err();
    assert!(err.to_string().contains("at most 4 channels"), "{err}");
}

/// One step of each engine from the same states: the reference's positions after steps
/// `0..k`, for an early, a middle and the last step. Without a trajectory before it, a
/// step's difference between engines is the kernels' own (f32 against f64), not the
/// amplification of earlier differences by near-ties of the posterior.
#[test]
fn one_step_from_common_states_agrees_with_the_reference() {
    use memodiff::testing::engine::{BatchWork, Engine, Problem};
    use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};
    let Some(mut gpu) = gpu_engine("gpu patch one step") else {
        return;
    };
    for (text, n, (h, w, c), particles, sampler) in [
        ("els:3", 80, (8, 8, 1), 70, SamplerKind::Em),
        ("els:5", 6, (6, 6, 3), 11, SamplerKind::Ddim),
        ("bbels:3", 6, (7, 9, 3), 11, SamplerKind::Heun),
    ] {
        let dataset = images(n, h, w, c, 3);
        let schedule = VpSchedule::default();
        let steps = reverse_steps(&schedule, 30);
        let plan = PatchPlan::new(patch(text), dataset.image_shape, steps.len(), None).unwrap();
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 5,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler,
            patch: Some(&plan),
        };
        let dim = h * w * c;
        for k in [0, steps.len() / 2, steps.len() - 1] {
            let mut start = vec![0f32; particles * dim];
            let mut initial = vec![0f32; particles * dim];
            ReferenceEngine::new()
                .advance_batch(
                    &problem,
                    BatchWork::new(0, Some(&mut initial), &mut start, 0..k),
                )
                .unwrap();
            let step = |engine: &mut dyn Engine| {
                let mut state = start.clone();
                engine
                    .advance_batch(&problem, BatchWork::new(0, None, &mut state, k..k + 1))
                    .unwrap();
                state
            };
            let reference = step(&mut ReferenceEngine::new());
            let on_gpu = step(&mut gpu);
            let cpu = step(&mut CpuEngine::new());
            let worst = |a: &[f32], b: &[f32]| {
                particle_differences(a, b, dim)
                    .into_iter()
                    .fold(0f32, f32::max)
            };
            // Before the last step a step's f32 error is round-off (measured: 1e-6 on
            // positions of magnitude 3); at the last, sigma2 is small, the logits are
            // large and their f32 round-off moves the sharp weights (measured: 1.5e-4).
            let bound = if k + 1 == steps.len() { 1e-3 } else { 1e-5 };
            let what = format!("{text} {sampler:?} step {k}");
            eprintln!(
                "{what}: gpu {:.2e}, cpu {:.2e} from the reference",
                worst(&on_gpu, &reference),
                worst(&cpu, &reference)
            );
            assert_every_particle_within(&format!("{what}: gpu"), &on_gpu, &reference, dim, bound);
            assert_every_particle_within(&format!("{what}: cpu"), &cpu, &reference, dim, bound);
        }
    }
}

/// Dictionaries over one buffer (here capped by `MEMODIFF_GPU_DICTIONARY_BUFFER`) are
/// split by images into slices of one buffer each, the softmax carried over them: the
/// same samples as held in one buffer. A cap under one image's patches is refused, and
/// a cap that is not a number, before anything is written.
#[test]
fn dictionaries_over_one_buffer_are_split_by_images_with_the_same_samples() {
    if gpu_engine("gpu dictionary slices").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    // Forty 7 × 9 grey images: 35 els:3 patches of 9 values, 1,260 bytes, per image; a
    // cap of 4 KiB holds 3 images per buffer, 14 buffers.
    let dataset = images(40, 7, 9, 1, 11);
    let values: Vec<f32> = dataset.points.iter().map(|&v| v as f32).collect();
    common::npy::write_f32(&data, &[40, 7, 9], &values);
    let run = |cap: &str, out: &str| {
        let out = dir.path().join(out);
        let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("memodiff"))
            .env("MEMODIFF_GPU_DICTIONARY_BUFFER", cap)
            .args(["sample", "--backend", "gpu", "--score", "els:3"])
            .args([
                "--particles",
                "24",
                "--steps",
                "12",
                "--posterior-records",
                "0",
            ])
            .arg("--dataset")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        (output, out)
    };
    let (whole, whole_out) = run("", "whole");
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let (sliced, sliced_out) = run("4", "sliced");
    assert!(
        sliced.status.success(),
        "{}",
        String::from_utf8_lossy(&sliced.stderr)
    );
    for name in ["samples.npy", "initial.npy"] {
        let a = std::fs::read(whole_out.join(name)).unwrap();
        let b = std::fs::read(sliced_out.join(name)).unwrap();
        assert!(a == b, "{name} differs with the dictionaries in slices");
    }
    for (cap, says) in [
        (
            "1",
            "needs 1260 bytes of training patches per image in one GPU buffer, over its 1024",
        ),
        ("a lot", "is not a positive whole number of KiB"),
    ] {
        let (refused, out) = run(cap, "refused");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(says),
            "{cap}: {stderr}"
        );
        assert!(
            !out.exists(),
            "{cap}: the refused run wrote {}",
            out.display()
        );
    }
}
