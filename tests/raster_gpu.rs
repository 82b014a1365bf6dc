//! The GPU deposit of density grids (shaders/heatmap/deposit.wgsl): its integer sums equal
//! its f32 CPU twin's, and the images it gives stay within the accuracy bound of the
//! direct double-precision sum (512², 2,000 particles, the default bandwidth and 0.02, about
//! 1.7 pixels: the smallest the sub-grid serves at 512² on [-3, 3]²; smaller ones take the
//! CPU direct path).

mod common;

use memodiff::testing::density::extent::Extent;
use memodiff::testing::density::heatmap::{DensityGrid, DEFAULT_BANDWIDTH};
use memodiff::testing::engine::gpu::raster::{
    lagrange_uniform, DepositParams, GpuDensity, GpuRaster,
};
use memodiff::testing::engine::gpu::{AdapterChoice, GpuContext};

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
        Ok(ctx) => {
            common::announce_adapter(test, &ctx.info);
            Some(GpuRaster::new(ctx))
        }
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

/// The bandwidths of the grid tests: the default one and a narrower one, both over a pixel
/// (the split path), so two stencil sizes are covered.
const BANDWIDTHS: [f64; 2] = [DEFAULT_BANDWIDTH, 0.02];

/// [`raster`], the square [-3, 3]² and `n` particles of [`common::cloud`] (non-finite
/// ones among them) drawn with `salt`.
fn raster_and_cloud(test: &str, n: usize, salt: u64) -> Option<(GpuRaster, Extent, Vec<f32>)> {
    let gpu = raster(test)?;
    Some((
        gpu,
        Extent::square(-3.0, 3.0).unwrap(),
        common::cloud(n, salt, true),
    ))
}

