//! Built-in synthetic training sets: `gaussian:N:D[:sigma]`, `two-gaussians:N:D[:sigma]`,
//! `moons:N[:noise]`, `spiral:N`, `grid:K` (and `circle:N` in dataset.rs).
//!
//! Random ones draw from Philox4x32-10 keyed by the data seed (`--data-seed`), one counter
//! per training point on a step index no sampler uses, so a training set depends only on
//! its spec and the data seed — never on the run's `--seed`, batch or backend.

use crate::error::{Error, Result};
use crate::model::dataset::check_size;
use crate::model::philox::fill_normals_f64;

/// Step index of the Philox counter for training-set draws: far from the sampler's step
/// indices (0 .. S-2 and the initial-noise index), so the streams never overlap.
const DATA_STEP: u32 = 0xD47A_0000;

/// Fields of a spec such as `gaussian:100:8:0.5`: `name` then numbers.
struct SpecFields<'a> {
    spec: &'a str,
    usage: &'static str,
    fields: Vec<&'a str>,
}

impl<'a> SpecFields<'a> {
    fn new(
        spec: &'a str,
        usage: &'static str,
        rest: &'a str,
        min: usize,
        max: usize,
    ) -> Result<Self> {
        let fields: Vec<&str> = rest.split(':').map(str::trim).collect();
        let this = Self {
            spec,
            usage,
            fields,
        };
        if fields_len_ok(this.fields.len(), min, max) {
            Ok(this)
        } else {
            Err(this.error("wrong number of fields"))
        }
    }

    fn error(&self, why: impl std::fmt::Display) -> Error {
        Error::invalid(
            "dataset spec",
            format!("{:?}: {why}; expected {}", self.spec, self.usage),
        )
    }

    /// Field `k` as a whole number >= 1.
    fn count(&self, k: usize, what: &str) -> Result<usize> {
        match self.fields[k].parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.error(format!(
                "{what} must be a whole number >= 1, got {:?}",
                self.fields[k]
            ))),
        }
    }

    /// Optional field `k` as a finite number >= 0 (`default` when absent).
    fn non_negative(&self, k: usize, what: &str, default: f64) -> Result<f64> {
        let Some(text) = self.fields.get(k) else {
            return Ok(default);
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(self.error(format!("{what} must be a finite number >= 0, got {text:?}"))),
        }
    }
}

fn fields_len_ok(len: usize, min: usize, max: usize) -> bool {
    (min..=max).contains(&len)
}

/// A generated training set: row-major points and their dimension.
pub struct Generated {
    pub dim: usize,
    pub points: Vec<f64>,
    /// Whether the points depend on the data seed (then the name records it).
    pub random: bool,
}

/// The generator for `spec`, or `None` when `spec` names no synthetic set.
pub fn generate(spec: &str, data_seed: u64) -> Option<Result<Generated>> {
    let (kind, rest) = spec.split_once(':')?;
    Some(match kind.trim() {
        "gaussian" => gaussian(spec, rest, data_seed),
        "two-gaussians" => two_gaussians(spec, rest, data_seed),
        "moons" => moons(spec, rest, data_seed),
        "spiral" => spiral(spec, rest),
        "grid" => grid(spec, rest),
        _ => return None,
    })
}

/// `n` rows of `dim` standard normals: point `i` is Philox counter `(i, DATA_STEP, block)`.
fn standard_normals(n: usize, dim: usize, data_seed: u64) -> Vec<f64> {
    let mut points = vec![0.0; n * dim];
    for (i, row) in points.chunks_mut(dim).enumerate() {
        fill_normals_f64(data_seed, i as u64, DATA_STEP, row);
    }
    points
}

/// `gaussian:N:D[:sigma]`: N i.i.d. points from N(0, sigma^2 I), sigma = 1 by default.
fn gaussian(spec: &str, rest: &str, data_seed: u64) -> Result<Generated> {
    let f = SpecFields::new(spec, "gaussian:N:D[:sigma]", rest, 2, 3)?;
    let (n, dim) = (f.count(0, "N")?, f.count(1, "D")?);
    let sigma = f.non_negative(2, "sigma", 1.0)?;
    check_size(spec, n, dim)?;
    let mut points = standard_normals(n, dim, data_seed);
    points.iter_mut().for_each(|v| *v *= sigma);
    Ok(Generated {
        dim,
        points,
        random: true,
    })
}

