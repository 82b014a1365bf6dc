//! `sample --checkpoint-every K` and `memodiff resume DIR`: a run killed mid-way and
//! resumed gives the same files, byte for byte, as an uninterrupted run.

mod common;

use common::words;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn memodiff() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memodiff"));
    cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (batch index, step) of the checkpoint of `out`, if one can be read now.
fn checkpoint_position(out: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(out.join("checkpoint/checkpoint.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((meta["batches_done"].as_u64()?, meta["step"].as_u64()?))
}

/// Start `memodiff sample` with `args`, SIGKILL it once its checkpoint has passed the
/// start of the run (batch > 0 or step > 0) and return that position.
fn kill_mid_way(args: &[&str], out: &Path) -> (u64, u64) {
    let mut child = memodiff()
        .arg("sample")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(position) = checkpoint_position(out).filter(|&(b, s)| b > 0 || s > 0) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before it could be killed"
            );
            child.kill().unwrap();
            child.wait().unwrap();
            return position;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `memodiff sample args --out out`, which must succeed; returns its stdout.
fn sample_ok(args: &[&str], out: &Path) -> String {
    run_ok(memodiff().arg("sample").args(args).arg("--out").arg(out))
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// The resumed folder holds the same files as the uninterrupted one (and no checkpoint).
fn assert_same_run(resumed: &Path, plain: &Path) {
    for name in common::ARRAY_AND_IMAGE_FILES {
        let (a, b) = (
            std::fs::read(resumed.join(name)).unwrap(),
            std::fs::read(plain.join(name)).unwrap(),
        );
        assert!(
            a == b,
            "{name} differs between the resumed and the plain run"
        );
    }
    let (a, b) = (run_json(resumed), run_json(plain));
    for key in ["parameters", "memorization", "backend", "files"] {
        assert_eq!(a[key], b[key], "run.json {key}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(resumed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint") || n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// Run `sample args` with checkpoints into `dir/killed`, kill it mid-way and resume it;
/// run it again without checkpoints into `dir/plain`. Returns (killed, plain).
fn kill_resume_and_run_plain(args: &[&str], dir: &Path) -> (PathBuf, PathBuf) {
    let (killed, plain) = (dir.join("killed"), dir.join("plain"));
    let mut with_checkpoints = args.to_vec();
    with_checkpoints.extend(["--checkpoint-every", "10"]);
    let (batch, step) = kill_mid_way(&with_checkpoints, &killed);
    eprintln!("killed at the checkpoint of batch {batch}, step {step}");
    assert!(killed.join("checkpoint/checkpoint.json").is_file());
    let said = run_ok(memodiff().arg("resume").arg(&killed));
    assert!(said.contains("resuming"), "{said}");
    sample_ok(args, &plain);
    (killed, plain)
}

fn kill_resume_compare(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (killed, plain) = kill_resume_and_run_plain(args, dir.path());
    assert_same_run(&killed, &plain);
}

#[test]
fn killed_cpu_run_resumes_bit_identically() {
    kill_resume_compare(&words(
        "--backend cpu --particles 200000 --batch 50000 --steps 300",
    ));
}

#[test]
fn killed_kde_t_min_run_resumes_bit_identically() {
    // The score variant and early stop travel in the checkpoint; the posterior
    // concentration's per-batch state too (it is recorded by default).
    kill_resume_compare(&words(
        "--backend cpu --particles 100000 --batch 25000 --steps 300 --score kde:0.1 --t-min 0.05",
    ));
}

#[test]
fn killed_gpu_run_resumes_bit_identically() {
    if common::gpu_engine("killed_gpu_run_resumes_bit_identically").is_none() {
        return;
    }
    kill_resume_compare(&words(
        "--backend gpu --particles 40000 --batch 10000 --steps 300",
    ));
}

#[test]
fn a_checkpointed_run_that_finishes_matches_and_leaves_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (with, plain) = (dir.path().join("with"), dir.path().join("plain"));
    let args = words("--backend cpu --particles 3000 --batch 1000 --resolution 64");
    sample_ok(&[&args[..], &["--checkpoint-every", "7"]].concat(), &with);
    sample_ok(&args, &plain);
    assert_same_run(&with, &plain);
}

#[test]
fn resume_without_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = memodiff().arg("resume").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("holds no checkpoint"), "{err}");
    assert!(err.contains("--checkpoint-every"), "{err}");
    // A finished run folder has no checkpoint either.
    let out = dir.path().join("done");
    run_ok(
        memodiff()
            .args(["sample", "--backend", "cpu", "--particles", "500"])
            .args(["--resolution", "16", "--out"])
            .arg(&out),
    );
    let output = memodiff().arg("resume").arg(&out).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no checkpoint"));
}

#[test]
fn reference_backend_refuses_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = memodiff()
        .args(["sample", "--backend", "reference", "--particles", "100"])
        .args(["--checkpoint-every", "5", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("--backend reference"), "{err}");
    assert!(!out.exists(), "nothing is written");
}

/// Ctrl-C with checkpoints keeps the checkpoint and says how to continue.
#[cfg(unix)]
#[test]
fn interrupted_checkpointed_run_says_resume_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (stopped, plain) = (dir.path().join("stopped"), dir.path().join("plain"));
    let args = words("--backend cpu --particles 200000 --batch 50000 --steps 1000");
    let child = memodiff()
        .arg("sample")
        .args(&args)
        .args(["--checkpoint-every", "10", "--out"])
        .arg(&stopped)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while checkpoint_position(&stopped).is_none_or(|(b, s)| b == 0 && s == 0) {
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(130),
        "the run must stop on SIGINT (it has ~100 checkpoints a batch to go): {err}"
    );
    assert!(err.contains("memodiff resume"), "{err}");
    assert!(err.contains("is kept"), "{err}");
    run_ok(memodiff().arg("resume").arg(&stopped));
    sample_ok(&args, &plain);
    assert_same_run(&stopped, &plain);
}

/// A run of `--image-grid K` on an image training set, killed and resumed, draws
/// samples_grid.png like the uninterrupted run (the image shape travels in the checkpoint).
#[test]
fn killed_image_grid_run_resumes_with_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images.npy");
    // Twelve 3 × 3 grey images (D = 9).
    let values: Vec<f32> = (0..12 * 9)
        .map(|i| ((i * 7919) % 97) as f32 / 97.0)
        .collect();
    common::npy::write_f32(&images, &[12, 3, 3], &values);
    let mut args =
        words("--backend cpu --image-grid 6 --particles 100000 --batch 10000 --steps 200");
    args.extend(["--dataset", images.to_str().unwrap()]);
    let (killed, plain) = kill_resume_and_run_plain(&args, dir.path());
    for name in ["samples.npy", "initial.npy", "samples_grid.png"] {
        let resumed = std::fs::read(killed.join(name))
            .unwrap_or_else(|e| panic!("the resumed run has no {name}: {e}"));
        assert!(
            resumed == std::fs::read(plain.join(name)).unwrap(),
            "{name} differs between the resumed and the plain run"
        );
    }
    let (a, b) = (run_json(&killed), run_json(&plain));
    for key in ["parameters", "files"] {
        assert_eq!(a[key], b[key], "run.json {key}");
    }
}
