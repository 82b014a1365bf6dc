//! CPU twin of `shaders/heun_step.wgsl` and `shaders/heun_step_general.wgsl`: one half of a
//! Heun step of the probability-flow ODE for one particle (see `HeunParams` for the
//! halves and their coefficients), lanes beyond `dim` kept at zero.

use super::reduce_general::{reduce_general, GeneralState};
#[cfg(test)]
use super::score::weighted_training_mean;
use crate::engine::records::HeunParams;

// The D <= 4 twin: the oracle of the fast kernel's unit tests.
#[cfg(test)]
/// D <= 4 (`heun_step.wgsl`): returns the particle's new position; the predictor writes
/// the corrector's known part into `partial`, the corrector reads it.
#[inline]
pub fn heun_half_step(
    x: [f32; 4],
    dim: usize,
    training: &[[f32; 4]],
    step: &HeunParams,
    partial: &mut [f32; 4],
) -> [f32; 4] {
    let m = weighted_training_mean(x, training, step.mean_scale, step.inv_two_sigma2);
    let mut next = [0.0f32; 4];
    for k in 0..dim {
        next[k] = step.x_coeff * x[k] + step.mean_coeff * m[k];
        if step.phase == 0 {
            partial[k] = step.partial_x_coeff * x[k] + step.partial_mean_coeff * m[k];
        } else {
            // The shader's `partial + next` (f32 addition commutes exactly).
            next[k] += partial[k];
        }
    }
    next
}

/// Any D (`heun_step_general.wgsl`): `x` and `partial` padded to `padded_width(dim)`,
/// `training` padded likewise (`pad_general`); `x` is updated in place.
#[inline]
pub fn heun_half_step_general(
    x: &mut [f32],
    dim: usize,
    training: &[f32],
    step: &HeunParams,
    partial: &mut [f32],
) {
    let width = x.len();
    let state = reduce_general(x, training, width, step.mean_scale, step.inv_two_sigma2);
    heun_update(x, &state, dim, step, partial);
}

#[inline(always)]
fn heun_update(
    x: &mut [f32],
    state: &GeneralState,
    dim: usize,
    step: &HeunParams,
    partial: &mut [f32],
) {
    for d in 0..dim {
        let m = state.mean(d);
        let next = step.x_coeff * x[d] + step.mean_coeff * m;
        if step.phase == 0 {
            partial[d] = step.partial_x_coeff * x[d] + step.partial_mean_coeff * m;
            x[d] = next;
        } else {
            x[d] = partial[d] + next;
        }
    }
}
