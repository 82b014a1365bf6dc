//! End-to-end tests of the `memodiff` binary: files written, their formats, determinism,
//! error handling (nothing written on bad input) and `--help`.
//!
//! Every run uses `--backend cpu` and small sizes, each in its own temporary folder.

mod common;

use assert_cmd::Command;
use common::npy::{f4_dict, with_dict as npy_with_dict};
use predicates::prelude::*;
use std::path::Path;

const P: u64 = 2000;

/// `memodiff sample --backend cpu --particles P --out <out>` plus `extra` (which may
/// override `--particles`).
fn sample_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("memodiff").unwrap();
    cmd.arg("sample").args(["--backend", "cpu"]);
    if !extra.contains(&"--particles") {
        cmd.arg("--particles").arg(P.to_string());
    }
    cmd.arg("--out").arg(out).args(extra);
    cmd
}

/// What a finished command printed, and its exit status.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `cmd`, which must succeed.
fn succeeds(cmd: &mut Command) -> Finished {
    finished(cmd.assert().success().get_output())
}

/// Run `cmd`, which must fail.
fn fails(cmd: &mut Command) -> Finished {
    finished(cmd.assert().failure().get_output())
}

fn finished(output: &std::process::Output) -> Finished {
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout.clone()).unwrap(),
        stderr: String::from_utf8(output.stderr.clone()).unwrap(),
    }
}

/// Every file a finished 2-D sample run writes, and nothing else.
const TWO_D_RUN_FILES: &[&str] = &[
    "initial.npy",
    "initial.png",
    "initial_density.npy",
    "initial_density.json",
    "samples_density.json",
    "metrics_counts.json",
    "samples_density.npy",
    "run.json",
    "samples.npy",
    "samples.png",
];

/// `names` but `left_out`.
fn without<'a>(names: &[&'a str], left_out: &[&str]) -> Vec<&'a str> {
    names
        .iter()
        .copied()
        .filter(|n| !left_out.contains(n))
        .collect()
}

/// Names of the entries of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A parsed `.npy` file: header fields and the raw little-endian f32 data.
struct Npy {
    descr: String,
    fortran_order: String,
    shape: Vec<u64>,
    header_len: usize,
    data: Vec<f32>,
}

/// Parse an `.npy` file by hand and check the invariants of the format: magic, version,
/// header length, 64-byte alignment, '\n'-terminated header, and a file length equal to
/// header + rows * cols * 4 for '<f4'.
fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() >= 10, "{}: too short", path.display());
    assert_eq!(&bytes[..6], b"\x93NUMPY", "magic of {}", path.display());
    let (major, minor) = (bytes[6], bytes[7]);
    let (prefix, dict_len) = match major {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        _ => panic!("{}: unknown NPY version {major}.{minor}", path.display()),
    };
    assert_eq!(minor, 0, "NPY minor version");
    let header_len = prefix + dict_len;
    assert!(bytes.len() >= header_len, "{}: header cut", path.display());
    assert_eq!(header_len % 64, 0, "header must be 64-byte aligned");
    let dict = std::str::from_utf8(&bytes[prefix..header_len]).expect("ASCII header");
    assert!(
        dict.ends_with('\n'),
        "header must end with a newline: {dict:?}"
    );
    let dict = dict.trim_end();
    assert!(
        dict.starts_with('{') && dict.ends_with('}'),
        "header is not a dict: {dict:?}"
    );

    // The value after `'key':`, up to the next top-level ',' (tuples may hold commas).
    let field = |key: &str| -> String {
        let tag = format!("'{key}':");
        let start = dict
            .find(&tag)
            .unwrap_or_else(|| panic!("no {key} in {dict:?}"))
            + tag.len();
        let rest = dict[start..].trim_start();
        if rest.starts_with('(') {
            let end = rest.find(')').expect("closing parenthesis");
            rest[..=end].to_string()
        } else {
            let end = rest.find([',', '}']).expect("end of value");
            rest[..end].trim().to_string()
        }
    };
    let descr = field("descr").trim_matches('\'').to_string();
    let fortran_order = field("fortran_order");
    let shape_text = field("shape");
    let shape: Vec<u64> = shape_text
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("bad shape {shape_text}"))
        })
        .collect();

    let body = &bytes[header_len..];
    let count: u64 = shape.iter().product();
    assert_eq!(
        bytes.len() as u64,
        header_len as u64 + count * 4,
        "{}: file length must be header ({header_len}) + {count} f32 values",
        path.display()
    );
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Npy {
        descr,
        fortran_order,
        shape,
        header_len,
        data,
    }
}

/// Check that `path` is a C-order `<f4` array of shape (rows, cols) whose values are all
/// finite, also as read by the npyz crate; returns its values.
fn check_npy(path: &Path, rows: u64, cols: u64) -> Vec<f32> {
    let npy = read_npy(path);
    assert_eq!(npy.descr, "<f4", "{}", path.display());
    assert_eq!(npy.fortran_order, "False", "{}", path.display());
    assert_eq!(npy.shape, vec![rows, cols], "{}", path.display());
    assert!(npy.header_len >= 64);
    assert!(
        npy.data.iter().all(|v| v.is_finite()),
        "{}: non-finite values",
        path.display()
    );
    // An independent reader agrees on shape, order and values.
    let bytes = std::fs::read(path).unwrap();
    let reader = npyz::NpyFile::new(&bytes[..]).expect("npyz reads the file");
    assert_eq!(reader.shape(), &[rows, cols][..]);
    assert_eq!(reader.order(), npyz::Order::C);
    let values: Vec<f32> = reader.into_vec().expect("npyz reads f32 values");
    assert_eq!(values, npy.data);
    npy.data
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("run.json: {e}\n{text}"))
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// The points of `circle:n`, as the dataset module builds them.
fn circle(n: usize) -> Vec<[f64; 2]> {
    (0..n)
        .map(|k| {
            let angle = std::f64::consts::TAU * k as f64 / n as f64;
            [angle.cos(), angle.sin()]
        })
        .collect()
}

