//! The variance-preserving SDE, with the tutorial's linear beta schedule or the cosine
//! schedule of Kamb & Ganguli's code (docs/architecture.md §1), on the host in f64.
//!
//! Every backend receives its per-step coefficients from here, so the time grid and the
//! schedule exist exactly once.

use serde::Serialize;

/// How the noise grows with the forward time t (`--schedule`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum ScheduleShape {
    /// `beta(t) = beta_min + t (beta_max - beta_min)`: the tutorial's.
    #[default]
    #[value(name = "vp-linear")]
    #[serde(rename = "vp-linear")]
    Linear,
    /// `alpha_bar(t) = s(t)^2 = cos^2(pi t / 2.016)`, as in Kamb & Ganguli's code (the
    /// cosine schedule of Nichol & Dhariwal with offset 0.008, without their rescaling by
    /// alpha_bar(0), which is 1 here); beta_min and beta_max do not apply.
    #[value(name = "vp-cosine")]
    #[serde(rename = "vp-cosine")]
    Cosine,
    /// Karras et al.'s EDM (variance exploding): `x_t = x_0 + t z`, so `s(t) = 1`,
    /// `sigma(t) = t`, data unscaled; the time grid is their rho = 7 grid from
    /// `EDM_SIGMA_MAX` = 80 down to `EDM_SIGMA_MIN` = 0.002, then 0.
    #[value(name = "edm")]
    #[serde(rename = "edm")]
    Edm,
}

impl ScheduleShape {
    /// The name `--schedule` takes and run.json records.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleShape::Linear => "vp-linear",
            ScheduleShape::Cosine => "vp-cosine",
            ScheduleShape::Edm => "edm",
        }
    }
}

/// EDM's largest noise level, where its grid starts (Karras et al., Table 1).
pub const EDM_SIGMA_MAX: f64 = 80.0;
/// EDM's smallest noise level, its grid's last before 0.
pub const EDM_SIGMA_MIN: f64 = 0.002;
/// The exponent of EDM's time grid.
pub const EDM_RHO: f64 = 7.0;

/// The cosine schedule's angle per unit time: `alpha_bar(t) = cos^2(COSINE_RATE t)`.
pub const COSINE_RATE: f64 = std::f64::consts::PI / 2.016;

/// The VP-SDE `dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW` of a [`ScheduleShape`]: linear
/// beta by default, `beta(t) = beta_min + t (beta_max - beta_min)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VpSchedule {
    /// beta at t = 0 (linear shape).
    pub beta_min: f64,
    /// beta at t = 1 (linear shape).
    pub beta_max: f64,
    /// Linear or cosine.
    #[serde(skip_serializing_if = "is_linear")]
    pub shape: ScheduleShape,
}

fn is_linear(shape: &ScheduleShape) -> bool {
    *shape == ScheduleShape::Linear
}

impl Default for VpSchedule {
    fn default() -> Self {
        Self {
            beta_min: 0.001,
            beta_max: 3.0,
            shape: ScheduleShape::Linear,
        }
    }
}

impl VpSchedule {
    /// The linear schedule from beta_min to beta_max.
    pub fn new(beta_min: f64, beta_max: f64) -> Self {
        Self {
            beta_min,
            beta_max,
            shape: ScheduleShape::Linear,
        }
    }

    /// The cosine schedule, `alpha_bar(t) = cos^2(pi t / 2.016)` (the beta fields keep the
    /// defaults and are not used).
    pub fn cosine() -> Self {
        Self {
            shape: ScheduleShape::Cosine,
            ..Self::default()
        }
    }

    /// `beta(t)`, the instantaneous noise rate: `B'(t)`; for the cosine shape
    /// `2 COSINE_RATE tan(COSINE_RATE t)`.
    pub fn beta(&self, t: f64) -> f64 {
        match self.shape {
            ScheduleShape::Linear => self.beta_min + t * (self.beta_max - self.beta_min),
            ScheduleShape::Cosine => 2.0 * COSINE_RATE * (COSINE_RATE * t).tan(),
            // g(t)^2 = d sigma^2 / dt.
            ScheduleShape::Edm => 2.0 * t,
        }
    }

