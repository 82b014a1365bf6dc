//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
//! the counter-based generator behind every random number memodiff draws.
//!
//! CPU twin of `shaders/common/philox.wgsl`: the two must produce the same integers bit
//! for bit (tested against Random123's known-answer vectors on both). The counter of a
//! draw is `(particle index lo, particle index hi, step index, lane block)` and the key
//! is the 64-bit seed, so a particle's stream depends on nothing but its index and the
//! seed: not on batch size, dispatch geometry, shard or backend.

/// The round multipliers and Weyl key increments of Philox4x32 (public for the check of
/// the constants the shader shares, tests/shaders.rs).
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// The second round multiplier.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// The first Weyl key increment (the golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// The second Weyl key increment (sqrt(3) - 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;

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

/// `u` or `u - 1`, whichever lies in [-1/2, 1/2]: the same angle `2πu` in turns, reduced
/// so that `2π · turns` lies in [-π, π], the only range on which WGSL bounds the error of
/// `cos`/`sin` (absolute 2^-11). `u - 1` is exact in f32 (Sterbenz: u in (1/2, 1]), so
/// every normal is mathematically unchanged. The shader does the same
/// (`shaders/common/philox.wgsl`, `reduced_turns`).
#[inline(always)]
pub fn reduced_turns(u: f32) -> f32 {
    if u > 0.5 {
        u - 1.0
    } else {
        u
    }
}

/// The largest f32 not above π. `TAU_f32 / 2` (the f32 nearest π) lies 8.7e-8 above π.
pub const PI_BELOW: f32 = 3.141_592_5;

/// The Box–Muller angle `2πu` as the f32 `TAU · reduced_turns(u)`, clamped to
/// [-PI_BELOW, PI_BELOW]: the uniforms of the upper half are rounded in f32 (`u = 1/2` is
/// one of them), and `TAU · 1/2` would land 8.7e-8 outside [-π, π]. The clamp moves the
/// angle by less than 1.5e-8; the shader's `box_muller_angle` is the same.
#[inline(always)]
pub fn box_muller_angle(u: f32) -> f32 {
    (std::f32::consts::TAU * reduced_turns(u)).clamp(-PI_BELOW, PI_BELOW)
}

/// Four standard normals from one Philox block by Box–Muller, f32, in the shader's order:
/// `(u0, u1) -> (r cos 2πu1, r sin 2πu1)` with `r = sqrt(-2 ln u0)`, same for `(u2, u3)`;
/// the angle reduced to [-π, π] by `box_muller_angle`.
#[inline(always)]
pub fn normals4_f32(bits: [u32; 4]) -> [f32; 4] {
    let u = bits.map(uniform_f32);
    // max(., 0) as in the shader, where log may err above 0 near u = 1 (a no-op here).
    let r0 = (-2.0 * u[0].ln()).max(0.0).sqrt();
    let r1 = (-2.0 * u[2].ln()).max(0.0).sqrt();
    let a0 = box_muller_angle(u[1]);
    let a1 = box_muller_angle(u[3]);
    [r0 * a0.cos(), r0 * a0.sin(), r1 * a1.cos(), r1 * a1.sin()]
}

/// Error bounds of the operations Box–Muller uses, as an implementation states them;
/// [`normals_error_bound`] propagates them to the normals.
#[derive(Clone, Copy, Debug)]
pub struct BoxMullerAccuracy {
    /// Absolute error of `log(u)` for u in [0.5, 2].
    pub log_abs: f64,
    /// Relative error of `log(u)` elsewhere.
    pub log_rel: f64,
    /// Relative error of `sqrt`.
    pub sqrt_rel: f64,
    /// Absolute error of `cos`/`sin` of the f32 angle against the exact ones of 2πu,
    /// the rounding of the angle included.
    pub trig_abs: f64,
}

