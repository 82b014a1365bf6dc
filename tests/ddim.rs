//! `--sampler ddim`: deterministic DDIM (eta = 0) on the tutorial's grid, on every engine,
//! against its defining update written out here (predicted noise, predicted data, the
//! next time's marginal) with the closed-form linear schedule, and between engines.

mod common;

use common::{gpu_engine, row_distance};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::reference::ReferenceEngine;
use memodiff::testing::engine::{Engine, SamplerKind};
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::schedule::{reverse_steps, ScoreKind};
use memodiff::testing::run::driver::SampleConfig;
use memodiff::testing::run::sampler::run_collect;

/// s(tau) and sigma^2(tau) of beta(t) = 0.001 + 2.999 t, from B(tau) by hand.
fn marginal(tau: f64) -> (f64, f64) {
    let b = 0.001 * tau + 0.5 * 2.999 * tau * tau;
    ((-0.5 * b).exp(), 1.0 - (-b).exp())
}

/// DDIM from `x` through the grid of `time_points` points, on a single training point `a`
/// with the score `kde:h` (a Gaussian N(s a, (sigma^2 + s^2 h^2) I), whose score is
/// exact): eps = -sigma score, x0 = (x - sigma eps) / s, x' = s' x0 + sigma' eps.
fn ddim_by_hand(x: &[f64], a: &[f64], h: f64, time_points: usize) -> Vec<f64> {
    let mut x = x.to_vec();
    // The tutorial's grid in reverse time, linspace(1/(S-1), 1, S): forward times 1 - t.
    let ts: Vec<f64> = (0..time_points)
        .map(|i| {
            1.0 / (time_points - 1) as f64
                + i as f64 * (1.0 - 1.0 / (time_points - 1) as f64) / (time_points - 1) as f64
        })
        .collect();
    for k in 0..time_points - 1 {
        let (tau, next) = (1.0 - ts[k], (1.0 - ts[k + 1]).max(0.0));
        let (s, sigma2) = marginal(tau);
        let (s_next, sigma2_next) = marginal(next);
        let v = sigma2 + s * s * h * h;
        for d in 0..x.len() {
            let score = (s * a[d] - x[d]) / v;
            let eps = -sigma2.sqrt() * score;
            let x0 = (x[d] - sigma2.sqrt() * eps) / s;
            x[d] = s_next * x0 + sigma2_next.sqrt() * eps;
        }
    }
    x
}

#[test]
fn ddim_is_its_defining_update_on_every_engine() {
    let a = [0.6, -0.3];
    let dataset = Dataset::new("one point", 2, a.to_vec()).unwrap();
    let mut config = SampleConfig::new(dataset);
    config.particles = 300;
    config.time_points = 40;
    config.sampler = SamplerKind::Ddim;
    config.score = ScoreKind::Kde { h: 0.4 };
    // The library's grid is the tutorial's (checked elsewhere); here it only has to agree
    // with the one written out above.
    let taus: Vec<f64> = reverse_steps(&config.schedule, 40)
        .iter()
        .map(|s| s.tau)
        .collect();
    assert!((taus[0] - (1.0 - 1.0 / 39.0)).abs() < 1e-12);
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![
        ("cpu", Box::new(CpuEngine::new())),
        ("reference", Box::new(ReferenceEngine::new())),
    ];
    if let Some(gpu) = gpu_engine("ddim_is_its_defining_update_on_every_engine") {
        engines.push(("gpu", Box::new(gpu)));
    }
    for (name, engine) in &mut engines {
        let run = run_collect(&config, engine.as_mut()).unwrap();
        let mut worst = 0f64;
        for (x, out) in run.initial.chunks(2).zip(run.samples.chunks(2)) {
            let start: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let want = ddim_by_hand(&start, &a, 0.4, 40);
            for (w, &o) in want.iter().zip(out) {
                worst = worst.max((w - o as f64).abs());
            }
        }
        eprintln!("{name}: worst |engine - by hand| = {worst:e}");
        // The reference runs in f64 and rounds its result to f32 once (an ulp of values
        // O(1): 1.2e-7); the f32 engines add a few ulps per step.
        let bound = if *name == "reference" { 2e-7 } else { 1e-5 };
        assert!(worst < bound, "{name}: {worst}");
    }
}

