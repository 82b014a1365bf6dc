//! The posterior over training points along a trajectory, in f64: the softmax weights
//! `w_i = softmax_i(-|x - s x_i|^2 / (2 v))` the score is built from, their maximum and
//! argmax (posterior concentration), and the denoised mean `E[x_0 | x_tau]` that
//! `--t-min` outputs. [`softmax_in_place`] is the one f64 softmax over the training
//! points; the reference engine's score and log-density use it too.

use crate::model::dataset::Dataset;
use crate::model::schedule::{ScoreKind, ScorePoint};
use rayon::prelude::*;

/// The softmax over the training points, in f64 and in place: `log_weights` (their
/// potentials, up to a common offset) become their weights relative to the largest,
/// `exp(l_i - max_j l_j)` (the largest is 1). Returns `(max_j l_j, sum_i exp(l_i -
/// max_j l_j))`, the sum taken from the first point on; the normalised weights are the
/// relative ones over that sum. Potentials already relative to the largest (its own 0,
/// e.g. `-(d2_i - min_j d2_j) / (2 v)`) come out as their plain exponentials: subtracting
/// a zero is exact.
pub fn softmax_in_place(log_weights: &mut [f64]) -> (f64, f64) {
    let max = log_weights
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for l in log_weights.iter_mut() {
        *l = (*l - max).exp();
        total += *l;
    }
    (max, total)
}

/// `(max_i w_i, argmax_i w_i)` of the softmax of the squared distances `d2` (overwritten)
/// at variance `variance`; ties: lowest index. With `variance == 0` the weights are the
/// indicator of the nearest point.
fn largest_weight(d2: &mut [f64], variance: f64) -> (f64, u32) {
    let mut nearest = (f64::INFINITY, 0u32);
    for (i, &d) in d2.iter().enumerate() {
        if d < nearest.0 {
            nearest = (d, i as u32);
        }
    }
    if variance <= 0.0 {
        return (1.0, nearest.1);
    }
    // Potentials relative to the nearest point's, whose weight is the largest:
    // 1 / sum_j exp(pot_j - pot_max).
    let inv_two_v = 0.5 / variance;
    for d in d2.iter_mut() {
        *d = -(*d - nearest.0) * inv_two_v;
    }
    (1.0 / softmax_in_place(d2).1, nearest.1)
}

/// `(max_i w_i, argmax_i w_i)` at `x` (ties: lowest index). With `v == 0` (tau = 0 on the
/// empirical score) the weights are the indicator of the nearest scaled training point.
pub fn max_weight(dataset: &Dataset, x: &[f32], point: &ScorePoint) -> (f64, u32) {
    let s = point.mean_scale;
    let mut d2: Vec<f64> = (0..dataset.len())
        .map(|i| {
            dataset
                .point(i)
                .iter()
                .zip(x)
                .map(|(&xi, &xk)| (xk as f64 - s * xi).powi(2))
                .sum()
        })
        .collect();
    largest_weight(&mut d2, point.variance)
}

/// Particles per block of [`max_weights`]: each column of training coordinates loaded
/// from memory serves this many particles.
const BLOCK_ROWS: usize = 8;
/// Training points per tile of [`max_weights`]: a block's partial distances
/// (`BLOCK_ROWS` x `TILE_POINTS` f64, 32 KiB) stay in L1 while the coordinates stream.
const TILE_POINTS: usize = 512;

/// The training points column by column (`columns[c * n + i]` is coordinate `c` of point
/// `i`), the layout [`max_weights`] streams.
pub fn columns(dataset: &Dataset) -> Vec<f64> {
    let (n, dim) = (dataset.len(), dataset.dim);
    let mut out = vec![0.0; n * dim];
    for i in 0..n {
        for (c, &v) in dataset.point(i).iter().enumerate() {
            out[c * n + i] = v;
        }
    }
    out
}