/// Number of samples within `radius` of their nearest training point.
fn count_within(samples: &[f32], dim: usize, training: &[Vec<f64>], radius: f64) -> u64 {
    samples
        .chunks_exact(dim)
        .filter(|s| {
            training
                .iter()
                .map(|t| {
                    s.iter()
                        .zip(t)
                        .map(|(&a, &b)| (a as f64 - b).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt()
                <= radius
        })
        .count() as u64
}

fn f(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("run.json lacks number {path}: {v}"))
}

// ---------------------------------------------------------------------------------------
// 1. End to end
// ---------------------------------------------------------------------------------------

#[test]
fn end_to_end_writes_five_valid_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let stdout = succeeds(&mut sample_cmd(
        &out,
        &["--seed", "7", "--resolution", "96"],
    ))
    .stdout;

    // Exactly the five files: no temp files or write probes left behind.
    assert_eq!(listing(&out), sorted(TWO_D_RUN_FILES));

    let samples = check_npy(&out.join("samples.npy"), P, 2);
    let initial = check_npy(&out.join("initial.npy"), P, 2);
    assert_ne!(samples, initial, "sampling must move the particles");
    // The initial noise is N(0, sigma2(1) I), sigma2(1) = 1 - exp(-(beta_min + beta_max) / 2)
    // (0.777 for the default schedule): initial.npy really holds the noise. With 4000
    // values the variance estimate has a standard error of about 0.017.
    let sigma2_1 = 1.0 - (-(0.001f64 + 3.0) / 2.0).exp();
    let var = initial.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / initial.len() as f64;
    assert!(
        (var - sigma2_1).abs() < 0.1,
        "initial variance {var}, expected about {sigma2_1}"
    );

    assert_eq!(png_size(&out.join("samples.png")), (96, 96));
    assert_eq!(png_size(&out.join("initial.png")), (96, 96));

    let json = read_json(&out.join("run.json"));
    assert_eq!(json["parameters"]["seed"], 7);
    assert_eq!(json["parameters"]["particles"], P);
    assert_eq!(json["parameters"]["dataset"], "circle:8");
    assert_eq!(json["parameters"]["n_train"], 8);
    assert_eq!(json["parameters"]["dim"], 2);
    assert_eq!(json["parameters"]["time_points"], 100);
    assert_eq!(json["parameters"]["steps"], 99);
    assert_eq!(
        json["parameters"]["resolution"],
        serde_json::json!([96, 96])
    );
    assert_eq!(json["backend"], "cpu");
    assert_eq!(json["backend_requested"], "cpu");
    for key in ["setup", "sampling", "outputs", "finish", "total"] {
        let t = f(&json, &format!("/timings_s/{key}"));
        assert!(t.is_finite() && t >= 0.0, "timings_s.{key} = {t}");
    }
    assert!(f(&json, "/timings_s/total") >= f(&json, "/timings_s/sampling"));
    let files: Vec<&str> = json["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut files_sorted: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    files_sorted.sort();
    assert_eq!(
        files_sorted,
        listing(&out),
        "run.json lists the files written"
    );

    // The memorization fractions agree with a recount from samples.npy.
    let frac_05 = f(&json, "/memorization/fraction_within_0_05");
    let frac_1 = f(&json, "/memorization/fraction_within_0_1");
    assert_eq!(json["memorization"]["particles"], P);
    assert_eq!(json["memorization"]["nonfinite"], 0);
    let training: Vec<Vec<f64>> = circle(8).iter().map(|p| p.to_vec()).collect();
    let within_05 = count_within(&samples, 2, &training, 0.05);
    let within_1 = count_within(&samples, 2, &training, 0.1);
    assert_eq!(frac_05, within_05 as f64 / P as f64);
    assert_eq!(frac_1, within_1 as f64 / P as f64);
    assert!(frac_05 <= frac_1);
    // With the default schedule the empirical score memorizes: most samples land on a
    // training point.
    assert!(frac_1 > 0.5, "fraction within 0.1 = {frac_1}");
    let counts: u64 = json["memorization"]["nearest_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counts, P);

    assert!(stdout.contains("backend cpu"), "stdout: {stdout}");
    let memorized = format!("{:.2}% of samples within 0.05", 100.0 * frac_05);
    assert!(
        stdout.contains("memorized") && stdout.contains(&memorized),
        "stdout should report the memorized fraction ({memorized}): {stdout}"
    );
}

/// `--initial FILE.npy` starts the reverse process from given positions: a run's own
/// initial.npy with its seed gives its samples again, bit for bit, on the cpu engine and
/// the f64 reference; other positions give other samples; a file of the wrong shape and
/// checkpoints are refused before anything is written.
#[test]
fn a_run_from_its_own_initial_noise_gives_its_samples() {
    let tmp = tempfile::tempdir().unwrap();
    for backend in ["cpu", "reference"] {
        let first = tmp.path().join(format!("{backend}-first"));
        let again = tmp.path().join(format!("{backend}-again"));
        let common = ["--steps", "20", "--seed", "5"];
        // `sample_cmd` names `--backend cpu` itself: each backend gets its own command.
        let run = |out: &Path, args: &[&str]| {
            let mut cmd = Command::cargo_bin("memodiff").unwrap();
            cmd.args([
                "sample",
                "--backend",
                backend,
                "--particles",
                "2000",
                "--out",
            ])
            .arg(out)
            .args(args);
            succeeds(&mut cmd)
        };
        run(&first, &common);
        let initial = first.join("initial.npy");
        let mut args = common.to_vec();
        args.extend(["--initial", initial.to_str().unwrap()]);
        run(&again, &args);
        for name in ["samples.npy", "initial.npy", "samples.png"] {
            let (a, b) = (first.join(name), again.join(name));
            assert_eq!(
                std::fs::read(a).unwrap(),
                std::fs::read(b).unwrap(),
                "{backend} {name}"
            );
        }
        let run = read_json(&again.join("run.json"));
        assert_eq!(run["parameters"]["initial"], initial.to_str().unwrap());
    }
    // Halved positions: the run starts there and ends elsewhere.
    let first = tmp.path().join("cpu-first");
    let noise = check_npy(&first.join("initial.npy"), P, 2);
    let halved: Vec<f32> = noise.iter().map(|v| v * 0.5).collect();
    let given = tmp.path().join("halved.npy");
    common::npy::write_f32(&given, &[P as usize, 2], &halved);
    let other = tmp.path().join("other");
    succeeds(&mut sample_cmd(
        &other,
        &[
            "--steps",
            "20",
            "--seed",
            "5",
            "--initial",
            given.to_str().unwrap(),
        ],
    ));
    assert_eq!(check_npy(&other.join("initial.npy"), P, 2), halved);
    assert_ne!(
        check_npy(&other.join("samples.npy"), P, 2),
        check_npy(&first.join("samples.npy"), P, 2)
    );
    // Refused before anything is written.
    let refused = tmp.path().join("refused");
    let wrong = fails(&mut sample_cmd(
        &refused,
        &["--particles", "1000", "--initial", given.to_str().unwrap()],
    ));
    assert!(
        wrong.stderr.contains("invalid --initial") && wrong.stderr.contains("(1000, 2)"),
        "{}",
        wrong.stderr
    );
    let checkpointed = fails(&mut sample_cmd(
        &refused,
        &[
            "--checkpoint-every",
            "5",
            "--initial",
            given.to_str().unwrap(),
        ],
    ));
    assert!(
        checkpointed
            .stderr
            .contains("cannot be combined with checkpoints"),
        "{}",
        checkpointed.stderr
    );
    assert!(!refused.exists());
}

#[test]
fn resolution_width_by_height() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    sample_cmd(&out, &["--particles", "500", "--resolution", "300x200"])
        .assert()
        .success();
    assert_eq!(png_size(&out.join("samples.png")), (300, 200));
    assert_eq!(png_size(&out.join("initial.png")), (300, 200));
    let json = read_json(&out.join("run.json"));
    assert_eq!(
        json["parameters"]["resolution"],
        serde_json::json!([300, 200])
    );
    assert_eq!(json["parameters"]["particles"], 500);
    check_npy(&out.join("samples.npy"), 500, 2);
}

#[test]
fn existing_out_dir_is_reused_and_files_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("samples.npy"), b"stale").unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    sample_cmd(&out, &["--resolution", "32", "--force"])
        .assert()
        .success();
    check_npy(&out.join("samples.npy"), P, 2);
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine");
    assert_eq!(
        listing(&out),
        sorted(&[TWO_D_RUN_FILES, &["keep.txt"]].concat())
    );
}

