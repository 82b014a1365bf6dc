//! Shared helpers for the integration tests.
#![allow(dead_code)]

use memodiff::gpu::{AdapterChoice, GpuEngine};

/// Environment variable that lets a user without any GPU adapter (not even lavapipe)
/// skip the GPU tests explicitly. Without it, a missing adapter is a test failure.
pub const SKIP_GPU_VAR: &str = "MEMODIFF_SKIP_GPU_TESTS";

/// Open a GPU engine on any adapter (lavapipe included). Fails the test when none is
/// found, unless `MEMODIFF_SKIP_GPU_TESTS=1`, in which case it prints that it skipped.
pub fn gpu_engine(test: &str) -> Option<GpuEngine> {
    gpu_engine_with(test, memodiff::gpu::engine::DEFAULT_WORKGROUP_SIZE)
}

pub fn gpu_engine_with(test: &str, workgroup_size: u32) -> Option<GpuEngine> {
    match GpuEngine::with_workgroup_size(AdapterChoice::Any, workgroup_size) {
        Ok(engine) => Some(engine),
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
pub fn scattered(n: usize, dim: usize, salt: u64) -> memodiff::dataset::Dataset {
    let mut state = salt;
    let points = (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    memodiff::dataset::Dataset::new(format!("scattered:{n}:{dim}"), dim, points).unwrap()
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
