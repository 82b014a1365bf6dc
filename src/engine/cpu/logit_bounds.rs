//! The dot-form logits' error bounds, and the refinement of the logits whose bounds
//! matter (see `attention.rs`): a logit `κ ((x'·a − |a|²/2) − |x'|²/2)` cancels digits
//! at small σ², so each pair has a rigorous bound of its f32 error, and a pair whose
//! bound exceeds `RECOMPUTE_TOLERANCE` and whose logit may lie within that bound + a
//! margin of the running max is recomputed in the direct form `|x' − a|²`.

use super::approx::mad;
use super::lanes16::{fold16, fold_max, select_max};
use super::panels::TrainingPanels;

/// A pair whose error bound (base-2 logit units) stays below this keeps its dot-form
/// logit: a relative weight error of at most `2^(1/1024) − 1 ≈ 6.8e-4`, on weights that
/// only matter when the posterior is spread (large σ², where the bounds are far smaller).
pub const RECOMPUTE_TOLERANCE: f32 = 1.0 / 1024.0;
/// f32 unit round-off.
pub(super) const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

/// The per-particle coefficients of a dot-form logit's error bound
/// `e_i = norm_coeff |a_i| + half_norm_coeff |a_i|²/2 + constant`, in base-2 units.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundTerms {
    /// `|x'|²/2` as the kernel computes it.
    pub half_norm2: f32,
    norm_coeff: f32,
    half_norm_coeff: f32,
    constant: f32,
}

impl BoundTerms {
    /// The bound of the pair with a point of norm `norm` and `|a|²/2 = half_norm2`.
    /// Monotone in both (the coefficients are `>= 0`, rounding is monotone): at a
    /// block's largest norm and `|a|²/2`, at least every pair's bound in the block.
    #[inline(always)]
    pub(super) fn pair<const FMA: bool>(&self, norm: f32, half_norm2: f32) -> f32 {
        mad::<FMA>(
            self.norm_coeff,
            norm,
            mad::<FMA>(self.half_norm_coeff, half_norm2, self.constant),
        )
    }
}

/// The error bound of `L̃ = κ ((dot − h) − q)` in f32: the dot, a chain of D FMAs, is off
/// by at most `γ_D Σ|x'_k a_k| ≤ γ_D |x'||a|`; `h = |a|²/2` and `q = |x'|²/2` are off by
/// `u h` and `γ_D q`; the two subtractions and the product by κ add a rounding each of
/// at most `u (|x'||a| + h + q)`. Everything is inflated by 2% for the bound's own
/// rounding.
pub fn bound_terms(scaled: &[f32], kappa: f32) -> BoundTerms {
    let dim = scaled.len();
    let mut q = 0f32;
    let mut q64 = 0f64;
    for &v in scaled {
        q += v * v;
        q64 += (v as f64) * (v as f64);
    }
    let u = UNIT_ROUNDOFF;
    let gamma = dim as f64 * u / (1.0 - dim as f64 * u);
    let k = kappa as f64 * 1.02;
    let norm = q64.sqrt();
    let half = 0.5 * q64;
    BoundTerms {
        half_norm2: 0.5 * q,
        norm_coeff: (k * (gamma + 3.0 * u) * norm) as f32,
        half_norm_coeff: (k * 4.0 * u) as f32,
        constant: (k * (gamma + 4.0 * u) * half) as f32,
    }
}

