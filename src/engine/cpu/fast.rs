//! The SIMD CPU kernel: the same arithmetic as the scalar twins (`em_step.rs`,
//! `init_noise.rs`, `score.rs`), reorganised for throughput.
//!
//! One algorithm in one file (chunks, the online softmax with its posterior tap, the
//! vectorised noise and the per-ISA builds of all of it); its tests are in `fast/tests.rs`.
//!
//! - Structure of arrays: a *chunk* of `L` particles (64 with AVX-512, 32 with AVX2 or
//!   without either) holds each coordinate in an `[f32; L]` lane array, i.e. 4 vector
//!   registers, so each operation is 4 independent vector instructions (enough to
//!   cover FMA/exp latencies). Lane math is written as plain loops over fixed-size arrays
//!   in `#[inline(always)]` generic functions; LLVM vectorizes them inside the
//!   per-ISA instances of `run_on` (`crate::isa`; [`Isa`] picks one at run time, no
//!   `-C target-cpu=native` needed).
//! - The time loop runs *inside* the chunk loop: a chunk's state stays in registers (or
//!   L1) for all steps, and the only other memory traffic is reading the training points.
//! - Softmax by tiles of [`tile_len`] training points: the base-2 potentials of a tile go
//!   to a 16 KiB L1 buffer with their minimum, the running minimum is updated (and the
//!   sums rescaled) once per tile, then the weights are exponentiated and accumulated.
//!   For N <= tile length (the default N = 8) that is an exact two-pass softmax with no
//!   rescale at all.
//! - Potentials in base 2 from pre-scaled coordinates: with `r = sqrt(log2(e) / (2
//!   sigma2))`, `E_i = |r x - (r s) x_i|^2` is the twin's `-pot_i` times `log2 e`, so the
//!   weights are `2^(min E - E_i)` and the exponential needs no argument scaling. This is
//!   the direct (not the expanded `x·x_i`) form: no cancellation, the same accuracy
//!   as the twin's. Potentials are clamped to `f32::MAX` like the twin's `-FLT_MAX`.
//! - Noise: Philox4x32-10 on all lanes with the 32-bit words held in `u64` lanes
//!   (one `vpmuludq` gives the whole 64-bit product; the high halves of the words are
//!   garbage that is never read), bit-identical to `crate::model::philox`, 32 lanes at a
//!   time; Box–Muller with the polynomial `ln` and `sincos` of `approx.rs`, only for the
//!   normals a step uses.
//! - A particle's result depends only on its index (never on its lane, chunk, work item
//!   or batch), so the engine stays batch-invariant; it differs from the scalar twin only
//!   by the polynomial ulps and FMA contraction (tests below: >= 99.9% of particles within
//!   1e-3 after 99 steps, initial noise within 1e-5).

use super::approx::{exp2, fmin, ln, mad, sincos_turns};
use crate::engine::records::{HeunParams, StepParams, StepRecord};
use crate::isa::{isa_dispatch, Isa};
use crate::model::philox::{reduced_turns, INITIAL_NOISE_STEP};

/// Particles per chunk, per instruction set: enough independent vector chains per
/// coordinate to hide latencies, few enough to stay in registers (AVX-512: 4 zmm per
/// coordinate, 32 registers; AVX2: 4 ymm, 16 registers). All three measured best on
/// the AMD EPYC (Zen 4) this was tuned on; results do not depend on them.
pub const AVX512_LANES: usize = 64;
pub const AVX2_LANES: usize = 32;
pub const PORTABLE_LANES: usize = 32;
/// The largest of them: work items are multiples of it.
pub const MAX_LANES: usize = 64;
/// Potentials buffered per softmax tile: 16 KiB, half of L1. A tile holds
/// `TILE_FLOATS / lanes` training points (64 for AVX-512, 128 for AVX2 and SSE2).
const TILE_FLOATS: usize = 4096;
/// Training points summed per group of tiles before joining the running total.
const GROUP_POINTS: usize = 1024;
/// The longest tile (for the narrowest chunk).
const MAX_TILE: usize = TILE_FLOATS / PORTABLE_LANES;

