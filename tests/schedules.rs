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

/// EDM's sigmas as their code writes them (Karras et al., `edm_sampler`): `(sigma_max **
/// (1/rho) + i / (N - 1) * (sigma_min ** (1/rho) - sigma_max ** (1/rho))) ** rho`, then 0.
fn karras_sigmas(n: usize) -> Vec<f64> {
    let (max, min, rho) = (80.0f64, 0.002f64, 7.0f64);
    let mut sigmas: Vec<f64> = (0..n)
        .map(|i| {
            (max.powf(1.0 / rho)
                + i as f64 / (n - 1) as f64 * (min.powf(1.0 / rho) - max.powf(1.0 / rho)))
            .powf(rho)
        })
        .collect();
    sigmas.push(0.0);
    sigmas
}

#[test]
fn the_gu_memorization_preset_is_edm_with_heun() {
    use memodiff::testing::run::spec::{Preset, RunSpec};
    let mut spec = RunSpec::new("circle:8");
    Preset::GuMemorization.apply(&mut spec);
    let config = spec.sample_config(Dataset::circle(8).unwrap(), None);
    assert_eq!(config.sampler, SamplerKind::Heun);
    // From N(0, 80^2 I), through 18 noise levels and then 0: 18 updates.
    assert_eq!(config.initial_std(), 80.0);
    let steps = config.reverse_steps();
    let sigmas = karras_sigmas(18);
    assert_eq!(steps.len(), 18);
    assert!((sigmas[0] - 80.0).abs() < 1e-12 && (sigmas[17] - 0.002).abs() < 1e-15);
    for (k, step) in steps.iter().enumerate() {
        // x_sigma = x_0 + sigma z: s = 1, sigma^2 = sigma^2; the step goes to the next sigma.
        assert!(
            (step.tau - sigmas[k]).abs() <= 1e-12 * sigmas[k],
            "step {k}: {}",
            step.tau
        );
        assert!((step.dt - (sigmas[k] - sigmas[k + 1])).abs() <= 1e-12 * sigmas[k]);
        assert_eq!(step.mean_scale, 1.0);
        assert!((step.sigma2 - sigmas[k] * sigmas[k]).abs() <= 1e-12 * step.sigma2);
    }
    assert!(Preset::GuMemorization
        .check_training(&Dataset::new("wide", 1, vec![2.0]).unwrap())
        .is_err());
}

#[test]
fn heun_on_edm_is_karras_algorithm_1() {
    // One training point a with kde:h: the data N(a, h^2 I), whose denoiser is exact,
    // D(x; sigma) = x + sigma^2 (a - x) / (sigma^2 + h^2). Karras et al.'s Algorithm 1 on
    // their grid, written out here, from each particle's own x_T; and the ODE's exact
    // solution x(sigma) = a + (x_T - a) sqrt((sigma^2 + h^2) / (80^2 + h^2)).
    let (a, h) = ([0.4, -0.7], 0.3);
    let dataset = Dataset::new("one point", 2, a.to_vec()).unwrap();
    let mut config = SampleConfig::new(dataset);
    config.particles = 200;
    config.time_points = 19;
    config.sampler = SamplerKind::Heun;
    config.schedule.shape = memodiff::testing::model::schedule::ScheduleShape::Edm;
    config.score = memodiff::testing::model::schedule::ScoreKind::Kde { h };
    let sigmas = karras_sigmas(18);
    let denoise =
        |x: f64, a: f64, sigma: f64| x + sigma * sigma * (a - x) / (sigma * sigma + h * h);
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![
        ("cpu", Box::new(CpuEngine::new())),
        ("reference", Box::new(ReferenceEngine::new())),
    ];
    if let Some(gpu) = gpu_engine("heun_on_edm_is_karras_algorithm_1") {
        engines.push(("gpu", Box::new(gpu)));
    }
    for (name, engine) in &mut engines {
        let run = run_collect(&config, engine.as_mut()).unwrap();
        let (mut to_algorithm, mut to_exact) = (0f64, 0f64);
        for (start, out) in run.initial.chunks(2).zip(run.samples.chunks(2)) {
            for d in 0..2 {
                let x_t = f64::from(start[d]);
                let mut x = x_t;
                for i in 0..18 {
                    let (s0, s1) = (sigmas[i], sigmas[i + 1]);
                    let slope = (x - denoise(x, a[d], s0)) / s0;
                    let euler = x + (s1 - s0) * slope;
                    x = if s1 != 0.0 {
                        let again = (euler - denoise(euler, a[d], s1)) / s1;
                        x + (s1 - s0) * 0.5 * (slope + again)
                    } else {
                        euler
                    };
                }
                let exact = a[d] + (x_t - a[d]) * (h * h / (80.0f64 * 80.0 + h * h)).sqrt();
                to_algorithm = to_algorithm.max((x - f64::from(out[d])).abs());
                to_exact = to_exact.max((exact - f64::from(out[d])).abs());
            }
        }
        eprintln!(
            "{name}: Algorithm 1 within {to_algorithm:.2e}, exact solution within {to_exact:.2e}"
        );
        assert!(
            to_algorithm < 2e-4,
            "{name}: {to_algorithm} from Algorithm 1"
        );
        // 18 Heun steps over sigma from 80 to 0, the last an Euler step: the
        // discretization error (measured 0.06 here, on final deviations |x - a| of up to
        // about 1) bounds the distance to the exact solution; a wrong ODE is off by O(1).
        assert!(to_exact < 0.1, "{name}: {to_exact} from the exact solution");
    }
}
