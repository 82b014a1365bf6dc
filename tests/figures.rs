//! Figures: tick layout (values increase upwards on the y axis), framed figure sizes, the
//! snapshot plan and animation (`sample --snapshots K`), and `score-field` (its (G, 4)
//! `.npy` against the f64 reference score, on the CPU twin and on the GPU score kernel).
//!
//! Runs use `--backend cpu` and small sizes except the one GPU test (lavapipe in CI).

mod common;

use assert_cmd::Command;
use memodiff::colormap::Colormap;
use memodiff::dataset::Dataset;
use memodiff::figure::{axis_ticks, nice_ticks, Colorbar, Figure};
use memodiff::heatmap::{DensityGrid, Extent};
use memodiff::run_figures::snapshot_plan;
use memodiff::schedule::VpSchedule;
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
    let img = grid.to_rgb_image(Colormap::Coolwarm);
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

/// Run `memodiff sample --backend cpu` with `extra` into `out`; panics on failure.
fn sample(out: &Path, extra: &[&str]) {
    let output = memodiff()
        .args(["sample", "--backend", "cpu", "--particles", "3000"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
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
    // resolution and kernel): the same largest density.
    let frames = json["frames"].as_array().unwrap();
    let bytes = std::fs::read(with.join("samples_density.npy")).unwrap();
    let density: Vec<f64> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
    let max = density.into_iter().fold(0.0f64, f64::max);
    let last = frames.last().unwrap()["max_density"].as_f64().unwrap();
    assert!(
        max > 0.0 && (last - max).abs() <= 1e-12 * max,
        "{last} vs {max}"
    );
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
        let output = memodiff()
            .args(["sample", "--backend", "cpu", "--particles", "100"])
            .arg("--out")
            .arg(&out)
            .args(&extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} was accepted");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    for (extra, needle) in [
        (vec!["--t", "0"], "--t"),
        (vec!["--t", "1.5"], "--t"),
        (vec!["--grid", "1"], "--grid"),
        (vec!["--dataset", "circle:0"], "dataset"),
    ] {
        let output = memodiff()
            .args(["score-field", "--backend", "cpu"])
            .arg("--out")
            .arg(&out)
            .args(&extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?} was accepted");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

/// Check a (G, 4) score table against the f64 reference score at every row: x and y on
/// the linspace grid, the score within `rel` of the reference's norm.
fn check_against_reference(table: &[f32], n: usize, extent: &Extent, tau: f64, rel: f64) {
    let data = Dataset::circle(8).unwrap();
    let schedule = VpSchedule::default();
    let xs = memodiff::schedule::linspace(extent.xmin, extent.xmax, n);
    let ys = memodiff::schedule::linspace(extent.ymin, extent.ymax, n);
    assert_eq!(table.len(), n * n * 4);
    for (i, row) in table.chunks(4).enumerate() {
        let (x, y) = (xs[i % n] as f32, ys[i / n] as f32);
        assert_eq!((row[0], row[1]), (x, y), "row {i}");
        let r = memodiff::reference::score(&data, &schedule, tau, &[x as f64, y as f64]);
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
    let output = memodiff()
        .args([
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
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (shape, table) = memodiff::output::read_npy_f32(&out.join("score_field.npy")).unwrap();
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
    let mut evaluator = memodiff::score_field::ScoreEvaluator::Gpu(Box::new(engine));
    let extent = Extent::square(-1.5, 1.5).unwrap();
    let n = 32;
    let points = memodiff::score_field::grid_points(&extent, n);
    let data = Dataset::circle(8).unwrap();
    for tau in [0.005, 0.3] {
        let scores = evaluator
            .evaluate(&data, &VpSchedule::default(), tau, &points)
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
    let img = grid.to_rgb_image(Colormap::Gray);
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