/// Training points per softmax tile for chunks of `lanes` particles.
pub const fn tile_len(lanes: usize) -> usize {
    TILE_FLOATS / lanes
}

const PHILOX_M0: u64 = 0xD251_1F53;
const PHILOX_M1: u64 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// What one record of `Kernel::steps` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// An Euler–Maruyama step (`em_step.rs`).
    Em,
    /// A Heun predictor half (`heun_step.rs`, phase 0): also keeps the corrector's known
    /// part `partial_x_coeff x + partial_mean_coeff m` for the next record.
    HeunPredictor,
    /// A Heun corrector half (phase 1): `x' = partial + keep_coeff x + mean_coeff m`.
    HeunCorrector,
}

/// Per-step coefficients of the fast kernel, derived from the twin's [`StepParams`] (or,
/// for `--sampler heun`, one per half step from [`HeunParams`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastStep {
    pub kind: StepKind,
    /// The coefficients of x, m and z (em), or of x and m (heun: `x_coeff`, `mean_coeff`).
    pub keep_coeff: f32,
    pub mean_coeff: f32,
    pub noise_coeff: f32,
    /// Heun predictor only: the coefficients of the corrector's known part.
    pub partial_x_coeff: f32,
    pub partial_mean_coeff: f32,
    /// `sqrt(inv_two_sigma2 · log2 e)`: coordinates times this give base-2 potentials.
    pub scale: f32,
    /// `mean_scale · scale`, applied to the training points.
    pub train_scale: f32,
    pub step_index: u32,
}

impl FastStep {
    /// The coefficients of one record of `records::StepRecords`.
    pub fn from_record(record: &StepRecord) -> Self {
        match record {
            StepRecord::Em(step) => Self::new(step),
            StepRecord::Heun(half) => Self::heun(half),
        }
    }

    pub fn new(step: &StepParams) -> Self {
        let scale = (step.inv_two_sigma2 as f64 * std::f64::consts::LOG2_E).sqrt();
        Self {
            kind: StepKind::Em,
            keep_coeff: step.keep_coeff,
            mean_coeff: step.mean_coeff,
            noise_coeff: step.noise_coeff,
            partial_x_coeff: 0.0,
            partial_mean_coeff: 0.0,
            scale: scale as f32,
            train_scale: (step.mean_scale as f64 * scale) as f32,
            step_index: step.step_index,
        }
    }

