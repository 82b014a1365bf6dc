//! Density images (issue #4): kernel-sum accuracy against the direct f64 sum, banded
//! (tiled) output equal to the whole-grid output, the normalizations, the histogram kernel,
//! the y axis, and the f32 grid files with their sidecars.

mod common;

use memodiff::testing::density::extent::Extent;
use memodiff::testing::density::heatmap::{direct_sum, DensityGrid, Kernel, DEFAULT_BANDWIDTH};
use memodiff::testing::image::colormap::{lut_index, Colormap};
use memodiff::testing::image::grid_file::{GridFile, GridMeta};
use memodiff::testing::image::norm::{shade_indices, stats_of, Norm, Shading};
use memodiff::testing::plot::raster::{
    write_grid_outputs, write_grid_outputs_banded, BandLimits, GridOutputs, GridSum,
};

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// The accuracy bound: 512², 2,000 particles, the default bandwidth and a small one,
/// within 1e-3 of the maximum of the direct double-precision sum (the method's bound is far
/// tighter: ~1e-8, so the test asserts 1e-6 too).
#[test]
fn kernel_sum_matches_direct_double_sum_at_512() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = common::cloud(2000, 7, false);
    for bw in [DEFAULT_BANDWIDTH, 0.008] {
        let mut grid = DensityGrid::new(extent, 512, 512, bw).unwrap();
        grid.accumulate(&pts);
        let exact = direct_sum(extent, 512, 512, bw, &pts);
        let peak = max_abs(&exact);
        assert!(peak > 1.0, "h = {bw}: the cloud must overlap (peak {peak})");
        let err = grid
            .data()
            .iter()
            .zip(&exact)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-3 * peak, "h = {bw}: error {err} vs max {peak}");
        assert!(err <= 1e-6 * peak, "h = {bw}: error {err} vs max {peak}");
        // And what is written to disk (f32) stays within f32 rounding of it.
        let band: Vec<f64> = {
            let mut out = vec![0.0; 512 * 512];
            grid.read_rows(0, &mut out);
            out
        };
        assert!(band == grid.data());
    }
}

/// Bands of rows read from the grid equal the whole grid's rows, bit for bit, on both the
/// split (sub-grid) path and the direct path, for band sizes that do not divide the height;
/// so do bands computed from the particles alone (direct path and histogram).
#[test]
fn bands_equal_the_whole_grid() {
    let extent = Extent::new(-2.5, 3.0, -1.5, 2.0).unwrap();
    let pts = common::cloud(3000, 3, false);
    for (bw, kernel) in [
        (DEFAULT_BANDWIDTH, Kernel::Gaussian),
        (0.004, Kernel::Gaussian),
        (0.1, Kernel::Histogram),
    ] {
        let empty = DensityGrid::with_kernel(extent, 301, 203, bw, kernel).unwrap();
        let mut grid = empty.clone();
        grid.accumulate(&pts);
        let fresh = grid.clone(); // not yet converted: bands are computed, not copied
        let whole = grid.data().to_vec();
        for rows in [1usize, 7, 64, 203] {
            let mut r0 = 0;
            while r0 < 203 {
                let k = rows.min(203 - r0);
                let mut out = vec![f64::NAN; k * 301];
                fresh.read_rows(r0, &mut out);
                assert!(
                    out == whole[r0 * 301..(r0 + k) * 301],
                    "h = {bw}, {kernel:?}: rows {r0}..{}",
                    r0 + k
                );
                // The same rows straight from the particles (how large direct-path images
                // are rendered): the same integers, so the same values.
                if empty.sub_grid().is_none() {
                    let mut from_points = vec![f64::NAN; k * 301];
                    empty.rows_of_points(&pts, r0, &mut from_points);
                    assert!(
                        from_points == out,
                        "h = {bw}, {kernel:?}: rows {r0}.. from points"
                    );
                }
                r0 += k;
            }
        }
    }
}

