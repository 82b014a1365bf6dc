//! Figures: tick layout (values increase upwards on the y axis), framed figure sizes, the
//! snapshot plan and animation (`sample --snapshots K`), and `score-field` (its (G, 4)
//! `.npy` against the f64 reference score, on the CPU twin and on the GPU score kernel).
//!
//! Runs use `--backend cpu` and small sizes except the one GPU test (lavapipe in CI).

mod common;

use assert_cmd::Command;
use memodiff::testing::density::extent::Extent;
use memodiff::testing::density::heatmap::DensityGrid;
use memodiff::testing::image::colormap::Colormap;
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::schedule::{ScoreKind, VpSchedule};
use memodiff::testing::plot::figure::{axis_ticks, nice_ticks, Colorbar, Figure};
use memodiff::testing::run::spec::snapshot_plan;
use std::path::Path;

fn memodiff() -> Command {
    Command::cargo_bin("memodiff").unwrap()
}

/// Is `step` 1, 2, 2.5 or 5 times a power of ten?
fn is_nice(step: f64) -> bool {
    let decade = 10f64.powf(step.log10().floor());
    let m = step / decade;
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .any(|n| (m - n).abs() < 1e-9 * n)
}

#[test]
fn nice_ticks_are_nice_inside_the_range_and_bounded_in_count() {
    let ranges = [
        (-3.0, 3.0),
        (-1.5, 1.5),
        (0.0, 1.0),
        (0.0, 15234.7),
        (-2.0, 3.0),
        (1e-6, 7.3e-6),
        (12.0, 13.0),
        (-0.37, 0.91),
        (0.0, 0.94),
    ];
    for (lo, hi) in ranges {
        for max in [2, 3, 5, 7, 9] {
            let (values, step) = nice_ticks(lo, hi, max);
            assert!(is_nice(step), "step {step} for [{lo}, {hi}]");
            // A budget of 2 may take 3 where no step gives exactly 2 (e.g. [-3, 3]).
            assert!(
                (2..=max.max(3)).contains(&values.len()),
                "{} ticks for [{lo}, {hi}] with at most {max}: {values:?}",
                values.len()
            );
            let eps = 1e-9 * (hi - lo);
            for w in values.windows(2) {
                assert!((w[1] - w[0] - step).abs() <= 1e-9 * step.max(1e-300) + eps);
            }
            for &v in &values {
                assert!(v >= lo - eps && v <= hi + eps, "{v} outside [{lo}, {hi}]");
                let k = v / step;
                assert!(
                    (k - k.round()).abs() < 1e-6,
                    "{v} is not a multiple of {step}"
                );
            }
        }
    }
}

#[test]
fn y_axis_ticks_increase_upwards_and_labels_say_their_values() {
    // A y axis from value -3 at the bottom pixel 500 to 3 at the top pixel 100.
    let ticks = axis_ticks(-3.0, 3.0, 500.0, 100.0, 7);
    assert!(ticks.len() >= 3, "{ticks:?}");
    for w in ticks.windows(2) {
        assert!(w[1].value > w[0].value, "values increase: {ticks:?}");
        assert!(
            w[1].at < w[0].at,
            "larger values sit higher (smaller rows): {ticks:?}"
        );
    }
    for t in &ticks {
        let parsed: f64 = t.label.parse().unwrap();
        assert!(
            (parsed - t.value).abs() < 1e-9,
            "label {} of {}",
            t.label,
            t.value
        );
        let expected = 500.0 - (t.value + 3.0) / 6.0 * 400.0;
        assert!((t.at - expected).abs() < 1e-9, "{t:?}");
    }
    // The ends of the extent are ticks here, at the ends of the axis.
    assert_eq!(ticks.first().unwrap().at, 500.0);
    assert_eq!(ticks.last().unwrap().at, 100.0);
    // An x axis runs the other way in pixels.
    let x = axis_ticks(-1.5, 1.5, 60.0, 460.0, 7);
    for w in x.windows(2) {
        assert!(w[1].value > w[0].value && w[1].at > w[0].at, "{x:?}");
    }
    assert!(x.iter().any(|t| t.label == "0"), "{x:?}");
}

