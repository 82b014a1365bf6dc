//! CPU twin of `shaders/common/score.wgsl` and `shaders/score.wgsl`: the online-softmax
//! weighted training mean and the empirical score, f32, same arithmetic order.

use crate::engine::records::StepParams;

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

/// log2(e) in f32, as `LOG2_E` in the shader: potentials are base 2, weights one `exp2`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// How far (base 2) a potential may exceed the reference before the state is rescaled
/// (`RESCALE_SLACK` in the shader): weights stay <= 2^8, rescales are rare.
pub const RESCALE_SLACK: f32 = 8.0;

/// `-log2(e) / (2 sigma2)` from `1 / (2 sigma2)`: the shader's `potential_scale`, the same
/// f32 product.
#[inline(always)]
pub fn potential_scale(inv_two_sigma2: f32) -> f32 {
    -(inv_two_sigma2 * LOG2_E)
}

/// Online-softmax state: the reference the weights are relative to (a base-2 potential
/// of one of the points, at most `RESCALE_SLACK` below their maximum), the sum of the
/// weights and the weighted sum of training points. Twin of `OnlineSoftmax` in the shaders.
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

    /// Add one training point with base-2 potential `pot`: one exp2, and a second one
    /// when the reference moves up by more than `RESCALE_SLACK`.
    #[inline(always)]
    pub fn push(&mut self, pot: f32, xi: [f32; 4]) {
        if pot > self.running_max + RESCALE_SLACK {
            let rescale = (self.running_max - pot).exp2();
            self.weight_sum *= rescale;
            for acc in self.weighted.iter_mut() {
                *acc *= rescale;
            }
            self.running_max = pot;
        }
        let w = (pot - self.running_max).exp2();
        self.weight_sum += w;
        for (acc, v) in self.weighted.iter_mut().zip(xi) {
            *acc += w * v;
        }
    }

    /// Combine a block's state into this one (`online_softmax_merge`).
    #[inline(always)]
    pub fn merge(&mut self, block: &OnlineSoftmax) {
        if block.running_max > self.running_max {
            let rescale = (self.running_max - block.running_max).exp2();
            self.weight_sum = self.weight_sum * rescale + block.weight_sum;
            for (acc, v) in self.weighted.iter_mut().zip(block.weighted) {
                *acc = *acc * rescale + v;
            }
            self.running_max = block.running_max;
        } else {
            let rescale = (block.running_max - self.running_max).exp2();
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

/// Base-2 potential of training point `xi` for `x`: `-log2(e) |x - s xi|^2 / (2 sigma2)`
/// with `log2_factor = potential_scale(1 / (2 sigma2))`, clamped.
#[inline(always)]
pub fn potential(x: [f32; 4], xi: [f32; 4], mean_scale: f32, log2_factor: f32) -> f32 {
    let d = sub_scaled(x, mean_scale, xi);
    (dot(d, d) * log2_factor).max(-FLT_MAX)
}

/// `sum_i w_i x_i`, `w = softmax_i(-|x - s x_i|^2 / (2 sigma2))`, in one pass with a
/// running reference (base 2), by blocks of `BLOCK` points merged in order, as the shaders do.
/// `training` holds the points padded to 4 lanes with zeros.
#[inline]
pub fn weighted_training_mean(
    x: [f32; 4],
    training: &[[f32; 4]],
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> [f32; 4] {
    let log2_factor = potential_scale(inv_two_sigma2);
    let mut state = OnlineSoftmax::new();
    for block_points in training.chunks(BLOCK) {
        let mut block = OnlineSoftmax::new();
        for &xi in block_points {
            block.push(potential(x, xi, mean_scale, log2_factor), xi);
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
