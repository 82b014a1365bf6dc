//! The SIMD CPU kernel: the same arithmetic as the scalar twins (`em_step.rs`,
//! `init_noise.rs`, `score.rs`), reorganised for throughput.
//!
//! - Structure of arrays: a *chunk* of [`LANES`] = 16 particles holds each coordinate
//!   in a `[f32; 16]` lane array, so every operation is one 512-bit (or two 256-bit)
//!   vector instruction. Lane math is written as plain loops over fixed-size arrays in
//!   `#[inline(always)]` generic functions; LLVM vectorizes them inside the
//!   `#[target_feature]` wrappers below ([`Isa`] picks one at run time, no
//!   `-C target-cpu=native` needed).
//! - The time loop runs *inside* the chunk loop: a chunk's state stays in registers for
//!   all steps, and the only memory traffic is reading the training points.
//! - Softmax by tiles of [`TILE`] training points: the base-2 potentials of a tile go to
//!   a small L1 buffer with their minimum, the running minimum is updated (and the sums
//!   rescaled) once per tile, then the weights are exponentiated and accumulated. For
//!   N <= `TILE` (the default N = 8) that is an exact two-pass softmax with no rescale.
//! - Potentials in base 2 from pre-scaled coordinates: with `r = sqrt(log2(e) / (2
//!   sigma2))`, `E_i = |r x - (r s) x_i|^2` is the twin's `-pot_i` times `log2 e`, so the
//!   weights are `2^(min E - E_i)` and the exponential needs no argument scaling. This is
//!   the direct (not the expanded `x·x_i`) form: no cancellation, the same accuracy
//!   as the twin's. Potentials are clamped to `f32::MAX` like the twin's `-FLT_MAX`.
//! - Noise: Philox4x32-10 on 16 lanes with the 32-bit words held in `u64` lanes
//!   (one `vpmuludq` gives the whole 64-bit product; the high halves of the words are
//!   garbage that is never read), bit-identical to `crate::philox`; Box–Muller with the
//!   polynomial `ln` and `sincos` of `approx.rs`, only for the normals a step uses.

use super::approx::{exp2, fmin, ln, mad, sincos_turns};
use crate::params::StepParams;
use crate::philox::INITIAL_NOISE_STEP;

/// Particles per chunk: one AVX-512 register of f32.
pub const LANES: usize = 16;
/// Training points per softmax tile (potentials buffered in `TILE * 64` bytes of L1).
pub const TILE: usize = 128;

type Lane = [f32; LANES];
type ULane = [u64; LANES];

const PHILOX_M0: u64 = 0xD251_1F53;
const PHILOX_M1: u64 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Per-step coefficients of the fast kernel, derived from the twin's [`StepParams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastStep {
    pub keep_coeff: f32,
    pub mean_coeff: f32,
    pub noise_coeff: f32,
    /// `sqrt(inv_two_sigma2 · log2 e)`: coordinates times this give base-2 potentials.
    pub scale: f32,
    /// `mean_scale · scale`, applied to the training points.
    pub train_scale: f32,
    pub step_index: u32,
}

impl FastStep {
    pub fn new(step: &StepParams) -> Self {
        let scale = (step.inv_two_sigma2 as f64 * std::f64::consts::LOG2_E).sqrt();
        Self {
            keep_coeff: step.keep_coeff,
            mean_coeff: step.mean_coeff,
            noise_coeff: step.noise_coeff,
            scale: scale as f32,
            train_scale: (step.mean_scale as f64 * scale) as f32,
            step_index: step.step_index,
        }
    }
}

/// Everything a chunk needs: shared read-only by all threads.
#[derive(Debug, Clone, Copy)]
pub struct Kernel<'a> {
    /// Dimension D, 1..=4.
    pub dim: usize,
    /// Training points padded to 4 lanes (`score::pad_training`), at least one.
    pub training: &'a [[f32; 4]],
    pub steps: &'a [FastStep],
    /// The Philox key, `philox::seed_key(seed)`.
    pub key: [u32; 2],
    /// `sqrt(sigma2(1))`.
    pub initial_std: f32,
}

/// Instruction sets the kernel is compiled for; [`Isa::detect`] picks the best one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/VL/DQ (16 f32 per register) with FMA.
    Avx512,
    /// AVX2 with FMA (two registers per lane array).
    Avx2,
    /// Whatever the build targets (SSE2 on default x86-64), no FMA.
    Portable,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Whether this CPU can run the variant.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest variant this CPU runs.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// Run particles `first_particle ..` (n = `samples.len() / dim`) through all steps on