    /// `B(t) = ∫_0^t beta = -ln alpha_bar(t)`, in closed form.
    pub fn integrated_beta(&self, t: f64) -> f64 {
        match self.shape {
            ScheduleShape::Linear => {
                t * self.beta_min + 0.5 * t * t * (self.beta_max - self.beta_min)
            }
            // `+ 0.0`: B(0) is +0, not -0 (a printed OU time of "-0.000").
            ScheduleShape::Cosine => -2.0 * (COSINE_RATE * t).cos().ln() + 0.0,
            // EDM has no B: this is the VP process it is a rescaling of (x / sqrt(1 +
            // sigma^2), whose variance is sigma^2 / (1 + sigma^2)), so that OU times
            // B / 2 = ln(1 + sigma^2) / 2 compare across schedules.
            ScheduleShape::Edm => (t * t).ln_1p(),
        }
    }

    /// Whether the schedule explodes (EDM) instead of preserving the variance.
    pub fn is_exploding(&self) -> bool {
        self.shape == ScheduleShape::Edm
    }

    /// The forward time the reverse process starts from without `--grid-start`: 1, or
    /// `EDM_SIGMA_MAX` for EDM.
    pub fn horizon(&self) -> f64 {
        if self.is_exploding() {
            EDM_SIGMA_MAX
        } else {
            1.0
        }
    }

    /// Mean scale of the forward marginal, `s(t) = exp(-B(t)/2)`.
    pub fn mean_scale(&self, t: f64) -> f64 {
        if self.is_exploding() {
            return 1.0;
        }
        (-0.5 * self.integrated_beta(t)).exp()
    }

    /// Variance of the forward marginal, `sigma2(t) = 1 - exp(-B(t))`, via `expm1`: the
    /// naive form loses all digits as `t -> 0` (at t = 1e-6 it is ~1e-9, below f32's
    /// epsilon relative to 1).
    pub fn sigma2(&self, t: f64) -> f64 {
        if self.is_exploding() {
            return t * t;
        }
        -(-self.integrated_beta(t)).exp_m1()
    }