#[test]
fn non_empty_out_dir_is_refused_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap();
    // An empty folder is fine.
    sample_cmd(&out, &["--resolution", "16"]).assert().success();
    let before: Vec<(String, Vec<u8>)> = listing(&out)
        .into_iter()
        .map(|name| (name.clone(), std::fs::read(out.join(&name)).unwrap()))
        .collect();
    let stderr = fails(&mut sample_cmd(
        &out,
        &["--resolution", "16", "--seed", "1"],
    ))
    .stderr;
    assert!(
        stderr.starts_with("error:")
            && stderr.contains("--force")
            && stderr.contains(&out.display().to_string()),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let after: Vec<(String, Vec<u8>)> = listing(&out)
        .into_iter()
        .map(|name| (name.clone(), std::fs::read(out.join(&name)).unwrap()))
        .collect();
    assert!(after == before, "a refused run changed the out folder");
    // With --force it runs and replaces the files.
    sample_cmd(&out, &["--resolution", "16", "--seed", "1", "--force"])
        .assert()
        .success();
    assert_ne!(
        std::fs::read(out.join("samples.npy")).unwrap(),
        before.iter().find(|(n, _)| n == "samples.npy").unwrap().1
    );
}

/// Start a long `sample` into `out` (with `extra`), wait until it is sampling (its
/// temporary .npy files exist), send SIGINT and return (exit code, stderr).
#[cfg(unix)]
fn interrupt_long_run(out: &Path, extra: &[&str]) -> (Option<i32>, String) {
    signal_long_run(out, extra, "-INT")
}

