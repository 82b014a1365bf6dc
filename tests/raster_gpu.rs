//! The GPU deposit of density grids (shaders/heatmap/deposit.wgsl): its integer sums equal
//! its f32 CPU twin's, and the images it gives stay within the accuracy bound of the
//! direct double-precision sum (512², 2,000 particles, the default bandwidth and 0.02, about
//! 1.7 pixels: the smallest the sub-grid serves at 512² on [-3, 3]²; smaller ones take the
//! CPU direct path).

mod common;

use memodiff::gpu::raster::{lagrange_uniform, DepositParams, GpuRaster};
use memodiff::gpu::{AdapterChoice, GpuContext};
use memodiff::heatmap::{DensityGrid, Extent, DEFAULT_BANDWIDTH};

/// The direct f64 sum `sum_p exp(-|p - c|^2 / (2 h^2))` at every pixel centre, no cut-off,
/// through the kernel's separability (`exp(-dx^2 a) exp(-dy^2 a)`: equal to
/// `heatmap::direct_sum` within f64 rounding, 500 times cheaper).
fn direct_sum(extent: Extent, w: usize, h: usize, bw: f64, pts: &[f32]) -> Vec<f64> {
    let a = 1.0 / (2.0 * bw * bw);
    let lin = |lo: f64, hi: f64, n: usize, k: usize| lo + (hi - lo) * k as f64 / (n - 1) as f64;
    let mut out = vec![0.0; w * h];
    for p in pts.chunks_exact(2) {
        let (x, y) = (p[0] as f64, p[1] as f64);
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let gx: Vec<f64> = (0..w)
            .map(|c| (-(lin(extent.xmin, extent.xmax, w, c) - x).powi(2) * a).exp())
            .collect();
        for r in 0..h {
            let gy = (-(lin(extent.ymin, extent.ymax, h, h - 1 - r) - y).powi(2) * a).exp();
            if gy == 0.0 {
                continue;
            }
            for (o, g) in out[r * w..(r + 1) * w].iter_mut().zip(&gx) {
                *o += gy * g;
            }
        }
    }
    out
}

/// The deposit pipeline on any adapter (lavapipe included); fails without one unless
/// MEMODIFF_SKIP_GPU_TESTS=1, then says it skipped.
fn raster(test: &str) -> Option<GpuRaster> {
    match GpuContext::new(AdapterChoice::Any) {
        Ok(ctx) => Some(GpuRaster::new(ctx)),
        Err(e @ memodiff::Error::NoAdapter(_))
            if std::env::var(common::SKIP_GPU_VAR).as_deref() == Ok("1") =>
        {
            eprintln!(
                "SKIPPED {test}: no GPU adapter ({e}) and {}=1",
                common::SKIP_GPU_VAR
            );
            None
        }
        Err(e) => panic!(
            "{test}: {e}. Install a Vulkan driver (apt-get install mesa-vulkan-drivers) or \
             set {}=1 to skip GPU tests explicitly.",
            common::SKIP_GPU_VAR
        ),
    }
}

/// Deterministic points: a blob, a ring, outliers and a few non-finite ones.
fn cloud(n: usize, salt: u64) -> Vec<f32> {
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (a, b) = (u(), u());
        let r = (-2.0 * a.ln()).sqrt();
        let (gx, gy) = (
            r * (std::f64::consts::TAU * b).cos(),
            r * (std::f64::consts::TAU * b).sin(),
        );
        let (x, y) = match i % 4 {
            0 => (0.6 * gx, 0.6 * gy),
            1 => {
                let t = std::f64::consts::TAU * u();
                (t.cos() + 0.03 * gx, t.sin() + 0.03 * gy)
            }
            2 if i % 97 == 2 => (f64::NAN, 0.0),
            _ => (2.5 * gx, 2.5 * gy),
        };
        out.extend([x as f32, y as f32]);
    }
    out
}

