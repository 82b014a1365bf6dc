//! The built-in training sets and image training sets, end to end through the binary.

mod common;

use assert_cmd::Command;
use memodiff::testing::model::dataset::Dataset;
use predicates::prelude::*;
use std::path::Path;

fn sample(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("memodiff")
        .unwrap()
        .args([
            "sample",
            "--backend",
            "cpu",
            "--particles",
            "500",
            "--steps",
            "40",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

#[test]
fn every_builtin_spec_runs_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    for (spec, n, d) in [
        ("gaussian:50:3:0.5", 50, 3),
        ("two-gaussians:20:4", 20, 4),
        ("moons:30:0.05", 30, 2),
        ("spiral:25", 25, 2),
        ("grid:4", 16, 2),
    ] {
        let out = dir.path().join(spec.replace(':', "_"));
        sample(&out, &["--dataset", spec, "--data-seed", "5"]).success();
        let report = run_json(&out);
        let p = &report["parameters"];
        assert_eq!(p["n_train"], n, "{spec}");
        assert_eq!(p["dim"], d, "{spec}");
        assert_eq!(p["data_seed"], 5, "{spec}");
        let name = p["dataset"].as_str().unwrap();
        // Random sets carry their data seed in the name (merge and resume compare names).
        let random =
            spec.starts_with("gaussian") || spec.starts_with("two") || spec == "moons:30:0.05";
        assert_eq!(name.contains("data seed 5"), random, "{spec}: {name}");
    }
}

#[test]
fn the_data_seed_changes_the_training_set_and_nothing_else_does() {
    let a = Dataset::parse_seeded("gaussian:10:2", 1).unwrap();
    let b = Dataset::parse_seeded("gaussian:10:2", 1).unwrap();
    let c = Dataset::parse_seeded("gaussian:10:2", 2).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.points, c.points);
}

/// `sample args` fails with `phrase` in its error and writes no out folder.
fn assert_refused_before_writing(args: &[&str], phrase: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    sample(&out, args)
        .failure()
        .stderr(predicate::str::contains(phrase));
    assert!(!out.exists(), "{args:?}: the out folder was created");
}

#[test]
fn a_bad_spec_is_refused_before_anything_is_written() {
    assert_refused_before_writing(&["--dataset", "gaussian:10"], "gaussian:N:D[:sigma]");
}

#[test]
fn image_sets_are_flattened_and_drawn_back_next_to_their_nearest_training_image() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images.npy");
    // Three 2 × 2 grey images (D = 4): far apart, so every sample is a copy of one.
    let values: Vec<f32> = [[0.0; 4], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]].concat();
    common::npy::write_f32(&images, &[3, 2, 2], &values);
    let out = dir.path().join("out");
    sample(
        &out,
        &["--dataset", images.to_str().unwrap(), "--image-grid", "9"],
    )
    .success();
    let p = &run_json(&out)["parameters"];
    assert_eq!(p["dim"], 4);
    assert_eq!(
        p["image_shape"],
        serde_json::json!({"height": 2, "width": 2, "channels": 1})
    );
    let grid = image::open(out.join("samples_grid.png")).unwrap().to_rgb8();
    // 3 pairs per row, 3 rows: width 2 + 3 (2*2 + 2 + 4) = 32, height 2 + 3 (2 + 2) = 14.
    assert_eq!(grid.dimensions(), (32, 14));
    // Memorized: each generated image is within 40 of 255 grey levels of its neighbour's.
    for k in 0..9u32 {
        let (x0, y0) = (2 + (k % 3) * 10, 2 + (k / 3) * 4);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let generated = i32::from(grid.get_pixel(x0 + dx, y0 + dy).0[0]);
            let nearest = i32::from(grid.get_pixel(x0 + 4 + dx, y0 + dy).0[0]);
            assert!(
                (generated - nearest).abs() <= 40,
                "cell {k}: {generated} vs {nearest}"
            );
        }
    }
}

#[test]
fn image_grid_needs_an_image_set() {
    assert_refused_before_writing(&["--image-grid", "4"], "not an image set");
}

