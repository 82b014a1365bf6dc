//! Tests of the density grid: every path against the exact sum, the fixed point, merges.

use super::fixed_point::*;
use super::split::*;
use super::*;
use crate::image::colormap::Colormap;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Normal-ish points (sum of uniforms) spread over [-3, 3]^2, a few outside.
fn cloud(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..2 * n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            s * 2.2
        })
        .collect()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn compare_with_direct(bandwidth: f64) {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(2000, 7);
    let mut grid = DensityGrid::new(extent, 512, 512, bandwidth).unwrap();
    grid.accumulate(&pts);
    let direct = direct_sum(extent, 512, 512, bandwidth, &pts);
    let peak = max_abs(&direct);
    assert!(peak > 1.0);
    let diff: Vec<f64> = grid
        .data()
        .iter()
        .zip(&direct)
        .map(|(a, b)| a - b)
        .collect();
    let err = max_abs(&diff);
    assert!(
        err <= 1e-3 * peak,
        "h = {bandwidth}: max diff {err} vs peak {peak}"
    );
    // The truncation bound is far tighter than the requirement: 2000 * 2e-7 at worst.
    assert!(err <= 2000.0 * 2e-7, "h = {bandwidth}: max diff {err}");
    eprintln!(
        "h = {bandwidth} ({} path): max |diff| {err:.3e}, peak {peak:.4}, ratio {:.3e}",
        if grid.is_split() { "split" } else { "direct" },
        err / peak
    );
}

#[test]
fn paths_are_chosen_by_shape() {
    let sq = Extent::square(-3.0, 3.0).unwrap();
    let grid = |w, h, bw| DensityGrid::new(sq, w, h, bw).unwrap();
    assert!(grid(512, 512, DEFAULT_BANDWIDTH).is_split());
    assert!(!grid(512, 512, 0.005).is_split());
    assert!(!grid(1, 512, DEFAULT_BANDWIDTH).is_split());
    assert!(!grid(512, 1, DEFAULT_BANDWIDTH).is_split());
    // Sub-grid memory stays below max(4 x pixels, 2^23 values) at every size.
    for (w, h, bw) in [
        (512, 512, DEFAULT_BANDWIDTH),
        (MAX_SIDE, MAX_SIDE, DEFAULT_BANDWIDTH),
        (MAX_SIDE, 64, DEFAULT_BANDWIDTH),
        (MAX_SIDE, MAX_SIDE, 0.0012),
        (2048, 2048, 0.004),
        (4096, 4096, 0.01),
        (512, 512, 0.009),
    ] {
        if let Some(plan) = SplitPlan::new(&sq, w, h, bw) {
            let cells = plan.n_sub * plan.stride;
            assert!(
                cells <= (4 * w * h).max(SPLIT_MIN_BUDGET),
                "{w}x{h}, h = {bw}: {cells} sub-grid values"
            );
            assert!(plan.band >= 2 * STENCIL && plan.band.is_power_of_two());
        }
    }
    // The default image's sub-grid: about 1,370 x 1,376 values (15 MB).
    let plan = SplitPlan::new(&sq, 512, 512, DEFAULT_BANDWIDTH).unwrap();
    assert!(plan.n_sub * plan.stride < 2_000_000);
    // Too fine a sub-grid for the budget: the direct path.
    assert!(SplitPlan::new(&sq, 512, 512, 0.009).is_none());
    assert!(SplitPlan::new(&sq, 2048, 2048, 0.004).is_none());
    assert!(SplitPlan::new(&sq, 4096, 4096, 0.01).is_some());
}

#[test]
fn split_path_matches_direct_sum_across_bandwidths() {
    // From just above the split threshold to wide kernels, odd sizes, off-centre extent.
    let extent = Extent::new(-2.0, 3.0, -1.5, 1.0).unwrap();
    let pts = cloud(1500, 13);
    for (w, h, bw) in [
        (400, 300, 0.03),
        (257, 129, 0.11),
        (64, 48, 0.2),
        (300, 200, 0.05),
    ] {
        let mut grid = DensityGrid::new(extent, w, h, bw).unwrap();
        assert!(grid.is_split(), "{w}x{h}, h = {bw}");
        grid.accumulate(&pts);
        let direct = direct_sum(extent, w, h, bw, &pts);
        let peak = max_abs(&direct);
        let err = grid
            .data()
            .iter()
            .zip(&direct)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-7 * peak,
            "{w}x{h}, h = {bw}: {err} vs peak {peak}"
        );
    }
}

