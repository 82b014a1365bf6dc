//! The GPU engine's posterior tap (`Engine::advance_batch_tapped`): against the cpu
//! engine's tap at the same positions, consistent across a whole tapped run, without
//! moving any particle, and through the sampler against the f64 fallback it replaces.
//! These run on any wgpu adapter (lavapipe in CI, also with `WGPU_BACKEND=gl`).

mod common;

use common::{gpu_engine, scattered};
use memodiff::testing::engine::cpu::CpuEngine;
use memodiff::testing::engine::gpu::GpuEngine;
use memodiff::testing::engine::{BatchWork, Engine, PosteriorTap, Problem, SamplerKind};
use memodiff::testing::model::schedule::{reverse_steps, ReverseStep, VpSchedule};
use memodiff::testing::run::driver::{run, BatchSink, NoProgress, SampleConfig};
use memodiff::testing::run::measure::{MetricsSink, PosteriorPlan};

/// f32 unit roundoff.
const EPS: f64 = f32::EPSILON as f64 / 2.0;

/// The potentials `|x - s a_i|^2 / (2 sigma2)` (nats, f64) of every training point.
fn potentials(problem: &Problem, step: &ReverseStep, x: &[f32]) -> Vec<f64> {
    problem
        .dataset
        .points
        .chunks(problem.dataset.dim)
        .map(|a| {
            a.iter()
                .zip(x)
                .map(|(&a, &x)| (x as f64 - step.mean_scale * (a as f32) as f64).powi(2))
                .sum::<f64>()
                / (2.0 * step.sigma2)
        })
        .collect()
}

/// One step `k..k + 1` from `state` with the tap at `k`, for `rows` rows.
fn tapped_step(
    engine: &mut dyn Engine,
    problem: &Problem,
    first: u64,
    state: &[f32],
    k: usize,
    rows: usize,
) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut next = state.to_vec();
    let (mut w, mut a) = (vec![f32::NAN; rows], vec![u32::MAX; rows]);
    engine
        .advance_batch_tapped(
            problem,
            BatchWork::new(first, None, &mut next, k..k + 1),
            &mut PosteriorTap {
                steps: &[k],
                rows,
                max_weight: &mut w,
                argmax: &mut a,
            },
        )
        .unwrap();
    (next, w, a)
}

fn gpu(test: &str) -> Option<GpuEngine> {
    gpu_engine(test)
}

