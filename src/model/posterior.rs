//! The posterior over training points along a trajectory, in f64: the softmax weights
//! `w_i = softmax_i(-|x - s x_i|^2 / (2 v))` the score is built from, their maximum and
//! argmax (posterior concentration), and the denoised mean `E[x_0 | x_tau]` that
//! `--t-min` outputs.

use crate::model::dataset::Dataset;
use crate::model::schedule::{ScoreKind, ScorePoint};
use rayon::prelude::*;

/// `(max_i w_i, argmax_i w_i)` at `x` (ties: lowest index). With `v == 0` (tau = 0 on the
/// empirical score) the weights are the indicator of the nearest scaled training point.
pub fn max_weight(dataset: &Dataset, x: &[f32], point: &ScorePoint) -> (f64, u32) {
    let s = point.mean_scale;
    let mut best = (f64::INFINITY, 0u32);
    let d2: Vec<f64> = (0..dataset.len())
        .map(|i| {
            let d2: f64 = dataset
                .point(i)
                .iter()
                .zip(x)
                .map(|(&xi, &xk)| (xk as f64 - s * xi).powi(2))
                .sum();
            if d2 < best.0 {
                best = (d2, i as u32);
            }
            d2
        })
        .collect();
    if point.variance <= 0.0 {
        return (1.0, best.1);
    }
    // The largest weight is 1 / sum_j exp(pot_j - pot_max).
    let inv_two_v = 0.5 / point.variance;
    let total: f64 = d2.iter().map(|&d| (-(d - best.0) * inv_two_v).exp()).sum();
    (1.0 / total, best.1)
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
                let d2 = &d2[p * n..(p + 1) * n];
                let mut best = (f64::INFINITY, 0u32);
                for (i, &d) in d2.iter().enumerate() {
                    if d < best.0 {
                        best = (d, i as u32);
                    }
                }
                *result = if point.variance <= 0.0 {
                    (1.0, best.1)
                } else {
                    let inv_two_v = 0.5 / point.variance;
                    let total: f64 = d2.iter().map(|&d| (-(d - best.0) * inv_two_v).exp()).sum();
                    (1.0 / total, best.1)
                };
            }
        });
    out
}

/// Replace each row of `state` (positions at forward time `point.tau`) by the denoised mean
/// `E[x_0 | x_tau] = (x + sigma2 score(x)) / s` (Tweedie's formula) of the model the score
/// describes: `m = sum_i w_i x_i` for the empirical score, `(sigma2 m + s h^2 x) / v` for
/// `kde:h` (each smoothed component contributes its own posterior mean). f64 throughout,
/// rounded once to f32.
pub fn denoise(dataset: &Dataset, score: ScoreKind, point: &ScorePoint, state: &mut [f32]) {
    let dim = dataset.dim;
    let s = point.mean_scale;
    let v = point.variance;
    let h2 = match score {
        ScoreKind::Empirical => 0.0,
        ScoreKind::Kde { h } => h * h,
    };
    state.par_chunks_mut(dim).for_each(|x| {
        let pots: Vec<f64> = (0..dataset.len())
            .map(|i| {
                dataset
                    .point(i)
                    .iter()
                    .zip(x.iter())
                    .map(|(&xi, &xk)| (xk as f64 - s * xi).powi(2))
                    .sum::<f64>()
            })
            .collect();
        let min = pots.iter().cloned().fold(f64::INFINITY, f64::min);
        let mut m = vec![0.0f64; dim];
        let mut total = 0.0;
        for (i, &d2) in pots.iter().enumerate() {
            let w = if v > 0.0 {
                (-(d2 - min) * 0.5 / v).exp()
            } else {
                (d2 == min) as u8 as f64
            };
            total += w;
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
