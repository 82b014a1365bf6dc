//! The patch-local scores (`--score local:k`, `els:k`, `bbels:k`): the f64 reference
//! against a brute force written here from the definitions, `local:k` covering the image
//! against the empirical score, the cpu engine against the reference per particle, and the
//! majority rule of `els:3` on two constant images (Kamb & Ganguli, Fig. 3).

mod common;

use common::images::{images, noise, patch};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::reference::{score_with, ReferenceEngine};
use memodiff::testing::engine::SamplerKind;
use memodiff::testing::model::dataset::{Dataset, ImageShape};
use memodiff::testing::model::patch_score::{self, PatchScore};
use memodiff::testing::model::schedule::{ScoreKind, VpSchedule};
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

/// The patch score from its definition, one pixel and one candidate patch at a time: the
/// noisy image's window (circular for els, zero outside otherwise) against every training
/// image's window at every position the pixel may use (els: wholly inside; local: its own;
/// bbels: its own along an axis where it is within r of an edge, the interior ones
/// otherwise), training windows zero outside.
fn brute_force(score: PatchScore, dataset: &Dataset, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
    let ImageShape {
        height: h,
        width: w,
        channels: c,
    } = dataset.image_shape.unwrap();
    let r = (score.k / 2) as isize;
    let (hi, wi) = (h as isize, w as isize);
    let at = |image: &[f64], y: isize, x: isize, ch: usize| -> f64 {
        if (0..hi).contains(&y) && (0..wi).contains(&x) {
            image[(y as usize * w + x as usize) * c + ch]
        } else {
            0.0
        }
    };
    let edge = |i: isize, len: isize| i < r || i >= len - r;
    let mut out = vec![0.0; x.len()];
    for i in 0..hi {
        for j in 0..wi {
            let usable = |y: isize, xx: isize| match score.locality.name() {
                "local" => y == i && xx == j,
                "els" => y >= r && y < hi - r && xx >= r && xx < wi - r,
                _ => {
                    let row = if edge(i, hi) {
                        y == i
                    } else {
                        y >= r && y < hi - r
                    };
                    let col = if edge(j, wi) {
                        xx == j
                    } else {
                        xx >= r && xx < wi - r
                    };
                    row && col
                }
            };
            let mut logits = Vec::new();
            let mut centres = Vec::new();
            for n in 0..dataset.len() {
                let image = dataset.point(n);
                for y in 0..hi {
                    for xx in 0..wi {
                        if !usable(y, xx) {
                            continue;
                        }
                        let mut d2 = 0.0;
                        for dy in -r..=r {
                            for dx in -r..=r {
                                for ch in 0..c {
                                    let (qy, qx) = (i + dy, j + dx);
                                    let q = if score.locality.name() == "els" {
                                        at(x, qy.rem_euclid(hi), qx.rem_euclid(wi), ch)
                                    } else {
                                        at(x, qy, qx, ch)
                                    };
                                    d2 += (q - s * at(image, y + dy, xx + dx, ch)).powi(2);
                                }
                            }
                        }
                        logits.push(-d2 / (2.0 * v));
                        centres.push((0..c).map(|ch| at(image, y, xx, ch)).collect::<Vec<_>>());
                    }
                }
            }
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for ch in 0..c {
                let m: f64 = weights
                    .iter()
                    .zip(&centres)
                    .map(|(w, a)| w * a[ch])
                    .sum::<f64>()
                    / total;
                let p = ((i * wi + j) as usize) * c + ch;
                out[p] = (s * m - x[p]) / v;
            }
        }
    }
    out
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn the_reference_is_the_definition_for_every_locality() {
    let schedule = VpSchedule::default();
    // 7 x 9 images of 3 channels, as the issue asks for bbels; local and els alike.
    let dataset = images(4, 7, 9, 3, 1);
    for text in ["bbels:3", "bbels:5", "els:3", "els:5", "local:3", "local:5"] {
        let geometry = patch(text).on(dataset.image_shape).unwrap();
        for (t, tau) in [0.9, 0.3, 0.05].into_iter().enumerate() {
            let (s, v) = (schedule.mean_scale(tau), schedule.sigma2(tau));
            let x: Vec<f64> = (0..dataset.dim)
                .map(|i| 1.5 * noise(i as u64, 100 + t as u64))
                .collect();
            let want = brute_force(patch(text), &dataset, s, v, &x);
            let got = patch_score::score(&geometry, &dataset, s, v, &x);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&want, &got);
            assert!(
                diff <= 1e-12 * scale,
                "{text} at tau {tau}: {diff} of {scale}"
            );
        }
    }
}

