//! Small statistics the metrics need: the chi-square survival function (regularized upper
//! incomplete gamma) and a percentile bootstrap interval of a proportion drawn from its
//! counts alone; and where a curve along the reverse process crosses a level (the collapse
//! and speciation times).
//!
//! Written here rather than pulled from a crate: two functions of ~100 lines, tested
//! against tabulated values, and it keeps Cargo.lock free of a dependency tree that other
//! branches would have to reconcile.

use crate::model::philox::{counter, philox4x32_10, seed_key, uniform_f64};

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(π x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma `Q(a, x) = Γ(a, x) / Γ(a)`, a > 0, x >= 0: the
/// series for x < a + 1, the continued fraction (modified Lentz) otherwise.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    assert!(a > 0.0 && x >= 0.0, "gamma_q({a}, {x})");
    if x == 0.0 {
        return 1.0;
    }
    let log_prefix = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..100_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * log_prefix.exp()).max(0.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (log_prefix.exp() * h).min(1.0)
    }
}

/// P(X >= statistic) for X ~ chi-square with `dof` degrees of freedom.
pub fn chi_square_sf(statistic: f64, dof: f64) -> f64 {
    if statistic <= 0.0 {
        return 1.0;
    }
    gamma_q(dof / 2.0, statistic / 2.0)
}

/// Pearson's chi-square of `counts` against the uniform distribution over its cells.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub dof: u64,
    pub p_value: f64,
}

/// Chi-square against uniform; `None` with fewer than 2 cells or no counts.
pub fn chi_square_uniform(counts: &[u64]) -> Option<ChiSquare> {
    let total: u64 = counts.iter().sum();
    if counts.len() < 2 || total == 0 {
        return None;
    }
    let expected = total as f64 / counts.len() as f64;
    let statistic: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let dof = counts.len() as u64 - 1;
    Some(ChiSquare {
        statistic,
        dof,
        p_value: chi_square_sf(statistic, dof as f64),
    })
}

/// Bootstrap resamples behind [`bootstrap_interval`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Fixed Philox key of the bootstrap draws: the interval is a function of (k, n) alone, so
/// a merged run and an unsharded one report the same interval.
const BOOTSTRAP_SEED: u64 = 0x6d65_6d6f_6469_6666; // "memodiff"

/// 95% percentile bootstrap interval of the proportion `k / n`: `BOOTSTRAP_RESAMPLES`
/// resamples of n Bernoulli(k/n) outcomes, i.e. Binomial(n, k/n) draws (exact inversion of
/// the binomial CDF, tabulated over mode ± 12 standard deviations + 20 cells, the mass
/// outside < 1e-30), and their 2.5% and 97.5% quantiles divided by n. Deterministic:
/// depends only on (k, n). (0, 0) when n = 0; degenerate (p, p) when k is 0 or n.
pub fn bootstrap_interval(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let p = k as f64 / n as f64;
    if k == 0 || k == n {
        return (p, p);
    }
    let nf = n as f64;
    let sd = (nf * p * (1.0 - p)).sqrt();
    let mode = ((nf + 1.0) * p).floor().min(nf);
    let lo = (mode - 12.0 * sd - 20.0).max(0.0) as u64;
    let hi = ((mode + 12.0 * sd + 20.0).min(nf)) as u64;
    // log pmf(j) = lnC(n, j) + j ln p + (n - j) ln(1 - p), exponentiated relative to the
    // mode's so nothing underflows where it matters.
    let log_pmf = |j: f64| {
        ln_gamma(nf + 1.0) - ln_gamma(j + 1.0) - ln_gamma(nf - j + 1.0)
            + j * p.ln()
            + (nf - j) * (1.0 - p).ln()
    };
    let at_mode = log_pmf(mode);
    let mut cdf: Vec<f64> = Vec::with_capacity((hi - lo + 1) as usize);
    let mut acc = 0.0;
    for j in lo..=hi {
        acc += (log_pmf(j as f64) - at_mode).exp();
        cdf.push(acc);
    }
    let total = acc;
    let key = seed_key(BOOTSTRAP_SEED);
    let mut draws: Vec<u64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|r| {
            let bits = philox4x32_10(counter(r as u64, 0, 0), key);
            // 48 random bits: finer than any cell of the table.
            let u = (uniform_f64(bits[0]) + uniform_f64(bits[1]) * 2f64.powi(-24)) * total;
            lo + cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64
        })
        .collect();
    draws.sort_unstable();
    let quantile = |q: f64| {
        // The order statistic at the (B - 1) q position, as numpy's default "linear".
        let pos = q * (draws.len() - 1) as f64;
        let (a, b) = (pos.floor() as usize, pos.ceil() as usize);
        let (x, y) = (draws[a] as f64, draws[b] as f64);
        (x + (y - x) * (pos - a as f64)) / nf
    };
    (quantile(0.025), quantile(0.975))
}