/// The streamed path (grid on disk between passes, many bands) writes the same `.npy`, PNG
/// and 16-bit PNG bytes as the in-memory path, for every normalization; the values equal
/// the untiled grid's within f32 rounding (1e-6 relative).
#[test]
fn tiled_output_equals_untiled() {
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let mut grid = DensityGrid::new(extent, 257, 190, DEFAULT_BANDWIDTH).unwrap();
    grid.accumulate(&common::cloud(5000, 11, false));
    for norm in [Norm::Linear, Norm::Log, Norm::EqHist] {
        let outputs = |tag: &str| GridOutputs {
            png: Some(dir.path().join(format!("{tag}.png"))),
            png16: Some(dir.path().join(format!("{tag}16.png"))),
            npy: Some(dir.path().join(format!("{tag}.npy"))),
            figure: None,
        };
        let shading = Shading {
            colormap: Colormap::Viridis,
            norm,
        };
        let whole =
            write_grid_outputs(&grid, GridMeta::of(&grid), shading, &outputs("whole")).unwrap();
        let tiled = write_grid_outputs_banded(
            &grid,
            GridMeta::of(&grid),
            shading,
            &outputs("tiled"),
            BandLimits {
                in_memory_pixels: 0,
                band_pixels: 257 * 13,
            },
        )
        .unwrap();
        assert_eq!(whole, tiled);
        for ext in [".png", "16.png", ".npy", ".json"] {
            let a = std::fs::read(dir.path().join(format!("whole{ext}"))).unwrap();
            let b = std::fs::read(dir.path().join(format!("tiled{ext}"))).unwrap();
            assert!(a == b, "{norm:?}: whole{ext} differs from tiled{ext}");
        }
        // Without a .npy the streamed path goes through a scratch file, removed at the end.
        let scratch = GridOutputs {
            png: Some(dir.path().join("scratch.png")),
            ..GridOutputs::default()
        };
        write_grid_outputs_banded(
            &grid,
            GridMeta::of(&grid),
            shading,
            &scratch,
            BandLimits {
                in_memory_pixels: 0,
                band_pixels: 1000,
            },
        )
        .unwrap();
        assert!(
            std::fs::read(dir.path().join("scratch.png")).unwrap()
                == std::fs::read(dir.path().join("whole.png")).unwrap()
        );
        let file = GridFile::open(&dir.path().join("tiled.npy")).unwrap();
        let mut back = vec![0.0; 257 * 190];
        file.add_rows(0, &mut back).unwrap();
        for (a, b) in back.iter().zip(grid.data()) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-30) + 1e-30);
        }
        // No temporary or scratch file is left behind.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left behind: {name}");
        }
    }
}

/// eq-hist: monotone in the value and using the full range of the colormap, also when
/// most pixels are the empty background.
#[test]
fn eq_hist_is_monotone_and_uses_the_full_range() {
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let mut grid = DensityGrid::new(extent, 200, 160, 0.05).unwrap();
    grid.accumulate(&common::cloud(4000, 5, false));
    let values: Vec<f32> = grid.data().iter().map(|&v| v as f32).collect();
    let stats = stats_of(&values, Norm::EqHist);
    let idx = shade_indices(&values, Norm::EqHist, &stats);
    assert_eq!(idx.iter().min(), Some(&0));
    assert_eq!(idx.iter().max(), Some(&255));
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    for pair in order.windows(2) {
        assert!(
            idx[pair[0]] <= idx[pair[1]],
            "not monotone: {} -> {}, {} -> {}",
            values[pair[0]],
            idx[pair[0]],
            values[pair[1]],
            idx[pair[1]]
        );
    }
    // Equalized: every quarter of the colour range holds a comparable share of the
    // non-background pixels (linear puts nearly all of them in the lowest quarter).
    let lin = shade_indices(&values, Norm::Linear, &stats_of(&values, Norm::Linear));
    let share = |idx: &[usize], q: usize| {
        let lit: Vec<usize> = idx
            .iter()
            .zip(&values)
            .filter(|(_, &v)| v > 0.0)
            .map(|(&i, _)| i)
            .collect();
        lit.iter().filter(|&&i| i / 64 == q).count() as f64 / lit.len() as f64
    };
    for q in 1..4 {
        assert!(
            share(&idx, q) > 0.1,
            "eq-hist quarter {q}: {}",
            share(&idx, q)
        );
    }
    assert!(share(&lin, 0) > 0.5);
}

/// Monotone, ends at 0 and 255, and exact on a known small case: uniform values 0..n map
/// to equal steps (the cdf of a uniform histogram is linear).
#[test]
fn eq_hist_of_uniform_values_is_linear() {
    let values: Vec<f32> = (0..1000).map(|k| k as f32).collect();
    let stats = stats_of(&values, Norm::EqHist);
    let idx = shade_indices(&values, Norm::EqHist, &stats);
    assert_eq!((idx[0], idx[999]), (0, 255));
    let lin = shade_indices(&values, Norm::Linear, &stats_of(&values, Norm::Linear));
    for (a, b) in idx.iter().zip(&lin) {
        assert!(a.abs_diff(*b) <= 1, "{a} vs {b}");
    }
}

#[test]
fn log_norm_is_log1p_of_the_offset_value() {
    let values = [0.0f32, 1.0, 10.0, 100.0, 1000.0];
    let stats = stats_of(&values, Norm::Log);
    let idx = shade_indices(&values, Norm::Log, &stats);
    for (&v, &i) in values.iter().zip(&idx) {
        let t = (v as f64).ln_1p() / 1000f64.ln_1p();
        assert_eq!(i, lut_index(t));
    }
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    // A constant grid is the first colour under every norm.
    let flat = [3.0f32; 10];
    for norm in [Norm::Linear, Norm::Log, Norm::EqHist] {
        assert!(shade_indices(&flat, norm, &stats_of(&flat, norm))
            .iter()
            .all(|&i| i == 0));
    }
}

