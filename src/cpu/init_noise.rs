//! CPU twin of `shaders/init_noise.wgsl`: `x_1 = sqrt(sigma2(1)) z`.

use crate::philox::{counter, normals4_f32, philox4x32_10, seed_key, INITIAL_NOISE_STEP};

/// Initial position of `particle` (first `dim` <= 4 lanes are meaningful).
#[inline]
pub fn init_noise(seed: u64, particle: u64, initial_std: f32) -> [f32; 4] {
    let z = normals4_f32(philox4x32_10(
        counter(particle, INITIAL_NOISE_STEP, 0),
        seed_key(seed),
    ));
    z.map(|v| initial_std * v)
}