/// At every tapped step, from the same f32 positions (the cpu engine's trajectory), the
/// GPU tap and the cpu tap agree: the largest weight within `tolerance` below, the argmax
/// equal except at near-ties, which are counted. And the GPU's tapped step moves the
/// particles exactly as its untapped step does.
///
/// Tolerance of the largest weight `W = 1 / sum_i exp(p_max - p_i)`: each engine rounds a
/// potential `p_i` (a sum of D squares, scaled) to within about `(D + 4) eps p_i`, so the
/// exponent `p_max - p_i` of every weight that counts (`p_i - p_max` below about 30 nats:
/// the rest is below 2^-40 of the max) is off by at most `(D + 4) eps 2 (p_max + 30)`,
/// which is the relative error it gives the sum; the sum of N weights adds `N eps`; the
/// exponentials, `64 eps` (WGSL allows exp2 3 + 2|x| ulp). Twice that: two engines.
#[test]
fn gpu_tap_agrees_with_the_cpu_tap() {
    let Some(mut gpu) = gpu("gpu_tap_agrees_with_the_cpu_tap") else {
        return;
    };
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    // (D, N, particles, rows, sampler, training points per dispatch): D <= 4 simple and
    // tiled, D > 4; chunked so that the argmax crosses dispatches.
    let cases = [
        (
            2usize,
            600usize,
            300usize,
            237usize,
            SamplerKind::Em,
            Some(256),
        ),
        (2, 40, 300, 300, SamplerKind::Heun, None),
        (2, 300, 200, 150, SamplerKind::Heun, Some(256)),
        (24, 600, 100, 77, SamplerKind::Em, Some(256)),
        (24, 300, 100, 100, SamplerKind::Heun, None),
    ];
    let taps = [0usize, 1, 40, 80, 97, 98];
    for (dim, n_train, n, rows, sampler, chunk) in cases {
        let name = format!("D = {dim}, N = {n_train}, {sampler:?}, chunk {chunk:?}");
        let dataset = scattered(n_train, dim, 40 + dim as u64);
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 77,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler,
            patch: None,
        };
        gpu.set_chunk_points(chunk);
        assert!(gpu.posterior_tap(&problem), "{name}: the GPU engine taps");
        let mut cpu = CpuEngine::new();
        let first = (1u64 << 32) - 50;
        let (mut init, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
        cpu.advance_batch(
            &problem,
            BatchWork::new(first, Some(&mut init), &mut state, 0..0),
        )
        .unwrap();
        let (mut at, mut worst, mut worst_f64, mut ties) = (0, 0f64, 0f64, 0usize);
        for &k in &taps {
            cpu.advance_batch(&problem, BatchWork::new(first, None, &mut state, at..k))
                .unwrap();
            at = k;
            let (gpu_next, gpu_w, gpu_a) = tapped_step(&mut gpu, &problem, first, &state, k, rows);
            let (_, cpu_w, cpu_a) = tapped_step(&mut cpu, &problem, first, &state, k, rows);
            let mut untapped = state.clone();
            gpu.advance_batch(
                &problem,
                BatchWork::new(first, None, &mut untapped, k..k + 1),
            )
            .unwrap();
            assert!(
                gpu_next
                    .iter()
                    .zip(&untapped)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}, step {k}: the tap moved the particles"
            );
            for r in 0..rows {
                let pots = potentials(&problem, &steps[k], &state[r * dim..(r + 1) * dim]);
                let best = pots.iter().cloned().fold(f64::INFINITY, f64::min);
                let exact = 1.0 / pots.iter().map(|p| (best - p).exp()).sum::<f64>();
                let tolerance =
                    2.0 * ((dim as f64 + 4.0) * 2.0 * (best + 30.0) + n_train as f64 + 64.0) * EPS;
                let (g, c) = (gpu_w[r] as f64, cpu_w[r] as f64);
                let error = (g - c).abs() / c;
                assert!(
                    error <= tolerance,
                    "{name}, step {k}, row {r}: max weight {g} (gpu) vs {c} (cpu), \
                     relative {error:e} over {tolerance:e}"
                );
                worst = worst.max(error / tolerance);
                worst_f64 = worst_f64.max((g - exact).abs() / exact);
                if gpu_a[r] != cpu_a[r] {
                    // A near-tie: potentials within what f32 evaluation can order.
                    let (pg, pc) = (pots[gpu_a[r] as usize], pots[cpu_a[r] as usize]);
                    assert!(
                        (pg - pc).abs() <= 1e-4 * pg.max(pc).max(1.0),
                        "{name}, step {k}, row {r}: argmax {} (gpu) vs {} (cpu), \
                         potentials {pg} vs {pc}",
                        gpu_a[r],
                        cpu_a[r]
                    );
                    ties += 1;
                }
            }
        }
        eprintln!(
            "{name}: worst max-weight difference {worst:.3} of the tolerance, worst against \
             f64 {worst_f64:e}; {ties} near-tie argmax differences in {}",
            rows * taps.len()
        );
        assert!(ties <= rows * taps.len() / 100, "{name}: {ties} near-ties");
    }
    gpu.set_chunk_points(None);
}