#[test]
fn linear_colorbar_ticks_sit_where_their_values_are() {
    let (vmin, vmax) = (3.2, 15234.7);
    let bar = Colorbar::linear(Colormap::Coolwarm, vmin, vmax, "density");
    assert!(bar.ticks.len() >= 3);
    for (pos, label) in &bar.ticks {
        let v: f64 = label.parse().unwrap();
        assert!((0.0..=1.0).contains(pos), "{pos}");
        assert!((pos - (v - vmin) / (vmax - vmin)).abs() < 1e-12);
    }
    let log = Colorbar::log10(Colormap::Viridis, 1e-3, 1.0, "relative");
    let labels: Vec<&str> = log.ticks.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(labels, ["1e-3", "1e-2", "0.1", "1"]);
    assert_eq!(log.ticks[0].0, 0.0);
    assert!((log.ticks[3].0 - 1.0).abs() < 1e-12);
}

#[test]
fn a_figure_has_the_requested_size_and_its_plot_keeps_the_aspect_ratio() {
    let extent = Extent::new(-3.0, 3.0, -1.5, 1.5).unwrap();
    let mut grid = DensityGrid::new(extent, 64, 32, 0.1).unwrap();
    grid.accumulate(&[0.0, 0.0, 1.0, 1.0]);
    let img = memodiff::testing::plot::raster::linear_rgb_image(&grid, Colormap::Coolwarm);
    let (lo, hi) = grid.min_max();
    let markers = [(0.0, 0.0), (1.0, 1.0), (50.0, 50.0)];
    for (w, h) in [(640u32, 480u32), (300, 500), (200, 160)] {
        let figure = Figure {
            title: "a title\nand a second line".into(),
            colorbar: Some(Colorbar::linear(Colormap::Coolwarm, lo, hi, "density")),
            markers: &markers,
            ..Figure::new(Some(&img), extent)
        };
        let out = figure.render(w, h).unwrap();
        assert_eq!(out.dimensions(), (w, h));
        let (_, _, pw, ph) = figure.layout(w, h).plot;
        assert!(pw > 0 && ph > 0);
        // Twice as wide as high, like the extent, within a pixel of rounding.
        assert!((pw as f64 - 2.0 * ph as f64).abs() <= 2.0, "{pw} x {ph}");
    }
    assert!(Figure::new(Some(&img), extent).render(100, 400).is_err());
}

#[test]
fn snapshot_plan_is_even_and_keeps_the_first_and_last_time_points() {
    for (n, k) in [
        (99, 2),
        (99, 10),
        (99, 12),
        (99, 100),
        (5, 6),
        (1, 2),
        (10, 4),
    ] {
        let plan = snapshot_plan(n, k).unwrap();
        assert_eq!(plan.len(), k);
        assert_eq!(plan[0], 0);
        assert_eq!(*plan.last().unwrap(), n);
        for (j, w) in plan.windows(2).enumerate() {
            assert!(w[1] > w[0], "{plan:?}");
            // Within half a step of the exact even spacing.
            let exact = (j + 1) as f64 * n as f64 / (k - 1) as f64;
            assert!((w[1] as f64 - exact).abs() <= 0.5, "{plan:?}");
        }
    }
    assert!(snapshot_plan(99, 1).is_err());
    assert!(snapshot_plan(99, 101).is_err());
}

