//! Memorization metrics end to end: GPU nearest neighbours against f64 brute force, score
//! variants (kde:h, --t-min) through the engines, posterior concentration along the
//! trajectory, and their shard merges.

mod common;

use common::{gpu_engine, scattered};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::nearest::nearest_two;
use memodiff::testing::engine::reference::ReferenceEngine;
use memodiff::testing::engine::{BatchWork, Engine, PosteriorTap, Problem, SamplerKind, NEVER};
use memodiff::testing::model::dataset::Dataset;
use memodiff::testing::model::posterior::max_weight;
use memodiff::testing::model::schedule::{reverse_steps_with, ScoreKind, ScorePoint, VpSchedule};
use memodiff::testing::run::driver::{
    run, run_checkpointed, BatchSink, Checkpoints, NoProgress, SampleConfig, Shard,
};
use memodiff::testing::run::measure::{MetricsSink, PosteriorPlan};
use memodiff::testing::run::sampler::run_collect;

#[test]
fn gpu_nearest_two_equals_f64_brute_force() {
    let Some(engine) = gpu_engine("gpu_nearest_two_equals_f64_brute_force") else {
        return;
    };
    let ctx = engine.context();
    // 20,000 points in D = 3: 60,000 coordinates, two chunks of the shader's loop; D = 7
    // (beyond the sampler's vec4) and training sets of 1 and 2 points.
    for (n, dim, rows) in [
        (20_000usize, 3usize, 1500usize),
        (700, 7, 800),
        (1, 2, 50),
        (2, 1, 50),
    ] {
        let training = scattered(n, dim, 17 + n as u64);
        let data = scattered(rows, dim, 5);
        // Samples: scattered points, half of them pulled onto training points (small d1).
        let mut samples: Vec<f32> = data.points.iter().map(|&v| v as f32).collect();
        for r in (0..rows).step_by(2) {
            let t = training.point(r % n);
            for d in 0..dim {
                samples[r * dim + d] = (t[d] + 1e-3 * data.points[r * dim + d]) as f32;
            }
        }
        samples[dim] = f32::NAN;
        let mut gpu =
            memodiff::testing::engine::gpu::nearest::GpuNearest::new(ctx, &training.points, dim)
                .unwrap();
        let found = gpu.neighbours(&samples).unwrap();
        assert_eq!(found.len(), rows);
        assert!(found[1].is_none(), "a NaN sample has no neighbours");
        for (r, nb) in found.iter().enumerate().filter(|(r, _)| *r != 1) {
            let want = nearest_two(&training.points, dim, &samples[r * dim..(r + 1) * dim]);
            assert_eq!(nb.unwrap(), want, "n {n} dim {dim} row {r}");
        }
        // The GPU's f32 candidates are the CPU twin's.
        let cands = gpu.candidates(&samples).unwrap();
        let t32: Vec<f32> = training.points.iter().map(|&v| v as f32).collect();
        let same = (0..rows)
            .filter(|&r| {
                let twin = memodiff::testing::engine::cpu::nearest::nearest_three(
                    &samples[r * dim..(r + 1) * dim],
                    &t32,
                    dim,
                );
                twin.i[..2] == cands[r].i[..2]
            })
            .count();
        assert!(same >= rows - 2, "{same} of {rows} agree with the twin");
    }
}

/// A sink that keeps the final samples and observes the trajectory through a MetricsSink:
/// from the positions (`tap: false`) or from the engine's score evaluation (`tap: true`,
/// what `memodiff sample` does).
struct Both {
    metrics: MetricsSink,
    samples: Vec<f32>,
    tap: bool,
}

