//! CPU twin of `shaders/em_step_general.wgsl`: one Euler–Maruyama step of one particle of
//! any dimension, `x' = keep_coeff x + mean_coeff m + noise_coeff z`, the normals of
//! coordinates 4b..4b+3 from lane block b.

use super::reduce_general::{
    reduce_general_block, reduce_general_with, BlockScratch, GeneralState,
};
use crate::params::StepParams;
use crate::philox::{counter, normals4_f32, philox4x32_10};

/// Advance `x` (padded to `width` = `padded_width(dim)`, zeros beyond `dim`) by one step.
/// `key` is `philox::seed_key(seed)`.
#[inline]
pub fn em_step_general(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    step: &StepParams,
    key: [u32; 2],
    particle: u64,
) {
    em_step_general_with::<false>(x, dim, training, step, key, particle)
}

/// `em_step_general` with the twin's potential or (`WIDE`) the cpu engine's.
#[inline(always)]
pub fn em_step_general_with<const WIDE: bool>(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    step: &StepParams,
    key: [u32; 2],
    particle: u64,
) {
    let width = x.len();
    let state =
        reduce_general_with::<WIDE>(x, training, width, step.mean_scale, step.inv_two_sigma2);
    em_update(x, &state, dim, step, key, particle);
}

/// The cpu engine's step for a block of particles `first_particle ..` (`xs`: padded rows
/// of `width`): `reduce_general_block` (each tile read once for the block), then each
/// particle's update; every particle's bits are those of `em_step_general_with::<true>`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn em_step_general_block(
    xs: &mut [f32],
    width: usize,
    dim: usize,
    training: &[f32],
    step: &StepParams,
    key: [u32; 2],
    first_particle: u64,
    scratch: &mut BlockScratch,
) {
    reduce_general_block::<true>(
        xs,
        training,
        width,
        step.mean_scale,
        step.inv_two_sigma2,
        scratch,
    );
    for (r, (x, state)) in xs.chunks_exact_mut(width).zip(&scratch.states).enumerate() {
        em_update(x, state, dim, step, key, first_particle + r as u64);
    }
}

/// `x' = keep_coeff x + mean_coeff m + noise_coeff z` for the coordinates below `dim`.
#[inline(always)]
fn em_update(
    x: &mut [f32],
    state: &GeneralState,
    dim: usize,
    step: &StepParams,
    key: [u32; 2],
    particle: u64,
) {
    for (c, column) in x.chunks_exact_mut(4).enumerate() {
        let z = normals4_f32(philox4x32_10(
            counter(particle, step.step_index, c as u32),
            key,
        ));
        for k in 0..4 {
            let d = 4 * c + k;
            if d < dim {
                let m = state.mean(d);
                column[k] =
                    step.keep_coeff * column[k] + step.mean_coeff * m + step.noise_coeff * z[k];
            }
        }
    }
}