/// `two-gaussians:N:D[:sigma]`: the first ceil(N/2) points from N(+m, sigma^2 I), the
/// rest from N(-m, sigma^2 I), m = (1, ..., 1), sigma = 1 by default.
fn two_gaussians(spec: &str, rest: &str, data_seed: u64) -> Result<Generated> {
    let f = SpecFields::new(spec, "two-gaussians:N:D[:sigma]", rest, 2, 3)?;
    let (n, dim) = (f.count(0, "N")?, f.count(1, "D")?);
    let sigma = f.non_negative(2, "sigma", 1.0)?;
    check_size(spec, n, dim)?;
    let mut points = standard_normals(n, dim, data_seed);
    let plus = n.div_ceil(2);
    for (i, row) in points.chunks_mut(dim).enumerate() {
        let mean = if i < plus { 1.0 } else { -1.0 };
        row.iter_mut().for_each(|v| *v = mean + sigma * *v);
    }
    Ok(Generated {
        dim,
        points,
        random: true,
    })
}

/// `moons:N[:noise]`: scikit-learn's `make_moons` without shuffling — N/2 (rounded down)
/// points on the upper half circle `(cos a, sin a)`, a = linspace(0, pi), the rest on the
/// lower one `(1 - cos a, 1 - sin a - 1/2)` — plus Gaussian noise of standard deviation
/// `noise` (0 by default: the set is then deterministic).
fn moons(spec: &str, rest: &str, data_seed: u64) -> Result<Generated> {
    let f = SpecFields::new(spec, "moons:N[:noise]", rest, 1, 2)?;
    let n = f.count(0, "N")?;
    let noise = f.non_negative(1, "noise", 0.0)?;
    check_size(spec, n, 2)?;
    let outer = n / 2;
    let inner = n - outer;
    let angle = |k: usize, count: usize| {
        if count > 1 {
            std::f64::consts::PI * k as f64 / (count - 1) as f64
        } else {
            0.0
        }
    };
    let mut points = Vec::with_capacity(2 * n);
    for k in 0..outer {
        let a = angle(k, outer);
        points.extend([a.cos(), a.sin()]);
    }
    for k in 0..inner {
        let a = angle(k, inner);
        points.extend([1.0 - a.cos(), 1.0 - a.sin() - 0.5]);
    }
    if noise > 0.0 {
        let z = standard_normals(n, 2, data_seed);
        points.iter_mut().zip(z).for_each(|(p, z)| *p += noise * z);
    }
    Ok(Generated {
        dim: 2,
        points,
        random: noise > 0.0,
    })
}

/// `spiral:N`: N points along two turns of an Archimedean spiral, evenly spaced in the
/// angle: a = 4 pi k/(N-1), radius 0.1 + 0.9 k/(N-1), point `r (cos a, sin a)`.
fn spiral(spec: &str, rest: &str) -> Result<Generated> {
    let f = SpecFields::new(spec, "spiral:N", rest, 1, 1)?;
    let n = f.count(0, "N")?;
    check_size(spec, n, 2)?;
    let points = (0..n)
        .flat_map(|k| {
            let u = if n > 1 {
                k as f64 / (n - 1) as f64
            } else {
                0.0
            };
            let (a, r) = (2.0 * std::f64::consts::TAU * u, 0.1 + 0.9 * u);
            [r * a.cos(), r * a.sin()]
        })
        .collect();
    Ok(Generated {
        dim: 2,
        points,
        random: false,
    })
}