    /// One half of a Heun step (no noise).
    pub fn heun(half: &HeunParams) -> Self {
        let scale = (half.inv_two_sigma2 as f64 * std::f64::consts::LOG2_E).sqrt();
        Self {
            kind: if half.phase == 0 {
                StepKind::HeunPredictor
            } else {
                StepKind::HeunCorrector
            },
            keep_coeff: half.x_coeff,
            mean_coeff: half.mean_coeff,
            noise_coeff: 0.0,
            partial_x_coeff: half.partial_x_coeff,
            partial_mean_coeff: half.partial_mean_coeff,
            scale: scale as f32,
            train_scale: (half.mean_scale as f64 * scale) as f32,
            step_index: 0,
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

// One thread through all steps: the unit tests' single-threaded path (the engine runs work items).
#[cfg(test)]
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
    assert_eq!(initial.len(), samples.len());
    advance(kernel, isa, first_particle, Some(initial), samples)
}

/// The posterior tap of one call of [`advance_tapped`]: at the records of `kernel.steps`
/// that have a slot, the largest softmax weight (`1 / weight_sum`: the weights are
/// relative to the running maximum, whose own weight is 1) and the index of the training
/// point that set the running maximum (first of equal energies) of the call's first
/// `rows` particles.
#[derive(Debug)]
pub struct ChunkTap<'a> {
    /// One entry per record of `kernel.steps`: where its values go (`0..records`), if tapped.
    pub slots: &'a [Option<usize>],
    pub records: usize,
    pub rows: usize,
    /// `rows * records`, row-major (row `r`, slot `j` at `r * records + j`).
    pub max_weight: &'a mut [f32],
    pub argmax: &'a mut [u32],
}

/// Run particles `first_particle ..` (n = `state.len() / dim`) through `kernel.steps` on
/// the calling thread. With `initial`, they start from their initial noise (written
/// there); without, from the positions in `state`. `state` receives the positions after
/// the steps. A chunk's state is its lanes, stored and loaded exactly as f32, so running
/// the steps in several pieces gives the same bits as running them at once.
///
/// Panics if `isa` is not available on this CPU or the slices do not match.
pub fn advance(
    kernel: &Kernel,
    isa: Isa,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
) {
    advance_tapped(kernel, isa, first_particle, initial, state, None)
}

/// [`advance`], also filling `tap` (see [`ChunkTap`]). The positions are bit-identical to
/// those of [`advance`]: the tapped records run the same arithmetic and only also track
/// the argmax.
///
/// Panics as [`advance`] does, or if the tap does not match `kernel.steps` and `state`.
pub fn advance_tapped(
    kernel: &Kernel,
    isa: Isa,
    first_particle: u64,
    initial: Option<&mut [f32]>,
    state: &mut [f32],
    tap: Option<&mut ChunkTap>,
) {
    if let Some(tap) = &tap {
        assert_eq!(
            tap.slots.len(),
            kernel.steps.len(),
            "one tap slot per record"
        );
        assert!(tap.rows <= state.len() / kernel.dim.max(1));
        assert_eq!(tap.max_weight.len(), tap.rows * tap.records);
        assert_eq!(tap.argmax.len(), tap.rows * tap.records);
        assert!(tap.slots.iter().flatten().all(|&j| j < tap.records));
    }
    assert!(
        (1..=4).contains(&kernel.dim),
        "dimension {} not in 1..=4",
        kernel.dim
    );
    assert!(!kernel.training.is_empty(), "empty training set");
    if let Some(initial) = &initial {
        assert_eq!(initial.len(), state.len());
    }
    assert_eq!(state.len() % kernel.dim, 0);
    run_on(isa, kernel, first_particle, initial, state, tap)
}

isa_dispatch! {
    /// [`run_any_dim`] with the chunk width and FMA of `isa`, compiled for `isa`.
    fn run_on(
        kernel: &Kernel,
        first: u64,
        initial: Option<&mut [f32]>,
        samples: &mut [f32],
        tap: Option<&mut ChunkTap>,
    ) {
        Avx512 => run_any_dim::<true, AVX512_LANES>(kernel, first, initial, samples, tap),
        Avx2 => run_any_dim::<true, AVX2_LANES>(kernel, first, initial, samples, tap),
        Portable => run_any_dim::<false, PORTABLE_LANES>(kernel, first, initial, samples, tap),
    }
}

#[inline(always)]
fn run_any_dim<const FMA: bool, const L: usize>(
    kernel: &Kernel,
    first: u64,
    initial: Option<&mut [f32]>,
    samples: &mut [f32],
    tap: Option<&mut ChunkTap>,
) {
    match kernel.dim {
        1 => run_dim::<1, FMA, L>(kernel, first, initial, samples, tap),
        2 => run_dim::<2, FMA, L>(kernel, first, initial, samples, tap),
        3 => run_dim::<3, FMA, L>(kernel, first, initial, samples, tap),
        _ => run_dim::<4, FMA, L>(kernel, first, initial, samples, tap),
    }
}

#[inline(always)]
fn run_dim<const D: usize, const FMA: bool, const L: usize>(
    kernel: &Kernel,
    first: u64,
    mut initial: Option<&mut [f32]>,
    samples: &mut [f32],
    mut tap: Option<&mut ChunkTap>,
) {
    let mut tile = [[0.0f32; L]; MAX_TILE];
    for (c, out) in samples.chunks_mut(L * D).enumerate() {
        let base = first.wrapping_add((c * L) as u64);
        let init_out = initial
            .as_deref_mut()
            .map(|i| &mut i[c * L * D..c * L * D + out.len()]);
        // The chunk's recorded rows, if any: its lanes below `tap.rows - c L`.
        let chunk_tap = tap.as_deref_mut().and_then(|tap| {
            let lanes = tap.rows.saturating_sub(c * L).min(L);
            let at = c * L * tap.records..(c * L + lanes) * tap.records;
            (lanes > 0).then(|| LaneTap {
                slots: tap.slots,
                records: tap.records,
                lanes,
                max_weight: &mut tap.max_weight[at.clone()],
                argmax: &mut tap.argmax[at],
            })
        });
        run_chunk::<D, FMA, L>(kernel, base, init_out, out, &mut tile, chunk_tap);
    }
}

/// The part of a [`ChunkTap`] that one chunk fills: its first `lanes` lanes.
struct LaneTap<'a> {
    slots: &'a [Option<usize>],
    records: usize,
    lanes: usize,
    max_weight: &'a mut [f32],
    argmax: &'a mut [u32],
}

