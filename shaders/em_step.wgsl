// One Euler–Maruyama step of the reverse SDE for every particle of the batch.
// CPU twin: src/engine/cpu/em_step.rs — keep the arithmetic in the same order.
// Assembled after common/params.wgsl, common/philox.wgsl, common/score.wgsl,
// common/step_bindings.wgsl, one of common/training_simple.wgsl /
// common/training_tiled.wgsl (the reduction strategy) and common/reduce_chunk.wgsl, whose
// entry point runs the stage: this file holds what is the step's own.
//
// The update folds drift and diffusion into three host-computed coefficients:
//   x' = x + dt (beta x / 2 + beta score) + sqrt(dt beta) z
//      = keep_coeff x + mean_coeff m + noise_coeff z,   m = sum_i w_i x_i.
// With a training set larger than one chunk, a step is several dispatches: each reduces
// one chunk into `softmax_state`, and the last one also moves the particle.

@group(1) @binding(0) var<uniform> step: StepParams;

fn finish_chunk(i: u32, base: u32, x: vec4<f32>, m: vec4<f32>) {
    let particle = global_particle_index(run, i);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, particle, step.step_index, 0u);
    let next = step.keep_coeff * x + step.mean_coeff * m + step.noise_coeff * z;
    for (var d = 0u; d < run.dim; d++) {
        particles[base + d] = next[d];
    }
}
