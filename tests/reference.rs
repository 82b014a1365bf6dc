//! The f64 reference against first principles: the schedule against its defining
//! integral, the score against finite differences of log p.

use memodiff::testing::engine::reference;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::schedule::VpSchedule;

/// Composite Simpson's rule.
fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let h = (b - a) / n as f64;
    let mut sum = f(a) + f(b);
    for i in 1..n {
        sum += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

#[test]
fn sigma2_matches_its_defining_integral() {
    let schedule = VpSchedule::default();
    for t in [1e-3, 0.01, 0.1, 0.5, 0.9, 1.0] {
        // B(t) = ∫ beta, sigma2 = 1 - exp(-B), s = exp(-B/2).
        let integral = simpson(|u| schedule.beta(u), 0.0, t, 1000);
        let sigma2 = 1.0 - (-integral).exp();
        assert!((schedule.sigma2(t) - sigma2).abs() <= 1e-12 * sigma2.max(1e-300) + 1e-15);
        assert!((schedule.mean_scale(t) - (-integral / 2.0).exp()).abs() < 1e-12);
        // And sigma2 solves d sigma2/dt = beta (1 - sigma2), the VP-SDE variance ODE.
        let h = 1e-6;
        let derivative = (schedule.sigma2(t + h) - schedule.sigma2(t - h)) / (2.0 * h);
        let rhs = schedule.beta(t) * (1.0 - schedule.sigma2(t));
        assert!((derivative - rhs).abs() < 1e-6 * rhs, "t = {t}");
    }
}

#[test]
fn sigma2_is_accurate_at_tiny_times() {
    let schedule = VpSchedule::default();
    let t = 1e-6;
    // Series: B = t beta_min + t^2 (beta_max - beta_min)/2; 1 - exp(-B) = B - B^2/2 + B^3/6.
    let b = schedule.integrated_beta(t);
    let series = b - b * b / 2.0 + b * b * b / 6.0;
    let rel = (schedule.sigma2(t) - series).abs() / series;
    assert!(rel < 1e-14, "relative error {rel:e}");
    // The naive 1 - exp(-B) loses most digits here; expm1 must not.
    let naive = 1.0 - (-b).exp();
    assert!(
        (naive - series).abs() / series > 1e-12,
        "test would not detect the naive form"
    );
    // And in f32, what the shaders receive is still accurate to f32 precision.
    let as_f32 = schedule.sigma2(t) as f32;
    assert!(((as_f32 as f64) - series).abs() / series < 1e-7);
}

/// A small deterministic generator so the test needs no RNG crate state.
fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn reference_score_is_the_gradient_of_log_p() {
    let schedule = VpSchedule::default();
    let mut state = 42u64;
    let circle = Dataset::circle(8).unwrap();
    let mut pts = Vec::new();
    for _ in 0..7 * 3 {
        pts.push(lcg(&mut state) * 2.0 - 1.0);
    }
    let three_d = Dataset::new("random:7:3", 3, pts).unwrap();
    let mut checked = 0;
    for data in [&circle, &three_d] {
        for _ in 0..40 {
            let tau = 0.02 + 0.98 * lcg(&mut state);
            let x: Vec<f64> = (0..data.dim).map(|_| lcg(&mut state) * 3.0 - 1.5).collect();
            let score = reference::score(data, &schedule, tau, &x);
            // Central differences with a step scaled to the density's length scale.
            let h = 1e-4 * schedule.sigma2(tau).sqrt();
            let norm = score.iter().map(|v| v * v).sum::<f64>().sqrt();
            for d in 0..data.dim {
                let (mut plus, mut minus) = (x.clone(), x.clone());
                plus[d] += h;
                minus[d] -= h;
                let fd = (reference::log_density(data, &schedule, tau, &plus)
                    - reference::log_density(data, &schedule, tau, &minus))
                    / (2.0 * h);
                let rel = (fd - score[d]).abs() / norm.max(1e-12);
                assert!(
                    rel < 1e-6,
                    "tau {tau}, x {x:?}, dim {d}: fd {fd} vs score {}",
                    score[d]
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 40 * 2 + 40 * 3);
}