/// One chunk of up to `L` particles (`out.len() / D` of them; the lanes beyond are
/// computed and dropped) through `kernel.steps`: from the initial noise (written to
/// `init_out`) when `init_out` is given, otherwise from the positions in `out`.
#[inline(always)]
fn run_chunk<const D: usize, const FMA: bool, const L: usize>(
    kernel: &Kernel,
    base: u64,
    init_out: Option<&mut [f32]>,
    out: &mut [f32],
    tile: &mut [[f32; L]; MAX_TILE],
    mut tap: Option<LaneTap>,
) {
    let mut lo = [0u64; L];
    let mut hi = [0u64; L];
    for l in 0..L {
        let p = base.wrapping_add(l as u64);
        lo[l] = p & 0xFFFF_FFFF;
        hi[l] = p >> 32;
    }
    let mut x = [[0.0f32; L]; D];
    match init_out {
        Some(init_out) => {
            let z = normals::<D, FMA, L>(&lo, &hi, INITIAL_NOISE_STEP, kernel.key);
            for d in 0..D {
                for l in 0..L {
                    x[d][l] = kernel.initial_std * z[d][l];
                }
            }
            store(&x, init_out);
        }
        None => {
            for (l, row) in out.chunks_exact(D).enumerate() {
                for d in 0..D {
                    x[d][l] = row[d];
                }
            }
        }
    }
    // The corrector's known part between the halves of a Heun step.
    let mut partial = [[0.0f32; L]; D];
    for (record, step) in kernel.steps.iter().enumerate() {
        let slot = tap.as_ref().and_then(|t| t.slots[record]);
        let m = match (slot, tap.as_mut()) {
            (Some(j), Some(t)) => {
                let mut top = Top::<L>::default();
                let m = weighted_mean::<D, FMA, L, true>(&x, kernel.training, step, tile, &mut top);
                for l in 0..t.lanes {
                    t.max_weight[l * t.records + j] = top.max_weight[l];
                    t.argmax[l * t.records + j] = top.argmax[l];
                }
                m
            }
            _ => weighted_mean::<D, FMA, L, false>(
                &x,
                kernel.training,
                step,
                tile,
                &mut Top::default(),
            ),
        };
        match step.kind {
            StepKind::Em => {
                let z = normals::<D, FMA, L>(&lo, &hi, step.step_index, kernel.key);
                for d in 0..D {
                    for l in 0..L {
                        let kept = step.keep_coeff * x[d][l];
                        x[d][l] = mad::<FMA>(
                            step.noise_coeff,
                            z[d][l],
                            mad::<FMA>(step.mean_coeff, m[d][l], kept),
                        );
                    }
                }
            }
            StepKind::HeunPredictor => {
                for d in 0..D {
                    for l in 0..L {
                        let known = step.partial_x_coeff * x[d][l];
                        partial[d][l] = mad::<FMA>(step.partial_mean_coeff, m[d][l], known);
                        let kept = step.keep_coeff * x[d][l];
                        x[d][l] = mad::<FMA>(step.mean_coeff, m[d][l], kept);
                    }
                }
            }
            StepKind::HeunCorrector => {
                for d in 0..D {
                    for l in 0..L {
                        let kept = step.keep_coeff * x[d][l];
                        x[d][l] = partial[d][l] + mad::<FMA>(step.mean_coeff, m[d][l], kept);
                    }
                }
            }
        }
    }
    store(&x, out);
}