/// [`interrupt_long_run`] with another signal (`-TERM`, `-HUP`: the `kill` option).
#[cfg(unix)]
fn signal_long_run(out: &Path, extra: &[&str], signal: &str) -> (Option<i32>, String) {
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("memodiff"))
        .args(["sample", "--backend", "cpu", "--particles", "1e7"])
        .args(["--dataset", "circle:1024", "--resolution", "16", "--out"])
        .arg(out)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Sampling: the streamed arrays' temp files exist (in the staging area, or beside
    // the checkpoint at their `.partial` names).
    let sampling = || {
        [out.to_path_buf(), out.join(".memodiff-staging")]
            .iter()
            .any(|dir| {
                std::fs::read_dir(dir).is_ok_and(|entries| {
                    entries.flatten().any(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.contains(".tmp") || name.ends_with(".partial")
                    })
                })
            })
    };
    while !sampling() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not start"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let waited = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the run did not stop within 60 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_at_a_step_boundary_and_leaves_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    // A fresh folder goes again: no .npy, PNG, run.json or temporary file, no folder.
    let out = tmp.path().join("fresh");
    let (code, stderr) = interrupt_long_run(&out, &[]);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.starts_with("error: interrupted at step ") && stderr.contains("of batch 1 of 3"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        !out.exists(),
        "the interrupted run left {:?}",
        listing(&out)
    );

    // An empty folder that was there stays, empty.
    let out = tmp.path().join("empty");
    std::fs::create_dir(&out).unwrap();
    let (code, stderr) = interrupt_long_run(&out, &[]);
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(listing(&out), Vec::<String>::new());

    // A previous run's complete outputs are left exactly as they were.
    let out = tmp.path().join("previous");
    sample_cmd(&out, &["--resolution", "16"]).assert().success();
    let snapshot = |out: &Path| -> Vec<(String, Vec<u8>)> {
        listing(out)
            .into_iter()
            .map(|name| (name.clone(), std::fs::read(out.join(&name)).unwrap()))
            .collect()
    };
    let before = snapshot(&out);
    let (code, stderr) = interrupt_long_run(&out, &["--force"]);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted at step"), "{stderr}");
    assert!(
        snapshot(&out) == before,
        "an interrupted run changed the folder"
    );
}

