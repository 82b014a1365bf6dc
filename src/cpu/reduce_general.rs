//! CPU twin of `shaders/common/reduce_general.wgsl` and `shaders/score_general.wgsl`: the
//! general-D (D > 4) online softmax, f32, same arithmetic order. The shader splits each
//! tile of `GENERAL_TILE` training points over a workgroup; here one thread does what the
//! whole workgroup does, in the same order: per tile, the potentials, their max, the
//! weights `exp(pot - max)`, their sum, the weighted column sums, then the merge.
//!
//! Points are stored padded with zeros to a whole number of columns of 4 coordinates
//! (`pad_general`), like the GPU's training buffer; every loop over coordinates runs over
//! such columns, in lanes of 4, so LLVM vectorizes it.

use crate::params::{StepParams, GENERAL_TILE};

/// Largest finite f32 (the clamp of the potentials, as in `score.rs`).
const FLT_MAX: f32 = f32::MAX;

/// Coordinates a point of dimension `dim` takes when padded: `4 ceil(dim / 4)`.
pub fn padded_width(dim: usize) -> usize {
    dim.div_ceil(4) * 4
}

/// Points (row-major, dimension `dim`) padded with zeros to `padded_width(dim)`, as f32.
pub fn pad_general(points: &[f64], dim: usize) -> Vec<f32> {
    let width = padded_width(dim);
    let mut out = vec![0f32; points.len() / dim * width];
    for (row, padded) in points.chunks(dim).zip(out.chunks_mut(width)) {
        for (o, v) in padded.iter_mut().zip(row) {
            *o = *v as f32;
        }
    }
    out
}

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

    /// Back to the empty state of [`GeneralState::new`], keeping the allocation.
    pub fn reset(&mut self) {
        self.running_max = -FLT_MAX;
        self.weight_sum = 0.0;
        self.weighted.fill(0.0);
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

/// The cpu engine's potential: the same terms as `general_potential`, the squared
/// distance summed in 16 lanes (4 independent chains of 4 instead of one, so the loop is
/// not bound by the latency of its additions), then folded 16 -> 4 -> 1. It differs from
/// the twin only by the order of the additions (f32 round-off).
#[inline(always)]
pub fn general_potential_wide(x: &[f32], xi: &[f32], mean_scale: f32, inv_two_sigma2: f32) -> f32 {
    let mut acc = [0f32; 16];
    let (x16, x_rest) = x.split_at(x.len() / 16 * 16);
    let (p16, p_rest) = xi.split_at(x16.len());
    for (xc, pc) in x16.chunks_exact(16).zip(p16.chunks_exact(16)) {
        for k in 0..16 {
            let diff = xc[k] - mean_scale * pc[k];
            acc[k] += diff * diff;
        }
    }
    for (k, (a, b)) in x_rest.iter().zip(p_rest).enumerate() {
        let diff = a - mean_scale * b;
        acc[k] += diff * diff;
    }
    let mut lanes = [0f32; 4];
    for k in 0..4 {
        lanes[k] = (acc[k] + acc[k + 4]) + (acc[k + 8] + acc[k + 12]);
    }
    let d2 = ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3];
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
    reduce_general_with::<false>(x, training, width, mean_scale, inv_two_sigma2)
}

/// `reduce_general` with the twin's potential (`WIDE = false`) or the cpu engine's
/// `general_potential_wide` (`WIDE = true`); everything else is the same.
#[inline(always)]
pub fn reduce_general_with<const WIDE: bool>(
    x: &[f32],
    training: &[f32],
    width: usize,
    mean_scale: f32,
    inv_two_sigma2: f32,
) -> GeneralState {
    let mut state = GeneralState::new(width);
    let mut sum = vec![0f32; width];
    for tile in training.chunks(GENERAL_TILE * width) {
        merge_tile::<WIDE>(
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

/// Scratch of [`reduce_general_block`]: one online-softmax state per particle of a block and
/// the column sums of a tile. Allocated once per work item and reused by every step, so
/// the steps themselves allocate nothing.
#[derive(Debug, Clone)]
pub struct BlockScratch {
    pub states: Vec<GeneralState>,
    sum: Vec<f32>,
}

impl BlockScratch {
    /// For blocks of up to `particles` rows of `width`.
    pub fn new(particles: usize, width: usize) -> Self {
        Self {
            states: vec![GeneralState::new(width); particles],
            sum: vec![0f32; width],
        }
    }
}

/// `reduce_general_with` for a block of particles (`xs`: rows of `width`), tile by tile
/// with the particles inside: a tile is read from memory once for the whole block instead
/// of once per particle. Each particle's arithmetic is exactly `reduce_general_with`'s.
/// The states end up in `scratch.states[..xs.len() / width]`.
#[inline(always)]
pub fn reduce_general_block<const WIDE: bool>(
    xs: &[f32],
    training: &[f32],
    width: usize,
    mean_scale: f32,
    inv_two_sigma2: f32,
    scratch: &mut BlockScratch,
) {
    let states = &mut scratch.states[..xs.len() / width];
    for state in states.iter_mut() {
        state.reset();
    }
    for tile in training.chunks(GENERAL_TILE * width) {
        for (state, x) in states.iter_mut().zip(xs.chunks_exact(width)) {
            merge_tile::<WIDE>(
                state,
                x,
                tile,
                width,
                mean_scale,
                inv_two_sigma2,
                &mut scratch.sum,
            );
        }
    }
}

/// One tile of `reduce_general`: the potentials, their max, the weights, their sum, the
/// weighted column sums (`sum` is scratch of `width`), merged into `state`.
#[inline(always)]
fn merge_tile<const WIDE: bool>(
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
        *p = if WIDE {
            general_potential_wide(x, xi, mean_scale, inv_two_sigma2)
        } else {
            general_potential(x, xi, mean_scale, inv_two_sigma2)
        };
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