/// The OU time at which `values` (ordered along the reverse process, i.e. by decreasing
/// OU time `times`) first reaches `level`, interpolated linearly in OU time; `None` when it
/// never does, or already does at the first point (the crossing is before the start).
pub fn crossing_time(times: &[f64], values: &[f64], level: f64) -> Option<f64> {
    if values.first().is_none_or(|&v| v >= level) {
        return None;
    }
    let k = values.iter().position(|&v| v >= level)?;
    let (t0, t1, v0, v1) = (times[k - 1], times[k], values[k - 1], values[k]);
    Some(t0 + (t1 - t0) * (level - v0) / (v1 - v0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-14);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(101.0) - 363.739_375_555_563_5).abs() < 1e-10);
    }

    #[test]
    fn chi_square_tables() {
        // Tabulated critical values: P(X >= x) for (x, dof).
        for (x, dof, p) in [
            (3.841_458_820_694_124, 1.0, 0.05),
            (6.634_896_601_021_214, 1.0, 0.01),
            (18.307_038_053_275_146, 10.0, 0.05),
            (124.342_113_404_079_9, 100.0, 0.05),
            (2.0, 2.0, (-1.0f64).exp()), // dof 2: exp(-x/2)
        ] {
            let got = chi_square_sf(x, dof);
            assert!(
                (got - p).abs() < 1e-9 * p.max(1e-3),
                "{x} {dof}: {got} vs {p}"
            );
        }
        let c = chi_square_uniform(&[10, 10, 10, 10]).unwrap();
        assert_eq!((c.statistic, c.dof, c.p_value), (0.0, 3, 1.0));
        let c = chi_square_uniform(&[20, 0]).unwrap();
        assert_eq!(c.statistic, 20.0);
        assert!(c.p_value < 1e-4);
        assert!(chi_square_uniform(&[5]).is_none());
        assert!(chi_square_uniform(&[0, 0]).is_none());
    }

    #[test]
    fn bootstrap_matches_the_binomial_spread() {
        for &(k, n) in &[
            (30u64, 100u64),
            (500, 1000),
            (123_456, 1_000_000),
            (3, 1000),
        ] {
            let (lo, hi) = bootstrap_interval(k, n);
            let p = k as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(lo <= p && p <= hi, "{k}/{n}: {lo} {hi}");
            // Width near 2 x 1.96 se (within the Monte Carlo error of 2000 resamples and
            // the lattice of small k).
            let width = hi - lo;
            assert!(
                (width / (3.92 * se) - 1.0).abs() < 0.25,
                "{k}/{n}: width {width} vs {}",
                3.92 * se
            );
            assert_eq!(bootstrap_interval(k, n), (lo, hi), "deterministic");
        }
        assert_eq!(bootstrap_interval(0, 10), (0.0, 0.0));
        assert_eq!(bootstrap_interval(10, 10), (1.0, 1.0));
        assert_eq!(bootstrap_interval(0, 0), (0.0, 0.0));
    }
}