/// the calling thread, writing their initial noise and final positions (row-major).
///
/// Panics if `isa` is not available on this CPU or the slices do not match.
pub fn run(
    kernel: &Kernel,
    isa: Isa,
    first_particle: u64,
    initial: &mut [f32],
    samples: &mut [f32],
) {
    assert!(
        (1..=4).contains(&kernel.dim),
        "dimension {} not in 1..=4",
        kernel.dim
    );
    assert!(!kernel.training.is_empty(), "empty training set");
    assert_eq!(initial.len(), samples.len());
    assert_eq!(samples.len() % kernel.dim, 0);
    assert!(
        isa.available(),
        "{} is not available on this CPU",
        isa.name()
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa.available()` checked the features the wrapper enables.
        Isa::Avx512 => unsafe { run_avx512(kernel, first_particle, initial, samples) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { run_avx2(kernel, first_particle, initial, samples) },
        _ => run_portable(kernel, first_particle, initial, samples),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma,bmi2")]
fn run_avx512(kernel: &Kernel, first: u64, initial: &mut [f32], samples: &mut [f32]) {
    run_any_dim::<true>(kernel, first, initial, samples)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2(kernel: &Kernel, first: u64, initial: &mut [f32], samples: &mut [f32]) {
    run_any_dim::<true>(kernel, first, initial, samples)
}

fn run_portable(kernel: &Kernel, first: u64, initial: &mut [f32], samples: &mut [f32]) {
    run_any_dim::<false>(kernel, first, initial, samples)
}

#[inline(always)]
fn run_any_dim<const FMA: bool>(
    kernel: &Kernel,
    first: u64,
    initial: &mut [f32],
    samples: &mut [f32],
) {
    match kernel.dim {
        1 => run_dim::<1, FMA>(kernel, first, initial, samples),
        2 => run_dim::<2, FMA>(kernel, first, initial, samples),
        3 => run_dim::<3, FMA>(kernel, first, initial, samples),
        _ => run_dim::<4, FMA>(kernel, first, initial, samples),
    }
}

#[inline(always)]
fn run_dim<const D: usize, const FMA: bool>(
    kernel: &Kernel,
    first: u64,
    initial: &mut [f32],
    samples: &mut [f32],
) {
    let mut tile = [[0.0f32; LANES]; TILE];
    let chunks = initial
        .chunks_mut(LANES * D)
        .zip(samples.chunks_mut(LANES * D));
    for (c, (init_out, out)) in chunks.enumerate() {
        let base = first.wrapping_add((c * LANES) as u64);
        run_chunk::<D, FMA>(kernel, base, init_out, out, &mut tile);
    }
}

/// One chunk of up to 16 particles (`out.len() / D` of them; the lanes beyond are
/// computed and dropped) from the initial noise through every step.
#[inline(always)]
fn run_chunk<const D: usize, const FMA: bool>(
    kernel: &Kernel,
    base: u64,
    init_out: &mut [f32],
    out: &mut [f32],
    tile: &mut [Lane; TILE],
) {
    let mut lo = [0u64; LANES];
    let mut hi = [0u64; LANES];
    for l in 0..LANES {
        let p = base.wrapping_add(l as u64);
        lo[l] = p & 0xFFFF_FFFF;
        hi[l] = p >> 32;
    }
    let z = normals::<D, FMA>(&lo, &hi, INITIAL_NOISE_STEP, kernel.key);
    let mut x = [[0.0f32; LANES]; D];
    for d in 0..D {
        for l in 0..LANES {
            x[d][l] = kernel.initial_std * z[d][l];
        }
    }
    store(&x, init_out);
    for step in kernel.steps {
        let m = weighted_mean::<D, FMA>(&x, kernel.training, step, tile);
        let z = normals::<D, FMA>(&lo, &hi, step.step_index, kernel.key);
        for d in 0..D {
            for l in 0..LANES {
                let kept = step.keep_coeff * x[d][l];
                x[d][l] = mad::<FMA>(
                    step.noise_coeff,
                    z[d][l],
                    mad::<FMA>(step.mean_coeff, m[d][l], kept),
                );
            }
        }
    }
    store(&x, out);
}

/// Write lane arrays back as rows of `D` (as many rows as `out` holds).
#[inline(always)]
fn store<const D: usize>(x: &[Lane; D], out: &mut [f32]) {
    for (l, row) in out.chunks_exact_mut(D).enumerate() {
        for d in 0..D {
            row[d] = x[d][l];
        }
    }
}

/// Softmax-weighted mean of the training points for 16 particles: the twin's
/// `score::weighted_training_mean`, by tiles with a running minimum of base-2 energies.
#[inline(always)]
fn weighted_mean<const D: usize, const FMA: bool>(
    x: &[Lane; D],
    training: &[[f32; 4]],
    step: &FastStep,
    tile: &mut [Lane; TILE],
) -> [Lane; D] {
    let mut xs = [[0.0f32; LANES]; D];
    for d in 0..D {
        for l in 0..LANES {
            xs[d][l] = x[d][l] * step.scale;
        }
    }
    let neg_train_scale = -step.train_scale;
    let mut run_min = [0.0f32; LANES];
    let mut weight_sum = [0.0f32; LANES];
    let mut acc = [[0.0f32; LANES]; D];
    for (b, block) in training.chunks(TILE).enumerate() {
        // Pass 1: energies E = |r x - r s x_i|^2 (clamped, NaN -> f32::MAX) and their min.
        let mut block_min = [f32::MAX; LANES];
        for (energy, xi) in tile.iter_mut().zip(block) {
            let mut e = [0.0f32; LANES];
            for d in 0..D {
                for l in 0..LANES {
                    let t = mad::<FMA>(neg_train_scale, xi[d], xs[d][l]);
                    e[l] = if d == 0 {
                        t * t
                    } else {
                        mad::<FMA>(t, t, e[l])
                    };
                }
            }
            for l in 0..LANES {
                let v = fmin(e[l], f32::MAX);
                energy[l] = v;
                block_min[l] = fmin(block_min[l], v);
            }
        }
        if b == 0 {
            run_min = block_min;
        } else {
            // Online softmax by tiles: rescale what was summed against the old minimum.
            for l in 0..LANES {
                let new_min = fmin(run_min[l], block_min[l]);
                let rescale = exp2::<FMA>(new_min - run_min[l]);
                weight_sum[l] *= rescale;
                for acc_d in acc.iter_mut() {
                    acc_d[l] *= rescale;
                }
                run_min[l] = new_min;
            }
        }
        // Pass 2: weights 2^(min - E) <= 1 and the weighted sums.
        for (energy, xi) in tile.iter().zip(block) {
            for l in 0..LANES {
                let w = exp2::<FMA>(run_min[l] - energy[l]);
                weight_sum[l] += w;
                for d in 0..D {
                    acc[d][l] = mad::<FMA>(w, xi[d], acc[d][l]);
                }
            }
        }
    }
    for l in 0..LANES {
        let inv = 1.0 / weight_sum[l];
        for acc_d in acc.iter_mut() {
            acc_d[l] *= inv;
        }
    }
    acc
}

/// Philox4x32-10 on 16 counters at once. Words live in the low halves of `u64` lanes;
/// the high halves of the inputs are ignored and those of the outputs are garbage.
#[inline(always)]
pub(crate) fn philox_lanes(counter: [ULane; 4], key: [u32; 2]) -> [ULane; 4] {
    let mut c = counter;
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(PHILOX_W0);
            k1 = k1.wrapping_add(PHILOX_W1);
        }
        let mut next = [[0u64; LANES]; 4];
        for l in 0..LANES {
            let p0 = (c[0][l] & 0xFFFF_FFFF) * PHILOX_M0;
            let p1 = (c[2][l] & 0xFFFF_FFFF) * PHILOX_M1;
            next[0][l] = (p1 >> 32) ^ c[1][l] ^ k0 as u64;
            next[1][l] = p1;
            next[2][l] = (p0 >> 32) ^ c[3][l] ^ k1 as u64;
            next[3][l] = p0;
        }
        c = next;
    }
    c
}

/// `philox::uniform_f32` of the low word of a lane.
#[inline(always)]
fn uniform(word: u64) -> f32 {
    (((word as u32) >> 8) as i32 as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The first `D` normals of lane block 0 of 16 particles at `step` (Box–Muller in the
/// twin's order; the second pair only when `D > 2`). Lanes `D..4` are unspecified.
#[inline(always)]
fn normals<const D: usize, const FMA: bool>(
    lo: &ULane,
    hi: &ULane,
    step: u32,
    key: [u32; 2],
) -> [Lane; 4] {
    let words = philox_lanes([*lo, *hi, [step as u64; LANES], [0; LANES]], key);
    let mut z = [[0.0f32; LANES]; 4];
    for pair in 0..D.div_ceil(2) {
        for l in 0..LANES {
            let u0 = uniform(words[2 * pair][l]);
            let u1 = uniform(words[2 * pair + 1][l]);
            let r = (-2.0 * ln::<FMA>(u0)).sqrt();
            let (s, c) = sincos_turns::<FMA>(u1);
            z[2 * pair][l] = r * c;
            z[2 * pair + 1][l] = r * s;
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{em_step::em_step, init_noise::init_noise, score};
    use crate::philox::{philox4x32_10, seed_key};
    use crate::schedule::{reverse_steps, VpSchedule};
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
            for (n_train, particles) in [(1, 2000), (17, 3000), (1000, 2000), (TILE + 1, 2000)] {
                let points = random_points(n_train, dim, 7 + dim as u64);
                compare(&format!("random N={n_train}"), &points, dim, particles);
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
        let mut tile = [[0.0; LANES]; TILE];
        for far in [1.0e3f32, 1.0e19, 1.0e30, f32::MAX] {
            let mut x = [[0.0f32; LANES]; 2];
            for l in 0..LANES {
                x[0][l] = if l % 2 == 0 { far } else { -far };
                x[1][l] = far * (l as f32 / 8.0 - 1.0);
            }
            let m = weighted_mean::<2, false>(&x, &training, &last, &mut tile);
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
}