/// Run `memodiff <command> --out <out> <extra>`.
fn run(command: &[&str], out: &Path, extra: &[&str]) -> std::process::Output {
    memodiff()
        .args(command)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// [`run`], panicking on failure.
fn run_ok(command: &[&str], out: &Path, extra: &[&str]) {
    let output = run(command, out, extra);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run `memodiff sample --backend cpu` with `extra` into `out`; panics on failure.
fn sample(out: &Path, extra: &[&str]) {
    run_ok(
        &["sample", "--backend", "cpu", "--particles", "3000"],
        out,
        extra,
    );
}

#[test]
fn snapshots_write_k_frames_and_a_k_frame_gif_without_changing_the_samples() {
    use image::AnimationDecoder;
    let dir = tempfile::tempdir().unwrap();
    let (with, without) = (dir.path().join("with"), dir.path().join("without"));
    let k = 5;
    sample(
        &with,
        &[
            "--snapshots",
            &k.to_string(),
            "--figure",
            "--markers",
            "--resolution",
            "64",
            "--figure-size",
            "240x200",
            "--steps",
            "30",
            // Three batches: each snapshot's grid accumulates across them.
            "--batch",
            "1000",
        ],
    );
    sample(&without, &["--resolution", "64", "--steps", "30"]);

    let gif = std::fs::File::open(with.join("collapse.gif")).unwrap();
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif)).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), k);
    for f in &frames {
        assert_eq!(f.buffer().dimensions(), (240, 200));
    }
    for i in 0..k {
        let png = image::open(with.join(format!("snapshots/frame_{i:03}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (240, 200));
    }
    assert!(!with.join(format!("snapshots/frame_{k:03}.png")).exists());
    for name in ["samples_figure.png", "initial_figure.png"] {
        let png = image::open(with.join(name)).unwrap();
        assert_eq!((png.width(), png.height()), (240, 200), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(with.join("snapshots/snapshots.json")).unwrap())
            .unwrap();
    let steps: Vec<u64> = json["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        snapshot_plan(29, k)
            .unwrap()
            .iter()
            .map(|&s| s as u64)
            .collect::<Vec<_>>()
    );
    // Stopping each batch at the snapshot steps (and batches of 1000) does not change a
    // single bit.
    for name in ["samples.npy", "initial.npy", "samples_density.npy"] {
        assert_eq!(
            std::fs::read(with.join(name)).unwrap(),
            std::fs::read(without.join(name)).unwrap(),
            "{name}"
        );
    }
    // The frame after all steps holds the same particles as samples.png (same extent,
    // resolution and kernel): the same largest density, within the f32 rounding of
    // samples_density.npy (an f32 grid since the raster merge).
    let frames = json["frames"].as_array().unwrap();
    let bytes = std::fs::read(with.join("samples_density.npy")).unwrap();
    let density: Vec<f32> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
    let max = density.into_iter().fold(0.0f64, |m, v| m.max(v as f64));
    let last = frames.last().unwrap()["max_density"].as_f64().unwrap();
    assert!(
        max > 0.0 && (last - max).abs() <= 1e-7 * max,
        "{last} vs {max}"
    );
}

/// Run `memodiff <command> --out <out> <extra>` and check that it fails, names `needle`
/// in its message and writes nothing at `out`.
fn assert_refused(command: &[&str], out: &Path, extra: &[&str], needle: &str) {
    let output = run(command, out, extra);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{extra:?} was accepted");
    assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    assert!(!out.exists(), "{extra:?} wrote {}", out.display());
}

#[test]
fn bad_figure_options_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (extra, needle) in [
        (vec!["--snapshots", "1"], "--snapshots"),
        (vec!["--snapshots", "200"], "--snapshots"),
        (
            vec!["--snapshots", "4", "--checkpoint-every", "10"],
            "--checkpoint-every",
        ),
        (vec!["--markers"], "--markers"),
        (vec!["--figure", "--figure-size", "50x50"], "figure-size"),
        (vec!["--snapshots", "4", "--shard", "0/2"], "--shard"),
    ] {
        assert_refused(
            &["sample", "--backend", "cpu", "--particles", "100"],
            &out,
            &extra,
            needle,
        );
    }
    for (extra, needle) in [
        (vec!["--t", "0"], "--t"),
        (vec!["--t", "1.5"], "--t"),
        (vec!["--grid", "1"], "--grid"),
        (vec!["--dataset", "circle:0"], "dataset"),
    ] {
        assert_refused(&["score-field", "--backend", "cpu"], &out, &extra, needle);
    }
}

/// Check a (G, 4) score table against the f64 reference score at every row: x and y on
/// the linspace grid, the score within `rel` of the reference's norm.
fn check_against_reference(table: &[f32], n: usize, extent: &Extent, tau: f64, rel: f64) {
    let data = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let xs = memodiff::testing::model::schedule::linspace(extent.xmin, extent.xmax, n);
    let ys = memodiff::testing::model::schedule::linspace(extent.ymin, extent.ymax, n);
    assert_eq!(table.len(), n * n * 4);
    for (i, row) in table.chunks(4).enumerate() {
        let (x, y) = (xs[i % n] as f32, ys[i / n] as f32);
        assert_eq!((row[0], row[1]), (x, y), "row {i}");
        let r = memodiff::testing::engine::reference::score(
            &data,
            &schedule,
            tau,
            &[x as f64, y as f64],
        );
        let err = (row[2] as f64 - r[0]).hypot(row[3] as f64 - r[1]);
        // Relative to the score, except where it nearly vanishes (s m ~ x): there f32
        // cancellation of the O(|x| / sigma2) terms sets the floor (as in tests/gpu.rs).
        let terms = (x as f64).hypot(y as f64) / schedule.sigma2(tau);
        let scale = r[0].hypot(r[1]).max(0.01 * terms);
        assert!(
            err <= rel * scale,
            "row {i} at ({x}, {y}): {:?} vs reference {r:?}",
            &row[2..]
        );
    }
}

#[test]
fn score_field_npy_is_the_score_on_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sf");
    run_ok(
        &[
            "score-field",
            "--t",
            "0.005",
            "--dataset",
            "circle:8",
            "--backend",
            "cpu",
            "--grid",
            "16",
            "--size",
            "320x300",
        ],
        &out,
        &[],
    );
    let (shape, table) = memodiff::testing::io::read_npy_f32(&out.join("score_field.npy")).unwrap();
    assert_eq!(shape, [256, 4]);
    let extent = Extent::square(-1.5, 1.5).unwrap();
    check_against_reference(&table, 16, &extent, 0.005, 1e-4);
    let png = image::open(out.join("score_field.png")).unwrap();
    assert_eq!((png.width(), png.height()), (320, 300));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("score_field.json")).unwrap()).unwrap();
    assert_eq!(json["grid"], 16);
    assert_eq!(json["backend"], "cpu");
    let max = table
        .chunks(4)
        .map(|r| (r[2] as f64).hypot(r[3] as f64))
        .fold(0.0, f64::max);
    let recorded = json["max_score_norm"].as_f64().unwrap();
    assert!((recorded - max).abs() <= 1e-9 * max, "{recorded} vs {max}");
}