#[test]
fn gpu_deposit_equals_its_cpu_twin() {
    let Some((gpu, extent, pts)) = raster_and_cloud("gpu_deposit_equals_its_cpu_twin", 5000, 3)
    else {
        return;
    };
    for bw in BANDWIDTHS {
        let grid = DensityGrid::new(extent, 512, 512, bw).unwrap();
        let sub = grid.sub_grid().expect("split path");
        let words = gpu.deposit_words(&sub, &pts).unwrap();
        let mut twin = vec![0u32; words.len()];
        let params = DepositParams {
            count: (pts.len() / 2) as u32,
            ..DepositParams::for_sub_grid(&sub)
        };
        memodiff::testing::engine::cpu::deposit::deposit(
            &params,
            &lagrange_uniform(),
            &pts,
            &mut twin,
        );
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
    let Some((gpu, extent, pts)) = raster_and_cloud("gpu_grid_matches_direct_double_sum", 2000, 7)
    else {
        return;
    };
    for bw in BANDWIDTHS {
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
    let pts = common::cloud(3000, 5, true);
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
    let lut = memodiff::testing::image::colormap::Colormap::Coolwarm.lut();
    let index = |px: &image::Rgb<u8>| lut.iter().position(|c| *c == px.0).unwrap() as i64;
    let mut differ = 0;
    for (a, b) in gpu.pixels().zip(cpu.pixels()) {
        let d = (index(a) - index(b)).abs();
        assert!(d <= 1);
        differ += usize::from(d != 0);
    }
    assert!(differ * 100 <= gpu.len() / 3, "{differ} pixels differ");
}

/// A sub-grid split into row tiles (an artificially small tile cap: a few sub-rows each, so
/// many particles' stencils straddle two tiles) gives exactly the integer sums of the
/// whole sub-grid in one buffer, and of `GpuRaster`'s one-shot deposit; the sums survive a
/// flush into the grid and the device grid is zero afterwards.
#[test]
fn tiled_gpu_grid_equals_untiled() {
    let Some((gpu, extent, pts)) = raster_and_cloud("tiled_gpu_grid_equals_untiled", 4000, 11)
    else {
        return;
    };
    let ctx = GpuContext::new(AdapterChoice::Any).unwrap();
    for bw in BANDWIDTHS {
        let empty = DensityGrid::new(extent, 256, 256, bw).unwrap();
        let sub = empty.sub_grid().unwrap();
        let mut whole = GpuDensity::new(ctx.clone(), &empty, None).unwrap();
        assert_eq!(whole.tiles(), 1);
        // 5 sub-rows a tile: not a divisor of the 8-row stencil.
        let mut tiled =
            GpuDensity::new(ctx.clone(), &empty, Some((5 * sub.stride * 8) as u64)).unwrap();
        assert_eq!(tiled.tiles(), sub.n_sub.div_ceil(5));
        // Two deposits add up like one; batches in another order give the same sums.
        whole.deposit_points(&pts[..3000]).unwrap();
        whole.deposit_points(&pts[3000..]).unwrap();
        tiled.deposit_points(&pts[3000..]).unwrap();
        tiled.deposit_points(&pts[..3000]).unwrap();
        let (mut a, mut b) = (empty.clone(), empty.clone());
        whole.flush(&mut a).unwrap();
        tiled.flush(&mut b).unwrap();
        assert_eq!(a.raw_counts(), b.raw_counts(), "h = {bw}");
        assert!(a.raw_counts().iter().any(|&c| c != 0));
        assert_eq!((a.deposits(), b.deposits()), (4000, 4000));
        let mut one_shot = empty.clone();
        gpu.accumulate(&mut one_shot, &pts).unwrap();
        assert_eq!(a.raw_counts(), one_shot.raw_counts(), "h = {bw}");
        // Flushed: a second flush adds nothing.
        tiled.flush(&mut b).unwrap();
        assert_eq!(a.raw_counts(), b.raw_counts());
        assert_eq!(b.deposits(), 4000);
    }
}

/// The tiled deposit's CPU twin: tiles deposited one by one with `row0`/`rows` put every
/// node's sum where the untiled twin does.
#[test]
fn deposit_twin_tiles_cover_the_sub_grid() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = common::cloud(3000, 13, true);
    let grid = DensityGrid::new(extent, 256, 256, DEFAULT_BANDWIDTH).unwrap();
    let sub = grid.sub_grid().unwrap();
    let lagrange = lagrange_uniform();
    let base = DepositParams {
        count: (pts.len() / 2) as u32,
        ..DepositParams::for_sub_grid(&sub)
    };
    let mut whole = vec![0u32; 2 * sub.n_sub * sub.stride];
    memodiff::testing::engine::cpu::deposit::deposit(&base, &lagrange, &pts, &mut whole);
    let mut joined = Vec::new();
    for row0 in (0..sub.n_sub).step_by(7) {
        let rows = 7.min(sub.n_sub - row0);
        let mut tile = vec![0u32; 2 * rows * sub.stride];
        let params = DepositParams {
            row0: row0 as u32,
            rows: rows as u32,
            ..base
        };
        memodiff::testing::engine::cpu::deposit::deposit(&params, &lagrange, &pts, &mut tile);
        joined.extend(tile);
    }
    assert_eq!(whole, joined);
}

/// Column 0, 1 of wider rows (the engine's (P, D) buffer): `dim` is the row stride.
#[test]
fn deposit_twin_reads_the_first_two_columns() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = common::cloud(500, 17, true);
    let wide: Vec<f32> = pts
        .chunks_exact(2)
        .flat_map(|p| [p[0], p[1], 9.0, -9.0])
        .collect();
    let grid = DensityGrid::new(extent, 256, 256, DEFAULT_BANDWIDTH).unwrap();
    let sub = grid.sub_grid().unwrap();
    let base = DepositParams {
        count: 500,
        ..DepositParams::for_sub_grid(&sub)
    };
    let (mut a, mut b) = (
        vec![0u32; 2 * sub.n_sub * sub.stride],
        vec![0u32; 2 * sub.n_sub * sub.stride],
    );
    memodiff::testing::engine::cpu::deposit::deposit(&base, &lagrange_uniform(), &pts, &mut a);
    let params = DepositParams { dim: 4, ..base };
    memodiff::testing::engine::cpu::deposit::deposit(&params, &lagrange_uniform(), &wide, &mut b);
    assert_eq!(a, b);
}

