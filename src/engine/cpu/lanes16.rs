//! The 16-lane type the attention kernel's register tiles are written over, one
//! implementation per instruction set (see [`Lanes16`]), and the fixed-order folds of
//! 16-lane arrays the kernels reduce with.

/// 16 f32 lanes as the micro-kernels see them: a fused array (AVX-512, one zmm), two ymm
/// through intrinsics (AVX2) or a plain array (portable, no FMA). The register tiles are
/// written over this type, not as loops over particles, because LLVM, left alone,
/// vectorized those loops across particles with gathers and scatters instead of keeping
/// the tiles in registers. All give the same operations in the same order; only FMA
/// (contracted or not) differs between the portable one and the others.
pub trait Lanes16: Copy {
    /// # Safety
    /// The CPU has the features of the implementing type (the callers are the
    /// per-ISA instances of `crate::isa::isa_dispatch!`).
    unsafe fn zero() -> Self;
    /// # Safety
    /// As `zero`.
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// As `zero`.
    unsafe fn load(src: &[f32; 16]) -> Self;
    /// # Safety
    /// As `zero`.
    unsafe fn store(self, dst: &mut [f32; 16]);
    /// `self * b + c`.
    /// # Safety
    /// As `zero`.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self - b`.
    /// # Safety
    /// As `zero`.
    unsafe fn sub(self, b: Self) -> Self;
    /// `self * b`.
    /// # Safety
    /// As `zero`.
    unsafe fn mul(self, b: Self) -> Self;
    /// Per lane `if self > b { self } else { b }` (`maxps`: `b` on ties and NaN).
    /// # Safety
    /// As `zero`.
    unsafe fn max(self, b: Self) -> Self;
}

/// 16 lanes as a plain array, with fused multiply-adds (`FUSED`) or without: inside the
/// AVX-512 wrapper LLVM keeps the fused one in one zmm register (the AVX-512 intrinsics
/// need Rust 1.89; the crate's MSRV is 1.87).
#[derive(Clone, Copy)]
pub struct Array16<const FUSED: bool>([f32; 16]);

/// The portable lanes: no FMA, as on a CPU without it.
pub type Portable16 = Array16<false>;
/// The AVX-512 lanes: FMA.
pub type Fused16 = Array16<true>;

impl<const FUSED: bool> Lanes16 for Array16<FUSED> {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self([0.0; 16])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Self([v; 16])
    }
    #[inline(always)]
    unsafe fn load(src: &[f32; 16]) -> Self {
        Self(*src)
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32; 16]) {
        *dst = self.0;
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // A constant branch: each instance compiles to one of the two.
        if FUSED {
            Self(std::array::from_fn(|l| self.0[l].mul_add(b.0[l], c.0[l])))
        } else {
            Self(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
        }
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| self.0[l] * b.0[l]))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        Self(std::array::from_fn(|l| select_max(self.0[l], b.0[l])))
    }
}

/// `((a0 + a4 + a8 + a12) + ...)`: 16 lanes to one, in a fixed order.
#[inline(always)]
pub(super) fn fold16(acc: &[f32; 16]) -> f32 {
    let mut lanes = [0f32; 4];
    for k in 0..4 {
        lanes[k] = (acc[k] + acc[k + 4]) + (acc[k + 8] + acc[k + 12]);
    }
    ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3]
}

/// The lane maxima of a block's logits, as the attention kernel's `logit_tile` keeps
/// them (lane `l`: points `l`, `l + 16`, … in order).
#[inline(always)]
pub(super) fn lane_maxima(w: &[f32]) -> [f32; 16] {
    let mut best = [f32::NEG_INFINITY; 16];
    for wc in w.chunks_exact(16) {
        let wc: &[f32; 16] = wc.try_into().unwrap();
        best = std::array::from_fn(|l| select_max(wc[l], best[l]));
    }
    best
}

/// The largest of 16 lane maxima (not NaN), as a tree of vector maxima: a sequential
/// `f32::max` fold was 16 scalar steps with NaN checks. Of a `-0`/`+0` tie either may
/// come back, which no use distinguishes (differences and `==` treat them alike).
#[inline(always)]
pub(super) fn fold_max(best: &[f32; 16]) -> f32 {
    let m8: [f32; 8] = std::array::from_fn(|l| select_max(best[l], best[l + 8]));
    let m4: [f32; 4] = std::array::from_fn(|l| select_max(m8[l], m8[l + 4]));
    select_max(select_max(m4[0], m4[2]), select_max(m4[1], m4[3]))
}

/// `if a > b { a } else { b }`: one `maxps`.
#[inline(always)]
pub(super) fn select_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The 16 values of `s` from `at`.
#[inline(always)]
pub(super) fn half16(s: &[f32], at: usize) -> &[f32; 16] {
    s[at..at + 16].try_into().unwrap()
}

/// The 16 values of `s` from `at`, to write.
#[inline(always)]
pub(super) fn half16_mut(s: &mut [f32], at: usize) -> &mut [f32; 16] {
    (&mut s[at..at + 16]).try_into().unwrap()
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use super::Lanes16;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Avx2x16(__m256, __m256);

    impl Lanes16 for Avx2x16 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Self(_mm256_setzero_ps(), _mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Self(_mm256_set1_ps(v), _mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(src: &[f32; 16]) -> Self {
            Self(
                _mm256_loadu_ps(src.as_ptr()),
                _mm256_loadu_ps(src.as_ptr().add(8)),
            )
        }
        #[inline(always)]
        unsafe fn store(self, dst: &mut [f32; 16]) {
            _mm256_storeu_ps(dst.as_mut_ptr(), self.0);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), self.1);
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Self(
                _mm256_fmadd_ps(self.0, b.0, c.0),
                _mm256_fmadd_ps(self.1, b.1, c.1),
            )
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Self(_mm256_sub_ps(self.0, b.0), _mm256_sub_ps(self.1, b.1))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Self(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // `maxps` returns its second operand unless the first is greater.
            Self(_mm256_max_ps(self.0, b.0), _mm256_max_ps(self.1, b.1))
        }
    }
}