#[test]
fn gpu_score_kernel_gives_the_score_field() {
    let Some(engine) = common::gpu_engine("gpu_score_kernel_gives_the_score_field") else {
        return;
    };
    let mut evaluator = memodiff::testing::engine::score_at::ScoreEvaluator::Gpu(Box::new(engine));
    let extent = Extent::square(-1.5, 1.5).unwrap();
    let n = 32;
    let points = memodiff::testing::commands::score_field::grid_points(&extent, n);
    let data = Dataset::circle(8).unwrap();
    for tau in [0.005, 0.3] {
        let scores = evaluator
            .evaluate(
                &data,
                &VpSchedule::default(),
                ScoreKind::Empirical,
                tau,
                &points,
            )
            .unwrap();
        let table: Vec<f32> = points
            .chunks(2)
            .zip(scores.chunks(2))
            .flat_map(|(p, s)| [p[0], p[1], s[0], s[1]])
            .collect();
        check_against_reference(&table, n, &extent, tau, 1e-4);
    }
}

#[test]
fn the_image_is_drawn_upright_where_its_data_are() {
    // One narrow blob at (1, 2): upper right of the extent [-3, 3] x [-3, 3].
    let extent = Extent::square(-3.0, 3.0).unwrap();
    let mut grid = DensityGrid::new(extent, 121, 121, 0.08).unwrap();
    grid.accumulate(&[1.0, 2.0]);
    let img = memodiff::testing::plot::raster::linear_rgb_image(&grid, Colormap::Gray);
    let figure = Figure {
        x_label: String::new(),
        y_label: String::new(),
        ..Figure::new(Some(&img), extent)
    };
    let (w, h) = (400, 400);
    let out = figure.render(w, h).unwrap();
    let (px, py, pw, ph) = figure.layout(w, h).plot;
    // The brightest pixel inside the plot area (frame excluded).
    let mut best = (0u32, 0u32, 0u32);
    for y in (py + 2) as u32..(py + ph - 1) as u32 {
        for x in (px + 2) as u32..(px + pw - 1) as u32 {
            let p = out.get_pixel(x, y).0;
            let v = p[0] as u32 + p[1] as u32 + p[2] as u32;
            if v > best.2 {
                best = (x, y, v);
            }
        }
    }
    let data_x = -3.0 + (best.0 as f64 + 0.5 - px as f64) / pw as f64 * 6.0;
    let data_y = 3.0 - (best.1 as f64 + 0.5 - py as f64) / ph as f64 * 6.0;
    let pixel = 6.0 / pw.min(ph) as f64;
    assert!(
        (data_x - 1.0).abs() <= 2.0 * pixel && (data_y - 2.0).abs() <= 2.0 * pixel,
        "the peak is drawn at ({data_x}, {data_y}), not (1, 2)"
    );
}