#[test]
fn gpu_deposit_equals_its_cpu_twin() {
    let Some(gpu) = raster("gpu_deposit_equals_its_cpu_twin") else {
        return;
    };
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(5000, 3);
    for bw in [DEFAULT_BANDWIDTH, 0.02] {
        let grid = DensityGrid::new(extent, 512, 512, bw).unwrap();
        let sub = grid.sub_grid().expect("split path");
        let words = gpu.deposit_words(&sub, &pts).unwrap();
        let mut twin = vec![0u32; words.len()];
        let params = DepositParams {
            count: (pts.len() / 2) as u32,
            ..DepositParams::for_sub_grid(&sub)
        };
        memodiff::cpu::deposit::deposit(&params, &lagrange_uniform(), &pts, &mut twin);
        assert!(twin.iter().any(|&w| w != 0));
        // The shader may contract multiply-adds (fma) where the twin rounds twice: allow a
        // few units in a node (of 2^32 a peak), nothing more.
        let mut worst = 0i64;
        for (g, c) in words.chunks_exact(2).zip(twin.chunks_exact(2)) {
            let g = ((u64::from(g[1]) << 32) | u64::from(g[0])) as i64;
            let c = ((u64::from(c[1]) << 32) | u64::from(c[0])) as i64;
            worst = worst.max((g - c).abs());
        }
        assert!(worst <= 64 * 1024, "h = {bw}: {worst} units");
    }
}

#[test]
fn gpu_grid_matches_direct_double_sum() {
    let Some(gpu) = raster("gpu_grid_matches_direct_double_sum") else {
        return;
    };
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(2000, 7);
    for bw in [DEFAULT_BANDWIDTH, 0.02] {
        let mut grid = DensityGrid::new(extent, 512, 512, bw).unwrap();
        assert!(gpu.supports(&grid));
        // Two calls add up like one (exact integer sums).
        gpu.accumulate(&mut grid, &pts[..1000]).unwrap();
        gpu.accumulate(&mut grid, &pts[1000..]).unwrap();
        let exact = direct_sum(extent, 512, 512, bw, &pts);
        let peak = exact.iter().fold(0.0f64, |m, v| m.max(*v));
        let err = grid
            .data()
            .iter()
            .zip(&exact)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(peak > 1.0);
        assert!(err <= 1e-3 * peak, "h = {bw}: {err} vs max {peak}");
        let mut cpu = DensityGrid::new(extent, 512, 512, bw).unwrap();
        cpu.accumulate(&pts);
        let diff = grid
            .data()
            .iter()
            .zip(cpu.data())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * peak,
            "h = {bw}: GPU vs CPU {diff} vs max {peak}"
        );
        assert_eq!(grid.deposits(), 2000);
    }
    // The direct path (a bandwidth under a pixel) is not the GPU's.
    let small = DensityGrid::new(extent, 512, 512, 0.002).unwrap();
    assert!(!gpu.supports(&small));
}

/// `memodiff render --backend gpu` draws the picture of `--backend cpu` up to a colour step
/// in a few pixels (f32 vs f64 weights).
#[test]
fn render_on_the_gpu_matches_the_cpu_picture() {
    if raster("render_on_the_gpu_matches_the_cpu_picture").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    let pts = cloud(3000, 5);
    let text: String = pts
        .chunks_exact(2)
        .filter(|p| p[0].is_finite())
        .map(|p| format!("{},{}\n", p[0], p[1]))
        .collect();
    std::fs::write(&csv, text).unwrap();
    let render = |backend: &str| {
        let out = dir.path().join(format!("{backend}.png"));
        let assert = assert_cmd::Command::cargo_bin("memodiff")
            .unwrap()
            .arg("render")
            .arg(&csv)
            .arg("--out")
            .arg(&out)
            .args(["--backend", backend, "--resolution", "200x150"])
            .assert()
            .success();
        let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
        (image::open(&out).unwrap().to_rgb8(), stdout)
    };
    let (gpu, said) = render("gpu");
    let (cpu, _) = render("cpu");
    assert!(!said.contains("on the CPU"), "{said}");
    let lut = memodiff::colormap::Colormap::Coolwarm.lut();
    let index = |px: &image::Rgb<u8>| lut.iter().position(|c| *c == px.0).unwrap() as i64;
    let mut differ = 0;
    for (a, b) in gpu.pixels().zip(cpu.pixels()) {
        let d = (index(a) - index(b)).abs();
        assert!(d <= 1);
        differ += usize::from(d != 0);
    }
    assert!(differ * 100 <= gpu.len() / 3, "{differ} pixels differ");
}
