//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod images;
pub mod npy;

use memodiff::testing::engine::gpu::{AdapterChoice, GpuEngine};

/// Command-line arguments written out in one line, split at the spaces: a run's options
/// read as on the command line (none of them holds a space).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The arrays and images every finished sample run writes; the checkpoint and shard tests
/// compare them byte for byte with an uninterrupted, unsharded run's.
pub const ARRAY_AND_IMAGE_FILES: &[&str] = &[
    "samples.npy",
    "initial.npy",
    "samples.png",
    "initial.png",
    "samples_density.npy",
    "initial_density.npy",
    "metrics_counts.json",
];

/// Environment variable that lets a user without any GPU adapter (not even lavapipe)
/// skip the GPU tests explicitly. Without it, a missing adapter is a test failure.
pub const SKIP_GPU_VAR: &str = "MEMODIFF_SKIP_GPU_TESTS";

/// Open a GPU engine on any adapter (lavapipe included). Fails the test when none is
/// found, unless `MEMODIFF_SKIP_GPU_TESTS=1`, in which case it prints that it skipped.
pub fn gpu_engine(test: &str) -> Option<GpuEngine> {
    gpu_engine_with(
        test,
        memodiff::testing::engine::gpu::engine::DEFAULT_WORKGROUP_SIZE,
    )
}

/// Environment variable that makes every GPU test fail on a software adapter (lavapipe,
/// llvmpipe, WARP: wgpu's device type `Cpu`), so a run meant to test a hardware GPU
/// cannot pass on the software fallback without anyone noticing.
pub const REQUIRE_HARDWARE_VAR: &str = "MEMODIFF_REQUIRE_HARDWARE_GPU";

/// Print which adapter `test` runs on (name, type, backend, driver), and fail when a
/// hardware GPU is required (`MEMODIFF_REQUIRE_HARDWARE_GPU=1`) but this one is software.
pub fn announce_adapter(test: &str, info: &wgpu::AdapterInfo) {
    eprintln!(
        "{test}: adapter \"{}\" type {:?} backend {:?} driver \"{} {}\"",
        info.name, info.device_type, info.backend, info.driver, info.driver_info
    );
    if std::env::var(REQUIRE_HARDWARE_VAR).as_deref() == Ok("1")
        && memodiff::testing::engine::gpu::context::is_software(info)
    {
        panic!(
            "{test}: {REQUIRE_HARDWARE_VAR}=1 but the adapter \"{}\" is a software \
             rasterizer (device type {:?}): this run does not test a hardware GPU",
            info.name, info.device_type
        );
    }
}

pub fn gpu_engine_with(test: &str, workgroup_size: u32) -> Option<GpuEngine> {
    match GpuEngine::with_workgroup_size(AdapterChoice::Any, workgroup_size) {
        Ok(engine) => {
            announce_adapter(test, &engine.context().info);
            Some(engine)
        }
        Err(e @ memodiff::Error::NoAdapter(_))
            if std::env::var(SKIP_GPU_VAR).as_deref() == Ok("1") =>
        {
            eprintln!("SKIPPED {test}: no GPU adapter ({e}) and {SKIP_GPU_VAR}=1");
            None
        }
        Err(e @ memodiff::Error::NoAdapter(_)) => panic!(
            "{test}: {e}. Install a Vulkan driver (apt-get install \
             mesa-vulkan-drivers) or set {SKIP_GPU_VAR}=1 to skip GPU tests explicitly."
        ),
        Err(e) => panic!("{test}: cannot set up the GPU engine: {e}"),
    }
}

/// Max-norm distance between rows i of two row-major arrays.
pub fn row_distance(a: &[f32], b: &[f32], dim: usize, i: usize) -> f32 {
    (0..dim)
        .map(|d| (a[i * dim + d] - b[i * dim + d]).abs())
        .fold(0.0, f32::max)
}