impl BatchSink for Both {
    fn consume(&mut self, first: u64, initial: &[f32], samples: &[f32]) -> memodiff::Result<()> {
        self.samples.extend_from_slice(samples);
        self.metrics.consume(first, initial, samples)
    }
    fn observe_steps(&self) -> Vec<usize> {
        self.metrics.observe_steps()
    }
    fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> memodiff::Result<()> {
        self.metrics.observe(first, step, state)
    }
    fn tap_rows(&self, first: u64, n: usize) -> Option<usize> {
        self.tap.then(|| self.metrics.tap_rows(first, n)).flatten()
    }
    fn observe_tapped(
        &mut self,
        first: u64,
        step: usize,
        max_weight: &[f32],
        argmax: Vec<u32>,
    ) -> memodiff::Result<()> {
        self.metrics.observe_tapped(first, step, max_weight, argmax)
    }
}

fn circle_config(particles: u64) -> SampleConfig {
    let mut config = SampleConfig::new(Dataset::circle(8).unwrap());
    config.particles = particles;
    config
}

#[test]
fn posterior_concentration_along_the_trajectory() {
    let mut config = circle_config(20_000);
    config.batch = Some(7_000);
    let plan = PosteriorPlan::spread(99, 10, 15_000);
    let mut sink = Both {
        metrics: MetricsSink::new(&config, Some(plan)).unwrap(),
        samples: Vec::new(),
        tap: true,
    };
    assert_eq!(sink.observe_steps()[0], 0);
    assert_eq!(*sink.observe_steps().last().unwrap(), 99);
    run(&config, &mut CpuEngine::new(), &mut sink, &mut NoProgress).unwrap();
    // Observing between segments changes nothing (advance_batch is split-invariant).
    let plain = run_collect(&config, &mut CpuEngine::new()).unwrap();
    assert_eq!(sink.samples, plain.samples);
    let summary = sink.metrics.counter.summary();
    let post = summary.posterior.unwrap();
    assert!(post.iter().all(|p| p.particles == 15_000));
    // Initial noise: the weights are spread over the 8 points; at tau = 0 they are the
    // indicator of the nearest point, which is the final nearest point by definition.
    assert!(post[0].mean_max_weight < 0.5, "{:?}", post[0]);
    let last = post.last().unwrap();
    assert_eq!(
        (last.tau, last.mean_max_weight, last.fraction_argmax_final),
        (0.0, 1.0, 1.0)
    );
    // Concentration grows along the reverse process (up to Monte Carlo noise).
    for w in post.windows(2) {
        assert!(w[1].ou_time < w[0].ou_time);
        assert!(w[1].mean_max_weight > w[0].mean_max_weight - 0.01, "{w:?}");
    }
    // Shards merge to the unsharded counts exactly.
    let mut merged: Option<memodiff::testing::metrics::MemorizationCounts> = None;
    for k in 0..3 {
        let mut part = config.clone();
        part.shard = Some(Shard { index: k, count: 3 });
        let mut sink = MetricsSink::new(&part, Some(plan)).unwrap();
        run(&part, &mut CpuEngine::new(), &mut sink, &mut NoProgress).unwrap();
        let c = sink.counter.counts();
        match &mut merged {
            None => merged = Some(c),
            Some(m) => m.merge(&c).unwrap(),
        }
    }
    assert_eq!(merged.unwrap(), sink.metrics.counter.counts());
}

#[test]
fn kde_with_h_to_zero_is_the_empirical_score() {
    let mut config = circle_config(2_000);
    let empirical = run_collect(&config, &mut CpuEngine::new()).unwrap();
    config.score = ScoreKind::Kde { h: 0.0 };
    let kde0 = run_collect(&config, &mut CpuEngine::new()).unwrap();
    assert_eq!(kde0.samples, empirical.samples);
    // h -> 0 through the f64 reference engine: trajectories converge to the empirical ones.
    config.particles = 300;
    config.score = ScoreKind::Empirical;
    let reference = |config: &SampleConfig| {
        run_collect(config, &mut ReferenceEngine::new())
            .unwrap()
            .samples
    };
    let base = reference(&config);
    let mut previous = f32::INFINITY;
    for h in [1e-2, 1e-3, 1e-4] {
        config.score = ScoreKind::Kde { h };
        let max = reference(&config)
            .iter()
            .zip(&base)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max < previous, "h = {h}: {max} not below {previous}");
        previous = max;
    }
    assert!(previous < 1e-3, "h = 1e-4: max deviation {previous}");
    // The cpu engine follows the reference with the kde score too.
    config.score = ScoreKind::Kde { h: 0.3 };
    let cpu = run_collect(&config, &mut CpuEngine::new()).unwrap().samples;
    let r = reference(&config);
    let close = cpu
        .iter()
        .zip(&r)
        .filter(|(a, b)| (*a - *b).abs() < 1e-3)
        .count();
    assert!(close >= cpu.len() * 99 / 100, "{close} of {}", cpu.len());
}

