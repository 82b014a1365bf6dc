//! CPU twin of `shaders/em_step_general.wgsl`: one Euler–Maruyama step of one particle of
//! any dimension, `x' = keep_coeff x + mean_coeff m + noise_coeff z`, the normals of
//! coordinates 4b..4b+3 from lane block b.

use super::reduce_general::{reduce_general, GeneralState};
use crate::engine::records::StepParams;
use crate::model::philox::{counter, normals4_f32, philox4x32_10};

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
    let width = x.len();
    let state = reduce_general(x, training, width, step.mean_scale, step.inv_two_sigma2);
    em_update(x, &state, dim, step, key, particle);
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
