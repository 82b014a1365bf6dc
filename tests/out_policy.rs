//! The `--out` policy of every command that writes a folder (issue: "a run folder is one
//! transaction"): a non-empty folder needs --force for sample, sweep, collapse and merge
//! alike, sweep checks its values before it creates anything, a stale checkpoint cannot
//! outlive the run that replaced it, an --out that is not a folder is named for what it
//! is, and only what was written is said to be written.

use assert_cmd::Command;
use std::path::Path;

fn memodiff(args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("memodiff").unwrap();
    cmd.args(args);
    cmd
}

fn stderr_of(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().failure().get_output().stderr.clone()).unwrap()
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().success().get_output().stdout.clone()).unwrap()
}

/// A folder holding one file that a refused command must leave alone.
fn occupied(root: &Path, name: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
    dir.to_str().unwrap().to_string()
}

fn untouched(dir: &str) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["keep.txt"], "{dir} changed");
}

#[test]
fn sweep_collapse_and_merge_refuse_a_non_empty_out_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = occupied(tmp.path(), "sweep");
    let collapse = occupied(tmp.path(), "collapse");
    let merged = occupied(tmp.path(), "merged");
    let small = ["--d", "2", "--particles", "200", "--steps", "10"];
    let mut args = vec!["sweep", "--param", "n", "--values", "8,16", "--out", &sweep];
    args.extend(small);
    let e = stderr_of(&mut memodiff(&args));
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    untouched(&sweep);
    let mut args = vec!["collapse", "--n", "8", "--out", &collapse];
    args.extend(small);
    let e = stderr_of(&mut memodiff(&args));
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    untouched(&collapse);
    // Two shards of one run, merged into the occupied folder: refused, then allowed.
    let mut shards = Vec::new();
    for k in 0..2 {
        let dir = tmp.path().join(format!("shard{k}"));
        let shard = format!("{k}/2");
        memodiff(&["sample", "--backend", "cpu", "--particles", "300"])
            .args(["--resolution", "16", "--shard", &shard, "--out"])
            .arg(&dir)
            .assert()
            .success();
        shards.push(dir.to_str().unwrap().to_string());
    }
    let merge = |force: bool| {
        let mut cmd = memodiff(&["merge", &shards[0], &shards[1], "--out", &merged]);
        if force {
            cmd.arg("--force");
        }
        cmd
    };
    let e = stderr_of(&mut merge(false));
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    untouched(&merged);
    merge(true).assert().success();
    assert!(Path::new(&merged).join("run.json").is_file());
}

#[test]
fn sweep_checks_its_values_before_it_creates_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let e = stderr_of(&mut memodiff(&[
        "sweep",
        "--param",
        "n",
        "--values",
        "8,2.5",
        "--d",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--values"), "{e}");
    assert!(!out.exists(), "a refused sweep created its --out");
}

#[test]
fn collapse_says_only_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("collapse");
    // Nothing collapses in 3 steps of a short schedule: no plot.
    let stdout = stdout_of(&mut memodiff(&[
        "collapse",
        "--n",
        "8",
        "--d",
        "2",
        "--particles",
        "100",
        "--steps",
        "3",
        "--beta-max",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("no plot"), "{stdout}");
    assert!(!out.join("collapse.png").exists());
    assert!(!stdout.contains("collapse.png"), "{stdout}");
}

#[cfg(unix)]
#[test]
fn a_stale_checkpoint_does_not_survive_a_forced_run() {
    use memodiff::{resume_in_folder, Progress, RunSpec};
    use memodiff::{sample_to_folder, Backend, Dataset, Error, Execution, FolderControl};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stops the run at its first progress report.
    struct StopAtOnce<'a>(&'a AtomicBool);
    impl Progress for StopAtOnce<'_> {
        fn start(&mut self, _: u64, _: u64) {}
        fn advance_to(&mut self, _: u64) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn finish(&mut self) {}
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut spec = RunSpec::new("circle:8");
    spec.particles = 4000;
    spec.time_points = 40;
    spec.images.resolution = [16, 16];
    let execution = |every| Execution {
        backend: Backend::Cpu,
        device: None,
        batch: Some(1000),
        checkpoint_every: every,
    };
    let training = Dataset::parse("circle:8").unwrap();
    // A checkpointed run stopped part-way leaves its checkpoint for `resume`.
    let cancel = AtomicBool::new(false);
    let stopped = sample_to_folder(
        &spec,
        &execution(Some(5)),
        training.clone(),
        &out,
        FolderControl {
            progress: &mut StopAtOnce(&cancel),
            ..FolderControl::quiet(&cancel)
        },
    );
    assert!(matches!(stopped, Err(Error::Interrupted(_))), "{stopped:?}");
    assert!(out.join("checkpoint").is_dir());
    // Another run forced into the folder replaces that run: its checkpoint goes too, so
    // `resume` cannot bring the old run back over the new one.
    let calm = AtomicBool::new(false);
    spec.seed = 1;
    sample_to_folder(
        &spec,
        &execution(None),
        training,
        &out,
        FolderControl {
            force: true,
            ..FolderControl::quiet(&calm)
        },
    )
    .unwrap();
    assert!(!out.join("checkpoint").exists());
    let resumed = resume_in_folder(
        &out,
        FolderControl {
            force: true,
            ..FolderControl::quiet(&calm)
        },
    );
    assert!(resumed.is_err(), "resume found a checkpoint");
}

#[test]
fn an_out_that_is_not_a_folder_is_named_for_what_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, b"x").unwrap();
    let sample = |out: &Path| {
        stderr_of(memodiff(&["sample", "--backend", "cpu", "--particles", "100", "--out"]).arg(out))
    };
    let e = sample(&file);
    assert!(
        e.contains("--out") && e.contains("is a file, not a folder"),
        "{e}"
    );
    let e = sample(Path::new("/dev/null"));
    assert!(e.contains("--out") && e.contains("is a device"), "{e}");
    let e = sample(&file.join("below"));
    assert!(
        e.contains("--out") && e.contains("cannot be created"),
        "{e}"
    );
    #[cfg(unix)]
    {
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("missing"), &link).unwrap();
        let e = sample(&link);
        assert!(e.contains("--out") && e.contains("dangling link"), "{e}");
    }
    // Neither --particles nor the free space is blamed, and nothing was created.
    assert!(!tmp.path().join("missing").exists());
}

#[test]
fn figure_size_without_a_figure_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let e = stderr_of(&mut memodiff(&[
        "sample",
        "--backend",
        "cpu",
        "--particles",
        "100",
        "--figure-size",
        "300x300",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--figure-size") && e.contains("--figure"), "{e}");
    assert!(!out.exists());
    let e = stderr_of(&mut memodiff(&[
        "render",
        "in.npy",
        "--figure-size",
        "300",
        "--out",
        "a.png",
    ]));
    assert!(e.contains("--figure"), "{e}");
}

#[test]
fn mesa_does_not_write_to_the_users_stderr() {
    let output = Command::cargo_bin("memodiff")
        .unwrap()
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
}

/// Paths need not be UTF-8: such an --out runs (run.json records the command line
/// readably) instead of panicking after the folder was created.
#[cfg(target_os = "linux")]
#[test]
fn an_out_that_is_not_utf8_is_a_folder_like_any_other() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
    memodiff(&["sample", "--backend", "cpu", "--particles", "100"])
        .args(["--resolution", "16", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let command = report["command"].as_array().unwrap();
    assert!(command.iter().any(|a| a.as_str() == Some("run-\u{fffd}")
        || a.as_str().is_some_and(|s| s.ends_with("run-\u{fffd}"))));
}