#[test]
fn kde_and_t_min_move_memorization_to_generalization() {
    let training = Dataset::circle(8).unwrap();
    let memorized = |score: ScoreKind, t_min: f64| {
        let mut config = SampleConfig::new(training.clone());
        config.particles = 4_000;
        config.score = score;
        config.t_min = t_min;
        let mut sink = MetricsSink::new(&config, None).unwrap();
        run(&config, &mut CpuEngine::new(), &mut sink, &mut NoProgress).unwrap();
        sink.counter.summary().memorized_fraction
    };
    let base = memorized(ScoreKind::Empirical, 0.0);
    eprintln!("memorized: empirical {base}");
    assert!(base > 0.9, "empirical score: {base}");
    let kde = memorized(ScoreKind::Kde { h: 0.3 }, 0.0);
    assert!(kde < base - 0.3, "kde:0.3 {kde} vs {base}");
    let early = memorized(ScoreKind::Empirical, 0.3);
    eprintln!("kde:0.3 {kde}, t-min 0.3 {early}");
    assert!(early < base - 0.3, "t-min 0.3 {early} vs {base}");
}

#[test]
fn t_min_outputs_the_denoised_mean() {
    let mut config = circle_config(1_000);
    config.t_min = 0.1;
    let out = run_collect(&config, &mut CpuEngine::new()).unwrap();
    // The same steps without the denoising: advance the batch by hand, then denoise.
    let steps = config.reverse_steps();
    assert_eq!(steps.len(), 99);
    let problem = memodiff::testing::engine::Problem {
        dataset: &config.dataset,
        steps: &steps,
        seed: config.seed,
        initial_std: config.schedule.sigma2(1.0).sqrt(),
        schedule: config.schedule,
        sampler: memodiff::testing::engine::SamplerKind::Em,
        patch: None,
    };
    let mut initial = vec![0f32; 2_000];
    let mut state = vec![0f32; 2_000];
    CpuEngine::new()
        .run_batch(&problem, 0, &mut initial, &mut state, &mut |_| {})
        .unwrap();
    assert_eq!(initial, out.initial);
    let point = config.score_point_after(&steps, steps.len());
    assert_eq!(point.tau, 0.1);
    memodiff::testing::model::posterior::denoise(&config.dataset, config.score, &point, &mut state);
    assert_eq!(state, out.samples);
    // A posterior mean of points on the unit circle lies inside it.
    for x in out.samples.chunks(2) {
        assert!(x[0].hypot(x[1]) <= 1.0 + 1e-6);
    }
    // Bad values are refused.
    config.t_min = 0.999;
    assert!(config.validate().is_err());
    config.t_min = -0.1;
    assert!(config.validate().is_err());
}

