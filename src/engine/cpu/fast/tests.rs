//! Tests of the SIMD kernel: against the scalar twins, the tap, the vectorised noise.

use super::*;
const LANES: usize = 32;
use crate::engine::cpu::{em_step::em_step, init_noise::init_noise, score};
use crate::model::philox::{philox4x32_10, seed_key};
use crate::model::schedule::{reverse_steps, VpSchedule};
use rayon::prelude::*;

/// SplitMix64, for reproducible test data without a dependency.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn particle_normals_match_the_scalar_generator() {
    let key = seed_key(7);
    let mut worst = 0f32;
    for (particle, step, dim) in [
        (0u64, 0u32, 5usize),
        (1, 3, 64),
        (1 << 33 | 5, 98, 67),
        (123_456_789, 50, 784),
        (u64::MAX, 1, 3072),
    ] {
        let mut fast = vec![f32::NAN; dim];
        particle_normals::<true>(particle, step, key, &mut fast);
        let mut plain = vec![f32::NAN; dim];
        particle_normals::<false>(particle, step, key, &mut plain);
        for (b, (f, p)) in fast.chunks(4).zip(plain.chunks(4)).enumerate() {
            let want = crate::model::philox::normals4_f32(philox4x32_10(
                crate::model::philox::counter(particle, step, b as u32),
                key,
            ));
            for k in 0..f.len() {
                worst = worst
                    .max((f[k] - want[k]).abs())
                    .max((p[k] - want[k]).abs());
            }
        }
    }
    // The polynomial ln and sincos against libm's, as for the initial noise.
    assert!(worst <= 1e-5, "largest difference {worst}");
}

#[test]
fn philox_lanes_match_the_scalar_generator_bit_for_bit() {
    let mut rng = Mix(1);
    let kat: [([u32; 4], [u32; 2]); 3] = [
        ([0; 4], [0; 2]),
        ([u32::MAX; 4], [u32::MAX; 2]),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
        ),
    ];
    for trial in 0..200 {
        let key = if trial < 3 {
            kat[trial].1
        } else {
            [rng.next() as u32, rng.next() as u32]
        };
        let mut ctr = [[0u64; LANES]; 4];
        let mut scalar = Vec::new();
        for l in 0..LANES {
            let c: [u32; 4] = if trial < 3 && l == 0 {
                kat[trial].0
            } else {
                [
                    rng.next() as u32,
                    rng.next() as u32,
                    rng.next() as u32,
                    rng.next() as u32,
                ]
            };
            for w in 0..4 {
                // Garbage in the high halves must not matter.
                ctr[w][l] = c[w] as u64 | (rng.next() << 32);
            }
            scalar.push(philox4x32_10(c, key));
        }
        let lanes = philox_lanes(ctr, key);
        for (l, expected) in scalar.iter().enumerate() {
            for w in 0..4 {
                assert_eq!(
                    lanes[w][l] as u32, expected[w],
                    "trial {trial} lane {l} word {w}"
                );
            }
        }
    }
}

fn twin_run(
    training: &[[f32; 4]],
    steps: &[StepParams],
    seed: u64,
    initial_std: f32,
    dim: usize,
    first: u64,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let particle = first + i as u64;
            let mut x = init_noise(seed, particle, initial_std);
            x[dim..].fill(0.0);
            let x0 = x[..dim].to_vec();
            for step in steps {
                x = em_step(x, dim, training, step, seed, particle);
            }
            (x0, x[..dim].to_vec())
        })
        .collect();
    let initial = rows.iter().flat_map(|r| r.0.clone()).collect();
    let samples = rows.iter().flat_map(|r| r.1.clone()).collect();
    (initial, samples)
}

