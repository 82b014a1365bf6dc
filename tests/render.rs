//! `memodiff render` end to end (cpu): a saved run re-rendered byte for byte, grids summed,
//! mismatches refused with nothing written, csv input, the flags shared with `sample`.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn memodiff() -> Command {
    Command::cargo_bin("memodiff").unwrap()
}

fn sample(out: &Path, extra: &[&str]) {
    memodiff()
        .args(["sample", "--backend", "cpu", "--particles", "3000", "--out"])
        .arg(out)
        .args(extra)
        .assert()
        .success();
}

/// `memodiff render inputs... --out out args...`, for the caller to assert on.
fn render(inputs: &[&Path], out: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    memodiff()
        .arg("render")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .args(args)
        .assert()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn render_of_a_saved_run_reproduces_its_png() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    for extra in [
        &[][..],
        &[
            "--norm",
            "eq-hist",
            "--colormap",
            "magma",
            "--resolution",
            "300x200",
            "--extent",
            "-2,2,-1.5,1.5",
            "--png16",
        ][..],
    ] {
        sample(&run, &[&["--force"][..], extra].concat());
        // From the particles...
        let out = dir.path().join("again.png");
        render(&[&run.join("samples.npy")], &out, extra).success();
        assert!(bytes(&out) == bytes(&run.join("samples.png")), "{extra:?}");
        if extra.contains(&"--png16") {
            let gray = dir.path().join("again_gray16.png");
            assert!(bytes(&gray) == bytes(&run.join("samples_gray16.png")));
            let img = image::open(&gray).unwrap();
            assert!(matches!(img, image::DynamicImage::ImageLuma16(_)));
        }
        // ... and from the density grid (its sidecar gives size, extent and kernel).
        let shade: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| ["--norm", "eq-hist", "--colormap", "magma"].contains(a))
            .collect();
        let out2 = dir.path().join("from_grid.png");
        render(&[&run.join("samples_density.npy")], &out2, &shade).success();
        assert!(bytes(&out2) == bytes(&run.join("samples.png")), "{extra:?}");
    }
}

#[test]
fn render_sums_grids_and_refuses_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    sample(&a, &["--seed", "1"]);
    sample(&b, &["--seed", "2"]);
    sample(&c, &["--seed", "3", "--resolution", "256"]);
    let sum = dir.path().join("sum.png");
    let grid = dir.path().join("sum.npy");
    let grids = [a.join("samples_density.npy"), b.join("samples_density.npy")];
    render(
        &[&grids[0], &grids[1]],
        &sum,
        &["--grid", grid.to_str().unwrap()],
    )
    .success()
    .stdout(predicate::str::contains("6000 particles"));
    let meta: serde_json::Value =
        serde_json::from_slice(&bytes(&grid.with_extension("json"))).unwrap();
    assert_eq!(meta["particles"], 6000);
    assert_eq!(meta["width"], 512);
    // Summing the particles of both runs gives the same grid within f32 rounding.
    let both = dir.path().join("both.png");
    let both_grid = dir.path().join("both.npy");
    let particles = [a.join("samples.npy"), b.join("samples.npy")];
    let both_grid_arg = ["--grid", both_grid.to_str().unwrap()];
    render(&[&particles[0], &particles[1]], &both, &both_grid_arg).success();
    let read = |p: &Path| -> Vec<f32> {
        let b = bytes(p);
        b[128..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (x, y) = (read(&grid), read(&both_grid));
    let peak = y.iter().fold(0.0f32, |m, v| m.max(*v));
    assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= 1e-6 * peak));

    // A 256² grid does not add to 512² ones: refused, nothing written.
    let bad = dir.path().join("bad.png");
    render(
        &[
            &a.join("samples_density.npy"),
            &c.join("samples_density.npy"),
        ],
        &bad,
        &[],
    )
    .failure()
    .stderr(predicate::str::contains("different shapes"));
    // Flags that contradict the grids are refused too.
    render(
        &[&a.join("samples_density.npy")],
        &bad,
        &["--resolution", "100"],
    )
    .failure();
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn render_reads_csv_and_checks_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "x,y\n0,1\n0.5,-0.5\n").unwrap();
    let out = dir.path().join("p.png");
    memodiff()
        .arg("render")
        .arg(&csv)
        .args(["--out"])
        .arg(&out)
        .args([
            "--resolution",
            "64x96",
            "--kernel",
            "histogram",
            "--norm",
            "log",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("2 particles"));
    let img = image::open(&out).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 96));
    // Wrong shapes and files are refused with a message.
    let three = dir.path().join("three.csv");
    std::fs::write(&three, "1,2,3\n").unwrap();
    render(&[&three], &dir.path().join("x.png"), &[])
        .failure()
        .stderr(predicate::str::contains("(P, 2)"));
    render(
        &[&dir.path().join("missing.npy")],
        &dir.path().join("x.png"),
        &[],
    )
    .failure();
    render(&[&csv], &dir.path().join("x.jpg"), &[])
        .failure()
        .stderr(predicate::str::contains(".png"));
    assert!(!dir.path().join("x.png").exists());
}

