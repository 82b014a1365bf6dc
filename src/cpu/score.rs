//! CPU twin of `shaders/common/score.wgsl` and `shaders/score.wgsl`: the online-softmax
//! weighted training mean and the empirical score, f32, same arithmetic order.

use crate::params::StepParams;

/// Largest finite f32; potentials are clamped to `-FLT_MAX` (see the shader).
const FLT_MAX: f32 = f32::MAX;

#[inline(always)]
fn sub_scaled(x: [f32; 4], s: f32, xi: [f32; 4]) -> [f32; 4] {
    [
        x[0] - s * xi[0],
        x[1] - s * xi[1],
        x[2] - s * xi[2],
        x[3] - s * xi[3],
    ]
}

#[inline(always)]
fn dot(a: [f32; 4], b: [f32; 4]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
}

/// `sum_i w_i x_i`, `w = softmax_i(-|x - s x_i|^2 / (2 sigma2))`, in one pass with a
/// running max. `training` holds the points padded to 4 lanes with zeros.
#[inline]
pub fn weighted_training_mean(
    x: [f32; 4],
    training: &[[f32; 4]],
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> [f32; 4] {
    let first = training[0];
    let d0 = sub_scaled(x, mean_scale, first);
    let mut running_max = (-dot(d0, d0) * inv_two_sigma2).max(-FLT_MAX);
    let mut weight_sum = 1.0f32;
    let mut weighted = first;
    for &xi in &training[1..] {
        let d = sub_scaled(x, mean_scale, xi);
        let pot = (-dot(d, d) * inv_two_sigma2).max(-FLT_MAX);
        if pot > running_max {
            let rescale = (running_max - pot).exp();
            weight_sum = weight_sum * rescale + 1.0;
            for k in 0..4 {
                weighted[k] = weighted[k] * rescale + xi[k];
            }
            running_max = pot;
        } else {
            let w = (pot - running_max).exp();
            weight_sum += w;
            for k in 0..4 {
                weighted[k] += w * xi[k];
            }
        }
    }
    weighted.map(|v| v / weight_sum)
}

/// The empirical score at `x`: `(s m - x) / sigma2`.
#[inline]
pub fn score(x: [f32; 4], training: &[[f32; 4]], step: &StepParams) -> [f32; 4] {
    let m = weighted_training_mean(x, training, step.mean_scale, step.inv_two_sigma2);
    let mut out = [0.0; 4];
    for k in 0..4 {
        out[k] = (step.mean_scale * m[k] - x[k]) * step.inv_sigma2;
    }
    out
}

/// Training points padded to 4 lanes, as the GPU stores them.
pub fn pad_training(points: &[f64], dim: usize) -> Vec<[f32; 4]> {
    points
        .chunks(dim)
        .map(|row| {
            let mut p = [0.0f32; 4];
            for (d, &v) in row.iter().enumerate() {
                p[d] = v as f32;
            }
            p
        })
        .collect()
}

/// Score at many points (row-major, dimension `dim` <= 4), like the GPU score stage.
pub fn score_points(
    points: &[f32],
    dim: usize,
    training: &[[f32; 4]],
    step: &StepParams,
) -> Vec<f32> {
    let mut out = vec![0.0; points.len()];
    for (x, o) in points.chunks(dim).zip(out.chunks_mut(dim)) {
        let mut p = [0.0f32; 4];
        p[..dim].copy_from_slice(x);
        o.copy_from_slice(&score(p, training, step)[..dim]);
    }
    out
}
