//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
//! the counter-based generator behind every random number memodiff draws.
//!
//! CPU twin of `shaders/common/philox.wgsl`: the two must produce the same integers bit
//! for bit (tested against Random123's known-answer vectors on both). The counter of a
//! draw is `(particle index lo, particle index hi, step index, lane block)` and the key
//! is the 64-bit seed, so a particle's stream depends on nothing but its index and the
//! seed: not on batch size, dispatch geometry, shard or backend.

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Step index used for the initial noise `x_1`, distinct from every step 0..S-2.
pub const INITIAL_NOISE_STEP: u32 = u32::MAX;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten rounds of Philox4x32 on `counter` with `key`.
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut ctr = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, ctr[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ k[0], lo1, hi0 ^ ctr[3] ^ k[1], lo0];
    }
    ctr
}

/// The key for a 64-bit seed: (lo, hi).
#[inline(always)]
pub fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The counter of one draw: particle index, step index and lane block (4 normals each).
#[inline(always)]
pub fn counter(particle: u64, step: u32, lane_block: u32) -> [u32; 4] {
    [particle as u32, (particle >> 32) as u32, step, lane_block]
}

/// `u = ((x >> 8) + 0.5) 2^-24`, in (0, 1): the top 24 bits, centred in their cell, so
/// `ln u` is always finite. In f32 exactly as the shader computes it.
#[inline(always)]
pub fn uniform_f32(x: u32) -> f32 {
    ((x >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The same uniform in f64, for the reference backend.
#[inline(always)]
pub fn uniform_f64(x: u32) -> f64 {
    ((x >> 8) as f64 + 0.5) * (1.0 / 16_777_216.0)
}

/// Four standard normals from one Philox block by Box–Muller, f32, in the shader's order:
/// `(u0, u1) -> (r cos 2πu1, r sin 2πu1)` with `r = sqrt(-2 ln u0)`, same for `(u2, u3)`.
#[inline(always)]
pub fn normals4_f32(bits: [u32; 4]) -> [f32; 4] {
    let u = bits.map(uniform_f32);
    let r0 = (-2.0 * u[0].ln()).sqrt();
    let r1 = (-2.0 * u[2].ln()).sqrt();
    let a0 = std::f32::consts::TAU * u[1];
    let a1 = std::f32::consts::TAU * u[3];
    [r0 * a0.cos(), r0 * a0.sin(), r1 * a1.cos(), r1 * a1.sin()]
}

/// Four standard normals from one Philox block by Box–Muller, f64.
#[inline(always)]
pub fn normals4_f64(bits: [u32; 4]) -> [f64; 4] {
    let u = bits.map(uniform_f64);
    let r0 = (-2.0 * u[0].ln()).sqrt();
    let r1 = (-2.0 * u[2].ln()).sqrt();
    let a0 = std::f64::consts::TAU * u[1];
    let a1 = std::f64::consts::TAU * u[3];
    [r0 * a0.cos(), r0 * a0.sin(), r1 * a1.cos(), r1 * a1.sin()]
}

/// Normal number `dim` of `particle` at `step`, f32: lane block `dim / 4`, lane `dim % 4`.
pub fn particle_normal_f32(seed: u64, particle: u64, step: u32, dim: usize) -> f32 {
    let bits = philox4x32_10(counter(particle, step, (dim / 4) as u32), seed_key(seed));
    normals4_f32(bits)[dim % 4]
}

/// Fill `out` with the `out.len()` normals of `particle` at `step`, f32.
#[inline]
pub fn fill_normals_f32(seed: u64, particle: u64, step: u32, out: &mut [f32]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let bits = philox4x32_10(counter(particle, step, block as u32), seed_key(seed));
        let z = normals4_f32(bits);
        chunk.copy_from_slice(&z[..chunk.len()]);
    }
}

/// Fill `out` with the `out.len()` normals of `particle` at `step`, f64.
#[inline]
pub fn fill_normals_f64(seed: u64, particle: u64, step: u32, out: &mut [f64]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let bits = philox4x32_10(counter(particle, step, block as u32), seed_key(seed));
        let z = normals4_f64(bits);
        chunk.copy_from_slice(&z[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32_10 (kat_vectors).
    pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn known_answers() {
        for (ctr, key, expected) in KNOWN_ANSWERS {
            assert_eq!(philox4x32_10(ctr, key), expected);
        }
    }

    #[test]
    fn uniforms_stay_inside_the_open_interval() {
        assert!(uniform_f32(0) > 0.0);
        assert!(uniform_f32(u32::MAX) <= 1.0);
        assert!(normals4_f32([0, 0, u32::MAX, u32::MAX])
            .iter()
            .all(|z| z.is_finite()));
    }
}