#[test]
fn a_local_score_covering_the_image_is_the_empirical_score() {
    let schedule = VpSchedule::default();
    for (h, w, c) in [(3, 3, 1), (3, 5, 1), (4, 2, 3)] {
        let dataset = images(5, h, w, c, 2);
        let k = (2 * h - 1).max(2 * w - 1);
        let geometry = patch(&format!("local:{k}"))
            .on(dataset.image_shape)
            .unwrap();
        for tau in [0.8, 0.2, 0.02] {
            let (s, v) = (schedule.mean_scale(tau), schedule.sigma2(tau));
            let x: Vec<f64> = (0..dataset.dim).map(|i| noise(i as u64, 7)).collect();
            let want = score_with(&dataset, s, v, &x);
            let got = patch_score::score(&geometry, &dataset, s, v, &x);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&want, &got) <= 1e-12 * scale,
                "{h}x{w}x{c} at {tau}"
            );
        }
        // The engines: the same samples as with the empirical score.
        let mut config = SampleConfig::new(dataset);
        config.particles = 10;
        config.time_points = 30;
        let empirical = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        config.score = ScoreKind::Patch(patch(&format!("local:{k}")));
        let local = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        let cpu = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            diff(&empirical.samples, &local.samples) < 1e-5,
            "{h}x{w}x{c}: reference"
        );
        assert!(
            diff(&empirical.samples, &cpu.samples) < 1e-3,
            "{h}x{w}x{c}: cpu"
        );
    }
}

#[test]
fn the_cpu_engine_follows_the_reference_particle_by_particle() {
    // Square and not, 1 and 3 channels; every locality; em and heun; the batch split.
    for (text, (h, w, c), sampler) in [
        ("local:3", (5, 6, 1), SamplerKind::Em),
        ("els:3", (5, 6, 1), SamplerKind::Heun),
        ("bbels:3", (7, 9, 3), SamplerKind::Em),
        ("bbels:5", (7, 9, 3), SamplerKind::Heun),
        ("els:5", (6, 6, 3), SamplerKind::Em),
    ] {
        let mut config = SampleConfig::new(images(6, h, w, c, 3));
        config.score = ScoreKind::Patch(patch(text));
        config.particles = 11;
        config.time_points = 40;
        config.sampler = sampler;
        let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        let cpu = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let dim = h * w * c;
        for (i, (a, b)) in reference
            .samples
            .chunks(dim)
            .zip(cpu.samples.chunks(dim))
            .enumerate()
        {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-3,
                "{text} {sampler:?}: particle {i} differs by {diff}"
            );
        }
        config.batch = Some(3);
        let split = run_collect(&config, &mut CpuEngine::new()).unwrap();
        assert_eq!(
            split.samples, cpu.samples,
            "{text}: batches of 3 changed the bits"
        );
    }
}

/// Fractions of pixels of `samples` (8 x 8 images) within 0.1 of ±1, and whose sign is
/// that of the sum of the signs over their circular 3 x 3 neighbourhood.
fn decided_and_majority(samples: &[f32]) -> (f64, f64) {
    let (mut near, mut majority, mut total) = (0usize, 0usize, 0usize);
    for image in samples.chunks(64) {
        let sign =
            |i: isize, j: isize| image[(i.rem_euclid(8) * 8 + j.rem_euclid(8)) as usize].signum();
        for i in 0..8isize {
            for j in 0..8isize {
                let v = image[(i * 8 + j) as usize];
                near += ((v.abs() - 1.0).abs() < 0.1) as usize;
                let sum: f32 = (-1..=1)
                    .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
                    .map(|(dy, dx)| sign(i + dy, j + dx))
                    .sum();
                majority += (sum.signum() == v.signum()) as usize;
                total += 1;
            }
        }
    }
    (near as f64 / total as f64, majority as f64 / total as f64)
}

