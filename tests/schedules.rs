//! `--schedule vp-cosine`: the cosine schedule of Kamb & Ganguli's code against its closed
//! form, alpha_bar(t) = cos^2(pi t / 2.016), and the engines on it against each other.

mod common;

use common::{gpu_engine, row_distance};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::reference::ReferenceEngine;
use memodiff::testing::engine::{Engine, SamplerKind};
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::schedule::VpSchedule;
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

#[test]
fn the_cosine_schedule_is_its_closed_form() {
    let schedule = VpSchedule::cosine();
    let angle = |t: f64| std::f64::consts::PI * t / 2.016;
    for i in 0..=100 {
        let t = i as f64 / 100.0;
        let alpha_bar = angle(t).cos().powi(2);
        let s = schedule.mean_scale(t);
        assert!(
            (s * s - alpha_bar).abs() <= 1e-13,
            "t = {t}: s^2 = {} vs {alpha_bar}",
            s * s
        );
        // sigma^2 = 1 - alpha_bar = sin^2, to relative precision even near t = 0.
        let sin2 = angle(t).sin().powi(2);
        let sigma2 = schedule.sigma2(t);
        assert!(
            (sigma2 - sin2).abs() <= 1e-12 * sin2.max(1e-300),
            "t = {t}: {sigma2} vs {sin2}"
        );
        // beta = -d ln alpha_bar / dt, by central differences.
        if (1..100).contains(&i) {
            let h = 1e-6;
            let slope = -((angle(t + h).cos().powi(2)).ln() - (angle(t - h).cos().powi(2)).ln())
                / (2.0 * h);
            let beta = schedule.beta(t);
            assert!(
                (beta - slope).abs() <= 1e-6 * beta.max(1.0),
                "t = {t}: {beta} vs {slope}"
            );
        }
    }
    // At t = 1 nearly all signal is gone: alpha_bar(1) = cos^2(pi / 2.016) = 1.554e-4.
    assert!((schedule.mean_scale(1.0).powi(2) - 1.5541e-4).abs() < 1e-8);
}

#[test]
fn the_engines_agree_on_the_cosine_schedule() {
    for sampler in [SamplerKind::Em, SamplerKind::Heun, SamplerKind::Ddim] {
        let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
        config.particles = 1000;
        config.time_points = 50;
        config.schedule = VpSchedule::cosine();
        config.sampler = sampler;
        let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
        let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![("cpu", Box::new(CpuEngine::new()))];
        if let Some(gpu) = gpu_engine("the_engines_agree_on_the_cosine_schedule") {
            engines.push(("gpu", Box::new(gpu)));
        }
        for (name, engine) in &mut engines {
            let run = run_collect(&config, engine.as_mut()).unwrap();
            let worst = (0..1000)
                .map(|i| row_distance(&run.samples, &reference.samples, 2, i))
                .fold(0f32, f32::max);
            eprintln!("{sampler:?} {name}: worst |engine - reference| {worst:e}");
            assert!(worst < 2e-3, "{sampler:?} {name}: {worst}");
            assert!(run.samples.iter().all(|v| v.is_finite()));
        }
    }
}

/// `sample --schedule vp-cosine` is the library's run on that schedule, and run.json
/// records it (the linear default stays unrecorded, as before).
#[test]
fn the_cli_runs_and_records_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_cmd::Command::cargo_bin("memodiff")
        .unwrap()
        .args([
            "sample",
            "--backend",
            "cpu",
            "--particles",
            "500",
            "--steps",
            "30",
        ])
        .args(["--schedule", "vp-cosine", "--out"])
        .arg(&out)
        .assert()
        .success();
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = 500;
    config.time_points = 30;
    config.schedule = VpSchedule::cosine();
    let run = run_collect(&config, &mut CpuEngine::new()).unwrap();
    let bytes = std::fs::read(out.join("samples.npy")).unwrap();
    let values: Vec<f32> = bytes[bytes.len() - 4000..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, run.samples);
    let text = std::fs::read_to_string(out.join("run.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["parameters"]["schedule"], "vp-cosine");
}

/// `--preset kamb-ganguli` is Kamb & Ganguli's set-up: forward times t_i = i/20 from 0.95
/// down to 0, alpha_bar = cos^2(pi t / 2.016) at each, and each update their code's
/// deterministic DDIM step x' = sqrt(ab') x0 + sqrt(1 - ab') eps with
/// eps = (x - sqrt(ab) x0) / sqrt(1 - ab) (x0 the softmax-weighted training mean for the
/// empirical score), from N(0, I).
#[test]
fn the_kamb_ganguli_preset_is_their_set_up() {
    use memodiff::testing::run::spec::{Preset, RunSpec};
    let mut spec = RunSpec::new("circle:8");
    Preset::KambGanguli.apply(&mut spec);
    let config = spec.sample_config(Dataset::circle(8).unwrap(), None);
    assert_eq!(config.sampler, SamplerKind::Ddim);
    assert_eq!(config.initial_std(), 1.0);
    let steps = config.reverse_steps();
    assert_eq!(steps.len(), 19);
    let alpha_bar = |t: f64| (std::f64::consts::PI * t / 2.016).cos().powi(2);
    for (k, step) in steps.iter().enumerate() {
        let (t, next) = (0.95 - 0.05 * k as f64, 0.95 - 0.05 * (k + 1) as f64);
        assert!((step.tau - t).abs() < 1e-12, "step {k}: t = {}", step.tau);
        assert!((step.mean_scale.powi(2) - alpha_bar(t)).abs() < 1e-12);
        let (ab, ab_next) = (alpha_bar(t), alpha_bar(next.max(0.0)));
        let keep = (1.0 - ab_next).sqrt() / (1.0 - ab).sqrt();
        let mean = ab_next.sqrt() - ab.sqrt() * keep;
        let (a, c, noise) = step.ddim_coeffs(&config.schedule);
        assert_eq!(noise, 0.0, "deterministic DDIM draws no noise");
        assert!(
            (a - keep).abs() < 1e-12 && (c - mean).abs() < 1e-12,
            "step {k}: {a}, {c}"
        );
    }
    // Data outside [-1, 1] is refused, naming the value.
    let wide = Dataset::new("wide", 2, vec![0.5, 0.5, 1.5, 0.0]).unwrap();
    let message = Preset::KambGanguli
        .check_training(&wide)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("coordinate 0 of training point 1 is 1.5"),
        "{message}"
    );
    Preset::KambGanguli
        .check_training(&Dataset::circle(8).unwrap())
        .unwrap();
}
