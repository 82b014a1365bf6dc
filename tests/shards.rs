//! `sample --shard k/n` + `memodiff merge`: the merged folder is bit-identical to the
//! unsharded run on the same backend (samples, initial noise, density grids, PNGs, metrics),
//! and merge refuses inputs that are not exactly the shards of one run, writing nothing.

mod common;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// `memodiff sample --out out` plus `args`.
fn sample(out: &Path, args: &[&str]) {
    let output = Command::cargo_bin("memodiff")
        .unwrap()
        .arg("sample")
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sample {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `memodiff merge inputs... --out out`: (success, stderr).
fn merge(inputs: &[PathBuf], out: &Path) -> (bool, String) {
    let output = Command::cargo_bin("memodiff")
        .unwrap()
        .arg("merge")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file of the unsharded run but run.json, byte for byte; run.json: same metrics and
/// the same parameters (but the batching), shard null, merged_from the inputs.
fn assert_same_run(full: &Path, merged: &Path, shards: usize) {
    let mut names: Vec<String> = std::fs::read_dir(full)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for expected in common::ARRAY_AND_IMAGE_FILES {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    for name in &names {
        if name == "run.json" {
            continue;
        }
        let (a, b) = (
            std::fs::read(full.join(name)).unwrap(),
            std::fs::read(merged.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        assert!(
            a == b,
            "{name} differs between the unsharded and merged runs"
        );
    }
    // Whole runs (unsharded or merged) carry no raw sums; only shards do.
    for name in ["samples_density_raw.npy", "initial_density_raw.npy"] {
        assert!(
            !full.join(name).exists() && !merged.join(name).exists(),
            "{name}"
        );
    }
    let (a, b) = (json(&full.join("run.json")), json(&merged.join("run.json")));
    assert_eq!(a["memorization"], b["memorization"]);
    assert_eq!(a["backend"], b["backend"]);
    let strip = |v: &serde_json::Value| {
        let mut p = v["parameters"].clone();
        for key in ["batch_size", "batches"] {
            p.as_object_mut().unwrap().remove(key);
        }
        p
    };
    assert_eq!(strip(&a), strip(&b));
    assert!(b["parameters"]["shard"].is_null());
    assert_eq!(b["merged_from"].as_array().unwrap().len(), shards);
}

/// Run `common` unsharded and as `n` shards (given in reverse order to merge), merge, compare.
fn shards_match(common: &[&str], n: usize, shard_extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    sample(&full, common);
    let mut inputs = Vec::new();
    for k in (0..n).rev() {
        let dir = tmp.path().join(format!("shard-{k}"));
        let shard = format!("{k}/{n}");
        let mut args = common.to_vec();
        args.extend(["--shard", &shard]);
        args.extend(shard_extra);
        sample(&dir, &args);
        inputs.push(dir);
    }
    let merged = tmp.path().join("merged");
    let (ok, err) = merge(&inputs, &merged);
    assert!(ok, "merge failed: {err}");
    assert_same_run(&full, &merged, n);
}

#[test]
fn four_cpu_shards_merge_to_the_unsharded_run() {
    // 10,007 particles: shards of 2,501 and 2,502; split-path images at 128x128.
    shards_match(
        &[
            "--backend",
            "cpu",
            "--particles",
            "10007",
            "--steps",
            "40",
            "--resolution",
            "128",
        ],
        4,
        &[],
    );
}

#[test]
fn shards_with_small_batches_and_direct_path_images() {
    // --batch smaller than a shard (several batches each); 64x48 images take the direct path.
    shards_match(
        &[
            "--backend",
            "cpu",
            "--particles",
            "6001",
            "--steps",
            "30",
            "--resolution",
            "64x48",
            "--seed",
            "7",
        ],
        4,
        &["--batch", "333"],
    );
}

#[test]
fn merge_refuses_what_is_not_one_run_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = common::words("--backend cpu --particles 900 --steps 10 --resolution 32");
    let shard = |k: usize, n: usize, extra: &[&str]| {
        let dir = tmp.path().join(format!("s{k}of{n}{}", extra.join("")));
        let s = format!("{k}/{n}");
        let mut args = base.to_vec();
        args.extend(["--shard", &s]);
        args.extend(extra);
        sample(&dir, &args);
        dir
    };
    let (s0, s1, s2) = (shard(0, 3, &[]), shard(1, 3, &[]), shard(2, 3, &[]));
    let other_seed = shard(2, 3, &["--seed", "5"]);
    let of_two = shard(1, 2, &[]);
    let full = tmp.path().join("full");
    sample(&full, &base);
    let out = tmp.path().join("out");
    let cases: Vec<(Vec<PathBuf>, &str)> = vec![
        (vec![s0.clone(), s1.clone()], "missing shard(s) 2/3"),
        (vec![s0.clone(), s1.clone(), s1.clone()], "given twice"),
        (
            vec![s0.clone(), s1.clone(), other_seed.clone()],
            "not shards of the same run",
        ),
        (vec![s0.clone(), s1.clone(), of_two.clone()], "shard of 3"),
        (vec![s0.clone(), full.clone()], "is not a shard"),
        (
            vec![s0.clone(), s1.clone(), s2.clone(), s2.clone()],
            "given twice",
        ),
    ];
    for (inputs, expected) in cases {
        let (ok, err) = merge(&inputs, &out);
        assert!(!ok, "{inputs:?} merged");
        assert!(err.contains(expected), "{inputs:?}: {err}");
        assert!(!out.exists(), "{inputs:?}: wrote {}", out.display());
    }
    // Merging into one of the inputs is refused too.
    let (ok, err) = merge(&[s0.clone(), s1.clone(), s2.clone()], &s0);
    assert!(!ok && err.contains("also an input"), "{err}");
    // The right three merge.
    let (ok, err) = merge(&[s2, s0, s1], &out);
    assert!(ok, "{err}");
    assert_same_run(&full, &out, 3);
}

#[test]
fn two_gpu_shards_merge_to_the_gpu_run() {
    if common::gpu_engine("two_gpu_shards_merge_to_the_gpu_run").is_none() {
        return;
    }
    shards_match(
        &[
            "--backend",
            "gpu",
            "--particles",
            "3001",
            "--steps",
            "30",
            "--resolution",
            "128",
        ],
        2,
        &[],
    );
}

#[test]
fn device_flag_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (args, expected) in [
        (vec!["--backend", "cpu", "--device", "0"], "--backend cpu"),
        (vec!["--backend", "gpu", "--device", "999"], "adapter 999"),
    ] {
        let output = Command::cargo_bin("memodiff")
            .unwrap()
            .args(["sample", "--particles", "10", "--steps", "3", "--out"])
            .arg(&out)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!out.exists());
    }
    let output = Command::cargo_bin("memodiff")
        .unwrap()
        .args(["devices", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    if common::gpu_engine("device_flag_is_checked").is_some() {
        let list = list.as_array().unwrap();
        assert!(!list.is_empty());
        assert_eq!(list[0]["index"], 0);
        assert!(list[0]["max_buffer_size"].as_u64().unwrap() > 0);
        // Adapter 0 of the list runs.
        sample(
            &tmp.path().join("dev0"),
            &["--particles", "100", "--steps", "5", "--device", "0"],
        );
    }
}

/// Merge reads and checks everything before it writes anything: a shard whose
/// metrics_counts.json was edited (it no longer counts the shard's particles) is refused
/// with the file named, and the --out folder is not even created.
#[test]
fn merge_checks_every_shard_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shards = Vec::new();
    for k in 0..2 {
        let dir = tmp.path().join(format!("s{k}"));
        let shard = format!("{k}/2");
        sample(
            &dir,
            &[
                "--backend",
                "cpu",
                "--particles",
                "400",
                "--resolution",
                "16",
                "--shard",
                &shard,
            ],
        );
        shards.push(dir);
    }
    let counts = shards[1].join("metrics_counts.json");
    let mut edited = json(&counts);
    edited["particles"] = serde_json::json!(150);
    std::fs::write(&counts, serde_json::to_vec(&edited).unwrap()).unwrap();
    let out = tmp.path().join("merged");
    let (ok, stderr) = merge(&shards, &out);
    assert!(!ok);
    assert!(
        stderr.contains("metrics_counts.json") && stderr.contains("counts 150 particles"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused merge wrote {}", out.display());
}