/// A deterministic pseudo-random training set of `n` points in `dim` dimensions, uniform
/// in [-1, 1]^dim (an LCG, so the tests need no RNG state).
pub fn scattered(n: usize, dim: usize, salt: u64) -> memodiff::testing::model::dataset::Dataset {
    let mut state = salt;
    let points = (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    memodiff::testing::model::dataset::Dataset::new(format!("scattered:{n}:{dim}"), dim, points)
        .unwrap()
}

/// `n` deterministic 2-d points (row-major x, y) from an LCG: a Gaussian blob, a ring and
/// outliers in turn, and with `non_finite` also a few NaN points (every 97th of the fourth
/// kind), for the density-image tests.
pub fn cloud(n: usize, salt: u64, non_finite: bool) -> Vec<f32> {
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let kinds = if non_finite { 4 } else { 3 };
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (a, b) = (u(), u());
        let r = (-2.0 * a.ln()).sqrt();
        let (gx, gy) = (
            r * (std::f64::consts::TAU * b).cos(),
            r * (std::f64::consts::TAU * b).sin(),
        );
        let (x, y) = match i % kinds {
            0 => (0.6 * gx, 0.6 * gy),
            1 => {
                let t = std::f64::consts::TAU * u();
                (t.cos() + 0.03 * gx, t.sin() + 0.03 * gy)
            }
            2 if non_finite && i % 97 == 2 => (f64::NAN, 0.0),
            _ => (2.5 * gx, 2.5 * gy),
        };
        out.extend([x as f32, y as f32]);
    }
    out
}

/// Which implementation computed a set of Box–Muller normals, for the tolerance between
/// two of them: each side contributes its own error bound against the exact normals.
/// - `Gpu`: what WGSL allows (`philox::WGSL_ACCURACY`; derivation at
///   `philox::normals_error_bound`);
/// - `Cpu`: the f32 CPU twins' stated accuracies (`philox::CPU_F32_ACCURACY`);
/// - `Reference`: the f64 normals rounded to f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoiseSource {
    Gpu,
    Cpu,
    Reference,
}

fn normal_error(source: NoiseSource, bits: [u32; 4]) -> [f64; 4] {
    use memodiff::testing::model::philox::{
        normals4_f64, normals_error_bound, CPU_F32_ACCURACY, WGSL_ACCURACY,
    };
    match source {
        NoiseSource::Gpu => normals_error_bound(bits, &WGSL_ACCURACY),
        NoiseSource::Cpu => normals_error_bound(bits, &CPU_F32_ACCURACY),
        NoiseSource::Reference => normals4_f64(bits).map(|z| z.abs() / 16_777_216.0),
    }
}

/// Tolerance on `|a - b|` for the normals of `bits` computed by sources `a` and `b`.
pub fn normals_tolerance(a: NoiseSource, b: NoiseSource, bits: [u32; 4]) -> [f64; 4] {
    let (ea, eb) = (normal_error(a, bits), normal_error(b, bits));
    std::array::from_fn(|k| ea[k] + eb[k])
}

/// Tolerance on each coordinate of the initial noise `initial_std · z` of `particle`
/// (`dim` coordinates, lane block k for coordinates 4k..4k+3) between sources `a` and `b`:
/// the normals' tolerance scaled, plus per side the rounding of `initial_std` to f32 and
/// of the product (half an ULP each, 2^-23 relative together).
pub fn initial_noise_tolerance(
    a: NoiseSource,
    b: NoiseSource,
    seed: u64,
    particle: u64,
    initial_std: f64,
    dim: usize,
) -> Vec<f64> {
    use memodiff::testing::model::philox::{
        counter, normals4_f64, philox4x32_10, seed_key, INITIAL_NOISE_STEP,
    };
    (0..dim.div_ceil(4))
        .flat_map(|block| {
            let bits = philox4x32_10(
                counter(particle, INITIAL_NOISE_STEP, block as u32),
                seed_key(seed),
            );
            let (tol, z) = (normals_tolerance(a, b, bits), normals4_f64(bits));
            (0..4).map(move |k| initial_std * (tol[k] + 2.0 * z[k].abs() / 8_388_608.0))
        })
        .take(dim)
        .collect()
}