/// `grid:K`: the K × K points of linspace(-1, 1, K)^2, row by row (K = 1: the origin).
fn grid(spec: &str, rest: &str) -> Result<Generated> {
    let f = SpecFields::new(spec, "grid:K", rest, 1, 1)?;
    let k = f.count(0, "K")?;
    let n = k.checked_mul(k).ok_or_else(|| f.error("K is too large"))?;
    check_size(spec, n, 2)?;
    let coordinate = |j: usize| {
        if k > 1 {
            -1.0 + 2.0 * j as f64 / (k - 1) as f64
        } else {
            0.0
        }
    };
    let points = (0..n)
        .flat_map(|i| [coordinate(i % k), coordinate(i / k)])
        .collect();
    Ok(Generated {
        dim: 2,
        points,
        random: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(spec: &str, seed: u64) -> Generated {
        generate(spec, seed)
            .expect("known kind")
            .expect("valid spec")
    }

    #[test]
    fn gaussian_has_the_requested_shape_and_moments() {
        let g = make("gaussian:4000:3:0.5", 7);
        assert_eq!((g.dim, g.points.len()), (3, 12_000));
        let mean = g.points.iter().sum::<f64>() / 12_000.0;
        let var = g.points.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12_000.0;
        // Standard errors: mean 0.5/sqrt(12000) = 0.0046; variance 0.25 sqrt(2/12000) = 0.0032.
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 0.25).abs() < 0.015, "variance {var}");
    }

    #[test]
    fn random_sets_depend_on_the_data_seed_only() {
        assert_eq!(
            make("gaussian:10:5", 1).points,
            make("gaussian:10:5", 1).points
        );
        assert_ne!(
            make("gaussian:10:5", 1).points,
            make("gaussian:10:5", 2).points
        );
        // A larger set starts with the smaller one: point i depends on i, not on N.
        let small = make("gaussian:10:5", 3).points;
        assert_eq!(small[..], make("gaussian:20:5", 3).points[..50]);
    }

    #[test]
    fn two_gaussians_are_centred_at_plus_and_minus_ones() {
        let g = make("two-gaussians:2000:4:0.1", 0);
        let (plus, minus) = g.points.split_at(1000 * 4);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(plus) - 1.0).abs() < 0.01, "{}", mean(plus));
        assert!((mean(minus) + 1.0).abs() < 0.01, "{}", mean(minus));
        // Odd N: the extra point goes to +m.
        let odd = make("two-gaussians:3:1:0", 0);
        assert_eq!(odd.points, vec![1.0, 1.0, -1.0]);
    }

    #[test]
    fn moons_match_scikit_learn_without_noise() {
        // sklearn.datasets.make_moons(n_samples=5, shuffle=False, noise=None):
        // outer linspace(0, pi, 2), inner linspace(0, pi, 3).
        let m = make("moons:5", 0);
        let expected = [[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [1.0, -0.5], [2.0, 0.5]];
        assert!(!m.random);
        for (got, want) in m.points.chunks(2).zip(expected) {
            assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12);
        }
        assert!(make("moons:5:0.1", 0).random);
    }

    #[test]
    fn spiral_and_grid_are_where_documented() {
        let s = make("spiral:3", 0);
        // k = 0: radius 0.1 at angle 0; k = 2: radius 1 after two turns.
        assert!((s.points[0] - 0.1).abs() < 1e-12 && s.points[1].abs() < 1e-12);
        assert!((s.points[4] - 1.0).abs() < 1e-12 && s.points[5].abs() < 1e-9);
        let g = make("grid:3", 0);
        assert_eq!(g.points.len(), 18);
        assert_eq!(&g.points[..6], &[-1.0, -1.0, 0.0, -1.0, 1.0, -1.0]);
        assert_eq!(&g.points[16..], &[1.0, 1.0]);
        assert_eq!(make("grid:1", 0).points, vec![0.0, 0.0]);
    }

    #[test]
    fn bad_specs_are_refused_with_the_expected_form() {
        for spec in [
            "gaussian:10",
            "gaussian:0:2",
            "gaussian:10:2:-1",
            "gaussian:10:2:1:3",
            "two-gaussians:x:2",
            "moons:0",
            "spiral:3:1",
            "grid:0",
            "gaussian:100000:100000",
        ] {
            let err = generate(spec, 0).expect("known kind").err().expect(spec);
            let text = err.to_string();
            assert!(
                text.contains("expected") || text.contains("limit"),
                "{spec}: {text}"
            );
        }
        assert!(generate("blobs:3", 0).is_none());
    }
}
