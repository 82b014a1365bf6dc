//! CPU twin of `shaders/em_step.wgsl`: one Euler–Maruyama step of one particle,
//! `x' = keep_coeff x + mean_coeff m + noise_coeff z`, lanes beyond `dim` kept at zero.

use super::score::weighted_training_mean;
use crate::engine::records::StepParams;
use crate::model::philox::{counter, normals4_f32, philox4x32_10, seed_key};

#[inline]
pub fn em_step(
    x: [f32; 4],
    dim: usize,
    training: &[[f32; 4]],
    step: &StepParams,
    seed: u64,
    particle: u64,
) -> [f32; 4] {
    let m = weighted_training_mean(x, training, step.mean_scale, step.inv_two_sigma2);
    let z = normals4_f32(philox4x32_10(
        counter(particle, step.step_index, 0),
        seed_key(seed),
    ));
    let mut next = [0.0f32; 4];
    for k in 0..dim {
        next[k] = step.keep_coeff * x[k] + step.mean_coeff * m[k] + step.noise_coeff * z[k];
    }
    next
}