#[test]
fn els_on_two_constant_images_follows_the_majority_rule() {
    // All -1 and all +1: a patch's posterior is between the all -1 and all +1 patches and
    // (Kamb & Ganguli, Fig. 3) each pixel settles on the sign of its neighbourhood.
    let mut points = vec![-1.0; 64];
    points.extend(vec![1.0; 64]);
    let mut dataset = Dataset::new("two constant images", 64, points).unwrap();
    dataset.image_shape = Some(ImageShape {
        height: 8,
        width: 8,
        channels: 1,
    });
    let mut config = SampleConfig::new(dataset);
    config.score = ScoreKind::Patch(patch("els:3"));
    config.particles = 200;
    for sampler in [SamplerKind::Heun, SamplerKind::Em] {
        config.sampler = sampler;
        let run = run_collect(&config, &mut CpuEngine::new()).unwrap();
        let (near, majority) = decided_and_majority(&run.samples);
        eprintln!(
            "els:3, {sampler:?}: {near:.4} of pixels near ±1, {majority:.4} follow the majority"
        );
        // Measured: heun 1.0000 and 0.9898, em 0.9948 and 0.9980. The rule holds exactly
        // only as t -> 0; the tutorial's last step leaves some pixels undecided. With em,
        // that last step has keep ≈ -0.96 and mean coefficient ≈ 1.96: a pixel whose
        // posterior flips there lands near -0.96 x + 1.96 m ≈ ±2.9, not near ±1.
        assert!(
            near >= 0.97 && majority >= 0.97,
            "{sampler:?}: {near}, {majority}"
        );
    }
}

/// Kamb & Ganguli's Theorem 4.1 at t -> 0: under `els:k` each pixel of a sample is the
/// centre of the training patch nearest to the sample's own (circular) patch around it.
/// The fraction of pixels within `tol` of that centre, by brute force in f64.
fn nearest_patch_agreement(dataset: &Dataset, samples: &[f32], k: usize, tol: f64) -> f64 {
    let ImageShape {
        height: h,
        width: w,
        ..
    } = dataset.image_shape.unwrap();
    let r = (k / 2) as isize;
    let (hi, wi) = (h as isize, w as isize);
    // Every wholly-inside training patch, with its centre.
    let mut patches: Vec<(Vec<f64>, f64)> = Vec::new();
    for n in 0..dataset.len() {
        let image = dataset.point(n);
        for i in r..hi - r {
            for j in r..wi - r {
                let patch = (-r..=r)
                    .flat_map(|dy| (-r..=r).map(move |dx| (dy, dx)))
                    .map(|(dy, dx)| image[((i + dy) * wi + j + dx) as usize])
                    .collect();
                patches.push((patch, image[(i * wi + j) as usize]));
            }
        }
    }
    let (mut agree, mut total) = (0usize, 0usize);
    for x in samples.chunks(h * w) {
        for i in 0..hi {
            for j in 0..wi {
                let own: Vec<f64> = (-r..=r)
                    .flat_map(|dy| (-r..=r).map(move |dx| (dy, dx)))
                    .map(|(dy, dx)| {
                        f64::from(
                            x[((i + dy).rem_euclid(hi) * wi + (j + dx).rem_euclid(wi)) as usize],
                        )
                    })
                    .collect();
                let distance =
                    |p: &[f64]| own.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
                let nearest = patches
                    .iter()
                    .min_by(|a, b| distance(&a.0).total_cmp(&distance(&b.0)))
                    .unwrap();
                agree += ((f64::from(x[(i * wi + j) as usize]) - nearest.1).abs() < tol) as usize;
                total += 1;
            }
        }
    }
    agree as f64 / total as f64
}

#[test]
fn els_samples_are_made_of_their_nearest_training_patches() {
    // Eight 8 x 8 images of blobs on a background: grey levels in 1/16 steps, as the digits.
    let mut points = Vec::new();
    for n in 0..8u64 {
        for p in 0..64u64 {
            let (i, j) = ((p / 8) as f64, (p % 8) as f64);
            let (ci, cj) = (
                2.0 + 4.0 * (noise(n, 31) + 1.0) / 2.0,
                2.0 + 4.0 * (noise(n, 37) + 1.0) / 2.0,
            );
            let level = (1.0 - ((i - ci).powi(2) + (j - cj).powi(2)) / 6.0).max(0.0);
            points.push((level * 16.0).round() / 16.0);
        }
    }
    let mut dataset = Dataset::new("blobs", 64, points).unwrap();
    dataset.image_shape = Some(ImageShape {
        height: 8,
        width: 8,
        channels: 1,
    });
    let mut config = SampleConfig::new(dataset.clone());
    config.score = ScoreKind::Patch(patch("els:3"));
    config.sampler = SamplerKind::Heun;
    config.particles = 40;
    let run = run_collect(&config, &mut CpuEngine::new()).unwrap();
    // Within half a grey level (measured: 0.958 here; 0.900 on the scikit-learn digits,
    // 100 particles, see docs/patch-scores.md).
    let fraction = nearest_patch_agreement(&dataset, &run.samples, 3, 1.0 / 32.0);
    eprintln!("els:3, heun: {fraction:.4} of pixels equal their nearest patch's centre");
    assert!(fraction >= 0.9, "{fraction}");
}