/// Assert that the plot area of `figure` (a `size` figure of a two-line title and a
/// colorbar over `extent`, no markers) shows exactly the pixels of `png`, resampled
/// bilinearly as the plot maps them: plot pixel (col, row) has its centre at the fraction
/// `(col + 0.5) / pw` across the extent, which is source column `u (W - 1)` of the image's
/// edge-to-edge pixel centres. Checks every plot pixel but the frame's.
fn assert_plot_shows(png: &Path, figure: &Path, extent: Extent, size: (u32, u32)) {
    let img = image::open(png).unwrap().to_rgb8();
    let fig = image::open(figure).unwrap().to_rgb8();
    assert_eq!(fig.dimensions(), size, "{}", figure.display());
    let layout = Figure {
        title: "line 1\nline 2".into(),
        colorbar: Some(Colorbar::linear(Colormap::Gray, 0.0, 1.0, "")),
        ..Figure::new(None, extent)
    }
    .layout(size.0, size.1);
    let (px, py, pw, ph) = layout.plot;
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let mut checked = 0;
    for row in 2..ph - 2 {
        let fy = ((row as f64 + 0.5) / ph as f64 * (ih - 1.0)).clamp(0.0, ih - 1.0);
        let (y0, ay) = (fy.floor() as u32, fy - fy.floor());
        let y1 = (y0 + 1).min(img.height() - 1);
        for col in 2..pw - 2 {
            let fx = ((col as f64 + 0.5) / pw as f64 * (iw - 1.0)).clamp(0.0, iw - 1.0);
            let (x0, ax) = (fx.floor() as u32, fx - fx.floor());
            let x1 = (x0 + 1).min(img.width() - 1);
            let want: Vec<u8> = (0..3)
                .map(|k| {
                    let p = |x, y| img.get_pixel(x, y).0[k] as f64;
                    let top = p(x0, y0) * (1.0 - ax) + p(x1, y0) * ax;
                    let bottom = p(x0, y1) * (1.0 - ax) + p(x1, y1) * ax;
                    (top * (1.0 - ay) + bottom * ay).round() as u8
                })
                .collect();
            let got = fig.get_pixel((px + col) as u32, (py + row) as u32).0;
            assert_eq!(
                got.as_slice(),
                want.as_slice(),
                "{} at plot pixel ({col}, {row}) differs from {}",
                figure.display(),
                png.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10_000, "only {checked} pixels checked");
    // And the centre of the image, where the density is: a plot pixel landing exactly on
    // an image pixel shows that pixel's colour (even sizes put the centre between pixels,
    // so this compares the mean of the four around it).
    let (cx, cy) = (px + pw / 2, py + ph / 2);
    let c = fig.get_pixel(cx as u32, cy as u32).0;
    let near = |x: u32, y: u32| {
        img.get_pixel(x.min(img.width() - 1), y.min(img.height() - 1))
            .0
    };
    let (mx, my) = (img.width() / 2, img.height() / 2);
    let candidates = [
        near(mx - 1, my - 1),
        near(mx, my - 1),
        near(mx - 1, my),
        near(mx, my),
    ];
    for k in 0..3 {
        let lo = candidates.iter().map(|p| p[k]).min().unwrap();
        let hi = candidates.iter().map(|p| p[k]).max().unwrap();
        assert!((lo..=hi).contains(&c[k]), "centre {c:?} vs {candidates:?}");
    }
}

/// `sample --figure` shows the very colours of samples.png / initial.png, whatever the
/// norm, colormap and kernel (it used to shade its own linear copy).
#[test]
fn sample_figures_show_the_colours_of_the_density_pngs() {
    let dir = tempfile::tempdir().unwrap();
    for (tag, extra) in [
        ("eq", &["--norm", "eq-hist"][..]),
        ("log", &["--norm", "log", "--colormap", "magma"][..]),
        ("hist", &["--norm", "log", "--kernel", "histogram"][..]),
    ] {
        let out = dir.path().join(tag);
        let mut args = vec![
            "--figure",
            "--figure-size",
            "420x360",
            "--resolution",
            "150x120",
        ];
        args.extend_from_slice(extra);
        sample(&out, &args);
        assert_plot_shows(
            &out.join("samples.png"),
            &out.join("samples_figure.png"),
            Extent::square(-3.0, 3.0).unwrap(),
            (420, 360),
        );
        assert_plot_shows(
            &out.join("initial.png"),
            &out.join("initial_figure.png"),
            Extent::square(-2.0, 3.0).unwrap(),
            (420, 360),
        );
    }
}

/// The figure drawn from the streamed rows (grid on disk, small bands: what a 16384²
/// render does) equals the figure drawn from the whole PNG held in memory, colorbar and
/// markers included.
#[test]
fn a_figure_of_streamed_rows_equals_one_of_the_whole_image() {
    use memodiff::testing::image::grid_file::GridMeta;
    use memodiff::testing::image::norm::{stats_of, Norm, Shading};
    use memodiff::testing::plot::colorbar::colorbar;
    use memodiff::testing::plot::raster::{
        write_grid_outputs_banded, BandLimits, FigureRequest, GridOutputs,
    };
    let dir = tempfile::tempdir().unwrap();
    let extent = Extent::new(-3.0, 3.0, -2.0, 2.5).unwrap();
    let mut grid = DensityGrid::new(extent, 301, 207, 0.05).unwrap();
    let points: Vec<f32> = (0..4000)
        .flat_map(|i| {
            let t = i as f32 * 0.37;
            [
                1.5 * t.cos() * (i % 7) as f32 / 7.0,
                t.sin() * (i % 5) as f32 / 5.0,
            ]
        })
        .collect();
    grid.accumulate(&points);
    let markers = vec![(0.0, 0.0), (1.0, -1.0)];
    for norm in [Norm::Linear, Norm::Log, Norm::EqHist] {
        let shading = Shading {
            colormap: Colormap::Viridis,
            norm,
        };
        let request = FigureRequest {
            path: dir.path().join("d_figure.png"),
            size: (500, 380),
            title: "streamed".into(),
            quantity: "density".into(),
            markers: markers.clone(),
        };
        let outputs = GridOutputs {
            png: Some(dir.path().join("d.png")),
            figure: Some(request.clone()),
            ..GridOutputs::default()
        };
        let limits = BandLimits {
            in_memory_pixels: 0,
            band_pixels: 301 * 11,
        };
        write_grid_outputs_banded(&grid, GridMeta::of(&grid), shading, &outputs, limits).unwrap();
        let png = image::open(dir.path().join("d.png")).unwrap().to_rgb8();
        let values: Vec<f32> = grid.data().iter().map(|&v| v as f32).collect();
        let whole = Figure {
            title: request.title.clone(),
            colorbar: Some(colorbar(shading, &stats_of(&values, norm), "density")),
            markers: &markers,
            ..Figure::new(Some(&png), extent)
        }
        .render(500, 380)
        .unwrap();
        let streamed = image::open(dir.path().join("d_figure.png"))
            .unwrap()
            .to_rgb8();
        assert!(whole == streamed, "{norm:?}: the streamed figure differs");
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left behind: {name}");
        }
    }
}

/// Colorbar ticks sit where the shading puts their values, in increasing order, for every
/// norm; log ticks are min + powers of ten mapped through log1p; eq-hist ticks are the
/// inverse of the equalization at 0, 1/4, ..., 1.
#[test]
fn colorbar_ticks_follow_the_norm() {
    use memodiff::testing::image::norm::{stats_of, Norm};
    use memodiff::testing::plot::colorbar::{colorbar_ticks, BarTick};
    let check_order = |ticks: &[BarTick]| {
        assert!(ticks.len() >= 3, "{ticks:?}");
        for w in ticks.windows(2) {
            assert!(w[1].pos > w[0].pos && w[1].value > w[0].value, "{ticks:?}");
        }
        assert!(ticks.iter().all(|t| (0.0..=1.0).contains(&t.pos)));
    };
    // A skewed grid: mostly empty background, a few sharp peaks.
    let mut values = vec![0.0f32; 100_000];
    for (i, v) in values.iter_mut().enumerate() {
        if i % 10 == 0 {
            *v = (i as f32 / 1000.0).powi(2);
        }
    }
    let (lo, hi) = (0.0, (99_990f64 / 1000.0).powi(2) as f32 as f64);

    let stats = stats_of(&values, Norm::Linear);
    let t = colorbar_ticks(Norm::Linear, &stats);
    check_order(&t);
    for tick in &t {
        assert!((tick.pos - (tick.value - lo) / (hi - lo)).abs() < 1e-12);
        assert_eq!(tick.label.parse::<f64>().unwrap(), tick.value);
    }

    let stats = stats_of(&values, Norm::Log);
    let t = colorbar_ticks(Norm::Log, &stats);
    check_order(&t);
    assert_eq!((t[0].pos, t[0].value), (0.0, 0.0));
    for w in t.windows(2) {
        assert!(w[1].pos - w[0].pos >= 0.06, "labels would overlap: {t:?}");
    }
    for tick in &t[1..] {
        let want = (tick.value - lo).ln_1p() / (hi - lo).ln_1p();
        assert!((tick.pos - want).abs() < 1e-12, "{tick:?}");
        let decade = tick.value.log10();
        assert!(
            (decade - decade.round()).abs() < 1e-12,
            "not a power of ten: {tick:?}"
        );
        assert_eq!(tick.label.parse::<f64>().unwrap(), tick.value);
    }
    assert!(t.iter().any(|t| t.value == 1000.0), "{t:?}");
    // A small range (under 10): nice steps, still at their log1p positions; and an offset
    // minimum: values are min + offsets.
    let small: Vec<f32> = values.iter().map(|v| 2.0 + v / 3000.0).collect();
    let stats = stats_of(&small, Norm::Log);
    let t = colorbar_ticks(Norm::Log, &stats);
    check_order(&t);
    assert_eq!(t[0].value, stats.min);
    for tick in &t {
        let want = (tick.value - stats.min).ln_1p() / (stats.max - stats.min).ln_1p();
        assert!((tick.pos - want).abs() < 1e-12, "{tick:?}");
    }

    let stats = stats_of(&values, Norm::EqHist);
    let eq = stats.eq.as_ref().unwrap();
    let t = colorbar_ticks(Norm::EqHist, &stats);
    check_order(&t);
    let positions: Vec<f64> = t.iter().map(|t| t.pos).collect();
    assert_eq!(positions, [0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(t[0].value, lo);
    for tick in &t[1..] {
        // The smallest value mapped at or above the position.
        assert!(eq.map(tick.value) >= tick.pos - 1e-12, "{tick:?}");
        assert!(eq.map(tick.value - 1e-9 * (hi - lo)) < tick.pos, "{tick:?}");
        let label: f64 = tick.label.parse().unwrap();
        assert!((label - tick.value).abs() <= 5e-3 * tick.value, "{tick:?}");
    }

    // A constant grid is drawn in the first colour: one tick at the bottom.
    for norm in [Norm::Linear, Norm::Log, Norm::EqHist] {
        let t = colorbar_ticks(norm, &stats_of(&[4.0; 10], norm));
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].pos, t[0].value), (0.0, 4.0));
    }
}

