//! CPU twin of `shaders/common/reduce_general.wgsl` and `shaders/score_general.wgsl`: the
//! general-D (D > 4) online softmax, f32, same arithmetic order. The shader splits each
//! tile of `GENERAL_TILE` training points over a workgroup; here one thread does what the
//! whole workgroup does, in the same order: per tile, the potentials, their max, the
//! weights `exp(pot - max)`, their sum, the weighted column sums, then the merge.
//!
//! Points are stored padded with zeros to a whole number of columns of 4 coordinates
//! (`pad_general`), like the GPU's training buffer; every loop over coordinates runs over
//! such columns, in lanes of 4, so LLVM vectorizes it.

use crate::engine::layout::padded_width;
use crate::engine::records::{StepParams, GENERAL_TILE};

/// Largest finite f32 (the clamp of the potentials, as in `score.rs`).
const FLT_MAX: f32 = f32::MAX;

/// `GeneralState` of the shader: the running max, the weight sum and the weighted sums of
/// all columns (the shader spreads them over the invocations).
#[derive(Debug, Clone)]
pub struct GeneralState {
    pub running_max: f32,
    pub weight_sum: f32,
    pub weighted: Vec<f32>,
}

impl GeneralState {
    pub fn new(width: usize) -> Self {
        Self {
            running_max: -FLT_MAX,
            weight_sum: 0.0,
            weighted: vec![0.0; width],
        }
    }

    /// Coordinate `d` of the softmax-weighted training mean.
    #[inline]
    pub fn mean(&self, d: usize) -> f32 {
        self.weighted[d] / self.weight_sum
    }
}

/// `general_potential`: `-|x - s x_p|^2 / (2 sigma2)`, the squared distance summed in 4
/// lanes (one per coordinate of a column) and the lanes added in order, clamped.
#[inline]
pub fn general_potential(x: &[f32], xi: &[f32], mean_scale: f32, inv_two_sigma2: f32) -> f32 {
    let mut acc = [0f32; 4];
    for (xc, pc) in x.chunks_exact(4).zip(xi.chunks_exact(4)) {
        for k in 0..4 {
            let diff = xc[k] - mean_scale * pc[k];
            acc[k] += diff * diff;
        }
    }
    let d2 = ((acc[0] + acc[1]) + acc[2]) + acc[3];
    (-d2 * inv_two_sigma2).max(-FLT_MAX)
}

/// `reduce_general` over all training points, tile by tile from point 0 (the GPU's chunks
/// are whole tiles and carry the state exactly, so they do not change the result).
/// `x` is padded to `width`, `training` holds points of `width` coordinates.
pub fn reduce_general(
    x: &[f32],
    training: &[f32],
    width: usize,
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> GeneralState {
    let mut state = GeneralState::new(width);
    let mut sum = vec![0f32; width];
    for tile in training.chunks(GENERAL_TILE * width) {
        merge_tile(
            &mut state,
            x,
            tile,
            width,
            mean_scale,
            inv_two_sigma2,
            &mut sum,
        );
    }
    state
}

/// One tile of `reduce_general`: the potentials, their max, the weights, their sum, the
/// weighted column sums (`sum` is scratch of `width`), merged into `state`.
#[inline(always)]
fn merge_tile(
    state: &mut GeneralState,
    x: &[f32],
    tile: &[f32],
    width: usize,
    mean_scale: f32,
    inv_two_sigma2: f32,
    sum: &mut [f32],
) {
    let mut pot = [0f32; GENERAL_TILE];
    let mut weight = [0f32; GENERAL_TILE];
    let count = tile.len() / width;
    for (p, xi) in pot.iter_mut().zip(tile.chunks_exact(width)) {
        *p = general_potential(x, xi, mean_scale, inv_two_sigma2);
    }
    let mut tile_max = -FLT_MAX;
    for &p in &pot[..count] {
        tile_max = tile_max.max(p);
    }
    for k in 0..count {
        weight[k] = (pot[k] - tile_max).exp();
    }
    let mut tile_sum = 0.0f32;
    for &w in &weight[..count] {
        tile_sum += w;
    }
    let (mut keep, mut take) = (1.0f32, 1.0f32);
    if tile_max > state.running_max {
        keep = (state.running_max - tile_max).exp();
    } else {
        take = (tile_max - state.running_max).exp();
    }
    // The weighted column sums, point by point (the shader's order per column).
    sum.fill(0.0);
    for (&w, xi) in weight[..count].iter().zip(tile.chunks_exact(width)) {
        for (s, v) in sum.iter_mut().zip(xi) {
            *s += w * v;
        }
    }
    for (acc, s) in state.weighted.iter_mut().zip(sum.iter()) {
        *acc = *acc * keep + s * take;
    }
    state.weight_sum = state.weight_sum * keep + tile_sum * take;
    state.running_max = state.running_max.max(tile_max);
}

/// `score_general`: the empirical score `(s m - x) / sigma2` at many points (row-major,
/// dimension `dim`, any D), for training points padded by `pad_general`.
pub fn score_points_general(
    points: &[f32],
    dim: usize,
    training: &[f32],
    step: &StepParams,
) -> Vec<f32> {
    let width = padded_width(dim);
    let mut out = vec![0.0; points.len()];
    let mut x = vec![0f32; width];
    for (row, o) in points.chunks(dim).zip(out.chunks_mut(dim)) {
        x[..dim].copy_from_slice(row);
        let state = reduce_general(&x, training, width, step.mean_scale, step.inv_two_sigma2);
        for d in 0..dim {
            o[d] = (step.mean_scale * state.mean(d) - x[d]) * step.inv_sigma2;
        }
    }
    out
}
