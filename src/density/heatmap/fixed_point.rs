//! Integer fixed point: every deposited weight is rounded once to a multiple of
//! `2^-QUANTUM_BITS` of a particle's peak and added to an `i64`, so that sums are exact,
//! associative and independent of batches, order and shards (see [`super`]).
//!
//! Every add wraps modulo `2^64`, on every engine: the GPU deposit (shaders/heatmap/deposit.wgsl)
//! adds two's complement words with a carry, and the CPU does the same here. Wrapping, unlike
//! saturating, stays associative, so even past [`EXACT_PARTICLES`] the CPU and GPU grids of a
//! run, its batches and its merged shards agree bit for bit: they are all equally wrong.

use rayon::prelude::*;

/// Fixed point: one unit of an accumulator is `2^-QUANTUM_BITS` of a particle's peak
/// weight (see [`super::DensityGrid::raw_counts`]).
pub const QUANTUM_BITS: u32 = 32;

/// `2^QUANTUM_BITS`.
pub(super) const SCALE: f64 = (1u64 << QUANTUM_BITS) as f64;

/// Particles a grid sums exactly whatever their positions: a deposit adds at most
/// `2^QUANTUM_BITS` units (every weight is at most 1 in magnitude) to a cell, so up to
/// `2^31 - 1` particles (about 2.1e9) reaching one cell stay below `i64::MAX`. Past this
/// many particles in a grid (merges included) a cell that more than this many particles
/// reach may wrap around the `i64` range (cells that fewer reach stay exact), identically on
/// every engine.
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

/// `acc += d` modulo `2^64`, as the GPU adds (exact up to [`EXACT_PARTICLES`]).
#[inline(always)]
pub(super) fn add_fixed(acc: i64, d: i64) -> i64 {
    acc.wrapping_add(d)
}

/// `a += b` element-wise with [`add_fixed`] (merges, and sums deposited on the GPU).
pub(super) fn add_counts(a: &mut [i64], b: &[i64]) {
    a.par_chunks_mut(1 << 16)
        .zip(b.par_chunks(1 << 16))
        .for_each(|(a, b)| {
            a.iter_mut()
                .zip(b)
                .for_each(|(x, &y)| *x = add_fixed(*x, y))
        });
}