/// What WGSL allows ("Floating point accuracy" of the WGSL spec; `*`, `-` correctly
/// rounded): `log` 2^-21 absolute on [0.5, 2], 3 ULP elsewhere (an ULP of a normal f32 y
/// is at most 2^-23·|y|); `sqrt` "inherited from 1.0 / inverseSqrt(x)", inverseSqrt 2 ULP
/// and the division 2.5 ULP: `(1 + 2·2^-23)(1 + 2.5·2^-23) - 1 <= 4.6·2^-23`; `cos`, `sin`
/// 2^-11 absolute on [-π, π] only, which `box_muller_angle` guarantees (checked by a
/// test), plus the angle's own error `|TAU_f32 · u' - 2πu'| <= |TAU_f32 -
/// 2π|/2 + ulp(π)/2 <= 2.1e-7` (cos and sin are 1-Lipschitz).
pub const WGSL_ACCURACY: BoxMullerAccuracy = BoxMullerAccuracy {
    log_abs: 1.0 / 2_097_152.0,
    log_rel: 3.0 / 8_388_608.0,
    sqrt_rel: 4.6 / 8_388_608.0,
    trig_abs: 1.0 / 2048.0 + 2.1e-7,
};

/// The CPU twins: [`normals4_f32`] (libm `ln`, `cos`, `sin` within 1 ULP, the angle within
/// 2.1e-7) and the SIMD kernel's polynomials (`cpu::approx`: `ln` 1.5e-7 absolute near 1,
/// 1.2e-7 relative elsewhere; `sincos_turns` 1.5e-7 absolute from the exact turn count);
/// `sqrt` correctly rounded. Each figure is the larger of the two.
pub const CPU_F32_ACCURACY: BoxMullerAccuracy = BoxMullerAccuracy {
    log_abs: 1.5e-7,
    log_rel: 1.2e-7,
    sqrt_rel: 1.0 / 16_777_216.0,
    trig_abs: 2.1e-7 + 1.0 / 16_777_216.0,
};

/// Bound on `|z_f32 - z|` for each of the four normals computed from `bits` by an
/// implementation with accuracy `acc` (`z` exact, [`normals4_f64`] to 1e-15).
///
/// Derivation: `u` is exact below 1/2; above, the f32 `(x >> 8) + 0.5` rounds (by up to
/// 2^-25 in u), which adds `|ln u_f32 - ln u|` to the log's error and `2π |u_f32 - u|` to
/// the angle's. `L = ln u` errs by `e_L` (`acc.log_abs` for u in [0.5, 2],
/// `acc.log_rel·|L|` elsewhere, plus that input term). `v = -2L` is exact (a power of two), so `|v' -
/// v| <= 2 e_L`; then `|sqrt(v') - sqrt(v)| = |v' - v| / (sqrt(v') + sqrt(v)) <= min(2 e_L
/// / r, sqrt(2 e_L))`: near u = 1, where r ~ 2^-12, the absolute second form is the
/// smaller (about 2^-10 for WGSL). The shader's `max(v', 0)` only brings v' closer to v.
/// The sqrt's own error adds `acc.sqrt_rel · r'`, r' <= r + that carried error. Finally
/// `z' = r' c'` with `|c' - c| <= acc.trig_abs`, `|c'| <= 1 + acc.trig_abs`, rounded
/// (half an ULP, `2^-24 |z'|`): `|z' - r c| <= |r' - r| (1 + trig) + r trig + 2^-24 (r +
/// |r' - r|)(1 + trig)`.
///
/// For WGSL the dominant term is `r · 2^-11`: up to 2.9e-3 at the largest radius (5.9,
/// u = 2^-25), so an absolute tolerance like 1e-4 holds only on drivers far better than
/// the spec requires.
pub fn normals_error_bound(bits: [u32; 4], acc: &BoxMullerAccuracy) -> [f64; 4] {
    let exact = bits.map(uniform_f64);
    // What the f32 side starts from: exact in the lower half, rounded to even (by up to
    // 2^-25) in the upper half, where `(x >> 8) + 0.5` needs a 25th bit.
    let rounded = bits.map(|b| uniform_f32(b) as f64);
    let pair = |radius: usize, angle: usize| -> f64 {
        let (u, u32_value) = (exact[radius], rounded[radius]);
        let l = u.ln();
        let e_l = if (0.5..=2.0).contains(&u32_value) {
            acc.log_abs
        } else {
            acc.log_rel * l.abs()
        } + (u32_value.ln() - l).abs();
        let r = (-2.0 * l).sqrt();
        let carried = if r > 0.0 {
            (2.0 * e_l / r).min((2.0 * e_l).sqrt())
        } else {
            (2.0 * e_l).sqrt()
        };
        let dr = carried + acc.sqrt_rel * (r + carried);
        let trig = acc.trig_abs + std::f64::consts::TAU * (rounded[angle] - exact[angle]).abs();
        dr * (1.0 + trig) + r * trig + (r + dr) * (1.0 + trig) / 16_777_216.0
    };
    let (first, second) = (pair(0, 1), pair(2, 3));
    [first, first, second, second]
}