/// A whole tapped run in the sampler's ranges (several tapped steps per call, one call
/// per range) leaves the positions of the untapped run and reports, bit for bit, what
/// single tapped steps from the same positions report: the tap buffer's regions, rows and
/// step slots land where they belong.
#[test]
fn gpu_tapped_run_matches_its_single_steps() {
    let Some(mut gpu) = gpu("gpu_tapped_run_matches_its_single_steps") else {
        return;
    };
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let taps = [0usize, 1, 10, 45, 80, 97, 98];
    for (dim, n_train, n, sampler) in [
        (2usize, 300usize, 300usize, SamplerKind::Em),
        (3, 500, 100, SamplerKind::Heun),
        (40, 200, 70, SamplerKind::Em),
    ] {
        let dataset = scattered(n_train, dim, 9);
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 5,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler,
            patch: None,
        };
        let rows = n - 13;
        let first = 1000;
        let (mut initial, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
        let mut weights = vec![f32::NAN; rows * taps.len()];
        let mut argmax = vec![u32::MAX; rows * taps.len()];
        for (range, init) in [(0..30, true), (30..steps.len(), false)] {
            gpu.advance_batch_tapped(
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
        // The untapped run, stopped at each tap to take a single tapped step there.
        let mut plain = vec![0f32; n * dim];
        let mut at = 0;
        for (j, &k) in taps.iter().enumerate() {
            gpu.advance_batch(
                &problem,
                BatchWork::new(
                    first,
                    (at == 0).then_some(&mut initial[..]),
                    &mut plain,
                    at..k,
                ),
            )
            .unwrap();
            at = k;
            let (_, w, a) = tapped_step(&mut gpu, &problem, first, &plain, k, rows);
            for r in 0..rows {
                assert_eq!(
                    (
                        weights[r * taps.len() + j].to_bits(),
                        argmax[r * taps.len() + j]
                    ),
                    (w[r].to_bits(), a[r]),
                    "D = {dim} {sampler:?}: row {r}, step {k}"
                );
            }
        }
        gpu.advance_batch(
            &problem,
            BatchWork::new(first, None, &mut plain, at..steps.len()),
        )
        .unwrap();
        assert!(
            state
                .iter()
                .zip(&plain)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "D = {dim} {sampler:?}: the tapped run moved the particles"
        );
    }
}

/// A metrics sink that counts how the posterior reached it, and can refuse the tap
/// (`tap: false`: the sampler then stops at the recorded steps and the sink measures the
/// posterior with the f64 pass over all training points, `posterior::max_weights`).
struct Counting {
    metrics: MetricsSink,
    tap: bool,
    observed: usize,
    tapped: usize,
}

impl BatchSink for Counting {
    fn consume(&mut self, first: u64, initial: &[f32], samples: &[f32]) -> memodiff::Result<()> {
        self.metrics.consume(first, initial, samples)
    }
    fn observe_steps(&self) -> Vec<usize> {
        self.metrics.observe_steps()
    }
    fn observe(&mut self, first: u64, step: usize, state: &[f32]) -> memodiff::Result<()> {
        self.observed += 1;
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
        self.tapped += 1;
        self.metrics.observe_tapped(first, step, max_weight, argmax)
    }
}

/// `memodiff sample --backend gpu` measures the posterior from the engine's tap, no longer
/// by the f64 fallback pass: a GPU run's posterior concentration matches the fallback's on
/// the same trajectories (mean largest weight within the f32 tap's error, argmax-is-final
/// fractions equal up to near-ties), and with the tap only the last record (the state
/// at tau = 0, no score evaluation) goes through `observe`.
#[test]
fn gpu_sampler_posterior_comes_from_the_tap() {
    let Some(mut gpu) = gpu("gpu_sampler_posterior_comes_from_the_tap") else {
        return;
    };
    for (dim, n_train, particles, batch) in
        [(2usize, 500usize, 3000u64, 1100usize), (24, 300, 400, 150)]
    {
        let mut config = SampleConfig::new(scattered(n_train, dim, 21));
        config.particles = particles;
        config.batch = Some(batch);
        let steps = config.reverse_steps();
        let problem = Problem {
            dataset: &config.dataset,
            steps: &steps,
            seed: config.seed,
            initial_std: config.schedule.sigma2(1.0).sqrt(),
            schedule: config.schedule,
            sampler: config.sampler,
            patch: None,
        };
        assert!(
            gpu.posterior_tap(&problem),
            "D = {dim}: the GPU engine taps"
        );
        let tracked = particles - 100;
        let plan = PosteriorPlan::spread(steps.len(), 10, tracked);
        let mut summaries = Vec::new();
        for tap in [true, false] {
            let mut sink = Counting {
                metrics: MetricsSink::new(&config, Some(plan)).unwrap(),
                tap,
                observed: 0,
                tapped: 0,
            };
            run(&config, &mut gpu, &mut sink, &mut NoProgress).unwrap();
            let records = sink.metrics.observe_steps().len();
            let batches = particles.div_ceil(batch as u64) as usize;
            // Batches past the tracked particles record nothing.
            let tracked_batches = tracked.div_ceil(batch as u64) as usize;
            if tap {
                assert_eq!(
                    (sink.observed, sink.tapped),
                    (batches, (records - 1) * tracked_batches),
                    "D = {dim}: with the tap, only the final state is observed"
                );
            } else {
                assert_eq!((sink.observed, sink.tapped), (records * batches, 0));
            }
            summaries.push(sink.metrics.counter.summary().posterior.unwrap());
        }
        let (tapped, fallback) = (&summaries[0], &summaries[1]);
        assert_eq!(tapped.len(), fallback.len());
        for (t, f) in tapped.iter().zip(fallback) {
            assert_eq!((t.step, t.particles), (f.step, f.particles));
            assert_eq!(t.particles, tracked);
            // Per particle the f32 tap is within 1e-3 relative of the f64 weight (the
            // bound of gpu_tap_agrees_with_the_cpu_tap at these sizes); the run.json
            // counts also round each weight to 2^-32.
            assert!(
                (t.mean_max_weight - f.mean_max_weight).abs() <= 1e-3 * f.mean_max_weight,
                "D = {dim}, step {}: mean max weight {} (tap) vs {} (f64)",
                t.step,
                t.mean_max_weight,
                f.mean_max_weight
            );
            // At most a few particles in a thousand at a near-tie of the top two points.
            let apart = (t.fraction_argmax_final - f.fraction_argmax_final).abs();
            assert!(
                apart * tracked as f64 <= (tracked as f64 * 2e-3).max(1.0),
                "D = {dim}, step {}: argmax-is-final {} (tap) vs {} (f64)",
                t.step,
                t.fraction_argmax_final,
                f.fraction_argmax_final
            );
            eprintln!(
                "D = {dim}, step {}: mean max weight {:.6} vs {:.6}, argmax final {:.4} vs {:.4}",
                t.step,
                t.mean_max_weight,
                f.mean_max_weight,
                t.fraction_argmax_final,
                f.fraction_argmax_final
            );
        }
    }
}