/// [`max_weight`] of every row of `rows` (row-major, `dataset.dim` wide), bit for bit:
/// the same f64 operations in the same order per particle (each squared distance summed
/// over coordinates from the first, the exponentials summed over points from the first),
/// organised as a blocked particle x point reduction: blocks of `BLOCK_ROWS` particles in
/// parallel, the training coordinates (`columns`, see [`columns`]) streamed once per
/// block and tile, the inner loop over training points (vectorised). f64, not f32: at
/// D = 784 and the small variances of the last steps an f32 distance's rounding
/// (about sqrt(D) 2^-24 |d|^2) reaches a tenth of the variance and moves the weights by
/// percents, and the exact argmax would then need an f64 recheck of most points anyway.
pub fn max_weights(
    dataset: &Dataset,
    columns: &[f64],
    rows: &[f32],
    point: &ScorePoint,
) -> Vec<(f64, u32)> {
    let (n, dim) = (dataset.len(), dataset.dim);
    assert_eq!(columns.len(), n * dim, "columns of another training set");
    let s = point.mean_scale;
    let mut out = vec![(0.0, 0u32); rows.len() / dim];
    out.par_chunks_mut(BLOCK_ROWS)
        .zip(rows.par_chunks(BLOCK_ROWS * dim))
        .for_each(|(out, block)| {
            let count = out.len();
            // Squared distances of the block's particles to every point, row by particle.
            let mut d2 = vec![0.0f64; count * n];
            for start in (0..n).step_by(TILE_POINTS) {
                let len = TILE_POINTS.min(n - start);
                for c in 0..dim {
                    let column = &columns[c * n + start..c * n + start + len];
                    for (p, x) in block.chunks_exact(dim).enumerate() {
                        let xk = x[c] as f64;
                        let acc = &mut d2[p * n + start..p * n + start + len];
                        for (a, &xi) in acc.iter_mut().zip(column) {
                            let d = xk - s * xi;
                            *a += d * d;
                        }
                    }
                }
            }
            for (p, result) in out.iter_mut().enumerate() {
                *result = largest_weight(&mut d2[p * n..(p + 1) * n], point.variance);
            }
        });
    out
}