/// `--sampler heun` on the SIMD engine against the scalar twin `heun_half_step`, on
/// every ISA, D = 1..4, from a particle index above 2^32.
#[test]
fn heun_matches_the_twin() {
    use crate::engine::cpu::heun_step::heun_half_step;
    use crate::engine::records::HeunParams;
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    let halves: Vec<HeunParams> = (0..steps.len())
        .flat_map(|k| HeunParams::for_step(&steps, k))
        .collect();
    let fast_steps: Vec<FastStep> = halves.iter().map(FastStep::heun).collect();
    let seed = 77;
    let initial_std = schedule.sigma2(1.0).sqrt() as f32;
    let first = (1u64 << 32) - 5;
    let n = 1_000;
    for dim in 1..=4 {
        let training = score::pad_training(&random_points(50, dim, 3 + dim as u64), dim);
        let twin: Vec<f32> = (0..n)
            .flat_map(|i| {
                let mut x = init_noise(seed, first + i as u64, initial_std);
                x[dim..].fill(0.0);
                let mut partial = [0.0; 4];
                for half in &halves {
                    x = heun_half_step(x, dim, &training, half, &mut partial);
                }
                x[..dim].to_vec()
            })
            .collect();
        let kernel = Kernel {
            dim,
            training: &training,
            steps: &fast_steps,
            key: seed_key(seed),
            initial_std,
        };
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let (mut init, mut out) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            run(&kernel, isa, first, &mut init, &mut out);
            let bad = (0..n)
                .filter(|&i| (0..dim).any(|d| (out[i * dim + d] - twin[i * dim + d]).abs() > 1e-3))
                .count();
            assert!(
                bad * 1000 <= n,
                "D = {dim} {}: {bad} of {n} beyond 1e-3",
                isa.name()
            );
        }
    }
}

fn compare(name: &str, points: &[f64], dim: usize, n: usize) {
    let schedule = VpSchedule::default();
    let steps: Vec<StepParams> = reverse_steps(&schedule, 100)
        .iter()
        .map(StepParams::from_step)
        .collect();
    let fast_steps: Vec<FastStep> = steps.iter().map(FastStep::new).collect();
    let training = score::pad_training(points, dim);
    let seed = 0x1234_5678_9abc_def0;
    let initial_std = schedule.sigma2(1.0).sqrt() as f32;
    // A first particle index above 2^32 exercises the counter's high word.
    let first = (1u64 << 32) - 7;
    let (twin_init, twin_out) = twin_run(&training, &steps, seed, initial_std, dim, first, n);
    let kernel = Kernel {
        dim,
        training: &training,
        steps: &fast_steps,
        key: seed_key(seed),
        initial_std,
    };
    for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
        let mut init = vec![0.0; n * dim];
        let mut out = vec![0.0; n * dim];
        // Uneven pieces: results must not depend on where a chunk starts.
        let cut = (n / 3) * dim;
        let (i0, i1) = init.split_at_mut(cut);
        let (o0, o1) = out.split_at_mut(cut);
        run(&kernel, isa, first, i0, o0);
        run(&kernel, isa, first + (cut / dim) as u64, i1, o1);
        assert!(
            out.iter().all(|v| v.is_finite()),
            "{name} {}: non-finite",
            isa.name()
        );
        let init_err = init
            .iter()
            .zip(&twin_init)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            init_err <= 1e-5,
            "{name} {}: initial noise off by {init_err}",
            isa.name()
        );
        let errs: Vec<f32> = out
            .chunks(dim)
            .zip(twin_out.chunks(dim))
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max)
            })
            .collect();
        let bad = errs.iter().filter(|&&e| e > 1e-3).count();
        let mut sorted = errs.clone();
        sorted.sort_by(f32::total_cmp);
        eprintln!(
            "{name} D={dim} {}: init err {init_err:e}, median {:e}, p99.9 {:e}, max {:e}, {bad}/{n} beyond 1e-3",
            isa.name(),
            sorted[n / 2],
            sorted[n * 999 / 1000],
            sorted[n - 1]
        );
        assert!(
            bad * 1000 <= n,
            "{name} D={dim} {}: {bad} of {n} particles beyond 1e-3",
            isa.name()
        );
    }
}

