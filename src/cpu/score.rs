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

/// Training points summed into one block state before merging: `BLOCK` in
/// `shaders/common/training_simple.wgsl` and `TILE` in `training_tiled.wgsl`.
pub const BLOCK: usize = 256;

/// Online-softmax state: running max of the potentials, sum of the weights relative to
/// it, and the weighted sum of training points. Twin of `OnlineSoftmax` in the shaders.
#[derive(Debug, Clone, Copy)]
pub struct OnlineSoftmax {
    pub running_max: f32,
    pub weight_sum: f32,
    pub weighted: [f32; 4],
}

impl OnlineSoftmax {
    pub fn new() -> Self {
        Self {
            running_max: -FLT_MAX,
            weight_sum: 0.0,
            weighted: [0.0; 4],
        }
    }

    /// Add one training point with potential `pot`: one exp, whichever branch runs.
    #[inline(always)]
    pub fn push(&mut self, pot: f32, xi: [f32; 4]) {
        if pot > self.running_max {
            let rescale = (self.running_max - pot).exp();
            self.weight_sum = self.weight_sum * rescale + 1.0;
            for (acc, v) in self.weighted.iter_mut().zip(xi) {
                *acc = *acc * rescale + v;
            }
            self.running_max = pot;
        } else {
            let w = (pot - self.running_max).exp();
            self.weight_sum += w;
            for (acc, v) in self.weighted.iter_mut().zip(xi) {
                *acc += w * v;
            }
        }
    }

    /// Combine a block's state into this one (`online_softmax_merge`).
    #[inline(always)]
    pub fn merge(&mut self, block: &OnlineSoftmax) {
        if block.running_max > self.running_max {
            let rescale = (self.running_max - block.running_max).exp();
            self.weight_sum = self.weight_sum * rescale + block.weight_sum;
            for (acc, v) in self.weighted.iter_mut().zip(block.weighted) {
                *acc = *acc * rescale + v;
            }
            self.running_max = block.running_max;
        } else {
            let rescale = (block.running_max - self.running_max).exp();
            self.weight_sum += block.weight_sum * rescale;
            for (acc, v) in self.weighted.iter_mut().zip(block.weighted) {
                *acc += v * rescale;
            }
        }
    }

    pub fn mean(&self) -> [f32; 4] {
        self.weighted.map(|v| v / self.weight_sum)
    }
}

impl Default for OnlineSoftmax {
    fn default() -> Self {
        Self::new()
    }
}

/// Potential of training point `xi` for `x`: `-|x - s xi|^2 / (2 sigma2)`, clamped.
#[inline(always)]
pub fn potential(x: [f32; 4], xi: [f32; 4], mean_scale: f32, inv_two_sigma2: f32) -> f32 {
    let d = sub_scaled(x, mean_scale, xi);
    (-dot(d, d) * inv_two_sigma2).max(-FLT_MAX)
}

/// `sum_i w_i x_i`, `w = softmax_i(-|x - s x_i|^2 / (2 sigma2))`, in one pass with a
/// running max, by blocks of `BLOCK` points merged in order, as the shaders do.
/// `training` holds the points padded to 4 lanes with zeros.
#[inline]
pub fn weighted_training_mean(
    x: [f32; 4],
    training: &[[f32; 4]],
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> [f32; 4] {
    let mut state = OnlineSoftmax::new();
    for block_points in training.chunks(BLOCK) {
        let mut block = OnlineSoftmax::new();
        for &xi in block_points {
            block.push(potential(x, xi, mean_scale, inv_two_sigma2), xi);
        }
        state.merge(&block);
    }
    state.mean()
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