    /// Drift of the forward SDE, `f(x, t) = -beta(t) x / 2`, for one coordinate.
    pub fn drift(&self, x: f64, t: f64) -> f64 {
        if self.is_exploding() {
            return 0.0;
        }
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
    /// beta(tau), the noise rate at the forward time of the step.
    pub beta: f64,
    /// Mean scale s(tau) = exp(-int_0^tau beta / 2).
    pub mean_scale: f64,
    /// Variance of the score's mixture components: `sigma2(tau)` for the empirical score,
    /// `sigma2(tau) + s^2 h^2` for `kde:h` (see [`reverse_steps_with`]).
    pub sigma2: f64,
    /// eta of a DDIM step (`--eta`; 0: deterministic); the other samplers ignore it.
    pub ddim_eta: f64,
    /// A step of a variance-exploding schedule (EDM: no drift), whose folded
    /// coefficients lack the VP drift's `beta x / 2`.
    pub exploding: bool,
}

impl ReverseStep {
    /// The deterministic DDIM step (eta = 0) from this step's forward time to the next's
    /// (`tau - dt`), as the folded update `x' = a x + c m` (`m` the softmax-weighted
    /// training mean): with `s, sigma` of the forward marginal here, `s', sigma'` there and
    /// the score's component variance `v` (`sigma^2`, or `sigma^2 + s^2 h^2` for `kde:h`),
    /// `x' = (s'/s) (x + sigma^2 score) - sigma' sigma score`, `score = (s m - x) / v`, so
    /// `a = s'/s - k / v` and `c = k s / v` with `k = s' sigma^2 / s - sigma' sigma`.
    /// For the empirical score `a = sigma'/sigma`, `c = s' - s sigma'/sigma`.
    ///
    /// With `eta > 0` (Song et al.'s eq. 16) part of the predicted noise is replaced by
    /// fresh noise: `x' = s' x0 + sqrt(sigma'^2 - sigma_eta^2) eps + sigma_eta z`,
    /// `sigma_eta = eta (sigma'/sigma) sqrt(1 - s^2/s'^2)` (eta = 1: the DDPM posterior's
    /// variance); `sigma'` becomes `sqrt(sigma'^2 - sigma_eta^2)` in `k`, and the third
    /// coefficient, of the standard normal `z`, is `sigma_eta`. It is 0 at the last step
    /// (`sigma' = 0`).
    pub fn ddim_coeffs(&self, schedule: &VpSchedule) -> (f64, f64, f64) {
        let next_tau = (self.tau - self.dt).max(0.0);
        let s = self.mean_scale;
        let sigma2 = schedule.sigma2(self.tau);
        let (s_next, sigma2_next) = (schedule.mean_scale(next_tau), schedule.sigma2(next_tau));
        let ratio = (1.0 - (s * s) / (s_next * s_next)).max(0.0);
        let sigma_eta = self.ddim_eta * (sigma2_next / sigma2).sqrt() * ratio.sqrt();
        let kept = (sigma2_next - sigma_eta * sigma_eta).max(0.0).sqrt();
        let k = s_next * sigma2 / s - kept * sigma2.sqrt();
        (s_next / s - k / self.sigma2, k * s / self.sigma2, sigma_eta)
    }

    /// Coefficient of `x` in the folded update
    /// `x' = a x + c m + e z`, `a = 1 + dt beta (1/2 - 1/sigma2)` (EDM: `1 - dt beta /
    /// sigma2`, no drift).
    pub fn keep_coeff(&self) -> f64 {
        if self.exploding {
            return 1.0 - self.dt * self.beta / self.sigma2;
        }
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
                ddim_eta: 0.0,
                exploding: false,
            }
        })
        .collect()
}

/// Which score drives the sampler (`--score`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScoreKind {
    /// The exact score of the forward marginal of the training set (memorizes).
    #[default]
    Empirical,
    /// The score of the training set smoothed by a Gaussian of width `h` (a kernel density
    /// estimate): components `N(s x_i, (sigma2 + s^2 h^2) I)`.
    Kde {
        /// The kernel width.
        h: f64,
    },
    /// A patch-local score on image data (`local:k`, `els:k`, `bbels:k`; see
    /// [`PatchScore`](crate::PatchScore)): each pixel's posterior over training patches.
    Patch(super::patch_score::PatchScore),
}

impl ScoreKind {
    /// Variance of the mixture components at mean scale `s` and forward variance `sigma2`:
    /// `sigma2` for the empirical score, `sigma2 + s^2 h^2` for `kde:h`.
    pub fn variance(&self, mean_scale: f64, sigma2: f64) -> f64 {
        match *self {
            ScoreKind::Empirical | ScoreKind::Patch(_) => sigma2,
            ScoreKind::Kde { h } => sigma2 + mean_scale * mean_scale * h * h,
        }
    }

    /// The spec `--score` takes: `empirical` or `kde:h`.
    pub fn label(&self) -> String {
        match self {
            ScoreKind::Empirical => "empirical".into(),
            ScoreKind::Kde { h } => format!("kde:{h}"),
            ScoreKind::Patch(patch) => patch.label(),
        }
    }
}