fn random_points(n: usize, dim: usize, seed: u64) -> Vec<f64> {
    let mut rng = Mix(seed);
    (0..n * dim).map(|_| 2.0 * rng.unit() - 1.0).collect()
}

#[test]
fn matches_the_twin_on_the_circle() {
    let circle: Vec<f64> = (0..8)
        .flat_map(|k| {
            let a = std::f64::consts::TAU * k as f64 / 8.0;
            [a.cos(), a.sin()]
        })
        .collect();
    compare("circle:8", &circle, 2, 4099);
}

#[test]
fn matches_the_twin_on_random_training_sets() {
    for dim in 1..=4 {
        for (n_train, particles) in [(1, 2000), (17, 3000), (1000, 2000), (65, 1000), (257, 1000)] {
            let points = random_points(n_train, dim, 7 + dim as u64);
            compare(&format!("random N={n_train}"), &points, dim, particles);
        }
    }
}

#[test]
fn step_ranges_give_the_same_bits_as_one_go_on_every_isa() {
    let schedule = VpSchedule::default();
    let fast_steps: Vec<FastStep> = reverse_steps(&schedule, 60)
        .iter()
        .map(|s| FastStep::new(&StepParams::from_step(s)))
        .collect();
    for dim in 1..=4 {
        let training = score::pad_training(&random_points(200, dim, 5), dim);
        let kernel = |steps| Kernel {
            dim,
            training: &training,
            steps,
            key: seed_key(99),
            initial_std: schedule.sigma2(1.0).sqrt() as f32,
        };
        let n = 1000; // not a multiple of any chunk
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let (mut init, mut whole) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            run(&kernel(&fast_steps), isa, 77, &mut init, &mut whole);
            let (mut init2, mut state) = (vec![0.0; n * dim], vec![0.0; n * dim]);
            advance(
                &kernel(&fast_steps[..0]),
                isa,
                77,
                Some(&mut init2),
                &mut state,
            );
            assert_eq!(init, init2);
            for range in [0..7, 7..8, 8..40, 40..59] {
                advance(&kernel(&fast_steps[range]), isa, 77, None, &mut state);
            }
            assert_eq!(whole, state, "D={dim} {}", isa.name());
        }
    }
}

#[test]
fn far_particles_stay_finite() {
    let schedule = VpSchedule::default();
    let steps: Vec<StepParams> = reverse_steps(&schedule, 100)
        .iter()
        .map(StepParams::from_step)
        .collect();
    let last = FastStep::new(steps.last().unwrap());
    let training = score::pad_training(&random_points(300, 2, 3), 2);
    let mut tile = [[0.0; LANES]; MAX_TILE];
    for far in [1.0e3f32, 1.0e19, 1.0e30, f32::MAX] {
        let mut x = [[0.0f32; LANES]; 2];
        for l in 0..LANES {
            x[0][l] = if l % 2 == 0 { far } else { -far };
            x[1][l] = far * (l as f32 / 8.0 - 1.0);
        }
        let m = weighted_mean::<2, false, LANES, false>(
            &x,
            &training,
            &last,
            &mut tile,
            &mut Top::default(),
        );
        for l in 0..LANES {
            let twin = score::weighted_training_mean(
                [x[0][l], x[1][l], 0.0, 0.0],
                &training,
                steps.last().unwrap().mean_scale,
                steps.last().unwrap().inv_two_sigma2,
            );
            assert!(
                m[0][l].is_finite() && m[1][l].is_finite(),
                "|x| = {far}: {m:?}"
            );
            if far == 1.0e3 {
                assert!((m[0][l] - twin[0]).abs() < 1e-4 && (m[1][l] - twin[1]).abs() < 1e-4);
            }
        }
    }
}