/// Write lane arrays back as rows of `D` (as many rows as `out` holds).
#[inline(always)]
fn store<const D: usize, const L: usize>(x: &[[f32; L]; D], out: &mut [f32]) {
    for (l, row) in out.chunks_exact_mut(D).enumerate() {
        for d in 0..D {
            row[d] = x[d][l];
        }
    }
}

/// The posterior concentration of a chunk's lanes, as [`weighted_mean`] meets it.
struct Top<const L: usize> {
    max_weight: [f32; L],
    argmax: [u32; L],
}

impl<const L: usize> Default for Top<L> {
    fn default() -> Self {
        Self {
            max_weight: [0.0; L],
            argmax: [0; L],
        }
    }
}

/// Softmax-weighted mean of the training points for 16 particles: the twin's
/// `score::weighted_training_mean`, by tiles with a running minimum of base-2 energies.
/// With `TAP` it also fills `top`: `1 / weight_sum` and the first index of the minimum
/// energy; the arithmetic of the mean is the same either way (the positions do not depend
/// on `TAP`).
#[inline(always)]
fn weighted_mean<const D: usize, const FMA: bool, const L: usize, const TAP: bool>(
    x: &[[f32; L]; D],
    training: &[[f32; 4]],
    step: &FastStep,
    tile: &mut [[f32; L]; MAX_TILE],
    top: &mut Top<L>,
) -> [[f32; L]; D] {
    let mut xs = [[0.0f32; L]; D];
    for d in 0..D {
        for l in 0..L {
            xs[d][l] = x[d][l] * step.scale;
        }
    }
    let neg_train_scale = -step.train_scale;
    let mut run_min = [0.0f32; L];
    // Sums are kept at three levels (tile, group of tiles, total), all relative to
    // `run_min`: adding each level into the next keeps f32 round-off near
    // (tile + tiles per group + groups) ulps instead of one ulp per training point,
    // which matters for N ~ 1e6 (the shaders merge blocks of 256 for the same reason).
    let mut weight_sum = [0.0f32; L];
    let mut acc = [[0.0f32; L]; D];
    let mut group_sum = [0.0f32; L];
    let mut group_acc = [[0.0f32; L]; D];
    let tiles_per_group = (GROUP_POINTS / tile_len(L)).max(1);
    let mut run_arg = [0u32; L];
    for (b, block) in training.chunks(tile_len(L)).enumerate() {
        // Pass 1: energies E = |r x - r s x_i|^2 (clamped, NaN -> f32::MAX) and their min.
        let mut block_min = [f32::MAX; L];
        let first_index = (b * tile_len(L)) as u32;
        let mut block_arg = [first_index; L];
        for (i, (energy, xi)) in tile.iter_mut().zip(block).enumerate() {
            let mut e = [0.0f32; L];
            for d in 0..D {
                for l in 0..L {
                    let t = mad::<FMA>(neg_train_scale, xi[d], xs[d][l]);
                    e[l] = if d == 0 {
                        t * t
                    } else {
                        mad::<FMA>(t, t, e[l])
                    };
                }
            }
            for l in 0..L {
                let v = fmin(e[l], f32::MAX);
                energy[l] = v;
                if TAP && v < block_min[l] {
                    block_arg[l] = first_index + i as u32;
                }
                block_min[l] = fmin(block_min[l], v);
            }
        }
        if TAP {
            for l in 0..L {
                if b == 0 || block_min[l] < run_min[l] {
                    run_arg[l] = block_arg[l];
                }
            }
        }
        if b == 0 {
            run_min = block_min;
        } else {
            // Online softmax by tiles: rescale what was summed against the old minimum.
            let mut rescale = [0.0f32; L];
            for l in 0..L {
                let new_min = fmin(run_min[l], block_min[l]);
                rescale[l] = exp2::<FMA>(new_min - run_min[l]);
                run_min[l] = new_min;
                weight_sum[l] *= rescale[l];
                group_sum[l] *= rescale[l];
            }
            for (acc_d, group_d) in acc.iter_mut().zip(group_acc.iter_mut()) {
                for l in 0..L {
                    acc_d[l] *= rescale[l];
                    group_d[l] *= rescale[l];
                }
            }
        }
        // Pass 2: weights 2^(min - E) <= 1 and the weighted sums of this tile.
        let mut tile_sum = [0.0f32; L];
        let mut tile_acc = [[0.0f32; L]; D];
        for (energy, xi) in tile.iter().zip(block) {
            let mut w = [0.0f32; L];
            for l in 0..L {
                // Below 2^-100 of the max: exactly 0 (no subnormal products, each of
                // which costs a microcode assist on Intel x86; see attention.rs).
                let d = run_min[l] - energy[l];
                w[l] = if d > -100.0 { exp2::<FMA>(d) } else { 0.0 };
                tile_sum[l] += w[l];
            }
            for d in 0..D {
                for l in 0..L {
                    tile_acc[d][l] = mad::<FMA>(w[l], xi[d], tile_acc[d][l]);
                }
            }
        }
        for l in 0..L {
            group_sum[l] += tile_sum[l];
        }
        for d in 0..D {
            for l in 0..L {
                group_acc[d][l] += tile_acc[d][l];
            }
        }
        if (b + 1) % tiles_per_group == 0 {
            for l in 0..L {
                weight_sum[l] += group_sum[l];
                group_sum[l] = 0.0;
            }
            for d in 0..D {
                for l in 0..L {
                    acc[d][l] += group_acc[d][l];
                    group_acc[d][l] = 0.0;
                }
            }
        }
    }
    for l in 0..L {
        weight_sum[l] += group_sum[l];
    }
    for d in 0..D {
        for l in 0..L {
            acc[d][l] += group_acc[d][l];
        }
    }
    let mut inv = [0.0f32; L];
    for l in 0..L {
        inv[l] = 1.0 / weight_sum[l];
    }
    if TAP {
        top.max_weight = inv;
        top.argmax = run_arg;
    }
    for acc_d in acc.iter_mut() {
        for l in 0..L {
            acc_d[l] *= inv[l];
        }
    }
    acc
}