#[test]
fn lagrange_weights_interpolate_polynomials() {
    for t in [0.0, 0.1, 0.25, 0.5, 0.77, 0.999] {
        let l = lagrange(t);
        // Nodes -3..=4: exact for degree < 8.
        for deg in 0..8 {
            let interp: f64 = l
                .iter()
                .enumerate()
                .map(|(k, lk)| lk * (k as f64 - 3.0).powi(deg))
                .sum();
            let exact = t.powi(deg);
            assert!(
                (interp - exact).abs() <= 1e-11 * (1.0 + 4f64.powi(deg)),
                "t = {t}, degree {deg}: {interp} vs {exact}"
            );
        }
    }
    let at0 = lagrange(0.0);
    assert!((at0[3] - 1.0).abs() < 1e-14 && at0.iter().map(|v| v.abs()).sum::<f64>() < 1.0 + 1e-13);
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(60_000, 21);
    for bw in [DEFAULT_BANDWIDTH, 0.005] {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut grid = DensityGrid::new(extent, 256, 192, bw).unwrap();
                    grid.accumulate(&pts[..50_000]);
                    grid.accumulate(&pts[50_000..]);
                    grid.into_data()
                })
        };
        let one = run(1);
        assert!(one.iter().any(|&v| v > 1.0));
        for threads in [2, 3, 5] {
            assert!(one == run(threads), "h = {bw}, {threads} threads");
        }
    }
}

#[test]
fn reads_between_batches_see_everything() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(4000, 17);
    let mut all = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
    assert!(all.is_split());
    assert!(all.data().iter().all(|&v| v == 0.0));
    all.accumulate(&pts);
    let mut steps = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
    steps.accumulate(&pts[..2000]);
    let half = steps.data().to_vec();
    let (lo, hi) = steps.min_max();
    assert!(lo == 0.0 && hi > 1.0);
    steps.accumulate(&pts[2000..]);
    let peak = max_abs(all.data());
    for ((a, b), h) in all.data().iter().zip(steps.data()).zip(&half) {
        assert!((a - b).abs() <= 1e-12 * peak);
        // More particles never lower the density (beyond the interpolation error).
        assert!(*b >= *h - 1e-8 * peak);
    }
    // Clones, equality and into_data agree with data.
    let copy = steps.clone();
    assert_eq!(copy, steps);
    assert_eq!(copy.get(100, 100), steps.data()[100 * 200 + 100]);
    assert_eq!(steps.clone().into_data(), steps.data());
    // Merging an empty grid changes nothing; merging into an empty one copies.
    let empty = DensityGrid::new(extent, 200, 200, DEFAULT_BANDWIDTH).unwrap();
    let before = steps.data().to_vec();
    steps.merge(&empty).unwrap();
    assert_eq!(steps.data(), &before[..]);
    let mut target = empty.clone();
    target.merge(&steps).unwrap();
    assert_eq!(target.data(), &before[..]);
}

#[test]
fn fast_path_matches_direct_sum_default_bandwidth() {
    compare_with_direct(DEFAULT_BANDWIDTH);
}

#[test]
fn fast_path_matches_direct_sum_small_bandwidth() {
    compare_with_direct(0.005);
}

#[test]
fn default_bandwidth_is_the_tutorials_kernel() {
    let h = DEFAULT_BANDWIDTH;
    assert!((1.0 / (2.0 * h * h) - 350.0).abs() < 1e-9);
}

#[test]
fn non_square_and_odd_sizes_match_direct_sum() {
    let extent = Extent::new(-2.0, 3.0, -1.0, 1.5).unwrap();
    let pts = cloud(300, 3);
    for (w, h) in [(300, 200), (1, 7), (9, 1), (1, 1), (37, 211)] {
        let mut grid = DensityGrid::new(extent, w, h, 0.05).unwrap();
        grid.accumulate(&pts);
        let direct = direct_sum(extent, w, h, 0.05, &pts);
        let peak = max_abs(&direct).max(1e-300);
        for (a, b) in grid.data().iter().zip(&direct) {
            assert!((a - b).abs() <= 1e-6 * peak.max(1.0), "{w}x{h}: {a} vs {b}");
        }
    }
}