impl std::str::FromStr for ScoreKind {
    type Err = String;
    /// `empirical` or `kde:h` with h finite and >= 0 (`kde:0` is the empirical score).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "empirical" {
            return Ok(ScoreKind::Empirical);
        }
        if let Some(patch) = super::patch_score::PatchScore::parse(text) {
            return patch.map(ScoreKind::Patch);
        }
        match text.strip_prefix("kde:").map(|h| h.trim().parse::<f64>()) {
            Some(Ok(h)) if h.is_finite() && h >= 0.0 => Ok(ScoreKind::Kde { h }),
            Some(_) => Err(format!(
                "'{text}': the kde width h must be a finite number >= 0, e.g. kde:0.1"
            )),
            None => Err(format!(
                "'{text}': expected `empirical`, `kde:h` (e.g. kde:0.1) or a patch score \
                 `local:k`, `els:k`, `bbels:k` (k odd, e.g. els:3)"
            )),
        }
    }
}

/// Where the score is evaluated: forward time, mean scale, forward variance and the
/// variance of the score's mixture components (see [`ScoreKind::variance`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScorePoint {
    /// Forward time.
    pub tau: f64,
    /// Mean scale s(tau).
    pub mean_scale: f64,
    /// Forward variance sigma^2(tau) = 1 - s^2.
    pub sigma2: f64,
    /// Variance of the score's mixture components.
    pub variance: f64,
}

impl ScorePoint {
    /// The score point of `score` at forward time `tau` of `schedule`.
    pub fn new(schedule: &VpSchedule, score: ScoreKind, tau: f64) -> Self {
        let (mean_scale, sigma2) = (schedule.mean_scale(tau), schedule.sigma2(tau));
        Self {
            tau,
            mean_scale,
            sigma2,
            variance: score.variance(mean_scale, sigma2),
        }
    }

    /// Ornstein–Uhlenbeck time of this point, `B(tau) / 2` (the time of Biroli et al.).
    pub fn ou_time(&self, schedule: &VpSchedule) -> f64 {
        0.5 * schedule.integrated_beta(self.tau)
    }
}

/// The time grid with a score variant and early stopping: reverse times
/// `ts = linspace(1/(S-1), 1 - t_min, S)` (S points whatever `t_min`, so `--steps` keeps its
/// meaning; `t_min = 0` is exactly [`reverse_steps`]), forward times `tau = 1 - t` from
/// `1 - 1/(S-1)` down to `t_min`. For `kde:h` each step's `sigma2` is replaced by the
/// component variance `sigma2 + s^2 h^2`: the potentials, the score's `1/sigma2` and so the
/// folded coefficients (`keep_coeff`, `mean_coeff`) of every engine follow, while the
/// noise (`sqrt(dt beta)`) does not depend on it.
pub fn reverse_steps_with(
    schedule: &VpSchedule,
    time_points: usize,
    score: ScoreKind,
    t_min: f64,
) -> Vec<ReverseStep> {
    reverse_steps_from(schedule, None, time_points, score, t_min)
}

/// [`reverse_steps_with`] on a grid whose first forward time is `grid_start` (`None`: the
/// tutorial's `1 - 1/(S-1)`), in `S - 1` equal steps down to `t_min`: reverse times
/// `linspace(1 - grid_start, 1 - t_min, S)`.
pub fn reverse_steps_from(
    schedule: &VpSchedule,
    grid_start: Option<f64>,
    time_points: usize,
    score: ScoreKind,
    t_min: f64,
) -> Vec<ReverseStep> {
    assert!(time_points >= 2, "the grid needs at least two time points");
    if schedule.is_exploding() {
        return edm_steps(schedule, time_points, score);
    }
    let first = grid_start.map_or(1.0 / (time_points - 1) as f64, |t0| 1.0 - t0);
    let ts = linspace(first, 1.0 - t_min, time_points);
    ts.windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (t, dt) = (w[0], w[1] - w[0]);
            let point = ScorePoint::new(schedule, score, 1.0 - t);
            ReverseStep {
                index: k as u32,
                t,
                dt,
                tau: point.tau,
                beta: schedule.beta(point.tau),
                mean_scale: point.mean_scale,
                sigma2: point.variance,
                ddim_eta: 0.0,
                exploding: false,
            }
        })
        .collect()
}

