//! Integer fixed point: every deposited weight is rounded once to a multiple of
//! `2^-QUANTUM_BITS` of a particle's peak and added to an `i64`, so that sums are exact,
//! associative and independent of batches, order and shards (see [`super`]).

use rayon::prelude::*;

/// Fixed point: one unit of an accumulator is `2^-QUANTUM_BITS` of a particle's peak
/// weight (see [`super::DensityGrid::raw_counts`]).
pub const QUANTUM_BITS: u32 = 32;

/// `2^QUANTUM_BITS`.
pub(super) const SCALE: f64 = (1u64 << QUANTUM_BITS) as f64;

/// Particles a grid sums exactly whatever their positions: a deposit adds at most
/// `2^QUANTUM_BITS` units (every weight is at most 1 in magnitude) to a cell, so up to
/// `2^31 - 1` particles (about 2.1e9) reaching one cell stay below `i64::MAX`. Past this
/// many particles in a grid (merges included) the adds saturate instead of wrapping: still
/// exact wherever fewer than `2^31` particles reach a cell, pinned at the `i64` bounds where
/// more do.
pub const EXACT_PARTICLES: u64 = (1 << 31) - 1;

/// `1.5 * 2^52`: adding it to an f64 of magnitude below `2^51` rounds to the nearest integer
/// (ties to even) in the low mantissa bits.
pub(super) const MAGIC: f64 = 6_755_399_441_055_744.0;

/// `scaled` rounded to the nearest integer (ties to even), for `|scaled| < 2^51`: an exact,
/// vectorizable f64 -> i64 conversion (AVX2 has no packed one).
#[inline(always)]
pub(super) fn quantize(scaled: f64) -> i64 {
    ((scaled + MAGIC).to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64)
}

/// An accumulator's value in units of a particle's peak weight.
#[inline(always)]
pub(super) fn dequantize(v: i64) -> f64 {
    v as f64 * (1.0 / SCALE)
}

/// `acc += d`, wrapping (never reached: see [`EXACT_PARTICLES`]) or saturating.
#[inline(always)]
pub(super) fn add_fixed<const SAT: bool>(acc: i64, d: i64) -> i64 {
    if SAT {
        acc.saturating_add(d)
    } else {
        acc.wrapping_add(d)
    }
}

/// `a += b`, saturating (integer sums: exact and order-independent short of saturation).
pub(super) fn add_counts(a: &mut [i64], b: &[i64]) {
    a.par_chunks_mut(1 << 16)
        .zip(b.par_chunks(1 << 16))
        .for_each(|(a, b)| {
            a.iter_mut()
                .zip(b)
                .for_each(|(x, &y)| *x = x.saturating_add(y))
        });
}