#[test]
fn png_has_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let mut grid = DensityGrid::new(extent, 300, 200, DEFAULT_BANDWIDTH).unwrap();
    grid.accumulate(&cloud(500, 1));
    let path = dir.path().join("density.png");
    crate::plot::raster::write_linear_png(&grid, &path, Colormap::Coolwarm).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (300, 200));
    assert_eq!(
        img,
        crate::plot::raster::linear_rgb_image(&grid, Colormap::Coolwarm)
    );
    // No temporary left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("density.png")]);
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let grid = DensityGrid::new(Extent::square(0.0, 1.0).unwrap(), 4, 4, 0.1).unwrap();
    let path = dir.path().join("missing").join("x.png");
    assert!(crate::plot::raster::write_linear_png(&grid, &path, Colormap::Gray).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn y_axis_points_up() {
    let extent = Extent::square(-2.0, 2.0).unwrap();
    let (w, h) = (64, 48);
    let mut grid = DensityGrid::new(extent, w, h, DEFAULT_BANDWIDTH).unwrap();
    grid.accumulate(&[0.0, 1.0]);
    let (mut best, mut at) = (f64::NEG_INFINITY, (0, 0));
    for r in 0..h {
        for c in 0..w {
            if grid.get(r, c) > best {
                best = grid.get(r, c);
                at = (r, c);
            }
        }
    }
    assert!(
        at.0 < h / 2,
        "brightest row {} should be in the upper half",
        at.0
    );
    // y = 1 is three quarters up: row ~ (h - 1) / 4.
    assert!((grid.row_y(at.0) - 1.0).abs() <= 2.0 / (h - 1) as f64);
    // x = 0 is midway between two columns: their values tie (in the fixed point) and
    // the first wins, at distance 2 / (w - 1) up to rounding.
    assert!((grid.column_x(at.1)).abs() <= 2.0 / (w - 1) as f64 * (1.0 + 1e-12));
    assert_eq!(grid.get(at.0, w / 2 - 1), grid.get(at.0, w / 2));
    assert_eq!(grid.row_y(0), 2.0);
    assert_eq!(grid.row_y(h - 1), -2.0);
    // And in the image: the brightest pixel is the last colour of the map.
    let img = crate::plot::raster::linear_rgb_image(&grid, Colormap::Viridis);
    assert_eq!(
        img.get_pixel(at.1 as u32, at.0 as u32).0,
        Colormap::Viridis.lut()[255]
    );
}

#[test]
fn two_batches_equal_one_batch_and_merge() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(5000, 11);
    // Split path (default bandwidth) and direct path (small bandwidth): bit for bit.
    for bw in [DEFAULT_BANDWIDTH, 0.005] {
        let mut one = DensityGrid::new(extent, 256, 192, bw).unwrap();
        one.accumulate(&pts);
        let mut two = DensityGrid::new(extent, 256, 192, bw).unwrap();
        two.accumulate(&pts[..4000]);
        two.accumulate(&pts[4000..]);
        assert!(one.data() == two.data(), "h = {bw}");
        assert!(one.raw_counts() == two.raw_counts(), "h = {bw}");
        let mut left = DensityGrid::new(extent, 256, 192, bw).unwrap();
        left.accumulate(&pts[..6000]);
        let mut right = DensityGrid::new(extent, 256, 192, bw).unwrap();
        right.accumulate(&pts[6000..]);
        left.merge(&right).unwrap();
        assert!(one.data() == left.data(), "h = {bw}");
        // Order does not matter either: the particles reversed.
        let reversed: Vec<f32> = pts.chunks_exact(2).rev().flatten().copied().collect();
        let mut back = DensityGrid::new(extent, 256, 192, bw).unwrap();
        back.accumulate(&reversed);
        assert!(one.data() == back.data(), "h = {bw}");
        assert_eq!(one.raw_meta().deposits, 5000);
        let other = DensityGrid::new(extent, 256, 191, bw).unwrap();
        assert!(left.merge(&other).is_err());
    }
    let mut left = DensityGrid::new(extent, 256, 192, DEFAULT_BANDWIDTH).unwrap();
    let other = DensityGrid::new(Extent::square(-3.0, 3.5).unwrap(), 256, 192, 0.1).unwrap();
    assert!(left.merge(&other).is_err());
}