/// Check the initial noise of two runs of `particles` particles in `dim` dimensions
/// coordinate by coordinate against [`initial_noise_tolerance`]; returns the largest
/// ratio difference / tolerance (<= 1), for the test's log.
pub fn assert_initial_noise_agrees(
    name: &str,
    (a, a_source): (&[f32], NoiseSource),
    (b, b_source): (&[f32], NoiseSource),
    seed: u64,
    initial_std: f64,
    dim: usize,
) -> f64 {
    let particles = a.len() / dim;
    assert_eq!(a.len(), b.len(), "{name}: initial noise lengths differ");
    let mut worst_ratio = 0f64;
    for i in 0..particles {
        let tol = initial_noise_tolerance(a_source, b_source, seed, i as u64, initial_std, dim);
        for d in 0..dim {
            let diff = (a[i * dim + d] as f64 - b[i * dim + d] as f64).abs();
            assert!(
                diff <= tol[d],
                "{name}: particle {i} coordinate {d}: initial noise differs by {diff:e}, \
                 more than the {tol:e} the two sides' stated accuracies allow",
                tol = tol[d]
            );
            worst_ratio = worst_ratio.max(diff / tol[d]);
        }
    }
    worst_ratio
}

/// Largest gap `ln w1 - ln w2` between the two top posterior weights (in f64) at which a
/// state counts as a near-tie of the softmax: `w2 >= w1 / e`. Two engines whose states
/// differ by rounding can only fall to different sides of a tie where the gap is at most
/// the gap's gradient times their distance; this margin leaves room for that distance to
/// have grown by a few orders of magnitude over earlier steps.
pub const NEAR_TIE_LOG_MARGIN: f64 = 1.0;

/// The largest fraction of particles that may split at a near-tie (at least one is
/// always allowed, for small runs).
pub const MAX_SPLIT_FRACTION: f64 = 1e-3;