/// EDM's noise levels for `n` points (Karras et al., eq. 5):
/// `sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`,
/// then 0: `n + 1` values, decreasing.
pub fn edm_sigmas(n: usize) -> Vec<f64> {
    let (hi, lo) = (
        EDM_SIGMA_MAX.powf(1.0 / EDM_RHO),
        EDM_SIGMA_MIN.powf(1.0 / EDM_RHO),
    );
    let mut sigmas: Vec<f64> = (0..n)
        .map(|i| {
            let f = if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            };
            (hi + f * (lo - hi)).powf(EDM_RHO)
        })
        .collect();
    sigmas.push(0.0);
    sigmas
}

/// The steps of EDM's grid: `time_points - 1` updates from sigma_0 = 80 through
/// [`edm_sigmas`] to 0 (the forward time of a step is its sigma; reverse time counts
/// down from 80).
fn edm_steps(schedule: &VpSchedule, time_points: usize, score: ScoreKind) -> Vec<ReverseStep> {
    edm_sigmas(time_points - 1)
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let point = ScorePoint::new(schedule, score, w[0]);
            ReverseStep {
                index: k as u32,
                t: EDM_SIGMA_MAX - w[0],
                dt: w[0] - w[1],
                tau: w[0],
                beta: schedule.beta(w[0]),
                mean_scale: point.mean_scale,
                sigma2: point.variance,
                ddim_eta: 0.0,
                exploding: true,
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
        // The last step is evaluated at tau = 1/99 and is marginally stable (docs/architecture.md §1).
        let last = steps.last().unwrap();
        let ratio = last.beta * last.dt / last.sigma2;
        assert!((1.8..2.1).contains(&ratio), "beta dt / sigma2 = {ratio}");
    }

    #[test]
    fn variants_of_the_grid() {
        let sched = VpSchedule::default();
        // t_min = 0 and the empirical score are exactly the default grid.
        assert_eq!(
            reverse_steps_with(&sched, 100, ScoreKind::Empirical, 0.0),
            reverse_steps(&sched, 100)
        );
        assert_eq!(
            reverse_steps_with(&sched, 50, ScoreKind::Kde { h: 0.0 }, 0.0),
            reverse_steps(&sched, 50)
        );
        // t_min: same number of steps, the last one ends at forward time t_min.
        let early = reverse_steps_with(&sched, 100, ScoreKind::Empirical, 0.05);
        assert_eq!(early.len(), 99);
        let last = early.last().unwrap();
        assert!((last.t + last.dt - 0.95).abs() < 1e-12);
        assert!((early[0].t - 1.0 / 99.0).abs() < 1e-15);
        // kde:h: variance sigma2 + s^2 h^2 at every step, the rest unchanged.
        let kde = reverse_steps_with(&sched, 100, ScoreKind::Kde { h: 0.2 }, 0.0);
        for (a, b) in kde.iter().zip(reverse_steps(&sched, 100)) {
            assert_eq!(
                (a.t, a.dt, a.beta, a.mean_scale),
                (b.t, b.dt, b.beta, b.mean_scale)
            );
            let want = b.sigma2 + b.mean_scale * b.mean_scale * 0.04;
            assert!((a.sigma2 - want).abs() < 1e-15);
        }
        assert!("kde:-1".parse::<ScoreKind>().is_err());
        assert!("kde:x".parse::<ScoreKind>().is_err());
        assert!("gauss".parse::<ScoreKind>().is_err());
        assert_eq!(
            "kde:0.5".parse::<ScoreKind>(),
            Ok(ScoreKind::Kde { h: 0.5 })
        );
        assert_eq!("empirical".parse::<ScoreKind>(), Ok(ScoreKind::Empirical));
    }
}
