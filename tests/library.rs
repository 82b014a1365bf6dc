//! The library's public API, as another program (and the Python package) uses it: a run
//! into a folder with a cancellation flag, a progress display and notes; samples in memory;
//! the score at points; the colours of the PNGs.

use memodiff::{
    sample_to_folder, shade, Backend, Dataset, Error, Execution, FolderControl, Progress,
    RunReport, RunSpec, SampleConfig, Sampler, ScoreEvaluator, ScoreKind, VpSchedule,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// Records what the run reports; sets `cancel` at the first report when asked to.
#[derive(Default)]
struct Recorder<'a> {
    started: Option<(u64, u64)>,
    done: Vec<u64>,
    finished: bool,
    cancel_at_first: Option<&'a AtomicBool>,
}

impl Progress for Recorder<'_> {
    fn start(&mut self, particles: u64, steps: u64) {
        self.started = Some((particles, steps));
    }
    fn advance_to(&mut self, done: u64) {
        self.done.push(done);
        if let Some(flag) = self.cancel_at_first {
            flag.store(true, Ordering::SeqCst);
        }
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

fn small_spec(dataset: &str, particles: u64, time_points: usize) -> RunSpec {
    let mut spec = RunSpec::new(dataset);
    spec.particles = particles;
    spec.time_points = time_points;
    spec.images.resolution = [64, 48];
    spec
}

fn cpu() -> Execution {
    Execution {
        backend: Backend::Cpu,
        device: None,
        batch: Some(1000),
        checkpoint_every: None,
    }
}

/// `spec` into `out` on the cpu, with no progress display, notes or cancellation.
fn run_quietly(spec: &RunSpec, training: Dataset, out: &std::path::Path) -> RunReport {
    let cancel = AtomicBool::new(false);
    let control = FolderControl::quiet(&cancel);
    sample_to_folder(spec, &cpu(), training, out, control).unwrap()
}

#[test]
fn a_run_into_a_folder_reports_progress_notes_and_writes_run_json_last() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let spec = small_spec("gaussian:20:3", 2500, 10);
    let training = Dataset::parse_seeded(&spec.dataset, spec.data_seed).unwrap();
    let cancel = AtomicBool::new(false);
    let mut progress = Recorder::default();
    let mut notes = Vec::new();
    let control = FolderControl {
        progress: &mut progress,
        notes: &mut |line| notes.push(line.to_string()),
        command: vec!["a test".into()],
        ..FolderControl::quiet(&cancel)
    };
    let report = sample_to_folder(&spec, &cpu(), training, &out, control).unwrap();
    // 2,500 particles through 9 steps, reported as it goes and up to the end.
    assert_eq!(progress.started, Some((2500, 9)));
    assert!(progress.done.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(progress.done.last(), Some(&(2500 * 9)));
    assert!(progress.finished);
    assert!(
        notes.iter().any(|n| n.contains("D = 3")),
        "no note on the skipped images: {notes:?}"
    );
    assert_eq!(report.files.last().map(String::as_str), Some("run.json"));
    assert_eq!(report.command, ["a test"]);
    let written = RunReport::read(&out).unwrap();
    assert_eq!(written.parameters.spec, spec);
    for file in &report.files {
        assert!(out.join(file).is_file(), "{file} listed but missing");
    }
}

#[test]
fn a_cancelled_run_stops_early_and_writes_no_run_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let spec = small_spec("circle:8", 4000, 30);
    let training = Dataset::parse(&spec.dataset).unwrap();
    let cancel = AtomicBool::new(false);
    let mut progress = Recorder {
        cancel_at_first: Some(&cancel),
        ..Default::default()
    };
    let control = FolderControl {
        progress: &mut progress,
        ..FolderControl::quiet(&cancel)
    };
    let result = sample_to_folder(&spec, &cpu(), training, &out, control);
    assert!(matches!(result, Err(Error::Interrupted(_))), "{result:?}");
    assert!(progress.done.last() < Some(&(4000 * 29)));
    assert!(!out.join("run.json").exists());
}