fn run_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// `sample --backend gpu` deposits the samples' density on the GPU from the engine's
/// particle buffer (run.json says so) in batches (exact integer sums across batches), and
/// samples_density.npy stays within 1e-5 of the maximum of the direct double-precision sum
/// of the run's own samples.npy, at the default bandwidth and at 0.02 (the smallest the
/// sub-grid serves at 512² on [-3, 3]²). A bandwidth under a pixel falls back to the CPU
/// and run.json says why.
#[test]
fn gpu_sample_run_deposits_on_the_gpu() {
    if raster("gpu_sample_run_deposits_on_the_gpu").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-3.0, 3.0).unwrap();
    for (name, bw) in [("default", DEFAULT_BANDWIDTH), ("small", 0.02)] {
        let out = dir.path().join(name);
        assert_cmd::Command::cargo_bin("memodiff")
            .unwrap()
            .arg("sample")
            .arg("--out")
            .arg(&out)
            .args(["--backend", "gpu", "--particles", "2000", "--batch", "700"])
            .args(["--bandwidth", &bw.to_string(), "--steps", "30"])
            .assert()
            .success();
        let report = run_json(&out);
        let on = &report["parameters"]["density_on"];
        assert_eq!(on["samples"], "gpu", "{on}");
        assert_eq!(on["initial"], "cpu", "{on}");
        assert_eq!(report["parameters"]["batches"], 3);
        let (_, samples) = memodiff::testing::io::read_npy_f32(&out.join("samples.npy")).unwrap();
        let (shape, grid) =
            memodiff::testing::io::read_npy_f32(&out.join("samples_density.npy")).unwrap();
        assert_eq!(shape, [512, 512]);
        let exact = direct_sum(extent, 512, 512, bw, &samples);
        let peak = exact.iter().fold(0.0f64, |m, v| m.max(*v));
        let err = grid
            .iter()
            .zip(&exact)
            .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        eprintln!("h = {bw}: max error {:.2e} of the maximum", err / peak);
        assert!(peak > 10.0);
        assert!(err <= 1e-5 * peak, "h = {bw}: {err} vs max {peak}");
        // `render --backend gpu` of the run's samples deposits the same f32 weights into
        // the same exact sums: the run's picture and grid, byte for byte (`--backend cpu`
        // uses f64 weights: within ~1e-6 of the maximum, not byte-identical).
        let again = dir.path().join(format!("{name}.png"));
        let again_grid = dir.path().join(format!("{name}.npy"));
        assert_cmd::Command::cargo_bin("memodiff")
            .unwrap()
            .arg("render")
            .arg(out.join("samples.npy"))
            .arg("--out")
            .arg(&again)
            .arg("--grid")
            .arg(&again_grid)
            .args(["--backend", "gpu", "--bandwidth", &bw.to_string()])
            .assert()
            .success();
        assert!(std::fs::read(&again).unwrap() == std::fs::read(out.join("samples.png")).unwrap());
        let (_, rendered) = memodiff::testing::io::read_npy_f32(&again_grid).unwrap();
        assert!(
            rendered == grid,
            "h = {bw}: render --backend gpu differs from the run"
        );
    }
    // Grids the GPU sub-grid cannot serve fall back to the CPU, saying why: a bandwidth
    // on the direct path, and --t-min (the samples change on the host after the last step).
    for (name, extra, why) in [
        ("tiny", ["--bandwidth", "0.004"], "direct"),
        ("t_min", ["--t-min", "0.05"], "--t-min"),
    ] {
        let out = dir.path().join(name);
        assert_cmd::Command::cargo_bin("memodiff")
            .unwrap()
            .arg("sample")
            .arg("--out")
            .arg(&out)
            .args(["--backend", "gpu", "--particles", "300", "--steps", "10"])
            .args(extra)
            .assert()
            .success();
        let on = &run_json(&out)["parameters"]["density_on"];
        assert_eq!(on["samples"], "cpu", "{on}");
        assert!(on["note"].as_str().unwrap().contains(why), "{on}");
    }
}