#[test]
fn raw_grids_round_trip_and_refuse_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = cloud(3000, 5);
    for (bw, split) in [(DEFAULT_BANDWIDTH, true), (0.005, false)] {
        let mut grid = DensityGrid::new(extent, 256, 192, bw).unwrap();
        assert_eq!(grid.is_split(), split);
        // Before any deposit: all zero, still round-trips.
        let path = dir.path().join("g.npy");
        crate::image::grid_file::write_raw(&path, &grid).unwrap();
        assert!(crate::image::grid_file::read_raw(&path)
            .unwrap()
            .data()
            .iter()
            .all(|&v| v == 0.0));
        grid.accumulate(&pts);
        crate::image::grid_file::write_raw(&path, &grid).unwrap();
        let back = crate::image::grid_file::read_raw(&path).unwrap();
        assert!(back.data() == grid.data());
        assert_eq!(back.raw_meta(), grid.raw_meta());
        // Summing raw counts = merging.
        let mut a = DensityGrid::new(extent, 256, 192, bw).unwrap();
        a.accumulate(&pts[..2000]);
        let mut b = DensityGrid::new(extent, 256, 192, bw).unwrap();
        b.accumulate(&pts[2000..]);
        let sum: Vec<i64> = a
            .raw_counts()
            .iter()
            .zip(b.raw_counts().iter())
            .map(|(x, y)| x + y)
            .collect();
        let mut meta = a.raw_meta();
        meta.deposits += b.raw_meta().deposits;
        assert!(DensityGrid::from_raw(&meta, sum).unwrap().data() == grid.data());
        // Mismatches are refused.
        let mut wrong = grid.raw_meta();
        wrong.bandwidth *= 1.5;
        // Refused when read (a different sub-grid) or when merged (a different grid).
        assert!(
            DensityGrid::from_raw(&wrong, grid.raw_counts().into_owned())
                .and_then(|other| grid.clone().merge(&other))
                .is_err()
        );
        let mut wrong = grid.raw_meta();
        wrong.path = if split { "direct" } else { "split" }.into();
        assert!(DensityGrid::from_raw(&wrong, grid.raw_counts().into_owned()).is_err());
        assert!(DensityGrid::from_raw(&grid.raw_meta(), vec![0; 5]).is_err());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        assert!(crate::image::grid_file::read_raw(&path).is_err());
    }
}

#[test]
fn fixed_point_quantize_and_headroom() {
    for v in [
        0.0,
        0.4,
        0.5,
        0.6,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -3.7,
        4294967296.0,
        -4294967296.0,
    ] {
        assert_eq!(quantize(v), v.round_ties_even() as i64, "{v}");
    }
    // Every deposited weight is at most 1 in magnitude (one particle's peak).
    let mut worst = 0.0f64;
    for k in 0..=1000 {
        let l = lagrange(k as f64 / 1000.0);
        worst = worst.max(l.iter().fold(0.0f64, |m, v| m.max(v.abs())));
    }
    assert!(worst <= 1.0 + 1e-12, "{worst}");
    let per_deposit = (SCALE * (1.0 + 1e-12)).ceil() as i128;
    assert!(EXACT_PARTICLES as i128 * per_deposit <= i64::MAX as i128);
}

/// Past `EXACT_PARTICLES` the sums wrap modulo 2^64 like the GPU's two-word adds
/// (shaders/heatmap/deposit.wgsl), so they stay associative: any order of deposits, batches
/// and merges gives the same bits.
#[test]
fn fixed_point_sums_wrap_like_the_gpu() {
    assert_eq!(add_fixed(i64::MAX - 1, 5), i64::MIN + 3);
    assert_eq!(add_fixed(i64::MIN + 1, -5), i64::MAX - 3);
    assert_eq!(add_fixed(add_fixed(i64::MAX, 1), -1), i64::MAX);
    // The GPU's add of (lo, hi) u32 words with a carry, written out.
    let gpu_add = |acc: i64, d: i64| -> i64 {
        let (acc, d) = (acc as u64, d as u64);
        let (lo, carry) = (acc as u32).overflowing_add(d as u32);
        let hi = ((acc >> 32) as u32)
            .wrapping_add((d >> 32) as u32)
            .wrapping_add(carry as u32);
        ((u64::from(hi) << 32) | u64::from(lo)) as i64
    };
    let unit = SCALE as i64;
    for (acc, d) in [
        (i64::MAX - 1, 5),
        (i64::MAX - unit / 2, unit),
        (i64::MIN, -1),
        (-1, 1),
        (0xffff_ffff, 1),
        (123, -456),
    ] {
        assert_eq!(add_fixed(acc, d), gpu_add(acc, d), "{acc} + {d}");
    }
    // Order-independent past the limit: a + b + c in two orders and as a merge.
    let (a, b, c) = (i64::MAX - 3, unit, 7 * unit);
    let left = add_fixed(add_fixed(a, b), c);
    assert_eq!(left, add_fixed(add_fixed(c, a), b));
    let mut merged = vec![a, 0];
    add_counts(&mut merged, &[add_fixed(b, c), 0]);
    assert_eq!(merged, [left, 0]);

    // A grid whose cell is near the bound: one more particle wraps it (accumulate), and so
    // does a merge and a sum deposited elsewhere (the GPU's path into a CPU grid).
    let extent = Extent::square(-1.0, 1.0).unwrap();
    let histogram = DensityGrid::with_kernel(extent, 4, 4, 0.1, Kernel::Histogram).unwrap();
    let mut meta = histogram.raw_meta();
    meta.deposits = EXACT_PARTICLES;
    let mut counts = vec![0i64; 16];
    let cell = histogram.histogram_cell(1.0, 1.0).unwrap();
    counts[cell] = i64::MAX;
    let mut near = DensityGrid::from_raw(&meta, counts.clone()).unwrap();
    near.accumulate(&[1.0, 1.0]);
    assert_eq!(near.raw_counts()[cell], i64::MAX.wrapping_add(unit));
    let mut one = histogram.clone();
    one.accumulate(&[1.0, 1.0]);
    let mut merged = DensityGrid::from_raw(&meta, counts).unwrap();
    merged.merge(&one).unwrap();
    assert_eq!(merged.raw_counts(), near.raw_counts());

    let mut split = DensityGrid::new(extent, 64, 64, 0.1).unwrap();
    assert!(split.is_split());
    let stride = split.raw_meta().shape[1];
    split.add_sub_grid_rows(0, &vec![i64::MAX; stride]).unwrap();
    split.add_sub_grid_rows(0, &vec![2; stride]).unwrap();
    assert!(split.raw_counts()[..stride]
        .iter()
        .all(|&v| v == i64::MIN + 1));
}