/// Refine a block's base-2 logits (`w`, in place; `best`: their lane maxima): recompute
/// in the direct form those whose bound exceeds `RECOMPUTE_TOLERANCE` and that may lie
/// within their bound + `margin` of the running max, and return the block's max logit
/// and the number of recomputed pairs. Padding points have logit `-inf`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn refine_logits<const FMA: bool>(
    w: &mut [f32],
    xp: &[f32],
    training: &TrainingPanels,
    start: usize,
    bound: &BoundTerms,
    kappa: f32,
    best: &[f32; 16],
    running_max: f32,
    margin: f32,
) -> (f32, u64) {
    let count = w.len();
    let h = &training.half_norm2[start..start + count];
    let na = &training.norm[start..start + count];
    // In 16 lanes (count is a whole number of panels): a lower bound of the block's best
    // true logit, and whether any bound exceeds the tolerance. Fixed-size chunks so
    // that LLVM vectorizes the lanes.
    let mut lower = [f32::NEG_INFINITY; 16];
    let mut widest = [0f32; 16];
    for ((wc, hc), nc) in w
        .chunks_exact(16)
        .zip(h.chunks_exact(16))
        .zip(na.chunks_exact(16))
    {
        let wc: &[f32; 16] = wc.try_into().unwrap();
        let hc: &[f32; 16] = hc.try_into().unwrap();
        let nc: &[f32; 16] = nc.try_into().unwrap();
        // Whole arrays by value, not element updates in place: LLVM then keeps the
        // accumulators in registers (in place, it kept them on the stack, a
        // store-to-load chain per chunk).
        let e: [f32; 16] = std::array::from_fn(|l| bound.pair::<FMA>(nc[l], hc[l]));
        lower = std::array::from_fn(|l| select_max(wc[l] - e[l], lower[l]));
        widest = std::array::from_fn(|l| select_max(e[l], widest[l]));
    }
    // Folded from memory: seeing through, LLVM reversed the lanes every chunk.
    let (lower, widest) = std::hint::black_box((lower, widest));
    let lower = lower.iter().fold(running_max, |m, &v| m.max(v));
    let mut block_max = fold_max(best);
    let mut recomputed = 0;
    if widest.iter().any(|&e| e > RECOMPUTE_TOLERANCE) {
        let threshold = lower - margin;
        let dim = training.dim;
        for (c, ((wc, hc), nc)) in w
            .chunks_exact_mut(16)
            .zip(h.chunks_exact(16))
            .zip(na.chunks_exact(16))
            .enumerate()
        {
            let wc: &mut [f32; 16] = wc.try_into().unwrap();
            let hc: &[f32; 16] = hc.try_into().unwrap();
            let nc: &[f32; 16] = nc.try_into().unwrap();
            // Candidates, vectorized; padding points (w = -inf, e = inf) give NaN: never.
            let mut candidate = [false; 16];
            for l in 0..16 {
                let e = bound.pair::<FMA>(nc[l], hc[l]);
                candidate[l] = (e > RECOMPUTE_TOLERANCE) & (wc[l] + e >= threshold);
            }
            if !candidate.iter().any(|&c| c) {
                continue;
            }
            for l in (0..16).filter(|&l| candidate[l]) {
                let row = &training.rows[(start + 16 * c + l) * training.row_width..][..dim];
                wc[l] = -0.5 * kappa * direct_distance2(xp, row);
                recomputed += 1;
            }
        }
        if recomputed > 0 {
            block_max = w.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        }
    }
    (block_max, recomputed)
}

/// The largest norm and `|a|²/2` of a block's real points (padding: norm 0, `|a|²/2`
/// infinite), in 16 lanes.
#[inline(always)]
pub(super) fn block_norms(norm: &[f32], half_norm2: &[f32]) -> (f32, f32) {
    let (mut n, mut h) = ([0f32; 16], [0f32; 16]);
    for (nc, hc) in norm.chunks_exact(16).zip(half_norm2.chunks_exact(16)) {
        let nc: &[f32; 16] = nc.try_into().unwrap();
        let hc: &[f32; 16] = hc.try_into().unwrap();
        n = std::array::from_fn(|l| select_max(nc[l], n[l]));
        h = std::array::from_fn(|l| {
            let real = if hc[l] < f32::INFINITY { hc[l] } else { 0.0 };
            select_max(real, h[l])
        });
    }
    (fold_max(&n), fold_max(&h))
}

/// `|x' − a|²` in f32, 16 lanes folded in a fixed order (no cancellation).
#[inline(always)]
pub fn direct_distance2(xp: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (x16, x_rest) = xp.split_at(xp.len() / 16 * 16);
    let (a16, a_rest) = a.split_at(x16.len());
    for (xc, ac) in x16.chunks_exact(16).zip(a16.chunks_exact(16)) {
        for k in 0..16 {
            let d = xc[k] - ac[k];
            acc[k] += d * d;
        }
    }
    for (k, (x, a)) in x_rest.iter().zip(a_rest).enumerate() {
        let d = x - a;
        acc[k] += d * d;
    }
    fold16(&acc)
}