/// [`normals_error_bound`] for any conforming WebGPU implementation ([`WGSL_ACCURACY`]).
pub fn gpu_normals_error_bound(bits: [u32; 4]) -> [f64; 4] {
    normals_error_bound(bits, &WGSL_ACCURACY)
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

    /// The reduced angle stays inside [-π, π] (where WGSL bounds cos/sin) for every
    /// uniform, the extremes included, and gives the same normals as the unreduced one
    /// to within f32 rounding of the angle.
    #[test]
    fn reduced_angles_stay_within_pi() {
        let extremes = [0u32, 0x7FFF_FF00, 0x8000_0000, 0x8000_00FF, u32::MAX];
        for bits in extremes
            .into_iter()
            .chain((0..1u32 << 24).step_by(4099).map(|k| k << 8))
        {
            let u = uniform_f32(bits);
            let angle = box_muller_angle(u);
            assert!(
                (angle as f64).abs() <= std::f64::consts::PI,
                "u = {u}: angle {angle} outside [-π, π]"
            );
            // Against 2π times the f32 uniform (its rounding is accounted separately).
            let exact = std::f64::consts::TAU * u as f64;
            assert!(((angle as f64).cos() - exact.cos()).abs() <= 2.1e-7);
            assert!(((angle as f64).sin() - exact.sin()).abs() <= 2.1e-7);
        }
    }

    /// The CPU twin's f32 normals stay within the bound of its stated accuracies (a
    /// check of the derivation), and the spec-derived GPU bound is dominated by r·2^-11.
    #[test]
    fn normal_error_bounds_cover_the_f32_twin_and_are_sized_by_the_spec() {
        let mut largest = 0f64;
        for i in 0..200_000u64 {
            let bits = philox4x32_10(counter(i, 7, 0), seed_key(42));
            let (z32, z64) = (normals4_f32(bits), normals4_f64(bits));
            let cpu_bound = normals_error_bound(bits, &CPU_F32_ACCURACY);
            let gpu_bound = gpu_normals_error_bound(bits);
            for lane in 0..4 {
                let err = (z32[lane] as f64 - z64[lane]).abs();
                assert!(err <= cpu_bound[lane], "{bits:?} lane {lane}: {err:e}");
                assert!(cpu_bound[lane] < gpu_bound[lane]);
                largest = largest.max(gpu_bound[lane]);
            }
        }
        // u0 = 2^-25 gives the largest radius, sqrt(50 ln 2) = 5.89: bound ~ 5.89·2^-11.
        let worst = gpu_normals_error_bound([0, 0, 0, 0])[0];
        assert!((2.8e-3..3.0e-3).contains(&worst), "{worst}");
        // Near u0 = 1 the absolute bound on r dominates (sqrt(2·2^-20) ~ 1e-3).
        let near_one = gpu_normals_error_bound([u32::MAX; 4])[0];
        assert!((9.0e-4..1.1e-3).contains(&near_one), "{near_one}");
        assert!(largest <= worst);
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