/// The collapse time of two training points ±1 in d = 1, computed in the test: along the
/// exact reverse process x_t follows the forward marginal p_t = (N(s, v) + N(-s, v)) / 2,
/// so the mean of max_i w_i is E[max(q, 1 - q)], q = sigmoid(2 s x / v), x ~ N(s, v) (by
/// symmetry), a 1-D integral; the normalised concentration 2 E[max w] - 1 reaches 1/2 at
/// E[max w] = 3/4. `collapse::measure` on the sampler must find the same OU time.
#[test]
fn collapse_time_of_two_points_matches_the_exact_value() {
    use memodiff::testing::commands::collapse::{measure, CollapseArgs};
    let mean_max_w = |t: f64| {
        let (s, v) = ((-t).exp(), -(-2.0 * t).exp_m1());
        let (lo, hi, n) = (-12.0, 12.0, 24_000);
        let h = (hi - lo) / n as f64;
        (0..=n)
            .map(|k| {
                let z = lo + k as f64 * h;
                let x = s + v.sqrt() * z;
                let q = 1.0 / (1.0 + (-2.0 * s * x / v).exp());
                let weight = if k == 0 || k == n { 0.5 } else { 1.0 };
                weight * h * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
                    * q.max(1.0 - q)
            })
            .sum::<f64>()
    };
    // Bisection: E[max w] decreases with t.
    let (mut a, mut b) = (1e-4, 3.0);
    for _ in 0..60 {
        let m = 0.5 * (a + b);
        if mean_max_w(m) > 0.75 {
            a = m
        } else {
            b = m
        }
    }
    let exact = 0.5 * (a + b);
    let args = CollapseArgs {
        n: vec![2],
        d: vec![1],
        sigma: 1.0,
        particles: 40_000,
        steps: 1000,
        beta_min: 0.001,
        beta_max: 20.0,
        seed: 0,
        data_seed: 0,
        backend: memodiff::testing::engine::Backend::Cpu,
        out: std::path::PathBuf::new(),
        force: false,
    };
    let dataset = Dataset::new("pm1", 1, vec![-1.0, 1.0]).unwrap();
    let case = measure(dataset, 1.0, &args, &mut CpuEngine::new()).unwrap();
    let measured = case.measured.unwrap();
    eprintln!("two points: exact t_C {exact:.4}, measured {measured:.4}");
    assert!(case.resolved);
    assert!(
        (measured / exact - 1.0).abs() < 0.03,
        "measured {measured} vs exact {exact}"
    );
}

fn memodiff() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("memodiff").unwrap();
    cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    cmd
}

