//! `memodiff speciation`: Biroli et al.'s cloning experiment against their prediction
//! t_S = 1/2 ln Λ, on the symmetric two-Gaussian mixture with means ±(1, …, 1) and unit
//! variance in D = 256, whose covariance has Λ = D + 1.

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