/// (index of the top weight, gap ln w1 - ln w2) of the posterior over `dataset` at `x`
/// for the score point `at` (log-weights `-|x - s a_i|^2 / 2v`, in f64).
pub fn top_two(
    dataset: &memodiff::testing::model::dataset::Dataset,
    at: &memodiff::testing::model::schedule::ScorePoint,
    x: &[f32],
) -> (usize, f64) {
    let (mut best, mut first, mut second) = (0, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..dataset.len() {
        let d2: f64 = dataset
            .point(i)
            .iter()
            .zip(x)
            .map(|(a, x)| (*x as f64 - at.mean_scale * a).powi(2))
            .sum();
        let log_weight = -d2 / (2.0 * at.variance);
        if log_weight > first {
            (second, first, best) = (first, log_weight, i);
        } else if log_weight > second {
            second = log_weight;
        }
    }
    (best, first - second)
}

/// Keeps the per-step states of a few particles (`rows`, sorted) of a run.
struct StepRecorder {
    rows: Vec<u64>,
    dim: usize,
    steps: usize,
    /// states[step][row position * dim ..]
    states: Vec<Vec<f32>>,
}

impl memodiff::testing::run::driver::BatchSink for StepRecorder {
    fn consume(&mut self, _first: u64, _initial: &[f32], _samples: &[f32]) -> memodiff::Result<()> {
        Ok(())
    }
    fn observe_steps(&self) -> Vec<usize> {
        (0..=self.steps).collect()
    }
    fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> memodiff::Result<()> {
        let n = (state.len() / self.dim) as u64;
        for (k, &row) in self.rows.iter().enumerate() {
            if (first..first + n).contains(&row) {
                let at = (row - first) as usize * self.dim;
                self.states[step][k * self.dim..(k + 1) * self.dim]
                    .copy_from_slice(&state[at..at + self.dim]);
            }
        }
        Ok(())
    }
}

fn record_steps(
    config: &memodiff::testing::run::driver::SampleConfig,
    engine: &mut dyn memodiff::testing::engine::Engine,
    rows: &[u64],
) -> Vec<Vec<f32>> {
    let steps = config.reverse_steps().len();
    let dim = config.dataset.dim;
    let mut recorder = StepRecorder {
        rows: rows.to_vec(),
        dim,
        steps,
        states: vec![vec![f32::NAN; rows.len() * dim]; steps + 1],
    };
    memodiff::testing::run::driver::run(
        config,
        engine,
        &mut recorder,
        &mut memodiff::testing::run::driver::NoProgress,
    )
    .expect("replay with per-step states");
    recorder.states
}

/// What [`assert_trajectories_agree`] found.
#[derive(Debug)]
pub struct Agreement {
    /// Largest final distance among the particles held to the bound.
    pub worst: f32,
    /// Particles excused: (index, step at which the top weights parted, the smaller gap
    /// of the two engines' states there).
    pub near_tie_splits: Vec<(u64, usize, f64)>,
}

/// Every particle of two runs of `config` (`a` by `engine_a`, `b` by `engine_b`) ends
/// within `bound` (max-norm) of its twin, except those whose paths split at a near-tie of
/// the softmax: the test replays both engines with every step's state recorded for the
/// particles beyond the bound, and excuses one only if the top-weight training points of
/// its two paths differ at the end, and at the first step where they differ the top two
/// weights (f64) were within [`NEAR_TIE_LOG_MARGIN`] for at least one engine's state.
/// Their count is printed and may not exceed [`MAX_SPLIT_FRACTION`] of the particles.
pub fn assert_trajectories_agree(
    name: &str,
    config: &memodiff::testing::run::driver::SampleConfig,
    (a, engine_a): (&[f32], &mut dyn memodiff::testing::engine::Engine),
    (b, engine_b): (&[f32], &mut dyn memodiff::testing::engine::Engine),
    bound: f32,
) -> Agreement {
    let dim = config.dataset.dim;
    let n = a.len() / dim;
    assert_eq!(a.len(), b.len(), "{name}: sample counts differ");
    assert!(
        a.iter().chain(b).all(|v| v.is_finite()),
        "{name}: non-finite samples"
    );
    let first = config.particle_range().start;
    let mut worst = 0f32;
    let mut apart = Vec::new();
    for i in 0..n {
        let d = row_distance(a, b, dim, i);
        if d <= bound {
            worst = worst.max(d);
        } else {
            apart.push(first + i as u64);
        }
    }
    let mut near_tie_splits = Vec::new();
    if !apart.is_empty() {
        let steps = config.reverse_steps();
        let path_a = record_steps(config, engine_a, &apart);
        let path_b = record_steps(config, engine_b, &apart);
        for (k, &particle) in apart.iter().enumerate() {
            let row = k * dim..(k + 1) * dim;
            let tops = |step: usize| {
                let at = config.score_point_after(&steps, step);
                (
                    top_two(&config.dataset, &at, &path_a[step][row.clone()]),
                    top_two(&config.dataset, &at, &path_b[step][row.clone()]),
                )
            };
            let i = (particle - first) as usize;
            assert_eq!(
                &path_a[steps.len()][row.clone()],
                &a[i * dim..(i + 1) * dim],
                "{name}: particle {particle}: the replay of the first engine is not the run"
            );
            let (end_a, end_b) = tops(steps.len());
            let parted = (0..=steps.len()).find(|&s| {
                let (ta, tb) = tops(s);
                ta.0 != tb.0
            });
            let excuse = parted.filter(|_| end_a.0 != end_b.0).and_then(|s| {
                let (ta, tb) = tops(s);
                let gap = ta.1.min(tb.1);
                (gap <= NEAR_TIE_LOG_MARGIN).then_some((particle, s, gap))
            });
            match excuse {
                Some(split) => near_tie_splits.push(split),
                None => panic!(
                    "{name}: particle {particle} ends {} apart (bound {bound}), not after a \
                     near-tie (top-weight points at the end {} vs {}, first parted at step \
                     {parted:?})",
                    row_distance(a, b, dim, i),
                    end_a.0,
                    end_b.0
                ),
            }
        }
    }
    let allowed = ((n as f64 * MAX_SPLIT_FRACTION).floor() as usize).max(1);
    eprintln!(
        "{name}: {} of {n} particles within {bound} (worst {worst:e}); {} split at a \
         near-tie (allowed {allowed}): {:?}",
        n - near_tie_splits.len(),
        near_tie_splits.len(),
        near_tie_splits
    );
    assert!(
        near_tie_splits.len() <= allowed,
        "{name}: {} particles split at near-ties, more than {allowed}",
        near_tie_splits.len()
    );
    Agreement {
        worst,
        near_tie_splits,
    }
}