/// What `timeout`, Slurm and Kubernetes send stops a run like Ctrl-C does, with the exit
/// status a shell gives a process killed by that signal.
#[cfg(unix)]
#[test]
fn sigterm_and_sighup_stop_at_a_step_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    for (signal, code) in [("-TERM", 143), ("-HUP", 129)] {
        let out = tmp.path().join(&signal[1..]);
        let (status, stderr) = signal_long_run(&out, &[], signal);
        assert_eq!(status, Some(code), "{signal}: {stderr}");
        assert!(
            stderr.starts_with("error: interrupted at step "),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!out.exists(), "{signal} left {:?}", listing(&out));
    }
    // A checkpointed run first saves a checkpoint where it stops, mid-batch, though its
    // next periodic checkpoint is far away (a preempted job loses nothing), and says how
    // to continue it.
    let out = tmp.path().join("checkpointed");
    let (status, stderr) = signal_long_run(&out, &["--checkpoint-every", "1000"], "-TERM");
    assert_eq!(status, Some(143), "{stderr}");
    assert!(stderr.contains("memodiff resume"), "{stderr}");
    let text = std::fs::read_to_string(out.join("checkpoint").join("checkpoint.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    let step = saved["step"].as_u64().unwrap();
    assert!(step > 0 && step < 100, "saved at step {step}: {text}");
    assert!(
        stderr.contains(&format!(
            "the checkpoint at step {step} of batch 1 of 3 is kept"
        )),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. D != 2
// ---------------------------------------------------------------------------------------

#[test]
fn three_dimensional_csv_writes_npy_and_skips_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("points3.csv");
    let training = vec![
        vec![1.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![-1.0, -1.0, 0.5],
    ];
    let text: String = std::iter::once("x,y,z\n".to_string())
        .chain(
            training
                .iter()
                .map(|p| format!("{},{},{}\n", p[0], p[1], p[2])),
        )
        .collect();
    std::fs::write(&csv, text).unwrap();
    let out = tmp.path().join("run");
    let stdout = succeeds(&mut sample_cmd(&out, &["--dataset", csv.to_str().unwrap()])).stdout;

    assert_eq!(
        listing(&out),
        sorted(&[
            "initial.npy",
            "metrics_counts.json",
            "run.json",
            "samples.npy"
        ])
    );
    let samples = check_npy(&out.join("samples.npy"), P, 3);
    check_npy(&out.join("initial.npy"), P, 3);
    assert!(
        stdout.contains("D = 3") && stdout.contains("skipping the PNGs"),
        "stdout should say the PNGs are skipped: {stdout}"
    );

    let json = read_json(&out.join("run.json"));
    assert_eq!(json["parameters"]["dim"], 3);
    assert_eq!(json["parameters"]["n_train"], 4);
    assert_eq!(json["backend"], "cpu");
    let files = json["files"].as_array().unwrap();
    assert!(
        !files.iter().any(|v| v.as_str().unwrap().ends_with(".png")),
        "run.json must not list PNGs: {files:?}"
    );
    let frac_1 = f(&json, "/memorization/fraction_within_0_1");
    assert_eq!(
        frac_1,
        count_within(&samples, 3, &training, 0.1) as f64 / P as f64
    );
}

// ---------------------------------------------------------------------------------------
// 3. Determinism
// ---------------------------------------------------------------------------------------

fn samples_bytes(tmp: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let out = tmp.join(name);
    let mut args = vec!["--resolution", "16"];
    args.extend_from_slice(extra);
    sample_cmd(&out, &args).assert().success();
    std::fs::read(out.join("samples.npy")).unwrap()
}

#[test]
fn same_seed_same_bytes_different_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = samples_bytes(tmp.path(), "a", &["--seed", "42"]);
    let b = samples_bytes(tmp.path(), "b", &["--seed", "42"]);
    let c = samples_bytes(tmp.path(), "c", &["--seed", "43"]);
    assert_eq!(a.len(), c.len());
    assert!(a == b, "same seed must give byte-identical samples.npy");
    assert!(a != c, "a different seed must give different samples");
    // Not just a few bytes: most of the f32 values differ.
    let header = read_npy(&tmp.path().join("a/samples.npy")).header_len;
    let differing = a[header..]
        .chunks_exact(4)
        .zip(c[header..].chunks_exact(4))
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        differing > (P as usize * 2) / 2,
        "only {differing} values differ"
    );
}

#[test]
fn batch_size_does_not_change_results() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = samples_bytes(tmp.path(), "whole", &["--seed", "5"]);
    let batched = samples_bytes(tmp.path(), "batched", &["--seed", "5", "--batch", "500"]);
    let odd = samples_bytes(tmp.path(), "odd", &["--seed", "5", "--batch", "333"]);
    assert!(whole == batched, "--batch 500 changed samples.npy");
    assert!(whole == odd, "--batch 333 changed samples.npy");
    let json = read_json(&tmp.path().join("batched/run.json"));
    assert_eq!(json["parameters"]["batch_size"], 500);
    assert_eq!(json["parameters"]["batches"], 4);
    let json = read_json(&tmp.path().join("whole/run.json"));
    assert_eq!(json["parameters"]["batches"], 1);
    // initial.npy too.
    assert_eq!(
        std::fs::read(tmp.path().join("whole/initial.npy")).unwrap(),
        std::fs::read(tmp.path().join("odd/initial.npy")).unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Bad input: a clear error, a non-zero exit, nothing written
// ---------------------------------------------------------------------------------------

/// Run `sample` with `args` into `<tmp>/out`, expect failure with `phrase` in the first
/// stderr line, and check that nothing was written: the out folder does not exist and
/// `tmp` holds only the files the test put there (`inputs`).
fn expect_rejected(tmp: &Path, args: &[&str], phrase: &str, inputs: &[&str]) {
    let out = tmp.join("out");
    let Finished {
        code,
        stdout,
        stderr,
    } = fails(&mut sample_cmd(&out, args));
    assert_ne!(code, Some(0));
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error:") && first.contains(phrase),
        "{args:?}: first stderr line should be an error mentioning {phrase:?}: {stderr}"
    );
    // Our own errors are exactly one line; clap's usage errors add usage hints after the
    // one-line message (exit status 2).
    if code != Some(2) {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: multi-line error: {stderr}"
        );
    }
    assert!(stdout.is_empty(), "{args:?}: unexpected stdout: {stdout}");
    assert!(!out.exists(), "{args:?}: the out folder was created");
    assert_eq!(listing(tmp), sorted(inputs), "{args:?}: files were written");
}

/// [`expect_rejected`] for each (arguments, phrase), each in a folder of its own.
fn expect_each_rejected(cases: &[(&[&str], &str)]) {
    for (args, phrase) in cases {
        let tmp = tempfile::tempdir().unwrap();
        expect_rejected(tmp.path(), args, phrase, &[]);
    }
}

