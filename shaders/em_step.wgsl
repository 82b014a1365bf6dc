// One Euler–Maruyama step of the reverse SDE for every particle of the batch.
// CPU twin: src/cpu/em_step.rs — keep the arithmetic in the same order.
// Assembled after common/params.wgsl, common/philox.wgsl and common/score.wgsl.
//
// The update folds drift and diffusion into three host-computed coefficients:
//   x' = x + dt (beta x / 2 + beta score) + sqrt(dt beta) z
//      = keep_coeff x + mean_coeff m + noise_coeff z,   m = sum_i w_i x_i.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<uniform> run: RunParams;
@group(0) @binding(1) var<storage, read_write> particles: array<f32>;
@group(0) @binding(2) var<storage, read> training: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> step: StepParams;

@compute @workgroup_size(WORKGROUP_SIZE)
fn em_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = linear_invocation_index(run, gid);
    if (i >= run.batch_len) {
        return;
    }
    let base = i * run.dim;
    var x = vec4<f32>(0.0);
    for (var d = 0u; d < run.dim; d++) {
        x[d] = particles[base + d];
    }
    let m = weighted_training_mean(x, step.mean_scale, step.inv_two_sigma2);
    let particle = global_particle_index(run, i);
    let seed = vec2<u32>(run.seed_lo, run.seed_hi);
    let z = particle_normals(seed, particle, step.step_index, 0u);
    let next = step.keep_coeff * x + step.mean_coeff * m + step.noise_coeff * z;
    for (var d = 0u; d < run.dim; d++) {
        particles[base + d] = next[d];
    }
}