#[test]
fn help_explains_the_image_flags() {
    for cmd in ["render", "sample"] {
        memodiff()
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("eq-hist"))
            .stdout(predicate::str::contains("histogram"))
            .stdout(predicate::str::contains("--png16"))
            .stdout(predicate::str::contains("16384"))
            .stdout(predicate::str::contains("--figure"))
            .stdout(predicate::str::contains("ticks follow the norm"));
    }
    // render's figure flags say where the figure goes and what --markers reads.
    memodiff()
        .args(["render", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OUT_figure.png"))
        .stdout(predicate::str::contains("--figure-size"))
        .stdout(predicate::str::contains("--markers <FILE>"));
}

/// Shards of a run with --kernel histogram --norm eq-hist --png16 merge into the images of
/// the unsharded run, byte for byte (the merge re-shades with the run's norm).
#[test]
fn merge_keeps_kernel_norm_and_png16() {
    let dir = tempfile::tempdir().unwrap();
    let flags = common::words("--kernel histogram --norm eq-hist --png16 --resolution 128x96");
    let shard = |k: u32| {
        let out = dir.path().join(format!("s{k}"));
        sample(
            &out,
            &[&flags[..], &["--shard", &format!("{k}/2")]].concat(),
        );
        out
    };
    let (s0, s1) = (shard(0), shard(1));
    let whole = dir.path().join("whole");
    sample(&whole, &flags);
    let merged = dir.path().join("merged");
    memodiff()
        .arg("merge")
        .arg(&s0)
        .arg(&s1)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    for f in [
        "samples.png",
        "samples_gray16.png",
        "samples_density.npy",
        "initial.png",
        "initial_gray16.png",
    ] {
        assert!(bytes(&merged.join(f)) == bytes(&whole.join(f)), "{f}");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&bytes(&merged.join("samples_density.json"))).unwrap();
    assert_eq!(meta["kernel"], "histogram");
    assert_eq!(meta["particles"], 3000);
}

/// `render` draws files only: a name that is no readable file is an error naming the path
/// and the OS error (not a dataset spec: `render grid:50` drew a synthetic grid before),
/// and nothing is written. float64 particle files still render.
#[test]
fn render_reads_files_not_dataset_specs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.png");
    for input in ["grid:50", "circle:8"] {
        memodiff()
            .current_dir(dir.path())
            .args(["render", input, "--backend", "cpu", "--out"])
            .arg(&out)
            .assert()
            .failure()
            .stderr(predicate::str::contains(format!("{input}: No such file")));
        assert!(!out.exists(), "{input}: drew {}", out.display());
    }
    let missing = dir.path().join("missing.npy");
    render(&[&missing], &out, &[])
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: No such file",
            missing.display()
        )));
    let not_npy = dir.path().join("notes.npy");
    std::fs::write(&not_npy, "not an array").unwrap();
    render(&[&not_npy], &out, &[])
        .failure()
        .stderr(predicate::str::contains(not_npy.display().to_string()))
        .stderr(predicate::str::contains("dataset").not());
    assert!(!out.exists());
    // A (3, 2) float64 .npy renders.
    let f64_npy = dir.path().join("p64.npy");
    let data: Vec<u8> = [0.0f64, 0.0, 1.0, 1.0, -1.0, 0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }";
    std::fs::write(&f64_npy, common::npy::with_dict(dict, &data)).unwrap();
    render(
        &[&f64_npy],
        &out,
        &["--backend", "cpu", "--resolution", "32"],
    )
    .success()
    .stdout(predicate::str::contains("3 particles"));
}