/// Replace each row of `state` (positions at forward time `point.tau`) by the denoised mean
/// `E[x_0 | x_tau] = (x + sigma2 score(x)) / s` (Tweedie's formula) of the model the score
/// describes: `m = sum_i w_i x_i` for the empirical score, `(sigma2 m + s h^2 x) / v` for
/// `kde:h` (each smoothed component contributes its own posterior mean), the denoised
/// image of a patch score (`PatchReference::denoised`). f64 throughout,
/// rounded once to f32.
pub fn denoise(dataset: &Dataset, score: ScoreKind, point: &ScorePoint, state: &mut [f32]) {
    let dim = dataset.dim;
    let s = point.mean_scale;
    let v = point.variance;
    let h2 = match score {
        ScoreKind::Empirical => 0.0,
        ScoreKind::Kde { h } => h * h,
        ScoreKind::Patch(patch) => {
            // Tweedie with the score (s m - x) / sigma2: the denoised image m itself.
            let geometry = patch
                .on(dataset.image_shape)
                .expect("a patch score is checked against its images before a run");
            let reference = super::patch_score::PatchReference::new(&geometry, dataset);
            state.par_chunks_mut(dim).for_each(|x| {
                let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let m = reference.denoised(s, v, &x64);
                x.iter_mut().zip(&m).for_each(|(o, &m)| *o = m as f32);
            });
            return;
        }
    };
    state.par_chunks_mut(dim).for_each(|x| {
        let mut weights: Vec<f64> = (0..dataset.len())
            .map(|i| {
                dataset
                    .point(i)
                    .iter()
                    .zip(x.iter())
                    .map(|(&xi, &xk)| (xk as f64 - s * xi).powi(2))
                    .sum::<f64>()
            })
            .collect();
        // Potentials relative to the nearest point's; with v = 0, the limit: the
        // nearest points (all of equal distance) alone, each of weight 1.
        let min = weights.iter().cloned().fold(f64::INFINITY, f64::min);
        for d2 in weights.iter_mut() {
            *d2 = if v > 0.0 {
                -(*d2 - min) * 0.5 / v
            } else if *d2 == min {
                0.0
            } else {
                f64::NEG_INFINITY
            };
        }
        let (_, total) = softmax_in_place(&mut weights);
        let mut m = vec![0.0f64; dim];
        for (i, &w) in weights.iter().enumerate() {
            for (mk, &xi) in m.iter_mut().zip(dataset.point(i)) {
                *mk += w * xi;
            }
        }
        for (xk, mk) in x.iter_mut().zip(&m) {
            let mean = mk / total;
            *xk = if h2 == 0.0 {
                mean as f32
            } else {
                ((point.sigma2 * mean + s * h2 * (*xk as f64)) / v) as f32
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schedule::VpSchedule;

    /// The loops `softmax_in_place` replaced (the metrics' largest weight, `denoise`'s
    /// weights and sum, the reference engine's normalised weights), written out again:
    /// the same bits.
    #[test]
    fn softmax_gives_the_bits_of_the_loops_it_replaced() {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..300 {
            let n = 1 + (uniform() * 40.0) as usize;
            let mut d2: Vec<f64> = (0..n).map(|_| (uniform() * 50.0).powi(2)).collect();
            if n > 2 {
                d2[n - 1] = d2[0];
            }
            let v = [1e-6, 1e-3, 0.37, 5.0, 1e3][case % 5];
            let mut nearest = (f64::INFINITY, 0u32);
            for (i, &d) in d2.iter().enumerate() {
                if d < nearest.0 {
                    nearest = (d, i as u32);
                }
            }
            let old: f64 = d2
                .iter()
                .map(|&d| (-(d - nearest.0) * (0.5 / v)).exp())
                .sum();
            let (w, i) = largest_weight(&mut d2.clone(), v);
            assert_eq!((w.to_bits(), i), ((1.0 / old).to_bits(), nearest.1));

            let mut relative: Vec<f64> = d2.iter().map(|&d| -(d - nearest.0) * 0.5 / v).collect();
            let old_weights: Vec<f64> = relative.iter().map(|&l| l.exp()).collect();
            let mut old_total = 0.0;
            for w in &old_weights {
                old_total += w;
            }
            let (_, total) = softmax_in_place(&mut relative);
            assert_eq!(bits(&relative), bits(&old_weights));
            assert_eq!(total.to_bits(), old_total.to_bits());

            let pots: Vec<f64> = d2.iter().map(|&d| -d / (2.0 * v)).collect();
            let max = pots.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = pots.iter().map(|p| (p - max).exp()).collect();
            let old_total: f64 = exps.iter().sum();
            let mut weights = pots.clone();
            let (new_max, total) = softmax_in_place(&mut weights);
            assert_eq!(bits(&weights), bits(&exps));
            assert_eq!(
                (new_max.to_bits(), total.to_bits()),
                (max.to_bits(), old_total.to_bits())
            );
        }
    }

    #[test]
    fn weights_and_denoising_by_hand() {
        // Two points on a line; x halfway between s x_0 and s x_1 plus a bit.
        let ds = Dataset::new("two", 1, vec![-1.0, 1.0]).unwrap();
        let point = ScorePoint {
            tau: 0.5,
            mean_scale: 0.5,
            sigma2: 0.25,
            variance: 0.25,
        };
        // |x - s x_i|^2 for x = 0.1: 0.36 and 0.16; pots -0.72, -0.32; w_1 = 1/(1+e^-0.4).
        let (w, i) = max_weight(&ds, &[0.1], &point);
        assert_eq!(i, 1);
        let expect = 1.0 / (1.0 + (-0.4f64).exp());
        assert!((w - expect).abs() < 1e-7); // x is 0.1 rounded to f32
        let mut x = [0.1f32];
        denoise(&ds, ScoreKind::Empirical, &point, &mut x);
        let m = expect - (1.0 - expect);
        assert!((x[0] as f64 - m).abs() < 1e-7);
        // kde:h, same point: (sigma2 m' + s h^2 x) / v with v = sigma2 + s^2 h^2.
        let kde = ScoreKind::Kde { h: 0.4 };
        let p2 = ScorePoint::new(&VpSchedule::default(), kde, 0.3);
        let mut y = [0.1f32];
        denoise(&ds, kde, &p2, &mut y);
        let (s, v) = (p2.mean_scale, p2.variance);
        let pot = |c: f64| -(0.1f64 - s * c).powi(2) / (2.0 * v);
        let w1 = 1.0 / (1.0 + (pot(-1.0) - pot(1.0)).exp());
        let m = w1 - (1.0 - w1);
        let want = (p2.sigma2 * m + s * 0.16 * 0.1) / v;
        assert!((y[0] as f64 - want).abs() < 1e-6, "{} vs {want}", y[0]);
        // v = 0: the nearest point, weight 1.
        let zero = ScorePoint {
            tau: 0.0,
            mean_scale: 1.0,
            sigma2: 0.0,
            variance: 0.0,
        };
        assert_eq!(max_weight(&ds, &[-0.2], &zero), (1.0, 0));
        let mut z = [-0.2f32];
        denoise(&ds, ScoreKind::Empirical, &zero, &mut z);
        assert_eq!(z[0], -1.0);
    }
}