fn write_input(tmp: &Path, name: &str, bytes: &[u8]) -> String {
    let path = tmp.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn rejects_bad_parameters_without_writing() {
    let cases: &[(&[&str], &str)] = &[
        (&["--particles", "0"], "--particles"),
        (&["--steps", "1"], "--steps"),
        (&["--steps", "0"], "--steps"),
        (
            &["--beta-min", "3", "--beta-max", "1"],
            "must be smaller than",
        ),
        (
            &["--beta-min", "2", "--beta-max", "2"],
            "must be smaller than",
        ),
        (&["--beta-min", "-0.5"], "negative"),
        (&["--beta-max", "inf"], "finite"),
        (&["--batch", "0"], "--batch"),
        (&["--dataset", "circle:0"], "N >= 1"),
        (&["--dataset", "circle:x"], "N >= 1"),
        (&["--dataset", "foo:3"], "not a known dataset"),
        (&["--resolution", "0"], "--resolution"),
        (&["--resolution", "300x0"], "--resolution"),
        (&["--resolution", "20000"], "1..=16384"),
        (&["--extent", "1,0,0,1"], "xmin < xmax"),
        (&["--extent", "0,1,1,1"], "ymin < ymax"),
        (&["--extent", "0,1,2"], "xmin,xmax,ymin,ymax"),
        (&["--particles", "-5"], "'-5'"),
        (&["--particles", "abc"], "not a whole non-negative number"),
        (&["--backend", "tpu"], "--backend"),
    ];
    expect_each_rejected(cases);
}

/// An instruction set the cpu engine does not know is an error naming the variable and the
/// accepted values, not silently the default one.
#[test]
fn rejects_unknown_cpu_isa() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = fails(
        sample_cmd(&tmp.path().join("out"), &["--particles", "64"])
            .env("MEMODIFF_CPU_ISA", "bogus"),
    )
    .stderr;
    assert!(
        stderr.starts_with("error: invalid MEMODIFF_CPU_ISA: \"bogus\"")
            && stderr.contains("avx512, avx2, portable"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // Refused before anything is written: no --out folder.
    assert!(!tmp.path().join("out").exists());
    // Every command checks it, render included (its density kernels follow the setting).
    Command::cargo_bin("memodiff")
        .unwrap()
        .args(["render", "missing.npy", "--out"])
        .arg(tmp.path().join("a.png"))
        .env("MEMODIFF_CPU_ISA", "bogus")
        .assert()
        .failure()
        .stderr(predicate::str::starts_with(
            "error: invalid MEMODIFF_CPU_ISA: \"bogus\"",
        ));
}

#[test]
fn rejects_bad_datasets_without_writing() {
    let broken_header = npy_with_dict("{'descr': '<f4', 'shape': (3, 2) oops", &[0; 24]);
    // One case a line: the file, its bytes, the phrase its error must contain.
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], &str)] = &[
        ("nan.csv", b"1,2\n3,NaN\n", "is NaN"),
        ("ragged.csv", b"1,2\n3,4\n5,6,7\n", "line 3 has 3 columns, expected 2"),
        ("empty.csv", b"", "no points"),
        ("header_only.csv", b"x,y\n", "no points"),
        ("words.csv", b"1,2\n3,abc\n", "not a number"),
        ("garbage.npy", b"this is not numpy at all", "not a NumPy .npy file"),
        ("broken_header.npy", &broken_header, "invalid .npy header"),
        ("cut_header.npy", b"\x93NUMPY\x01\x00\x76\x00{'descr'", "header"),
    ];
    for (name, bytes, phrase) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let spec = write_input(tmp.path(), name, bytes);
        expect_rejected(tmp.path(), &["--dataset", &spec], phrase, &[name]);
        // The message names the offending file.
        let failed = fails(&mut sample_cmd(
            &tmp.path().join("out"),
            &["--dataset", &spec],
        ));
        assert!(failed.stderr.contains(*name), "{name}: {}", failed.stderr);
        assert_eq!(failed.code, Some(1));
    }
}

#[test]
fn rejects_missing_dataset_file() {
    for name in ["missing.csv", "missing.npy"] {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join(name);
        expect_rejected(
            tmp.path(),
            &["--dataset", spec.to_str().unwrap()],
            name,
            &[],
        );
        sample_cmd(
            &tmp.path().join("out"),
            &["--dataset", spec.to_str().unwrap()],
        )
        .assert()
        .failure()
        .stderr(predicate::str::contains("No such file"));
    }
}

#[test]
fn failed_run_leaves_existing_out_folder_untouched() {
    // A previous run's files survive a rejected run, and no temp or probe files appear.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    sample_cmd(&out, &["--resolution", "16"]).assert().success();
    let before: Vec<(String, Vec<u8>)> = listing(&out)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    let bad_csv = write_input(tmp.path(), "bad.csv", b"1,2\n3\n");
    for args in [
        vec!["--particles", "0"],
        vec!["--beta-min", "3", "--beta-max", "1"],
        vec!["--dataset", bad_csv.as_str()],
    ] {
        sample_cmd(&out, &args)
            .assert()
            .failure()
            .stderr(predicate::str::starts_with("error:"));
        let after: Vec<(String, Vec<u8>)> = listing(&out)
            .into_iter()
            .map(|name| {
                let bytes = std::fs::read(out.join(&name)).unwrap();
                (name, bytes)
            })
            .collect();
        assert!(after == before, "{args:?} changed the out folder");
    }
}

