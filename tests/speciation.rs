//! `memodiff speciation`: Biroli et al.'s cloning experiment against their prediction
//! t_S = 1/2 ln Λ, on the symmetric two-Gaussian mixture with means ±(1, …, 1) and unit
//! variance in D = 256, whose covariance has Λ = D + 1.

mod common;

use memodiff::{clone_seed, largest_covariance_eigenvalue, Dataset};

#[test]
fn the_measured_speciation_time_is_near_the_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("speciation");
    assert_cmd::Command::cargo_bin("memodiff")
        .unwrap()
        .args(["speciation", "--backend", "cpu", "--out"])
        .arg(&out)
        .assert()
        .success();
    let text = std::fs::read_to_string(out.join("speciation.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lambda = report["lambda"].as_f64().unwrap();
    // The sample covariance of 256 points: D + 1 = 257 up to sampling noise.
    assert!((lambda / 257.0 - 1.0).abs() < 0.1, "Λ = {lambda}");
    let predicted = report["predicted_t_s"].as_f64().unwrap();
    let measured = report["measured_t_s"].as_f64().unwrap();
    assert!((predicted - 0.5 * lambda.ln()).abs() < 1e-12);
    // Biroli et al.'s own measurements fall within about 20% of t_S.
    assert!(
        measured > predicted / 1.5 && measured < predicted * 1.5,
        "measured t_S {measured}, predicted {predicted}"
    );
    // Cloned at the start the clones pick their classes independently (φ near 1/2);
    // cloned late they never part (φ = 1).
    let curve = report["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 16);
    let phi = |p: &serde_json::Value| p["phi"].as_f64().unwrap();
    assert!(phi(&curve[0]) < 0.6, "{}", phi(&curve[0]));
    assert_eq!(phi(curve.last().unwrap()), 1.0);
    let csv = std::fs::read_to_string(out.join("speciation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 17);
    assert!(out.join("speciation.png").is_file());
}

#[test]
fn the_largest_eigenvalue_and_the_clone_stream() {
    // Points (±3, 0) and (0, ±1): covariance diag(4.5, 0.5).
    let set = Dataset::new("cross", 2, vec![3.0, 0.0, -3.0, 0.0, 0.0, 1.0, 0.0, -1.0]).unwrap();
    assert!((largest_covariance_eigenvalue(&set) - 4.5).abs() < 1e-9);
    for seed in [0u64, 1, u64::MAX] {
        assert_ne!(clone_seed(seed), seed);
        assert_eq!(clone_seed(clone_seed(seed)), seed);
    }
}

#[test]
fn a_labelled_image_set_is_classed_by_its_labels() {
    // 40 images of 4 x 4: label 0 around -1 and label 1 around +1 (alternating), each
    // pixel jittered. By label, the clones of an early clone time agree about half the
    // time; by nearest training point (40 classes) far less often.
    let dir = tempfile::tempdir().unwrap();
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for n in 0..40u32 {
        let sign = if n % 2 == 0 { -1.0f32 } else { 1.0 };
        labels.extend_from_slice(&i64::from(n % 2).to_le_bytes());
        for p in 0..16u32 {
            values.push(sign + 0.3 * (((n * 16 + p) * 2654435761 % 1000) as f32 / 1000.0 - 0.5));
        }
    }
    let images = dir.path().join("images.npy");
    common::npy::write_f32(&images, &[40, 4, 4], &values);
    let label_file = dir.path().join("labels.npy");
    common::npy::write_typed(&label_file, "<i8", &[40], &labels);
    let run = |out: &std::path::Path, extra: &[&std::ffi::OsStr]| {
        assert_cmd::Command::cargo_bin("memodiff")
            .unwrap()
            .args([
                "speciation",
                "--backend",
                "cpu",
                "--particles",
                "400",
                "--dataset",
            ])
            .arg(&images)
            .args(extra)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
        let text = std::fs::read_to_string(out.join("speciation.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let by_label = run(
        &dir.path().join("labels"),
        &["--labels".as_ref(), label_file.as_os_str()],
    );
    let by_point = run(&dir.path().join("points"), &[]);
    assert_eq!(by_label["classes"], "label of the nearest training point");
    assert_eq!(by_point["classes"], "nearest training point");
    let first = |r: &serde_json::Value| r["curve"][0]["phi"].as_f64().unwrap();
    assert!((first(&by_label) - 0.5).abs() < 0.1, "{}", first(&by_label));
    assert!(first(&by_point) < 0.2, "{}", first(&by_point));
    let last = |r: &serde_json::Value| r["curve"][15]["phi"].as_f64().unwrap();
    assert_eq!(last(&by_label), 1.0);
}