#[test]
fn skips_nan_and_far_points() {
    let extent = Extent::square(-1.0, 1.0).unwrap();
    let mut grid = DensityGrid::new(extent, 32, 32, 0.05).unwrap();
    grid.accumulate(&[
        f32::NAN,
        0.0,
        0.0,
        f32::INFINITY,
        100.0,
        0.0,
        -1e30,
        1e30,
        3.0,
        -3.0,
    ]);
    assert!(grid.data().iter().all(|&v| v == 0.0));
    // A constant grid maps to the low colour.
    let img = crate::plot::raster::linear_rgb_image(&grid, Colormap::Coolwarm);
    assert!(img.pixels().all(|p| p.0 == Colormap::Coolwarm.lut()[0]));
    // A point just outside the extent still lights the border.
    grid.accumulate(&[1.02, 0.0]);
    assert!(grid.data().iter().any(|&v| v > 0.5));
}

#[test]
fn validation() {
    assert!(Extent::new(0.0, 0.0, 0.0, 1.0).is_err());
    assert!(Extent::new(0.0, 1.0, 2.0, 1.0).is_err());
    assert!(Extent::new(f64::NAN, 1.0, 0.0, 1.0).is_err());
    assert!(Extent::square(1.0, f64::INFINITY).is_err());
    let e: Extent = "-3, 3,-2.5,2".parse().unwrap();
    assert_eq!(e, Extent::new(-3.0, 3.0, -2.5, 2.0).unwrap());
    assert_eq!(e.to_string().parse::<Extent>().unwrap(), e);
    assert!("1,2,3".parse::<Extent>().is_err());
    assert!("1,2,x,4".parse::<Extent>().is_err());
    assert!("2,1,3,4".parse::<Extent>().is_err());
    assert!("0,1,0,1,0".parse::<Extent>().is_err());
    let sq = Extent::square(-3.0, 3.0).unwrap();
    assert!(DensityGrid::new(sq, 0, 10, 0.1).is_err());
    assert!(DensityGrid::new(sq, 10, MAX_SIDE + 1, 0.1).is_err());
    assert!(DensityGrid::new(sq, 10, 10, 0.0).is_err());
    assert!(DensityGrid::new(sq, 10, 10, f64::NAN).is_err());
    assert!(DensityGrid::new(sq, MAX_SIDE, 1, 0.1).is_ok());
}

/// A grid past `EXACT_PARTICLES` deposits (accumulated, merged or read back) says so.
#[test]
fn grids_past_the_limit_are_not_exact() {
    let extent = Extent::square(-1.0, 1.0).unwrap();
    let mut grid = DensityGrid::new(extent, 8, 8, 0.1).unwrap();
    assert!(grid.is_exact());
    grid.add_deposits(EXACT_PARTICLES - 1);
    grid.accumulate(&[0.0, 0.0]);
    assert!(grid.is_exact());
    let mut merged = grid.clone();
    merged.merge(&grid).unwrap();
    assert!(!merged.is_exact());
    grid.accumulate(&[0.0, 0.0]);
    assert!(!grid.is_exact());
    let back = DensityGrid::from_raw(&grid.raw_meta(), grid.raw_counts().into_owned()).unwrap();
    assert!(!back.is_exact());
    assert!(DensityGrid::exact_for(EXACT_PARTICLES));
    assert!(!DensityGrid::exact_for(EXACT_PARTICLES + 1));
}
