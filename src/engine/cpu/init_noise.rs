//! CPU twin of `shaders/init_noise.wgsl`: `x_1 = sqrt(sigma2(1)) z`.

use crate::model::philox::{counter, normals4_f32, philox4x32_10, seed_key, INITIAL_NOISE_STEP};

// The D <= 4 twin: the oracle of the fast kernel's unit tests (the engines use init_noise_into).
#[cfg(test)]
/// Initial position of `particle` (first `dim` <= 4 lanes are meaningful).
#[inline]
pub fn init_noise(seed: u64, particle: u64, initial_std: f32) -> [f32; 4] {
    let z = normals4_f32(philox4x32_10(
        counter(particle, INITIAL_NOISE_STEP, 0),
        seed_key(seed),
    ));
    z.map(|v| initial_std * v)
}

/// Initial position of `particle` in any dimension (`out.len()`): coordinates 4b..4b+3
/// from lane block b, as the shader's loop over blocks.
pub fn init_noise_into(seed: u64, particle: u64, initial_std: f32, out: &mut [f32]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let z = normals4_f32(philox4x32_10(
            counter(particle, INITIAL_NOISE_STEP, block as u32),
            seed_key(seed),
        ));
        for (o, v) in chunk.iter_mut().zip(z) {
            *o = initial_std * v;
        }
    }
}