#[test]
fn rejects_unwritable_out() {
    // A path under an existing regular file cannot become a folder.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, b"hello").unwrap();
    let out = file.join("out");
    let failed = fails(&mut sample_cmd(&out, &[]));
    assert_eq!(failed.code, Some(1));
    let stderr = failed.stderr;
    assert!(
        stderr.starts_with("error:") && stderr.contains("file.txt/out"),
        "the error should name the out path: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
    assert_eq!(listing(tmp.path()), sorted(&["file.txt"]));

    // --out naming an existing regular file fails too and leaves the file alone.
    let stderr = fails(&mut sample_cmd(&file, &[])).stderr;
    assert!(
        stderr.starts_with("error:") && stderr.contains("file.txt"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
    assert_eq!(listing(tmp.path()), sorted(&["file.txt"]));
}

// ---------------------------------------------------------------------------------------
// 5. Help
// ---------------------------------------------------------------------------------------

#[test]
fn help_lists_the_flags() {
    Command::cargo_bin("memodiff")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("sample"))
        .stdout(predicate::str::contains("Usage"));

    let output = Command::cargo_bin("memodiff")
        .unwrap()
        .args(["sample", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--particles",
        "--steps",
        "--seed",
        "--beta-min",
        "--beta-max",
        "--dataset",
        "--backend",
        "--out",
        "--extent",
        "--resolution",
        "--batch",
    ] {
        assert!(help.contains(flag), "`sample --help` lacks {flag}:\n{help}");
    }
    // The backends and dataset forms are documented.
    for word in ["cpu", "gpu", "circle:N", ".npy", ".csv"] {
        assert!(help.contains(word), "`sample --help` lacks {word}:\n{help}");
    }
}

#[test]
fn help_subcommand_mentions_sample_flags() {
    // `memodiff help sample` is clap's alias of `memodiff sample --help`.
    Command::cargo_bin("memodiff")
        .unwrap()
        .args(["help", "sample"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--particles").and(predicate::str::contains("--out")));
}

#[test]
fn no_samples_writes_images_and_metrics_only() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    sample_cmd(
        &out,
        &["--no-samples", "--batch", "700", "--resolution", "64"],
    )
    .assert()
    .success();
    assert_eq!(
        listing(&out),
        sorted(&without(TWO_D_RUN_FILES, &["initial.npy", "samples.npy"]))
    );
    let run = read_json(&out.join("run.json"));
    assert_eq!(f(&run, "/parameters/particles") as u64, P);
    assert_eq!(f(&run, "/parameters/batches") as u64, P.div_ceil(700));
    assert_eq!(f(&run, "/memorization/particles") as u64, P);
    assert!(f(&run, "/memorization/fraction_within_0_1") > 0.9);
}

// ---------------------------------------------------------------------------------------
// 6. More bad input: absurd sizes, image options, malformed files (issue 6, "Bad input")
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_absurd_sizes_and_bad_image_options_without_writing() {
    let cases: &[(&[&str], &str)] = &[
        // 1e15 particles x D = 2 x 4 bytes x 2 files: refused with the bytes needed and
        // the bytes free, before anything is allocated.
        (
            &["--particles", "1e15"],
            "would need 16000000000000000 bytes (16.0 PB), but",
        ),
        (
            &["--particles", "1e15"],
            ") free; use fewer particles, --shard k/n or --no-samples",
        ),
        // Without the .npy files the count is bounded by MAX_PARTICLES alone.
        (
            &["--particles", "1e15", "--no-samples"],
            "exceeds the maximum",
        ),
        // The maximum side and the memory the grids would need.
        (&["--resolution", "1000000"], "1..=16384"),
        (&["--resolution", "1000000"], "would need 22.0 TB"),
        (&["--resolution", "300x1000000"], "would need 6.6 GB"),
        (&["--extent", "nan,1,0,1"], "finite"),
        (&["--extent", "0,inf,0,1"], "finite"),
        (&["--extent", "0,1,-inf,1"], "finite"),
        (&["--extent", "1,1,0,1"], "xmin < xmax"),
        (&["--bandwidth", "0"], "--bandwidth"),
        (&["--bandwidth", "-0.1"], "must be finite and > 0"),
        (&["--bandwidth", "nan"], "must be finite and > 0"),
        (&["--bandwidth", "inf"], "must be finite and > 0"),
        (&["--bandwidth", "wide"], "not a number"),
        (&["--colormap", "jet"], "--colormap"),
    ];
    expect_each_rejected(cases);
    // clap lists the accepted colormaps.
    let tmp = tempfile::tempdir().unwrap();
    sample_cmd(&tmp.path().join("out"), &["--colormap", "jet"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "possible values: coolwarm, viridis, magma, inferno, gray",
        ));
}

#[test]
fn bandwidth_and_colormap_reach_the_images() {
    let tmp = tempfile::tempdir().unwrap();
    let base = ["--particles", "500", "--resolution", "32", "--no-samples"];
    let default = tmp.path().join("default");
    sample_cmd(&default, &base).assert().success();
    let custom = tmp.path().join("custom");
    let mut args = base.to_vec();
    args.extend(["--bandwidth", "0.2", "--colormap", "viridis"]);
    sample_cmd(&custom, &args).assert().success();
    let json = read_json(&custom.join("run.json"));
    assert_eq!(json["parameters"]["kernel_bandwidth"], 0.2);
    assert_eq!(json["parameters"]["colormap"], "viridis");
    let json = read_json(&default.join("run.json"));
    assert_eq!(json["parameters"]["colormap"], "coolwarm");
    assert_eq!(
        f(&json, "/parameters/kernel_bandwidth"),
        1.0 / 700f64.sqrt()
    );
    let png = |dir: &Path| image::open(dir.join("samples.png")).unwrap().to_rgb8();
    assert_ne!(
        png(&default),
        png(&custom),
        "the options must change the image"
    );
}

#[test]
fn rejects_malformed_files_without_writing() {
    let six: Vec<u8> = [0.5f32; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut v2_lying_len = b"\x93NUMPY\x02\x00".to_vec();
    v2_lying_len.extend_from_slice(&u32::MAX.to_le_bytes());
    v2_lying_len.extend_from_slice(b"{'descr': '<f4'");
    // A float32 header of this shape over the six values.
    let f4 = |shape: &str| npy_with_dict(&f4_dict(shape), &six);
    let structured = "{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (3,), }";
    let last_inf = [&six[..20], &f32::INFINITY.to_le_bytes()].concat();
    // One case a line: the file, its bytes, the phrase its error must contain.
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.npy", b"\x93NUMPX\x01\x00\x10\x00{}".to_vec(), "not a NumPy .npy file"),
        ("version.npy", b"\x93NUMPY\x09\x00\x10\x00{}".to_vec(), "unsupported .npy format version 9.0"),
        ("header_len.npy", v2_lying_len, "header is truncated: it declares 4294967295 bytes"),
        ("int.npy", npy_with_dict(&f4_dict("(3, 1)").replace("<f4", "<i8"), &six), "integer type other than uint8"),
        ("complex.npy", npy_with_dict(&f4_dict("(3, 1)").replace("<f4", "<c8"), &six), "dtype '<c8' is not supported"),
        ("structured.npy", npy_with_dict(structured, &six), "structured"),
        ("fortran.npy", npy_with_dict(&f4_dict("(3, 2)").replace("False", "True"), &six), "Fortran order"),
        ("rank5.npy", f4("(1, 1, 3, 2, 1)"), "expected (N points, D coordinates)"),
        ("short.npy", f4("(4, 2)"), "data is truncated: shape (4, 2) needs 32 bytes, only 24 follow"),
        ("huge.npy", f4("(1000000000000, 2)"), "needs 8000000000000 bytes, only 24 follow"),
        ("long.npy", f4("(2, 2)"), "8 unexpected bytes"),
        ("inf.npy", npy_with_dict(&f4_dict("(3, 2)"), &last_inf), "is inf"),
        ("blank.csv", b"1,2\n\n3,4\n".to_vec(), "line 2 is blank"),
        ("inf.csv", b"1,2\n3,inf\n".to_vec(), "is inf"),
        ("ragged.csv", b"1,2\n3\n".to_vec(), "line 2 has 1 columns, expected 2"),
        ("text.csv", b"x,y\n1,2\nthree,4\n".to_vec(), "\"three\" is not a number"),
        ("binary.csv", b"1,2\n\x00\xff\n".to_vec(), "not UTF-8"),
    ];
    for (name, bytes, phrase) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let spec = write_input(tmp.path(), name, &bytes);
        expect_rejected(tmp.path(), &["--dataset", &spec], phrase, &[name]);
    }
}

/// A 784-dimensional .npy training set (28 x 28 "images") runs end to end with
/// `--sampler heun`; run.json records the sampler and D; the help explains the costs.
#[test]
fn high_dimensional_npy_with_the_heun_sampler() {
    let tmp = tempfile::tempdir().unwrap();
    let (n, dim) = (5usize, 784usize);
    let values: Vec<f32> = (0..n * dim)
        .map(|k| ((k * 7919 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut bytes = npy_with_dict(
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {dim}), }}"),
        &[],
    );
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let path = write_input(tmp.path(), "images.npy", &bytes);
    let out = tmp.path().join("run");
    sample_cmd(
        &out,
        &[
            "--dataset",
            &path,
            "--particles",
            "12",
            "--steps",
            "20",
            "--sampler",
            "heun",
        ],
    )
    .assert()
    .success();
    let samples = check_npy(&out.join("samples.npy"), 12, dim as u64);
    assert!(samples.iter().all(|v| v.is_finite()));
    let json = read_json(&out.join("run.json"));
    assert_eq!(json["parameters"]["dim"], 784);
    assert_eq!(json["parameters"]["sampler"], "heun");

    let help = Command::cargo_bin("memodiff")
        .unwrap()
        .args(["sample", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for phrase in ["P·D", "P·N·D", "4096", "--sampler", "heun"] {
        assert!(help.contains(phrase), "sample --help lacks {phrase}");
    }
}

/// run.json reads back as the one typed report: its parameters are the run's spec (the
/// options at their defaults are not written; others are) and the facts derived from it.
#[test]
fn run_json_reads_back_as_the_typed_spec() {
    use memodiff::testing::run::report::RunReport;
    use memodiff::testing::run::spec::{RunSpec, DEFAULT_POSTERIOR_RECORDS};
    let tmp = tempfile::tempdir().unwrap();
    let (plain, custom) = (tmp.path().join("plain"), tmp.path().join("custom"));
    let small = ["--steps", "10", "--resolution", "16"];
    sample_cmd(&plain, &small).assert().success();
    let custom_args = [&small[..], &["--posterior-records", "3", "--no-samples"]].concat();
    sample_cmd(&custom, &custom_args).assert().success();

    let report = RunReport::read(&plain).unwrap();
    let spec: &RunSpec = &report.parameters.spec;
    assert_eq!(spec.particles, P);
    assert_eq!(spec.time_points, 10);
    assert_eq!(spec.images.resolution, [16, 16]);
    assert_eq!(spec.extras.posterior_records, DEFAULT_POSTERIOR_RECORDS);
    assert!(!spec.extras.no_samples);
    assert_eq!(report.parameters.facts.steps, 9);
    let json = read_json(&plain.join("run.json"));
    for key in ["posterior_records", "no_samples", "image_grid", "figure"] {
        assert!(json["parameters"].get(key).is_none(), "{key} written");
    }

    let report = RunReport::read(&custom).unwrap();
    assert_eq!(report.parameters.spec.extras.posterior_records, 3);
    assert!(report.parameters.spec.extras.no_samples);
    let json = read_json(&custom.join("run.json"));
    assert_eq!(json["parameters"]["posterior_records"], 3);
    assert_eq!(json["parameters"]["no_samples"], true);
}

/// When the environment's filters exclude every adapter, the message says so and names
/// the adapters that exist, instead of suggesting a driver install.
#[test]
fn an_adapter_filter_that_excludes_everything_is_named() {
    let filter = "no-such-adapter-anywhere";
    let out = Command::cargo_bin("memodiff")
        .unwrap()
        .arg("devices")
        .env("WGPU_ADAPTER_NAME", filter)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!(
            "WGPU_ADAPTER_NAME={filter} excluded every adapter"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("apt-get"), "{stdout}");
}
