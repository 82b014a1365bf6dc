//! Branch-free f32 `exp2`, `exp`, `ln` and `sincos` for the SIMD CPU kernel.
//!
//! Every function is a plain scalar `#[inline(always)]` function made only of
//! arithmetic, comparisons turned into selects and bit casts: called on each lane of a
//! fixed-size array inside a `#[target_feature]` function, LLVM turns it into vector
//! code (no table look-ups, no branches, no libm calls). `FMA` selects fused
//! multiply-adds (`true` only where the target has them: without hardware FMA,
//! `mul_add` is a slow libm call).
//!
//! Range reduction uses the "magic number" rounding `(x + 1.5·2^23) - 1.5·2^23`
//! (round to nearest even, valid for |x| < 2^22), whose bit pattern also carries the
//! rounded integer in its low mantissa bits; powers of two are built from exponent bits.
//! Polynomials are Cephes' minimax ones (S. L. Moshier, Cephes Math Library), except
//! `exp2`'s (see there).
//!
//! Accuracy, measured by the tests at the bottom against f64 `std` over the whole input
//! range each function is used on (figures are the bounds the tests assert):
//!
//! | function       | inputs swept                                  | max error               |
//! |----------------|-----------------------------------------------|-------------------------|
//! | [`exp2`]       | [-126, 127], every 64th f32                    | 6e-7 relative (~5 ulp)   |
//! | [`exp2`]       | (-inf, -126): flushed toward 0                | < 2^-126 absolute       |
//! | [`exp`]        | [-87.3, 88], every 64th f32                    | 2.5e-7 relative          |
//! | [`exp`]        | [-104, -87.3] and below: flushed toward 0     | < 2^-126 absolute       |
//! | [`ln`]         | every f32 in [2^-25, 1] plus Box–Muller grid   | 1.5e-7 abs. for x near 1, 1.2e-7 relative elsewhere |
//! | [`sincos_turns`] | every Box–Muller uniform (2^24 values) and its reduction to [-1/2, 1/2], [-1, 1000] | 1.5e-7 absolute (the argument 2πu is exact before rounding) |

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 (|x| < 2^22) to an integer.
const MAGIC: f32 = 12_582_912.0;
/// Bit pattern of `MAGIC`; `(x + MAGIC).to_bits() - MAGIC_BITS` is `round(x)` as an i32.
const MAGIC_BITS: u32 = 0x4B40_0000;

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
pub fn mad<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `min(a, b)` as one `minps` (returns `b` when either is NaN), unlike `f32::min`.
#[inline(always)]
pub fn fmin(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `2^n` for an integer `n` carried in the low bits of `rounded_bits` (the bit pattern
/// of `n + MAGIC`), `n` in [-127, 127]; `n = -127` gives exactly 0 (flush to zero).
#[inline(always)]
fn pow2_from_magic(rounded_bits: u32) -> f32 {
    // (MAGIC_BITS + n) << 23 == n << 23 (mod 2^32): MAGIC_BITS's set bits all shift out.
    f32::from_bits((rounded_bits << 23).wrapping_add(127 << 23))
}

/// `2^x` for `x <= 127`, relative error <= 6e-7 (~5 ulp) for results >= 2^-126.
///
/// Inputs below -126 underflow toward 0 (at most 2^-126 absolute error; below -126.5
/// the result is exactly 0), NaN gives 0, `-inf` gives 0. Degree-5 minimax polynomial
/// for relative error on [-1/2, 1/2] (Remez, 4.3e-7 in exact arithmetic): one FMA less
/// than Cephes' degree 6 (1.5e-7), worth 6% of the large-N kernel, and softmax weights
/// need no better (the kernel's only use).
#[inline(always)]
pub fn exp2<const FMA: bool>(x: f32) -> f32 {
    // Also maps NaN to -127 (the comparison is false), hence to 0.
    let x = if x > -127.0 { x } else { -127.0 };
    let r = x + MAGIC;
    let n = r - MAGIC;
    let f = x - n; // exact, in [-1/2, 1/2]
    let mut p = 1.112_550_7e-3f32;
    p = mad::<FMA>(p, f, 9.666_283e-3);
    p = mad::<FMA>(p, f, 5.557_400_4e-2);
    p = mad::<FMA>(p, f, 2.402_235_1e-1);
    p = mad::<FMA>(p, f, 6.931_428_3e-1);
    p = mad::<FMA>(p, f, 1.0);
    p * pow2_from_magic(r.to_bits())
}

/// Natural logarithm of a positive, normal, finite `x`; absolute error <= 1.5e-7 for x
/// in [0.7, 1.4] and relative error <= 1.2e-7 elsewhere (Cephes `logf`: degree 9
/// polynomial of `x/2^e - 1` on [sqrt(1/2) - 1, sqrt(2) - 1]). Zero, negative,
/// subnormal, infinite and NaN inputs give meaningless finite results: the Box–Muller
/// uniforms it is used on lie in [2^-25, 1).
#[inline(always)]
pub fn ln<const FMA: bool>(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // x = m 2^e with m in [1/2, 1).
    let e = ((bits >> 23) as i32 - 126) as f32;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    let small = m < SQRT_HALF;
    let e = if small { e - 1.0 } else { e };
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let mut p = 7.037_683_6e-2f32;
    p = mad::<FMA>(p, f, -1.151_461e-1);
    p = mad::<FMA>(p, f, 1.167_699_9e-1);
    p = mad::<FMA>(p, f, -1.242_014_1e-1);
    p = mad::<FMA>(p, f, 1.424_932_3e-1);
    p = mad::<FMA>(p, f, -1.666_805_8e-1);
    p = mad::<FMA>(p, f, 2.000_071_4e-1);
    p = mad::<FMA>(p, f, -2.499_999_4e-1);
    p = mad::<FMA>(p, f, 3.333_333e-1);
    let mut y = p * f * z;
    y = mad::<FMA>(e, -2.121_944_4e-4, y);
    y = mad::<FMA>(z, -0.5, y);
    let r = f + y;
    mad::<FMA>(e, 0.693_359_4, r) // 355/512 exactly, like LN2_HI in `exp`
}

/// `(sin 2πu, cos 2πu)` for `u` in [-2^20, 2^20] (in turns), absolute error <= 1.5e-7.
///
/// The reduction is exact: `q = round(4u)`, `w = u - q/4` in [-1/8, 1/8] (exact by
/// Sterbenz), so the only rounding of the argument is `φ = 2πw` in [-π/4, π/4]; Cephes
/// `sinf`/`cosf` polynomials there, then the quadrant `q mod 4` swaps and negates.
/// Computing from the turn count rather than from a rounded `2πu` makes this *more*
/// accurate than `(TAU * u).sin_cos()` in f32, which rounds the angle first (up to
/// 2.4e-7 absolute for angles near 2π).
#[inline(always)]
pub fn sincos_turns<const FMA: bool>(u: f32) -> (f32, f32) {
    let r = u * 4.0 + MAGIC;
    let q = r - MAGIC;
    let quadrant = r.to_bits().wrapping_sub(MAGIC_BITS);
    let w = mad::<FMA>(q, -0.25, u);
    let phi = w * std::f32::consts::TAU;
    let z = phi * phi;
    let mut s = -1.951_529_6e-4f32;
    s = mad::<FMA>(s, z, 8.332_161e-3);
    s = mad::<FMA>(s, z, -1.666_665_5e-1);
    let s = mad::<FMA>(s * z, phi, phi);
    let mut c = 2.443_315_7e-5f32;
    c = mad::<FMA>(c, z, -1.388_731_6e-3);
    c = mad::<FMA>(c, z, 4.166_664_6e-2);
    c = mad::<FMA>(c * z, z, mad::<FMA>(z, -0.5, 1.0));
    let swap = quadrant & 1 != 0;
    let (sin, cos) = if swap { (c, s) } else { (s, c) };
    let sin_sign = (quadrant & 2) << 30;
    let cos_sign = (quadrant.wrapping_add(1) & 2) << 30;
    (
        f32::from_bits(sin.to_bits() ^ sin_sign),
        f32::from_bits(cos.to_bits() ^ cos_sign),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th f32 bit pattern from `lo` to `hi` (same sign), both included.
    fn sweep(lo: f32, hi: f32, step: u32) -> impl Iterator<Item = f32> {
        let (a, b) = if lo.to_bits() <= hi.to_bits() {
            (lo.to_bits(), hi.to_bits())
        } else {
            (hi.to_bits(), lo.to_bits())
        };
        (a..=b)
            .step_by(step as usize)
            .chain([b])
            .map(f32::from_bits)
    }

    fn rel_err(got: f32, want: f64) -> f64 {
        ((got as f64 - want) / want).abs()
    }

    fn check_exp2<const FMA: bool>() {
        let mut worst = 0.0f64;
        for x in sweep(-0.0, -126.0, 64).chain(sweep(0.0, 127.0, 64)) {
            let e = rel_err(exp2::<FMA>(x), (x as f64).exp2());
            worst = worst.max(e);
        }
        assert!(worst <= 6e-7, "exp2 relative error {worst:e}");
        eprintln!("exp2 (fma: {FMA}): max relative error {worst:e}");
        // Underflow: toward 0, never negative, NaN or above 2^-126.
        for x in sweep(-126.0, -1.0e6, 4096).chain([f32::MIN, f32::NEG_INFINITY, f32::NAN]) {
            let y = exp2::<FMA>(x);
            assert!((0.0..=f32::MIN_POSITIVE).contains(&y), "exp2({x}) = {y}");
        }
        assert_eq!(exp2::<FMA>(-127.0), 0.0);
        assert_eq!(exp2::<FMA>(-1000.0), 0.0);
        assert_eq!(exp2::<FMA>(0.0), 1.0);
        assert_eq!(exp2::<FMA>(-3.0), 0.125);
    }

    #[test]
    fn exp2_matches_std() {
        check_exp2::<true>();
        check_exp2::<false>();
    }

    fn check_ln<const FMA: bool>() {
        let check = |x: f32, worst: &mut f64| {
            let want = (x as f64).ln();
            let err = (ln::<FMA>(x) as f64 - want).abs();
            // Absolute near 1 (where ln -> 0), relative elsewhere.
            let scaled = if (0.7..=1.4).contains(&x) {
                err / 1.25
            } else {
                err / want.abs()
            };
            *worst = worst.max(scaled);
        };
        let mut worst = 0.0f64;
        // Every f32 from 2^-25 to 1 is 2^28 values: every 16th, plus the exact grid below.
        for x in sweep(2.0f32.powi(-25), 1.0, 16) {
            check(x, &mut worst);
        }
        // Every Box–Muller uniform ((k + 0.5) 2^-24), the whole input domain in use.
        for k in 0..1u32 << 24 {
            check(crate::model::philox::uniform_f32(k << 8), &mut worst);
        }
        assert!(worst <= 1.2e-7, "ln error {worst:e}");
        eprintln!("ln (fma: {FMA}): max error (abs. near 1, rel. elsewhere) {worst:e}");
        // Beyond (0, 1]: still accurate for normal inputs.
        let mut worst = 0.0;
        for x in sweep(1.0, 1.0e30, 4096).chain(sweep(f32::MIN_POSITIVE, 2.0f32.powi(-25), 4096)) {
            check(x, &mut worst);
        }
        assert!(worst <= 1.2e-7, "ln error beyond (0, 1]: {worst:e}");
    }

    #[test]
    fn ln_matches_std() {
        check_ln::<true>();
        check_ln::<false>();
    }

    fn check_sincos<const FMA: bool>() {
        let check = |u: f32, worst: &mut f64| {
            let (s, c) = sincos_turns::<FMA>(u);
            let a = std::f64::consts::TAU * u as f64;
            *worst = worst
                .max((s as f64 - a.sin()).abs())
                .max((c as f64 - a.cos()).abs());
        };
        let mut worst = 0.0f64;
        for k in 0..1u32 << 24 {
            let u = crate::model::philox::uniform_f32(k << 8);
            check(u, &mut worst);
            // The reduced angle the sampler passes (in [-1/2, 1/2] turns, as the shader's
            // [-π, π]): bit-identical, since the turn-count reduction is exact either way.
            let reduced = crate::model::philox::reduced_turns(u);
            check(reduced, &mut worst);
            let (a, b) = (sincos_turns::<FMA>(u), sincos_turns::<FMA>(reduced));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "u = {u}"
            );
        }
        for u in sweep(0.0, 1.0, 64)
            .chain(sweep(-0.0, -1.0, 256))
            .chain(sweep(1.0, 1000.0, 4096))
        {
            check(u, &mut worst);
        }
        assert!(worst <= 1.5e-7, "sincos absolute error {worst:e}");
        eprintln!("sincos_turns (fma: {FMA}): max absolute error {worst:e}");
        assert_eq!(sincos_turns::<FMA>(0.0), (0.0, 1.0));
        assert_eq!(sincos_turns::<FMA>(0.25), (1.0, 0.0));
    }

    #[test]
    fn sincos_matches_std() {
        check_sincos::<true>();
        check_sincos::<false>();
    }
}