/// A single particle at (0, 1) lights the upper half of the written PNG (y axis up).
#[test]
fn png_y_axis_points_up() {
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-2.0, 2.0).unwrap();
    for kernel in [Kernel::Gaussian, Kernel::Histogram] {
        let mut grid = DensityGrid::with_kernel(extent, 64, 80, DEFAULT_BANDWIDTH, kernel).unwrap();
        grid.accumulate(&[0.0, 1.0]);
        let path = dir.path().join("up.png");
        let outputs = GridOutputs {
            png: Some(path.clone()),
            ..GridOutputs::default()
        };
        write_grid_outputs(
            &grid,
            GridMeta::of(&grid),
            Shading {
                colormap: Colormap::Gray,
                norm: Norm::Linear,
            },
            &outputs,
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (64, 80));
        let row_sum = |r: u32| {
            (0..64)
                .map(|c| img.get_pixel(c, r).0[0] as u64)
                .sum::<u64>()
        };
        let upper: u64 = (0..40).map(row_sum).sum();
        let lower: u64 = (40..80).map(row_sum).sum();
        assert!(
            upper > 0 && lower == 0,
            "{kernel:?}: upper {upper}, lower {lower}"
        );
        // y = 1 is a quarter of the way down.
        let brightest = (0..80).max_by_key(|&r| row_sum(r)).unwrap();
        assert!(
            (brightest as i64 - 20).abs() <= 1,
            "{kernel:?}: row {brightest}"
        );
    }
}

/// The histogram kernel counts particles per pixel (nearest pixel centre), exactly.
#[test]
fn histogram_counts_particles_per_pixel() {
    let extent = Extent::square(0.0, 9.0).unwrap();
    let mut grid = DensityGrid::with_kernel(extent, 10, 10, 0.5, Kernel::Histogram).unwrap();
    // Pixel centres at 0, 1, ..., 9. Row 0 is y = 9.
    grid.accumulate(&[
        0.0,
        9.0, // top left
        0.49,
        8.6, // same pixel
        9.0,
        0.0, // bottom right
        9.49,
        -0.49, // still bottom right
        9.51,
        0.0, // outside
        f32::NAN,
        1.0, // skipped
        4.2,
        3.7, // column 4, y = 4 -> row 5
    ]);
    assert_eq!(grid.get(0, 0), 2.0);
    assert_eq!(grid.get(9, 9), 2.0);
    assert_eq!(grid.get(5, 4), 1.0);
    assert_eq!(grid.data().iter().sum::<f64>(), 5.0);
    // Batches and merges add exactly; raw files round-trip with the kernel.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.npy");
    memodiff::testing::image::grid_file::write_raw(&path, &grid).unwrap();
    let back = memodiff::testing::image::grid_file::read_raw(&path).unwrap();
    assert_eq!(back.kernel(), Kernel::Histogram);
    assert!(back == grid);
    let gaussian = DensityGrid::new(extent, 10, 10, 0.5).unwrap();
    assert!(grid.clone().merge(&gaussian).is_err());
}

/// Grids written with their sidecar sum band by band; the sum of two halves equals the grid
/// of all particles within f32 rounding.
#[test]
fn grid_files_sum() {
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let pts = common::cloud(4000, 9, false);
    let write = |pts: &[f32], name: &str| {
        let mut g = DensityGrid::new(extent, 128, 96, DEFAULT_BANDWIDTH).unwrap();
        g.accumulate(pts);
        let path = dir.path().join(name);
        let outputs = GridOutputs {
            npy: Some(path.clone()),
            png: Some(path.with_extension("png")),
            ..GridOutputs::default()
        };
        write_grid_outputs(&g, GridMeta::of(&g), Shading::default(), &outputs).unwrap();
        (g, path)
    };
    let (all, _) = write(&pts, "all.npy");
    let (_, a) = write(&pts[..3000], "a.npy");
    let (_, b) = write(&pts[3000..], "b.npy");
    let files = vec![GridFile::open(&a).unwrap(), GridFile::open(&b).unwrap()];
    assert_eq!(files[0].meta.particles + files[1].meta.particles, 4000);
    let sum = GridSum {
        width: 128,
        height: 96,
        parts: vec![],
        files,
    };
    let mut out = vec![0.0; 128 * 96];
    memodiff::testing::plot::raster::RowSource::read_rows(&sum, 0, &mut out).unwrap();
    let peak = max_abs(all.data());
    for (s, v) in out.iter().zip(all.data()) {
        assert!((s - v).abs() <= 1e-6 * peak);
    }
    // A sidecar that does not match its array is refused.
    std::fs::write(dir.path().join("a.json"), "{}").unwrap();
    assert!(GridFile::open(&a).is_err());
}