/// `render --figure` writes OUT_figure.png of the requested size, showing the PNG's
/// colours, with markers from a file; figure flags without --figure are refused with
/// nothing written.
#[test]
fn render_figure_has_the_requested_size_and_the_png_colours() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    sample(&run, &[]);
    let out = dir.path().join("density.png");
    memodiff()
        .args(["render", "--backend", "cpu", "--norm", "eq-hist"])
        .args(["--resolution", "200x150", "--extent", "-2,2,-1.5,1.5"])
        .args(["--figure", "--figure-size", "450x320"])
        .arg(run.join("samples.npy"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert_plot_shows(
        &out,
        &dir.path().join("density_figure.png"),
        Extent::new(-2.0, 2.0, -1.5, 1.5).unwrap(),
        (450, 320),
    );

    // Markers from a csv; a size of its own.
    let pts = dir.path().join("pts.csv");
    std::fs::write(&pts, "x,y\n1,0\n0,1\n").unwrap();
    memodiff()
        .args([
            "render",
            "--backend",
            "cpu",
            "--figure",
            "--figure-size",
            "300",
        ])
        .arg(run.join("samples.npy"))
        .arg("--markers")
        .arg(&pts)
        .arg("--out")
        .arg(dir.path().join("m.png"))
        .assert()
        .success();
    let fig = image::open(dir.path().join("m_figure.png")).unwrap();
    assert_eq!((fig.width(), fig.height()), (300, 300));

    // Refusals: nothing written.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    for extra in [
        &["--markers", "pts.csv"][..],
        &["--figure", "--markers", "missing.csv"][..],
        &["--figure", "--figure-size", "20x20"][..],
    ] {
        memodiff()
            .current_dir(dir.path())
            .args(["render", "--backend", "cpu"])
            .arg(run.join("samples.npy"))
            .args(["--out", "bad/x.png"])
            .args(extra)
            .assert()
            .failure();
        assert_eq!(std::fs::read_dir(&bad).unwrap().count(), 0, "{extra:?}");
    }
}