#[test]
fn cli_score_variants_metrics_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "sample",
        "--particles",
        "3000",
        "--backend",
        "cpu",
        "--no-samples",
    ];
    let output = memodiff()
        .args(args)
        .args(["--score", "kde:0.2", "--t-min", "0.05", "--out"])
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).unwrap();
    assert!(text.contains("memorized (d1/d2 < 1/3)"), "{text}");
    assert!(text.contains("chi-square"), "{text}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["parameters"]["score"]["kind"], "kde");
    assert_eq!(run["parameters"]["score"]["h"], 0.2);
    assert_eq!(run["parameters"]["t_min"], 0.05);
    let m = &run["memorization"];
    let frac = m["memorized_fraction"].as_f64().unwrap();
    let ci = m["memorized_interval_95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= frac && frac <= ci[1].as_f64().unwrap());
    assert_eq!(m["occupancy_chi_square"]["dof"], 7);
    let post = m["posterior"].as_array().unwrap();
    assert!(post.len() >= 10);
    assert_eq!(post.last().unwrap()["tau"], 0.05);
    // Bad input: a clear error and nothing written.
    for (flag, value, says) in [
        ("--score", "kde:-1", "kde width"),
        ("--score", "gaussian", "empirical"),
        ("--t-min", "0.999", "--t-min"),
        ("--t-min", "nan", "--t-min"),
    ] {
        let bad = dir.path().join(format!("bad{}", value.len()));
        let err = memodiff()
            .args(args)
            .args([flag, value, "--out"])
            .arg(&bad)
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(!bad.join("run.json").exists());
    }
    // With checkpoints (mid-batch ones included) the same samples and metrics, posterior
    // concentration included; the checkpoint records the score and t-min for a resume.
    let variant = ["--score", "kde:0.1", "--t-min", "0.05", "--batch", "1000"];
    let (plain, ck) = (dir.path().join("plain"), dir.path().join("ck"));
    let base = ["sample", "--particles", "3000", "--backend", "cpu"];
    memodiff()
        .args(base)
        .args(variant)
        .arg("--out")
        .arg(&plain)
        .assert()
        .success();
    memodiff()
        .args(base)
        .args(variant)
        .args(["--checkpoint-every", "7", "--out"])
        .arg(&ck)
        .assert()
        .success();
    for name in ["samples.npy", "metrics_counts.json"] {
        assert_eq!(
            std::fs::read(plain.join(name)).unwrap(),
            std::fs::read(ck.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn cli_collapse_and_sweep_write_csv_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let col = dir.path().join("collapse");
    memodiff()
        .args([
            "collapse",
            "--n",
            "4,16",
            "--d",
            "2",
            "--particles",
            "300",
            "--steps",
            "120",
            "--out",
        ])
        .arg(&col)
        .assert()
        .success();
    let csv = std::fs::read_to_string(col.join("collapse.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("n,d,sigma,predicted_t_c,measured_t_c"));
    assert!(image::open(col.join("collapse.png")).is_ok());
    let sw = dir.path().join("sweep");
    memodiff()
        .args([
            "sweep",
            "--param",
            "t-min",
            "--values",
            "0,0.1,0.3",
            "--dataset",
            "circle:8",
        ])
        .args(["--particles", "500", "--out"])
        .arg(&sw)
        .assert()
        .success();
    let csv = std::fs::read_to_string(sw.join("sweep.csv")).unwrap();
    let fractions: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(7).unwrap().parse().unwrap())
        .collect();
    assert_eq!(fractions.len(), 3);
    // Stopping earlier memorizes less (circle:8, 500 samples: far beyond the noise).
    assert!(fractions[0] > fractions[2] + 0.2, "{fractions:?}");
    assert!(image::open(sw.join("sweep.png")).is_ok());
    // D > what the engines take, or a non-integer N: an error, no files.
    let bad = dir.path().join("bad");
    memodiff()
        .args(["sweep", "--param", "n", "--values", "2.5", "--out"])
        .arg(&bad)
        .assert()
        .failure();
    assert!(!bad.join("sweep.csv").exists());
}

/// What `split_posterior` returns: the final state, row-major the (weight, argmax) pairs,
/// and the state at each tap.
type SplitPosterior = (Vec<f32>, Vec<(f64, u32)>, Vec<Vec<f32>>);

/// The posterior of `rows` at the steps `taps` of a problem, the slow way: the batch run
/// by `advance_batch` in segments ending at each tapped step, `posterior::max_weight` (f64)
/// of the state there. Returns the final state, row-major the (weight, argmax) pairs, and
/// the state at each tap.
fn split_posterior(
    engine: &mut dyn Engine,
    problem: &Problem,
    first: u64,
    n: usize,
    rows: usize,
    taps: &[usize],
) -> SplitPosterior {
    let dim = problem.dataset.dim;
    let (mut initial, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
    let mut found = vec![(0.0, 0u32); rows * taps.len()];
    let mut states = Vec::new();
    let mut at = 0;
    let mut begun = false;
    // Also cut where the tapped run of the test cuts its ranges (step 30): the reference
    // engine rounds its state to f32 at every cut.
    let mut cuts = taps.to_vec();
    cuts.extend([30, problem.steps.len()]);
    cuts.sort();
    cuts.dedup();
    for &cut in &cuts {
        engine
            .advance_batch(
                problem,
                BatchWork::new(
                    first,
                    (!begun).then_some(&mut initial[..]),
                    &mut state,
                    at..cut,
                ),
            )
            .unwrap();
        begun = true;
        at = cut;
        if let Some(j) = taps.iter().position(|&t| t == cut) {
            states.push(state.clone());
            let step = &problem.steps[cut];
            let point = ScorePoint {
                tau: step.tau,
                mean_scale: step.mean_scale,
                sigma2: step.sigma2,
                variance: step.sigma2,
            };
            for r in 0..rows {
                found[r * taps.len() + j] =
                    max_weight(problem.dataset, &state[r * dim..(r + 1) * dim], &point);
            }
        }
    }
    (state, found, states)
}

/// The engines that have the posterior tap report, at the tapped steps, the f64 posterior
/// of the state there: largest weight within 1e-4 relative, argmax equal except at
/// near-ties of the two top potentials; and their positions are those of the untapped run.
#[test]
fn posterior_tap_matches_the_f64_posterior() {
    let schedule = VpSchedule::default();
    let taps = [0usize, 1, 10, 45, 80, 97, 98];
    let mut report = Vec::new();
    for (backend, dim, n_train, n, sampler) in [
        ("cpu", 1usize, 300usize, 700usize, SamplerKind::Em),
        ("cpu", 2, 8, 1000, SamplerKind::Em),
        ("cpu", 2, 300, 700, SamplerKind::Heun),
        ("cpu", 3, 130, 700, SamplerKind::Em),
        ("cpu", 4, 1100, 300, SamplerKind::Em),
        ("reference", 2, 40, 60, SamplerKind::Em),
        ("reference", 3, 40, 40, SamplerKind::Heun),
    ] {
        let dataset = scattered(n_train, dim, 31 + dim as u64);
        let steps = reverse_steps_with(&schedule, 100, ScoreKind::Empirical, 0.0);
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 4242,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler,
            patch: None,
        };
        let mut engine: Box<dyn Engine> = match backend {
            "cpu" => Box::new(CpuEngine::new()),
            _ => Box::new(ReferenceEngine::new()),
        };
        assert!(engine.posterior_tap(&problem));
        // Above 2^32: the counter's high word; rows not a multiple of a chunk or block.
        let first = (1u64 << 32) - 70;
        let rows = n - 37;
        let (mut initial, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
        let mut weights = vec![0f32; rows * taps.len()];
        let mut argmax = vec![0u32; rows * taps.len()];
        // In two ranges, the cut between taps: each call fills the taps of its range.
        for (range, init) in [(0..30, true), (30..steps.len(), false)] {
            engine
                .advance_batch_tapped(
                    &problem,
                    BatchWork::new(first, init.then_some(&mut initial[..]), &mut state, range),
                    &mut PosteriorTap {
                        steps: &taps,
                        rows,
                        max_weight: &mut weights,
                        argmax: &mut argmax,
                    },
                )
                .unwrap();
        }
        let (split_state, want, at_taps) =
            split_posterior(engine.as_mut(), &problem, first, n, rows, &taps);
        if backend == "cpu" {
            // The SIMD engine's state is f32 between calls: the cut at 30 is no change.
            let plain = {
                let (mut i, mut s) = (vec![0f32; n * dim], vec![0f32; n * dim]);
                engine
                    .advance_batch(
                        &problem,
                        BatchWork::new(first, Some(&mut i), &mut s, 0..steps.len()),
                    )
                    .unwrap();
                s
            };
            assert_eq!(
                state, plain,
                "{backend} D = {dim}: the tap moved the particles"
            );
        }
        assert_eq!(
            state, split_state,
            "{backend} D = {dim}: tapped vs split run"
        );
        let (mut worst, mut ties) = (0f64, 0usize);
        for r in 0..rows {
            for (j, &k) in taps.iter().enumerate() {
                let (w, a) = want[r * taps.len() + j];
                let (tw, ta) = (
                    weights[r * taps.len() + j] as f64,
                    argmax[r * taps.len() + j],
                );
                worst = worst.max((tw - w).abs() / w);
                if ta != a {
                    // A near-tie: the two points' potentials at this state within 1e-4 of
                    // each other (relative to the larger) is what f32 energies cannot order.
                    let step = &steps[k];
                    let x = &at_taps[j][r * dim..(r + 1) * dim];
                    let pot = |i: u32| {
                        let d2: f64 = dataset
                            .point(i as usize)
                            .iter()
                            .zip(x)
                            .map(|(&t, &v)| (v as f64 - step.mean_scale * t).powi(2))
                            .sum();
                        d2 / (2.0 * step.sigma2)
                    };
                    let (pa, pb) = (pot(a), pot(ta));
                    assert!(
                        (pa - pb).abs() <= 1e-4 * pa.max(pb).max(1.0),
                        "{backend} D = {dim} row {r} step {k}: argmax {ta} vs {a}, potentials {pb} vs {pa}"
                    );
                    ties += 1;
                }
            }
        }
        report.push(format!(
            "{backend} D={dim} N={n_train} {sampler:?}: max rel err {worst:e}, {ties} near-ties"
        ));
        assert!(
            worst <= 1e-4,
            "{backend} D = {dim}: max weight off by {worst:e} relative"
        );
        assert!(ties * 100 <= rows * taps.len(), "{ties} near-ties");
    }
    eprintln!("{}", report.join("\n"));
}

/// `memodiff sample`'s metrics with the tap: the same samples as observing the positions,
/// posterior summaries within the f32 tap's accuracy, and counts that do not depend on the
/// batch size, the shards or checkpoint segments.
#[test]
fn tapped_posterior_counts_are_batch_invariant_and_match_the_observed() {
    let mut config = circle_config(12_000);
    config.batch = Some(5_000);
    let plan = PosteriorPlan::spread(99, 20, 9_000);
    let go = |config: &SampleConfig, tap: bool, every: Option<usize>| {
        let mut sink = Both {
            metrics: MetricsSink::new(config, Some(plan)).unwrap(),
            samples: Vec::new(),
            tap,
        };
        run_checkpointed(
            config,
            &mut CpuEngine::new(),
            &mut sink,
            &mut NoProgress,
            &NEVER,
            Checkpoints {
                every,
                resume: None,
            },
        )
        .unwrap();
        sink
    };
    let tapped = go(&config, true, None);
    let observed = go(&config, false, None);
    assert_eq!(tapped.samples, observed.samples);
    let (a, b) = (
        tapped.metrics.counter.summary().posterior.unwrap(),
        observed.metrics.counter.summary().posterior.unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (p, q) in a.iter().zip(&b) {
        assert_eq!((p.particles, p.tau), (q.particles, q.tau));
        assert!(
            (p.mean_max_weight - q.mean_max_weight).abs() <= 1e-5,
            "{p:?} vs {q:?}"
        );
        assert!(
            (p.fraction_argmax_final - q.fraction_argmax_final).abs() <= 1e-3,
            "{p:?} vs {q:?}"
        );
    }
    // The last record (tau = 0) comes from the nearest neighbours: exactly the f64 one.
    assert_eq!(a.last(), b.last());
    let counts = tapped.metrics.counter.counts();
    for batch in [1_000, 3_001, 12_000] {
        let mut other = config.clone();
        other.batch = Some(batch);
        assert_eq!(
            go(&other, true, None).metrics.counter.counts(),
            counts,
            "batch {batch}"
        );
    }
    assert_eq!(
        go(&config, true, Some(13)).metrics.counter.counts(),
        counts,
        "segments of 13 steps"
    );
    let mut merged: Option<memodiff::testing::metrics::MemorizationCounts> = None;
    for k in 0..3 {
        let mut part = config.clone();
        part.shard = Some(Shard { index: k, count: 3 });
        let c = go(&part, true, None).metrics.counter.counts();
        match &mut merged {
            None => merged = Some(c),
            Some(m) => m.merge(&c).unwrap(),
        }
    }
    assert_eq!(merged.unwrap(), counts, "three shards");
}

/// The blocked posterior pass (engines without the tap) is `posterior::max_weight` bit for
/// bit, at D = 2, 64 and 784, at large, small and zero variance, rows not a multiple of
/// its block.
#[test]
fn blocked_max_weights_equal_the_scalar_f64_pass() {
    let schedule = VpSchedule::default();
    for (n_train, dim, rows) in [
        (8usize, 2usize, 37usize),
        (700, 2, 19),
        (300, 64, 21),
        (90, 784, 11),
    ] {
        let dataset = scattered(n_train, dim, 3 + dim as u64);
        let columns = memodiff::testing::model::posterior::columns(&dataset);
        let noise = scattered(rows, dim, 99);
        for tau in [0.9, 0.2, 0.01, 0.0] {
            let point = ScorePoint::new(&schedule, ScoreKind::Empirical, tau);
            // Near the scaled training points (small variance: a sharp posterior), and
            // one far away.
            let mut x: Vec<f32> = (0..rows * dim)
                .map(|k| {
                    let t = dataset.point((k / dim) % n_train)[k % dim];
                    (point.mean_scale * t + 0.05 * noise.points[k]) as f32
                })
                .collect();
            x[0] = 1e6;
            let fast =
                memodiff::testing::model::posterior::max_weights(&dataset, &columns, &x, &point);
            for (r, got) in fast.iter().enumerate() {
                let want = max_weight(&dataset, &x[r * dim..(r + 1) * dim], &point);
                assert_eq!(
                    (got.0.to_bits(), got.1),
                    (want.0.to_bits(), want.1),
                    "D = {dim} N = {n_train} tau {tau} row {r}"
                );
            }
        }
    }
}

/// The CPU memorization counts (f32 screening, then the exact f64 recheck) are those of
/// f64 brute force, for samples placed at the ratio criterion's threshold d1/d2 = 1/3 and
/// at near-ties d1 = d2, within a few f32 ulps either side, at D = 2, 64 and 784.
#[test]
fn screened_nearest_counts_equal_f64_brute_force_at_the_threshold() {
    for (n_train, dim) in [(200usize, 2usize), (150, 64), (60, 784)] {
        let training = scattered(n_train, dim, 11 + dim as u64);
        let mut samples = Vec::new();
        for k in 0..n_train - 1 {
            let (a, b) = (training.point(k), training.point(k + 1));
            // Fraction 1/4 of the way from a to b: d1/d2 = 1/3 (when no other point is
            // nearer); 1/2: a tie; each nudged by a few parts in 1e7 either side.
            for f in [0.25, 0.5] {
                for nudge in [-3e-7, -1e-7, 0.0, 1e-7, 3e-7] {
                    let t = f + nudge;
                    samples.extend(a.iter().zip(b).map(|(&p, &q)| (p + t * (q - p)) as f32));
                }
            }
        }
        samples.extend(training.point(3).iter().map(|&v| v as f32)); // d1 = 0
        samples.extend(std::iter::repeat_n(f32::NAN, dim));
        let rows = samples.len() / dim;
        let mut screened =
            memodiff::testing::metrics::MemorizationCounter::new(&training.points, dim).unwrap();
        let nearest = screened.add_batch_nearest(&samples, dim).unwrap();
        let mut brute =
            memodiff::testing::metrics::MemorizationCounter::new(&training.points, dim).unwrap();
        let list: Vec<_> = samples
            .chunks(dim)
            .map(|x| {
                x.iter()
                    .all(|v| v.is_finite())
                    .then(|| nearest_two(&training.points, dim, x))
            })
            .collect();
        brute.add_neighbours(&list);
        assert_eq!(screened.counts(), brute.counts(), "D = {dim}");
        for (r, nb) in list.iter().enumerate() {
            assert_eq!(
                nearest[r],
                nb.map_or(u32::MAX, |nb| nb.nearest),
                "D = {dim} row {r}"
            );
        }
        // The threshold is really crossed within the nudges (the test tests something).
        let memorized = list.iter().flatten().filter(|nb| nb.memorized()).count();
        assert!(
            memorized > 0 && memorized < rows - 1,
            "D = {dim}: {memorized} of {rows}"
        );
    }
}