#[test]
fn samples_in_memory_are_those_of_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let spec = small_spec("circle:8", 1500, 12);
    let training = Dataset::parse(&spec.dataset).unwrap();
    run_quietly(&spec, training.clone(), &out);
    let on_disk = std::fs::read(out.join("samples.npy")).unwrap();
    let mut config = SampleConfig::new(training);
    config.particles = 1500;
    config.time_points = 12;
    let mut sampler = Sampler::open(Backend::Cpu, None).unwrap();
    assert_eq!(sampler.backend(), Backend::Cpu);
    let run = sampler.collect(&config).unwrap();
    assert_eq!(run.samples.len(), 1500 * 2);
    let bytes: Vec<u8> = run.samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(on_disk.ends_with(&bytes), "samples.npy differs from memory");
}

#[test]
fn the_colours_of_shade_are_the_pixels_of_the_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut spec = small_spec("circle:8", 3000, 20);
    spec.images.norm = memodiff::Norm::EqHist;
    spec.images.colormap = memodiff::Colormap::Viridis;
    let training = Dataset::parse(&spec.dataset).unwrap();
    run_quietly(&spec, training, &out);
    let bytes = std::fs::read(out.join("samples_density.npy")).unwrap();
    // A little-endian f32 (48, 64) array after its header.
    let values: Vec<f32> = bytes[bytes.len() - 64 * 48 * 4..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let png = image::open(out.join("samples.png")).unwrap().to_rgb8();
    assert_eq!((png.width(), png.height()), (64, 48));
    let pixels: Vec<[u8; 3]> = png.pixels().map(|p| p.0).collect();
    assert_eq!(shade(&values, spec.images.shading()), pixels);
}

#[test]
fn the_cpu_score_at_points_matches_the_reference_in_high_dimension() {
    let training = Dataset::parse_seeded("gaussian:40:7", 3).unwrap();
    let schedule = VpSchedule::default();
    let points: Vec<f32> = (0..5 * 7)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    let (mut cpu, _) = ScoreEvaluator::open(Backend::Cpu, None).unwrap();
    let (mut reference, _) = ScoreEvaluator::open(Backend::Reference, None).unwrap();
    for tau in [0.05, 0.5] {
        let fast = cpu
            .evaluate(&training, &schedule, ScoreKind::Empirical, tau, &points)
            .unwrap();
        let exact = reference
            .evaluate(&training, &schedule, ScoreKind::Empirical, tau, &points)
            .unwrap();
        let scale = exact.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in fast.iter().zip(&exact) {
            assert!((a - b).abs() <= 1e-4 * scale, "tau {tau}: {a} vs {b}");
        }
    }
}