/// One Philox4x32 round on 16 lanes with round key `(k0, k1)`. Words live in the low
/// halves of `u64` lanes: one `vpmuludq` gives the whole 32x32 -> 64-bit product and
/// ignores the high halves, which are left as garbage and never read.
#[inline(always)]
fn philox_round<const L: usize>(c: &[[u64; L]; 4], k0: u32, k1: u32) -> [[u64; L]; 4] {
    let mut next = [[0u64; L]; 4];
    for l in 0..L {
        let p0 = (c[0][l] & 0xFFFF_FFFF) * PHILOX_M0;
        let p1 = (c[2][l] & 0xFFFF_FFFF) * PHILOX_M1;
        next[0][l] = (p1 >> 32) ^ c[1][l] ^ k0 as u64;
        next[1][l] = p1;
        next[2][l] = (p0 >> 32) ^ c[3][l] ^ k1 as u64;
        next[3][l] = p0;
    }
    next
}

/// Philox4x32-10 on 16 counters at once (`crate::model::philox::philox4x32_10` lane by
/// lane). The high halves of the inputs are ignored and those of the outputs are garbage.
/// (Precomputing the step-independent half of round 1 per chunk measured slower.)
#[inline(always)]
fn philox_lanes<const L: usize>(counter: [[u64; L]; 4], key: [u32; 2]) -> [[u64; L]; 4] {
    let mut c = counter;
    let (mut k0, mut k1) = (key[0], key[1]);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(PHILOX_W0);
            k1 = k1.wrapping_add(PHILOX_W1);
        }
        c = philox_round(&c, k0, k1);
    }
    c
}