#[test]
fn circle_has_the_size_limit_of_every_dataset() {
    // Before: a 64 GB allocation aborted the process.
    let start = std::time::Instant::now();
    assert_refused_before_writing(&["--dataset", "circle:4294967297"], "exceeds the limit");
    assert!(start.elapsed().as_secs() < 20);
    let err = Dataset::parse("circle:4294967297").unwrap_err().to_string();
    assert!(err.contains("268435456"), "{err}");
}

#[test]
fn values_beyond_the_float32_range_are_refused_with_the_file_and_index() {
    let dir = tempfile::tempdir().unwrap();
    // f64 .npy: 1e39 is finite in f64, infinite in f32.
    let values = [0.5f64, 1.0, -1e39, 2.0];
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    for v in values {
        npy.extend(v.to_le_bytes());
    }
    let path = dir.path().join("big.npy");
    std::fs::write(&path, npy).unwrap();
    let spec = path.to_str().unwrap();
    assert_refused_before_writing(&["--dataset", spec], "point 1 coordinate 0 is -1e39");
    assert_refused_before_writing(&["--dataset", spec], "big.npy");
    // CSV alike.
    let csv = dir.path().join("big.csv");
    std::fs::write(&csv, "x,y\n1,2\n3,1e39\n").unwrap();
    assert_refused_before_writing(
        &["--dataset", csv.to_str().unwrap()],
        "point 1 coordinate 1 is 1e39",
    );
    // Each value fits, the squared norm does not (the engines compute |y|^2 in f32).
    let err = Dataset::new("n", 2, vec![0.0, 0.0, 2e19, 2e19])
        .unwrap_err()
        .to_string();
    assert!(err.contains("point 1 has squared norm"), "{err}");
    Dataset::new("n", 2, vec![1e18, 1e18]).unwrap();
}

#[test]
fn parameters_that_cannot_give_finite_samples_are_refused() {
    // Before: exit 0 with every sample NaN.
    let refused = |args: &[&str], phrase: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        Command::cargo_bin("memodiff")
            .unwrap()
            .args(["sample", "--particles", "100", "--out"])
            .arg(&out)
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(phrase));
        assert!(!out.exists(), "{args:?}: the out folder was created");
    };
    for sampler in ["em", "heun"] {
        refused(
            &["--backend", "cpu", "--steps", "2", "--sampler", sampler],
            "sigma^2 = 0",
        );
    }
    refused(&["--steps", "2", "--backend", "reference"], "at least 3");
    refused(
        &["--backend", "cpu", "--beta-max", "2000"],
        "--beta-min/--beta-max",
    );
}

#[test]
fn csv_comments_size_bounds_and_paths_that_are_not_files() {
    let dir = tempfile::tempdir().unwrap();
    // `#` comment lines are skipped, as NumPy's loadtxt does (before: a column-count error).
    let csv = dir.path().join("commented.csv");
    std::fs::write(&csv, "# made by hand\nx,y\n# a comment\n1,2\n3,4\n").unwrap();
    let set = Dataset::parse(csv.to_str().unwrap()).unwrap();
    assert_eq!((set.len(), set.dim), (2, 2));
    assert_eq!(set.points, [1.0, 2.0, 3.0, 4.0]);
    // A line longer than the bound is refused, whatever the rest.
    let long = format!("1,{}\n", "1".repeat(2 << 20));
    let err = Dataset::from_csv_bytes("long.csv", long.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1 is longer than"), "{err}");
    // A .csv that is /dev/zero is refused at once (before: read without limit).
    #[cfg(unix)]
    {
        let zero = dir.path().join("zero.csv");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let start = std::time::Instant::now();
        assert_refused_before_writing(
            &["--dataset", zero.to_str().unwrap()],
            "is a character device, not a file",
        );
        assert!(start.elapsed().as_secs() < 20);
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert_refused_before_writing(&["--dataset", fifo.to_str().unwrap()], "is a FIFO");
        }
    }
    // A directory says what it is (before: "is not a known dataset").
    let sub = dir.path().join("data");
    std::fs::create_dir(&sub).unwrap();
    assert_refused_before_writing(&["--dataset", sub.to_str().unwrap()], "is a directory");
}

/// Samples of a finished run, as f32.
fn samples(out: &Path) -> Vec<f32> {
    memodiff::testing::io::npy::read_npy_f32(&out.join("samples.npy"))
        .unwrap()
        .1
}