/// With the empirical score DDIM is deterministic after x_T and lands every particle on a
/// training point (its last step predicts the data: x' = x0 at sigma' = 0); the engines
/// agree particle by particle.
#[test]
fn ddim_memorizes_and_the_engines_agree() {
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = 2000;
    config.sampler = SamplerKind::Ddim;
    let cpu = run_collect(&config, &mut CpuEngine::new()).unwrap();
    let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
    let mut worst = 0f32;
    for i in 0..2000 {
        worst = worst.max(row_distance(&cpu.samples, &reference.samples, 2, i));
        let p = &cpu.samples[2 * i..2 * i + 2];
        let nearest = (0..8)
            .map(|k| {
                let angle = 2.0 * std::f32::consts::PI * k as f32 / 8.0;
                (p[0] - angle.cos()).hypot(p[1] - angle.sin())
            })
            .fold(f32::MAX, f32::min);
        assert!(
            nearest < 1e-3,
            "particle {i} ends {nearest} from the circle's points"
        );
    }
    assert!(worst < 1e-3, "cpu and reference differ by {worst}");
}

/// With eta > 0 (Song et al., eq. 16) each step keeps part of the predicted noise and
/// draws the rest: sigma_eta = eta sqrt((1 - ab')/(1 - ab)) sqrt(1 - ab/ab'), the kept
/// noise sqrt(1 - ab' - sigma_eta^2), written here in alpha-bar notation; the engines draw
/// the same normals (em's Philox counters) and agree per particle.
#[test]
fn ddim_with_eta_keeps_part_of_the_noise_and_the_engines_agree() {
    use memodiff::testing::model::schedule::VpSchedule;
    let schedule = VpSchedule::default();
    let eta = 0.7;
    let mut steps = reverse_steps(&schedule, 30);
    for step in &mut steps {
        step.ddim_eta = eta;
    }
    let n = steps.len();
    for (k, step) in steps.iter().enumerate() {
        let ab = schedule.mean_scale(step.tau).powi(2);
        let next = if k + 1 < n { steps[k + 1].tau } else { 0.0 };
        let ab_next = schedule.mean_scale(next).powi(2);
        let sigma_eta = eta * ((1.0 - ab_next) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_next).sqrt();
        let keep = (1.0 - ab_next - sigma_eta * sigma_eta).max(0.0).sqrt() / (1.0 - ab).sqrt();
        let mean = ab_next.sqrt() - ab.sqrt() * keep;
        let (a, c, e) = step.ddim_coeffs(&schedule);
        assert!(
            (a - keep).abs() < 1e-9 && (c - mean).abs() < 1e-9,
            "step {k}: {a} {c}"
        );
        assert!(
            (e - sigma_eta).abs() < 1e-12,
            "step {k}: {e} vs {sigma_eta}"
        );
    }
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = 1000;
    config.time_points = 40;
    config.sampler = SamplerKind::Ddim;
    config.ddim_eta = 1.0;
    let reference = run_collect(&config, &mut ReferenceEngine::new()).unwrap();
    let deterministic = {
        let mut c = config.clone();
        c.ddim_eta = 0.0;
        run_collect(&c, &mut CpuEngine::new()).unwrap()
    };
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![("cpu", Box::new(CpuEngine::new()))];
    if let Some(gpu) = gpu_engine("ddim_with_eta_keeps_part_of_the_noise_and_the_engines_agree") {
        engines.push(("gpu", Box::new(gpu)));
    }
    for (name, engine) in &mut engines {
        let run = run_collect(&config, engine.as_mut()).unwrap();
        let worst = (0..1000)
            .map(|i| row_distance(&run.samples, &reference.samples, 2, i))
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{name}: {worst}");
        // The noise changes the paths: not the deterministic run's samples.
        assert_ne!(run.samples, deterministic.samples, "{name}");
    }
    // eta outside [0, 1], or with another sampler, is refused.
    let mut bad = config.clone();
    bad.ddim_eta = 1.5;
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("outside [0, 1]"));
    bad.ddim_eta = 0.5;
    bad.sampler = SamplerKind::Em;
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("ddim sampler only"));
}