/// A density grid is what its sidecar's `format` field declares, not any sidecar whose text
/// happens to contain the grid format's name: a particle file beside a JSON note that
/// mentions it is still rendered as particles.
#[test]
fn render_recognises_grids_by_the_declared_format_only() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    sample(&run, &[]);
    let particles = dir.path().join("points.npy");
    std::fs::copy(run.join("samples.npy"), &particles).unwrap();
    std::fs::write(
        dir.path().join("points.json"),
        r#"{"format": "my-notes-1", "note": "particles, not a memodiff-density-f32-1 grid"}"#,
    )
    .unwrap();
    let out = dir.path().join("points.png");
    render(&[&particles], &out, &[]).success();
    assert!(bytes(&out) == bytes(&run.join("samples.png")));
    // A grid's sidecar declares its format, however the JSON is laid out.
    let grid = run.join("samples_density.npy");
    let sidecar = run.join("samples_density.json");
    let meta: serde_json::Value = serde_json::from_slice(&bytes(&sidecar)).unwrap();
    std::fs::write(&sidecar, serde_json::to_string(&meta).unwrap()).unwrap();
    let again = dir.path().join("grid.png");
    render(&[&grid], &again, &[]).success();
    assert!(bytes(&again) == bytes(&run.join("samples.png")));
}

#[test]
fn non_finite_particles_are_refused_in_every_input_kind() {
    // Before: NaN/inf particles were counted as rendered (float32 .npy) while a float64
    // one beyond float32's range turned into inf; now one rule, refused with count and row.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let f4 = dir.path().join("p32.npy");
    common::npy::write_f32(&f4, &[3, 2], &[0.0, 0.0, f32::NAN, 1.0, 0.5, f32::INFINITY]);
    let f8 = dir.path().join("p64.npy");
    let data: Vec<u8> = [0.0f64, 0.0, 1e39, 1.0, 0.5, f64::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }";
    std::fs::write(&f8, common::npy::with_dict(dict, &data)).unwrap();
    for input in [&f4, &f8] {
        render(&[input], &out, &[])
            .failure()
            .stderr(predicate::str::contains("2 particles are not finite"))
            .stderr(predicate::str::contains("row 1"));
        assert!(!out.exists());
    }
    let csv = dir.path().join("p.csv");
    std::fs::write(&csv, "0,0\nnan,1\n").unwrap();
    render(&[&csv], &out, &[])
        .failure()
        .stderr(predicate::str::contains("(point 1 coordinate 0) is NaN"));
    assert!(!out.exists());
}

/// A density grid whose sidecar is broken is reported as that, with the sidecar named,
/// not as particles of the wrong shape.
#[test]
fn a_broken_sidecar_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    sample(&run, &["--resolution", "16"]);
    let grid = run.join("samples_density.npy");
    std::fs::write(run.join("samples_density.json"), b"{\"format\": broken").unwrap();
    render(&[&grid], &tmp.path().join("a.png"), &[])
        .failure()
        .stderr(
            predicate::str::contains("samples_density.json, which is broken")
                .and(predicate::str::contains("shape (P, 2)").not()),
        );
}

/// One rule for every input: a non-finite value is refused, naming the file and where it
/// is. Particles of every kind are covered by `non_finite_particles_are_refused_in_every_input_kind`;
/// a density grid's NaN used to spread into the sum and its colours.
#[test]
fn a_non_finite_density_grid_value_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    sample(&run, &["--resolution", "16"]);
    let grid = run.join("samples_density.npy");
    let mut bytes = std::fs::read(&grid).unwrap();
    let header = bytes.len() - 16 * 16 * 4;
    // Row 2, column 5.
    let at = header + (2 * 16 + 5) * 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&grid, &bytes).unwrap();
    let out = tmp.path().join("grid.png");
    render(&[&grid], &out, &[]).failure().stderr(
        predicate::str::contains("samples_density.npy")
            .and(predicate::str::contains("row 2, column 5 is NaN")),
    );
    assert!(!out.exists());
}