#[test]
fn uint8_images_need_a_scale_and_then_equal_their_float_twin() {
    let dir = tempfile::tempdir().unwrap();
    // Four 3 x 2 images of grey levels 0..255, as uint8 and as float32 in [-1, 1].
    let levels: Vec<u8> = (0..24u32).map(|i| (i * 97 % 256) as u8).collect();
    let raw = dir.path().join("u8.npy");
    common::npy::write_typed(&raw, "|u1", &[4, 3, 2], &levels);
    let float: Vec<f32> = levels
        .iter()
        .map(|&v| (-1.0 + 2.0 * f64::from(v) / 255.0) as f32)
        .collect();
    let twin = dir.path().join("f32.npy");
    common::npy::write_f32(&twin, &[4, 3, 2], &float);
    let raw = raw.to_str().unwrap();
    assert_refused_before_writing(&["--dataset", raw], "holds uint8 images");
    assert_refused_before_writing(&["--dataset", raw, "--scale", "1,-1"], "LO < HI");
    assert_refused_before_writing(
        &["--dataset", twin.to_str().unwrap(), "--scale", "0,1"],
        "applies to uint8 images",
    );
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sample(&a, &["--dataset", raw, "--scale", "-1,1"]).success();
    sample(&b, &["--dataset", twin.to_str().unwrap()]).success();
    let worst = samples(&a)
        .iter()
        .zip(samples(&b))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "uint8 scaled vs float32: {worst}");
    assert!(run_json(&a)["parameters"]["dataset"]
        .as_str()
        .unwrap()
        .contains("scaled to [-1, 1]"));
}

#[test]
fn a_class_of_a_labelled_set_is_sampled_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Six 2 x 2 images, labels 5, 9, 5, 9, 9, 7 (int64): class 9 is images 1, 3, 4.
    let values: Vec<f32> = (0..24).map(|i| i as f32 / 24.0).collect();
    let images = dir.path().join("images.npy");
    common::npy::write_f32(&images, &[6, 2, 2], &values);
    let labels = dir.path().join("labels.npy");
    let bytes: Vec<u8> = [5i64, 9, 5, 9, 9, 7]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    common::npy::write_typed(&labels, "<i8", &[6], &bytes);
    let (images, labels) = (images.to_str().unwrap(), labels.to_str().unwrap());
    let out = dir.path().join("out");
    sample(
        &out,
        &["--dataset", images, "--labels", labels, "--class", "9"],
    )
    .success();
    let p = &run_json(&out)["parameters"];
    assert_eq!(p["n_train"], 3, "{p}");
    assert!(p["dataset"].as_str().unwrap().ends_with("class 9"));
    assert_refused_before_writing(
        &["--dataset", images, "--labels", labels, "--class", "4"],
        "no image has label 4; the labels are 5, 7, 9",
    );
    assert_refused_before_writing(&["--dataset", images, "--class", "9"], "needs --labels");
}

#[test]
fn digits_are_read_from_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = |data: &Path, out: &Path, extra: &[&str]| {
        Command::cargo_bin("memodiff")
            .unwrap()
            .env("MEMODIFF_DATA", data)
            .args([
                "sample",
                "--backend",
                "cpu",
                "--particles",
                "50",
                "--steps",
                "20",
            ])
            .args(["--dataset", "digits"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .assert()
    };
    // Not exported: the error says how to export them.
    run(dir.path(), &dir.path().join("none"), &[])
        .failure()
        .stderr(predicate::str::contains("scripts/export-digits.py"));
    // A stand-in of the exported files (the test does not need scikit-learn).
    let values: Vec<f32> = (0..10 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    common::npy::write_f32(&dir.path().join("digits.npy"), &[10, 8, 8], &values);
    let labels: Vec<u8> = (0..10i64).flat_map(|i| (i % 3).to_le_bytes()).collect();
    common::npy::write_typed(&dir.path().join("digits_labels.npy"), "<i8", &[10], &labels);
    let out = dir.path().join("out");
    run(dir.path(), &out, &["--class", "1"]).success();
    let p = &run_json(&out)["parameters"];
    assert_eq!(
        (p["n_train"].clone(), p["dim"].clone()),
        (3.into(), 64.into()),
        "{p}"
    );
}