/// The score at points of `kde:h` is the score of the smoothed mixture: each engine gives
/// the f64 formula with the components' variance sigma2 + s^2 h^2 (and `kde:0` the
/// empirical score).
#[test]
fn the_score_at_points_of_a_kde_is_the_smoothed_score() {
    let training = Dataset::parse("circle:8").unwrap();
    let schedule = VpSchedule::default();
    let points = [0.3f32, -0.2, 1.1, 0.4, -0.7, -0.9];
    let (mut cpu, _) = ScoreEvaluator::open(Backend::Cpu, None).unwrap();
    let (mut reference, _) = ScoreEvaluator::open(Backend::Reference, None).unwrap();
    let kde: ScoreKind = "kde:0.3".parse().unwrap();
    let tau = 0.2;
    let (s, sigma2) = (schedule.mean_scale(tau), schedule.sigma2(tau));
    let v = sigma2 + s * s * 0.09;
    for (i, p) in points.chunks(2).enumerate() {
        // (s sum_i w_i a_i - x) / v, w = softmax(-|x - s a_i|^2 / 2v), by hand.
        let logits: Vec<f64> = (0..8)
            .map(|k| {
                let a = training.point(k);
                let d2 = (p[0] as f64 - s * a[0]).powi(2) + (p[1] as f64 - s * a[1]).powi(2);
                -d2 / (2.0 * v)
            })
            .collect();
        let top = logits.iter().cloned().fold(f64::MIN, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = w.iter().sum();
        for (d, &x) in p.iter().enumerate() {
            let mean: f64 = (0..8).map(|k| w[k] * training.point(k)[d]).sum::<f64>() / total;
            let expected = (s * mean - x as f64) / v;
            for evaluator in [&mut cpu, &mut reference] {
                let got = evaluator
                    .evaluate(&training, &schedule, kde, tau, &points)
                    .unwrap()[2 * i + d] as f64;
                assert!(
                    (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "{got} vs {expected}"
                );
            }
        }
    }
    let zero: ScoreKind = "kde:0".parse().unwrap();
    assert_eq!(
        cpu.evaluate(&training, &schedule, zero, tau, &points)
            .unwrap(),
        cpu.evaluate(&training, &schedule, ScoreKind::Empirical, tau, &points)
            .unwrap()
    );
}

/// The score at points refuses what has no score: a ragged or empty array of points,
/// non-finite coordinates, a time outside (0, 1]. Each names what is wrong.
#[test]
fn the_score_at_points_refuses_what_has_no_score() {
    let training = Dataset::parse("circle:8").unwrap();
    let schedule = VpSchedule::default();
    let (mut cpu, _) = ScoreEvaluator::open(Backend::Cpu, None).unwrap();
    let cases: [(&[f32], f64, &str); 5] = [
        (&[0.5, 0.5, 0.5], 0.5, "dimension D = 2"),
        (&[], 0.5, "non-empty"),
        (&[0.5, f32::NAN], 0.5, "point 0 has a non-finite coordinate"),
        (&[0.5, 0.5], 0.0, "outside (0, 1]"),
        (&[0.5, 0.5], 1.5, "outside (0, 1]"),
    ];
    for (points, tau, expected) in cases {
        let message = cpu
            .evaluate(&training, &schedule, ScoreKind::Empirical, tau, points)
            .unwrap_err()
            .to_string();
        assert!(message.contains(expected), "{points:?} at {tau}: {message}");
    }
    assert_eq!(
        cpu.evaluate(&training, &schedule, ScoreKind::Empirical, 0.5, &[0.5, 0.5])
            .unwrap()
            .len(),
        2
    );
}

/// `resume` refuses a checkpoint whose parameters or training set were edited since it
/// was saved (a changed seed would continue the run as a hybrid of two runs).
#[test]
fn an_edited_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let spec = small_spec("circle:8", 4000, 40);
    let training = Dataset::parse(&spec.dataset).unwrap();
    let execution = Execution {
        checkpoint_every: Some(5),
        ..cpu()
    };
    let cancel = AtomicBool::new(false);
    let mut progress = Recorder {
        cancel_at_first: Some(&cancel),
        ..Default::default()
    };
    let control = FolderControl {
        progress: &mut progress,
        ..FolderControl::quiet(&cancel)
    };
    let stopped = sample_to_folder(&spec, &execution, training, &out, control);
    assert!(matches!(stopped, Err(Error::Interrupted(_))), "{stopped:?}");
    let meta = out.join("checkpoint").join("checkpoint.json");
    let original = std::fs::read_to_string(&meta).unwrap();
    let resume = || {
        let calm = AtomicBool::new(false);
        memodiff::resume_in_folder(
            &out,
            FolderControl {
                force: true,
                ..FolderControl::quiet(&calm)
            },
        )
    };
    // Another seed in checkpoint.json.
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["run"]["spec"]["seed"] = serde_json::json!(7);
    std::fs::write(&meta, serde_json::to_string(&edited).unwrap()).unwrap();
    let e = resume().unwrap_err().to_string();
    assert!(e.contains("digest differs"), "{e}");
    // The parameters as saved, but another training set.
    std::fs::write(&meta, &original).unwrap();
    let npy = out.join("checkpoint").join("training.npy");
    let mut bytes = std::fs::read(&npy).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&npy, bytes).unwrap();
    let e = resume().unwrap_err().to_string();
    assert!(e.contains("digest differs"), "{e}");
}
