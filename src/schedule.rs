//! The variance-preserving SDE with a linear beta schedule (DESIGN.md §1), on the host in f64.
//!
//! Every backend receives its per-step coefficients from here, so the time grid and the
//! schedule exist exactly once.

use serde::Serialize;

/// Linear-beta VP-SDE: `beta(t) = beta_min + t (beta_max - beta_min)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VpSchedule {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Default for VpSchedule {
    fn default() -> Self {
        Self {
            beta_min: 0.001,
            beta_max: 3.0,
        }
    }
}

impl VpSchedule {
    pub fn new(beta_min: f64, beta_max: f64) -> Self {
        Self { beta_min, beta_max }
    }

    /// `beta(t)`, the instantaneous noise rate.
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// `B(t) = ∫_0^t beta`, in closed form.
    pub fn integrated_beta(&self, t: f64) -> f64 {
        t * self.beta_min + 0.5 * t * t * (self.beta_max - self.beta_min)
    }

    /// Mean scale of the forward marginal, `s(t) = exp(-B(t)/2)`.
    pub fn mean_scale(&self, t: f64) -> f64 {
        (-0.5 * self.integrated_beta(t)).exp()
    }

    /// Variance of the forward marginal, `sigma2(t) = 1 - exp(-B(t))`, via `expm1`: the
    /// naive form loses all digits as `t -> 0` (at t = 1e-6 it is ~1e-9, below f32's
    /// epsilon relative to 1).
    pub fn sigma2(&self, t: f64) -> f64 {
        -(-self.integrated_beta(t)).exp_m1()
    }

    /// Drift of the forward SDE, `f(x, t) = -beta(t) x / 2`, for one coordinate.
    pub fn drift(&self, x: f64, t: f64) -> f64 {
        -0.5 * self.beta(t) * x
    }

    /// Diffusion coefficient `g(t) = sqrt(beta(t))`.
    pub fn diffusion(&self, t: f64) -> f64 {
        self.beta(t).sqrt()
    }
}

/// One Euler–Maruyama step of the reverse sampler, everything a backend needs, in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReverseStep {
    /// Step index k, 0..S-2: also the Philox counter word that selects this step's noise.
    pub index: u32,
    /// Reverse time `ts[k]`.
    pub t: f64,
    /// `ts[k+1] - ts[k]`.
    pub dt: f64,
    /// Forward time `1 - t` at which drift, diffusion and score are evaluated.
    pub tau: f64,
    pub beta: f64,
    pub mean_scale: f64,
    pub sigma2: f64,
}

impl ReverseStep {
    /// Coefficient of `x` in the folded update
    /// `x' = a x + c m + e z`, `a = 1 + dt beta (1/2 - 1/sigma2)`.
    pub fn keep_coeff(&self) -> f64 {
        1.0 + self.dt * self.beta * (0.5 - 1.0 / self.sigma2)
    }
    /// Coefficient of the softmax-weighted training mean `m`: `c = dt beta s / sigma2`.
    pub fn mean_coeff(&self) -> f64 {
        self.dt * self.beta * self.mean_scale / self.sigma2
    }
    /// Noise scale `e = sqrt(dt) g(tau) = sqrt(dt beta)`.
    pub fn noise_coeff(&self) -> f64 {
        (self.dt * self.beta).sqrt()
    }
}

/// The reference tutorial's grid: `ts = linspace(1/(S-1), 1, S)`, steps k = 0..S-2 with
/// `t = ts[k]`, `dt = ts[k+1] - ts[k]`, evaluated at forward time `tau = 1 - t`.
pub fn reverse_steps(schedule: &VpSchedule, time_points: usize) -> Vec<ReverseStep> {
    assert!(time_points >= 2, "the grid needs at least two time points");
    let ts = linspace(1.0 / (time_points - 1) as f64, 1.0, time_points);
    ts.windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (t, dt) = (w[0], w[1] - w[0]);
            let tau = 1.0 - t;
            ReverseStep {
                index: k as u32,
                t,
                dt,
                tau,
                beta: schedule.beta(tau),
                mean_scale: schedule.mean_scale(tau),
                sigma2: schedule.sigma2(tau),
            }
        })
        .collect()
}

/// NumPy's `linspace(start, stop, n)` (endpoint included, last value exactly `stop`).
pub fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_the_tutorial() {
        let steps = reverse_steps(&VpSchedule::default(), 100);
        assert_eq!(steps.len(), 99);
        assert!((steps[0].t - 1.0 / 99.0).abs() < 1e-15);
        let total: f64 = steps.iter().map(|s| s.dt).sum();
        assert!((total - (1.0 - 1.0 / 99.0)).abs() < 1e-12);
        // The last step is evaluated at tau = 1/99 and is marginally stable (DESIGN.md §1).
        let last = steps.last().unwrap();
        let ratio = last.beta * last.dt / last.sigma2;
        assert!((1.8..2.1).contains(&ratio), "beta dt / sigma2 = {ratio}");
    }
}
