//! A run folder is one transaction: a run's files arrive together, run.json last, and a
//! failure or a kill at any point leaves either the previous run's files or the new
//! run's, never a mix. Faults are injected through the test hooks of the one atomic
//! writer (`MEMODIFF_FAIL_WRITE=k`: the k-th file fails as on a full disk) and of the
//! commit (`MEMODIFF_KILL_AT_COMMIT_STEP=k`: SIGKILL before its k-th rename or removal).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Every file under `dir` (relative path -> bytes), hidden ones included: what a reader
/// of the folder sees.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, into: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{name}/"), into);
            } else {
                into.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, "", &mut files);
    files
}

/// `contents` without what a reader of results does not look at: hidden files (the
/// staging area, `.partial` arrays) and a checkpoint.
fn visible(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = contents(dir);
    files.retain(|name, _| !name.starts_with('.') && !name.starts_with("checkpoint"));
    files
}

/// The files run.json lists.
fn listed(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("run.json")).unwrap();
    let run: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut files: Vec<String> = run["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    files.sort();
    files
}

/// `contents` without run.json, whose timings and command differ from run to run.
fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = contents(dir);
    files.remove("run.json");
    files
}

fn sample(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("memodiff"));
    cmd.args(["sample", "--backend", "cpu", "--dataset", "circle:8"])
        .args([
            "--particles",
            "3000",
            "--steps",
            "10",
            "--resolution",
            "32",
            "--force",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The previous run: many files (snapshot frames in a subfolder, figures, 16-bit PNGs),
/// most of which the new run does not write.
const PREVIOUS: [&str; 5] = ["--snapshots", "3", "--figure", "--png16", "--seed=1"];
/// The new run: another seed, only the plain outputs.
const NEW: [&str; 1] = ["--seed=2"];

#[test]
fn a_failed_write_at_any_file_leaves_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let (out, reference) = (dir.path().join("out"), dir.path().join("reference"));
    assert!(sample(&out, &PREVIOUS).status().unwrap().success());
    let previous = contents(&out);
    assert!(sample(&reference, &NEW).status().unwrap().success());
    let new = results(&reference);
    let mut failures = 0;
    for k in 1.. {
        let run = sample(&out, &NEW)
            .env("MEMODIFF_FAIL_WRITE", k.to_string())
            .output()
            .unwrap();
        if run.status.success() {
            // Past the last file: the new run is whole, and only it is there.
            assert_eq!(results(&out), new, "after the full run");
            assert_eq!(listed(&out), contents(&out).into_keys().collect::<Vec<_>>());
            break;
        }
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("no space left on device"),
            "file {k}: {stderr}"
        );
        assert_eq!(
            contents(&out),
            previous,
            "a failure at file {k} changed the folder"
        );
        failures += 1;
    }
    // Each of the new run's files failed once (metrics, arrays, PNGs, grids, run.json).
    assert!(
        failures >= new.len(),
        "{failures} failures for {} files",
        new.len()
    );
}

#[cfg(unix)]
#[test]
fn a_kill_at_any_step_of_the_commit_leaves_a_whole_or_a_repairable_folder() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    for checkpointed in [false, true] {
        let root = dir.path().join(format!("checkpointed-{checkpointed}"));
        let (out, reference) = (root.join("out"), root.join("reference"));
        let mut new_args = NEW.to_vec();
        if checkpointed {
            new_args.extend(["--checkpoint-every", "3"]);
        }
        assert!(sample(&reference, &new_args).status().unwrap().success());
        let new = results(&reference);
        let mut kills = 0;
        for k in 1.. {
            assert!(sample(&out, &PREVIOUS).status().unwrap().success());
            let previous = visible(&out);
            let run = sample(&out, &new_args)
                .env("MEMODIFF_KILL_AT_COMMIT_STEP", k.to_string())
                .output()
                .unwrap();
            if run.status.success() {
                assert_eq!(results(&out), new);
                break;
            }
            assert_eq!(run.status.signal(), Some(9), "step {k}: {run:?}");
            kills += 1;
            if out.join("run.json").exists() {
                // run.json describes exactly the files there: the previous run's, or the
                // new run's once its run.json came (the last step).
                let now = visible(&out);
                let names: Vec<String> = now.keys().cloned().collect();
                assert_eq!(listed(&out), names, "killed before step {k}");
                let mut now_results = now.clone();
                now_results.remove("run.json");
                assert!(
                    now == previous || now_results == new,
                    "killed before step {k}: run.json with a mix"
                );
            }
            // The next command into the folder finishes the move.
            let note = memodiff::testing::io::staging::repair(&out).unwrap();
            assert!(note.is_some() || results(&out) == new, "step {k}");
            assert_eq!(results(&out), new, "repaired after a kill before step {k}");
            assert_eq!(listed(&out), contents(&out).into_keys().collect::<Vec<_>>());
        }
        // The old run.json, the previous run's extra files, the new files, (the
        // checkpoint,) run.json: every one of those steps was killed once.
        assert!(
            kills >= new.len() + 2,
            "{kills} kills for {} files",
            new.len()
        );
    }
}