/// `philox::uniform_f32` of the low word of a lane.
#[inline(always)]
fn uniform(word: u64) -> f32 {
    (((word as u32) >> 8) as i32 as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The first `D` normals of lane block 0 of a chunk's particles at `step` (Box–Muller in
/// the twin's order; the second pair only when `D > 2`), [`NOISE_LANES`] lanes at a time.
/// [f32; L]s `D..4` are unspecified.
#[inline(always)]
fn normals<const D: usize, const FMA: bool, const L: usize>(
    lo: &[u64; L],
    hi: &[u64; L],
    step: u32,
    key: [u32; 2],
) -> [[f32; L]; 4] {
    const S: usize = NOISE_LANES;
    const {
        assert!(
            L.is_multiple_of(S),
            "a chunk is whole blocks of noise lanes"
        )
    };
    let lanes =
        |a: &[u64; L], at: usize| -> [u64; S] { a[at..at + S].try_into().expect("S lanes") };
    let mut z = [[0.0f32; L]; 4];
    for at in (0..L).step_by(S) {
        let words = philox_lanes(
            [lanes(lo, at), lanes(hi, at), [step as u64; S], [0; S]],
            key,
        );
        let block = box_muller::<FMA, S>(&words, D.div_ceil(2));
        for (z_d, block_d) in z.iter_mut().zip(&block).take(D) {
            z_d[at..at + S].copy_from_slice(block_d);
        }
    }
    z
}

/// Lanes whose noise is computed together. Philox's four words of a 64-lane AVX-512
/// chunk would fill all 32 vector registers (8 `u64` lanes each) and spill; 32 lanes leave
/// room for the products. Measured on an AMD EPYC (Zen 4): the default run's sampling 9%
/// faster than with 64 lanes, 4% faster than with 16.
const NOISE_LANES: usize = 32;

/// Box–Muller in the twin's order on Philox output words: pair `p` (of `pairs`, at most 2)
/// turns words `2p`, `2p + 1` into normals `2p` (cosine) and `2p + 1` (sine). The other
/// arrays of the result are unspecified.
#[inline(always)]
fn box_muller<const FMA: bool, const L: usize>(
    words: &[[u64; L]; 4],
    pairs: usize,
) -> [[f32; L]; 4] {
    // Separate loops, so that the u64 -> f32 conversion does not set the vector width
    // of the float math (LLVM would otherwise pick 8 lanes for everything).
    let mut u = [[0.0f32; L]; 4];
    for w in 0..2 * pairs {
        for l in 0..L {
            u[w][l] = uniform(words[w][l]);
        }
    }
    let mut z = [[0.0f32; L]; 4];
    for pair in 0..pairs {
        let mut r = [0.0f32; L];
        for l in 0..L {
            r[l] = (-2.0 * ln::<FMA>(u[2 * pair][l])).sqrt();
        }
        let (mut sin, mut cos) = ([0.0f32; L], [0.0f32; L]);
        for l in 0..L {
            // The angle reduced to [-π, π] like the shader's (the turn-count reduction
            // of sincos_turns makes this bit-identical to the unreduced angle; kept so
            // the twins read the same).
            (sin[l], cos[l]) = sincos_turns::<FMA>(reduced_turns(u[2 * pair + 1][l]));
        }
        for l in 0..L {
            z[2 * pair][l] = r[l] * cos[l];
            z[2 * pair + 1][l] = r[l] * sin[l];
        }
    }
    z
}

/// The normals of lane blocks `0..out.len().div_ceil(4)` of one particle at `step`
/// (block `b` gives `out[4b..4b + 4]`, cut at `out.len()`): what
/// `crate::model::philox::normals4_f32` gives for each block, but 16 blocks at a time through
/// [`philox_lanes`] and [`box_muller`] (the polynomial `ln` and `sincos`). For the D > 4
/// kernel, whose scalar per-block normals cost as much as a few percent of a step.
#[inline(always)]
pub(crate) fn particle_normals<const FMA: bool>(
    particle: u64,
    step: u32,
    key: [u32; 2],
    out: &mut [f32],
) {
    const L: usize = 16;
    let blocks = out.len().div_ceil(4);
    let lo = [particle & 0xFFFF_FFFF; L];
    let hi = [particle >> 32; L];
    for first in (0..blocks).step_by(L) {
        let mut block = [0u64; L];
        for (l, b) in block.iter_mut().enumerate() {
            *b = (first + l) as u64;
        }
        let words = philox_lanes([lo, hi, [step as u64; L], block], key);
        let z = box_muller::<FMA, L>(&words, 2);
        let values = &mut out[4 * first..];
        for (i, v) in values.iter_mut().take(4 * L).enumerate() {
            *v = z[i % 4][i / 4];
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // lane loops read best with the lane index
mod tests;