#[test]
fn a_patch_size_schedule_applies_each_steps_size() {
    let mut config = SampleConfig::new(images(6, 6, 7, 1, 4));
    config.particles = 9;
    config.time_points = 21;
    config.sampler = SamplerKind::Heun;
    let run = |score: &str, sizes: Option<Vec<usize>>, reference: bool| {
        let mut config = config.clone();
        config.score = ScoreKind::Patch(patch(score));
        config.patch_sizes = sizes;
        if reference {
            run_collect(&config, &mut ReferenceEngine::new())
                .unwrap()
                .samples
        } else {
            run_collect(&config, &mut CpuEngine::new()).unwrap().samples
        }
    };
    // One size for all steps is that size's score.
    assert_eq!(
        run("els:5", Some(vec![3]), false),
        run("els:3", None, false)
    );
    // Large patches early, small late (20 steps: both halves of each heun step use the
    // step's size): the cpu engine follows the reference, and the result is neither
    // constant size's.
    let schedule: Vec<usize> = (0..20).map(|k| if k < 10 { 5 } else { 3 }).collect();
    let cpu = run("bbels:3", Some(schedule.clone()), false);
    let reference = run("bbels:3", Some(schedule), true);
    let worst = cpu
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "cpu vs reference: {worst}");
    for constant in ["bbels:3", "bbels:5"] {
        let other = run(constant, None, false);
        let apart = cpu
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(apart > 1e-2, "the schedule ran as {constant}");
    }
}

/// A run whose dictionaries exceed the memory budget (`MEMODIFF_DICTIONARY_MEMORY`, MiB)
/// streams them, says so before it starts, and writes the samples of a run that holds
/// them; a budget that is not a number is refused before anything is written.
#[test]
fn a_run_over_the_dictionary_budget_streams_with_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images.npy");
    // Thirty 6 × 7 images: an els:3 dictionary of 600 patches, one chunk when streamed
    // (chunks hold 128 MiB); the library's test (engine::cpu::patch) streams several.
    let values: Vec<f32> = (0..30 * 42).map(|i| noise(i, 7) as f32).collect();
    common::npy::write_f32(&data, &[30, 6, 7], &values);
    let run = |budget: &str, out: &str| {
        let out = dir.path().join(out);
        let mut cmd = assert_cmd::Command::cargo_bin("memodiff").unwrap();
        cmd.env("MEMODIFF_DICTIONARY_MEMORY", budget)
            .args([
                "sample",
                "--backend",
                "cpu",
                "--score",
                "els:3",
                "--particles",
                "12",
            ])
            .args(["--steps", "30", "--posterior-records", "0", "--dataset"])
            .arg(&data)
            .arg("--out")
            .arg(&out);
        (cmd.output().unwrap(), out)
    };
    // What a run that must succeed printed (its notes).
    let notes = |output: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let (held, held_out) = run("", "held");
    let note = notes(&held);
    assert!(
        note.contains("cpu engine dictionaries: els:3 0.00 GiB in memory"),
        "{note}"
    );
    let (streamed, streamed_out) = run("0", "streamed");
    let note = notes(&streamed);
    assert!(
        note.contains("over the 0.00 GiB budget") && note.contains("streamed"),
        "{note}"
    );
    for name in ["samples.npy", "initial.npy"] {
        assert!(
            std::fs::read(held_out.join(name)).unwrap()
                == std::fs::read(streamed_out.join(name)).unwrap(),
            "{name} differs between the held and the streamed run"
        );
    }
    let (refused, refused_out) = run("lots", "refused");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        message.contains("\"lots\" is not a whole number of MiB"),
        "{message}"
    );
    assert!(
        !refused_out.exists(),
        "the refused run wrote {}",
        refused_out.display()
    );
}
